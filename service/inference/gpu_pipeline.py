"""Decode, preprocess and infer a batch without touching host pixels: nvImageCodec + an ONNX graph.

For one loaded model version (``TUNESERVE_DECODER=gpu``, see ``service/inference/selection.py``):

1. nvImageCodec decodes the batch's JPEGs at once (nvJPEG, and the GPU's hardware JPEG engines where
   it has them) into device memory, EXIF orientation applied, grey expanded to RGB;
2. each decoded image runs through the preprocessing graph (``service/inference/preprocess_graph.py``: Pillow's
   resize, the center crop, normalisation) on the model's provider; its output is bound, by IO
   binding, straight into its row of one batch buffer on the device;
3. the model runs on that buffer (IO binding from the device pointer); only the logits (and the
   out-of-distribution score, when the model has one, from the same run) come back.

On a host without CUDA the same code runs with nvImageCodec's CPU backend, the CPU provider and
host buffers: that is how the test suite checks parity with the Pillow path. Payloads nvImageCodec
should not decode the way ``core.images`` does (PNG with transparency, 16-bit, CMYK, anything that
is not an 8-bit grey or colour JPEG) are decoded by ``core.images.open_rgb`` on the CPU and go
through the same graph from host memory. Every payload's header is checked first by
``core.images.open_image``, so size limits and error messages are the Pillow path's.
"""

from __future__ import annotations

import ctypes
import io
import logging
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from core.images import ImageError, check_size, open_image, open_rgb
from core.settings import Settings
from models.manifest import Preprocessing
from service.inference import preprocess_graph as graph
from service.inference.onnx_session import CPU, CUDA, OnnxEngine, provider_options, session_options
from service.inference.selection import choose_decoder

log = logging.getLogger(__name__)

NV_CODECS = ("jpeg",)  # decoded by nvImageCodec; other formats by Pillow (see the module doc)
NV_CHANNELS = (1, 3)


@lru_cache(maxsize=1)
def nvimgcodec() -> tuple[ModuleType | None, str]:
    """(the nvImageCodec module, "") or (None, why it cannot be imported)."""
    try:
        from nvidia import nvimgcodec as module
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native library
        return None, f"{type(exc).__name__}: {exc}"
    return module, ""


