"""The service's tests run without the train extra where the code under test does not need it.

The API's base install has no torch (import-linter keeps service/ free of it); its tests must not need
it either, except those that use the real ImageNet model (marker ``model``: the ``home`` fixture exports
it with torch). This runs the rest of tests/service in a process where importing torch, torchvision,
timm or the trainer fails (tests/torchless.py), and checks that they pass and that enough of them ran."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.procs import REPO

MIN_TORCHLESS = 100  # 154 when written: a test that starts needing torch shows up as a failure, not as fewer tests


@pytest.mark.slow
def test_service_tests_without_the_model_pass_without_torch() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.torchless", "-p", "no:xdist",
           "-m", "not model and not slow and not browser", "--ignore", "tests/service/test_torchless.py",
           "tests/service"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    tail = out.stdout[-3000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed is not None and int(passed.group(1)) >= MIN_TORCHLESS, tail
    assert "error" not in out.stdout.splitlines()[-1], tail


def test_the_plugin_blocks_torch_and_the_trainer() -> None:
    code = ("import tests.torchless\n"
            "for name in ('torch', 'trainer.run.engine', 'timm'):\n"
            "    try:\n"
            "        __import__(name)\n"
            "    except ImportError as exc:\n"
            "        print('blocked', name, 'train extra' in str(exc))\n"
            "import scipy.stats, service.http.app\n"  # what the API imports still imports
            "print('api ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:4] == ["blocked torch True", "blocked trainer.run.engine True",
                                          "blocked timm True", "api ok"], out.stdout + out.stderr
