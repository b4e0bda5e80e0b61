"""The job store's schema, managed by Alembic (revisions in ``jobs/migrations``).

Every process that opens the store (API workers, training workers, the CLI) calls :func:`ensure_schema`
once per database: a database at the newest revision costs one read; an older one is upgraded under a
lock (PostgreSQL: an advisory lock; SQLite: a lock file beside the database), so concurrent starts run
the migrations once. A database made before migrations existed (``create_all``: the job table but no
version table) is stamped as the baseline revision first. With ``TUNESERVE_DB_AUTO_UPGRADE=false``
nothing is changed: a database that is not at the newest revision is refused, naming the command.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect, text

from jobs.tables import Base

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not Alembic's default `alembic_version`: Optuna keeps its own version table of that name in the
# same PostgreSQL database (trainer/search/optuna_study.py).
VERSION_TABLE = "tuneserve_alembic_version"
BASELINE = "0001"  # the schema `create_all` made before migrations existed
UPGRADE_COMMAND = "tuneserve db upgrade"
# pg_advisory_lock's key: any constant no other program on the database uses ("tsmg" in ASCII).
PG_LOCK_KEY = 0x74736D67


class SchemaError(RuntimeError):
    """The database's schema is not one this release can use as it is; the message names the fix."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # the database's revision; None = no version table
    head: str  # the newest revision this release knows
    legacy: bool  # job tables present but no version table: made by `create_all` before migrations
    known: bool  # this release knows ``current`` (False: a newer release migrated it)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """Only our tables: Optuna's live in the same PostgreSQL database and are not ours to migrate."""
    return type_ != "table" or name in Base.metadata.tables


def alembic_config(connection: Connection | None = None) -> Config:
    # Alembic's INFO lines (plugins set up on import, "Context impl") on every start are noise; upgrade()
    # logs its own line. Hence the quieting before Alembic's first import here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def scripts() -> ScriptDirectory:
    cfg = alembic_config()
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(cfg)


def read_state(conn: Connection) -> SchemaState:
    script = scripts()
    from alembic.runtime.migration import MigrationContext

    head = script.get_current_head()
    assert head is not None, "jobs/migrations has no revision"
    current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    legacy = current is None and inspect(conn).has_table(next(iter(Base.metadata.tables)))
    known = current is None or current in {s.revision for s in script.walk_revisions()}
    return SchemaState(current=current, head=head, legacy=legacy, known=known)


def describe(url: str, state: SchemaState) -> str:
    where = f"the job database {url}"
    if not state.known:
        return (f"{where} is at schema revision {state.current}, which this release does not know: a newer "
                f"tuneserve wrote it. Upgrade tuneserve (pip install -U tuneserve) to use it")
    at = ("made before migrations (it will be stamped as the baseline)" if state.legacy
          else "empty" if state.current is None else f"at schema revision {state.current}")
    return (f"{where} is {at}; this release needs revision {state.head}. Back it up and run "
            f"`{UPGRADE_COMMAND}`, or set TUNESERVE_DB_AUTO_UPGRADE=true to upgrade on start")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under a lock every process migrating this database takes."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
                conn.commit()
        elif conn.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            lock_path = Path(str(engine.url.database) + ".migrate-lock")
            with lock_path.open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield conn
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        else:
            yield conn


def upgrade(engine: Engine) -> SchemaState:
    """Bring the database to the newest revision (stamping a pre-migration one first); returns the state
    it found. Safe to call from many processes at once: the second finds the work done."""
    url = engine.url.render_as_string(hide_password=True)
    with _migration_lock(engine) as conn:
        state = read_state(conn)  # under the lock: another process may have just upgraded it
        conn.rollback()  # end the read's transaction; the migration runs in one of its own
        if not state.known:
            raise SchemaError(describe(url, state))
        if state.up_to_date:
            return state
        from alembic import command

        with conn.begin():
            cfg = alembic_config(conn)
            if state.legacy:
                log.info("job database %s predates migrations: stamping it as revision %s", url, BASELINE)
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, "head")
        found = state.current or (f"{BASELINE} (stamped)" if state.legacy else "nothing (new database)")
        log.info("job database %s upgraded from %s to revision %s", url, found, state.head)
        return state


_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_schema(engine: Engine, auto_upgrade: bool = True) -> None:
    """Make sure the database is at the newest revision (once per URL per process), upgrading it when
    ``auto_upgrade``; else raise :class:`SchemaError` naming the command to run."""
    key = str(engine.url)
    with _ready_lock:
        if key in _ready:
            return
        with engine.connect() as conn:
            state = read_state(conn)
        if not state.up_to_date:
            if not auto_upgrade or not state.known:
                raise SchemaError(describe(engine.url.render_as_string(hide_password=True), state))
            upgrade(engine)
        _ready.add(key)


def forget(engine: Engine) -> None:
    """Look again next time (the store was disposed; its database may be replaced)."""
    with _ready_lock:
        _ready.discard(str(engine.url))
