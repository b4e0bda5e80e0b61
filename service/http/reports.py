"""What a job produced, for people: its evaluation report with links, and job changes as small deltas."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from models import Registry
from service.http.errors import ApiError

if TYPE_CHECKING:
    from jobs import Job

REPORT_FILE = "report.json"
THUMBNAIL_SIZE = 128


def job_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields of a job view that changed. The per-epoch history only grows, so the new epochs are
    sent as ``metrics_append`` (a client appends them); anything else that changed is sent whole."""
    delta: dict[str, Any] = {}
    for key, value in after.items():
        if before.get(key) == value:
            continue
        old = before.get(key)
        if key == "metrics" and isinstance(old, list) and value[: len(old)] == old:
            delta["metrics_append"] = value[len(old):]
        else:
            delta[key] = value
    return delta


def apply_delta(state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The client's side of :func:`job_delta` (the console does the same in JavaScript)."""
    out = dict(state)
    for key, value in delta.items():
        if key == "metrics_append":
            out["metrics"] = [*out.get("metrics", []), *value]
        else:
            out[key] = value
    return out


def version_report(registry: Registry, name: str, version: int, job: Job | None = None) -> dict[str, Any]:
    """``report.json`` of a version plus URLs: its files, and a thumbnail for every misclassified photo."""
    info = registry.get(name, version)
    if REPORT_FILE not in info.manifest.files:
        raise ApiError(404, f"version {version} of {name!r} has no evaluation report "
                            f"(only versions trained by a job have one)")
    report: dict[str, Any] = json.loads((info.path / REPORT_FILE).read_text(encoding="utf-8"))
    base = f"/v1/models/{name}/versions/{version}/files"
    dataset_id = info.manifest.source.get("dataset_id")
    if dataset_id:
        for split in report.get("splits", {}).values():
            for item in split.get("misclassified", []):
                item["thumbnail_url"] = (f"/v1/datasets/{dataset_id}/images/{quote(item['path'])}"
                                         f"?size={THUMBNAIL_SIZE}")
    report.update({
        "model": name, "version": version, "dataset_id": dataset_id,
        "files": {f: f"{base}/{f}" for f in info.manifest.files},
    })
    if job is not None:
        report["job_id"] = job.id
        report["promotion"] = {k: (job.result or {}).get(k) for k in ("promoted", "reason", "evaluation")}
    return report
