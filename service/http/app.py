"""``create_app()``: the FastAPI application, its lifespan and routers. No work at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from core.settings import Settings, get_settings
from dataset_store import datasets_for
from jobs import JobStore, reconcile_once
from models import registry_for
from service.drift_history import DriftHistory
from service.http.auth import ApiKeyMiddleware, load_keys
from service.http.docs import install_docs
from service.http.errors import install_error_handlers
from service.http.guards import BodyGuardMiddleware, BodyLimits
from service.http.head import HeadAsGet
from service.http.limits import BodyLimitMiddleware
from service.http.origins import CrossSiteGuard, HostGuard, HostList, allowed_hosts, cors_options, parse_origins
from service.http.requestlog import RequestLogMiddleware
from service.http.routes import cards, console, datasets, feedback, health, jobs, models, review, v2
from service.http.routes import metrics as metrics_route
from service.http.streams import EventStreamLimit
from service.inference.capture import FeedbackService
from service.inference.gpu_pipeline import require_decoder
from service.inference.manager import ModelManager
from service.inference.notify import PromotionListener
from service.inference.object_features import FeatureModel
from service.metrics import RequestMetricsMiddleware, StateCollector, mark_exited
from transport.broker import BrokerProbe

log = logging.getLogger(__name__)


def reconcile_at_start(settings: Settings) -> None:
    try:
        reconcile_once(settings)
    except Exception:  # the API serves predictions even if the job store is unwell
        log.exception("job reconciliation at start failed")


def load_at_start(manager: ModelManager) -> None:
    try:
        manager.refresh()
    except Exception:  # object storage down at start: /readyz says so, and the refresher tries again
        log.exception("loading the active models at start failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        require_decoder(settings.decoder)  # TUNESERVE_DECODER=gpu without nvImageCodec: fail now, naming the fix
        settings.home.mkdir(parents=True, exist_ok=True)
        registry = registry_for(settings)
        manager = ModelManager(registry, settings)
        app.state.settings = settings
        app.state.registry = registry
        app.state.manager = manager
        listener = PromotionListener(settings.broker_url, manager) if settings.broker_url else None
        app.state.broker_probe = BrokerProbe(settings)  # /readyz: is the job queue's Redis answering?
        app.state.datasets = datasets_for(settings)
        app.state.feedback = FeedbackService(settings.feedback_dir)
        app.state.drift_history = drift_history = DriftHistory(settings.feedback_dir)  # on disk per model
        drift_history.start()
        app.state.feature_model = FeatureModel(registry, settings)  # opened on the first upload that needs it
        datasets.sweep_stale_uploads(settings.uploads_dir)
        job_store = JobStore(settings.resolved_database_url, settings.db_auto_upgrade)
        app.state.job_store = job_store
        app.state.metrics_state = StateCollector(registry, job_store)
        app.state.dataset_in_use = lambda dataset_id: job_store.unfinished_on_dataset(dataset_id) > 0
        # Jobs whose worker died while no worker was up are re-queued (or failed) now, off the loop.
        reconciling = asyncio.get_running_loop().run_in_executor(None, reconcile_at_start, settings)
        # Load the active models off the event loop; /readyz says 503 until this is done.
        loading = asyncio.get_running_loop().run_in_executor(None, load_at_start, manager)
        manager.start()
        if listener:
            listener.start()
        try:
            yield
        finally:
            if listener:
                listener.stop()
            await loading
            await reconciling
            manager.stop()
            drift_history.close()  # the last counts reach the disk
            app.state.broker_probe.close()
            mark_exited()

    app = FastAPI(title="tuneserve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_docs(app)

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes if path.startswith("/v1/datasets") else settings.max_request_bytes

    app.add_middleware(HeadAsGet)  # innermost: HEAD runs as its GET, every check above saw HEAD
    app.add_middleware(EventStreamLimit, per_client=settings.max_event_streams_per_client,
                       total=settings.max_event_streams)
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(BodyGuardMiddleware, limits=BodyLimits.from_settings(settings))  # slow bodies: 408
    # Added last = runs first: a request without the right key is refused before its body is read.
    app.add_middleware(ApiKeyMiddleware, keys=load_keys(settings), metrics_key=settings.metrics_require_key)
    origins = parse_origins(settings.allowed_origins)
    hosts = HostList(allowed_hosts(settings))
    # Before the key check: a foreign page never gets in; and before it, a rebound Host reads nothing either.
    app.add_middleware(CrossSiteGuard, allowed=origins, hosts=hosts)
    app.add_middleware(HostGuard, hosts=hosts)
    if origins:  # outermost, so 401/403 answers carry CORS headers the allowed page can read
        app.add_middleware(CORSMiddleware, **cors_options(origins))  # type: ignore[arg-type]
    app.add_middleware(RequestMetricsMiddleware, routes=lambda: app.routes)  # refusals count too
    app.add_middleware(RequestLogMiddleware)  # outermost: sees every request and every hang-up
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(models.router, prefix="/v1/models", tags=["models"])
    app.include_router(cards.router, prefix="/v1/models", tags=["models"])
    app.include_router(feedback.router, prefix="/v1/models", tags=["feedback"])
    app.include_router(review.router, prefix="/v1/models", tags=["feedback"])
    app.include_router(datasets.router, prefix="/v1/datasets", tags=["datasets"])
    app.include_router(jobs.router, prefix="/v1/jobs", tags=["jobs"])
    app.include_router(v2.router)  # the Open Inference Protocol (KServe/Triton clients)
    app.include_router(console.router)
    app.mount("/console", console.console_files(), name="console")
    return app

