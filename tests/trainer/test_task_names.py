"""The Celery task names are stored in queued messages and known to running workers: a move of the
trainer's modules must not change them (they are core/task_names.py's constants, not module paths)."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.procs import REPO


def test_the_worker_app_registers_the_stored_task_names() -> None:
    code = ("from trainer.celery_app import app\n"
            "app.loader.import_default_modules()  # the app's `include` modules, as a worker loads them\n"
            "print(sorted(name for name in app.tasks if not name.startswith('celery.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    # literal strings on purpose: what messages already queued carry
    assert out.stdout.strip() == "['tuneserve.search', 'tuneserve.train', 'tuneserve.trial']", out.stdout + out.stderr
