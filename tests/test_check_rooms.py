"""scripts/check_rooms.py (``make lint``): the repository passes it, and each rule fails a house that breaks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.procs import REPO

SCRIPT = REPO / "scripts" / "check_rooms.py"


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)


def house(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_repository_keeps_its_rooms() -> None:
    out = run(REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_tidy_house_passes(tmp_path: Path) -> None:
    root = house(tmp_path, {"core/__init__.py": "", "core/a.py": "def public() -> None: ...\n",
                            "core/b.py": "from core.a import public\n", "tests/core/__init__.py": ""})
    out = run(root)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_folder_of_more_than_twenty_modules_fails(tmp_path: Path) -> None:
    files = {f"trainer/m{i}.py": "" for i in range(21)} | {"trainer/__init__.py": "", "tests/trainer/__init__.py": ""}
    out = run(house(tmp_path, files))
    assert out.returncode == 1
    assert "trainer/: 22 modules (at most 20)" in out.stdout


def test_a_package_without_its_tests_folder_fails(tmp_path: Path) -> None:
    out = run(house(tmp_path, {"service/__init__.py": "", "service/http/__init__.py": "",
                               "tests/service/__init__.py": ""}))
    assert out.returncode == 1
    assert "service/http/: no tests/service/http/ folder" in out.stdout


def test_importing_a_private_name_fails_both_spellings(tmp_path: Path) -> None:
    out = run(house(tmp_path, {
        "core/__init__.py": "", "tests/core/__init__.py": "",
        "core/queueing.py": "def _bucket(n: int) -> int:\n    return n\n",
        "core/gpu.py": "from core.queueing import _bucket\n",
        "core/other.py": "from core import queueing\n\nqueueing._bucket(1)\n",
        "core/own.py": "def _mine() -> None: ...\n\n\n_mine()\n",  # its own private names: fine
    }))
    assert out.returncode == 1
    assert "core/gpu.py:1: imports _bucket from core.queueing (private)" in out.stdout
    assert "core/other.py:3: uses core.queueing._bucket (private)" in out.stdout
    assert "own.py" not in out.stdout
