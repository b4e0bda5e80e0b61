"""The costs a run expects before it measures them, from the cost book or this run's measured rates.

Every cost is expressed in measured units where one exists: a training step is a number of forward
passes per image that depends on the batch size (``PRIOR_TRAIN_RATIO``), validation and calibration
are forward passes over their images, the promotion gate's evaluation is seconds per held-out image;
all of them per image of the backbone's forward pass, which the run measures in its first seconds
(the probe's feature extraction) or an earlier job on the backbone left in the book
(trainer/progress/eta.py). After a run, :func:`learn` writes what it measured back to the book.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.calibrate.ood import MAX_BANK
from trainer.progress.eta import CostBook
from trainer.progress.stage import PRIOR_STAGE_S
from trainer.progress.stage_cost import EXPORT_PRIOR_FORWARD_S, EXPORT_PRIOR_S, EXPORT_STEPS, speed_factor
from trainer.progress.tracker import PRIOR_DECODE_S, PRIOR_FORWARD_S, ProgressTracker, progress_name

if TYPE_CHECKING:
    from trainer.run.stages import Stage

# Before a job on the backbone measured them: a head step on cached features in forward passes of one
# image (measured 0.03-0.06 s a step at 0.08-0.18 s a forward pass on a busy 2-core CPU), and the
# epochs the probe runs before early stopping (13 of 60 in each of this bench's CIFAR-10 jobs).
PROBE_STEP_FORWARDS = 0.3
PRIOR_PROBE_EPOCHS = 15.0
# Bootstrap's yardstick (trainer/publish/bootstrap.py), for a home's first job until it times its own:
# jobs read 1.3-1.8x bootstrap's on the same machine (a fresh process, nothing else loaded), and a
# prior leans slow. The priors' 0.08 s had been 6x this machine's: a first job's fraction read 0.06 at
# 20 % of its time.
BOOTSTRAP_FORWARD, BOOTSTRAP_FORWARD_MARGIN = "bootstrap_forward_s", 1.8
LR_RANGE_STEPS_S = 1.0  # the LR range test on cached features (a few hundred head steps)
MODEL_LOAD_S = 2.0  # building the backbone and loading its weights
# A feature-extraction image against the yardstick's: 1.3-1.6 on a busy AVX2 2-core EPYC, 2.3-2.5 on a
# quiet VNNI one (the extraction's batches of 64 spill caches the yardstick's 4 images fit in).
PRIOR_FEATURE_RATIO = 1.9
# A fine-tuning stage's first batch against its later ones (the first backward pass sets up its
# kernels and buffers): measured 1.9-2.0 at batch 16 and 32 on one 2-core CPU, 2.0-2.6 on the random
# batches of a timing script and 3.5-3.6 in jobs on another. Taken at face value, the first batch alone
# made the stage look twice as long until the second was timed; it only bounds the later ones from
# above (StageCost.unit_s), and the plan counts it as that many batches.
PRIOR_FIRST_BATCH_RATIO = 2.5
# A fine-tuning step per image, in yardstick forward passes (4 images), by batch size: forward,
# backward and update cost more per image in bigger batches (memory traffic; the forward pass alone
# measured 1.0, 1.22, 1.57, 1.79 yardsticks at 4, 16, 32, 64 images). Measured on a 2-core EPYC
# (EfficientNet-Lite0, 224 px, a timing script): 3.43 at 16, 4.52 at 32; jobs there 2.0-3.5 at 16 and
# 4.5-4.9 at 32 once partial batches were counted at their images (a job's own yardstick read
# 0.014-0.021 s while its steps cost the same); the ends are 2.85 forward passes of a batch that size.
# Between them: interpolated on log2 of the batch size.
PRIOR_TRAIN_RATIO = ((4, 2.85), (16, 3.45), (32, 4.5), (64, 5.1))


@dataclass
class Workload:
    train: int
    val: int
    test: int
    batch_size: int
    flip: bool  # the probe trains on mirrored features too
    images_stages: bool  # fine-tuning stages (decoded training views, a full-model calibration)
    drop_last: bool = False  # an epoch leaves out its partial batch (trainer/run/loops.py)

    def batch_images(self) -> float:
        """Images in a fine-tuning batch on average: 40 photos at batch 16 are batches of 16, 16 and 8,
        which planned as three full batches had made the stage look 20 % longer."""
        if self.drop_last or self.train <= self.batch_size:
            return float(min(self.train, self.batch_size) or self.batch_size)
        return self.train / math.ceil(self.train / self.batch_size)


def workload(spec: Any, stages: list[Stage], dataset: Any) -> Workload:
    from trainer.run.loops import drops_last_batch  # torch: imported by whoever trains anyway

    train = len(dataset.items("train"))
    return Workload(train, len(dataset.items("val")), len(dataset.items("test")),
                    spec.batch_size, spec.augment in ("standard", "strong"),
                    any(not s.on_features for s in stages), drops_last_batch(train, spec))


def prior_train_ratio(batch_size: int) -> float:
    """PRIOR_TRAIN_RATIO at ``batch_size``: log-linear between the measured sizes, flat past the ends."""
    points = PRIOR_TRAIN_RATIO
    if batch_size <= points[0][0]:
        return points[0][1]
    for (b0, r0), (b1, r1) in itertools.pairwise(points):
        if batch_size <= b1:
            t = math.log2(batch_size / b0) / math.log2(b1 / b0)
            return r0 + t * (r1 - r0)
    return points[-1][1]


def train_ratio(book: CostBook, key: str, batch_size: int) -> float:
    """A fine-tuning step per image in yardstick forward passes at ``batch_size``: as an earlier job on the
    backbone measured it at that size; else at the nearest size measured, moved along the prior's shape
    (this machine's level, the prior's dependence on the batch size); else the prior."""
    measured = book.get(key, train_ratio_key(batch_size))
    if measured is not None:
        return measured
    sizes = [int(name.removeprefix("train_ratio_b")) for name in book.costs.get(key, {})
             if name.startswith("train_ratio_b") and name.removeprefix("train_ratio_b").isdigit()]
    if not sizes:
        return prior_train_ratio(batch_size)
    near = min(sizes, key=lambda b: (abs(math.log2(b / batch_size)), b))
    there = book.get(key, train_ratio_key(near)) or prior_train_ratio(near)
    return there * prior_train_ratio(batch_size) / prior_train_ratio(near)


def train_ratio_key(batch_size: int) -> str:
    return f"train_ratio_b{batch_size}"


def book_key(spec: Any) -> str:
    """The cost book's key of a run: the backbone and the device kind (a GPU's costs are not a CPU's)."""
    from trainer.run.result import resolve_device  # torch: imported by whoever trains anyway

    return f"{spec.base}@{resolve_device(spec.device).type}"


