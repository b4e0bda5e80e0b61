"""Search spec parsing (torch-free), space -> Optuna suggestions, grid, ASHA pruning, storage choice."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from pydantic import ValidationError

from core.searchspec import Param, SearchSpec, best_of, default_space, validation_message
from core.settings import Settings
from tests.pg import private_schema
from trainer.search import optuna_study


def spec(**fields: object) -> SearchSpec:
    return SearchSpec.model_validate({"method": "random", **fields})


def error_of(fields: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        SearchSpec.model_validate(fields)
    return validation_message(info.value)


# ------------------------------------------------------------------ schema
def test_every_spelling_of_a_distribution_parses_to_the_same_param() -> None:
    forms = [
        "loguniform(1e-4, 1e-2)",
        {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
        {"low": 1e-4, "high": 1e-2},  # lr's default distribution is loguniform
    ]
    params = [spec(space={"lr": f}).space["lr"] for f in forms]
    assert all(p == Param(distribution="loguniform", low=1e-4, high=1e-2) for p in params)
    s = spec(space={"augment": "choice(light, standard)", "optimizer": ["sgd", "adamw"], "scheduler": "cosine",
                    "label_smoothing": {"low": 0.0, "high": 0.2}, "batch_size": "int(8, 32, 8)",
                    "mode": "choice(['linear', 'finetune'])"}).space
    assert s["augment"].values == ["light", "standard"]
    assert s["optimizer"].values == ["sgd", "adamw"]
    assert s["scheduler"].values == ["cosine"]  # a single value is fixed
    assert s["label_smoothing"].distribution == "uniform"
    assert (s["batch_size"].distribution, s["batch_size"].low, s["batch_size"].high, s["batch_size"].step) == (
        "int", 8, 32, 8)
    assert s["mode"].values == ["linear", "finetune"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"method": "bayes"}, ["'grid'", "'random'", "'asha'"]),
        ({"method": "grid", "space": {"lr": "normal(0, 1)"}}, ["normal", "loguniform", "uniform", "int", "choice"]),
        ({"method": "grid", "space": {"lr": {"distribution": "beta", "low": 1, "high": 2}}}, ["beta", "loguniform"]),
        ({"method": "grid", "space": {"epochs": [1, 2]}}, ["'epochs'", "lr", "weight_decay", "augment", "scheduler"]),
        ({"method": "grid", "space": {"mode": ["linear", "fast"]}}, ["fast", "'linear'", "'finetune'", "'gradual'"]),
        ({"method": "grid", "space": {"lr": "uniform(0, 20)"}}, ["lr", "0 < lr <= 10"]),
        ({"method": "grid", "space": {"lr": {"distribution": "loguniform", "low": 0, "high": 1}}}, ["low > 0"]),
        ({"method": "grid", "space": {"lr": "loguniform(1e-2, 1e-4)"}}, ["must not exceed"]),
        ({"method": "grid", "space": {"batch_size": "loguniform(8, 64)"}}, ["whole number", "int(low, high)"]),
        ({"method": "grid", "space": {"weight_decay": "auto"}}, ["only valid for lr"]),
        ({"method": "grid", "space": {"augment": "uniform(0, 1)"}}, ["augment takes choice"]),
        ({"method": "asha", "max_epochs": 2, "min_epochs": 3}, ["min_epochs"]),
        ({"method": "asha", "trials": 0}, ["trials"]),
        ({"method": "asha", "budget": 3}, ["budget"]),
    ],
)
def test_bad_search_is_rejected_naming_what_is_valid(fields: dict[str, object], named: list[str]) -> None:
    message = error_of(fields)
    for word in named:
        assert word in message, message


def test_default_space_centres_lr_on_the_range_test() -> None:
    s = spec()
    assert s.space == {}
    space = s.effective_space()
    assert space == default_space() and space["lr"].auto
    resolved = optuna_study.resolve_space(space, auto_lr=3e-3)
    lr = resolved["lr"]
    assert lr.distribution == "loguniform" and not lr.auto
    assert math.isclose(math.sqrt(lr.low * lr.high), 3e-3, rel_tol=1e-9)  # type: ignore[operator]
    with pytest.raises(ValueError, match="LR range test"):
        optuna_study.resolve_space(space, auto_lr=None)


# ------------------------------------------------------------------ grid
def test_grid_cuts_ranges_into_points_and_covers_the_requested_trials() -> None:
    space = spec(space={"lr": "loguniform(1e-4, 1e-2)", "weight_decay": "loguniform(1e-5, 1e-3)",
                        "augment": ["light", "standard"]}).space
    g = optuna_study.grid(space, trials=9)
    assert g["lr"] == [1e-4, 1e-3, 1e-2]  # log-spaced
    assert g["weight_decay"] == [1e-5, 1e-4, 1e-3]
    assert g["augment"] == ["light", "standard"]
    assert optuna_study.grid_size(g) == 18 >= 9
    assert optuna_study.grid(spec(space={"lr": "uniform(0.1, 0.3)"}).space, 3)["lr"] == [0.1, 0.2, 0.3]
    assert optuna_study.grid(spec(space={"batch_size": "int(8, 32, 8)"}).space, 4)["batch_size"] == [8, 16, 24, 32]


def _study(search: SearchSpec, space: dict[str, Param], slot: int = 0) -> tuple[optuna.Study, dict | None]:
    grid_space = optuna_study.grid(space, search.trials) if search.method == "grid" else None
    study = optuna.create_study(direction="maximize", sampler=optuna_study.sampler_for(search, grid_space, slot),
                                pruner=optuna_study.pruner_for(search))
    return study, grid_space


def test_grid_sampler_visits_every_point_once() -> None:
    search = SearchSpec.model_validate({"method": "grid", "trials": 4,
                                        "space": {"lr": [1e-3, 1e-2], "augment": ["light", "standard"]}})
    study, grid_space = _study(search, search.space)
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(tuple(sorted(optuna_study.suggest(trial, search.space, "grid", grid_space).items())))
        return 0.5

    for _ in range(4):  # one trial per call, as each trial task runs it
        study.optimize(objective, n_trials=1)
    assert len(set(seen)) == 4


def test_random_suggestions_stay_in_bounds_and_differ_per_slot() -> None:
    search = spec(space={"lr": "loguniform(1e-4, 1e-2)", "batch_size": "int(8, 32, 8)", "augment": ["light", "none"],
                         "label_smoothing": "uniform(0, 0.2)"})
    firsts = []
    for slot in range(3):
        study, _ = _study(search, search.space, slot)
        params = optuna_study.suggest(study.ask(), search.space, "random")
        assert 1e-4 <= params["lr"] <= 1e-2
        assert params["batch_size"] in (8, 16, 24, 32)
        assert params["augment"] in ("light", "none")
        assert 0.0 <= params["label_smoothing"] <= 0.2
        firsts.append(params["lr"])
    assert len(set(firsts)) == 3  # each process seeds by slot: parallel workers do not draw alike


def run_trial(study: optuna.Study, quality: float, max_epochs: int, slope: float = 0.0) -> int:
    """One trial reporting ``quality + epoch * slope`` each epoch until pruned; the epochs it ran."""
    trial = study.ask()
    for epoch in range(1, max_epochs + 1):
        trial.report(quality + epoch * slope, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(trial, quality)
    return max_epochs


def test_asha_prunes_trials_below_the_top_third_of_a_rung() -> None:
    search = SearchSpec.model_validate({"method": "asha", "trials": 9, "max_epochs": 9, "reduction_factor": 3,
                                        "min_epochs": 1, "bootstrap_count": 0,
                                        "space": {"lr": "loguniform(1e-4, 1e-1)"}})
    study, _ = _study(search, search.space)
    epochs = sum(run_trial(study, quality, search.max_epochs, slope=0.001)
                 for quality in [0.9, 0.5, 0.4, 0.95, 0.3, 0.2, 0.1, 0.92, 0.05])
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 5
    assert study.best_value == pytest.approx(0.95)  # the best trial ran to the end
    assert epochs <= 0.4 * 9 * search.max_epochs


@pytest.mark.parametrize(("trials", "factor", "given", "effective"), [
    (27, 3, None, 2), (9, 3, None, 1), (8, 3, None, 0), (100, 4, None, 3), (27, 3, 0, 0), (5, 3, 4, 4),
])
def test_default_bootstrap_count_grows_with_the_search(trials: int, factor: int, given: int | None,
                                                       effective: int) -> None:
    search = SearchSpec.model_validate({"method": "asha", "trials": trials, "reduction_factor": factor,
                                        "bootstrap_count": given})
    assert search.effective_bootstrap_count() == effective


def test_asha_bootstrap_count_stops_the_first_trials_at_each_rung() -> None:
    def run(bootstrap: int) -> list[int]:
        search = SearchSpec.model_validate({"method": "asha", "trials": 6, "max_epochs": 3, "reduction_factor": 3,
                                            "min_epochs": 1, "bootstrap_count": bootstrap,
                                            "space": {"lr": "loguniform(1e-4, 1e-1)"}})
        study, _ = _study(search, search.space)
        # improving leaders first: eager promotion
        return [run_trial(study, quality, search.max_epochs) for quality in [0.9, 0.95, 0.5, 0.97, 0.4, 0.3]]

    eager, patient = run(0), run(2)
    assert eager[:2] == [3, 3]  # each led the few trials at rung 1 when it got there
    assert patient[:2] == [1, 1]  # the first two only fill the rung
    assert patient[3] == 3  # the best trial still runs to the end
    assert sum(patient) < sum(eager)


# ------------------------------------------------------------------ summaries and storage
def test_summaries_and_best_trial() -> None:
    study = optuna.create_study(direction="maximize")
    for acc, state in [(0.7, "complete"), (0.9, "pruned"), (0.8, "complete"), (None, "failed")]:
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        if acc is not None:
            trial.set_user_attr("val_accuracy", [acc])
            trial.report(acc, 1)
        if state == "complete":
            study.tell(trial, acc)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state.upper() if state != "failed" else "FAIL"))
    rows = optuna_study.summaries(study)
    assert [r["state"] for r in rows] == ["complete", "pruned", "complete", "failed"]
    assert [r["epochs"] for r in rows] == [1, 1, 1, 0]
    assert set(rows[0]) >= {"number", "params", "state", "epochs", "best_val_accuracy"}
    best = best_of(rows)
    assert best is not None and best["number"] == 2  # pruned trials are not candidates


def test_journal_storage_on_one_machine(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    search = spec(space={"lr": "loguniform(1e-4, 1e-2)"}, trials=5)
    study, n = optuna_study.create_study(settings, "job1", search, search.space)
    assert n == 5 and isinstance(study._storage, optuna.storages.JournalStorage)
    assert settings.optuna_journal("job1").is_file()
    again = optuna_study.load_study(settings, "job1", search, slot=1)  # as another worker would
    assert optuna_study.study_space(again)[0] == search.space
    optuna_study.delete_study(settings, "job1")
    assert not settings.optuna_journal("job1").exists()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_schema("tuneserve_search") as url:
        yield url


def test_postgresql_uses_rdb_storage_with_heartbeats(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(home=tmp_path, database_url=pg_url)
    search = SearchSpec.model_validate({"method": "grid", "trials": 9,
                                        "space": {"lr": [1e-4, 1e-3, 1e-2], "augment": ["light", "none"]}})
    study, n = optuna_study.create_study(settings, "job2", search, search.space)
    assert n == 6  # capped at the grid's size (3 lr x 2 augment)
    storage = optuna_study.storage(settings, "job2")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert study.user_attrs["n_trials"] == 6  # the study lives there
    assert storage.get_heartbeat_interval() == optuna_study.HEARTBEAT_S
    assert not settings.optuna_journal("job2").exists()
    optuna_study.delete_study(settings, "job2")
    storage.engine.dispose()
    optuna_study.STORAGES.clear()


class Pruned(Exception):
    pass


class Metrics:
    def __init__(self, stage: str, val_loss: float) -> None:
        self.stage, self.val_loss = stage, val_loss


def test_epoch_reporter_counts_main_stage_epochs_and_breaks_ties_by_loss() -> None:
    search = SearchSpec.model_validate({"method": "asha", "max_epochs": 3, "bootstrap_count": 0,
                                        "space": {"lr": [1e-3]}})
    study = optuna.create_study(direction="maximize", pruner=optuna_study.pruner_for(search))
    first = study.ask()
    reporter = optuna_study.EpochReporter(first, "finetune", 3, Pruned)
    for epoch, (stage, acc) in enumerate([("linear", 0.5), ("linear", 0.9), ("finetune", 0.9), ("finetune", 0.95),
                                          ("finetune", 0.95)], start=1):
        reporter.on_progress(Metrics(stage, 0.2))
        reporter.on_epoch_end(epoch, acc)
    assert first.storage.get_trial(first._trial_id).intermediate_values == {
        1: pytest.approx(0.9 - 0.2 * optuna_study.TIE_BREAK), 2: pytest.approx(0.95 - 0.2 * optuna_study.TIE_BREAK),
        3: pytest.approx(0.95 - 0.2 * optuna_study.TIE_BREAK)}  # the probe's epochs are not search epochs
    study.tell(first, 0.95)
    # Same accuracy at the first rung but a higher loss: below the leader, so ASHA prunes it.
    for _ in range(2):
        trial = study.ask()
        reporter = optuna_study.EpochReporter(trial, "linear", 3, Pruned)
        reporter.on_progress(Metrics("linear", 0.9))
        with pytest.raises(Pruned):
            reporter.on_epoch_end(1, 0.9)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert optuna_study.summaries(study)[1]["best_val_accuracy"] == 0.9
