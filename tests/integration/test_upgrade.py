"""A home written by the release before migrations (tests/data/upgrade_home, made by
scripts/make_upgrade_fixture.py) opened by this release: `tuneserve serve` upgrades the job database on
start (SQLite; and PostgreSQL, loaded with the same rows in the pre-migration schema), every job, dataset
and model version is still there, and a new job trains through the real worker on the old dataset."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, insert, select

from core.datasets import DATASET_FORMAT
from core.formats import read_store_format
from jobs import FINISHED
from jobs.schema import read_state
from models.manifest import REGISTRY_FORMAT
from tests.integration.procs import Server, base_env, wait_job
from tests.pg import private_schema

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "upgrade_home"
DATASET = "650e2bef797aa846"


def fixture_jobs() -> dict[str, str]:
    """{job id: state} as the old release left them."""
    with sqlite3.connect(FIXTURE / "jobs.db") as conn:
        return dict(conn.execute("SELECT id, state FROM tuneserve_jobs").fetchall())


def load_into(url: str, sqlite_file: Path) -> None:
    """The old table, as the old release created it (reflected from its SQLite file), and its rows."""
    source = create_engine(f"sqlite:///{sqlite_file}")
    target = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(source)
        assert set(tables.tables) == {"tuneserve_jobs"}  # pre-migration: no version table
        tables.create_all(target)
        table = tables.tables["tuneserve_jobs"]
        with source.connect() as src, target.begin() as dst:
            rows = [dict(r) for r in src.execute(select(table)).mappings()]
            dst.execute(insert(table), rows)
    finally:
        source.dispose()
        target.dispose()


def upgrade_and_train(tmp_path: Path, database_url: str | None) -> None:
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    extra = {}
    if database_url is not None:
        load_into(database_url, home / "jobs.db")
        (home / "jobs.db").unlink()  # the service must use the PostgreSQL copy
        extra["TUNESERVE_DATABASE_URL"] = database_url
    url = database_url or f"sqlite:///{home / 'jobs.db'}"
    engine = create_engine(url)
    with engine.connect() as conn:
        assert read_state(conn).legacy  # made before migrations

    server = Server(base_env(home, **extra), tmp_path / "serve.log", no_worker=False)  # embedded Redis + worker
    try:
        server.wait_ready(120)
        http = server.http
        with engine.connect() as conn:
            state = read_state(conn)
        assert state.up_to_date and not state.legacy, state

        old = fixture_jobs()
        assert sorted(old.values()) == ["cancelled", "failed", "succeeded"]
        listed = {j["id"]: j for j in http.get("/v1/jobs").json()}
        assert {i: listed[i]["state"] for i in old} == old
        done = next(i for i, s in old.items() if s == "succeeded")
        job = http.get(f"/v1/jobs/{done}").json()
        assert job["dataset_id"] == DATASET and job["metrics"][0]["val_accuracy"] == 0.5, job

        assert [d["id"] for d in http.get("/v1/datasets").json()] == [DATASET]
        dataset = http.get(f"/v1/datasets/{DATASET}").json()
        assert dataset["num_files"] == 16 and dataset["classes"] == ["blue", "red"], dataset
        model = http.get("/v1/models/colours").json()
        assert [v["version"] for v in model["versions"]] == [1, 2] and model["active_version"] == 1, model
        assert read_store_format(home / "datasets") == DATASET_FORMAT  # stamped on open
        assert read_store_format(home / "models") == REGISTRY_FORMAT

        image = (home / "datasets" / DATASET / "images" / "val" / "red" / "red_0.png").read_bytes()
        resp = http.post("/v1/models/colours/predict", content=image, headers={"content-type": "image/png"})
        assert resp.status_code == 200 and resp.json()["version"] == 1, resp.text  # the old version serves

        resp = http.post("/v1/jobs", json={"dataset_id": DATASET, "model": "colours", "mode": "linear"})
        assert resp.status_code == 202, resp.text
        new = wait_job(http, resp.json()["id"], FINISHED, 600, lambda: server.tail(80))
        assert new["state"] == "succeeded", new
        assert new["result"]["version"] == 3  # after the old release's two
        model = http.get("/v1/models/colours").json()
        assert [v["version"] for v in model["versions"]] == [1, 2, 3], model
        assert len(http.get("/v1/jobs").json()) == len(old) + 1
    finally:
        code = server.stop(timeout=60)
        engine.dispose()
    assert code == 0, server.tail(40)


def test_a_sqlite_home_of_the_previous_release_upgrades_and_trains(tmp_path: Path) -> None:
    upgrade_and_train(tmp_path, None)


def test_a_postgresql_database_of_the_previous_release_upgrades_and_trains(tmp_path: Path) -> None:
    with private_schema("upgrade") as url:
        upgrade_and_train(tmp_path, url)
