"""``tuneserve train``: ingest a folder, train, register, activate, print a summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.settings import get_settings
from models import Registry
from tuneserve.cli import main

pytestmark = pytest.mark.slow


def test_train_command_registers_and_activates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tests.trainer.conftest import write_synthetic

    folder = write_synthetic(tmp_path / "colours", {"train": 6, "val": 3}, seed=7)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"probe_epochs": 20, "optimizer": "sgd"}))
    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        code = main(["train", str(folder), "--model", "colours", "--mode", "linear", "--spec", str(spec),
                     "--lr", "0.05", "--patience", "4", "--seed", "3"])
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


def test_activation_rule_compares_validation_accuracy(tmp_path: Path) -> None:
    from models import Manifest
    from trainer.train_cli import should_activate

    registry = Registry(tmp_path / "models")
    assert should_activate(registry, "m", 0.1)  # nothing registered yet
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"not really onnx")
    manifest = Manifest(name="m", labels=["a", "b"], backbone="efficientnet_lite0", metrics={"val_accuracy": 0.9})
    registry.register(manifest, model_file, activate=False)
    assert should_activate(registry, "m", 0.5)  # registered but nothing active
    registry.activate("m", 1)
    assert should_activate(registry, "m", 0.9) and should_activate(registry, "m", 0.95)
    assert not should_activate(registry, "m", 0.89)
