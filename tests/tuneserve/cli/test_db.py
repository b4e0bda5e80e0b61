"""``tuneserve db status|upgrade`` on homes a new user has: none yet, a fresh one, an unreachable server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def tuneserve_db(action: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")} | env
    return subprocess.run([sys.executable, "-m", "tuneserve.cli", "db", action], env=full,
                          capture_output=True, text=True, timeout=120)


def test_status_of_a_home_never_served_says_so_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-served"
    done = tuneserve_db("status", TUNESERVE_HOME=str(home))
    assert done.returncode == 1
    assert "no job database yet" in done.stdout and "tuneserve db upgrade" in done.stdout
    assert "Traceback" not in done.stderr
    assert not home.exists()


def test_upgrade_creates_the_database_then_status_is_current(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    assert tuneserve_db("upgrade", TUNESERVE_HOME=str(home)).returncode == 0
    status = tuneserve_db("status", TUNESERVE_HOME=str(home))
    assert status.returncode == 0, status.stderr
    assert "revision" in status.stdout and (home / "jobs.db").is_file()


def test_an_unreachable_database_is_named_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = tuneserve_db("status", TUNESERVE_HOME=str(tmp_path),
                        TUNESERVE_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/none")
    assert done.returncode == 2
    assert "cannot open the job database" in done.stderr and "TUNESERVE_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr
