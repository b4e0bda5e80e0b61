"""The model registry: versions on disk, manifests, active pointer, promotion, rollback. Torch-free."""

from models.manifest import Manifest, Preprocessing
from models.registry import (
    ModelNotFound,
    Registry,
    RegistryError,
    VersionInfo,
    VersionInUse,
    VersionNotFound,
    VersionTooNew,
)
from models.remote import PointerConflict, S3Registry, registry_for

__all__ = [
    "Manifest",
    "ModelNotFound",
    "PointerConflict",
    "Preprocessing",
    "Registry",
    "RegistryError",
    "S3Registry",
    "VersionInUse",
    "VersionInfo",
    "VersionNotFound",
    "VersionTooNew",
    "registry_for",
]