def forward_s(tracker: ProgressTracker, book: CostBook, key: str) -> float:
    """The yardstick forward pass per image (trainer/progress/unit_cost.py): this run's as it would time
    now, else an earlier job's on the backbone, else bootstrap's with a margin, else the prior."""
    measured = tracker.speed_now() or book.get(key, "forward_s")
    if measured is not None:
        return measured
    boot = book.get(key, BOOTSTRAP_FORWARD)
    return BOOTSTRAP_FORWARD_MARGIN * boot if boot is not None else PRIOR_FORWARD_S


def feature_image_s(tracker: ProgressTracker, book: CostBook, key: str) -> float:
    """Expected seconds per image of the feature extraction: its batches of 64 cost more per image than
    the yardstick's few (memory traffic), by the ratio an earlier job measured, else the prior."""
    return forward_s(tracker, book, key) * (book.get(key, "feature_ratio") or PRIOR_FEATURE_RATIO)


def plan_run(tracker: ProgressTracker, stages: list[Stage], spec: Any, work: Workload,
             patience: dict[str, int]) -> None:
    """The training stages (epochs, batches, early stopping) and calibration, before anything runs."""
    epochs: dict[str, int] = {}
    batches: dict[str, int] = {}
    names: dict[str, int] = {}
    for s in stages:
        name = progress_name(s.name)
        per_epoch = math.ceil(work.train * (2 if work.flip and s.on_features else 1) / work.batch_size)
        epochs[name] = epochs.get(name, 0) + s.epochs
        batches[name] = max(1, per_epoch)
        names[name] = names.get(name, 0) + 1
    for name in epochs:
        # Several gradual steps share one progress stage: their early stopping is not modelled (worst case).
        tracker.plan_training(name, epochs[name], batches[name], patience[name] if names[name] == 1 else 0)
    tracker.plan([("calibrate", 1)])


