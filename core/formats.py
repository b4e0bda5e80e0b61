"""Format versions of what tuneserve keeps on disk (the dataset store, the model registry).

Each store holds a ``FORMAT`` file (``{"format_version": n}``) and each item it writes (a dataset's
``index.json``, a version's ``manifest.json``) a ``format_version`` key. Absent means 0: written
before formats carried a version. A release reads every format up to its own (older ones as they
are, or upgraded in place where a change needs it) and refuses a newer one, naming the upgrade.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.fsutil import atomic_write_text

log = logging.getLogger(__name__)

FORMAT_FILE = "FORMAT"
UPGRADE_HINT = "upgrade tuneserve (pip install -U tuneserve, or pull the newer image) to read it"


class FormatTooNew(Exception):
    """Written by a newer tuneserve than this one; the message names what and the upgrade."""


def too_new(what: str, found: int, known: int) -> str:
    return (f"{what} has format version {found}, but this tuneserve reads formats up to {known}: "
            f"a newer release wrote it; {UPGRADE_HINT}")


def read_store_format(root: Path) -> int:
    """The store's format version; 0 when it has no FORMAT file (or does not exist yet)."""
    try:
        return int(json.loads((root / FORMAT_FILE).read_text(encoding="utf-8"))["format_version"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise FormatTooNew(f"{root / FORMAT_FILE} is unreadable ({exc}); {UPGRADE_HINT}, or restore "
                           "the file from a backup") from exc


def check_store(root: Path, what: str, current: int) -> int:
    """Refuse a store written in a newer format; stamp an older (or new) existing one as ``current``.

    Every older format reads as it is today, so stamping is the whole upgrade; a format change that
    needs more rewrites the store here, before the stamp. Returns the version found.
    """
    found = read_store_format(root)
    if found > current:
        raise FormatTooNew(too_new(f"{what} at {root}", found, current))
    if found < current and root.is_dir():
        atomic_write_text(root / FORMAT_FILE, json.dumps({"format_version": current}) + "\n")
        log.info("%s at %s: format %d stamped as %d", what, root, found, current)
    return found
