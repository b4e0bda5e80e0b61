"""Slow and greedy clients against a real `tuneserve serve` (default settings): the issue's probes, measured.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.http_guards --write-docs

Each probe reports how long the service took to cut the client, or what it cost; docs/benchmarks.md
"## Slow and greedy clients" holds the numbers.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.docs import write_section  # noqa: E402
from bench.procs import rss_mib  # noqa: E402
from tests.integration.procs import Server, base_env, private_broker  # noqa: E402
from tests.photos import IMAGENET_SAMPLES  # noqa: E402

SECTION = "## Slow and greedy clients"
PREDICT = b"POST /v1/models/imagenet/predict HTTP/1.1\r\nHost: b\r\nContent-Type: image/jpeg\r\n"


def closed_after(sock: socket.socket, limit: float) -> float:
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - started


def half_headers(port: int, n: int) -> dict[str, Any]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(PREDICT[:40])
        socks.append(sock)
    started = time.monotonic()
    times: list[float] = []
    threads = [threading.Thread(target=lambda s=s: times.append(closed_after(s, 120))) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    return {"n": n, "all_closed_s": time.monotonic() - started, "median_s": statistics.median(times)}


def short_body(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(PREDICT + b"Content-Length: 100000\r\n\r\n" + b"x" * 5000)
        return closed_after(sock, 120)


def trickle(port: int, every_s: float) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: b\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 100000\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"file\"; "
                     b"filename=\"a.zip\"\r\n\r\n")  # a valid start: the bytes that follow are file data
        started = time.monotonic()
        sock.settimeout(every_s)
        while time.monotonic() - started < 120:
            try:
                sock.sendall(b"a")
                sock.recv(65536)  # an answer (408) or the close: either way the client was cut
                break
            except TimeoutError:
                continue
            except OSError:
                break
        return time.monotonic() - started


def unfinished_bodies(server: Server, n: int, size: int) -> dict[str, Any]:
    before = rss_mib(server.pid)
    outcomes: list[str] = []

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.settimeout(60)
                sock.sendall(PREDICT + b"Content-Length: %d\r\n\r\n" % size)
                for _ in range(size // (1 << 20) - 1):
                    sock.sendall(b"\0" * (1 << 20))
                answer = sock.recv(200)
                outcomes.append(answer.split(b"\r\n")[0].decode() or "closed")
        except OSError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=client) for _ in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    peak = before
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(server.pid))
        time.sleep(0.05)
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    return {"n": n, "size_mib": size >> 20, "rss_before": before, "rss_peak": peak,
            "done_s": time.monotonic() - started, "outcomes": counts, "rss_after": rss_mib(server.pid)}


def many_entries(tmp: Path, entries: int) -> Path:
    path = tmp / f"entries-{entries}.tgz"
    with tarfile.open(path, "w:gz") as tf:
        for i in range(entries):
            info = tarfile.TarInfo(f"set/a/{i}.jpg")
            tf.addfile(info, io.BytesIO(b""))
    return path


def upload_time(http: httpx.Client, archive: Path) -> tuple[float, int]:
    started = time.monotonic()
    with archive.open("rb") as fh:
        resp = http.post("/v1/datasets", files={"file": (archive.name, fh, "application/gzip")}, timeout=600)
    return time.monotonic() - started, resp.status_code


def greedy_vs_small(url: str, images: int, seconds: float) -> dict[str, Any]:
    photos = [p.read_bytes() for p in sorted(IMAGENET_SAMPLES.glob("*.JPEG"))]
    files = [("file", (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")) for i in range(images)]
    stop = threading.Event()
    greedy: list[tuple[int, float]] = []

    def hog() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while not stop.is_set():
                t = time.monotonic()
                status = http.post("/v1/models/imagenet/predict", files=files).status_code
                greedy.append((status, time.monotonic() - t))

    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for h in hogs:
        h.start()
    time.sleep(2)
    small: list[tuple[int, float]] = []
    with httpx.Client(base_url=url, timeout=120) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            resp = http.post("/v1/models/imagenet/predict", content=photos[0], headers={"Content-Type": "image/jpeg"})
            small.append((resp.status_code, time.monotonic() - t))
    stop.set()
    for h in hogs:
        h.join()
    ok = sorted(s for code, s in small if code == 200)
    return {"images": images, "greedy": {c: sum(1 for code, _ in greedy if code == c) for c in {c for c, _ in greedy}},
            "greedy_s": statistics.median(s for _, s in greedy) if greedy else None,
            "small": {c: sum(1 for code, _ in small if code == c) for c in {c for c, _ in small}},
            "small_p50_ms": 1000 * ok[len(ok) // 2] if ok else None,
            "small_p95_ms": 1000 * ok[int(len(ok) * 0.95)] if ok else None}


def run(home: Path, tmp: Path, only: str | None = None) -> dict[str, Any]:
    server = Server(base_env(home, **private_broker()), tmp / "serve.log").wait_ready(120)
    try:
        if only == "trickle":
            return {"trickle_s": trickle(server.port, 5.0)}
        out: dict[str, Any] = {"load_before": os.getloadavg()}
        out["headers"] = half_headers(server.port, 1000)
        out["short_body_s"] = short_body(server.port)
        out["trickle_s"] = trickle(server.port, 5.0)
        out["bodies"] = unfinished_bodies(server, 20, 30 << 20)
        archive = many_entries(tmp, 200_001)
        out["entries"] = {"bytes": archive.stat().st_size, "took": upload_time(server.http, archive)}
        out["greedy"] = greedy_vs_small(server.url, 256, 30)
        out["load_after"] = os.getloadavg()
        return out
    finally:
        server.stop()


def markdown(r: dict[str, Any]) -> str:
    h, b, e, g = r["headers"], r["bodies"], r["entries"], r["greedy"]
    return "\n".join([
        SECTION, "",
        "Command: `flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.http_guards --write-docs` (a real "
        "`tuneserve serve --no-worker`, default settings: header 10 s, body idle 15 s, 1 KiB/s after 10 s, "
        "8 large bodies in flight, queue 256 with a share of 64).",
        f"Machine: x86_64, {os.cpu_count()} cores shared with other work; load average before/after: "
        f"{' '.join(f'{x:.2f}' for x in r['load_before'])} / {' '.join(f'{x:.2f}' for x in r['load_after'])}.", "",
        "| probe (the issue's numbers before) | now |", "| --- | --- |",
        f"| {h['n']:,} half-sent headers (held > 30 s) | all closed with 408 after {h['all_closed_s']:.1f} s "
        f"(median {h['median_s']:.1f} s) |",
        f"| body shorter than its Content-Length (held > 70 s) | 408 and closed after {r['short_body_s']:.1f} s |",
        f"| dataset upload at 1 byte / 5 s (kept going) | 408 and closed after {r['trickle_s']:.1f} s |",
        f"| {b['n']} unfinished {b['size_mib']} MiB bodies (RSS 450 -> 1,052 MB) | RSS {b['rss_before']:.0f} -> peak "
        f"{b['rss_peak']:.0f} MiB, {b['rss_after']:.0f} after; all answered in {b['done_s']:.1f} s: {b['outcomes']} |",
        f"| 1 MB .tgz of 200,001 entries ({e['bytes']:,} bytes; refused after 73.6 s) | {e['took'][1]} after "
        f"{e['took'][0]:.2f} s (upload included) |",
        f"| two clients sending {g['images']}-image requests, one sending single images for 30 s (everyone else "
        f"got 503) | small client: {g['small']}, p50 {g['small_p50_ms']:.0f} ms, p95 {g['small_p95_ms']:.0f} ms; "
        f"greedy: {g['greedy']}, median {g['greedy_s']:.1f} s a request |",
    ]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, help="a bootstrapped TUNESERVE_HOME (default: bootstrap a fresh one)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--only", choices=["trickle"], help="run one probe and print its number")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = args.home
        if home is None:
            from core.settings import Settings
            from models import Registry
            from trainer.publish.bootstrap import bootstrap

            home = tmp / "home"
            bootstrap(Registry(home / "models"), Settings(home=home), check_images=IMAGENET_SAMPLES)
        result = run(home, tmp, args.only)
    if args.only:
        print(result)
        return 0
    text = markdown(result)
    print(text)
    if args.write_docs:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
