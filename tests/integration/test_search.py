"""Hyper-parameter search end to end: a real API process, two real workers on the real Redis.

Grid, random and ASHA searches on a small hymenoptera subset (15+15 train / 8+8 val) run their trials
on both workers; ASHA really prunes; a trial that raises does not fail the search; cancel stops every
trial; the best trial's model goes through the promotion gate into the registry.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs import FINISHED
from models import Registry
from tests.integration.conftest import subset
from tests.integration.procs import (
    Proc,
    Server,
    base_env,
    private_broker,
    sse_events,
    upload,
    wait_for,
    wait_job,
    worker,
    zip_folder,
)

pytestmark = pytest.mark.slow



@dataclass
class Cluster:
    home: Path
    server: Server
    workers: list[Proc]
    dataset_id: str

    def diagnostics(self) -> str:
        logs = [f"--- worker {i} log ---\n{w.tail(60)}" for i, w in enumerate(self.workers)]
        return "\n".join([*logs, f"--- server log ---\n{self.server.tail(30)}"])

    def search(self, model: str, search: dict[str, Any], **fields: Any) -> str:
        body = {"dataset_id": self.dataset_id, "model": model, "mode": "linear",
                "hyperparameters": {"batch_size": 8}, "search": search, **fields}
        resp = self.server.http.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def wait(self, job_id: str, timeout: float = 150) -> dict[str, Any]:
        return wait_job(self.server.http, job_id, FINISHED, timeout, self.diagnostics)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, bootstrapped_home: Path, hymenoptera: Path) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("search")
    home = root / "home"
    shutil.copytree(bootstrapped_home, home)
    env = base_env(home, **private_broker(), TUNESERVE_LEASE_SECONDS="4", TUNESERVE_REFRESH_INTERVAL_S="1")
    server = Server(env, root / "serve.log").wait_ready()
    workers = [worker(env, root / f"worker{i}.log") for i in range(2)]
    try:
        archive = zip_folder(hymenoptera, root / "tiny.zip", "tiny", subset(hymenoptera, 15, 8))
        yield Cluster(home, server, workers, upload(server.http, archive))
    finally:
        for w in workers:
            w.stop()
        server.stop()


def by_state(job: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t in job["trials"]:
        out.setdefault(t["state"], []).append(t)
    return out


def test_bad_searches_are_rejected_before_queueing(cluster: Cluster) -> None:
    http = cluster.server.http
    bad = [
        ({"method": "bayes"}, ["'grid'", "'random'", "'asha'"]),
        ({"method": "grid", "space": {"lr": "normal(0, 1)"}}, ["normal", "loguniform", "choice"]),
        ({"method": "grid", "space": {"epochs": [1, 2]}}, ["epochs", "searchable keys", "weight_decay"]),
        ({"method": "random", "space": {"optimizer": ["sgd", "lion"]}}, ["lion", "'adamw'"]),
    ]
    for search, words in bad:
        resp = http.post("/v1/jobs", json={"dataset_id": cluster.dataset_id, "model": "bad", "search": search})
        assert resp.status_code == 422, resp.text
        assert all(w in resp.json()["detail"] for w in words), (search, resp.text)
    assert http.get("/v1/jobs", params={"model": "bad"}).json() == []


def test_grid_search_survives_a_failing_trial_and_promotes_the_best(cluster: Cluster) -> None:
    # One of the two bases does not exist: its trials raise in the worker (not a 422: the registry
    # may gain that version before the trial runs), the search goes on.
    search = {"method": "grid", "trials": 4, "max_epochs": 2,
              "space": {"lr": [1e-4, 3e-2], "base": ["efficientnet_lite0", "registry:ghost:1"]}}
    job_id = cluster.search("search-grid", search)
    events = sse_events(cluster.server.http, f"/v1/jobs/{job_id}/events", timeout=150)
    job = events[-1][1]
    assert events[-1][0] == "end" and job["state"] == "succeeded", f"{job}\n{cluster.diagnostics()}"
    # The stream reported trials as they finished, before the end.
    finished_counts = [sum(t["state"] in ("complete", "failed") for t in data["trials"]) for _, data in events[:-1]]
    assert any(0 < n < 4 for n in finished_counts), finished_counts
    # Progress as the stream showed it: counts add up, the fraction never moves back and ends at 1.0,
    # and no ETA before a search epoch was timed.
    views = [data for _, data in events if data["progress"].get("trial_counts")]
    assert views and all(sum(v["progress"]["trial_counts"].values()) == 4 for v in views), views
    fractions = [v["progress"]["fraction"] for v in views]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    unmeasured = [v for v in views if not any(t.get("timed_epochs") for t in v["trials"])]
    assert all(v["progress"]["eta_s"] is None for v in unmeasured), unmeasured

    trials = by_state(job)
    assert len(job["trials"]) == 4 and len(trials["failed"]) == 2 and len(trials["complete"]) == 2, job["trials"]
    assert all("ghost" in t["error"] and t["epochs"] == 0 for t in trials["failed"])
    assert {(t["params"]["base"], t["params"]["lr"]) for t in job["trials"]} == {
        (b, lr) for b in ("efficientnet_lite0", "registry:ghost:1") for lr in (1e-4, 3e-2)}  # the whole grid
    best = job["best_trial"]
    assert best["params"] == {"base": "efficientnet_lite0", "lr": 3e-2} and best["epochs"] == 2
    assert best["best_val_accuracy"] == max(t["best_val_accuracy"] for t in trials["complete"])

    result = job["result"]
    assert result["promoted"] is True and result["version"] == 1, result
    assert result["evaluation"]["candidate"]["accuracy"] >= 0.75
    registry = Registry(cluster.home / "models")
    assert registry.active_version("search-grid") == 1
    source = registry.get("search-grid", 1).manifest.source
    assert source["kind"] == "search" and source["job_id"] == job_id
    assert source["search"]["best_trial"] == best["number"] and source["spec"]["lr"] == 3e-2


def test_random_search_on_the_default_space_centred_on_the_lr_range_test(cluster: Cluster) -> None:
    job = cluster.wait(cluster.search("search-random", {"method": "random", "trials": 3, "max_epochs": 2, "seed": 3}))
    assert job["state"] == "succeeded", f"{job}\n{cluster.diagnostics()}"
    auto_lr, lr_range = job["result"]["auto_lr"], job["result"]["space"]["lr"]
    assert auto_lr > 0 and lr_range["low"] == pytest.approx(auto_lr / 10) and lr_range["high"] > lr_range["low"]
    assert len(job["trials"]) == 3 and all(t["state"] == "complete" and t["epochs"] == 2 for t in job["trials"])
    for t in job["trials"]:
        assert lr_range["low"] <= t["params"]["lr"] <= lr_range["high"]
        assert 1e-5 <= t["params"]["weight_decay"] <= 1e-2 and t["params"]["augment"] in ("light", "standard")
    assert len({t["params"]["lr"] for t in job["trials"]}) == 3
    assert job["result"]["promoted"] is True
    assert Registry(cluster.home / "models").active_version("search-random") == 1


def test_asha_prunes_and_runs_fewer_epochs_on_both_workers(cluster: Cluster) -> None:
    search = {"method": "asha", "trials": 9, "max_epochs": 3, "reduction_factor": 3, "min_epochs": 1, "seed": 1,
              "space": {"lr": "loguniform(1e-5, 1e-1)"}}
    job = cluster.wait(cluster.search("search-asha", search))
    assert job["state"] == "succeeded", f"{job}\n{cluster.diagnostics()}"
    trials = by_state(job)
    assert len(job["trials"]) == 9 and trials.get("pruned"), job["trials"]
    assert all(t["epochs"] < 3 for t in trials["pruned"])
    assert all(t["epochs"] == 3 for t in trials["complete"])
    assert sum(t["epochs"] for t in job["trials"]) == job["result"]["epochs_run"] < 9 * 3
    assert job["best_trial"]["state"] == "complete" and job["result"]["promoted"] is True
    # Both workers consumed the queue.
    ran = [sum(1 for line in w.log.read_text(errors="replace").splitlines() if "(slot " in line)
           for w in cluster.workers]
    assert all(n > 0 for n in ran), ran


def test_cancel_stops_every_trial(cluster: Cluster) -> None:
    http = cluster.server.http
    search = {"method": "random", "trials": 6, "max_epochs": 3, "space": {"lr": "loguniform(1e-4, 1e-2)"}}
    job_id = cluster.search("search-cancel", search, mode="finetune",
                            hyperparameters={"batch_size": 8, "augment": "none", "probe_epochs": 1})

    def two_running() -> bool:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] not in FINISHED, job
        return sum(t["state"] == "running" for t in job["trials"]) == 2

    wait_for(two_running, 90, "two trials running at once")
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    job = cluster.wait(job_id, 60)
    assert job["state"] == "cancelled", f"{job}\n{cluster.diagnostics()}"
    assert not any(t["state"] == "running" for t in job["trials"]), job["trials"]
    stopped = [t for t in job["trials"] if t.get("error") == "cancelled"]
    assert len(stopped) == 2, job["trials"]  # both running trials were stopped mid-training
    assert len(job["trials"]) < 6  # queued trials never started
    assert not Registry(cluster.home / "models").exists("search-cancel")


def test_requeued_search_fails_orphaned_trials_and_runs_only_the_missing_slots(
        tmp_path: Path, hymenoptera: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (no broker): what the reconciler's re-queue of a search whose worker died leads to."""
    import time

    from sqlalchemy import update

    import trainer.search.tasks as st
    from core.searchspec import SearchSpec
    from core.settings import Settings
    from jobs import JobStore
    from jobs.tables import JobRow
    from tests.trainer.dataset_helpers import make_dataset, subset_folder
    from trainer.search import optuna_study
    from trainer.search.finalize import maybe_finalize
    from trainer.search.trial import run_trial

    settings = Settings(home=tmp_path / "home")
    folder = subset_folder(hymenoptera, tmp_path / "tiny", {"train": 6, "val": 8})  # 16 val: enough for a first version
    dataset = make_dataset(folder, settings.datasets_dir)
    store = JobStore(settings.resolved_database_url)
    search = {"method": "random", "trials": 3, "max_epochs": 5, "space": {"lr": "loguniform(1e-2, 5e-2)"}}
    job = store.create("recovered", dataset.id, {"mode": "linear", "batch_size": 4, "search": search}, kind="search")
    sent: list[list[Any]] = []
    monkeypatch.setattr(st, "send_task", lambda _s, _name, args: sent.append(args))

    seen: list[dict[str, Any]] = []

    def progress(**counts: int) -> dict[str, Any]:
        """The recorded progress: its counts add up to the trials; its fraction never moves back."""
        p = store.get(job.id).progress
        assert p is not None and sum(p["trial_counts"].values()) == p["trials_total"] == 3, p
        assert {k: p["trial_counts"][k] for k in counts} == counts, p
        assert not seen or p["fraction"] >= seen[-1]["fraction"], (seen[-1], p)
        seen.append(p)
        return p

    assert st.run_search_job(job.id, settings) == "queued" and sent == [[job.id, s] for s in range(3)]
    first = progress(queued=3, running=0, complete=0)
    assert first["fraction"] == 0.0 and first["eta_s"] is None  # nothing measured: no guess
    assert st.run_search_job(job.id, settings) == "skipped"  # a second delivery while it runs
    # Slot 0 starts on a worker that then dies: its trial stays "running" and nobody renews the lease.
    study = optuna_study.load_study(settings, job.id, SearchSpec.model_validate(search))
    orphan = study.ask()
    orphan.set_user_attr("slot", 0)
    with store.engine.begin() as conn:
        conn.execute(update(JobRow).where(JobRow.id == job.id).values(lease_expires_at=time.time() - 1))
    assert store.requeue(store.get(job.id), time.time())  # what the reconciler does

    sent.clear()
    assert st.run_search_job(job.id, settings) == "queued"
    assert sent == [[job.id, 1], [job.id, 2]]  # only the slots that never started
    orphaned = progress(failed=1, queued=2)
    assert orphaned["eta_s"] is None and 0 < orphaned["fraction"] < 1  # the failed trial never timed an epoch
    assert run_trial(job.id, 0, settings) == "skipped"  # the old message of slot 0
    assert run_trial(job.id, 1, settings) == "running"
    one = progress(failed=1, complete=1, queued=1, running=0)
    assert one["fraction"] < 1.0 and one["eta_s"] > 0  # one queued trial left, its epoch cost measured
    assert run_trial(job.id, 2, settings) == "succeeded"  # the last one finalizes
    assert maybe_finalize(job.id, settings) == "not-ours"  # exactly once
    last = store.get(job.id).progress or {}  # as recorded (the API's view forces 1.0 on success anyway)
    assert last["stage"] == "done" and last["fraction"] == 1.0 and last["eta_s"] == 0.0, last
    assert last["trial_counts"] == {"complete": 2, "pruned": 0, "failed": 1, "running": 0, "queued": 0}
    assert last["fraction"] >= seen[-1]["fraction"]

    done = store.get(job.id)
    assert done.state == "succeeded" and done.attempts == 2, done.error
    trials = {t["number"]: t for t in done.result["trials"]}  # type: ignore[index]
    assert trials[0]["state"] == "failed" and "worker was lost" in trials[0]["error"]
    assert [trials[n]["state"] for n in (1, 2)] == ["complete", "complete"]
    assert done.result["version"] == 1 and done.result["promoted"] is True, done.result["evaluation"]  # type: ignore[index]
    assert not settings.optuna_journal(job.id).exists() and not settings.search_dir(job.id).exists()
