"""The API process stays torch-free and never imports trainer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_service_import_and_app_creation_leave_torch_and_trainer_out(tmp_path: Path) -> None:
    code = f"""
import importlib, pkgutil, sys
import service
from core.settings import Settings
from service.http.app import create_app
for m in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(m.name)
create_app(Settings(home={str(tmp_path)!r}))
print(sorted(n for n in ("torch", "trainer", "timm", "torchvision") if n in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_console_command_loads_only_the_module_of_the_command_it_runs() -> None:
    code = """
import sys
from tuneserve import cli
cli.COMMANDS["serve"][0]()
heavy = ("torch", "trainer", "timm", "torchvision")
print(sorted(n for n in heavy if n in sys.modules), "tuneserve.cli.serve" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[] True", out.stdout + out.stderr
