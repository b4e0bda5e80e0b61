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

__all__ = [
    "Manifest",
    "ModelNotFound",
    "Preprocessing",
    "Registry",
    "RegistryError",
    "VersionInUse",
    "VersionInfo",
    "VersionNotFound",
    "VersionTooNew",
]
