"""onnxruntime sessions: provider choice per device, thread settings, IO binding, softmax with temperature.

Why the sessions are set up this way (the measurements are in docs/benchmarks.md, "## onnxruntime
session settings"):

* graph optimisation level ALL on every provider;
* CPU: ``intra_op_num_threads`` = the cores. Spinning intra-op workers (onnxruntime's default) would
  burn the cores the decode pool needs between batches, so they sleep, unless lanes are on: then
  the all-cores session only ever runs a batch that is alone, nothing waits to be decoded, and
  spinning between operators lowers a lone request's latency. The workers stop spinning as soon as
  a run returns (``session.force_spinning_stop``): left spinning, they keep a core busy while the
  next request is read and decoded, which lengthens the tail at one client;
* CPU lanes: a second session with one intra-op thread, which the batcher runs from several
  threads at once when more than one batch is waiting. Small per-image convolutions scale poorly
  across cores (every operator forks and joins, and a thread preempted by decoding stalls the join);
  whole batches side by side on one thread each keep every core busy without that synchronisation.
  A request that arrives alone still runs on the all-cores session, for the lowest latency;
* CUDA: one CPU thread is enough (the GPU does the work); inputs are bound with IO binding and
  outputs stay on the device until the single copy back, which is much faster than plain numpy in
  and out.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# The out-of-distribution score an export may carry beside its logits ([batch] float32, higher = less like
# the training photos; the contract is in docs/architecture.md, "Predicting").
OOD_OUTPUT = "ood_score"


NVIDIA_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def gpu_present() -> bool:
    """A CUDA driver is loaded (checked without importing torch or touching CUDA).

    Any of the driver's markers counts: some VMs (Firecracker) expose the device nodes but not
    /proc/driver/nvidia.
    """
    return any(Path(marker).exists() for marker in NVIDIA_MARKERS)


def choose_providers(device: str) -> list[str]:
    if device == "cpu" or CUDA not in ort.get_available_providers() or not gpu_present():
        return [CPU]
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # finds the CUDA/cuDNN libraries pip installed beside torch
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - a missing library only means CPU fallback
            log.warning("onnxruntime.preload_dlls failed: %s", exc)
    return [CUDA, CPU]


def cpu_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def intra_op_threads(settings: Settings, provider: str) -> int:
    if settings.intra_op_threads > 0:
        return settings.intra_op_threads
    return 1 if provider == CUDA else cpu_cores()


def cpu_lanes(settings: Settings, provider: str) -> int:
    """How many batches may run at once (each on one thread); 1 on CUDA, whose work the GPU serialises.

    By default one lane more than the cores (where there are several): a lane that waits for the GIL,
    or for its next request between answers, leaves its core idle, and the extra lane takes it. On a
    2-core EPYC at c=8, three lanes against two: int8 175 against 151-162 images/s, fp32 119-120 against
    113-115; the server used 1.84-1.88 cores instead of 1.69-1.78 (docs/benchmarks.md, "int8 on CPU by
    default, end to end"). A request that arrives alone still runs on the all-cores session."""
    if provider != CPU:
        return 1
    if settings.cpu_lanes:
        return max(1, settings.cpu_lanes)
    cores = cpu_cores()
    return cores + 1 if cores > 1 else 1


def session_options(settings: Settings, provider: str = CPU, threads: int | None = None,
                    spin: bool = False) -> ort.SessionOptions:
    """``spin``: intra-op workers busy-wait between operators during a run, and stop when it returns
    (only for a session that runs alone)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or intra_op_threads(settings, provider)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def provider_options(providers: list[str]) -> list[dict[str, str]]:
    options = []
    for provider in providers:
        if provider == CUDA:
            # Exhaustive search pays once at warm-up; the shapes repeat (batch sizes are bounded).
            options.append({"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"})
        else:
            options.append({})
    return options


class OnnxEngine:
    """onnxruntime sessions for one model file.

    ``run`` uses the main session (all of ``intra_op_threads``); it is called from one thread at a
    time. ``run(..., lane=True)`` uses the one-thread lane session, which ``lanes`` threads may call
    at once (onnxruntime's ``Run`` is thread-safe); it exists on the CPU only, when ``lanes`` > 1.
    """

    def __init__(self, model_file: Path, settings: Settings) -> None:
        providers = choose_providers(settings.device)
        # With lanes the all-cores session only runs lone batches: let its workers spin (see above).
        spin = providers[0] == CPU and cpu_lanes(settings, CPU) > 1 and intra_op_threads(settings, CPU) > 1
        self.session = ort.InferenceSession(
            str(model_file), session_options(settings, providers[0], spin=spin),
            providers=providers, provider_options=provider_options(providers),
        )
        self.provider: str = self.session.get_providers()[0]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.output_name = self.session.get_outputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ood_output = OOD_OUTPUT if OOD_OUTPUT in self.output_names else None
        # What a run fetches: the logits, and the score from the same run when the model has one.
        self.fetch = [self.output_name] + ([OOD_OUTPUT] if self.ood_output else [])
        self.input_type = np.float16 if "float16" in inp.type else np.float32
        self._binding = self.session.io_binding() if self.provider == CUDA else None
        self.lanes = cpu_lanes(settings, self.provider)
        self.lane_session: ort.InferenceSession | None = None
        if self.lanes > 1:  # a one-thread main session can serve the lanes itself
            self.lane_session = self.session if intra_op_threads(settings, CPU) == 1 else ort.InferenceSession(
                str(model_file), session_options(settings, CPU, threads=1), providers=[CPU]
            )

    def run(self, batch: np.ndarray, lane: bool = False) -> np.ndarray:
        """Logits (float32) for a (N, 3, H, W) batch; ``lane``: on the one-thread lane session."""
        return self.unpack(self.infer(batch, lane))[0]

    def infer(self, batch: np.ndarray, lane: bool = False) -> np.ndarray:
        """Every output a prediction needs, packed as one (N, classes [+ 1]) float32 array: the logits, then
        the out-of-distribution score as the last column when the model has one (:meth:`unpack` splits it).
        One array per batch keeps the batcher's slicing and hand-back one copy, whatever the model answers."""
        feed = batch if batch.dtype == self.input_type else batch.astype(self.input_type)
        if self._binding is not None:
            return self._run_bound(np.ascontiguousarray(feed))
        session = self.lane_session if lane and self.lane_session is not None else self.session
        return self.pack(session.run(self.fetch, {self.input_name: feed}))

    def pack(self, outputs: list[np.ndarray]) -> np.ndarray:
        """``fetch``'s outputs of one run as :meth:`infer` returns them."""
        logits = np.asarray(outputs[0], dtype=np.float32)
        if self.ood_output is None:
            return logits
        return np.concatenate([logits, np.asarray(outputs[1], dtype=np.float32).reshape(-1, 1)], axis=1)

    def unpack(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, ood scores or None) from :meth:`infer`'s rows."""
        if self.ood_output is None:
            return rows, None
        return rows[:, :-1], rows[:, -1]

    def run_outputs(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """Named outputs (float32) for a batch, off the batcher (explanations): any thread may call it."""
        feed = batch if batch.dtype == self.input_type else batch.astype(self.input_type)
        session = self.lane_session if self.lane_session is not None else self.session
        return [np.asarray(out, dtype=np.float32) for out in session.run(outputs, {self.input_name: feed})]

    def _run_bound(self, feed: np.ndarray) -> np.ndarray:
        """CUDA: one host-to-device copy in, the outputs stay on the device until one copy out."""
        binding = self._binding
        assert binding is not None
        binding.bind_cpu_input(self.input_name, feed)
        for name in self.fetch:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        return self.pack(outputs)

    def warm_up(self, crop: int, batch_sizes: tuple[int, ...] = (1,)) -> None:
        for n in batch_sizes:
            batch = np.zeros((n, 3, crop, crop), dtype=np.float32)
            self.run(batch)
            if self.lane_session is not None and self.lane_session is not self.session:
                self.run(batch, lane=True)

    def close(self) -> None:
        del self.session
        self.lane_session = None
        self._binding = None
        release_freed_memory()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / np.float32(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


def top_k(probs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    k = min(k, probs.shape[1])
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows = []
    for row, cand in zip(probs, idx, strict=True):
        order = cand[np.argsort(-row[cand], kind="stable")]
        rows.append([(int(i), float(row[i])) for i in order])
    return rows


def release_freed_memory() -> None:
    """Hand freed heap back to the OS; glibc keeps it otherwise and RSS grows with every swap."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
