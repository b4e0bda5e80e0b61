"""Job routes: create (validated, then queued by name), list, get, cancel, and progress events (SSE).

The job store is the source of truth; these routes only read it and make conditional updates. A
worker learns of a cancel through its heartbeat, which reads the flag set here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.datasets import DatasetNotFound
from core.jobspec import JOB_KEYS, JobRequest, JobSpec, TrainSpec
from core.searchspec import SearchSpec, trial_summaries, validation_message
from core.task_names import TASK_SEARCH, TASK_TRAIN
from core.validation import error_message
from dataset_store import DatasetStore
from jobs import STATES, Job, JobFinished, JobNotFound
from models import Registry
from models.meaning import LabelConflict, check_labels
from service.http.deps import DatasetStoreDep, JobStoreDep, RegistryDep, SettingsDep
from service.http.errors import ApiError
from service.http.reports import job_delta, version_report
from service.http.schemas import JobCreated, errors
from service.inference import lifecycle
from transport.broker import BrokerUnavailable, send_task

router = APIRouter()

EVENT_POLL_S = 0.5


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def resolved_spec(job: Job) -> dict[str, Any]:
    """What the job runs: every TrainSpec field with defaults filled in, and, once known, the
    learning rate each stage used (``lr: "auto"`` shows the range test's pick there)."""
    stored = job.spec.stored()
    try:
        resolved = job.spec.train_spec().model_dump(mode="json")
    except ValidationError:  # a spec stored by an older version: show it as stored
        return stored
    for key in JOB_KEYS:
        if key in stored:
            resolved[key] = stored[key]
    metrics = (job.result or {}).get("metrics") or {}
    if metrics.get("stage_lrs"):
        resolved["lr_used"] = metrics["stage_lrs"]
    return resolved


def job_view(job: Job, lease_s: float, now: float | None = None) -> dict[str, Any]:
    """The job as the API shows it; ``lease_s`` (the settings' lease) tells a live worker from a stalled job."""
    progress = job.progress or {  # claimed, nothing measured yet: the worker is loading its libraries
        "stage": "queued" if job.state == "queued" else "starting", "fraction": 0.0, "eta_s": None, "epoch": 0,
        "epochs": None, "epochs_stage": None,
    }
    if job.state == "succeeded":
        progress = {**progress, "fraction": 1.0, "eta_s": 0.0, "eta_max_s": 0.0}
    if not job.finished:
        progress = {**progress, **liveness(job, lease_s, time.time() if now is None else now)}
    if job.kind == "search":  # the trial table lives in the view's own fields, not twice in progress
        progress = {k: v for k, v in progress.items() if k not in ("trials", "best_trial")}
        return {**_view(job, progress), **trial_summaries(job.progress, job.result)}
    return _view(job, progress)


def liveness(job: Job, lease_s: float, now: float) -> dict[str, Any]:
    """``stalled_s``: null while a live worker holds the job; else the seconds since one did, with the
    lease's deadline (``lease_expires_at``: when another worker may take it over; the renewals of a
    live lease are left out, or the event stream would change every half second) and a null ETA
    (nothing is running it) with ``eta_note`` saying why, instead of a frozen number."""
    stalled = job.stalled_s(lease_s, now)
    out: dict[str, Any] = {"stalled_s": None if stalled is None else round(stalled, 1)}
    if stalled is not None:
        out.update(eta_s=None, eta_max_s=None, lease_expires_at=_iso(job.lease_expires_at),
                   eta_note=f"no live worker for {stalled:.0f} s: the job resumes from its checkpoint when "
                            + ("its lease runs out and a worker takes it" if job.state == "running"
                               else "a worker takes it from the queue"))
    return out


def job_links(job: Job) -> dict[str, str]:
    """Where the job's artefacts are: its events, and once it has a model version, the report and files."""
    links = {"self": f"/v1/jobs/{job.id}", "events": f"/v1/jobs/{job.id}/events",
             "dataset": f"/v1/datasets/{job.dataset_id}"}
    result = job.result or {}
    if result.get("model") and result.get("version") is not None:
        links["report"] = f"/v1/jobs/{job.id}/report"
        links["files"] = f"/v1/models/{result['model']}/versions/{result['version']}/files"
    return links


def _view(job: Job, progress: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "model": job.model, "dataset_id": job.dataset_id, "spec": job.spec.stored(),
        "resolved_spec": resolved_spec(job),
        "state": job.state, "progress": progress, "metrics": job.metrics, "result": job.result,
        "error": job.error, "attempts": job.attempts, "cancel_requested": job.cancel_requested,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "links": job_links(job),
    }


def _spec_errors(exc: ValidationError) -> str:
    return error_message(exc, TrainSpec, prefix="hyperparameters")


async def json_body(request: Request) -> None:
    """415 for a body that is not declared JSON (a form post or a bare curl -d), 422 for one that is not
    UTF-8 (JSON's only encoding; Python's parser would also read UTF-16 and UTF-32)."""
    ctype, _, params = request.headers.get("content-type", "").partition(";")
    ctype = ctype.strip().lower()
    charset = params.strip().lower().removeprefix("charset=").strip('"') if "charset=" in params.lower() else ""
    if charset and charset not in ("utf-8", "utf8"):
        raise ApiError(415, f"send the job as UTF-8 JSON (got charset={charset})")
    try:
        (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, f"the body is not valid JSON: it is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, f"send the job as a JSON object with the header 'Content-Type: application/json' "
                            f"(got {ctype or 'no Content-Type'}); e.g. curl -H 'Content-Type: application/json' "
                            "-d '{\"dataset_id\": \"...\", \"model\": \"...\"}'")


def _check_base(spec: TrainSpec, registry: Registry) -> None:
    base = spec.registry_base()
    if base is not None:
        registry.get(*base)  # ModelNotFound / VersionNotFound -> 404


def _check_dataset(datasets: DatasetStore, dataset_id: str) -> Any:
    try:
        return datasets.get(dataset_id)
    except DatasetNotFound as exc:
        raise ApiError(404, f"dataset {dataset_id!r} not found: upload it with POST /v1/datasets") from exc


@router.post("", status_code=202, dependencies=[Depends(json_body)], response_model=JobCreated,
             responses=errors(400, 404, 413, 415, 422, 503))
def create_job(
    body: JobRequest, store: JobStoreDep, registry: RegistryDep, settings: SettingsDep, datasets: DatasetStoreDep
) -> dict[str, Any]:
    try:
        spec = body.spec()
    except ValidationError as exc:
        raise ApiError(422, _spec_errors(exc)) from exc
    search = _search_spec(body)
    dataset = _check_dataset(datasets, body.dataset_id)
    _check_base(spec, registry)
    try:  # 409: the job would change what the model answers (the message names the fix)
        check_labels(registry, body.model, list(dataset.classes), body.replace_labels)
    except LabelConflict as exc:
        raise ApiError(409, str(exc)) from exc
    stored = JobSpec.model_validate(spec.model_dump(exclude_unset=True))
    if body.replace_labels:
        stored.replace_labels = True
    kind, task = "train", TASK_TRAIN
    if search is not None:
        stored.search = search.model_dump(mode="json", exclude_none=True)
        kind, task = "search", TASK_SEARCH
    job = store.create(body.model, body.dataset_id, stored, kind=kind)
    try:
        send_task(settings, task, [job.id])
    except BrokerUnavailable as exc:
        # Refused, and no trace left: a job the client was told failed to start must not show up later.
        store.discard(job)
        raise ApiError(503, f"job queue unavailable (nothing was created; retry): {exc}",
                       {"Retry-After": "5"}) from exc
    return {"id": job.id, "state": "queued"}


def _search_spec(body: JobRequest) -> SearchSpec | None:
    """The validated search (422 naming the bad method, distribution or key, and the valid ones)."""
    if body.search is None:
        return None
    try:
        return SearchSpec.model_validate(body.search)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc)) from exc


