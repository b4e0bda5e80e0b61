from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import ManagerDep
from service.schemas import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
def readyz(manager: ManagerDep) -> JSONResponse:
    if manager.ready():
        return JSONResponse({"status": "ready", "models": sorted(manager.loaded())})
    return JSONResponse({"detail": "models are still loading"}, status_code=503, headers={"Retry-After": "1"})
