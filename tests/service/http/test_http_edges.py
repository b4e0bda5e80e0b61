"""The small edges of HTTP: HEAD on GET routes, strict JSON types, UTF-8 only, one status for bad JSON, a cap
on event streams, and a quiet start."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from jobs import JobStore
from service.http.app import create_app
from tests.integration.procs import Server, base_env
from tests.service.live import live_server

JOB = {"dataset_id": "some-dataset", "model": "clothes"}


def test_head_answers_like_get_without_a_body(client: TestClient) -> None:
    for path in ("/v1/models", "/v1/models/imagenet", "/v1/jobs", "/v1/datasets", "/healthz", "/openapi.json",
                 "/v1/models/imagenet/versions/1/files"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == got.headers["content-length"], path
        assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/v1/jobs/no-such-job").status_code == 404
    assert client.head("/v1/jobs/no-such-job/events").status_code == 404
    refused = client.head("/v1/models/imagenet/predict")  # POST only
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"


@pytest.mark.parametrize("body", [
    {**JOB, "hyperparameters": {"max_epochs": True}},
    {**JOB, "hyperparameters": {"batch_size": "32"}},
    {**JOB, "hyperparameters": {"max_epochs": 3.0}},
    {**JOB, "replace_labels": "yes"},
    {**JOB, "replace_labels": 1},
])
def test_json_types_are_strict(client: TestClient, body: dict[str, object]) -> None:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert any(key in resp.json()["detail"] for key in ("max_epochs", "batch_size", "replace_labels"))


def test_bad_json_is_422_and_only_utf8_is_json(client: TestClient) -> None:
    text = json.dumps(JOB)
    for raw in (b"{", b'{"dataset_id": 1' + b"2" * 5000 + b"}", text.encode("utf-16"), text.encode("utf-32"),
                b'{"dataset_id": "\xff"}'):
        resp = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422, (raw[:20], resp.status_code, resp.text)
        assert "not valid JSON" in resp.json()["detail"]
    declared = client.post("/v1/jobs", content=text.encode("utf-16"),
                           headers={"Content-Type": "application/json; charset=utf-16"})
    assert declared.status_code == 415 and "UTF-8" in declared.json()["detail"]
    # UTF-8 with a charset that says so is fine: the dataset is what is missing.
    fine = client.post("/v1/jobs", content=text.encode(), headers={"Content-Type": "application/json; charset=UTF-8"})
    assert fine.status_code == 404 and "dataset" in fine.json()["detail"]


@pytest.fixture
def streams(settings: Settings) -> Iterator[tuple[str, str]]:
    capped = settings.model_copy(update={"max_event_streams_per_client": 2, "max_event_streams": 3})
    job = JobStore(capped.resolved_database_url).create("clothes", "some-dataset", {}, kind="train")  # stays queued
    with live_server(create_app(capped)) as url:
        yield url, f"/v1/jobs/{job.id}/events"


def open_stream(stack: ExitStack, url: str, path: str, source: str) -> httpx.Response:
    http = stack.enter_context(httpx.Client(base_url=url, timeout=30,
                                            transport=httpx.HTTPTransport(local_address=source)))
    return stack.enter_context(http.stream("GET", path))


def test_event_streams_are_capped_per_client_and_in_all(streams: tuple[str, str]) -> None:
    url, path = streams
    with ExitStack() as stack:
        first = [open_stream(stack, url, path, "127.0.0.1") for _ in range(2)]
        assert [r.status_code for r in first] == [200, 200]
        mine = open_stream(stack, url, path, "127.0.0.1")
        assert mine.status_code == 429 and mine.headers["retry-after"]
        assert "per client" in json.loads(mine.read())["detail"]
        assert open_stream(stack, url, path, "127.0.0.2").status_code == 200  # another client: its own share
        full = open_stream(stack, url, path, "127.0.0.3")
        assert full.status_code == 429 and "on this server" in json.loads(full.read())["detail"]
    # Closed streams give their places back (the server notices the hang-ups within a poll).
    deadline = time.monotonic() + 10
    while True:
        with ExitStack() as stack:
            if open_stream(stack, url, path, "127.0.0.3").status_code == 200:
                break
        assert time.monotonic() < deadline, "closed streams never freed their places"
        time.sleep(0.2)


def test_a_normal_start_is_quiet(home: Path, tmp_path: Path) -> None:
    """`tuneserve serve` with its worker and private Redis: no Celery banner, no root warning, no WARNING."""
    server = Server(base_env(home), tmp_path / "serve.log", no_worker=False)
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while not re.search(r"@\S+ ready\.", server.log.read_text()):  # the worker's own "ready." line
            assert server.alive() and time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
    finally:
        server.stop()
    text = server.log.read_text()
    assert "-------------- celery@" not in text and "[queues]" not in text, text
    assert "SecurityWarning" not in text and "superuser" not in text, text
    assert " WARNING " not in text and "WARNING:" not in text, text
