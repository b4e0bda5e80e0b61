"""Liveness and readiness. Readiness names each part: the models (loaded?) and the broker (answering?)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.http.deps import ManagerDep
from service.http.schemas import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(request: Request, manager: ManagerDep) -> JSONResponse:
    """200 when every active model is loaded and the broker answers; else 503 saying which part is not.

    ``checks`` is ``{"models": "ready"|"loading", "broker": "up"|"down"|"none"}`` (none: no broker is
    configured, so jobs cannot be queued but predictions are served)."""
    probe = getattr(request.app.state, "broker_probe", None)
    broker, broker_problem = await run_in_threadpool(probe.check) if probe is not None else ("none", None)
    checks = {"models": "ready" if manager.ready() else "loading", "broker": broker}
    if checks["models"] == "ready" and broker_problem is None:
        return JSONResponse({"status": "ready", "models": sorted(manager.loaded()), "checks": checks})
    problems = [p for p in ("models are still loading" if checks["models"] != "ready" else None, broker_problem) if p]
    return JSONResponse({"detail": "not ready: " + "; ".join(problems), "checks": checks}, status_code=503,
                        headers={"Retry-After": "1"})
