"""Scaled out: two API replicas and a worker sharing one home, the job store on the real PostgreSQL.

What users run when they outgrow one machine (README "Scaling out"): every process reads and writes
jobs in PostgreSQL, talks through the real Redis, and finds models in the shared registry. A job
posted to one replica is visible from the other while it runs, and once it is promoted both replicas
serve the new version.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from jobs import FINISHED
from tests.integration.conftest import subset
from tests.integration.procs import (
    Proc,
    Server,
    base_env,
    private_broker,
    upload,
    wait_for,
    wait_job,
    worker,
    zip_folder,
)
from tests.pg import private_schema

pytestmark = pytest.mark.slow


@dataclass
class Replicas:
    first: Server
    second: Server
    worker: Proc
    home: Path
    database_url: str

    def diagnostics(self) -> str:
        return f"--- worker ---\n{self.worker.tail(60)}\n--- first ---\n{self.first.tail(20)}"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, bootstrapped_home: Path) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    home = root / "home"
    shutil.copytree(bootstrapped_home, home)
    with private_schema("tuneserve_e2e") as url:
        env = base_env(home, **private_broker(), TUNESERVE_DATABASE_URL=url, TUNESERVE_LEASE_SECONDS="4",
                       TUNESERVE_REFRESH_INTERVAL_S="1")
        first = Server(env, root / "first.log").wait_ready()
        second = Server(env, root / "second.log").wait_ready()
        proc = worker(env, root / "worker.log")
        try:
            yield Replicas(first, second, proc, home, url)
        finally:
            proc.stop()
            first.stop()
            second.stop()


def test_job_on_postgres_is_shared_by_replicas_and_both_serve_the_promoted_model(
    replicas: Replicas, hymenoptera: Path, tmp_path: Path
) -> None:
    archive = zip_folder(hymenoptera, tmp_path / "small.zip", "small", subset(hymenoptera, 16, 10))
    dataset_id = upload(replicas.first.http, archive)
    assert replicas.second.http.get(f"/v1/datasets/{dataset_id}").status_code == 200  # same home

    resp = replicas.first.http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "bees", "mode": "linear"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    # The other replica sees the job (it reads PostgreSQL, not a file of its own) while it runs.
    wait_for(lambda: replicas.second.http.get(f"/v1/jobs/{job_id}").json()["state"] in ("running", "succeeded"),
             120, "the job to start, seen from the second replica")
    job = wait_job(replicas.second.http, job_id, FINISHED, 240, replicas.diagnostics)
    assert job["state"] == "succeeded", f"{job}\n{replicas.diagnostics()}"
    assert job["result"]["promoted"] is True and job["result"]["version"] == 1
    assert [j["id"] for j in replicas.first.http.get("/v1/jobs").json()] == [job_id]
    # ... and the row really lives in PostgreSQL: no SQLite file was created in the shared home.
    engine = create_engine(replicas.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, state FROM tuneserve_jobs")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(job_id, "succeeded")]
    assert not (replicas.home / "jobs.db").exists()

    ant = (hymenoptera / "val" / "ants").glob("*.jpg").__next__().read_bytes()
    for server in (replicas.first, replicas.second):
        wait_for(lambda s=server: s.http.get("/v1/models/bees").json()["serving_version"] == 1, 10, "swap")
        answer = server.http.post("/v1/models/bees/predict?top_k=1", content=ant,
                                  headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1
