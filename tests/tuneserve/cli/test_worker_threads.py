"""``train_threads`` caps torch's threads in a worker process, whether torch is imported before or after."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.procs import REPO


@pytest.mark.parametrize("torch_first", [False, True])
def test_limit_train_threads_caps_torch(torch_first: bool) -> None:
    code = "\n".join([
        "import torch" if torch_first else "",
        "from tuneserve.cli.worker import limit_train_threads",
        "limit_train_threads(1)",
        "import torch",
        "print(torch.get_num_threads())",
    ])
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def _threads(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_zero_leaves_torch_default() -> None:
    default = _threads("import torch; print(torch.get_num_threads())")
    limited = _threads("from tuneserve.cli.worker import limit_train_threads; limit_train_threads(0); "
                       "import os, torch; print(torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'))")
    assert limited == f"{default} None"


def test_a_worker_loads_its_tasks_without_torch_optuna_or_onnxruntime() -> None:
    """The thread cap works only if torch is not imported yet; the worker also starts (and reconciles) faster."""
    loaded = _threads("import sys, trainer.celery_app, trainer.tasks, trainer.search.tasks; "
                      "print(sorted(m for m in ('torch', 'optuna', 'onnxruntime') if m in sys.modules))")
    assert loaded == "[]"
