"""S3Registry against a real S3 API server (moto's server mode on loopback, tests/services.py).

Each registry here has its own cache folder, as each replica on its own host has: what one writes,
the others read from the bucket only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from core.fsutil import sha256_file
from core.settings import Settings
from core.storage import PreconditionFailed, Storage, StorageError, StorageUrlInvalid
from models import Registry, S3Registry, VersionInUse, VersionNotFound, registry_for
from models.registry import ModelNotFound
from tests.models.test_registry import manifest, tiny_onnx


def replica(url: str, cache: Path) -> S3Registry:
    return S3Registry(Storage(url), cache, prune_interval_s=0)


@pytest.fixture
def writer(s3_url: str, tmp_path: Path) -> S3Registry:
    return replica(s3_url, tmp_path / "writer")


@pytest.fixture
def reader(s3_url: str, tmp_path: Path) -> S3Registry:
    return replica(s3_url, tmp_path / "reader")


def test_a_version_written_by_one_replica_is_read_by_another_from_the_bucket(
    writer: S3Registry, reader: S3Registry, tmp_path: Path
) -> None:
    model = tiny_onnx(tmp_path / "a.onnx", 1.0)
    report = tmp_path / "report.json"
    report.write_text('{"accuracy": 0.9}')
    stored = writer.register(manifest(), model, extra_files={"report.json": report}, activate=True)
    assert stored.version == 1 and stored.status == "active"

    assert reader.model_names() == ["demo"] and reader.active_version("demo") == 1
    info = reader.get("demo")
    assert info.path.is_relative_to(tmp_path / "reader")  # its own copy, nothing shared with the writer
    assert sha256_file(info.model_path) == sha256_file(model) == info.manifest.sha256
    assert (info.path / "report.json").read_text() == '{"accuracy": 0.9}'
    assert info.manifest.version == 1 and (info.path / "manifest.json").is_file()

    writer.register(manifest(), tiny_onnx(tmp_path / "b.onnx", 2.0))
    assert [(v.version, v.status) for v in reader.versions("demo")] == [(1, "active"), (2, "registered")]
    reader.activate("demo", 2)
    assert writer.active_version("demo") == 2 and writer.history("demo") == [1]
    assert reader.rollback("demo").version == 1
    writer.set_stage("demo", 2, "candidate")
    assert reader.get("demo", 2).status == "candidate"
    with pytest.raises(ModelNotFound):
        reader.get("nope")


def test_two_writers_of_one_pointer_state_only_one_wins(s3_url: str) -> None:
    first, second = Storage(s3_url), Storage(s3_url)
    etag = first.put_bytes("models/demo/ACTIVE", b'{"version": 1, "history": []}', create_only=True)
    with pytest.raises(PreconditionFailed):  # create-only: the pointer exists now
        second.put_bytes("models/demo/ACTIVE", b'{"version": 9, "history": []}', create_only=True)
    first.put_bytes("models/demo/ACTIVE", b'{"version": 2, "history": [1]}', if_match=etag)
    with pytest.raises(PreconditionFailed):  # read the same state, wrote second: lost
        second.put_bytes("models/demo/ACTIVE", b'{"version": 3, "history": [1]}', if_match=etag)
    blob = second.get("models/demo/ACTIVE")
    assert blob is not None and blob.body == b'{"version": 2, "history": [1]}'


def _race(stores: list[Storage], etag: str, round_: int) -> list[str]:
    """Every store writes over ``etag`` at once; the ETags of the writes that were taken."""
    start, won = threading.Barrier(len(stores)), []

    def write(store: Storage, i: int) -> None:
        start.wait()
        with contextlib.suppress(PreconditionFailed):
            won.append(store.put_bytes("models/demo/ACTIVE", f'{{"version": {i}, "r": {round_}}}'.encode(),
                                       if_match=etag))

    threads = [threading.Thread(target=write, args=(store, i)) for i, store in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_of_eight_concurrent_writes_over_one_state_exactly_one_wins(s3_url: str) -> None:
    """The guarantee every pointer move rests on, under real concurrency (the server's too: plain
    ``moto.server`` let two win in 1 of 3 runs on a loaded machine, see tests/moto_serial.py)."""
    stores = [Storage(s3_url) for _ in range(8)]
    etag = stores[0].put_bytes("models/demo/ACTIVE", b'{"version": 1, "history": []}', create_only=True)
    for round_ in range(40):
        won = _race(stores, etag, round_)
        assert len(won) == 1, f"round {round_}: {len(won)} writers won over one ETag"
        etag = won[0]


def test_concurrent_promotions_lose_no_update_and_claims_never_collide(s3_url: str, tmp_path: Path) -> None:
    registries = [replica(s3_url, tmp_path / f"r{i}") for i in range(6)]
    models = [tiny_onnx(tmp_path / f"{i}.onnx", float(i)) for i in range(6)]
    numbers: list[int] = []
    start = threading.Barrier(6)

    def publish(i: int) -> None:
        start.wait()
        numbers.append(registries[i].register(manifest(), models[i], activate=True).version)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]  # six writers, six numbers: each claimed once
    active, history = registries[0].active_version("demo"), registries[0].history("demo")
    # Every promotion happened in some order: the pointer holds the last, its history the other five.
    assert active is not None and sorted([active, *history]) == [1, 2, 3, 4, 5, 6]


def _killed_writer(url: str, cache: str, model: str, stage: str) -> None:
    registry = S3Registry(Storage(url), Path(cache))

    def die(reached: str) -> None:
        if reached == stage:
            os._exit(0)  # no cleanup, no finally: as a SIGKILL at this point

    registry.stage_hook = die
    registry.register(manifest(), Path(model), activate=True)


@pytest.mark.parametrize("stage", ["files", "manifest"])
def test_a_writer_killed_before_the_pointer_leaves_the_old_version_active(
    writer: S3Registry, reader: S3Registry, tmp_path: Path, s3_url: str, stage: str
) -> None:
    writer.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_writer, args=(s3_url, str(tmp_path / "killed"), str(tiny_onnx(tmp_path / "b.onnx", 2.0)), stage))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert Storage(s3_url).exists("models/demo/versions/2/model.onnx")  # it did upload its files
    assert reader.active_version("demo") == 1 and reader.get("demo").version == 1
    listed = [v.version for v in reader.versions("demo")]
    if stage == "files":  # no manifest: the version does not exist for readers
        assert listed == [1]
        with pytest.raises(VersionNotFound):
            reader.get("demo", 2)
    else:  # manifest written: a complete version, registered but never activated
        assert listed == [1, 2] and reader.get("demo", 2).status == "registered"
    # The number the dead writer claimed is never given out again.
    assert writer.register(manifest(), tiny_onnx(tmp_path / "c.onnx", 3.0)).version == 3


def test_the_cache_is_checked_by_sha256_and_a_damaged_copy_is_downloaded_again(
    writer: S3Registry, reader: S3Registry, tmp_path: Path
) -> None:
    model = tiny_onnx(tmp_path / "a.onnx", 1.0)
    writer.register(manifest(), model, activate=True)
    info = reader.get("demo")
    blob = reader.blobs.path(info.manifest.sha256)
    assert blob.is_file() and blob.stat().st_ino == info.model_path.stat().st_ino  # keyed by its sha256
    info.model_path.write_bytes(b"garbage")  # a damaged copy (disk error, a stray write)
    again = reader.get("demo")
    assert sha256_file(again.model_path) == sha256_file(model)


def test_a_download_that_does_not_match_its_record_is_refused(writer: S3Registry, reader: S3Registry,
                                                              tmp_path: Path, s3_url: str) -> None:
    writer.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    Storage(s3_url).put_bytes("models/demo/versions/1/model.onnx", b"tampered")  # behind the registry's back
    with pytest.raises(StorageError, match="does not match its record"):  # the API's 503, never served
        reader.get("demo")


def test_delete_removes_from_the_bucket_and_from_every_replicas_cache(
    writer: S3Registry, reader: S3Registry, tmp_path: Path, s3_url: str
) -> None:
    writer.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    writer.register(manifest(), tiny_onnx(tmp_path / "b.onnx", 2.0), activate=True)
    cached = reader.get("demo", 1).path
    with pytest.raises(VersionInUse):
        writer.delete_version("demo", 2)
    writer.delete_version("demo", 1)
    storage = Storage(s3_url)
    assert storage.keys("models/demo/versions/1/") == []
    assert writer.history("demo") == []  # a rollback must not aim at it
    assert reader.model_names() == ["demo"]  # the replica's next look drops its copy
    assert not cached.exists() and reader.version_numbers("demo") == [2]
    assert writer.register(manifest(), tiny_onnx(tmp_path / "c.onnx", 3.0)).version == 3  # never reused

    reader.get("demo", 2)
    assert writer.delete_model("demo") == [2, 3]
    assert storage.keys("models/demo/") == []
    assert reader.model_names() == [] and not (tmp_path / "reader" / "models" / "demo").exists()
    assert list((tmp_path / "reader" / "blobs").glob("??/*")) == []  # no blob outlives its views
    with pytest.raises(ModelNotFound):
        reader.versions("demo")


def test_an_unreachable_store_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 s3_url: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match="object storage"):
        replica(s3_url, tmp_path / "c").model_names()


def test_the_factory_picks_the_store_from_the_settings(tmp_path: Path, s3_url: str) -> None:
    assert type(registry_for(Settings(home=tmp_path))) is Registry
    remote = registry_for(Settings(home=tmp_path, storage_url=s3_url))
    assert isinstance(remote, S3Registry) and remote.root == tmp_path / "work" / "storage" / "models"
    with pytest.raises(StorageUrlInvalid, match=r"s3://bucket/prefix .*AWS_\* variables"):
        registry_for(Settings(home=tmp_path, storage_url="http://minio:9000/tuneserve"))