# The filter's schema names the states the route accepts; an empty value (an HTML form's unset select)
# means no filter, so it is in the enum too: the document admits exactly what the route answers 200 to.
STATE_FILTER_SCHEMA: dict[str, Any] = {
    "type": "string", "enum": [*STATES, ""],
    "description": f"only jobs in this state ({', '.join(STATES)}); empty or absent: every state"}


def _state_filter(
    state: Annotated[str | None, Query(), WithJsonSchema(STATE_FILTER_SCHEMA)] = None,
) -> str | None:
    if not state:
        return None
    if state not in STATES:
        raise ApiError(422, f"state must be one of {', '.join(STATES)} (or empty for every state); got {state!r}")
    return state


@router.get("", responses=errors(422))
def list_jobs(
    store: JobStoreDep,
    settings: SettingsDep,
    state: Annotated[str | None, Depends(_state_filter)] = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return [job_view(j, settings.lease_seconds) for j in store.list_jobs(state=state, model=model, limit=limit)]


@router.delete("/schema", include_in_schema=False)
def no_delete_schema() -> None:
    """Routes are tried in order: without this, DELETE /v1/jobs/schema would look for a job named 'schema'
    (404) where the document says the path has no DELETE (405, with Allow naming GET and HEAD)."""
    raise StarletteHTTPException(405)


@router.get("/schema")
def job_schema() -> dict[str, Any]:
    """JSON schemas of a job request, its hyperparameters and a search: what forms are built from."""
    return {"request": JobRequest.model_json_schema(), "train": TrainSpec.model_json_schema(),
            "search": SearchSpec.model_json_schema()}


def existing_job(job_id: str, store: JobStoreDep) -> Job:
    try:
        return store.get(job_id)
    except JobNotFound as exc:
        raise ApiError(404, str(exc)) from exc


JobDep = Annotated[Job, Depends(existing_job)]


@router.get("/{job_id}", responses=errors(404))
def get_job(job: JobDep, settings: SettingsDep) -> dict[str, Any]:
    return job_view(job, settings.lease_seconds)


@router.post("/{job_id}/cancel", responses=errors(404, 409))
def cancel_job(job: JobDep, store: JobStoreDep, settings: SettingsDep) -> dict[str, Any]:
    try:
        return job_view(store.cancel(job.id), settings.lease_seconds)
    except JobFinished as exc:
        raise ApiError(409, str(exc)) from exc


@router.delete("/{job_id}", status_code=204, responses=errors(404, 409))
def delete_job(job: JobDep, store: JobStoreDep, settings: SettingsDep) -> Response:
    """Delete a finished job (its record and working files; the version it registered stays)."""
    try:
        lifecycle.delete_job(store, settings, job)
    except JobNotFound as exc:  # deleted by another request meanwhile
        raise ApiError(404, str(exc)) from exc
    return Response(status_code=204)


@router.get("/{job_id}/report", responses=errors(404, 409))
def job_report(job: JobDep, registry: RegistryDep) -> dict[str, Any]:
    """The evaluation of the version the job registered, with links to its plots and misclassified photos."""
    result = job.result or {}
    if result.get("model") is None or result.get("version") is None:
        raise ApiError(409, f"job {job.id} is {job.state} and has registered no model version yet; "
                            f"its report exists once it has succeeded (GET /v1/jobs/{job.id} shows progress)")
    return version_report(registry, str(result["model"]), int(result["version"]), job)


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=errors(404))
async def job_events(job: JobDep, store: JobStoreDep, settings: SettingsDep) -> AsyncIterator[ServerSentEvent]:
    """``snapshot`` (the whole job) first, then one ``delta`` per change (polled every 0.5 s): only the
    fields that changed, new epoch metrics as ``metrics_append``; ``end`` (the whole job) when it finishes."""
    last: dict[str, Any] | None = None
    count = 0
    while True:
        view = job_view(job, settings.lease_seconds)
        if view != last:
            count += 1
            if job.finished or last is None:
                yield ServerSentEvent(data=view, event="end" if job.finished else "snapshot", id=str(count))
            else:
                yield ServerSentEvent(data=job_delta(last, view), event="delta", id=str(count))
            last = view
        if job.finished:
            return
        await asyncio.sleep(EVENT_POLL_S)
        job = await asyncio.to_thread(store.get, job.id)
