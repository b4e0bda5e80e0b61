"""Hyper-parameter search benchmark: grid of 9, random of 9 and ASHA of 27 trials (fine-tuning).

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.search --write-docs

searches ``lr``, ``weight_decay`` and ``augment`` for ``finetune`` EfficientNet-Lite0 on hymenoptera
(train -> val) and reports, per method, the search epochs run (fine-tuning epochs: the linear probe
before them costs milliseconds), wall time and the best validation accuracy. The trials run in this
process, one after another, through the same code as the workers' trial tasks (``trainer/search.py``:
study on journal storage, samplers, ASHA pruner, space -> suggestions, per-epoch reports), without
Celery; ``--train-per-class``/``--val-per-class`` take a stratified subset (first N per class) when
the full dataset does not fit the time available.

Target: ASHA's best within 0.5 points of the best any method finds, with at most 40% of the epochs a
full grid of its 27 trials would run (0.4 x 27 x max_epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.docs import write_section  # noqa: E402
from core.searchspec import SearchSpec  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.trainer.dataset_helpers import make_dataset, subset_folder  # noqa: E402
from trainer import search as opt  # noqa: E402
from trainer.engine import Pruned, fine_tune  # noqa: E402
from trainer.search_tasks import trial_spec  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "hymenoptera"
SECTION = "## Hyper-parameter search"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.search --write-docs"
SPACE = {
    "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2, "grid_points": 3},
    "weight_decay": {"distribution": "loguniform", "low": 1e-5, "high": 1e-2, "grid_points": 1},
    "augment": ["none", "light", "standard"],
}
log = logging.getLogger("bench.search")


def dataset_for(args: argparse.Namespace, root: Path) -> Any:
    source = DATA
    if args.train_per_class or args.val_per_class:
        per = {"train": args.train_per_class or 10_000, "val": args.val_per_class or 10_000}
        source = subset_folder(DATA, root / "subset", per)
    return make_dataset(source, root / "datasets")


def run_search(method: str, trials: int, args: argparse.Namespace, dataset: Any, home: Path) -> dict[str, Any]:
    search = SearchSpec.model_validate({
        "method": method, "trials": trials, "max_epochs": args.max_epochs, "reduction_factor": 3,
        "min_epochs": 1, "seed": args.seed, "space": SPACE,
    })
    settings = Settings(home=home)
    job_id = f"bench-{method}-{int(time.time())}"
    base = {"mode": "finetune", "batch_size": args.batch_size}
    start = time.perf_counter()
    study, n = opt.create_study(settings, job_id, search, search.space)
    space, grid_space = opt.study_space(study)
    for slot in range(n):  # as the trial tasks do: one study.optimize(n_trials=1) per slot
        study = opt.load_study(settings, job_id, search, slot)

        def objective(trial: optuna.Trial) -> float:
            params = opt.suggest(trial, space, method, grid_space)
            spec = trial_spec(base, params, search.max_epochs)
            reporter = opt.EpochReporter(trial, spec.mode, search.max_epochs, Pruned)
            try:
                result = fine_tune(spec, dataset, on_progress=reporter.on_progress,
                                   on_epoch_end=reporter.on_epoch_end, cache_dir=home / "cache")
            except Pruned:
                raise optuna.TrialPruned() from None
            return opt.score(result.metrics["val_accuracy"], result.metrics["val_loss"])

        study.optimize(objective, n_trials=1)
        last = opt.summaries(study)[-1]
        log.info("%s trial %d/%d: %s %s after %d epochs (best val acc %s)", method, slot + 1, n, last["params"],
                 last["state"], last["epochs"], last["best_val_accuracy"])
    wall = time.perf_counter() - start
    trials_out = opt.summaries(study)
    best = max((t for t in trials_out if t["state"] == "complete"), key=lambda t: t["value"])
    epochs = sum(t["epochs"] for t in trials_out)
    return {
        "method": method, "trials": n, "epochs_run": epochs, "full_epochs": n * search.max_epochs,
        "pruned": sum(t["state"] == "pruned" for t in trials_out), "wall_s": wall,
        # The model a search publishes is its best complete trial's: that is the accuracy compared.
        "best_val_accuracy": best["best_val_accuracy"],
        "best_any_epoch": max(t["best_val_accuracy"] or 0.0 for t in trials_out),
        "best_params": best["params"], "trial_rows": trials_out,
        "train_images": len(dataset.items("train")), "val_images": len(dataset.items("val")),
        "argv": sys.argv[1:], "max_epochs": args.max_epochs, "batch_size": args.batch_size,
        "subset": bool(args.train_per_class or args.val_per_class),
    }


def render(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    counts = {"train": first["train_images"], "val": first["val_images"]}
    best_any = max(r["best_val_accuracy"] for r in rows)
    lines = [
        SECTION, "",
        f"Command: `{COMMAND}`", "",
        f"Run here: `{' '.join(['flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.search', *first['argv']])}`",
        "",
        f"hymenoptera train ({counts['train']}) -> val ({counts['val']})"
        + (" (stratified subset: the first images of each class, by name)" if first["subset"] else "")
        + f", `finetune` EfficientNet-Lite0, batch {first['batch_size']}, max_epochs {first['max_epochs']} per trial; "
        f"searched: lr loguniform(1e-4, 1e-2), weight_decay loguniform(1e-5, 1e-2), augment none/light/standard "
        f"(grid: lr 3 points x augment 3, weight_decay at its geometric middle). ASHA: random sampler, "
        f"successive halving with min 1 epoch, reduction factor 3. Trials run in one process one after another "
        f"(in-process Optuna, same trial code as the Celery workers, no broker); CPU: "
        f"{platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads on a 2-core machine shared with "
        f"other work (wall times are noisy). An epoch is a fine-tuning epoch (the linear probe before it, on "
        f"cached features, costs milliseconds).", "",
        "| method | trials | pruned | epochs run | epochs of a full run of its trials | wall s "
        "| best val acc (best complete trial) | best params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        params = json.dumps({k: (float(f"{v:.3g}") if isinstance(v, float) else v)
                             for k, v in r["best_params"].items()})
        lines.append(f"| {r['method']} | {r['trials']} | {r['pruned']} | {r['epochs_run']} | {r['full_epochs']} "
                     f"| {r['wall_s']:.0f} | {r['best_val_accuracy']:.4f} | `{params}` |")
    asha = next((r for r in rows if r["method"] == "asha"), None)
    if asha is not None:
        budget = 0.4 * asha["full_epochs"]
        gap = (best_any - asha["best_val_accuracy"]) * 100
        lines += ["", f"ASHA: {asha['epochs_run']} epochs = {asha['epochs_run'] / asha['full_epochs']:.0%} of a full "
                  f"run of its {asha['trials']} trials (target <= 40%, i.e. <= {budget:.1f}: "
                  f"{'met' if asha['epochs_run'] <= budget else 'NOT met'}); best val accuracy "
                  f"{asha['best_val_accuracy']:.4f}, {gap:.2f} points below the best of any method "
                  f"(target <= 0.5: {'met' if gap <= 0.5 else 'NOT met'})."]
    return "\n".join(lines) + "\n"




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-per-class", type=int, default=0, help="stratified subset (0 = all)")
    parser.add_argument("--val-per-class", type=int, default=0, help="stratified subset (0 = all)")
    parser.add_argument("--methods", default="grid:9,random:9,asha:27")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--render", type=Path, help="only render (and --write-docs) a previous --json file")
    args = parser.parse_args()
    if args.render:
        text = render(json.loads(args.render.read_text()))
        print(text)  # noqa: T201 - the benchmark's output
        if args.write_docs:
            write_section(SECTION, text)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("trainer").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        dataset = dataset_for(args, root)
        rows = []
        for item in args.methods.split(","):
            method, trials = item.split(":")
            rows.append(run_search(method, int(trials), args, dataset, root / "home"))
            log.info("%s: %s", method, {k: v for k, v in rows[-1].items() if k != "trial_rows"})
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
        text = render(rows)
        print(text)  # noqa: T201 - the benchmark's output
        if args.write_docs:
            write_section(SECTION, text)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
