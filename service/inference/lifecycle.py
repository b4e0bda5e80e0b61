"""Deleting models, versions and jobs safely: nothing a queued or running job needs, never the active
version, and every API process stops serving what was deleted.

The registry removes the files (renamed away first, so a reader sees a whole version or none of it);
this process unloads at once; the others are told over the promotions channel and, should they miss
the notice, find out on their next poll of the registry.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from typing import Any

from core.jobspec import REGISTRY_BASE
from core.settings import Settings
from jobs import Job, JobNotFound, JobStore
from models import Registry, VersionInUse, VersionNotFound
from models.meaning import PRETRAINED_MODEL
from service.inference.manager import ModelManager
from transport.promotions import announce_deletion

log = logging.getLogger(__name__)


class JobNotDeletable(Exception):
    """A job that has not finished yet (cancel it first)."""


def registry_bases(spec: Any) -> Iterator[tuple[str, int]]:
    """Every ``registry:<model>:<version>`` base a job's spec names (a train spec's ``base``, or the
    bases a search may try), wherever it sits."""
    if isinstance(spec, str):
        match = REGISTRY_BASE.match(spec)
        if match:
            yield match.group(1), int(match.group(2))
    elif isinstance(spec, dict):
        for value in spec.values():
            yield from registry_bases(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from registry_bases(value)


def jobs_needing(store: JobStore, name: str, version: int | None = None) -> list[Job]:
    """Queued or running jobs that need ``name``: as their base (that ``version``, or any when None) or,
    for a whole model (``version`` None), as the model they will publish to."""
    needing = []
    for job in store.unfinished():
        targets = version is None and job.model == name
        spec = job.spec.model_dump(mode="json")  # the base, and any bases a search may try
        based = any(n == name and (version is None or v == version) for n, v in registry_bases(spec))
        if targets or based:
            needing.append(job)
    return needing


def _refuse_if_needed(store: JobStore, name: str, version: int | None) -> None:
    needing = jobs_needing(store, name, version)
    if needing:
        what = f"version {version} of {name!r}" if version is not None else f"model {name!r}"
        ids = ", ".join(f"{j.id} ({j.state})" for j in needing[:5])
        raise VersionInUse(f"{what} is needed by {len(needing)} queued or running job(s): {ids}; cancel them "
                           "(POST /v1/jobs/<id>/cancel) or wait until they finish, then delete")


def is_bootstrapped(registry: Registry, name: str) -> bool:
    """The pretrained model the service starts with (and checks uploads against)."""
    return name == PRETRAINED_MODEL or any(
        v.manifest.source.get("kind") == "pretrained" for v in registry.versions(name))


def delete_version(registry: Registry, manager: ModelManager, store: JobStore, name: str, version: int) -> None:
    if version not in registry.version_numbers(name):  # 404 before 409; a corrupt version may be deleted too
        raise VersionNotFound(f"model {name!r} has no version {version}")
    _refuse_if_needed(store, name, version)
    registry.delete_version(name, version)  # refuses the active version
    loaded = manager.loaded().get(name)
    if loaded is not None and loaded.version == version:  # still served here: the active one failed to load
        manager.forget(name)
        manager.wake()
    announce_deletion(manager.settings.broker_url, name, version)


def delete_model(registry: Registry, manager: ModelManager, store: JobStore, name: str,
                 force_bootstrapped: bool = False) -> list[int]:
    registry.version_numbers(name)  # 404 for an unknown name
    if is_bootstrapped(registry, name) and not force_bootstrapped:
        raise VersionInUse(f"{name!r} is the bootstrapped pretrained model (the base of new jobs and the check "
                           f"for near-duplicate uploads); add ?force_bootstrapped=true to delete it anyway "
                           "(`tuneserve bootstrap` registers it again)")
    _refuse_if_needed(store, name, None)
    versions = registry.delete_model(name)
    manager.forget(name)
    announce_deletion(manager.settings.broker_url, name, None)
    return versions


def delete_job(store: JobStore, settings: Settings, job: Job) -> None:
    """Remove a finished job's record and its working files (checkpoints, search trials); the version it
    registered stays (delete that through the model). Raises :class:`JobNotFound` if it is already gone."""
    if not job.finished:
        raise JobNotDeletable(f"job {job.id} is {job.state}: cancel it (POST /v1/jobs/{job.id}/cancel) and "
                              "delete it once it has stopped")
    if not store.delete_finished(job.id):  # finished rows never change state again: it was deleted meanwhile
        raise JobNotFound(f"job {job.id!r} not found")
    for folder in (settings.job_checkpoint_dir(job.id), settings.search_dir(job.id)):
        shutil.rmtree(folder, ignore_errors=True)
    settings.optuna_journal(job.id).unlink(missing_ok=True)
    log.info("deleted job %s (%s)", job.id, job.state)