def expect(tracker: ProgressTracker, work: Workload, book: CostBook, key: str, phase: str) -> None:
    """Expected costs of what is still to come; ``phase``: "start" (nothing built yet), "model" (the
    model built, nothing decoded yet), "features" (pixels decoded, features next) or "trained" (only
    rates left to apply: the features under way or done)."""
    fwd = forward_s(tracker, book, key)
    decode = book.get(key, "decode_s") or PRIOR_DECODE_S
    feature_s = feature_image_s(tracker, book, key)
    features = (work.train * (2 if work.flip else 1) + work.val) * feature_s
    decoding = (work.train * (2 if work.images_stages else 1) + work.val) * decode
    setup = {"start": decoding + features + LR_RANGE_STEPS_S + MODEL_LOAD_S,
             "model": decoding + features + LR_RANGE_STEPS_S, "features": features + LR_RANGE_STEPS_S}.get(phase)
    if "probe" in tracker.stages:
        # A head step on cached features: as timed on this machine before the probe (trainer/progress/unit_cost.py),
        # else as an earlier job measured it, else a share of a forward pass.
        tracker.expect("probe", setup_s=setup, batch_s=tracker.head_step_s or book.get(key, "probe_batch_s")
                       or PROBE_STEP_FORWARDS * fwd)
    for name in ("probe", "finetune"):  # how long early stopping let the stage run in earlier jobs
        if name in tracker.stages:
            tracker.stages[name].prior_epochs = book.get(key, f"{name}_epochs") or (
                PRIOR_PROBE_EPOCHS if name == "probe" else None)
    if "finetune" in tracker.stages:
        # A training step costs a measured multiple of a forward pass (backward, update, augmentation):
        # the ratio at the run's batch size, measured by an earlier job on the backbone and device, times
        # this run's forward pass, so a machine slower today predicts slower steps. Replaced by the
        # stage's own batches once timed.
        train_s = train_ratio(book, key, work.batch_size) * fwd
        tracker.expect("finetune", batch_s=train_s * work.batch_images(), val_s=work.val * fwd)
        tracker.stages["finetune"].rate.first_ratio = book.get(key, "finetune_first_ratio") or PRIOR_FIRST_BATCH_RATIO
    # Calibration runs the final model on val and test: the head alone on cached val features when
    # the probe wins (test features still to extract), the whole model after fine-tuning.
    calibrate_images = work.test + (work.val if work.images_stages else 0)
    # It also fits the out-of-distribution scorer and may cross-fit the temperature: per image it
    # touches, as an earlier job of the same kind measured it, else the forward passes alone.
    per_image = book.get(key, calibrate_key(work))
    tracker.expect("calibrate", seconds=per_image * calibrate_touched(work) if per_image is not None
                   else calibrate_images * fwd + (work.test * decode if work.test else 0.0))
    if "export" in tracker.stages:  # a worker's job publishes too
        expect_publishing(tracker, work, book, key)


def expect_publishing(tracker: ProgressTracker, work: Workload, book: CostBook, key: str) -> None:
    """Export, the promotion gate's evaluation and registration: measured on this backbone before,
    or priors in forward passes. Both assume a forward pass (``tracker.speed_ref``: the book's, or this
    run's); the tracker scales them by the latest measured one (``ProgressTracker.speed``), so a machine
    that got busier since then expects a slower export."""
    then = book.get(key, "forward_s")
    ref = then or forward_s(tracker, book, key)
    tracker.speed_ref = ref
    held_out = work.test or work.val
    export, evaluate, register = (book.get(key, f"{name}_s") for name in ("export", "evaluate", "register"))
    # The export's steps: each as measured on the backbone before, else the total's prior split; the
    # steps that end in this run set the pace of the rest (trainer/progress/stage_cost.py).
    total = export if export is not None else EXPORT_PRIOR_S * speed_factor(ref, EXPORT_PRIOR_FORWARD_S)
    tracker.expect("export", steps=export_steps(book, key, total))
    # The gate scores the candidate (and the active version, when there is one) on the held-out photos
    # with onnxruntime (faster than the training framework's forward pass; half of it as a prior).
    tracker.expect("evaluate", seconds=held_out * (evaluate if evaluate is not None else 0.5 * ref))
    tracker.expect("register", seconds=register if register is not None else PRIOR_STAGE_S["register"])
    for name in ("export", "evaluate", "register"):
        tracker.stages[name].follows_speed = True


