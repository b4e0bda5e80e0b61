"""What a loaded model runs with: which ONNX variant and which image decoder. Pure functions of the
settings, the version's manifest and the provider list, so they are tested without a GPU.

* variant (``TUNESERVE_VARIANT``): ``auto`` (default) serves fp16 on the CUDA provider and int8 on
  the CPU provider when the version has that variant and it passed its accuracy gate (built and gated
  by ``trainer/publish/variants.py``, which records its top-1 agreement with fp32 on val and test photos in
  the manifest) and, for int8, when it runs faster than fp32 on this CPU (timed at load), fp32
  otherwise, with the reason (``GET /v1/models/{name}`` shows it). An explicit
  ``fp16``/``int8`` is served when the version has it; fp16 never on the CPU provider, which has no
  fast fp16 kernels (onnxruntime wraps every operator in casts there).
* decoder (``TUNESERVE_DECODER``): ``pil`` decodes on the CPU with Pillow (``service/inference/preprocess.py``);
  ``gpu`` decodes with nvImageCodec and preprocesses with the ONNX graph on the model's provider
  (``service/inference/gpu_pipeline.py``; on a host without CUDA, nvImageCodec's CPU backend runs the same code,
  which is how the tests check it); ``auto`` (default) is ``gpu`` when the CUDA provider serves and
  nvImageCodec is installed (the ``gpu`` extra), ``pil`` otherwise.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.manifest import Variant
from service.inference.onnx_session import CPU

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
VARIANTS = ("auto", "fp32", "fp16", "int8")
DECODERS = ("auto", "pil", "gpu")
INSTALL_HINT = "pip install 'tuneserve[gpu]' (nvidia-nvimgcodec-cu13 and nvidia-nvjpeg)"


class DecoderUnavailable(RuntimeError):
    """TUNESERVE_DECODER=gpu on a host where nvImageCodec cannot run."""


def choose_variant(setting: str, variants: Mapping[str, Variant], providers: Sequence[str]) -> str:
    """The variant to serve; ``providers`` is the session's provider list, most preferred first."""
    return variant_and_reason(setting, variants, providers)[0]


def variant_and_reason(setting: str, variants: Mapping[str, Variant], providers: Sequence[str],
                       int8_speedup: Callable[[], float] | None = None,
                       min_speedup: float = 0.0) -> tuple[str, str]:
    """(variant to serve, why): the why names the gate the variant passed, or why fp32 is served.

    ``int8_speedup`` times int8 against fp32 on this machine (service/inference/selection.py); with
    ``min_speedup`` > 0, ``auto`` on the CPU keeps a gated int8 variant only when it measured that fast."""
    if setting not in VARIANTS:
        raise ValueError(f"unknown variant {setting!r}; choose one of {', '.join(VARIANTS)}")
    on_cuda = bool(providers) and providers[0] == CUDA
    if setting == "auto":
        kind = "fp16" if on_cuda else "int8"
        where = "CUDA" if on_cuda else "CPU"
        built = variants.get(kind)
        if built is None:
            return "fp32", (f"auto on {where}: the version has no {kind} variant (not built, or it failed its "
                            "accuracy gate when it was built: TUNESERVE_BUILD_VARIANTS)")
        if built.top1_agreement is None:
            return "fp32", f"auto on {where}: the version's {kind} variant has no recorded accuracy gate"
        splits = (built.gate or {}).get("splits") or {"val": {"top1_agreement": built.top1_agreement}}
        checked = ", ".join(f"{name} {s.get('top1_agreement', 0.0):.4f}" for name, s in splits.items())
        passed = f"auto on {where}: {kind} passed its gate (top-1 agreement with fp32: {checked})"
        if kind == "int8" and min_speedup > 0 and int8_speedup is not None:
            ratio = int8_speedup()
            if ratio < min_speedup:
                return "fp32", (f"{passed} but ran at {ratio:.2f}x fp32's speed on this CPU (one thread, batch 1; "
                                f"TUNESERVE_INT8_MIN_SPEEDUP={min_speedup:g}): fp32")
            return kind, f"{passed} and ran at {ratio:.2f}x fp32's speed on this CPU"
        return kind, passed
    if setting == "fp16" and not on_cuda:
        return "fp32", "TUNESERVE_VARIANT=fp16 but not on CUDA (no fast fp16 kernels on CPU)"
    if setting in variants or setting == "fp32":
        return setting, f"TUNESERVE_VARIANT={setting}"
    return "fp32", f"TUNESERVE_VARIANT={setting} but the version has no {setting} variant"


def choose_decoder(setting: str, provider: str, library: bool, reason: str = "") -> str:
    """``pil`` or ``gpu``. ``library``: nvImageCodec imports here (``reason`` says why not).

    Raises :class:`DecoderUnavailable` when ``gpu`` is asked for and cannot run, naming the fix."""
    if setting not in DECODERS:
        raise ValueError(f"unknown decoder {setting!r}; choose one of {', '.join(DECODERS)}")
    if setting == "pil":
        return "pil"
    if setting == "gpu":
        if not library:
            raise DecoderUnavailable(
                f"TUNESERVE_DECODER=gpu but nvImageCodec is not usable here ({reason or 'not installed'}): "
                f"{INSTALL_HINT}, or set TUNESERVE_DECODER=pil (or auto)"
            )
        return "gpu"
    return "gpu" if provider == CUDA and library else "pil"


# Does the int8 variant run faster than fp32 on *this* CPU? Timed once per pair of files, as a version loads.
# The gate says the int8 file answers like fp32, nothing about speed on the machine that serves it, which
# need not be the one that built it: onnxruntime's int8 convolutions run about 2x fp32 where the CPU has
# VNNI (AVX512-VNNI, AVX-VNNI) and 0.9x on an AVX2-only AMD EPYC of family 23 (docs/benchmarks.md, "int8 on
# a CPU without VNNI"). Both files run on one thread (what a lane runs), batch 1, interleaved so both see
# the same moments of a shared machine; the medians are compared.

RUNS = 5  # interleaved timed runs per file, after one warm-up run each
_cache: dict[tuple[str, int, int, str, int, int], float] = {}
_lock = threading.Lock()


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=[CPU])


def _key(fp32: Path, int8: Path) -> tuple[str, int, int, str, int, int]:
    a, b = fp32.stat(), int8.stat()
    return str(fp32), a.st_size, a.st_mtime_ns, str(int8), b.st_size, b.st_mtime_ns


def int8_speedup(fp32: Path, int8: Path, size: int) -> float:
    """fp32's median time over int8's (> 1: int8 is faster here), for a ``size`` x ``size`` photo.

    Cached per pair of files for the process's life: a version unloaded and loaded again is not timed
    again (versions never change their files)."""
    key = _key(fp32, int8)
    with _lock:
        if key in _cache:
            return _cache[key]
    sessions = [_session(fp32), _session(int8)]
    image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    feeds = [{s.get_inputs()[0].name: image} for s in sessions]
    times: list[list[float]] = [[], []]
    for k in range(RUNS + 1):
        for i, (sess, feed) in enumerate(zip(sessions, feeds, strict=True)):
            started = time.perf_counter()
            sess.run(None, feed)
            if k:  # the first run of each is its warm-up
                times[i].append(time.perf_counter() - started)
    ratio = statistics.median(times[0]) / statistics.median(times[1])
    log.info("int8 against fp32 on this CPU: %.2fx (%s)", ratio, int8.name)
    with _lock:
        _cache[key] = ratio
    return ratio
