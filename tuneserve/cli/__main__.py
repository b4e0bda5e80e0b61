"""``python -m tuneserve.cli``: how ``tuneserve serve`` starts its worker child (the same interpreter)."""

from tuneserve.cli import main

raise SystemExit(main())
