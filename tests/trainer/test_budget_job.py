"""A train job with a tiny ``time_budget_s``, in process on the real pipeline: it finishes, says what it
cut, and publishes the probe's model (the engine test shows those weights equal a probe run alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from jobs import JobStore
from models import Registry
from tests.trainer.dataset_helpers import make_dataset, subset_folder
from trainer.pipeline import run_train_job

pytestmark = pytest.mark.slow


def test_a_job_over_its_time_budget_publishes_the_probe_and_says_what_it_cut(tmp_path: Path,
                                                                             hymenoptera: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    folder = subset_folder(hymenoptera, tmp_path / "tiny", {"train": 6, "val": 8})
    dataset = make_dataset(folder, settings.datasets_dir)
    store = JobStore(settings.resolved_database_url)
    spec = {"mode": "finetune", "probe_epochs": 20, "max_epochs": 3, "batch_size": 6, "time_budget_s": 0.01}
    job = store.create("budget", dataset.id, spec)

    assert run_train_job(job.id, settings) == "succeeded"
    done = store.get(job.id)
    assert done.state == "succeeded", done.error
    result = done.result or {}
    assert any("finetune skipped" in w and "probe's result is kept" in w for w in result["warnings"]), result
    metrics = result["metrics"]
    assert [(c["stage"], c["action"]) for c in metrics["time_budget"]["cuts"]] == [("finetune", "skipped")]
    assert metrics["best_stage"] == "linear"
    assert {m["stage"] for m in done.metrics} == {"linear"}  # not one fine-tuning epoch ran
    published = Registry(settings.models_dir).get("budget", result["version"]).manifest
    assert published.metrics["best_stage"] == "linear" and published.metrics["time_budget"]["cuts"]
    assert (done.progress or {})["fraction"] == 1.0
