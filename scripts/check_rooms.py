"""The house's rooms stay small and private (issue 20): run by ``make lint`` and tests/test_check_rooms.py.

Fails (exit 1, one line per problem) when
  * a folder holds more than MAX_MODULES Python modules (``__init__.py`` counted): group it into rooms;
  * a package of ours has no tests folder of its name (``trainer/run`` -> ``tests/trainer/run``);
  * a module imports another module's ``_private`` name (``from a.b import _x``, or ``b._x`` after
    ``from a import b``): make the name public where it is shared, or move the code that needs it.

    python scripts/check_rooms.py [REPO_ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULES = 20
PACKAGES = ("core", "models", "jobs", "dataset_store", "feedback", "transport", "service", "trainer", "tuneserve")
# Folders of Python files that are checked for their size (the packages, their tests, the tools).
FOLDERS = (*PACKAGES, "tests", "scripts", "bench")
SKIP = {".git", ".venv", "__pycache__", "node_modules", "data"}
# Packages tested through another folder, and why.
TESTED_ELSEWHERE = {
    "core/datasets": "its formats and schemas are tested with their users, in tests/core and tests/dataset_store",
    "jobs/migrations": "the Alembic revisions: tests/jobs/test_schema.py checks them against the tables",
    "jobs/migrations/versions": "the same revisions",
    "service/http/routes": "routes are tested over HTTP, in tests/service/http",
}


def folders(root: Path) -> Iterator[Path]:
    for top in FOLDERS:
        base = root / top
        if not base.is_dir():
            continue
        yield base
        for path in sorted(base.rglob("*")):
            if path.is_dir() and not SKIP.intersection(path.relative_to(root).parts):
                yield path


def too_big(root: Path) -> list[str]:
    out = []
    for folder in folders(root):
        count = len(list(folder.glob("*.py")))
        if count > MAX_MODULES:
            rel = folder.relative_to(root)
            out.append(f"{rel}/: {count} modules (at most {MAX_MODULES}): group them into subpackages by stage")
    return out


def untested(root: Path) -> list[str]:
    out = []
    for top in PACKAGES:
        for init in sorted((root / top).rglob("__init__.py")):
            rel = init.parent.relative_to(root).as_posix()
            if rel in TESTED_ELSEWHERE or "__pycache__" in rel:
                continue
            if not (root / "tests" / rel).is_dir():
                out.append(f"{rel}/: no tests/{rel}/ folder (tests mirror the packages)")
    return out


def modules(root: Path) -> set[str]:
    names = set()
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(root: Path) -> list[str]:
    ours = modules(root)
    out = []
    for top in (*PACKAGES, "tests", "scripts", "bench"):
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            if SKIP.intersection(path.relative_to(root).parts[:-1]):
                continue
            rel = path.relative_to(root)
            tree = ast.parse(path.read_text(), str(rel))
            bound: dict[str, str] = {}  # local name -> our module it is bound to
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    for alias in node.names:
                        full = f"{node.module}.{alias.name}"
                        if node.module in ours and private(alias.name) and full not in ours:
                            out.append(f"{rel}:{node.lineno}: imports {alias.name} from {node.module} (private)")
                        if full in ours:
                            bound[alias.asname or alias.name] = full
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name in ours and alias.asname:
                            bound[alias.asname] = alias.name
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id in bound and private(node.attr)):
                    out.append(f"{rel}:{node.lineno}: uses {bound[node.value.id]}.{node.attr} (private)")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
    problems = too_big(root) + untested(root) + private_imports(root)
    for line in problems:
        print(line)
    if problems:
        print(f"check_rooms: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check_rooms: every folder small, every package tested in its own folder, no private imports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
