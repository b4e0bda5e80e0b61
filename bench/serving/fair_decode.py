"""Fair decoding: a request of large photos decoding, and a small request sent meanwhile (issue 23, item 4).

In-process (Starlette's TestClient, no port), on a bootstrapped home's ``imagenet`` model:

1. 64 blank 6300x6300 PNGs in one request (2.54 gigapixels): answered how fast, with what status;
2. ``--big`` blank 6300x6300 PNGs in one request (under the decode budget), and 0.3 s later a request
   of two real photos (several images: decoded in the pool, not by a lane): both latencies.

Run it against any checkout (``PYTHONPATH=<checkout>``), e.g. before and after a change:

    flock /tmp/tuneserve-bench.lock env PYTHONPATH=$PWD .venv/bin/python bench/serving/fair_decode.py \
        --home /tmp/perf-home
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from service.http.app import create_app

URL = "/v1/models/imagenet/predict"


def blank_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side)).save(out, "PNG")
    return out.getvalue()


def post(client: TestClient, photos: list[bytes]) -> tuple[int, float]:
    started = time.perf_counter()
    resp = client.post(URL, files=[("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(photos)])
    return resp.status_code, round(time.perf_counter() - started, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a bootstrapped TUNESERVE_HOME")
    parser.add_argument("--big", type=int, default=6, help="large photos in the request under the budget")
    parser.add_argument("--photo", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "data"
                        / "imagenet" / "n02123045_tabby.JPEG")
    opts = parser.parse_args()
    big, small = blank_png(6300), opts.photo.read_bytes()
    out: dict[str, Any] = {}
    with TestClient(create_app(Settings(home=opts.home, device="cpu"))) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.1)
        post(client, [small, small])  # warm
        out["64 x 6300^2 (status, s)"] = post(client, [big] * 64)

        def big_request() -> None:
            out[f"{opts.big} x 6300^2 (status, s)"] = post(client, [big] * opts.big)

        thread = threading.Thread(target=big_request)
        thread.start()
        time.sleep(0.3)
        out["2 photos sent 0.3 s later (status, s)"] = post(client, [small, small])
        thread.join()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
