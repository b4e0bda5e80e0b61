"""``tuneserve`` console script: one module of this package per command (serve, bootstrap, worker, train,
db, each with ``run(command, args)``); this only dispatches by name.

It sits above service/ and trainer/, so it may import both; each command's module is imported only
when that command runs, so ``tuneserve serve`` never imports torch and ``tuneserve train`` never
imports the web stack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Protocol, cast

from core.extras import train_extra_message
from core.logs import configure_logging
from core.settings import get_settings


class CommandModule(Protocol):
    def run(self, command: str, args: list[str]) -> int | None: ...


def _module(name: str) -> Callable[[], CommandModule]:
    """The command's module, imported only when that command runs (lazy on purpose): the base install
    has no torch (``train``, ``bootstrap``), and ``serve`` must not pay for the trainer's imports."""
    return lambda: cast(CommandModule, importlib.import_module(f"tuneserve.cli.{name}"))


# Commands that need the `train` extra (torch): refused with the install command when it is absent.
NEEDS_TRAIN_EXTRA = frozenset({"bootstrap", "worker", "train"})

COMMANDS: dict[str, tuple[Callable[[], CommandModule], str]] = {
    "serve": (_module("serve"), "Serve the HTTP API (and one worker, and a private Redis when none is configured)"),
    "bootstrap": (_module("bootstrap"), "Register the ImageNet-pretrained default model if absent"),
    "worker": (_module("worker"), "Run a training worker (how GPU machines join)"),
    "train": (_module("train"), "Fine-tune locally on a dataset folder or archive, with a progress bar"),
    "db": (_module("db"), "Upgrade the job database to this release's schema (`db upgrade`), or show it (`db status`)"),
}


def usage() -> str:
    lines = ["usage: tuneserve COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())  # noqa: T201 - CLI output
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)  # noqa: T201
        return 2
    if command in NEEDS_TRAIN_EXTRA and (message := train_extra_message(f"tuneserve {command}")):
        print(message, file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    configure_logging(get_settings())  # TUNESERVE_LOG_FORMAT / TUNESERVE_LOG_LEVEL
    module = COMMANDS[command][0]()
    return int(module.run(command, rest) or 0)
