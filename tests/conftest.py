"""Shared fixtures: the real photos committed under tests/data, a registry holding the real default model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.photos import HYMENOPTERA, IMAGENET_SAMPLES

SLOW_TIMEOUT_S = 1200  # end-to-end tests train real models on a shared CPU; the ini's default is for the rest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from service.inference.onnx_session import gpu_present

    tests = Path(__file__).parent
    # Tests that run the trainer (and so need the `train` extra and minutes of CPU): the trainer's own
    # tests and the `tuneserve train`/`worker` commands' (tests/tuneserve/cli/test_train*.py, test_worker*.py).
    training = [tests / "trainer", *(tests / "tuneserve" / "cli").glob("test_train*.py"),
                *(tests / "tuneserve" / "cli").glob("test_worker*.py")]
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
        # `make test-fast` deselects these two kinds (pyproject.toml's markers say what they are)
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        # the real ImageNet model is exported with torch: such a test needs the train extra
        if "bootstrapped_home" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
        if any(item.path.is_relative_to(path) for path in training):
            item.add_marker(pytest.mark.training)
    if gpu_present():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not any name containing "gpu"
            item.add_marker(skip)


@pytest.fixture(scope="session")
def imagenet_samples() -> Path:
    assert IMAGENET_SAMPLES.is_dir(), f"test data missing: {IMAGENET_SAMPLES}"
    return IMAGENET_SAMPLES


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    assert HYMENOPTERA.is_dir(), f"test data missing: {HYMENOPTERA}"
    return HYMENOPTERA


@pytest.fixture(scope="session")
def bootstrapped_home(tmp_path_factory: pytest.TempPathFactory, imagenet_samples: Path) -> Path:
    """A home folder whose registry holds the real ImageNet model (exported once per session)."""
    from core.settings import Settings
    from models import Registry
    from trainer.publish.bootstrap import bootstrap

    home = tmp_path_factory.mktemp("home")
    bootstrap(Registry(home / "models"), Settings(home=home), check_images=imagenet_samples)
    return home


@pytest.fixture
def home(tmp_path: Path, bootstrapped_home: Path) -> Iterator[Path]:
    """A private copy of the bootstrapped home, free to modify."""
    dest = tmp_path / "home"
    shutil.copytree(bootstrapped_home, dest)
    yield dest


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, refresh_interval_s=0.2)


@pytest.fixture
def s3_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>/tuneserve`` on the suite's S3 API server (moto, tests/services.py), with boto3's
    standard variables pointing at it for this test."""
    from tests.services import new_bucket, s3_endpoint, s3_env

    for key, value in s3_env(s3_endpoint()).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return f"s3://{new_bucket()}/tuneserve"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the private Redis and PostgreSQL this process started (tests/services.py)."""
    from tests.services import stop_all

    stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Playwright's Chromium, else the system's (tests/browser.py); none fails the test naming the install."""
    from tests.browser import NoBrowser, launched

    try:
        with launched() as b:
            yield b
    except NoBrowser as exc:
        pytest.fail(str(exc), pytrace=False)
