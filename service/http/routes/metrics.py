"""``GET /metrics``: the Prometheus text exposition (open like the probes; it holds no user data)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.metrics import CONTENT_TYPE, exposition

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    # A plain def: the job store query at scrape time runs in the thread pool, off the event loop.
    return Response(exposition(request.app.state.metrics_state), media_type=CONTENT_TYPE)
