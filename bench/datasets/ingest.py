"""Dataset ingest throughput: one archive of a few thousand real photos, 1 worker vs every core.

Builds a class-folder zip from the shared hymenoptera photos, each re-encoded in several slightly
different ways (crop, scale, JPEG quality) so every file is distinct, then times
``DatasetStore.ingest`` end to end (unpack, full decode + sha256 + near-duplicate fingerprint of every file, duplicate
grouping, the made split, placing files, index.json) with ``workers=1`` and ``workers=os.cpu_count()``.

Run: ``flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.datasets.ingest --write-docs``
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from bench.data import shared_data
from bench.docs import write_section
from core.datasets import IngestLimits
from dataset_store import DatasetStore

log = logging.getLogger("bench.datasets.ingest")
REPO = Path(__file__).resolve().parents[2]
SECTION = "## Dataset ingest"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.datasets.ingest --write-docs"


def variants(path: Path, count: int) -> list[bytes]:
    """``count`` distinct JPEGs of one photo: a little cropped, scaled and re-encoded each time."""
    with Image.open(path) as src:
        img = src.convert("RGB")
    out = []
    for k in range(count):
        w, h = img.size
        crop = img.crop((k, k // 2, w - (k % 3), h - k))
        scale = 1.0 - 0.04 * k
        crop = crop.resize((max(32, int(crop.width * scale)), max(32, int(crop.height * scale))))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=92 - 3 * k)
        out.append(buf.getvalue())
    return out


def build_archive(dest: Path, per_photo: int) -> int:
    photos = sorted(p for p in shared_data("hymenoptera").glob("*/*/*.jpg"))
    with ProcessPoolExecutor() as pool:
        encoded = list(pool.map(variants, photos, [per_photo] * len(photos), chunksize=8))
    count = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:  # JPEGs don't compress; users zip like this
        for path, datas in zip(photos, encoded, strict=True):
            for k, data in enumerate(datas):
                zf.writestr(f"insects/{path.parent.name}/{path.stem}_v{k}.jpg", data)
                count += 1
    return count


def burn(n: int) -> int:
    """Pure-Python CPU work: how much parallelism the machine gives right now, free of I/O or Pillow."""
    x = 0
    for i in range(n):
        x += i * i
    return x


def machine_speedup(cores: int, n: int = 20_000_000) -> float:
    """Speed-up of ``cores`` processes over one on a trivially parallel task, measured now.

    Other work on a shared machine takes cores away; this says how much of that the ingest numbers
    could show at best.
    """
    start = time.perf_counter()
    burn(n)
    one = time.perf_counter() - start
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(burn, [1] * cores))  # workers up before timing
        start = time.perf_counter()
        list(pool.map(burn, [n // cores] * cores))
        many = time.perf_counter() - start
    return one / many


def time_ingest(archive: Path, workers: int, scratch: Path) -> tuple[float, int]:
    root = Path(tempfile.mkdtemp(dir=scratch))
    try:
        start = time.perf_counter()
        dataset, created = DatasetStore(root).ingest(archive, "bench", IngestLimits(workers=workers))
        elapsed = time.perf_counter() - start
        assert created and not dataset.problems, dataset.problems
        return elapsed, len(dataset.files)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def markdown(rows: dict[int, list[float]], images: int, meta: dict[str, object]) -> str:
    lines = [
        SECTION, "",
        f"Command: `{COMMAND}`", "",
        f"Archive: {images} distinct JPEGs (the {meta['photos']} hymenoptera JPEG photos x {meta['per_photo']} "
        f"re-encoded/cropped/scaled variants, ~500x375 px), {meta['archive_mb']} MB zip, class-folder layout. "
        "Timed: `DatasetStore.ingest` end to end (unpack, full Pillow decode + sha256 + near-duplicate fingerprint "
        "per file, "
        "duplicate groups, made split, placing files, index.json).",
        f"Machine: {meta['machine']}; load average before/after: {meta['load_before']} / {meta['load_after']} "
        "(other work shares these cores, so compare the two rows of one run).", "",
        "| workers | runs (s) | best (s) | images/s (best) | images/s (median) |", "| --- | --- | --- | --- | --- |",
    ]
    for workers, times in rows.items():
        lines.append(f"| {workers} | {', '.join(f'{t:.2f}' for t in times)} | {min(times):.2f} | "
                     f"{images / min(times):.0f} | {images / statistics.median(times):.0f} |")
    one, all_ = min(rows[1]), min(rows[max(rows)])
    lines += ["", f"Speed-up with {max(rows)} workers: {one / all_:.2f}x (best of runs). For scale, a pure-Python "
              f"CPU task ran {meta['machine_speedup']} faster on {max(rows)} processes than on one during this run "
              "(the most parallelism the machine offered at that moment)."]
    return "\n".join(lines) + "\n"




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-photo", type=int, default=6, help="variants per hymenoptera photo")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        scratch = Path(tmp)
        archive = scratch / "insects.zip"
        images = build_archive(archive, opts.per_photo)
        meta: dict[str, object] = {
            "machine": f"{platform.machine()}, {cores} cores", "photos": images // opts.per_photo,
            "per_photo": opts.per_photo, "archive_mb": round(archive.stat().st_size / 1e6, 1),
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
        log.info("archive: %d images, %s MB", images, meta["archive_mb"])
        rows: dict[int, list[float]] = {1: [], cores: []}
        speedups = []
        for _ in range(opts.repeats):  # interleaved, so drifting background load hits both alike
            for workers in rows:
                elapsed, stored = time_ingest(archive, workers, scratch)
                assert stored == images
                rows[workers].append(elapsed)
                log.info("workers=%d: %.2fs, %.0f images/s", workers, elapsed, images / elapsed)
            speedups.append(machine_speedup(cores))
        meta["machine_speedup"] = " / ".join(f"{x:.2f}x" for x in speedups)
        meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = markdown(rows, images, meta)
    print(json.dumps({"images": images, "seconds": rows, "meta": meta}, indent=2))
    print(text)
    if opts.write_docs:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
