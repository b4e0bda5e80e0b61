"""The model registry: versions on disk, manifests, active pointer, promotion, rollback. Torch-free."""

from models.manifest import Manifest, Preprocessing
from models.registry import ModelNotFound, Registry, RegistryError, VersionInfo, VersionNotFound, VersionTooNew

__all__ = [
    "Manifest",
    "ModelNotFound",
    "Preprocessing",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "VersionNotFound",
    "VersionTooNew",
]
