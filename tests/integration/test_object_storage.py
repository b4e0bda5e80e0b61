"""Replicas with no shared disk: two API replicas with homes of their own (one runs a worker, the other
none), one Redis, one PostgreSQL and an S3 API server (moto's server mode on loopback), as in
docker/compose.yaml. Datasets, versions and pointers travel through the bucket only.

A dataset uploaded and a job started on the replica without a worker is trained by the other's worker,
and both replicas serve the new version. A writer killed between the files and the pointer (after the
files, before the manifest; after the manifest, before the pointer) leaves the old version serving
everywhere. A version deleted through one replica leaves the bucket and the other replica's cache.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.storage import Storage
from jobs import FINISHED
from tests.integration.conftest import subset
from tests.integration.procs import REPO, Server, base_env, private_broker, upload, wait_for, wait_job, zip_folder
from tests.pg import private_schema
from tests.services import new_bucket, s3_endpoint, s3_env

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    lone: Server  # the API replica without a worker
    trainer: Server  # the API replica whose `serve` runs a worker beside it
    homes: tuple[Path, Path]
    url: str
    env: dict[str, str]

    def diagnostics(self) -> str:
        return f"--- trainer replica + worker ---\n{self.trainer.tail(80)}\n--- lone replica ---\n{self.lone.tail(30)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The two replicas; this process's boto3 (the test's own checks of the bucket) points at the server too."""
    root = tmp_path_factory.mktemp("object-storage")
    url = f"s3://{new_bucket()}/tuneserve"
    homes = (root / "lone-home", root / "trainer-home")
    with private_schema("tuneserve_s3") as database_url:
        shared = {**s3_env(s3_endpoint()), **private_broker(), "TUNESERVE_DATABASE_URL": database_url,
                  "TUNESERVE_STORAGE_URL": url, "TUNESERVE_REFRESH_INTERVAL_S": "1", "TUNESERVE_LEASE_SECONDS": "10"}
        lone = Server(base_env(homes[0], **shared), root / "lone.log")
        trainer = Server(base_env(homes[1], **shared), root / "trainer.log", no_worker=False)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in s3_env(s3_endpoint()).items():
                patch.setenv(key, value)
            try:
                lone.wait_ready()
                trainer.wait_ready()
                yield Cluster(lone, trainer, homes, url, base_env(root, **shared))
            finally:
                trainer.stop()
                lone.stop()


def serving(server: Server, version: int) -> bool:
    return bool(server.http.get("/v1/models/bees").json().get("serving_version") == version)


def predicted_version(server: Server, photo: bytes) -> int:
    answer = server.http.post("/v1/models/bees/predict?top_k=1", content=photo, headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["version"])


def kill_writer_at(cluster: Cluster, stage: str, tmp_path: Path) -> None:
    """A publish of a copy of version 1, SIGKILLed at ``stage``."""
    marker = tmp_path / f"{stage}.reached"
    source = cluster.trainer.http.get("/v1/models/bees/versions/1/files").json()  # what version 1 holds
    assert any(f["name"] == "model.onnx" for f in source["files"]), source
    folder = cluster.homes[1] / "work" / "storage" / "models" / "bees" / "1"  # the trainer replica's checked copy
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.storage_writer", cluster.url, str(tmp_path / "writer-cache"),
         str(folder), stage, str(marker)], cwd=REPO, env=cluster.env, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: marker.exists() or writer.poll() is not None, 60, f"the writer to reach {stage!r}")
        assert writer.poll() is None and marker.read_text() == stage
    finally:
        writer.kill()  # SIGKILL: no cleanup, as when its machine dies
        writer.wait(10)


def test_a_job_started_on_the_replica_without_a_worker_is_trained_by_the_other_and_served_by_both(
    cluster: Cluster, hymenoptera: Path, tmp_path: Path
) -> None:
    archive = zip_folder(hymenoptera, tmp_path / "small.zip", "small", subset(hymenoptera, 16, 10))
    dataset_id = upload(cluster.lone.http, archive)
    storage = Storage(cluster.url)
    assert storage.exists(f"datasets/{dataset_id}/index.json")
    assert cluster.trainer.http.get(f"/v1/datasets/{dataset_id}").status_code == 200  # through the bucket
    assert not (cluster.homes[1] / "work" / "storage" / "datasets" / dataset_id).exists()  # not downloaded yet

    resp = cluster.lone.http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "bees", "mode": "linear"})
    assert resp.status_code == 202, resp.text
    job = wait_job(cluster.lone.http, resp.json()["id"], FINISHED, 600, cluster.diagnostics)
    assert job["state"] == "succeeded", f"{job}\n{cluster.diagnostics()}"
    assert job["result"]["promoted"] is True and job["result"]["version"] == 1, job["result"]
    # The worker downloaded the dataset into its own home; the lone replica's home holds no store at all.
    assert (cluster.homes[1] / "work" / "storage" / "datasets" / dataset_id / "index.json").is_file()
    assert not (cluster.homes[0] / "models").exists() and not (cluster.homes[0] / "datasets").exists()
    assert storage.exists("models/bees/versions/1/manifest.json")

    ant = next((hymenoptera / "val" / "ants").glob("*.jpg")).read_bytes()
    for server in (cluster.lone, cluster.trainer):
        wait_for(lambda s=server: serving(s, 1), 30, "both replicas to serve version 1")
        assert predicted_version(server, ant) == 1
    report = cluster.lone.http.get(f"/v1/jobs/{job['id']}/report")  # the job's artefacts, from the bucket
    assert report.status_code == 200 and report.json()["version"] == 1, report.text

    # A writer killed after the files, before the manifest: the half-written version does not exist.
    kill_writer_at(cluster, "files", tmp_path)
    assert storage.exists("models/bees/versions/2/model.onnx")  # it did upload
    for server in (cluster.lone, cluster.trainer):
        view = server.http.get("/v1/models/bees").json()
        assert (view["active_version"], [v["version"] for v in view["versions"]]) == (1, [1]), view
        assert server.http.get("/v1/models/bees/versions/2/files").status_code == 404
        assert predicted_version(server, ant) == 1

    # Killed after the manifest, before the pointer: version 3 is complete, registered, not active.
    kill_writer_at(cluster, "manifest", tmp_path)
    time.sleep(2.5)  # refresh interval 1 s: any replica that would swap has had its chances
    for server in (cluster.lone, cluster.trainer):
        view = server.http.get("/v1/models/bees").json()
        assert view["active_version"] == 1 and view["serving_version"] == 1, view
        assert [(v["version"], v["status"]) for v in view["versions"]] == [(1, "active"), (3, "registered")], view
        assert predicted_version(server, ant) == 1

    # Deleting version 3 through one replica removes it from the bucket and from the other's cache.
    assert cluster.trainer.http.get("/v1/models/bees/versions/3/files").status_code == 200  # cached there now
    cached = cluster.homes[1] / "work" / "storage" / "models" / "bees" / "3"
    assert cached.is_dir()
    assert cluster.lone.http.delete("/v1/models/bees/versions/3").status_code == 204
    assert storage.keys("models/bees/versions/3/") == []
    wait_for(lambda: not cached.exists(), 30, "the trainer replica to drop its copy of the deleted version")
    assert cluster.trainer.http.get("/v1/models/bees/versions/3/files").status_code == 404
