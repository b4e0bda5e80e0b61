"""Stage choice on small splits: a paired exact McNemar decides, the simpler stage stays unless the later
one is better with stated confidence, and the reason carries the numbers."""

from __future__ import annotations

import torch

from core.jobspec import TrainSpec
from trainer.run.early_stopping import Best, end_stage, stop_reason
from trainer.run.stage_choice import paired_comparison
from trainer.run.stages import Stage

LABELS = torch.tensor([0, 1] * 4)  # 8 val photos, as in the issue


def _best(stage: str, pred: list[int]) -> Best:
    p = torch.tensor(pred)
    acc = float((p == LABELS).float().mean())
    return Best(loss=1 - acc, acc=acc, epoch=1, state={"w": torch.zeros(1)}, stage=stage, val_pred=p)


def test_exact_mcnemar_counts_and_p_value() -> None:
    later, earlier = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1]), torch.tensor([1, 0, 1, 0, 0, 1, 0, 1])
    paired = paired_comparison(later, earlier, LABELS)
    assert (paired.later_only, paired.earlier_only, paired.images) == (4, 0, 8)
    assert abs(paired.p_value - 0.5 ** 4) < 1e-12 and not paired.later_better  # 1/16 = 0.0625 >= 0.05
    five = paired_comparison(torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long),
                             torch.zeros(5, dtype=torch.long))
    assert abs(five.p_value - 0.5 ** 5) < 1e-12 and five.later_better


def test_a_higher_score_on_8_photos_keeps_the_simpler_stage_and_says_how_sure() -> None:
    probe = _best("linear", [0, 1, 0, 1, 0, 1, 1, 0])  # 6 of 8
    fine = _best("finetune", [0, 1, 0, 1, 0, 1, 0, 1])  # 8 of 8: 2 photos better, none worse
    overall, record = end_stage(TrainSpec(mode="finetune"), Stage("finetune", 3), fine, probe, LABELS)
    assert overall is probe and not record["kept"]
    assert record["paired"] == {"later_only": 2, "earlier_only": 0, "images": 8, "p_value": 0.25}
    reason = record["reason"]
    assert "finetune val acc 1.0000" in reason and "vs linear 0.7500" in reason
    assert "finetune alone is right on 2, linear alone on 0" in reason and "p=0.250" in reason
    assert "the simpler linear is kept" in reason


def test_a_later_stage_that_is_clearly_better_is_kept() -> None:
    labels = torch.tensor([0, 1] * 20)
    probe_pred = labels.clone()
    probe_pred[:10] = 1 - probe_pred[:10]  # 30 of 40
    probe = Best(0.5, 0.75, 1, {"w": torch.zeros(1)}, stage="linear", val_pred=probe_pred)
    fine = Best(0.1, 1.0, 2, {"w": torch.ones(1)}, stage="finetune", val_pred=labels.clone())
    overall, record = end_stage(TrainSpec(mode="finetune"), Stage("finetune", 3), fine, probe, labels)
    assert overall is fine and record["kept"] and record["paired"]["p_value"] < 0.001
    assert "finetune is better with 95% confidence" in record["reason"]


def test_the_early_stop_line_names_the_patience_used() -> None:
    spec = TrainSpec(mode="auto")
    assert spec.early_stopping.patience == 5
    auto_ft = stop_reason(spec, Stage("finetune", 10), 2)
    assert "patience 2 (auto mode stops fine-tuning after 2; early_stopping.patience is 5)" in auto_ft
    assert stop_reason(spec, Stage("linear", 10), 5).endswith("patience 5")
