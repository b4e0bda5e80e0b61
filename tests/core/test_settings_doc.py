"""The README's settings table is generated from core/settings.py: a setting added, removed or
described anew without ``make docs-settings`` fails here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field

ROOT = Path(__file__).resolve().parents[2]


def _doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "scripts" / "settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_the_settings_class() -> None:
    run = subprocess.run([sys.executable, "scripts/settings_doc.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr


def test_every_setting_is_described_and_listed() -> None:
    from core.settings import Settings

    doc = _doc()
    assert doc.missing_descriptions() == []
    table = doc.table()
    for name in Settings.model_fields:
        assert f"`TUNESERVE_{name.upper()}`" in table, name


def test_a_new_setting_makes_the_readme_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic_settings import BaseSettings

    from core.settings import Settings

    doc = _doc()
    readme = (ROOT / "README.md").read_text()
    assert doc.with_table(readme) == readme

    class Grown(Settings):
        warmup_requests: int = Field(default=3, description="requests each new version answers before it serves")

    assert issubclass(Grown, BaseSettings)
    monkeypatch.setattr(doc, "Settings", Grown)
    regenerated = doc.with_table(readme)
    assert regenerated != readme
    assert "| `TUNESERVE_WARMUP_REQUESTS` | 3 | requests each new version answers before it serves |" in regenerated
    assert regenerated.split(doc.END)[1] == readme.split(doc.END)[1]  # only the table between the markers changes


def test_missing_markers_are_named() -> None:
    with pytest.raises(ValueError, match="settings:start"):
        _doc().with_table("# a README without the table\n")
