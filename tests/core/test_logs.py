"""Logs an operator can read: a real `serve` writing JSON lines, hang-ups at INFO, repeats held back."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

from core.logs import ContextFilter, JsonFormatter, RepeatFilter, TextFormatter, log_fields
from tests.integration.procs import Server, base_env, private_broker, wait_for

TABBY = Path(__file__).parents[1] / "data" / "imagenet" / "n02123045_tabby.JPEG"


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON, uvicorn's own included


def hang_up_mid_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/models/imagenet/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n" + TABBY.read_bytes()[:1000])
        time.sleep(0.5)  # the route is reading the body now


def test_json_lines_with_request_lines_and_quiet_hang_ups(home: Path, tmp_path: Path) -> None:
    env = base_env(home, **private_broker(), TUNESERVE_LOG_FORMAT="json", TUNESERVE_LOG_LEVEL="DEBUG")
    server = Server(env, tmp_path / "serve.log").wait_ready()
    try:
        assert server.http.get("/v1/models").status_code == 200
        resp = server.http.post("/v1/models/imagenet/predict", content=TABBY.read_bytes(),
                                headers={"Content-Type": "image/jpeg"})
        assert resp.status_code == 200
        hang_up_mid_body(server.port)
        wait_for(lambda: "disconnected" in server.log.read_text(), 20, "the hang-up to be logged")
    finally:
        server.stop()
    lines = json_lines(server.log)
    requests = [rec for rec in lines if rec["logger"] == "tuneserve.requests" and rec["level"] == "DEBUG"]
    assert sum(rec["message"].startswith("GET /v1/models 200") for rec in requests) == 1
    predicted = [rec for rec in requests if rec["message"].startswith("POST /v1/models/imagenet/predict 200")]
    assert len(predicted) == 1 and predicted[0]["model"] == "imagenet"
    hang_ups = [rec for rec in lines if "disconnected" in rec["message"]]
    assert len(hang_ups) == 1 and hang_ups[0]["level"] == "INFO" and "exception" not in hang_ups[0]
    assert not [rec for rec in lines if rec["level"] in ("ERROR", "CRITICAL")], lines
    assert "Traceback" not in server.log.read_text()
    serving = next(rec for rec in lines if rec["message"].startswith("serving imagenet version 1"))
    assert serving["model"] == "imagenet" and serving["version"] == 1


def test_request_lines_only_at_debug(home: Path, tmp_path: Path) -> None:
    server = Server(base_env(home, **private_broker()), tmp_path / "serve.log").wait_ready()
    try:
        for _ in range(3):
            assert server.http.get("/v1/models").status_code == 200
        hang_up_mid_body(server.port)
        wait_for(lambda: "disconnected" in server.log.read_text(), 20, "the hang-up to be logged")
    finally:
        server.stop()
    text = server.log.read_text()
    assert "GET /v1/models" not in text and "Traceback" not in text
    assert " INFO tuneserve.requests: client 127.0.0.1:" in text  # the text format, at INFO


def capture(window_s: float, formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler.addFilter(RepeatFilter(window_s))
    logger = logging.getLogger(f"tuneserve.test.{id(out)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_identical_warnings_are_rate_limited() -> None:
    logger, out = capture(0.5, TextFormatter())
    for _ in range(50):  # a broker down: the same warning every loop
        logger.warning("broker unreachable: %s", "connection refused")
    logger.warning("another problem")  # a different message is not held back
    for _ in range(3):
        logger.info("progress")  # below WARNING: never held back
    time.sleep(0.6)
    logger.warning("broker unreachable: %s", "connection refused")
    lines = out.getvalue().splitlines()
    assert sum("broker unreachable" in line for line in lines) == 2, lines
    assert "(and 49 more like it in" in lines[-1]
    assert sum("another problem" in line for line in lines) == 1
    assert sum("progress" in line for line in lines) == 3


def test_json_fields_from_context_and_extra() -> None:
    logger, out = capture(60, JsonFormatter())
    with log_fields(job_id="job-1", model="ants"):
        logger.info("epoch %d done", 3)
        logger.info("loaded", extra={"version": 2})
    logger.info("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second, outside, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "epoch 3 done" and first["job_id"] == "job-1" and first["model"] == "ants"
    assert second["version"] == 2 and second["job_id"] == "job-1"
    assert "job_id" not in outside and outside["level"] == "INFO"
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exception"]
