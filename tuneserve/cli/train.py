"""``tuneserve train DATASET --model NAME``: ingest, fine-tune, then publish exactly as a job does
(trainer/publish/publisher.py: label check, gate, registration, announcement), with a progress bar."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from core.datasets import IngestLimits
from core.jobspec import TrainSpec
from core.settings import Settings, get_settings
from dataset_store import datasets_for
from models import registry_for
from models.meaning import LabelConflict, check_labels
from trainer.data.job_data import JobData
from trainer.progress import eta_plan
from trainer.progress.eta import COST_BOOK, CostBook
from trainer.progress.tracker import PUBLISH_STAGES, ProgressTracker
from trainer.publish.publisher import Request, Trained, publish
from trainer.run.engine import fine_tune
from trainer.run.stages import plan_stages
from tuneserve.cli.model_args import add_model_options, merge, model_values

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    """The dataset, the model name, and one option per TrainSpec field (generated: tuneserve/cli/model_args.py)."""
    p = argparse.ArgumentParser(prog="tuneserve train",
                                description="Fine-tune a classifier on a folder or archive of images.")
    p.add_argument("dataset", type=Path, help="folder (class/ or split/class/ folders) or archive (.zip, .tar.*)")
    p.add_argument("--model", required=True, help="registry model name to register the result under")
    p.add_argument("--spec", type=Path, help="JSON file with a full spec (flags override it)")
    p.add_argument("--replace-labels", action="store_true",
                   help="publish a label set other than the one --model serves now")
    p.add_argument("--no-activate", action="store_true", help="register as a candidate without activating")
    add_model_options(p, TrainSpec)  # the fields of POST /v1/jobs' hyperparameters
    return p


def spec_from_args(opts: argparse.Namespace) -> TrainSpec:
    """The spec file's fields with the flags given on top (flags not given leave the file's value)."""
    data: dict[str, Any] = json.loads(opts.spec.read_text()) if opts.spec else {}
    # Lax here: a command line is text (`--time-budget-s 120`); the API's JSON bodies stay strict.
    return TrainSpec.model_validate(merge(data, model_values(opts, TrainSpec)), strict=False)


def ingest(path: Path, settings: Settings) -> Any:
    store = datasets_for(settings)
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


def cmd_train(args: list[str], settings: Settings) -> int:
    opts = parser().parse_args(args)
    try:
        spec = spec_from_args(opts)
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"invalid training options: {exc}") from exc
    registry = registry_for(settings)
    dataset = ingest(opts.dataset, settings)
    request = Request(opts.model, "cli", replace_labels=opts.replace_labels, activate=not opts.no_activate)
    try:  # refused before training, as the API refuses the job (and again when publishing)
        check_labels(registry, opts.model, list(dataset.classes), opts.replace_labels)
    except LabelConflict as exc:
        raise SystemExit(_for_cli(exc)) from exc
    bar = tqdm(desc="training", total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}/{total}% {postfix}")
    tracker = ProgressTracker(lambda snap: show_progress(bar, snap), min_interval_s=0.5)
    tracker.book = CostBook(settings.work_dir / COST_BOOK)  # measured costs of earlier runs on the backbone
    tracker.plan([(name, 1) for name in PUBLISH_STAGES])
    work = eta_plan.workload(spec, plan_stages(spec), dataset)
    eta_plan.expect_publishing(tracker, work, tracker.book, eta_plan.book_key(spec))
    data = JobData(dataset, settings.cli_cache_dir(dataset.id))
    with logging_redirect_tqdm():  # log lines print above the bar instead of breaking it
        result = fine_tune(spec, dataset, registry=registry, cache_dir=data.cache_dir, progress=tracker)
        try:
            out = publish(Trained(result, data), registry, request, settings, tracker=tracker)
        except LabelConflict as exc:  # the served labels changed while this trained
            raise SystemExit(_for_cli(exc)) from exc
        eta_plan.learn(tracker, work, tracker.book, eta_plan.book_key(spec))
        tracker.finish()
    bar.close()
    print_summary(result.metrics, out, registry.get(opts.model, out["version"]).path)
    return 0


def _for_cli(conflict: LabelConflict) -> str:
    """The label conflict with its fix in this command's flags."""
    fix = f"train under a new model name (e.g. --model {conflict.name}-custom)"
    if conflict.replaceable:
        fix += f", or pass --replace-labels to replace what {conflict.name!r} answers"
    return f"tuneserve train: {conflict.problem}. Fix: {fix}"


def show_progress(bar: Any, snap: dict[str, Any]) -> None:
    """The expected time left and the worst case (the tracker's; "?" until measured), the stage, 0-100 %."""
    bar.update(round(100 * snap["fraction"], 1) - bar.n)
    eta = "0s" if snap["fraction"] >= 1.0 else "?" if snap["eta_s"] is None else (
        f"{snap['eta_s']:.0f}s (at most {snap['eta_max_s']:.0f}s)")
    where = f" epoch {snap['epoch']}/{snap['epochs']}" if snap["epochs_stage"] and snap["stage"] in (
        "probe", "finetune") else ""
    bar.set_postfix_str(f"{snap['stage']}{where} eta {eta}", refresh=True)


def print_summary(metrics: dict[str, Any], out: dict[str, Any], path: Path) -> None:
    state = "activated" if out["promoted"] else "registered as a candidate (not activated)"
    lines = [
        f"model version {out['version']} {state}: {path}",
        f"  gate          {out['reason']}",
        f"  val accuracy  {metrics['val_accuracy']:.4f}   (best epoch {metrics['best_epoch']}, "
        f"{metrics['best_stage']}; {metrics['epochs_run']} epochs in {metrics['wall_s']:.0f} s)",
        f"  calibration   ECE {metrics['ece_before']:.4f} -> {metrics['ece_after']:.4f}",
    ]
    if "test_accuracy" in metrics:
        lines.append(f"  test accuracy {metrics['test_accuracy']:.4f}")
    lines.append(f"  report        {path / 'report.json'} "
                 "(+ confusion_matrix.png, reliability.png, curves.png, risk_coverage.png)")
    print("\n".join(lines))  # noqa: T201


def run(command: str, args: list[str]) -> int:
    return cmd_train(args, get_settings())  # the settings are read here, at the edge
