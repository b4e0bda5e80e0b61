"""FastAPI dependencies as ``Annotated`` aliases; the objects live on ``app.state`` (set in the lifespan).

The getters are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its thread pool, one thread hop per dependency per request, which on the predict path cost more event
loop time than the routing itself (docs/benchmarks.md, "Serving, reading the CPU numbers").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Request

from core.settings import Settings
from dataset_store import DatasetStore
from jobs import JobStore
from models import Registry
from service.drift_history import DriftHistory
from service.inference.capture import FeedbackService
from service.inference.manager import ModelManager
from service.inference.object_features import FeatureModel

T = TypeVar("T")


def _from_state(attr: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning ``app.state.<attr>`` (set in the lifespan), typed as ``kind``."""

    async def get(request: Request) -> T:
        return cast(T, getattr(request.app.state, attr))

    get.__name__ = f"get_{attr}"
    return get


get_app_settings = _from_state("settings", Settings)
get_registry = _from_state("registry", Registry)
get_manager = _from_state("manager", ModelManager)
get_job_store = _from_state("job_store", JobStore)
get_dataset_store = _from_state("datasets", DatasetStore)
get_feature_model = _from_state("feature_model", FeatureModel)
get_feedback = _from_state("feedback", FeedbackService)
get_drift_history = _from_state("drift_history", DriftHistory)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]
FeatureModelDep = Annotated[FeatureModel, Depends(get_feature_model)]
FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
DriftDep = Annotated[DriftHistory, Depends(get_drift_history)]
