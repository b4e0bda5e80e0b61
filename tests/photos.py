"""Where the real photos committed with the tests live (tests/data/*/SOURCE.md says where they come from).

A clone needs nothing beside it: no test reads a folder outside the repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort

DATA = Path(__file__).resolve().parent / "data"
IMAGENET_SAMPLES = DATA / "imagenet"  # 43 ImageNet photos and labels.csv
HYMENOPTERA = DATA / "ants_bees"  # a small subset of the ants/bees tutorial set, quirks kept


def imagenet_rows(folder: Path = IMAGENET_SAMPLES) -> list[dict[str, str]]:
    """The rows of the ImageNet photos' labels.csv (file, ImageNet index, ...)."""
    with (folder / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


DECIDED_MARGIN = 0.1


def fp32_decided(model: Path, images: np.ndarray) -> np.ndarray:
    """Which photos the fp32 ``model`` itself decides: top-2 probability margin >= DECIDED_MARGIN.

    Tests that hold an approximation of the network (int8, fp16) to the 99 % agreement gate on a dozen
    photos use these: among the samples the tiger cat is tabby or tiger cat by 0.01, and any
    approximation, or a re-export of the same weights, flips it either way (docs/benchmarks.md, "int8:
    what was tried"), so with it such a gate tests a coin, not the variant.
    """
    # onnxruntime directly, not trainer.publish.onnx_cpu: tests/service runs without the train extra.
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    top2 = np.sort(probs / probs.sum(1, keepdims=True), 1)[:, -2:]
    decided: np.ndarray = top2[:, 1] - top2[:, 0] >= DECIDED_MARGIN
    return decided
