"""int8 recipes side by side: agreement with fp32 (all photos and decided photos) against speed.

Each recipe (trainer/publish/int8_recipe.py) quantises the bootstrapped ``imagenet`` model, calibrated on 64
hymenoptera training photos (32 a class), and is measured on photos the calibration never saw: the 43
ImageNet samples (the gate's val and test halves), the 153 hymenoptera val photos (the HTTP bench's
set) and the other 179 hymenoptera training photos. "Decided" photos are those whose fp32 top-2
probability margin is at least 0.1; every flip below that margin is a photo fp32 itself barely decides.
Speed: the raw onnxruntime session with one thread (what one service lane runs), batch 1, median of
interleaved runs so fp32 and every recipe see the same moments of a shared machine.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.int8_recipes --write-docs
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.data import shared_data
from bench.docs import write_section
from bench.serving.serve import active_model, ensure_home
from trainer.publish.int8_recipe import Int8Recipe

SECTION = "## int8 recipes: agreement against speed"
RECIPES = {
    "plain (onnxruntime static QDQ)": Int8Recipe(bias_correction=False, fp32_stem=False, reduce_range=False),
    "fp32 stem": Int8Recipe(bias_correction=False, fp32_stem=True, reduce_range=False),
    "bias correction": Int8Recipe(bias_correction=True, fp32_stem=False, reduce_range=False),
    "bias correction + fp32 stem, 8-bit weights (default with VNNI)": Int8Recipe(reduce_range=False),
    "bias correction + fp32 stem + 7-bit weights (default without VNNI)": Int8Recipe(reduce_range=True),
}
DECIDED = 0.1
log = logging.getLogger("bench.serving.int8_recipes")


def photo_sets(model: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from models.manifest import Manifest
    from service.inference.preprocess import preprocess

    pre = Manifest.model_validate_json((model.parent / "manifest.json").read_text()).preprocessing

    def batch(files: list[Path]) -> np.ndarray:
        return np.stack([preprocess(f.read_bytes(), pre, 10**8) for f in files])

    hymenoptera = shared_data("hymenoptera")
    train = {c: sorted((hymenoptera / "train" / c).glob("*.jpg")) for c in ("ants", "bees")}
    samples = sorted(shared_data("imagenet_samples").glob("*.JPEG"))
    calib = batch(train["ants"][:32] + train["bees"][:32])
    return calib, {"ImageNet samples (gate val + test)": batch(samples),
                   "hymenoptera val (HTTP set)": batch(sorted((hymenoptera / "val").rglob("*.jpg"))),
                   "hymenoptera train, not calibrated on": batch(train["ants"][32:] + train["bees"][32:])}


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits(path: Path, images: np.ndarray) -> np.ndarray:
    s = session(path, os.cpu_count() or 1)
    return np.concatenate([s.run(["logits"], {"input": images[i : i + 16]})[0] for i in range(0, len(images), 16)])


def latencies(paths: list[Path], image: np.ndarray, reps: int) -> list[float]:
    sessions = [session(p, 1) for p in paths]
    for s in sessions:
        s.run(None, {"input": image})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(reps):
        for k, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, {"input": image})
            times[k].append(time.perf_counter() - start)
    return [float(np.median(t)) * 1000 for t in times]


def main(argv: list[str] | None = None) -> int:
    from trainer.publish.variants import quantize_int8

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="bootstrapped TUNESERVE_HOME (else a temp one)")
    parser.add_argument("--reps", type=int, default=80)
    parser.add_argument("--write-docs", action="store_true")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fp32 = active_model(ensure_home(opts.home))
    calib, sets = photo_sets(fp32)
    every = np.concatenate(list(sets.values()))
    reference = logits(fp32, every)
    probs = np.exp(reference - reference.max(1, keepdims=True))
    top2 = np.sort(probs / probs.sum(1, keepdims=True), 1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= DECIDED
    bounds = np.cumsum([0] + [len(v) for v in sets.values()])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, (name, recipe) in enumerate(RECIPES.items()):
            path = Path(tmp) / f"int8-{k}.onnx"
            quantize_int8(fp32, path, calib, recipe)
            paths.append(path)
            out = logits(path, every)
            same = out.argmax(1) == reference.argmax(1)
            per_set = [f"{same[a:b].mean():.4f} ({int((~same[a:b]).sum())})" for a, b in itertools.pairwise(bounds)]
            rows.append([name, *per_set, f"{same.mean():.4f}", f"{same[decided].mean():.4f}",
                         f"{float(((out - reference) ** 2).mean()):.4f}"])
            log.info("%s: %s", name, rows[-1])
        ms = latencies([fp32, *paths], every[:1], opts.reps)
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.int8_recipes", *args])
    text = markdown(rows, ms, list(sets), len(every), int(decided.sum()), command, opts.reps)
    print(text)
    if opts.write_docs:
        write_section(SECTION, text)
    return 0


def markdown(rows: list[list[str]], ms: list[float], sets: list[str], n: int, n_decided: int, command: str,
             reps: int) -> str:
    head = ["recipe", *[f"{s}: agreement (flips)" for s in sets], f"all {n}", f"decided ({n_decided})",
            "logit MSE vs fp32", "ms/image, 1 thread", "speed-up vs fp32"]
    lines = [SECTION, "", f"Command: `{command}`", "",
             f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end "
             f"(other sessions share the machine). Calibration: 64 hymenoptera training photos (32 a class). "
             f"Decided: fp32 top-2 probability margin >= {DECIDED}. fp32: {ms[0]:.2f} ms/image (median of {reps} "
             "interleaved batch-1 runs on one thread).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row, t in zip(rows, ms[1:], strict=True):
        lines.append("| " + " | ".join([*row, f"{t:.2f}", f"{ms[0] / t:.2f}x"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
