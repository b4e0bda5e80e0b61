"""Integration fixtures: a real API process and a real worker process on the real Redis (module scope)."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.procs import Proc, Server, base_env, private_broker, upload, worker, zip_folder


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    server: Server
    worker: Proc
    logs: Path

    def new_worker(self) -> Proc:
        self.worker = worker(self.env, self.logs / "worker.log")
        return self.worker

    def diagnostics(self) -> str:
        return f"--- worker log ---\n{self.worker.tail(80)}\n--- server log ---\n{self.server.tail(40)}"


@pytest.fixture(scope="session")
def hymenoptera_zip(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path) -> Path:
    return zip_folder(hymenoptera, tmp_path_factory.mktemp("archives") / "hymenoptera.zip", "hymenoptera")


def subset(root: Path, train: int, val: int, shuffle_train: bool = False) -> Callable[[Path], str | None]:
    """A zip_folder selector: the first ``train``/``val`` JPEGs per class, training labels maybe shuffled."""
    kept: dict[tuple[str, str], int] = {}
    rng = random.Random(7)

    def pick(path: Path) -> str | None:
        parts = path.relative_to(root).parts
        if len(parts) != 3 or path.suffix.lower() not in (".jpg", ".jpeg"):
            return None
        split, label, name = parts
        if kept.get((split, label), 0) >= (train if split == "train" else val):
            return None
        kept[(split, label)] = kept.get((split, label), 0) + 1
        if shuffle_train and split == "train":
            label = rng.choice(["ants", "bees"])
        return f"{split}/{label}/{name}"

    return pick


@pytest.fixture(scope="session")
def small_hymenoptera_zip(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path) -> Path:
    """16 train and 10 val images per class: enough for a few real fine-tuning epochs in seconds."""
    dest = tmp_path_factory.mktemp("archives") / "small.zip"
    return zip_folder(hymenoptera, dest, "small", subset(hymenoptera, 16, 10))


@pytest.fixture(scope="session")
def shuffled_hymenoptera_zip(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path) -> Path:
    """Training labels shuffled, validation labels true: what trains on it is worse than the active model."""
    dest = tmp_path_factory.mktemp("archives") / "shuffled.zip"
    return zip_folder(hymenoptera, dest, "shuffled", subset(hymenoptera, 40, 25, shuffle_train=True))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, bootstrapped_home: Path) -> Iterator[Stack]:
    """API (``serve --no-worker``) + one ``tuneserve worker`` on a private Redis DB and queue."""
    root = tmp_path_factory.mktemp("stack")
    home = root / "home"
    shutil.copytree(bootstrapped_home, home)
    env = base_env(home, **private_broker(), TUNESERVE_LEASE_SECONDS="4", TUNESERVE_REFRESH_INTERVAL_S="1")
    server = Server(env, root / "serve.log").wait_ready()
    s = Stack(home, env, server, worker(env, root / "worker.log"), root)
    try:
        yield s
    finally:
        s.worker.stop()
        server.stop()


@pytest.fixture(scope="module")
def dataset_id(stack: Stack, hymenoptera_zip: Path) -> str:
    return upload(stack.server.http, hymenoptera_zip)


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A Chromium page on the stack's API; its console errors and page errors are collected in ``problems``."""
    context = browser.new_context(base_url=stack.server.url, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    pg.problems = problems
    yield pg
    context.close()
