"""Which variant and which decoder a loaded model gets: the pure rules, then the real CPU path.

The CUDA rows of the rules are only reachable on a GPU host; here they are checked as functions of the
provider list, and the real service is checked on the CPU provider (fp16 never served there, the GPU
decoder running on nvImageCodec's CPU backend when asked for)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from models import Registry
from models.manifest import Variant
from service.http.app import create_app
from service.inference.selection import CUDA, DecoderUnavailable, choose_decoder, choose_variant
from tests.service.conftest import wait_ready

CPU = "CPUExecutionProvider"
ON_CUDA = [CUDA, CPU]
ON_CPU = [CPU]
VALIDATED = Variant(file="model.fp16.onnx", sha256="x", top1_agreement=1.0, accuracy_delta=0.0)
UNCHECKED = Variant(file="model.fp16.onnx", sha256="x")
INT8 = Variant(file="model.int8.onnx", sha256="y", top1_agreement=0.995)


@pytest.mark.parametrize(
    ("setting", "variants", "providers", "expected"),
    [
        ("auto", {"fp16": VALIDATED}, ON_CUDA, "fp16"),  # the default on a GPU with a validated fp16
        ("auto", {"fp16": VALIDATED}, ON_CPU, "fp32"),  # no fast fp16 kernels on the CPU
        ("auto", {"fp16": UNCHECKED}, ON_CUDA, "fp32"),  # never gated: not served by default
        ("auto", {}, ON_CUDA, "fp32"),
        ("auto", {"int8": INT8}, ON_CPU, "int8"),  # the CPU default when int8 passed its gate
        ("auto", {"int8": INT8}, ON_CUDA, "fp32"),  # int8 is for the CPU
        ("auto", {"int8": UNCHECKED}, ON_CPU, "fp32"),  # never gated: not served by default
        ("fp32", {"fp16": VALIDATED}, ON_CUDA, "fp32"),  # an explicit choice wins
        ("fp16", {"fp16": UNCHECKED}, ON_CUDA, "fp16"),
        ("fp16", {"fp16": VALIDATED}, ON_CPU, "fp32"),
        ("fp16", {}, ON_CUDA, "fp32"),
        ("int8", {"int8": INT8}, ON_CPU, "int8"),
        ("int8", {}, ON_CPU, "fp32"),
        ("auto", {"fp16": VALIDATED}, [], "fp32"),
    ],
)
def test_choose_variant(setting: str, variants: dict[str, Variant], providers: list[str], expected: str) -> None:
    assert choose_variant(setting, variants, providers) == expected


def test_unknown_variant_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, fp32, fp16, int8"):
        choose_variant("bf16", {}, ON_CUDA)


@pytest.mark.parametrize(
    ("setting", "provider", "library", "expected"),
    [
        ("auto", CUDA, True, "gpu"),
        ("auto", CUDA, False, "pil"),
        ("auto", CPU, True, "pil"),  # the CPU backend is for tests and the rehearsal, not a default
        ("auto", CPU, False, "pil"),
        ("pil", CUDA, True, "pil"),
        ("gpu", CUDA, True, "gpu"),
        ("gpu", CPU, True, "gpu"),  # nvImageCodec's CPU backend, the graph on the CPU provider
    ],
)
def test_choose_decoder(setting: str, provider: str, library: bool, expected: str) -> None:
    assert choose_decoder(setting, provider, library) == expected


@pytest.mark.parametrize("provider", [CUDA, CPU])
def test_gpu_decoder_without_the_library_fails_naming_the_fix(provider: str) -> None:
    with pytest.raises(DecoderUnavailable) as err:
        choose_decoder("gpu", provider, False, "ModuleNotFoundError: No module named 'nvidia.nvimgcodec'")
    message = str(err.value)
    assert "No module named 'nvidia.nvimgcodec'" in message
    assert "tuneserve[gpu]" in message and "TUNESERVE_DECODER=pil" in message


def test_unknown_decoder_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, pil, gpu"):
        choose_decoder("dali", CUDA, True)
    with pytest.raises(ValueError, match="'auto', 'pil' or 'gpu'"):
        Settings(decoder="dali")  # type: ignore[arg-type]


def test_serve_refuses_to_start_when_gpu_decoder_cannot_run(tmp_path: Path) -> None:
    """A real ``tuneserve serve`` whose nvImageCodec import fails: exit code 2 and the fix, nothing started."""
    shadow = tmp_path / "shadow" / "nvidia" / "nvimgcodec"
    shadow.mkdir(parents=True)
    (shadow.parent / "__init__.py").write_text("")
    (shadow / "__init__.py").write_text("raise ImportError('libnvimgcodec.so.0: cannot open shared object file')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")}
    env.update(TUNESERVE_HOME=str(tmp_path / "home"), TUNESERVE_DECODER="gpu",
               PYTHONPATH=os.pathsep.join([str(tmp_path / "shadow"), str(Path(__file__).resolve().parents[3])]))
    proc = subprocess.run([sys.executable, "-m", "tuneserve.cli", "serve", "--no-worker", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "TUNESERVE_DECODER=gpu but nvImageCodec is not usable here" in proc.stderr
    assert "libnvimgcodec.so.0" in proc.stderr and "tuneserve[gpu]" in proc.stderr
    assert not (tmp_path / "home").exists()  # failed before creating anything (no Redis, no worker)


def add_fp16_version(home: Path) -> int:
    """Version 2 = version 1 plus its fp16 variant, built and gated the way jobs build it."""
    from trainer.publish.variants import build_variants

    registry = Registry(home / "models")
    v1 = registry.get("imagenet", 1)
    images = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    out = home / "fp16-build"
    out.mkdir()
    built = build_variants(v1.model_path, out, images, images, None, kinds=("fp16",))
    assert built["fp16"].top1_agreement is not None
    manifest = v1.manifest.model_copy(update={"variants": built})
    return registry.register(manifest, v1.model_path, extra_files={"model.fp16.onnx": out / "model.fp16.onnx"},
                             activate=True).version


def test_cpu_host_serves_fp32_of_a_version_with_fp16_and_says_so(home: Path, imagenet_samples: Path) -> None:
    version = add_fp16_version(home)
    with TestClient(create_app(Settings(home=home, device="cpu"))) as client:
        wait_ready(client)
        detail = client.get("/v1/models/imagenet").json()
        assert detail["serving_version"] == version
        assert detail["variant"] == "fp32" and detail["decoder"] == "pil"
        assert detail["provider"] == CPU
        assert "fp16" in next(v for v in detail["versions"] if v["version"] == version)["variants"]
        data = (imagenet_samples / "n02123045_tabby.JPEG").read_bytes()
        assert client.post("/v1/models/imagenet/predict", content=data,
                           headers={"content-type": "image/jpeg"}).status_code == 200
