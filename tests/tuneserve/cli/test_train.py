"""``tuneserve train``: ingest a folder, train, publish as a job does (label check, gate), print a summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.datasets import IngestLimits
from core.jobspec import TrainSpec
from core.settings import Settings, get_settings
from dataset_store import DatasetStore
from jobs import JobStore
from models import Manifest, Registry
from tests.trainer.conftest import write_synthetic
from trainer.pipeline import run_train_job
from tuneserve.cli import main

pytestmark = pytest.mark.slow


def test_train_command_registers_and_activates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_synthetic(tmp_path / "colours", {"train": 6, "val": 3}, seed=7)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"probe_epochs": 20, "optimizer": "sgd"}))
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        code = main(["train", str(folder), "--model", "colours", "--mode", "linear", "--spec", str(spec),
                     "--lr", "0.05", "--early-stopping-patience", "4", "--seed", "3"])
        captured = capsys.readouterr()
        out = captured.out
        assert code == 0
        bars = [seg for seg in re.split(r"[\r\n]", captured.err) if seg.startswith("training")]
        assert bars and "100/100%" in bars[-1] and "done" in bars[-1]  # the bar ends at 100 %
        assert all(b.count("eta") <= 1 for b in bars) and "eta" in bars[-1]  # one ETA, the tracker's
        registry = Registry(tmp_path / "home" / "models")
        info = registry.get("colours")
        assert info.version == 1 and info.status == "active"
        assert f"model version 1 activated: {info.path}" in out
        assert f"val accuracy  {info.manifest.metrics['val_accuracy']:.4f}" in out
        assert "ECE" in out and "report.json" in out
        assert info.manifest.source["spec"]["optimizer"] == "sgd" and info.manifest.source["spec"]["lr"] == 0.05
        assert info.manifest.source["spec"]["early_stopping"]["patience"] == 4
        assert (tmp_path / "home" / "datasets" / info.manifest.source["dataset_id"] / "index.json").is_file()
    finally:
        get_settings.cache_clear()


def test_train_command_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="invalid training options"):
        main(["train", str(tmp_path), "--model", "x", "--lr", "-1"])
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--model", "x", "--mode", "probe"])


def _served(registry: Registry, name: str, labels: list[str], kind: str, tmp_path: Path) -> None:
    """An active version of ``name`` answering ``labels`` (the file is never loaded by these tests)."""
    model_file = tmp_path / f"{name}.onnx"
    model_file.write_bytes(b"not loaded here")
    registry.register(Manifest(name=name, labels=labels, backbone="efficientnet_lite0", source={"kind": kind}),
                      model_file, activate=True)


@pytest.mark.parametrize(("name", "fix"), [("imagenet", "--model imagenet-custom"), ("shop", "--replace-labels")])
def test_train_refuses_to_change_what_a_served_model_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, fix: str) -> None:
    """The 3-class folder under the bootstrapped ``imagenet`` (or another served label set) is refused,
    naming the fix, before any training; the served version stays."""
    home = tmp_path / "home"
    registry = Registry(home / "models")
    _served(registry, name, ["tench", "goldfish"] if name == "imagenet" else ["hat", "pants", "shoes"],
            "pretrained" if name == "imagenet" else "fine_tune", tmp_path)
    folder = write_synthetic(tmp_path / "colours", {"train": 6, "val": 3})
    monkeypatch.setenv("TUNESERVE_HOME", str(home))
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(folder), "--model", name, "--mode", "linear"])
    finally:
        get_settings.cache_clear()
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None) and fix in message and name in message
    assert registry.active_version(name) == 1 and [v.version for v in registry.versions(name)] == [1]


def test_a_job_and_the_train_command_publish_manifests_with_the_same_fields(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both go through trainer/publish/publisher.py's ``publish``: same manifest keys, source keys and metrics."""
    folder = write_synthetic(tmp_path / "colours", {"train": 6, "val": 3}, seed=5)
    home = tmp_path / "home"
    settings = Settings(home=home)
    dataset, _ = DatasetStore(settings.datasets_dir).ingest_folder(folder, None, IngestLimits.from_settings(settings))
    spec = {"mode": "linear", "probe_epochs": 10, "optimizer": "sgd", "lr": 0.05}
    job = JobStore(settings.resolved_database_url).create("by-job", dataset.id, spec)
    assert run_train_job(job.id, settings) == "succeeded"
    monkeypatch.setenv("TUNESERVE_HOME", str(home))
    get_settings.cache_clear()
    try:
        assert main(["train", str(folder), "--model", "by-cli", "--mode", "linear", "--probe-epochs", "10",
                     "--optimizer", "sgd", "--lr", "0.05"]) == 0
    finally:
        get_settings.cache_clear()
    registry = Registry(settings.models_dir)
    by_job, by_cli = registry.get("by-job").manifest, registry.get("by-cli").manifest
    assert set(by_job.model_dump()) == set(by_cli.model_dump())
    assert set(by_job.source) == set(by_cli.source) and set(by_job.metrics) == set(by_cli.metrics)
    assert by_job.files == by_cli.files and by_job.labels == by_cli.labels
    assert (by_job.source["via"], by_job.source["job_id"]) == ("job", job.id)
    assert (by_cli.source["via"], by_cli.source["job_id"]) == ("cli", None)
    assert by_job.source["spec"] == by_cli.source["spec"] == TrainSpec.model_validate(spec).model_dump(mode="json")
    assert registry.active_version("by-job") == registry.active_version("by-cli") == 1  # both passed the gate
