"""Bootstrap's export seeds the ETA's cost book, so a first job expects its own export at a measured cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.backbones import DEFAULT_BACKBONE
from trainer.progress import eta_plan
from trainer.progress.eta import COST_BOOK, CostBook
from trainer.progress.tracker import PUBLISH_STAGES, ProgressTracker


def test_bootstrap_seeds_the_cost_book_and_a_first_job_expects_its_export(bootstrapped_home: Path) -> None:
    book, key = CostBook(bootstrapped_home / "work" / COST_BOOK), f"{DEFAULT_BACKBONE}@cpu"
    trace, check, register = (book.get(key, name) for name in ("export_trace_s", "export_check_s", "register_s"))
    assert trace is not None and check is not None and register is not None
    assert 0 < check < trace and 0 < register < trace  # the trace is most of an export
    assert book.get(key, "evaluate_s") is None  # bootstrap runs no gate: nothing to learn of one
    assert book.get(key, "forward_s") is None  # see trainer/publish/bootstrap.py learn_costs
    boot = book.get(key, eta_plan.BOOTSTRAP_FORWARD)
    assert boot is not None and 0 < boot < 1.0  # its yardstick: seconds per image of a forward pass

    # A first job before it times its own yardstick: bootstrap's with the margin, not the prior.
    early = ProgressTracker()
    assert eta_plan.forward_s(early, book, key) == pytest.approx(eta_plan.BOOTSTRAP_FORWARD_MARGIN * boot)
    early.yardstick_s = 0.03
    assert eta_plan.forward_s(early, book, key) == 0.03  # then its own

    work = eta_plan.Workload(train=40, val=10, test=10, batch_size=16, flip=False, images_stages=False)
    tracker = ProgressTracker()
    tracker.plan([(name, 1) for name in PUBLISH_STAGES])
    tracker.yardstick_s = 0.02  # the first job's own forward pass: the reference, so no scaling
    eta_plan.expect_publishing(tracker, work, book, key)
    steps = dict(tracker.stages["export"].steps)
    assert steps["trace"] == trace and steps["check"] == check
    assert steps["report"] > 0  # never timed by bootstrap: its prior share of what was
    assert tracker.stages["register"].prior_s == pytest.approx(register)
