"""Which optional parts of the install are present, found without importing them.

The base package (``pip install tuneserve``) serves the API; training needs the ``train`` extra
(torch and friends). Commands that need it check here first so that a torch-free install answers
with the fix instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib.util

# The modules the training commands import first; one missing means the extra was not installed.
TRAIN_MODULES = ("torch", "torchvision", "timm")
TRAIN_INSTALL_HINT = "pip install 'tuneserve[train]' (from a checkout: make install)"


def missing_train_modules() -> list[str]:
    """The training modules this environment lacks (empty when the ``train`` extra is installed)."""
    missing = []
    for name in TRAIN_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed install counts as missing
            found = False
        if not found:
            missing.append(name)
    return missing


def train_extra_message(what: str) -> str | None:
    """None when training can run, else a message naming what is missing and the install command."""
    missing = missing_train_modules()
    if not missing:
        return None
    return (f"{what} needs the training dependencies ({', '.join(missing)} not installed): "
            f"this is the API-only install. Install the train extra: {TRAIN_INSTALL_HINT}")
