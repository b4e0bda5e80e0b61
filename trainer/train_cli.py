"""``tuneserve train DATASET --model NAME``: ingest, fine-tune, export, register, with a progress bar."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from core.jobspec import Augment, Mode, Optimizer, Scheduler, TrainSpec
from core.settings import Settings, get_settings
from models import Registry

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneserve train",
                                description="Fine-tune a classifier on a folder or archive of images.")
    p.add_argument("dataset", type=Path, help="folder (class/ or split/class/ folders) or archive (.zip, .tar.*)")
    p.add_argument("--model", required=True, help="registry model name to register the result under")
    p.add_argument("--mode", choices=get_args(Mode))
    p.add_argument("--base", help="catalogue backbone or registry:<model>:<version>")
    p.add_argument("--optimizer", choices=get_args(Optimizer))
    p.add_argument("--lr", help="head learning rate, or 'auto' for an LR range test")
    p.add_argument("--backbone-lr-scale", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--probe-epochs", type=int)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--scheduler", choices=get_args(Scheduler))
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--augment", choices=get_args(Augment))
    p.add_argument("--early-stopping-metric", choices=["val_loss", "val_accuracy"])
    p.add_argument("--patience", type=int)
    p.add_argument("--min-delta", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--spec", type=Path, help="JSON file with a full spec (flags override it)")
    p.add_argument("--no-activate", action="store_true", help="register without activating")
    return p


def spec_from_args(opts: argparse.Namespace) -> TrainSpec:
    data: dict[str, Any] = json.loads(opts.spec.read_text()) if opts.spec else {}
    simple = ["mode", "base", "optimizer", "backbone_lr_scale", "weight_decay", "batch_size", "max_epochs",
              "probe_epochs", "label_smoothing", "scheduler", "warmup_epochs", "augment", "seed", "ema",
              "freeze_bn", "device"]
    for key in simple:
        if getattr(opts, key) is not None:
            data[key] = getattr(opts, key)
    if opts.lr is not None:
        data["lr"] = opts.lr if opts.lr == "auto" else float(opts.lr)
    stopping = dict(data.get("early_stopping", {}))
    for flag, key in (("early_stopping_metric", "metric"), ("patience", "patience"), ("min_delta", "min_delta")):
        if getattr(opts, flag) is not None:
            stopping[key] = getattr(opts, flag)
    if stopping:
        data["early_stopping"] = stopping
    return TrainSpec.model_validate(data)


def ingest(path: Path, settings: Settings) -> Any:
    from core.datasets import IngestLimits
    from dataset_store import DatasetStore

    store = DatasetStore(settings.datasets_dir)
    limits = IngestLimits.from_settings(settings)
    if path.is_dir():
        dataset, created = store.ingest_folder(path, None, limits)
    else:
        dataset, created = store.ingest(path, None, limits)
    print(f"dataset {dataset.id} ({'new' if created else 'already stored'}): {len(dataset.classes)} classes, "  # noqa: T201
          f"counts {dataset.counts}")
    for warning in dataset.warnings:
        print(f"  warning: {warning}")  # noqa: T201
    return dataset


def should_activate(registry: Registry, name: str, val_accuracy: float) -> bool:
    """Activate when nothing is active yet or the new model is at least as good on its validation split."""
    if not registry.exists(name) or registry.active_version(name) is None:
        return True
    active = registry.get(name).manifest
    previous = active.metrics.get("val_accuracy")
    return previous is None or val_accuracy >= float(previous)


def cmd_train(args: list[str]) -> int:
    opts = parser().parse_args(args)
    try:
        spec = spec_from_args(opts)
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"invalid training options: {exc}") from exc
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from trainer import eta_plan
    from trainer.engine import fine_tune
    from trainer.eta import COST_BOOK, CostBook
    from trainer.job_data import JobData
    from trainer.progress import ProgressTracker
    from trainer.publish import export_and_register
    from trainer.stages import plan_stages

    settings = get_settings()
    registry = Registry(settings.models_dir)
    dataset = ingest(opts.dataset, settings)
    bar = tqdm(desc="training", total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}/{total}% {postfix}")
    tracker = ProgressTracker(lambda snap: show_progress(bar, snap), min_interval_s=0.5)
    tracker.book = CostBook(settings.work_dir / COST_BOOK)  # measured costs of earlier runs on the backbone

    data = JobData(dataset, settings.cli_cache_dir(dataset.id))
    with logging_redirect_tqdm():  # log lines print above the bar instead of breaking it
        result = fine_tune(spec, dataset, registry=registry, cache_dir=data.cache_dir, progress=tracker)
        eta_plan.learn(tracker, eta_plan.workload(spec, plan_stages(spec), dataset), tracker.book, spec.base)
        tracker.finish()
    bar.close()
    activate = not opts.no_activate and should_activate(registry, opts.model, result.metrics["val_accuracy"])
    info = export_and_register(result, registry, opts.model, data, {"via": "cli"}, activate)
    print_summary(result.metrics, info.version, activate, info.path)
    return 0


def show_progress(bar: Any, snap: dict[str, Any]) -> None:
    """The expected time left and the worst case (the tracker's; "?" until measured), the stage, 0-100 %."""
    bar.update(round(100 * snap["fraction"], 1) - bar.n)
    eta = "0s" if snap["fraction"] >= 1.0 else "?" if snap["eta_s"] is None else (
        f"{snap['eta_s']:.0f}s (at most {snap['eta_max_s']:.0f}s)")
    where = f" epoch {snap['epoch']}/{snap['epochs']}" if snap["epochs_stage"] and snap["stage"] in (
        "probe", "finetune") else ""
    bar.set_postfix_str(f"{snap['stage']}{where} eta {eta}", refresh=True)


def print_summary(metrics: dict[str, Any], version: int, activated: bool, path: Path) -> None:
    lines = [
        f"model version {version} {'activated' if activated else 'registered (not activated)'}: {path}",
        f"  val accuracy  {metrics['val_accuracy']:.4f}   (best epoch {metrics['best_epoch']}, "
        f"{metrics['best_stage']}; {metrics['epochs_run']} epochs in {metrics['wall_s']:.0f} s)",
        f"  calibration   ECE {metrics['ece_before']:.4f} -> {metrics['ece_after']:.4f}",
    ]
    if "test_accuracy" in metrics:
        lines.append(f"  test accuracy {metrics['test_accuracy']:.4f}")
    lines.append(f"  report        {path / 'report.json'} "
                 "(+ confusion_matrix.png, reliability.png, curves.png, risk_coverage.png)")
    print("\n".join(lines))  # noqa: T201
