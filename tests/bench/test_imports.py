"""Every benchmark module still imports: a module moved in the code (a room renamed, a function
moved) must not leave a benchmark that fails only when someone runs it to measure."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

# A comparison that needs a framework the project does not install (its module docstring says how).
NEEDS = {"bench.serving.bentoml_service": "bentoml"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(bench.__path__, "bench."))


@pytest.mark.parametrize("name", MODULES)
def test_the_benchmark_module_imports(name: str) -> None:
    if name in NEEDS:
        with pytest.raises(ModuleNotFoundError) as missing:
            importlib.import_module(name)
        assert missing.value.name == NEEDS[name]  # only the framework it compares against is missing
        return
    importlib.import_module(name)


def test_every_benchmark_is_listed() -> None:
    assert len(MODULES) > 20 and "bench.training.eta" in MODULES
