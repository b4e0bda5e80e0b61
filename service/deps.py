"""FastAPI dependencies as ``Annotated`` aliases; the objects live on ``app.state`` (set in the lifespan).

The getters are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
its thread pool, one thread hop per dependency per request, which on the predict path cost more event
loop time than the routing itself (docs/benchmarks.md, "Serving, reading the CPU numbers").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request

from core.settings import Settings
from dataset_store import DatasetStore
from jobs import JobStore
from models import Registry
from service.manager import ModelManager


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def get_manager(request: Request) -> ModelManager:
    return request.app.state.manager  # type: ignore[no-any-return]


async def get_decode_pool(request: Request) -> ThreadPoolExecutor:
    return request.app.state.decode_pool  # type: ignore[no-any-return]


async def get_job_store(request: Request) -> JobStore:
    return request.app.state.job_store  # type: ignore[no-any-return]


async def get_dataset_store(request: Request) -> DatasetStore:
    return request.app.state.datasets  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
DecodePoolDep = Annotated[ThreadPoolExecutor, Depends(get_decode_pool)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
DatasetStoreDep = Annotated[DatasetStore, Depends(get_dataset_store)]
