"""Where the benchmark data lives: ``../shared/data`` beside the repository, never in it.

Benchmarks need the full sets (hymenoptera, imagenet_samples, cifar10), which a user's clone does
not have; the tests use the small sets committed under ``tests/data``. ``BENCH_DATA`` points
elsewhere. A missing set ends the benchmark with a message saying what is missing and how to point
at it, instead of a traceback halfway through.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """``ROOT / name``, or exit with a clear message when it is absent."""
    path = ROOT / name
    if not path.is_dir():
        sys.exit(f"benchmark data missing: {path} does not exist. Benchmarks read the full data sets from "
                 f"../shared/data beside the repository (set BENCH_DATA to another folder holding "
                 f"'{name}'); the tests use the small sets in tests/data instead.")
    return path