def export_steps(book: CostBook, key: str, total: float) -> list[tuple[str, float]]:
    """The export's steps at their measured cost; a step never measured on the backbone (bootstrap's
    export has no report or weights) at its prior share of what the measured ones imply; none
    measured: the prior split of ``total``."""
    measured = {name: book.get(key, f"export_{name}_s") for name, _ in EXPORT_STEPS}
    known = {name: s for name, s in measured.items() if s is not None}
    shares = sum(share for name, share in EXPORT_STEPS if name in known)
    if not known or shares <= 0:
        return [(name, share * total) for name, share in EXPORT_STEPS]
    implied = sum(known.values()) / shares
    return [(name, known.get(name, share * implied)) for name, share in EXPORT_STEPS]


def calibrate_key(work: Workload) -> str:
    return "calibrate_images_s" if work.images_stages else "calibrate_features_s"


def calibrate_touched(work: Workload) -> int:
    """Images the end of a run goes over: val, test and the scorer's bank of training photos."""
    return max(1, work.val + work.test + min(work.train, MAX_BANK))


def learn(tracker: ProgressTracker, work: Workload, book: CostBook, key: str) -> None:
    """Write this run's measured costs to the book, for the next job on the backbone."""
    yardstick = tracker.speed_now()
    if yardstick is not None:
        book.record(key, "forward_s", yardstick)
    if "features" in tracker.drift and tracker.yardstick_s:  # both timed before the run's first stage
        book.record(key, "feature_ratio", tracker.drift["features"][0] / tracker.yardstick_s)
    for name in ("probe", "finetune"):
        stage = tracker.stages.get(name)
        if stage is not None and stage.patience and stage.epochs_done:  # early stopping's, run to its end
            book.record(key, f"{name}_epochs", float(stage.epochs_done))
    probe = tracker.stages.get("probe")
    probe_s = probe.measured_unit_s() if probe is not None else None
    if probe_s is not None:  # a head step on cached features: mostly overhead
        book.record(key, "probe_batch_s", probe_s)
    ft = tracker.stages.get("finetune")
    train_s = ft.measured_unit_s() if ft is not None else None
    warmup = ft.rate.warmup_ratio() if ft is not None else None
    if warmup is not None:
        book.record(key, "finetune_first_ratio", min(5.0, max(1.0, warmup)))
    if train_s is not None and yardstick is not None:  # both measured in this run, under the same load
        book.record(key, train_ratio_key(work.batch_size), train_s / work.batch_images() / yardstick)
    calibrate = tracker.stages.get("calibrate")
    if calibrate is not None and calibrate.timed:
        book.record(key, calibrate_key(work), calibrate.seconds / calibrate_touched(work))
    learn_publishing(tracker, book, key, work.test or work.val)


def learn_publishing(tracker: ProgressTracker, book: CostBook, key: str, held_out: int) -> None:
    """Write what publishing cost (the export's steps, the gate per held-out image, registration) to
    the book: after a job, and after bootstrap, which exports the same backbone before any job runs
    (``held_out`` 0: no gate ran, nothing to learn of it)."""
    export = tracker.stages.get("export")
    if export is not None and export.timed:  # ended (not an attempt cut short)
        for name, seconds in export.steps_done.items():
            book.record(key, f"export_{name}_s", seconds)
    for name, per in (("export", 1), ("evaluate", held_out), ("register", 1)):
        cost = tracker.stages.get(name)
        # Ran in this attempt (not a resumed run's stored row) and ended: the last one, registration, is
        # still the current stage here (the tracker closes it at finish()).
        if cost is not None and cost.state != "pending" and cost.timed and per > 0:
            book.record(key, f"{name}_s", cost.seconds / per)
