"""What the console's review and drift panels read: a capture's heatmap, and a model's drift history.

``GET .../feedback/{id}/explain`` runs the stored photo through the version that answered it (the active one
when that version was deleted since) with ``explain``, so a reviewer sees where the model looked without
uploading the photo again; like every feedback route it needs an admin key (service/http/auth.py). ``GET
.../drift`` is a read (admin or read keys): the counts of service/drift_history.py per version and hour.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from feedback import FeedbackNotFound
from models import VersionNotFound
from service.drift_history import DriftResponse
from service.http.deps import DriftDep, ManagerDep, RegistryDep, SettingsDep
from service.http.errors import ApiError
from service.http.routes.feedback import CaptureId, StoreDep
from service.http.schemas import Explanation, Prediction, errors
from service.inference.predictor import PredictOptions

router = APIRouter()
DEFAULT_SINCE_S = 7 * 24 * 3600
MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z: every unix time a client may mean


class CaptureExplanation(BaseModel):
    model: str
    version: int = Field(description="the version that drew the heatmap: the capture's, or the active one when "
                                     "the capture's was deleted")
    capture_id: str
    captured_version: int | None = Field(description="the version that answered at capture (null: a correction)")
    predictions: list[Prediction]
    ood_score: float | None
    unknown: bool
    unknown_reason: Literal["ood", "low_confidence"] | None
    explanation: Explanation


@router.get("/{name}/feedback/{capture_id:capture}/explain", response_model=CaptureExplanation,
            responses=errors(400, 404, 409, 413, 415, 503))
async def explain_capture(name: str, capture_id: CaptureId, store: StoreDep, manager: ManagerDep,
                          settings: SettingsDep) -> CaptureExplanation:
    """The captured photo's top classes and class activation heatmap (409: the version has no heatmap output)."""
    try:
        capture = await run_in_threadpool(store.get, capture_id)
        photo = await run_in_threadpool(store.photo(capture).read_bytes)
    except FeedbackNotFound as exc:
        raise ApiError(404, str(exc)) from exc
    except FileNotFoundError as exc:  # dropped at the cap between reading the row and the file
        raise ApiError(404, f"capture {capture_id!r} of {name!r} was just dropped (the store's cap)") from exc
    try:
        loaded = await manager.acquire(name, capture.version)
    except VersionNotFound:  # that version was deleted: the serving one explains it
        loaded = await manager.acquire(name)
    try:
        loaded.predictor.cam_head()  # 409 naming the fix, before any work
        answer = await loaded.predictor.predict([photo], PredictOptions(top_k=settings.default_top_k, explain=True))
    finally:
        loaded.release()
    r = answer.results[0]
    assert r.explanation is not None  # explain=True draws one per photo
    return CaptureExplanation(
        model=name, version=answer.version, capture_id=capture_id, captured_version=capture.version,
        predictions=[Prediction(label=label, index=i, probability=p) for label, i, p in r.predictions],
        ood_score=r.ood_score, unknown=r.unknown, unknown_reason=r.unknown_reason,  # type: ignore[arg-type]
        explanation=Explanation(**r.explanation))


@router.get("/{name}/drift", response_model=DriftResponse, responses=errors(404, 422))
def get_drift(
    name: str, registry: RegistryDep, history: DriftDep,
    version: Annotated[int | None, Query(
        ge=1, le=2**62, description="one version's series (default: every version with counts)")] = None,
    since: Annotated[int | None, Query(
        ge=0, le=MAX_TIME, description="unix seconds (UTC): buckets from the hour holding it on (default: 7 days "
                                       "ago)")] = None,
) -> DriftResponse:
    """Per version and hour: predictions per class, the confidence histogram, the unknown share, and the
    reviews (live accuracy: reviewed photos labelled with the model's top class)."""
    registry.versions(name)  # 404 naming the models there are
    return history.series(name, int(time.time()) - DEFAULT_SINCE_S if since is None else since, version)
