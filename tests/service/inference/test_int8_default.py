"""int8 is the CPU default when the version's int8 variant passed its gate on val and test photos, and the
model's description says which variant serves and why; without one, fp32 with its reason."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from core.settings import Settings
from models import Registry
from models.manifest import Variant
from service.http.app import create_app
from service.inference import selection
from service.inference.selection import int8_speedup, variant_and_reason
from tests.photos import fp32_decided
from tests.service.conftest import wait_ready

TABBY = "n02123045_tabby.JPEG"


def test_auto_on_cpu_serves_a_gated_int8_and_says_why(settings: Settings, imagenet_samples: Path,
                                                      hymenoptera: Path, tmp_path: Path) -> None:
    from service.inference.preprocess import preprocess
    from trainer.publish.int8_recipe import has_int8_dot
    from trainer.publish.variants import GATE_RULE, build_variants

    registry = Registry(settings.models_dir)
    info = registry.get("imagenet", 1)
    pre = info.manifest.preprocessing

    def batch(files: list[Path]) -> np.ndarray:
        return np.stack([preprocess(f.read_bytes(), pre, 10**8) for f in files])

    samples = sorted(imagenet_samples.glob("*.JPEG"))
    images = batch(samples)[fp32_decided(info.model_path, batch(samples))]  # tests/photos.py says why
    calib = batch(sorted(hymenoptera.rglob("*.jpg"))[:16])
    out = tmp_path / "variants"
    out.mkdir()
    built = build_variants(info.model_path, out, calib, images[:12], None, kinds=("int8",),
                           test=(images[12:24], None))
    gate = built["int8"].gate
    assert gate is not None and gate["rule"] == GATE_RULE  # the manifest states the gate it passed
    assert set(gate["splits"]) == {"val", "test"} and gate["splits"]["test"]["images"] == 12
    assert built["int8"].top1_agreement == min(s["top1_agreement"] for s in gate["splits"].values()) >= 0.99
    extra = {**{v.file: out / v.file for v in built.values()}, **{f: info.path / f for f in info.manifest.files}}
    v2 = registry.register(info.manifest.model_copy(update={"variants": built}), info.model_path,
                           extra_files=extra, activate=True).version

    # variant: auto. Whether int8 is faster than fp32 depends on the CPU (service/inference/selection.py):
    # a speed-up floor any timing passes makes this test's answer the same on every machine, timing included.
    with TestClient(create_app(Settings(home=settings.home, device="cpu", int8_min_speedup=0.001))) as client:
        wait_ready(client)
        view = client.get("/v1/models/imagenet").json()
        assert view["serving_version"] == v2 and view["variant"] == "int8"
        assert "int8 passed its gate" in view["variant_reason"] and "test" in view["variant_reason"]
        assert re.search(r"ran at \d+\.\d\dx fp32's speed on this CPU", view["variant_reason"])
        stored = client.get(f"/v1/models/imagenet/versions/{v2}/files/manifest.json").json()
        assert stored["variants"]["int8"]["gate"]["splits"]["val"]["images"] == 12
        recipe = stored["variants"]["int8"]["recipe"]  # and how the file was made (trainer/publish/int8_recipe.py)
        assert recipe["bias_correction"] is True and recipe["calibration_images"] == 16
        # 7-bit weights where the building CPU has no VNNI (8-bit ones saturate there), 8-bit where it has
        assert recipe["reduce_range"] is (not has_int8_dot())
        assert recipe["fp32_nodes"] and recipe["format"] == "QDQ"
        photo = (imagenet_samples / TABBY).read_bytes()
        answer = client.post("/v1/models/imagenet/predict?top_k=1", content=photo,
                             headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200 and answer.json()["version"] == v2
        int8_top1 = answer.json()["results"][0]["predictions"][0]["label"]

        registry.activate("imagenet", 1)  # version 1 has no int8 variant: fp32, and the reason
        client.post("/v1/models/imagenet/versions/1/activate")
        view = client.get("/v1/models/imagenet").json()
        assert view["serving_version"] == 1 and view["variant"] == "fp32"
        assert "no int8 variant" in view["variant_reason"]
        fp32 = client.post("/v1/models/imagenet/predict?top_k=3", content=photo, headers={"content-type": "image/jpeg"})
        assert int8_top1 in [p["label"] for p in fp32.json()["results"][0]["predictions"]]  # same answer, near

    # A CPU where int8 is not fast enough (a floor no timing reaches): fp32, and the measured ratio says why.
    registry.activate("imagenet", v2)
    with TestClient(create_app(Settings(home=settings.home, device="cpu", int8_min_speedup=1000))) as client:
        wait_ready(client)
        view = client.get("/v1/models/imagenet").json()
        assert view["serving_version"] == v2 and view["variant"] == "fp32"
        assert re.search(r"int8 passed its gate .* but ran at \d+\.\d\dx fp32's speed on this CPU .*"
                         r"TUNESERVE_INT8_MIN_SPEEDUP=1000\): fp32", view["variant_reason"])
        ratio = float(re.findall(r"ran at (\d+\.\d\d)x", view["variant_reason"])[0])
        assert 0.1 < ratio < 10  # a real ratio of two real sessions' times


def tiny_model(path: Path, size: int) -> Path:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    pooled = helper.make_node("ReduceMean", ["y"], ["out"], axes=[2, 3], keepdims=0)
    weights = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([conv, pooled], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                              [1, 3, size, size])], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
                              [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_int8_speed_is_timed_once_per_pair_of_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fp32, other = tiny_model(tmp_path / "a.onnx", 32), tiny_model(tmp_path / "b.onnx", 32)
    ratio = int8_speedup(fp32, other, 32)
    assert 0.1 < ratio < 10  # the same graph twice: about 1, timed on real sessions

    def no_session(path: Path) -> object:
        raise AssertionError(f"timed again: {path}")

    monkeypatch.setattr(selection, "_session", no_session)
    assert int8_speedup(fp32, other, 32) == ratio  # a version loaded again is not timed again
    tiny_model(other, 32)  # a different file at the same path (new mtime): timed again
    os.utime(other, ns=(other.stat().st_atime_ns, other.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="timed again"):
        int8_speedup(fp32, other, 32)


def test_int8_speed_is_asked_only_when_auto_would_serve_a_gated_int8() -> None:
    gated = {"int8": Variant(file="model.int8.onnx", sha256="0" * 64, top1_agreement=0.995)}
    asked: list[int] = []

    def timed(ratio: float) -> Callable[[], float]:
        def speedup() -> float:
            asked.append(1)
            return ratio
        return speedup

    cpu = ["CPUExecutionProvider"]
    assert variant_and_reason("auto", gated, cpu, timed(1.98), min_speedup=1.1)[0] == "int8"
    slow, why = variant_and_reason("auto", gated, cpu, timed(0.91), min_speedup=1.1)
    assert slow == "fp32" and "0.91x" in why and "TUNESERVE_INT8_MIN_SPEEDUP=1.1" in why
    assert len(asked) == 2
    assert variant_and_reason("auto", gated, cpu, timed(0.5), min_speedup=0)[0] == "int8"  # 0: not timed
    assert variant_and_reason("int8", gated, cpu, timed(0.5), min_speedup=1.1)[0] == "int8"  # asked for by name
    assert variant_and_reason("auto", {}, cpu, timed(2.0), min_speedup=1.1)[0] == "fp32"  # nothing to time
    assert len(asked) == 2


def test_reasons_name_the_setting_when_it_decides() -> None:
    assert variant_and_reason("fp32", {}, ["CPUExecutionProvider"]) == ("fp32", "TUNESERVE_VARIANT=fp32")
    variant, why = variant_and_reason("int8", {}, ["CPUExecutionProvider"])
    assert variant == "fp32" and "no int8 variant" in why
