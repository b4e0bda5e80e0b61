"""The app behind a real uvicorn on a real socket, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.integration.procs import free_port


@contextmanager
def live_server(app: FastAPI, ready: bool = True, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (uvicorn ``config`` passed through); yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                           access_log=False, **config))
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert thread.is_alive(), "uvicorn stopped before it served"
        try:
            if httpx.get(f"{url}/readyz" if ready else f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
