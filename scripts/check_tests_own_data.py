"""Lint: nothing under tests/ may read data from beside the repository (``../shared`` and the like).

A user's clone has nothing beside it, so a test that reaches outside the repository fails for them
(or, worse, skips). Photos the tests need are committed under ``tests/data``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# "../shared", "shared/data", a path component "shared" built with / or joinpath, or a quoted "shared".
PATTERN = re.compile(r"""\.\./shared|shared/data|["']shared["']|parents?\[\d+\]\.parent\s*/""")
SUFFIXES = {".py", ".cfg", ".ini", ".toml", ".txt", ".json", ".csv", ".md", ".sh"}


def offending_lines(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in SUFFIXES:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if PATTERN.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return found


def main() -> int:
    found = offending_lines(REPO / "tests")
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("tests must own their data: commit the photos under tests/data instead of reading outside the "
              "repository", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
