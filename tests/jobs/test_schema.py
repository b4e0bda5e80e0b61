"""The job store's migrations: they build exactly the models' schema, a database made before them is
stamped and kept, concurrent starts migrate once, and a refused upgrade names the command."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text

from jobs import JobStore, SchemaError
from jobs.schema import VERSION_TABLE, include_name, read_state
from jobs.tables import Base, JobRow
from tests.pg import private_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with private_schema("schema") as pg:
            yield pg


def differences(url: str) -> list[object]:
    """What autogenerate would put in a new revision: the models against the migrated database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": include_name, "compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_models_schema(url: str) -> None:
    store = JobStore(url)
    try:
        assert differences(url) == []  # a model change without its revision fails here
        with store.engine.connect() as conn:
            state = read_state(conn)
            assert state.up_to_date and inspect(conn).has_table(VERSION_TABLE)
    finally:
        store.dispose()


def test_a_database_made_before_migrations_is_stamped_and_keeps_its_jobs(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # what the release before migrations did
    with engine.begin() as conn:
        conn.execute(JobRow.__table__.insert().values(
            id="old", kind="train", model="m", dataset_id="d", spec={"mode": "linear"}, state="succeeded",
            metrics=[{"epoch": 1}], attempts=1, cancel_requested=False, created_at=1.0, updated_at=2.0))
    with engine.connect() as conn:
        assert read_state(conn).legacy
    store = JobStore(url)
    try:
        old = store.get("old")
        assert (old.state, old.spec.mode, old.metrics) == ("succeeded", "linear", [{"epoch": 1}])
        assert store.create("m", "d", {}).state == "queued"
        with engine.connect() as conn:
            assert read_state(conn).up_to_date
        assert differences(url) == []
    finally:
        store.dispose()
        engine.dispose()


def test_with_auto_upgrade_off_an_old_database_is_refused_naming_the_command(url: str) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    try:
        with pytest.raises(SchemaError, match=r"tuneserve db upgrade.*TUNESERVE_DB_AUTO_UPGRADE=true"):
            JobStore(url, auto_upgrade=False)
        with engine.connect() as conn:
            assert read_state(conn).legacy  # untouched
    finally:
        engine.dispose()


def test_a_database_a_newer_release_migrated_is_refused_naming_the_upgrade(url: str) -> None:
    JobStore(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"revision 9999.*newer tuneserve.*pip install -U tuneserve"):
        JobStore(url)


def _open(url: str) -> None:
    JobStore(url).create("m", "d", {})


def test_concurrent_starts_migrate_once(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh processes, as API workers and a worker are
    procs = [ctx.Process(target=_open, args=(url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(JobRow)).scalar() == 4
            assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
    finally:
        engine.dispose()
