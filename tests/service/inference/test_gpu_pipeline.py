"""The GPU decoder's code on the CPU: nvImageCodec's CPU backend, the preprocessing graph on onnxruntime's
CPU provider, IO binding into host buffers; compared with the Pillow path and the trainer's eval transform
through the real served model, on every committed photo.

On a CUDA host the same tests run the same code on the GPU (the pipeline follows the engine's provider);
the device's own parity figures come from ``bench/gpu/gpu_e2e.py``.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.gpu.decoder_parity import committed_photos, large_jpegs, parity
from core.images import ImageError, open_rgb
from core.settings import Settings
from models import Registry
from service.inference import preprocess_graph
from service.inference.gpu_pipeline import GpuPipeline
from service.inference.onnx_session import OnnxEngine
from service.inference.preprocess import preprocess

LIMIT = 40_000_000
BATCH = 32
# Observed on the 177 committed photos plus 4 large re-encoded JPEGs (max |p_gpu - p_ref| over all
# classes and photos): 0.0013 against the trainer's eval transform (the pipeline's pixels are at most
# 2 grey levels off Pillow's 8-bit fixed-point resize, at a few pixels) and 0.0064 against the Pillow
# service path, which decodes the large JPEGs in draft mode (DCT scaling) where training and the
# pipeline decode them whole. The bounds leave ~3x room for other onnxruntime/Pillow builds and still
# fail on a real mismatch: a wrong resize filter, crop offset or channel order moves probabilities by 0.1+.
log = logging.getLogger(__name__)

MAX_PROB_DIFF_TRAINER = 0.005
MAX_PROB_DIFF_SERVICE = 0.02
MIN_TOP1_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def engine_and_pre(bootstrapped_home: Path) -> tuple[OnnxEngine, Settings, object]:
    settings = Settings(home=bootstrapped_home, device="cpu")
    info = Registry(settings.models_dir).get("imagenet")
    return OnnxEngine(info.model_path, settings), settings, info.manifest.preprocessing


@pytest.fixture(scope="module")
def pipeline(engine_and_pre: tuple[OnnxEngine, Settings, object]) -> GpuPipeline:
    engine, settings, pre = engine_and_pre
    return GpuPipeline(engine, pre, settings, BATCH)  # type: ignore[arg-type]


@pytest.mark.slow  # 180 photos through three pipelines: over a minute on 2 cores (not in `make test-fast`)
def test_parity_with_pillow_path_and_training_transform(
    pipeline: GpuPipeline, engine_and_pre: tuple[OnnxEngine, Settings, object],
    imagenet_samples: Path, hymenoptera: Path,
) -> None:
    engine, _, _ = engine_and_pre
    payloads = committed_photos(imagenet_samples, hymenoptera) + large_jpegs(imagenet_samples)
    assert len(payloads) >= 180
    report = parity(pipeline, engine, payloads, BATCH)
    assert report["nv_decoded"] >= len(payloads) - 1  # the JPEGs went through nvImageCodec (the GIF did not)
    assert report["drafted_by_pillow_path"] == 4  # the large JPEGs
    for name, bound in (("vs_service", MAX_PROB_DIFF_SERVICE), ("vs_trainer", MAX_PROB_DIFF_TRAINER)):
        figures = report[name]
        log.info("gpu pipeline (CPU backend) %s: top-1 agreement %.4f on %d photos, max probability difference %.5f",
                 name, figures["top1_agreement"], report["photos"], figures["max_prob_diff"])
        assert figures["top1_agreement"] >= MIN_TOP1_AGREEMENT
        assert figures["max_prob_diff"] <= bound


def test_preprocessed_pixels_match_pillow(pipeline: GpuPipeline, imagenet_samples: Path) -> None:
    """Pixel level: the graph reproduces Pillow's two 8-bit passes (at most 2 grey levels off, rarely)."""
    payloads = [p.read_bytes() for p in sorted(imagenet_samples.glob("*.JPEG"))[:8]]
    ours = pipeline.preprocessed(payloads)
    pre = pipeline.pre
    theirs = np.stack([preprocess(d, pre, LIMIT) for d in payloads])
    assert ours.shape == theirs.shape == (8, 3, pre.crop, pre.crop)
    step = 1 / (255 * min(pre.std))
    assert float(np.abs(ours - theirs).max()) <= 2 * step + 1e-6
    assert float(np.abs(ours - theirs).mean()) < 0.01 * step


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def odd_images(photo: Image.Image) -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, "rotate 90 CW to display"
    transparent = photo.convert("RGBA")
    transparent.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, photo.width, dtype=np.uint8), (photo.height, 1))))
    return {
        "grey jpeg": encode(photo.convert("L"), "JPEG"),
        "exif-rotated jpeg": encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes()),
        "cmyk jpeg": encode(photo.convert("CMYK"), "JPEG"),
        "progressive jpeg": encode(photo, "JPEG", progressive=True),
        "png with transparency": encode(transparent, "PNG"),
        "16-bit grey png": encode(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG"),
        "palette png": encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    }


