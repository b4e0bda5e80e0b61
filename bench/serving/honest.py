"""Honest answers, the out-of-distribution part: is a foreign photo flagged "none of these"?

Far case: 10 CIFAR-10 classes in; out, the hymenoptera validation photos (ants, bees) and the ImageNet
samples, the latter split in two: 19 of no CIFAR class, 24 of a CIFAR class (cats, dogs, birds, cars,
trucks, a ship, an airliner: in by content, so their flagged share is what resolution alone does).
Every out set is scored twice: full resolution, and made like CIFAR (centre square, 32x32, JPEG, then
the same upscaling preset): CIFAR photos are 32x32 upscaled, so a score may separate sharpness from
blur rather than content; the 32x32 rows are the honest test. Near case: 5 CIFAR-10 classes in
(airplane..deer), the other 5 out. Per case, like a linear job: frozen EfficientNet-Lite0 features of
``--train`` photos a class (the bank and the head, a logistic regression), the threshold at 95 % of
``--val`` validation photos a class, then the model exported with trainer.publish.export (the ``ood_score``
output the service reads) and every number computed from what onnxruntime returns on held-out CIFAR
test photos (in) and the out photos.

Compared: the shipped k-NN score, the maximum softmax probability and the energy score of the same
head (Liu et al., 2020), and a Mahalanobis distance with a shared covariance shrunk 10 % toward a scaled
identity (Lee et al., 2018) on the ONNX pooled features, each thresholded at the same validation recall.

    BENCH_DATA=../shared/data flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.honest \
        --train 50 --val 30 --test 50 --out /tmp/honest.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.stats import mannwhitneyu

from bench.data import shared_data
from trainer.backbones import create_backbone
from trainer.calibrate.ood import fit_scorer, threshold_at_recall
from trainer.data.transforms import EvalPreset
from trainer.publish.export import export_onnx
from trainer.publish.onnx_cpu import cpu_session

log = logging.getLogger("bench.serving.honest")
SUFFIXES = {".jpg", ".jpeg", ".png"}
IMAGENET_OF_CIFAR = {  # ImageNet sample names (after the wnid) whose class is one of CIFAR-10's ten
    "hen", "ostrich", "bald_eagle", "king_penguin", "beagle", "golden_retriever", "Labrador_retriever",
    "German_shepherd", "pug", "Samoyed", "tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat",
    "airliner", "cab", "container_ship", "convertible", "fire_engine", "minivan", "pickup", "school_bus",
    "sports_car"}


def like_cifar(img: Image.Image) -> Image.Image:
    """``img`` made as small as a CIFAR photo: centre square, 32x32 (antialiased), JPEG-encoded again.

    The honest test: CIFAR photos are 32x32 upscaled to the model's input, the foreign photos full
    resolution, so a score could separate blur from sharpness instead of content. Foreign photos made
    this way differ from the in-distribution set only in what they show.
    """
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    small = img.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def photos(files: list[Path], pre: Any, small: bool = False) -> torch.Tensor:
    """Preprocessed float crops, as the service feeds the model (``small``: made like CIFAR first)."""
    preset = EvalPreset(pre)
    images = (Image.open(f).convert("RGB") for f in files)
    return torch.stack([preset(like_cifar(i) if small else i) for i in images])


def cifar(split: str, classes: list[str], first: int, count: int) -> tuple[list[Path], np.ndarray]:
    root = shared_data("cifar10") / split
    files, labels = [], []
    for i, name in enumerate(classes):
        picked = sorted((root / name).iterdir())[first:first + count]
        files += picked
        labels += [i] * len(picked)
    return files, np.array(labels)


def pooled(model: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> np.ndarray:
    """Penultimate features of preprocessed float crops (trainer.data.features.extract takes uint8 pixels)."""
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
    # AUROC = P(foreign scores above in-distribution) = Mann-Whitney U / (n_out n_in). Not torchmetrics'
    # binary_auroc: it takes scores outside [0, 1] for logits and squashes them through a sigmoid, which
    # ties every large distance at 1.0 (a Mahalanobis distance read AUROC 0.5 that way).
    auroc = mannwhitneyu(outside.astype(np.float64), inside.astype(np.float64)).statistic / (len(outside) * len(inside))
    return {"auroc": round(float(auroc), 4),
            "foreign_flagged": round(float((outside > threshold).mean()), 4),
            "in_kept": round(float((inside <= threshold).mean()), 4)}


def case(name: str, classes: list[str], outs: dict[str, list[Path]], args: argparse.Namespace) -> dict[str, Any]:
    """One in-distribution set against each out set of ``outs`` (a name ending in "32x32": made like CIFAR)."""
    started = time.perf_counter()
    backbone = create_backbone()
    model, head, pre = backbone.model.eval(), backbone.classifier(), backbone.preprocessing
    train_files, train_y = cifar("train", classes, 0, args.train)
    val_files, _ = cifar("train", classes, args.train, args.val)
    test_files, test_y = cifar("test", classes, 0, args.test)
    train_f, val_f = pooled(model, head, photos(train_files, pre)), pooled(model, head, photos(val_files, pre))
    probe = logistic_head(train_f, train_y, len(classes))
    backbone.replace_classifier(len(classes))
    with torch.no_grad():
        backbone.classifier().weight.copy_(probe.weight)
        backbone.classifier().bias.copy_(probe.bias)
    scorer = fit_scorer(train_f, val_f, args.recall, k=args.k)
    test_x = photos(test_files, pre)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(backbone.model, pre.crop, path, test_x[:8], ood=scorer)
        in_logits, in_f, in_score = run_onnx(path, test_x)
        out_runs = {o: run_onnx(path, photos(files, pre, small=o.endswith("32x32"))) for o, files in outs.items()}
    for res in ("", " at 32x32"):  # the foreign set: ants/bees and every ImageNet sample
        parts = [out_runs[o] for o in out_runs if o.endswith(res) and (res or not o.endswith("32x32"))]
        if name == "far" and len(parts) == 3:
            joined = [np.concatenate([part[i] for part in parts]) for i in range(3)]
            out_runs[f"all: the issue's set{res}"] = (joined[0], joined[1], joined[2])
    with torch.no_grad():
        val_logits = probe(torch.from_numpy(val_f).float()).numpy()
    maha = mahalanobis(train_f, train_y)
    methods: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
        # (logits, pooled features, ONNX ood_score) -> score, higher = less like the training photos
        "shipped ood_score (ONNX)": lambda _lg, _f, onnx_score: onnx_score,
        "max softmax": lambda lg, _f, _s: -softmax_max(lg),
        "energy": lambda lg, _f, _s: energy(lg),
        "mahalanobis (shared cov., 10 % shrunk)": lambda _lg, f, _s: np.asarray(maha(f)),
    }
    val_scores = {"shipped ood_score (ONNX)": scorer.score(val_f)}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for m, f in methods.items():
        v = val_scores.get(m)
        v = f(val_logits, val_f, np.zeros(0)) if v is None else v
        i = f(in_logits, in_f, in_score)
        scores[m] = {o: judge(v, i, f(*run), args.recall) for o, run in out_runs.items()}
    result = {"case": name, "in_classes": classes, "train": len(train_files), "val": len(val_files),
              "test_in": len(test_files), "out": {o: len(files) for o, files in outs.items()},
              "ood": {k: v for k, v in scorer.summary().items() if k in ("method", "k", "threshold", "bank_size")},
              "test_accuracy": round(float((in_logits.argmax(1) == test_y).mean()), 4),
              "onnx_vs_numpy_max_abs_diff": float(np.abs(in_score - scorer.score(in_f)).max()),
              "scores": scores, "wall_s": round(time.perf_counter() - started, 1)}
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
    ants_bees = sorted(p for p in (shared_data("hymenoptera") / "val").rglob("*") if p.suffix.lower() in SUFFIXES)
    imagenet = sorted(p for p in shared_data("imagenet_samples").iterdir() if p.suffix.lower() in SUFFIXES)
    # 24 of the 43 ImageNet samples show a CIFAR class (cats, dogs, birds, cars, trucks, a ship, an airliner):
    # by content they are in; scored separately, their flagged share is what resolution alone does.
    of_cifar = [p for p in imagenet if p.stem.split("_", 1)[1] in IMAGENET_OF_CIFAR]
    far_outs = {"ants/bees": ants_bees, "ImageNet, no CIFAR class": [p for p in imagenet if p not in of_cifar],
                "ImageNet of CIFAR classes": of_cifar}
    near_out, _ = cifar("test", classes[5:], 0, args.test)
    results = [case("far", classes, {**far_outs, **{f"{o} at 32x32": f for o, f in far_outs.items()}}, args),
               case("near", classes[:5], {"other 5 CIFAR classes": near_out}, args)]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
