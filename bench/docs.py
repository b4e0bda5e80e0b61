"""Each benchmark owns one ``## `` section of docs/benchmarks.md and replaces only that section."""

from __future__ import annotations

from pathlib import Path

from core.fsutil import atomic_write_text

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(section: str, text: str, path: Path = DOCS) -> None:
    """Replace the section headed ``section`` (up to the next ``## `` heading) with ``text``, or append it."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    body = text.rstrip("\n") + "\n"
    start = old.find(section + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(section))
        new = old[:start] + body + ("\n" + old[end + 1 :] if end >= 0 else "")
    atomic_write_text(path, new)
