"""``tuneserve`` console script. Each package owns its subcommands; this only dispatches by name.

The table names modules as strings so that ``tuneserve serve`` never imports torch and
``tuneserve train`` never imports the web stack.
"""

from __future__ import annotations

import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.cli", "Serve the HTTP API (and one worker, and a private Redis when none is configured)"),
    "bootstrap": ("trainer.cli", "Register the ImageNet-pretrained default model if absent"),
    "worker": ("trainer.cli", "Run a training worker (how GPU machines join)"),
    "train": ("trainer.cli", "Fine-tune locally on a dataset folder or archive, with a progress bar"),
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.run(command, rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
