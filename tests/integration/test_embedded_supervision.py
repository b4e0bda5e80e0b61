"""The embedded Redis under faults, with real processes: killed -> restarted with its queue; never
outlives ``serve`` (even SIGKILLed); a stale one is stopped at start; SIGTERM stops ``serve`` within
10 s with a job running, and the job finishes after the next start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.procs import alive, cmdline
from jobs import FINISHED
from tests.integration.procs import (
    Server,
    base_env,
    children_of,
    free_port,
    upload,
    wait_for,
    wait_job,
    worker,
)
from transport.embedded_redis import discover, pid_file, redis_server_binary, url_file

pytestmark = pytest.mark.slow


def redis_pid(home: Path) -> int:
    return int(json.loads(pid_file(home).read_text())["pid"])


def readiness(server: Server) -> tuple[int, dict]:
    resp = server.http.get("/readyz")
    return resp.status_code, resp.json()


@pytest.mark.timeout(600)
def test_killed_redis_is_restarted_and_keeps_the_queued_job(tmp_path: Path, bootstrapped_home: Path,
                                                            small_hymenoptera_zip: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    env = base_env(home, TUNESERVE_LEASE_SECONDS="4")
    server = Server(env, tmp_path / "serve.log")  # --no-worker: the job waits in Redis's queue
    job_worker = None
    try:
        server.wait_ready()
        status, body = readiness(server)
        assert status == 200 and body["checks"] == {"models": "ready", "broker": "up"}, body
        url, first = discover(home), redis_pid(home)
        job = server.http.post("/v1/jobs", json={"dataset_id": upload(server.http, small_hymenoptera_zip),
                                                 "model": "insects", "mode": "linear"})
        assert job.status_code == 202, job.text

        os.kill(first, signal.SIGKILL)
        down = wait_for(lambda: (r := readiness(server))[0] == 503 and r, 10, "/readyz to say the broker is down",
                        interval=0.05)
        assert down[1]["checks"] == {"models": "ready", "broker": "down"}, down
        assert "broker (Redis at 127.0.0.1:" in down[1]["detail"] and "not answering" in down[1]["detail"]
        assert ":" + url.rsplit("@", 1)[1].split("/")[0].split(":")[1] in down[1]["detail"]  # the same port
        assert url.split("@")[0].split(":")[-1] not in down[1]["detail"]  # never the password

        wait_for(lambda: readiness(server)[0] == 200, 20, "/readyz to recover", interval=0.1)
        assert redis_pid(home) != first and discover(home) == url  # a new process, same port and password
        assert "restarting it on port" in server.tail(40)

        job_worker = worker(env, tmp_path / "worker.log")  # joins now: the message must have survived
        done = wait_job(server.http, job.json()["id"], FINISHED, 300, lambda: job_worker.tail(60) if job_worker
                        else "")
        assert done["state"] == "succeeded", done
    finally:
        if job_worker is not None:
            job_worker.stop()
        assert server.stop() == 0, server.tail(40)


@pytest.mark.timeout(300)
def test_sigkilled_serve_leaves_no_redis_or_worker(tmp_path: Path, bootstrapped_home: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    server = Server(base_env(home), tmp_path / "serve.log", no_worker=False).wait_ready()
    children = wait_for(lambda: len(c := children_of(server.pid)) == 2 and c, 30, "redis-server and the worker")
    assert redis_pid(home) in children
    server.kill()  # SIGKILL: no cleanup code runs in serve
    wait_for(lambda: not any(alive(pid) for pid in children), 10, "redis-server and the worker to die with serve")


@pytest.mark.timeout(300)
def test_stale_redis_from_a_crash_is_stopped_at_start(tmp_path: Path, bootstrapped_home: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    (home / "run").mkdir(exist_ok=True)
    (home / "redis").mkdir(exist_ok=True)
    # What an older serve killed without its children left: a redis-server of its own session, the URL
    # and pid files, and an owner that is gone.
    port = free_port()
    stale = subprocess.Popen([str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port),
                              "--requirepass", "old", "--dir", str(home / "redis"), "--save", ""],
                             stdout=subprocess.DEVNULL, start_new_session=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        url_file(home).write_text(f"redis://:old@127.0.0.1:{port}/0\n")
        wait_for(lambda: discover(home), 10, "the stale redis to answer")
        pid_file(home).write_text(json.dumps({"pid": stale.pid, "owner": gone.pid, "port": port}))
        server = Server(base_env(home), tmp_path / "serve.log").wait_ready()
        try:
            assert stale.wait(10) is not None  # stopped by the new serve
            assert "crashed serve left running" in server.tail(40)
            assert discover(home) not in (None, f"redis://:old@127.0.0.1:{port}/0")
        finally:
            assert server.stop() == 0
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait(5)


@pytest.mark.timeout(900)
def test_sigterm_with_a_running_job_exits_fast_and_the_job_resumes(tmp_path: Path, bootstrapped_home: Path,
                                                                   small_hymenoptera_zip: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    env = base_env(home, TUNESERVE_LEASE_SECONDS="4")
    server = Server(env, tmp_path / "serve.log", no_worker=False).wait_ready()
    try:
        dataset_id = upload(server.http, small_hymenoptera_zip)
        resp = server.http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "bees", "mode": "finetune",
                                                  "hyperparameters": {"max_epochs": 2, "probe_epochs": 5}})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        wait_job(server.http, job_id, ("running",), 300, lambda: server.tail(60))
        children = children_of(server.pid)
        redis_pid_seen = redis_pid(home)
        worker_pid = next(pid for pid in children if "tuneserve.cli worker" in cmdline(pid))
    except BaseException:
        server.stop()
        raise
    started = time.monotonic()
    code = server.stop(timeout=30)
    took = time.monotonic() - started
    assert code == 0 and took < 10, f"serve took {took:.1f}s to stop\n{server.tail(40)}"
    # Redis and the worker are gone when serve exits; the upload validator's forkserver follows once it
    # sees its parent's pipe close.
    assert not alive(redis_pid_seen) and not alive(worker_pid), "redis-server or the worker outlived serve"
    survivors = lambda: {pid: cmdline(pid) for pid in children if alive(pid)}  # noqa: E731
    try:
        wait_for(lambda: not survivors(), 5, "serve's children to exit")
    except AssertionError:
        raise AssertionError(f"outlived serve: {survivors()}") from None

    again = Server(env, tmp_path / "serve2.log", no_worker=False).wait_ready()
    try:
        job = wait_job(again.http, job_id, FINISHED, 600, lambda: again.tail(80))
        assert job["state"] == "succeeded" and job["attempts"] >= 2, job
    finally:
        assert again.stop(timeout=30) == 0
