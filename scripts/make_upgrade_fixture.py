"""Write the upgrade test's fixture: a home (SQLite job database, dataset store, registry) as a release
writes it, for tests/integration/test_upgrade.py to open with the current code.

Run it with the code of the release whose data the fixture stands for (the committed one was made by
main at f63e34c, the last release before migrations and format versions):

    git worktree add /tmp/old f63e34c
    PYTHONPATH=/tmp/old python scripts/make_upgrade_fixture.py tests/data/upgrade_home

It uses only what that release had: JobStore, DatasetStore.ingest_folder, Registry.register.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from core.datasets import IngestLimits
from dataset_store import DatasetStore
from jobs import JobStore
from models import Manifest, Registry

CLASSES = {"red": (200, 40, 40), "blue": (50, 60, 200)}
PER_SPLIT = {"train": 5, "val": 3}  # the store's minimum is 5 images per class


def write_photos(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in PER_SPLIT.items():
        for name, colour in CLASSES.items():
            out = folder / split / name
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.normal(0, 50, size=(40, 40, 3))
                pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(out / f"{name}_{i}.png")


def tiny_onnx(path: Path, classes: int, seed: int) -> None:
    """Mean colour -> linear layer: a real ONNX classifier of a few hundred bytes."""
    weight = np.random.default_rng(seed).normal(size=(classes, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"], transB=1)],
        "fixture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor("weight", TensorProto.FLOAT, weight.shape, weight.flatten().tolist()),
         helper.make_tensor("bias", TensorProto.FLOAT, [classes], [0.0] * classes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path, help="the home folder to write (replaced)")
    out = parser.parse_args().out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_photos(Path(tmp) / "colours")
        dataset, _ = DatasetStore(out / "datasets").ingest_folder(Path(tmp) / "colours", "colours",
                                                                  IngestLimits(workers=1))
        registry = Registry(out / "models")
        labels = sorted(CLASSES)
        for seed, activate in ((1, True), (2, False)):
            model = Path(tmp) / f"model{seed}.onnx"
            tiny_onnx(model, len(labels), seed)
            manifest = Manifest(name="colours", labels=labels, backbone="fixture-mean-colour",
                                source={"dataset_id": dataset.id}, metrics={"val_accuracy": 0.5})
            registry.register(manifest, model, activate=activate)

    url = f"sqlite:///{(out / 'jobs.db').resolve()}"
    store = JobStore(url)
    done = store.create("colours", dataset.id, {"mode": "linear"})
    store.claim(done.id, "fixture-worker", 60, 3)
    store.record_progress(done.id, "fixture-worker", {"fraction": 1.0, "stage": "linear"},
                          {"stage": "linear", "epoch": 1, "train_loss": 0.5, "val_accuracy": 0.5})
    store.finish(done.id, "fixture-worker", "succeeded", result={"version": 1, "promoted": True})
    failed = store.create("colours", dataset.id, {"mode": "finetune", "max_epochs": 2})
    store.claim(failed.id, "fixture-worker", 60, 3)
    store.finish(failed.id, "fixture-worker", "failed", error="RuntimeError: the fixture's failure")
    cancelled = store.create("colours", dataset.id, {"mode": "linear"})
    store.cancel(cancelled.id)
    store.dispose()
    # One self-contained file: fold the write-ahead log in and leave WAL mode.
    with sqlite3.connect(out / "jobs.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    for leftover in ("jobs.db-wal", "jobs.db-shm"):
        (out / leftover).unlink(missing_ok=True)
    print(f"wrote {out}: dataset {dataset.id}, jobs {done.id} {failed.id} {cancelled.id}")


if __name__ == "__main__":
    main()
