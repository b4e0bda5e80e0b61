"""A model card (models/card.py) as Markdown: headings, tables and lists (CommonMark + GFM tables).

Class, dataset and model names come from users: every such string is escaped, so a class called
``*bold* | <script>`` stays literal text in any renderer, and a ``|`` cannot break a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OOD_FIGURES = ("method", "threshold", "target_recall", "val_recall", "test_recall", "fitted_on")
# Inline markup anywhere (emphasis, code, links, HTML, entities, table cells); block markup only at the start.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~])")
_BLOCK_START = re.compile(r"^[#+\-=]")
_ORDERED_START = re.compile(r"^(\d+)([.)])(?=\s|$)")


def esc(value: Any) -> str:
    """Literal text: Markdown punctuation backslash-escaped, newlines flattened."""
    text = _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    text = _BLOCK_START.sub(lambda m: "\\" + m.group(0), text)
    return _ORDERED_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> list[str]:
    """A GFM table (cells already escaped), under a level-3 heading when ``title`` is given."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def card_markdown(card: Mapping[str, Any]) -> str:
    model, data, training, ev = card["model"], card["data"], card["training"], card["evaluation"]
    version = model.get("version")
    out = [f"# Model card: {esc(model['name'])}" + (f" version {version}" if version else ""), ""]
    out += [f"Backbone {esc(model['backbone'])}, {model['labels']} classes, created {esc(model['created_at'])}.", ""]

    out += ["## Data", ""]
    name = data.get("dataset_name") or data.get("dataset_id")
    out += [f"Dataset {esc(name)}" + (f" ({esc(data['dataset_id'])})" if data.get("dataset_id") and name !=
                                      data.get("dataset_id") else "") + "." if name else "Dataset: not recorded.", ""]
    splits = list(data["counts"])
    if splits:
        out += table(["class", *splits], ([esc(c), *(data["counts"][s].get(c, 0) for s in splits)]
                                          for c in data["classes"]))
    if data.get("totals"):
        out += ["Images per split: " + ", ".join(f"{s} {n}" for s, n in data["totals"].items()) + ".", ""]
    dup = data.get("duplicates")
    if dup is not None:
        out += [f"Duplicates found: {dup['exact_groups']} exact and {dup['near_groups']} near groups "
                f"({dup['files']} files).", ""]
    if data.get("split_reason"):
        out += [f"Split: {esc(data['split_reason'])}", ""]
    out += ["### Lineage", ""] + [f"- {esc(k)}: {esc(_flat(v))}" for k, v in data["lineage"].items()
                                  if v is not None] + [""]

    out += ["## Training", ""]
    if training.get("chosen_stage"):
        epoch = f" (epoch {training['best_epoch']})" if training.get("best_epoch") is not None else ""
        out += [f"Chosen stage: **{esc(training['chosen_stage'])}**{epoch}: "
                f"{esc(training.get('chosen_reason') or '')}", ""]
    if training["stages"]:
        out += table(["stage", "epochs", "best epoch", "best val acc", "kept", "reason"],
                     ([esc(s["stage"]), s["epochs"], s["best_epoch"], _pct(s["best_val_accuracy"]),
                       "yes" if s["kept"] else "no", esc(s["reason"])] for s in training["stages"]))
    facts = [f"{training['epochs_run']} epochs" if training.get("epochs_run") else "",
             f"{training['wall_s']:.1f} s" if training.get("wall_s") is not None else "",
             f"{training['train_images']} training images" if training.get("train_images") else ""]
    if any(facts):
        out += ["Time: " + ", ".join(f for f in facts if f) + ".", ""]
    if training.get("spec"):
        out += table(["setting", "value"], ([esc(k), esc(_flat(v))] for k, v in training["spec"].items()),
                     "Resolved spec")

    out += ["## Evaluation", ""]
    if ev["splits"]:
        out += table(["split", "images", "accuracy", f"{ev['confidence_level']:.0%} interval", "macro F1"],
                     ([s, v["images"], _pct(v["accuracy"]), f"{_pct(v['accuracy_ci95'][0])} to "
                       f"{_pct(v['accuracy_ci95'][1])}", _num(v["macro_f1"])] for s, v in ev["splits"].items()))
    if ev["per_class"]:
        out += table(["class", "precision", "recall", "F1", "photos"],
                     ([esc(c), _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), v["support"]]
                      for c, v in ev["per_class"].items()), f"Per class ({ev['held_out']})")
    if ev["confusion"]:
        labels = ev["confusion"]["labels"]
        out += table(["true \\ predicted", *(esc(label) for label in labels)],
                     ([esc(labels[i]), *row] for i, row in enumerate(ev["confusion"]["matrix"])),
                     f"Confusion ({ev['confusion']['split']}; rows: true class, columns: predicted)")
    cal = ev["calibration"]
    if cal:
        out += ["### Calibration", "",
                f"Temperature {_num(cal['temperature'], 2)}; expected calibration error on {esc(cal['split'])}: "
                f"{_num(cal['ece_before'])} before, {_num(cal['ece_after'])} after. {esc(cal.get('reason') or '')}",
                ""]
    rc = ev["risk_coverage"]
    if rc:
        out += table(["answered", "accuracy", "confidence at least"],
                     ([_pct(p["coverage"]), _pct(p["accuracy"]), _num(p["min_confidence"])] for p in rc["points"]),
                     f"Risk-coverage ({rc['split']})")
    if ev["ood"]:
        ood = ev["ood"]
        shown = [k for k in OOD_FIGURES if ood.get(k) is not None]
        out += table(["figure", "value"], ([esc(k), esc(_flat(ood[k]))] for k in shown),
                     "None of these (out-of-distribution)")

    out += ["## Limitations", ""]
    out += [f"- {esc(item['text'])}" for item in card["limitations"]] or ["- none found in the numbers"]
    return "\n".join(out) + "\n"


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "n/a" if value is None else str(value)