def test_odd_images_decode_like_core_images(pipeline: GpuPipeline, imagenet_samples: Path) -> None:
    """EXIF orientation, grey, CMYK, transparency, 16 bits: the same pixels as the Pillow path."""
    photo = open_rgb(imagenet_samples / "n02123045_tabby.JPEG", LIMIT)
    cases = odd_images(photo)
    ours = pipeline.preprocessed(list(cases.values()))
    step = 1 / (255 * min(pipeline.pre.std))
    for row, (name, data) in zip(ours, cases.items(), strict=True):
        theirs = preprocess(data, pipeline.pre, LIMIT)
        assert float(np.abs(row - theirs).max()) <= 2 * step + 1e-6, name


def test_bad_payloads_raise_the_pillow_paths_errors(pipeline: GpuPipeline, imagenet_samples: Path) -> None:
    good = (imagenet_samples / "n02123045_tabby.JPEG").read_bytes()
    cases = {"corrupt": good[: len(good) // 3], "unsupported": b"plain text, not a picture", "empty": b""}
    for kind, data in cases.items():
        with pytest.raises(ImageError) as err:
            pipeline.run([good, data])
        assert err.value.kind == kind and str(err.value).startswith("image 2 of 2: "), (kind, str(err.value))
    small = GpuPipeline(pipeline.engine, pipeline.pre, Settings(max_image_pixels=1000), 4)
    with pytest.raises(ImageError) as err:
        small.check([good])
    assert err.value.kind == "too_large" and "over the limit of 1,000" in str(err.value)


def test_graph_covers_crop_inside_resize_only() -> None:
    from models.manifest import Preprocessing

    assert preprocess_graph.supported(Preprocessing())
    assert not preprocess_graph.supported(Preprocessing(resize=200, crop=224))
    with pytest.raises(ValueError, match="crop larger than its resize"):
        preprocess_graph.build(Preprocessing(resize=200, crop=224))


def test_batch_capacity_is_enforced(pipeline: GpuPipeline, imagenet_samples: Path) -> None:
    data = (imagenet_samples / "n02123045_tabby.JPEG").read_bytes()
    with pytest.raises(ValueError, match="1 to 32 images"):
        pipeline.run([data] * 33)
    padded = pipeline.run([data], padded=4)  # rows past the real image run and are dropped
    logits, score = pipeline.engine.unpack(padded)  # the logits, then the model's ood_score, from one run
    assert logits.shape == (1, 1000) and score is not None and score.shape == (1,)
    np.testing.assert_allclose(padded, pipeline.run([data]), atol=1e-4)


@pytest.mark.parametrize(("in_flight", "waits"), [(1, False), (2, True)])
def test_a_lone_request_does_not_wait_for_companions(engine_and_pre: tuple[OnnxEngine, Settings, object],
                                                     imagenet_samples: Path, in_flight: int, waits: bool) -> None:
    """With batches of several images, a request waits up to max_delay_ms for others; not when it is the
    only one its process holds (nothing can join it)."""
    from service.inference.batch_sizes import BatchSettings
    from service.inference.gpu_batcher import GpuBatcher

    engine, settings, pre = engine_and_pre
    pipeline = GpuPipeline(engine, pre, settings, 8)  # type: ignore[arg-type]
    delay_ms = 2000.0
    batcher = GpuBatcher(engine, BatchSettings(max_batch_size=8, max_delay_ms=delay_ms, max_queue=64),
                         pipeline, in_flight=lambda: in_flight)
    try:
        data = (imagenet_samples / "n02123045_tabby.JPEG").read_bytes()
        started = time.monotonic()
        logits = batcher.submit_encoded_nowait([data], lambda _: np.zeros(1)).result(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        batcher.stop()  # closes its pipeline too
    assert pipeline.session is None
    assert engine.unpack(logits)[0].shape == (1, 1000)
    assert (elapsed >= delay_ms / 1000) == waits, elapsed
