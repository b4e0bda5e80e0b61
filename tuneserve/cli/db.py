"""``tuneserve db upgrade|status``: the job database's schema (and the home's store formats) by hand.

What every process does on start anyway (jobs/schema.py), for when ``TUNESERVE_DB_AUTO_UPGRADE=false``
leaves the upgrade to an operator, after a backup.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from core.settings import get_settings
from jobs.schema import SchemaError, read_state, upgrade
from jobs.store import engine_for

log = logging.getLogger(__name__)


def run(command: str, args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tuneserve db", description="the job database's schema")
    parser.add_argument("action", choices=["upgrade", "status"],
                        help="upgrade: migrate to this release's schema; status: show the revisions")
    opts = parser.parse_args(args)
    settings = get_settings()
    engine = engine_for(settings.resolved_database_url)
    url = engine.url.render_as_string(hide_password=True)
    local = Path(engine.url.database) if engine.url.get_backend_name() == "sqlite" and engine.url.database else None
    if local and not local.exists():
        if opts.action == "status":  # opening would create the file (or fail on a missing folder)
            sys.stdout.write(f"{url}: no job database yet (this home was never served); "
                             "`tuneserve db upgrade` or `tuneserve serve` creates it\n")
            return 1
        local.parent.mkdir(parents=True, exist_ok=True)
    try:
        if opts.action == "status":
            with engine.connect() as conn:
                state = read_state(conn)
            current = state.current or ("none (made before migrations)" if state.legacy else "none (empty)")
            sys.stdout.write(f"{url}: revision {current}; this release's newest: {state.head}\n")
            return 0 if state.up_to_date else 1
        found = upgrade(engine)
    except SchemaError as exc:
        log.error("%s", exc)
        return 2
    except DBAPIError as exc:  # unreachable server, wrong credentials, unreadable file: name it, no traceback
        log.error("cannot open the job database %s: %s; check TUNESERVE_DATABASE_URL (or TUNESERVE_HOME)",
                  url, exc.orig)
        return 2
    finally:
        engine.dispose()
    if found.up_to_date:
        log.info("job database %s is already at revision %s", url, found.head)
    return 0
