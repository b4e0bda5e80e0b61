"""Real processes for integration tests: ``tuneserve serve`` and ``tuneserve worker`` subprocesses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port, redis_url

REPO = Path(__file__).resolve().parents[2]


def private_broker() -> dict[str, str]:
    """A Redis DB number and queue name of our own on the tests' Redis (tests/services.py): never shared messages."""
    return {
        "TUNESERVE_BROKER_URL": f"{redis_url()}/{random.randint(1, 15)}",
        "TUNESERVE_TASK_QUEUE": f"test-{uuid.uuid4().hex[:10]}",
    }


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")}
    env.update({"TUNESERVE_HOME": str(home), "PYTHONUNBUFFERED": "1", "TUNESERVE_INTRA_OP_THREADS": "1"})
    env.update(extra)
    return env


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A child process whose output goes to a log file (shown when a test fails)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneserve.cli", *args], env=env, cwd=REPO, stdout=self._fh,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a machine dies."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._fh.close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._fh.close()
        return int(self.process.returncode)


class Server(Proc):
    def __init__(self, env: dict[str, str], log: Path, no_worker: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port)] + (["--no-worker"] if no_worker else [])
        super().__init__(args, env, log)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 60.0) -> Server:
        def ready() -> bool:
            assert self.alive(), f"server exited:\n{self.tail()}"
            try:
                return self.http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout, f"server ready\n{self.tail()}")
        return self

    def kill(self) -> None:
        self.http.close()  # else its pooled connection to the dead server is left to the GC (ResourceWarning)
        super().kill()

    def stop(self, timeout: float = 30.0) -> int:
        self.http.close()
        return super().stop(timeout)


def worker(env: dict[str, str], log: Path) -> Proc:
    return Proc(["worker"], env, log)


def wait_job(http: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float,
             diagnostics: Callable[[], str] = lambda: "") -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] in states else None

    try:
        return wait_for(reached, timeout, f"job {job_id} to reach {states}", interval=0.25)  # type: ignore[no-any-return]
    except AssertionError as exc:
        job = http.get(f"/v1/jobs/{job_id}").json()
        raise AssertionError(f"{exc}; job is {job}\n{diagnostics()}") from None


def zip_folder(folder: Path, dest: Path, arcroot: str, rename: Callable[[Path], str | None] | None = None) -> Path:
    """Zip ``folder`` under ``arcroot/``; ``rename`` maps a file to its path inside the root (None skips it)."""
    import zipfile

    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = rename(path) if rename else path.relative_to(folder).as_posix()
            if rel is not None:
                zf.write(path, f"{arcroot}/{rel}")
    return dest


def upload(http: httpx.Client, archive: Path) -> str:
    with archive.open("rb") as fh:
        resp = http.post("/v1/datasets", files={"file": (archive.name, fh, "application/zip")})
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def sse_events(http: httpx.Client, path: str, timeout: float) -> list[tuple[str, dict[str, Any]]]:
    """Read a job's event stream to its end: [(event name, the job as known after that event)].

    The stream sends a ``snapshot``, then ``delta`` events (only what changed), then ``end`` (the whole
    job); each delta is applied to the state before it, as a client does.
    """
    import json

    from service.http.reports import apply_delta

    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    state: dict[str, Any] = {}
    with http.stream("GET", path, timeout=timeout) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                state = apply_delta(state, data) if name == "delta" else data
                events.append((name, state))
                name = "message"
    return events


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
