"""What a job expects to cost: epochs early stopping will likely leave, and measured costs kept per backbone.

The ETA is the *expected* time left, so a training stage is not counted at its planned epochs:
early stopping ends it after ``patience`` epochs in a row without improvement. Each epoch is taken
to improve with a probability ``q`` read off the stage's validation curve so far (a Beta(1, 1)
prior over the recent epochs, so it adapts as the curve flattens); the expected number of epochs
left, at most the planned ones, follows from that run-length model (:func:`expected_epochs_left`).
The worst case (``eta_max_s``) counts every planned epoch.

Costs that a run cannot measure before it gets there (export, evaluation, registration, and the
forward pass before the first batch) are kept from earlier jobs on the same backbone in
``work/eta_costs.json`` (:class:`CostBook`): a moving average per backbone and cost, updated when a
job measures it. Nothing in that file is needed: a missing or unreadable book means priors.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from core.fsutil import atomic_write_text

log = logging.getLogger(__name__)

COST_BOOK = "eta_costs.json"  # in the work folder
RECENT_EPOCHS = 8  # the improvement rate is read off the stage's last epochs (it falls as the curve flattens)
BOOK_WEIGHT = 0.5  # weight of a new measurement in the book's moving average
_book_lock = threading.Lock()


def improve_probability(improved: list[bool], window: int = RECENT_EPOCHS) -> float:
    """Posterior mean of the chance that the next epoch improves, from the stage's recent epochs."""
    recent = improved[-window:]
    return (sum(recent) + 1) / (len(recent) + 2)


def expected_epochs_left(q: float, patience: int, bad: int, epochs_left: int) -> float:
    """Expected epochs still run when each improves with probability ``q`` and the stage stops after
    ``patience`` in a row that do not (``bad`` already), or after ``epochs_left`` epochs."""
    if epochs_left <= 0 or bad >= patience:
        return 0.0
    # dist[k]: probability the stage is still running with k non-improving epochs in a row.
    dist = [0.0] * patience
    dist[bad] = 1.0
    expected = 0.0
    for _ in range(epochs_left):
        running = sum(dist)
        if running < 1e-9:
            break
        expected += running  # each running path runs one more epoch
        nxt = [0.0] * patience
        nxt[0] = running * q
        for k in range(patience - 1):
            nxt[k + 1] = dist[k] * (1 - q)
        dist = nxt  # paths at patience - 1 that fail again stop (dropped)
    return expected


class CostBook:
    """Measured costs per backbone (seconds, or seconds per image), kept across jobs in one JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.costs: dict[str, dict[str, float]] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                self.costs = {str(k): {str(n): float(v) for n, v in d.items()} for k, d in loaded.items()}
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                log.warning("ETA cost book %s unreadable (%s); using priors", path, exc)

    def get(self, key: str, name: str) -> float | None:
        return self.costs.get(key, {}).get(name)

    def record(self, key: str, name: str, value: float) -> None:
        """Fold a measurement into the moving average and write the book (best effort: it is a cache)."""
        old = self.get(key, name)
        self.costs.setdefault(key, {})[name] = value if old is None else (1 - BOOK_WEIGHT) * old + BOOK_WEIGHT * value
        if self.path is None:
            return
        try:
            with _book_lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.path, json.dumps(self.costs, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("ETA cost book %s not written (%s)", self.path, exc)
