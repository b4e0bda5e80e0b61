"""A pytest plugin (``-p tests.torchless``) for a run without the ``train`` extra, as in the base install:
importing torch, torchvision, timm or the trainer raises ImportError (tests/service/test_torchless.py).

A finder rather than ``sys.modules[name] = None``: libraries such as SciPy look torch up in
``sys.modules`` and would take a None there for the module itself."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset({"torch", "torchvision", "timm", "trainer"})


class Blocker(MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{fullname} is blocked: this run has no train extra (tests/torchless.py)",
                                      name=fullname)
        return None


assert not BLOCKED.intersection(sys.modules), "imported before the plugin loaded"
sys.meta_path.insert(0, Blocker())
