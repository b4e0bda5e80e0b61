"""Hostile photos against a real API process: answer time and the process's peak RSS (VmHWM).

Cases: a 20000x1 PNG, a 1x20000 PNG, an 8000x1 PNG (each refused from its header: 422), and, with
``--many``, one request of 64 blank 6300x6300 PNGs with a single-photo predict sent while it runs (the
decode budget's case). Peak RSS is read from ``/proc/<pid>/status`` after each case; it never goes down,
so each line shows the peak so far and what that case added.

    python -m bench.serving.hostile [--home DIR] [--many]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.procs import peak_rss_mib
from bench.serving.serve import Server, ensure_home, free_port, load_jpegs

log = logging.getLogger("bench.serving.hostile")
PREDICT = "/v1/models/imagenet/predict"


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (255, 255, 255)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def timed(http: httpx.Client, **kwargs: object) -> tuple[int, float]:
    started = time.perf_counter()
    resp = http.post(PREDICT, **kwargs)  # type: ignore[arg-type]
    return resp.status_code, time.perf_counter() - started


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--many", action="store_true", help="also the 64 x 6300x6300 request")
    opts = parser.parse_args()
    home = ensure_home(opts.home)
    port = free_port()
    cmd = [sys.executable, "-m", "tuneserve.cli", "serve", "--no-worker", "--port", str(port)]
    server = Server("hostile", cmd, {"TUNESERVE_HOME": str(home)}, port, "/readyz")
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            photo = load_jpegs(1)[0]
            for _ in range(3):  # warm: the first predictions build the batcher's buffers
                timed(http, content=photo, headers={"Content-Type": "image/jpeg"})
            before = peak_rss_mib(server.proc.pid)
            rows.append(("baseline (3 predicts of a real photo)", 200, 0.0, before, 0.0))
            for width, height in ((20000, 1), (1, 20000), (8000, 1)):
                body = png(width, height)
                status, seconds = timed(http, content=body, headers={"Content-Type": "image/png"})
                peak = peak_rss_mib(server.proc.pid)
                rows.append((f"{width}x{height} PNG ({len(body)} bytes)", status, seconds, peak, peak - before))
                before = peak
            if opts.many:
                blank = png(6300, 6300)
                files = [("file", (f"{i}.png", blank, "image/png")) for i in range(64)]
                single: list[tuple[int, float]] = []

                def predict_meanwhile() -> None:  # its own connection: the big request holds the first
                    time.sleep(0.5)
                    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as other:
                        single.append(timed(other, content=photo, headers={"Content-Type": "image/jpeg"}))

                thread = threading.Thread(target=predict_meanwhile)
                thread.start()
                status, seconds = timed(http, files=files)
                thread.join()
                peak = peak_rss_mib(server.proc.pid)
                rows.append((f"64 x 6300x6300 PNG ({64 * len(blank)} bytes)", status, seconds, peak, peak - before))
                rows.append(("single predict sent 0.5 s into it", single[0][0], single[0][1], peak, 0.0))
    finally:
        server.stop()
    print("| case | status | answer (s) | API peak RSS (MB) | added (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for name, status, seconds, peak, added in rows:
        print(f"| {name} | {status} | {seconds:.3f} | {peak:,.0f} | {added:+,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
