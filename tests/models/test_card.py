"""Model card limitations stated from the numbers, and Markdown that stays literal whatever the names."""

from __future__ import annotations

from typing import Any

import pytest
from markdown_it import MarkdownIt

from core.weak_validation import wilson_interval
from models import Manifest
from models.card import RECALL_FLOOR, model_card
from models.card_markdown import card_markdown

EVIL = "wasp | <script>alert(1)</script> *x*"


def split(matrix: list[list[int]], labels: list[str]) -> dict[str, Any]:
    n = sum(map(sum, matrix))
    per_class = {}
    for i, name in enumerate(labels):
        tp, actual, predicted = matrix[i][i], sum(matrix[i]), sum(row[i] for row in matrix)
        per_class[name] = {"precision": tp / predicted if predicted else 0.0, "recall": tp / actual,
                           "f1": 0.0, "support": actual}
    return {"images": n, "accuracy": sum(matrix[i][i] for i in range(len(labels))) / n, "macro_f1": 0.5,
            "loss": 0.4, "ece": 0.08, "per_class": per_class, "confusion_matrix": matrix}


@pytest.fixture
def card() -> dict[str, Any]:
    labels = ["ant", "bee", EVIL]
    # ants and bees: 40 photos each, all right; the third class: 40 photos, 12 taken for bees (30 %)
    test = split([[40, 0, 0], [0, 40, 0], [0, 12, 28]], labels)
    val = split([[30, 0, 0], [1, 29, 0], [0, 2, 28]], labels)
    manifest = Manifest(name="insects", labels=labels, backbone="efficientnet_lite0",
                        source={"kind": "fine-tune", "job_id": "j1", "dataset_id": "ab" * 8, "spec": {"lr": 0.001}},
                        metrics={"best_stage": "probe", "best_stage_reason": "kept", "stages": [
                            {"stage": "probe", "kept": True, "best_epoch": 3, "best_val_accuracy": 0.9,
                             "reason": "probe: kept"}], "wall_s": 12.5, "epochs_run": 4, "train_images": 300},
                        selective={"risk_coverage": [], "target_accuracy": 0.99, "min_confidence": None})
    report = {"labels": labels, "splits": {"val": val, "test": test}, "temperature": 1.3,
              "calibration": {"split": "test", "ece_before": 0.12, "ece_after": 0.08, "applied": True, "reason": ""},
              "history": [{"stage": "probe", "epoch": e} for e in range(1, 5)],
              "risk_coverage": {"val": [[1.0, 0.9, 0.3], [0.8, 0.95, 0.6], [0.5, 1.0, 0.9]],
                                "test": [[1.0, 0.9, 0.3], [0.91, 0.93, 0.5], [0.7, 0.97, 0.7], [0.4, 1.0, 0.95]]}}
    dataset = {"id": "ab" * 8, "name": "insects-2026", "classes": labels,
               "counts": {"train": {k: 100 for k in labels}, "val": {k: 30 for k in labels},
                          "test": {k: 40 for k in labels}},
               "duplicates": [{"kind": "exact", "paths": ["a.jpg", "b.jpg"]}], "warnings": [], "split_reason": "made"}
    return model_card(manifest, report, dataset)


def test_limitations_follow_the_numbers(card: dict[str, Any]) -> None:
    texts = {item["kind"]: [] for item in card["limitations"]}
    for item in card["limitations"]:
        texts[item["kind"]].append(item["text"])
    assert texts["low_recall"] == [f"class {EVIL!r}: recall 0.70 on test (28 of 40 found), below {RECALL_FLOOR:.2f}"]
    assert texts["confused"] == [f"{EVIL!r} photos taken for 'bee': 12 of 40 (30%) on test"]  # not val's 2 of 30
    assert any("0.080 on average" in t for t in texts["calibration"])
    assert "not reached" in texts["selective"][0]
    assert "no 'none of these' score" in texts["ood"][0]
    assert "1 exact" in texts["duplicates"][0]
    assert "weak_validation" not in texts  # 90 and 120 photos, every class at 30+


def test_sections_carry_intervals_and_the_curve(card: dict[str, Any]) -> None:
    ev = card["evaluation"]
    assert ev["held_out"] == "test" and ev["splits"]["test"]["accuracy_ci95"] == list(wilson_interval(108, 120))
    assert [p["coverage"] for p in ev["risk_coverage"]["points"]] == [1.0, 0.91, 0.7]  # rows at >= 90/80/70/50 %
    assert card["data"]["totals"] == {"train": 300, "val": 90, "test": 120}
    assert card["data"]["duplicates"] == {"exact_groups": 1, "near_groups": 0, "files": 2}
    assert card["training"]["stages"][0]["epochs"] == 4 and card["model"]["version"] is None


def test_markdown_keeps_user_names_literal(card: dict[str, Any]) -> None:
    md = card_markdown(card)
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<em>x</em>" not in html
    counts = html.split("<table>")[1].split("</table>")[0]
    assert all(row.count("<td>") == 4 for row in counts.split("<tr>")[2:])  # class + 3 splits: the | stayed text
    assert [h.split(">")[1].split("<")[0] for h in html.split("<h2")[1:]] == \
        ["Data", "Training", "Evaluation", "Limitations"]


def test_weak_validation_is_named_with_its_advice() -> None:
    manifest = Manifest(name="tiny", labels=["a", "b"], backbone="x")
    report = {"labels": ["a", "b"], "splits": {"val": split([[3, 1], [1, 3]], ["a", "b"])}}
    card = model_card(manifest, report)
    weak = [i["text"] for i in card["limitations"] if i["kind"] == "weak_validation"]
    assert len(weak) == 1 and weak[0].startswith("weak val split (8 images)") and "chosen on it" in weak[0]
    assert card["evaluation"]["calibration"] is None and card["evaluation"]["risk_coverage"] is None
    assert "## Limitations" in card_markdown(card)
