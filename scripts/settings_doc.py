"""The README's settings table, generated from core/settings.py (each field's ``description``).

    python scripts/settings_doc.py --write   # rewrite the table between the markers (make docs-settings)
    python scripts/settings_doc.py --check   # exit 1 and print the difference when the README is stale

The table sits between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` in README.md;
everything outside the markers is left as it is, so rerunning it after a merge is safe.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from any folder: import this checkout's core

from core.settings import Settings  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
PREFIX = "TUNESERVE_"


def variables(name: str) -> str:
    names = [f"{PREFIX}{name.upper()}"]
    if name == "port":
        names.insert(0, "PORT")
    return ", ".join(f"`{n}`" for n in names)


def shown(name: str, value: Any) -> str:
    """A default as a reader wants it: unset, 0/1 for switches, sizes in MiB/GiB, thousands separated."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) and name.endswith("_bytes"):
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 100_000 else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`"


def missing_descriptions() -> list[str]:
    return [name for name, info in Settings.model_fields.items() if not (info.description or "").strip()]


def table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        text = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| {variables(name)} | {shown(name, info.default)} | {text} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """``readme`` with the generated table between the markers (ValueError when they are missing)."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md needs the markers {START} and {END} around the settings table")
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table")
    parser.add_argument("--check", action="store_true", help="fail when README.md's table is stale")
    opts = parser.parse_args(argv)
    if missing := missing_descriptions():
        print(f"settings without a description (Field(description=...)): {', '.join(missing)}", file=sys.stderr)
        return 1
    current = README.read_text()
    wanted = with_table(current)
    if opts.write:
        README.write_text(wanted)
        return 0
    if current != wanted:
        sys.stderr.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                   "README.md", "generated"))
        print("README.md's settings table is stale: run `make docs-settings`", file=sys.stderr)
        return 1
    if not opts.check:
        print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
