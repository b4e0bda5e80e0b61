"""The ETA's yardsticks (trainer/progress/unit_cost.py): timed on the real framework, without touching the run."""

from __future__ import annotations

import torch
from torch import nn

from trainer.progress import eta_plan
from trainer.progress.eta import CostBook
from trainer.progress.tracker import PRIOR_FORWARD_S, ProgressTracker
from trainer.progress.unit_cost import forward_s, head_step_s


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def test_the_yardstick_times_a_forward_pass_and_leaves_the_model_and_the_random_state_as_they_were() -> None:
    model = small_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    seconds = forward_s(model, 32, torch.device("cpu"), images=4)
    assert 0 < seconds < 1
    assert model.training  # put back in the mode it was in
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert torch.equal(torch.rand(3), expected_next)  # the run's random stream goes on as if nothing ran


def test_the_head_step_is_timed_with_the_runs_optimizer_and_within_its_budget() -> None:
    made: list[int] = []

    def optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        made.append(len(params))
        return torch.optim.AdamW(params, lr=1e-3)

    torch.manual_seed(3)
    expected_next = torch.rand(2)
    torch.manual_seed(3)
    step = head_step_s(64, 5, 16, optimizer)
    assert step is not None and 0 < step < 0.5
    assert made == [2]  # weight and bias, through the factory the run uses
    assert torch.equal(torch.rand(2), expected_next)
    assert head_step_s(64, 5, 16, optimizer, budget_s=0.0) is None  # not two steps in the budget: no guess


def test_a_timed_head_step_and_yardstick_replace_the_priors() -> None:
    work = eta_plan.Workload(train=600, val=150, test=0, batch_size=32, flip=False, images_stages=False)
    tracker = ProgressTracker()
    tracker.plan_training("probe", epochs=60, batches=19, patience=5)
    eta_plan.expect(tracker, work, CostBook(None), "b@cpu", "start")
    prior = tracker.stages["probe"]
    assert prior.prior_batch_s == eta_plan.PROBE_STEP_FORWARDS * PRIOR_FORWARD_S
    tracker.yardstick_s, tracker.head_step_s = 0.02, 0.001
    eta_plan.expect(tracker, work, CostBook(None), "b@cpu", "model")
    assert prior.prior_batch_s == 0.001
    # The extraction still to come: every image at the yardstick times the feature-batch ratio.
    assert prior.setup_left_s > 750 * 0.02 * eta_plan.PRIOR_FEATURE_RATIO
    assert prior.setup_left_s < 750 * PRIOR_FORWARD_S
