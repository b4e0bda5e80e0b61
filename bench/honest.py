"""Honest answers, the out-of-distribution part: is a foreign photo flagged "none of these"?

Far case: 10 CIFAR-10 classes in; the hymenoptera photos (ants, bees) and the ImageNet samples out.
Near case: 5 CIFAR-10 classes in (airplane..deer), the other 5 out. Per case, like a linear job:
frozen EfficientNet-Lite0 features of ``--train`` photos a class (the bank and the head, a logistic
regression), the threshold at 95 % of ``--val`` validation photos a class, then the model exported
with trainer.export (the ``ood_score`` output the service reads) and every number below computed from
what onnxruntime returns on held-out CIFAR test photos (in) and the foreign photos (out).

Compared: the shipped k-NN score, the maximum softmax probability and the energy score of the same
head (Liu et al., 2020), and a Mahalanobis distance with a shared covariance shrunk 10 % toward a scaled
identity (Lee et al., 2018) on the ONNX pooled features, each thresholded at the same validation recall.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.honest
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from bench.data import shared_data
from trainer.backbones import create_backbone
from trainer.export import export_onnx
from trainer.onnx_cpu import cpu_session
from trainer.ood import fit_scorer, threshold_at_recall
from trainer.transforms import EvalPreset

log = logging.getLogger("bench.honest")
SUFFIXES = {".jpg", ".jpeg", ".png"}


def photos(files: list[Path], pre: Any) -> torch.Tensor:
    """Preprocessed float crops, as the service feeds the model."""
    preset = EvalPreset(pre)
    return torch.stack([preset(Image.open(f).convert("RGB")) for f in files])


def cifar(split: str, classes: list[str], first: int, count: int) -> tuple[list[Path], np.ndarray]:
    root = shared_data("cifar10") / split
    files, labels = [], []
    for i, name in enumerate(classes):
        picked = sorted((root / name).iterdir())[first:first + count]
        files += picked
        labels += [i] * len(picked)
    return files, np.array(labels)


def pooled(model: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> np.ndarray:
    """Penultimate features of preprocessed float crops (trainer.features.extract takes uint8 pixels)."""
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(x[i:i + 64])
    hook.remove()
    return torch.cat(seen).flatten(1).numpy()


def run_onnx(path: Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, pooled features, ood_score) from one session run per batch."""
    session = cpu_session(path)
    outs = [session.run(None, {"input": x[i:i + 64].numpy()}) for i in range(0, len(x), 64)]
    logits = np.concatenate([o[0] for o in outs])
    feats = np.concatenate([o[1].mean(axis=(2, 3)) for o in outs])  # global average pool = the head's input
    return logits, feats, np.concatenate([o[-1] for o in outs])


def softmax_max(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    return np.asarray((p / p.sum(1, keepdims=True)).max(1))


def energy(logits: np.ndarray) -> np.ndarray:
    m = logits.max(1)
    return np.asarray(-(m + np.log(np.exp(logits - m[:, None]).sum(1))))  # higher = less like training


def logistic_head(feats: np.ndarray, labels: np.ndarray, classes: int) -> torch.nn.Linear:
    """The linear probe: multinomial logistic regression (L-BFGS, a little L2), like a linear job's head."""
    x, y = torch.from_numpy(feats).float(), torch.from_numpy(labels).long()
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    return head


def mahalanobis(train: np.ndarray, labels: np.ndarray) -> Any:
    means = np.stack([train[labels == c].mean(0) for c in np.unique(labels)])
    centred = train - means[labels]
    cov = centred.T @ centred / len(train)
    cov = 0.9 * cov + 0.1 * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov)

    def score(x: np.ndarray) -> np.ndarray:
        d = x[:, None, :] - means[None]
        return np.asarray(np.einsum("ncd,de,nce->nc", d, precision, d).min(1))
    return score


def judge(val: np.ndarray, inside: np.ndarray, outside: np.ndarray, recall: float) -> dict[str, float]:
    threshold = threshold_at_recall(val, recall)
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    auroc = binary_auroc(torch.from_numpy(np.r_[inside, outside]).double(), torch.from_numpy(y).long())
    return {"auroc": round(float(auroc), 4),
            "foreign_flagged": round(float((outside > threshold).mean()), 4),
            "in_kept": round(float((inside <= threshold).mean()), 4)}


def case(name: str, classes: list[str], foreign: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    backbone = create_backbone()
    model, head, pre = backbone.model.eval(), backbone.classifier(), backbone.preprocessing
    train_files, train_y = cifar("train", classes, 0, args.train)
    val_files, _ = cifar("train", classes, args.train, args.val)
    test_files, _ = cifar("test", classes, 0, args.test)
    train_f, val_f = pooled(model, head, photos(train_files, pre)), pooled(model, head, photos(val_files, pre))
    probe = logistic_head(train_f, train_y, len(classes))
    backbone.replace_classifier(len(classes))
    with torch.no_grad():
        backbone.classifier().weight.copy_(probe.weight)
        backbone.classifier().bias.copy_(probe.bias)
    scorer = fit_scorer(train_f, val_f, args.recall, k=args.k)
    test_x, out_x = photos(test_files, pre), photos(foreign, pre)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(backbone.model, pre.crop, path, test_x[:8], ood=scorer)
        in_logits, in_f, in_score = run_onnx(path, test_x)
        out_logits, out_f, out_score = run_onnx(path, out_x)
    with torch.no_grad():
        val_logits = probe(torch.from_numpy(val_f).float()).numpy()
    maha = mahalanobis(train_f, train_y)
    scores = {
        "knn (shipped, ONNX ood_score)": (scorer.score(val_f), in_score, out_score),
        "max softmax": (-softmax_max(val_logits), -softmax_max(in_logits), -softmax_max(out_logits)),
        "energy": (energy(val_logits), energy(in_logits), energy(out_logits)),
        "mahalanobis (shared, Ledoit-Wolf)": (maha(val_f), maha(in_f), maha(out_f)),
    }
    onnx_vs_numpy = float(np.abs(in_score - scorer.score(in_f)).max())
    result = {"case": name, "in_classes": classes, "train": len(train_files), "val": len(val_files),
              "test_in": len(test_files), "foreign": len(foreign), "k": scorer.k, "threshold": scorer.threshold,
              "test_accuracy": round(float((in_logits.argmax(1) == cifar("test", classes, 0, args.test)[1]).mean()), 4),
              "onnx_vs_numpy_max_abs_diff": onnx_vs_numpy,
              "scores": {n: judge(v, i, o, args.recall) for n, (v, i, o) in scores.items()},
              "wall_s": round(time.perf_counter() - started, 1)}
    log.info("%s", json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=100, help="CIFAR train photos a class (bank + head)")
    parser.add_argument("--val", type=int, default=50, help="validation photos a class (the threshold)")
    parser.add_argument("--test", type=int, default=100, help="held-out CIFAR test photos a class (in)")
    parser.add_argument("--recall", type=float, default=0.95)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("trainer").setLevel(logging.WARNING)
    torch.set_num_threads(2)
    classes = sorted(p.name for p in (shared_data("cifar10") / "train").iterdir())
    foreign = sorted(p for d in (shared_data("hymenoptera") / "val", shared_data("imagenet_samples"))
                     for p in d.rglob("*") if p.suffix.lower() in SUFFIXES)
    near_out, _ = cifar("test", classes[5:], 0, args.test)
    results = [case("far", classes, foreign, args), case("near", classes[:5], near_out, args)]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
