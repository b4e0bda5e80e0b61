"""Steps inside a one-off stage (the export), reported to whoever listens, so its progress moves inside.

The export is one call from the publisher's side, but several steps inside (the ONNX trace, the
file's checks, the report, the registry copy), each of which can take seconds. Code deep in
trainer/publish/export.py and trainer/publish/publisher.py calls :func:`step` when one ends; the progress tracker
listens through :func:`reporting` around the stage. A context variable, not a parameter: the steps
sit three calls below the stage's owner, behind a protocol (``Candidate.register``) that bootstrap
implements too, and nothing is reported when nobody listens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar[Callable[[str], None] | None] = ContextVar("tuneserve_step_listener", default=None)


def step(name: str) -> None:
    """The step ``name`` of the running stage just ended."""
    listener = _listener.get()
    if listener is not None:
        listener(name)


@contextmanager
def reporting(listener: Callable[[str], None]) -> Iterator[None]:
    """Send the steps ended inside to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
