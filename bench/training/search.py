"""Hyper-parameter search benchmark: grid of 9, random of 9 and ASHA of 27 trials (fine-tuning).

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.training.search --workers 2 --write-docs

searches ``lr``, ``weight_decay`` and ``augment`` for ``finetune`` EfficientNet-Lite0 on hymenoptera
(train -> val) and reports, per method, the search epochs run (fine-tuning epochs: the linear probe
before them costs milliseconds), wall time and the best validation accuracy. The trials run in this
process, one after another, through the same code as the workers' trial tasks (``trainer/search/optuna_study.py``:
study on journal storage, samplers, ASHA pruner, space -> suggestions, per-epoch reports), without
Celery; ``--workers N`` instead runs each search as a user would: a ``tuneserve serve --no-worker``
API on a private Redis DB, N ``tuneserve worker`` processes (torch threads = cores / N each), the
dataset uploaded over HTTP, one search job per method posted to ``/v1/jobs`` and followed to its end
(wall time then includes exporting and registering the best trial). ``--train-per-class`` /
``--val-per-class`` take a stratified subset (first N per class) when the full dataset does not fit
the time available.

Target: ASHA's best within 0.5 points of the best any method finds, with at most 40% of the epochs a
full grid of its 27 trials would run (0.4 x 27 x max_epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.data import shared_data  # noqa: E402
from bench.docs import write_section  # noqa: E402
from core.searchspec import SearchSpec  # noqa: E402
from core.settings import Settings  # noqa: E402
from jobs import FINISHED  # noqa: E402
from models import Registry  # noqa: E402
from tests.trainer.dataset_helpers import make_dataset, subset_folder  # noqa: E402
from trainer.run.engine import Pruned, fine_tune  # noqa: E402
from trainer.search import optuna_study  # noqa: E402
from trainer.search.job import trial_spec  # noqa: E402

SECTION = "## Hyper-parameter search"
RUN = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.training.search"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.training.search --workers 2 --write-docs"
SPACE = {
    "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2, "grid_points": 3},
    "weight_decay": {"distribution": "loguniform", "low": 1e-5, "high": 1e-2, "grid_points": 1},
    "augment": ["none", "light", "standard"],
}
log = logging.getLogger("bench.training.search")


def source_folder(args: argparse.Namespace, root: Path) -> Path:
    if not (args.train_per_class or args.val_per_class):
        return shared_data("hymenoptera")
    per = {"train": args.train_per_class or 10_000, "val": args.val_per_class or 10_000}
    return subset_folder(shared_data("hymenoptera"), root / "subset", per)


def run_search(method: str, trials: int, args: argparse.Namespace, dataset: Any, home: Path) -> dict[str, Any]:
    search = SearchSpec.model_validate({
        "method": method, "trials": trials, "max_epochs": args.max_epochs, "reduction_factor": 3,
        "min_epochs": 1, "seed": args.seed, "space": SPACE, "bootstrap_count": args.bootstrap_count,
    })
    settings = Settings(home=home)
    job_id = f"bench-{method}-{int(time.time())}"
    base = {"mode": "finetune", "batch_size": args.batch_size}
    start = time.perf_counter()
    study, n = optuna_study.create_study(settings, job_id, search, search.space)
    space, grid_space = optuna_study.study_space(study)
    for slot in range(n):  # as the trial tasks do: one study.optimize(n_trials=1) per slot
        study = optuna_study.load_study(settings, job_id, search, slot)

        def objective(trial: optuna.Trial) -> float:
            params = optuna_study.suggest(trial, space, method, grid_space)
            spec = trial_spec(base, params, search.max_epochs)
            reporter = optuna_study.EpochReporter(trial, spec.mode, search.max_epochs, Pruned)
            try:
                result = fine_tune(spec, dataset, on_progress=reporter.on_progress,
                                   on_epoch_end=reporter.on_epoch_end, cache_dir=home / "cache")
            except Pruned:
                raise optuna.TrialPruned() from None
            return optuna_study.score(result.metrics["val_accuracy"], result.metrics["val_loss"])

        study.optimize(objective, n_trials=1)
        last = optuna_study.summaries(study)[-1]
        log.info("%s trial %d/%d: %s %s after %d epochs (best val acc %s)", method, slot + 1, n, last["params"],
                 last["state"], last["epochs"], last["best_val_accuracy"])
    wall = time.perf_counter() - start
    trials_out = optuna_study.summaries(study)
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
        "bootstrap_count": search.effective_bootstrap_count(),
    }


class Cluster:
    """API + ``workers`` worker processes on a private Redis DB and queue, for ``--workers N``."""

    def __init__(self, root: Path, workers: int, source: Path) -> None:
        from tests.integration.procs import Server, base_env, private_broker, upload, worker, zip_folder
        from trainer.publish.bootstrap import bootstrap

        home = root / "home"
        # The API serves the pretrained model, as after `make run`.
        bootstrap(Registry(home / "models"), Settings(home=home))
        threads = max(1, (os.cpu_count() or 1) // workers)
        env = base_env(home, **private_broker(), TUNESERVE_TRAIN_THREADS=str(threads))
        self.threads, self.logs = threads, root
        self.server = Server(env, root / "serve.log").wait_ready()
        self.workers = [worker(env, root / f"worker{i}.log") for i in range(workers)]
        self.dataset_id = upload(self.server.http, zip_folder(source, root / "data.zip", "hymenoptera"))
        report = self.server.http.get(f"/v1/datasets/{self.dataset_id}").json()
        self.counts = {split: sum(per_class.values()) for split, per_class in report["counts"].items()}

    def search(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        from tests.integration.procs import wait_job

        resp = self.server.http.post("/v1/jobs", json={"dataset_id": self.dataset_id, **body})
        resp.raise_for_status()
        job_id = resp.json()["id"]
        log.info("search job %s posted", job_id)
        return wait_job(self.server.http, job_id, FINISHED, timeout,
                        lambda: "\n".join(w.tail(40) for w in self.workers))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.server.stop()


def run_search_celery(method: str, trials: int, args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    search = {"method": method, "trials": trials, "max_epochs": args.max_epochs, "reduction_factor": 3,
              "min_epochs": 1, "seed": args.seed, "space": SPACE, "bootstrap_count": args.bootstrap_count}
    body = {"model": f"bench-{method}", "mode": "finetune", "hyperparameters": {"batch_size": args.batch_size},
            "search": search}
    start = time.perf_counter()
    job = cluster.search(body, timeout=4 * 3600)
    wall = time.perf_counter() - start
    if job["state"] != "succeeded":
        raise RuntimeError(f"search {method} ended {job['state']}: {job.get('error')}")
    trials_out = job["trials"]
    best = job["best_trial"]
    return {
        "method": method, "trials": len(trials_out), "epochs_run": sum(t["epochs"] for t in trials_out),
        "full_epochs": len(trials_out) * args.max_epochs,
        "pruned": sum(t["state"] == "pruned" for t in trials_out), "wall_s": wall,
        "best_val_accuracy": best["best_val_accuracy"],
        "best_any_epoch": max(t["best_val_accuracy"] or 0.0 for t in trials_out),
        "best_params": best["params"], "trial_rows": trials_out,
        "train_images": cluster.counts["train"], "val_images": cluster.counts["val"],
        "argv": sys.argv[1:], "max_epochs": args.max_epochs, "batch_size": args.batch_size,
        "subset": bool(args.train_per_class or args.val_per_class),
        "bootstrap_count": SearchSpec.model_validate(search).effective_bootstrap_count(),
        "runner": f"Celery: {len(cluster.workers)} worker processes x {cluster.threads} torch thread(s)",
        "promoted": job.get("result", {}).get("promoted"),
    }


def label(row: dict[str, Any]) -> str:
    if row["method"] != "asha" or row.get("bootstrap_count") is None:
        return str(row["method"])
    return f"asha, bootstrap {row['bootstrap_count']}"


def render(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    counts = {"train": first["train_images"], "val": first["val_images"]}
    best_any = max(r["best_val_accuracy"] for r in rows)
    runner = ("Trials run in one process one after another (in-process Optuna, same trial code as the Celery "
              "workers, no broker)") if "runner" not in first else (
        f"Each search is one job posted to the HTTP API; its trials ran as Celery tasks on the real Redis, "
        f"{first['runner']}; wall time runs from the POST to the job's end (best trial exported, "
        f"registered and promoted)")
    lines = [
        SECTION, "",
        f"Command: `{COMMAND}`", "",
        f"Run here: `{' '.join([RUN, *first['argv']])}`",
        "",
        f"hymenoptera train ({counts['train']}) -> val ({counts['val']})"
        + (" (stratified subset: the first images of each class, by name)" if first["subset"] else "")
        + f", `finetune` EfficientNet-Lite0, batch {first['batch_size']}, max_epochs {first['max_epochs']} per trial; "
        f"searched: lr loguniform(1e-4, 1e-2), weight_decay loguniform(1e-5, 1e-2), augment none/light/standard "
        f"(grid: lr 3 points x augment 3, weight_decay at its geometric middle). ASHA: random sampler, "
        f"successive halving with min 1 epoch, reduction factor 3 (bootstrap: its bootstrap_count). "
        f"{runner}; CPU: "
        f"{platform.processor() or 'x86_64'}, {os.cpu_count()} cores shared with "
        f"other work (wall times are noisy). An epoch is a fine-tuning epoch (the linear probe before it, on "
        f"cached features, costs milliseconds).", "",
        "| method | trials | pruned | epochs run | epochs of a full run of its trials | wall s "
        "| best val acc (best complete trial) | best params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        params = json.dumps({k: (float(f"{v:.3g}") if isinstance(v, float) else v)
                             for k, v in r["best_params"].items()})
        lines.append(f"| {label(r)} | {r['trials']} | {r['pruned']} | {r['epochs_run']} | {r['full_epochs']} "
                     f"| {r['wall_s']:.0f} | {r['best_val_accuracy']:.4f} | `{params}` |")
    for asha in (r for r in rows if r["method"] == "asha"):
        budget = 0.4 * asha["full_epochs"]
        gap = (best_any - asha["best_val_accuracy"]) * 100
        share = asha["epochs_run"] / asha["full_epochs"]
        lines += ["", f"{label(asha)}: {asha['epochs_run']} epochs = {share:.0%} of a full "
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
    parser.add_argument("--bootstrap-count", type=int, default=None,
                        help="ASHA: trials that fill a rung before any passes it (default: the search's default)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run each search as a job over HTTP on this many Celery worker processes (0: in-process)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--render", type=Path, help="only render (and --write-docs) a previous --json file")
    args = parser.parse_args()
    if args.render:
        text = render(json.loads(args.render.read_text()))
        print(text)
        if args.write_docs:
            write_section(SECTION, text)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("trainer").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    cluster = None
    try:
        if args.workers:
            cluster = Cluster(root, args.workers, source_folder(args, root))
        else:
            dataset = make_dataset(source_folder(args, root), root / "datasets")
        rows = []
        for item in args.methods.split(","):
            method, trials = item.split(":")
            if cluster is not None:
                rows.append(run_search_celery(method, int(trials), args, cluster))
            else:
                rows.append(run_search(method, int(trials), args, dataset, root / "home"))
            log.info("%s: %s", method, {k: v for k, v in rows[-1].items() if k != "trial_rows"})
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
        text = render(rows)
        print(text)
        if args.write_docs:
            write_section(SECTION, text)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
