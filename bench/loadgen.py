"""A lean HTTP/1.1 load generator: asyncio, keep-alive connections, bounded by requests and time.

It runs on the same machine as the servers it measures, so it has to be cheap: raw sockets,
pre-built request bytes (httpx would spend more CPU per request than the server's routing does) and
uvloop's event loop where it is installed, as the server has it (every millisecond the client takes is
one the server does not get; bench.serving.variant_http reports the client's CPU per image, 0.17-0.27 ms).
Only for 127.0.0.1 benchmarks; it speaks just enough HTTP for the servers in bench/serving/serve.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def raw_request(path: str, body: bytes, content_type: str, host: str = "127.0.0.1") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def multipart_request(path: str, field_name: str, filename: str, body: bytes) -> bytes:
    boundary = "tuneservebenchboundary7MA4YWxkTrZu0gW"
    payload = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
    return raw_request(path, payload, f"multipart/form-data; boundary={boundary}")


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    images_per_request: int
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    first_error: str = ""

    @property
    def images_per_s(self) -> float:
        return self.requests * self.images_per_request / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict[str, float | int | str]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
            "images_per_s": round(self.images_per_s, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "first_error": self.first_error,
        }


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        return status, b"".join(parts)
    return status, await reader.readexactly(length) if length >= 0 else b""


async def _worker(
    port: int, requests: list[bytes], counter: list[int], stop_at: float, max_requests: int,
    out: LoadResult, record: bool,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at and counter[0] < max_requests:
            i = counter[0]
            counter[0] += 1
            started = time.perf_counter()
            try:
                status, body = await _exchange(reader, writer, requests[i % len(requests)])
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                status, body = 0, b"connection dropped"
            if not record:
                continue
            if status == 200:
                out.latencies_ms.append((time.perf_counter() - started) * 1000.0)
                out.requests += 1
            else:
                out.errors += 1
                out.first_error = out.first_error or f"{status}: {body[:200]!r}"
    finally:
        writer.close()


async def _run(
    port: int, requests: list[bytes], concurrency: int, duration_s: float, max_requests: int,
    warmup_requests: int, images_per_request: int,
) -> LoadResult:
    result = LoadResult(concurrency, 0, 0, 0.0, images_per_request)
    if warmup_requests:
        counter = [0]
        far = time.perf_counter() + 120
        await asyncio.gather(*[
            _worker(port, requests, counter, far, warmup_requests, result, False) for _ in range(concurrency)
        ])
    counter = [0]
    started = time.perf_counter()
    await asyncio.gather(*[
        _worker(port, requests, counter, started + duration_s, max_requests, result, True)
        for _ in range(concurrency)
    ])
    result.wall_s = time.perf_counter() - started
    return result


def load_test(
    port: int, requests: list[bytes], concurrency: int, duration_s: float = 10.0, max_requests: int = 5000,
    warmup_requests: int | None = None, images_per_request: int = 1,
) -> LoadResult:
    """``concurrency`` closed-loop clients, each sending the next request when its answer arrived."""
    warm = 2 * concurrency if warmup_requests is None else warmup_requests
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run(port, requests, concurrency, duration_s, max_requests, warm, images_per_request))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows: asyncio's loop
        return None
    return uvloop.new_event_loop
