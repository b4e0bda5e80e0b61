"""Classification metrics from logits, and the same metrics for a registered ONNX file.

``evaluate_onnx`` is what the promotion gate uses to compare a candidate and the active version on
the same held-out split: it runs the exported file with onnxruntime, through the manifest's
preprocessing and temperature, so it measures what the service would serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from models.manifest import Manifest
from trainer.calibrate.calibration import expected_calibration_error, reliability_bins
from trainer.data.job_data import JobData
from trainer.data.pixels import normalize
from trainer.publish.onnx_cpu import cpu_session, run_batch

MAX_MISCLASSIFIED = 200


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           temperature: float = 1.0, paths: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, NLL, ECE, per-class precision/recall/F1, confusion matrix, misclassified examples."""
    n, k = len(labels), len(classes)
    if n == 0:
        return {"images": 0}
    probs = (logits.float() / temperature).softmax(1)
    pred = probs.argmax(1)
    # torchmetrics: rows are true labels, columns predictions; a class never predicted (or absent)
    # has precision (recall) 0, not NaN.
    confusion = multiclass_confusion_matrix(pred, labels, k)
    scores = [fn(pred, labels, k, average="none", zero_division=0).tolist()
              for fn in (multiclass_precision, multiclass_recall, multiclass_f1_score)]
    per_class = {name: {"precision": scores[0][i], "recall": scores[1][i], "f1": scores[2][i],
                        "support": int(confusion[i].sum())} for i, name in enumerate(classes)}
    present = [c for c in per_class.values() if c["support"]]
    wrong = (pred != labels).nonzero().flatten().tolist()
    conf = probs.max(1).values
    wrong.sort(key=lambda i: -float(conf[i]))  # most confident mistakes first: most worth a look
    misclassified = [{"path": paths[i] if paths else str(i), "label": classes[int(labels[i])],
                      "predicted": classes[int(pred[i])], "confidence": float(conf[i])}
                     for i in wrong[:MAX_MISCLASSIFIED]]
    return {
        "images": n,
        "accuracy": float((pred == labels).float().mean()),
        "loss": float(F.cross_entropy(logits.float() / temperature, labels)),
        "ece": expected_calibration_error(probs, labels),
        "macro_f1": sum(c["f1"] for c in present) / max(1, len(present)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "misclassified_count": len(wrong),
        "misclassified": misclassified,
        "reliability": reliability_bins(probs, labels),
    }


def evaluate_onnx(model_file: Path, manifest: Manifest, data: JobData, split: str,
                  batch_size: int = 32) -> dict[str, Any]:
    """Metrics of ``model_file`` on the job's ``split``, in the manifest's label space.

    Every dataset class must be one of the manifest's labels (else the comparison means nothing).
    """
    missing = [c for c in data.classes if c not in manifest.labels]
    if missing:
        raise ValueError(f"model {manifest.name} v{manifest.version} has no label(s) {missing}; "
                         f"it knows {manifest.labels[:20]}")
    pixels = data.split(split, manifest.preprocessing)
    if len(pixels) == 0:
        raise ValueError(f"dataset {data.id} has no {split!r} images to evaluate on")
    to_model = torch.tensor([manifest.labels.index(c) for c in data.classes])
    labels = to_model[pixels.labels]
    session = cpu_session(model_file)
    chunks = [run_batch(session, normalize(pixels.eval[i:i + batch_size], manifest.preprocessing).numpy())
              for i in range(0, len(pixels), batch_size)]
    logits = torch.from_numpy(np.concatenate(chunks))
    out = classification_metrics(logits, labels, manifest.labels, manifest.temperature, pixels.paths)
    out["split"], out["model"], out["version"] = split, manifest.name, manifest.version
    return out