@lru_cache(maxsize=1)
def warm_up_jpeg() -> bytes:
    """A 500x375 photo-like JPEG (smooth gradient) that exercises the decoder and every resize step."""
    ramp = np.linspace(0, 255, 500, dtype=np.float32)
    rows = np.linspace(0, 1, 375, dtype=np.float32)[:, None]
    rgb = np.stack([ramp[None, :] * rows, ramp[None, :] * (1 - rows), np.full((375, 500), 128.0)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def require_decoder(setting: str) -> None:
    """At start: fail with the fix when TUNESERVE_DECODER=gpu and nvImageCodec cannot be imported."""
    if setting == "gpu":
        module, reason = nvimgcodec()
        choose_decoder(setting, CUDA, module is not None, reason)


def image_label(index: int, count: int) -> str:
    return f"image {index + 1} of {count}: " if count > 1 else ""


def _labelled(exc: ImageError, index: int, count: int) -> ImageError:
    return ImageError(exc.kind, image_label(index, count) + str(exc))


def _nv_stream(nv: ModuleType, data: bytes) -> Any:
    """The payload's nvImageCodec code stream if nvImageCodec should decode it, else None."""
    if not data:
        return None
    try:
        stream = nv.CodeStream(data)
        usable = stream.codec_name in NV_CODECS and stream.num_channels in NV_CHANNELS and stream.precision == 8
    except Exception:  # noqa: BLE001 - nvImageCodec cannot parse it: Pillow decides
        return None
    return stream if usable else None


def inspect(nv: ModuleType, payloads: list[bytes], max_pixels: int) -> list[Any]:
    """Check every payload's header before decoding; returns, per payload, its nvImageCodec code stream
    when nvImageCodec decodes it (8-bit grey or colour JPEG), else None (Pillow decodes it).

    JPEG headers are read by nvImageCodec (~3 us each, against ~60 us for Pillow's parser); anything
    else by ``core.images.open_image``. Raises the Pillow path's :class:`ImageError`, naming the image."""
    streams: list[Any] = []
    for i, data in enumerate(payloads):
        stream = _nv_stream(nv, data)
        try:
            if stream is not None:
                check_size(int(stream.width), int(stream.height), max_pixels)
                streams.append(stream)
            else:
                open_image(data, max_pixels)
                streams.append(None)
        except ImageError as exc:
            raise _labelled(exc, i, len(payloads)) from exc
    return streams


class _CudaSync:
    """cudaStreamSynchronize through the CUDA runtime onnxruntime already loaded (no torch, no cupy)."""

    def __init__(self) -> None:
        self._fn: Any = None
        for name in self._candidates():
            try:
                self._fn = ctypes.CDLL(name).cudaStreamSynchronize
                break
            except (OSError, AttributeError):
                continue
        if self._fn is None:
            raise OSError("the CUDA runtime (libcudart) is not loadable")
        self._fn.argtypes = [ctypes.c_void_p]

    @staticmethod
    def _candidates() -> list[str]:
        """By soname first (onnxruntime.preload_dlls loaded it already), then where pip wheels put it."""
        names = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
        for entry in map(Path, sys.path):
            for pattern in ("nvidia/cu13/lib/libcudart.so*", "nvidia/cuda_runtime/lib/libcudart.so*",
                            "torch/lib/libcudart*.so*"):
                names += [str(p) for p in sorted(entry.glob(pattern))]
        return names

    def __call__(self, stream: int) -> None:
        status = self._fn(ctypes.c_void_p(stream))
        if status != 0:
            raise RuntimeError(f"cudaStreamSynchronize failed with CUDA error {status}")


class GpuPipeline:
    """nvImageCodec -> preprocessing graph -> model, for one :class:`OnnxEngine` (its provider decides
    where everything runs). ``run`` is called by one thread at a time (a lock keeps it so)."""

    def __init__(self, engine: OnnxEngine, pre: Preprocessing, settings: Settings, max_batch: int) -> None:
        module, reason = nvimgcodec()
        if module is None:
            raise ImportError(reason)
        if not graph.supported(pre):
            raise ValueError(f"preprocessing {pre} is not covered by the GPU graph")
        if engine.input_type != np.float32:
            raise ValueError("the GPU pipeline feeds float32 inputs; this model takes float16")
        self.nv = module
        self.engine = engine
        self.pre = pre
        self.max_pixels = settings.max_image_pixels
        self.on_device = engine.provider == CUDA
        self.device = "cuda" if self.on_device else "cpu"
        providers = [CUDA, CPU] if self.on_device else [CPU]
        if self.on_device:
            self.decoder = module.Decoder()  # GPU backends first, the CPU backend as nvImageCodec's fallback
            self._sync: _CudaSync | None = _CudaSync()
        else:
            self.decoder = module.Decoder(device_id=module.NVIMGCODEC_DEVICE_CPU_ONLY,
                                          backends=[module.Backend(module.BackendKind.CPU_ONLY)])
            self._sync = None
        self.params = module.DecodeParams(apply_exif_orientation=True, color_spec=module.ColorSpec.SRGB,
                                          allow_any_depth=False, sample_format=module.SampleFormat.I_RGB)
        self.session = ort.InferenceSession(
            graph.build(pre), session_options(settings, providers[0]), providers=providers,
            provider_options=provider_options(providers),
        )
        self.capacity = max_batch
        shape = (max_batch, 3, pre.crop, pre.crop)
        self._batch: Any = None  # the device batch buffer (an OrtValue), on CUDA
        self._host_batch: np.ndarray | None = None  # the host one, on the CPU
        if self.on_device:
            self._batch = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            self._batch_ptr = int(self._batch.data_ptr())
        else:
            self._host_batch = np.zeros(shape, dtype=np.float32)
            self._batch_ptr = int(self._host_batch.ctypes.data)
        self._row_bytes = 3 * pre.crop * pre.crop * 4
        self._lock = threading.Lock()
        self.nv_decoded = 0  # images nvImageCodec decoded / Pillow decoded (for the tests and the bench)
        self.pil_decoded = 0
        self.last_decode_s = 0.0  # decode + preprocessing graph time of the last ``run`` (stage metrics)

    # ------------------------------------------------------------------ decode
    def check(self, payloads: list[bytes]) -> None:
        """Raises the Pillow path's ImageError for a payload that is not a usable image (header only)."""
        inspect(self.nv, payloads, self.max_pixels)

    def decode(self, payloads: list[bytes]) -> list[Any]:
        """One image per payload: an nvImageCodec image (device or host) or an HWC uint8 numpy array."""
        streams = inspect(self.nv, payloads, self.max_pixels)
        slots = [i for i, stream in enumerate(streams) if stream is not None]
        images: list[Any] = [None] * len(payloads)
        if slots:
            decoded = self.decoder.decode([streams[i] for i in slots], params=self.params)
            for i, img in zip(slots, decoded, strict=True):
                images[i] = img
            if self._sync is not None:  # decoding may still run on its stream: wait before reading
                for handle in {img.cuda_stream for img in decoded if img is not None}:
                    self._sync(int(handle or 0))
        for i, img in enumerate(images):
            if img is None:  # not for nvImageCodec, or it failed: Pillow's decode and Pillow's errors
                try:
                    images[i] = np.asarray(open_rgb(payloads[i], self.max_pixels))
                except ImageError as exc:
                    raise _labelled(exc, i, len(payloads)) from exc
                self.pil_decoded += 1
            else:
                self.nv_decoded += 1
        return images

    # ------------------------------------------------------------------ preprocess
    def _bind_image(self, binding: ort.IOBinding, img: Any) -> tuple[int, int]:
        """Bind one decoded image as the graph's input, where it lies; returns (height, width)."""
        if isinstance(img, np.ndarray):
            binding.bind_cpu_input(graph.IMAGE, np.ascontiguousarray(img))
            return int(img.shape[0]), int(img.shape[1])
        height, width = int(img.height), int(img.width)
        on_device = img.buffer_kind == self.nv.ImageBufferKind.STRIDED_DEVICE
        iface = img.__cuda_array_interface__ if on_device else img.__array_interface__
        strides = iface.get("strides")
        if strides is not None and tuple(strides) != (width * 3, 3, 1):
            # Padded rows: not one contiguous tensor. Copy to the host (rare; logged once per model).
            log.warning("nvImageCodec returned padded rows (strides %s); copying through the host", strides)
            binding.bind_cpu_input(graph.IMAGE, np.ascontiguousarray(np.asarray(img.cpu())))
            return height, width
        binding.bind_input(graph.IMAGE, "cuda" if on_device else "cpu", 0, np.uint8, [height, width, 3],
                           int(iface["data"][0]))
        return height, width

    def preprocess_into_batch(self, images: list[Any]) -> None:
        """Each image through the graph, its output written into its row of the batch buffer."""
        for row, img in enumerate(images):
            binding = self.session.io_binding()
            height, width = self._bind_image(binding, img)
            for name, value in graph.geometry(height, width, self.pre).items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(graph.OUTPUT, self.device, 0, np.float32, [1, 3, self.pre.crop, self.pre.crop],
                                self._batch_ptr + row * self._row_bytes)
            self.session.run_with_iobinding(binding)

    # ------------------------------------------------------------------ infer
    def infer_batch(self, rows: int) -> np.ndarray:
        """The engine's packed output rows (``OnnxEngine.infer``): logits, and the OOD score from the same run."""
        engine = self.engine
        binding = engine.session.io_binding()
        binding.bind_input(engine.input_name, self.device, 0, np.float32, [rows, 3, self.pre.crop, self.pre.crop],
                           self._batch_ptr)
        for name in engine.fetch:
            binding.bind_output(name, self.device)
        engine.session.run_with_iobinding(binding)
        return engine.pack(binding.copy_outputs_to_cpu())

    def run(self, payloads: list[bytes], padded: int | None = None) -> np.ndarray:
        """Output rows (``OnnxEngine.infer``) for up to ``capacity`` encoded images; ``padded``: run that many
        rows (a warmed batch shape), the rows past the real images holding whatever they held (dropped)."""
        if not payloads or len(payloads) > self.capacity:
            raise ValueError(f"a GPU batch holds 1 to {self.capacity} images, got {len(payloads)}")
        rows = max(padded or 0, len(payloads))
        with self._lock:
            started = time.perf_counter()
            self.preprocess_into_batch(self.decode(payloads))
            self.last_decode_s = time.perf_counter() - started
            return self.infer_batch(rows)[: len(payloads)]

    def preprocessed(self, payloads: list[bytes]) -> np.ndarray:
        """The model's input for ``payloads`` as a host array (for the parity checks)."""
        with self._lock:
            self.preprocess_into_batch(self.decode(payloads))
            if self._host_batch is not None:
                return np.array(self._host_batch[: len(payloads)])
            return np.asarray(self._batch.numpy()[: len(payloads)])

    def close(self) -> None:
        """Free the decoder, the graph's session and the batch buffer (the model's engine closes itself)."""
        with self._lock:
            self.decoder = None
            self.session = None
            self._batch = None
            self._host_batch = None

    def warm_up(self, sizes: tuple[int, ...], sample: bytes) -> None:
        """Every batch shape once (cuDNN's algorithm search runs at load, not on a request)."""
        for n in sizes:
            self.run([sample] * min(n, self.capacity), padded=n)
