"""Model cards: ``GET /v1/models/{name}/versions/{version}/card`` as JSON, or Markdown with ``?format=md``.

A version published with a card serves its ``card.json``; an older one gets the same card built now
from its manifest, its report.json and (when the dataset is still stored) the dataset's report.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from core.datasets import DatasetError
from models import VersionInfo
from models.card import CARD_FILE, model_card, with_version
from models.card_markdown import card_markdown
from service.http.deps import DatasetStoreDep, RegistryDep
from service.http.schemas import errors

log = logging.getLogger(__name__)

router = APIRouter()

CARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the model card: JSON, or Markdown with format=md",
          "content": {"application/json": {}, "text/markdown": {}}},
    **errors(404, 422),
}


def _read_json(info: VersionInfo, file: str) -> dict[str, Any] | None:
    path = info.path / file
    if file not in info.manifest.files or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s version %d: %s unreadable (%s); building the card without it",
                    info.manifest.name, info.version, file, exc)
        return None
    return data if isinstance(data, dict) else None


def version_card(info: VersionInfo, datasets: DatasetStoreDep) -> dict[str, Any]:
    """The stored card, or one built from what the version stores; with the version's current status."""
    stored = _read_json(info, CARD_FILE)
    if stored is None:
        dataset = None
        dataset_id = info.manifest.source.get("dataset_id")
        if isinstance(dataset_id, str) and dataset_id:
            try:
                dataset = datasets.get(dataset_id).report()
            except (DatasetError, ValueError):  # deleted since, or an id from another home: report counts only
                dataset = None
        stored = model_card(info.manifest, _read_json(info, "report.json"), dataset)
    card = with_version(stored, info.manifest)
    card["model"]["status"] = info.status
    return card


@router.get("/{name}/versions/{version}/card", responses=CARD_RESPONSES)
def get_card(name: str, version: int, registry: RegistryDep, datasets: DatasetStoreDep,
             format_: Annotated[Literal["json", "md"], Query(alias="format", description="json (default) or md")]
             = "json") -> Response:
    """What the version was trained on, how, how good it is (with 95 % intervals) and its limitations."""
    card = version_card(registry.get(name, version), datasets)
    if format_ == "md":
        return Response(card_markdown(card), media_type="text/markdown; charset=utf-8")
    return Response(json.dumps(card), media_type="application/json")
