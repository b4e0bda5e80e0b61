""""None of these" over HTTP: the ood_score output read from the same session run, the unknown decision at the
version's threshold or the request's, the confidence floor; plus the per-request decode budget and the fair
decode pool. A real (tiny) ONNX model built here with onnx's helper API, a real registry, real PNGs."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from core.settings import Settings
from models import Registry
from models.manifest import Manifest, Preprocessing
from service.http.app import create_app
from service.inference.decoding import FairDecoder
from service.inference.gpu_pipeline import GpuPipeline
from service.inference.onnx_session import OnnxEngine
from service.inference.predictor import PredictOptions
from service.inference.preprocess import preprocess
from tests.service.conftest import wait_ready

LABELS = ["red", "green", "blue"]
OOD = {"method": "test-mean-distance", "threshold": 0.5, "target_recall": 0.95, "val_recall": 0.96}


def tiny_model(path: Path, with_ood: bool) -> Path:
    """logits = 10 x the mean of each normalised channel (MatMul); ood_score = |mean of every pixel|:
    a grey photo scores 0, a pure red one 1/3, a black or white one 1."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["channels"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["channels", "weight"], ["logits"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])]
    if with_ood:
        nodes += [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
                  helper.make_node("Abs", ["mean"], ["ood_score"])]
        outputs.append(helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, ["N"]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])], outputs,
        initializer=[numpy_helper.from_array(np.eye(3, dtype=np.float32) * 10, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def register(home: Path, name: str, with_ood: bool, **extra: Any) -> int:
    manifest = Manifest(name=name, labels=LABELS, backbone="tiny",
                        preprocessing=Preprocessing(input_size=8, resize=8, crop=8), **extra)
    model = tiny_model(home / f"{name}-{with_ood}.onnx", with_ood)
    return Registry(Settings(home=home).models_dir).register(manifest, model, activate=True).version


def png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(out, "PNG")
    return out.getvalue()


GREY, RED, BLACK = png((128, 128, 128)), png((255, 0, 0)), png((0, 0, 0))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    home = tmp_path / "home"
    home.mkdir()
    register(home, "scored", True, ood=OOD, selective={"risk_coverage": [[1.0, 0.9, 0.0]], "target_accuracy": None,
                                                        "min_confidence": None})
    register(home, "floored", True, ood=OOD, selective={"risk_coverage": [], "target_accuracy": 0.99,
                                                         "min_confidence": 0.9})
    register(home, "old", False)  # exported before the score existed: no output, no manifest keys
    settings = Settings(home=home, refresh_interval_s=0.2, device="cpu", max_request_pixels=1000)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def predict(client: TestClient, model: str, *photos: bytes, query: str = "") -> list[dict[str, Any]]:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    resp = client.post(f"/v1/models/{model}/predict{query}", files=files)
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    return results


def test_the_score_comes_from_the_same_run_and_unknown_flips_with_the_threshold(client: TestClient) -> None:
    engine: OnnxEngine = client.app.state.manager.loaded()["scored"].engine  # type: ignore[attr-defined]
    assert engine.fetch == ["logits", "ood_score"]  # one session run fetches both
    grey, red, black = predict(client, "scored", GREY, RED, BLACK)
    assert grey["ood_score"] == pytest.approx(0.0039, abs=1e-3) and red["ood_score"] == pytest.approx(1 / 3, abs=1e-3)
    assert black["ood_score"] == pytest.approx(1.0, abs=1e-3)
    assert [r["unknown"] for r in (grey, red, black)] == [False, False, True]  # the version's threshold: 0.5
    assert black["unknown_reason"] == "ood" and grey["unknown_reason"] is None
    assert red["predictions"][0]["label"] == "red" and len(black["predictions"]) == 3  # unknown still lists them
    lenient = predict(client, "scored", GREY, RED, BLACK, query="?ood_threshold=1.5")
    assert [r["unknown"] for r in lenient] == [False, False, False]
    strict = predict(client, "scored", GREY, RED, BLACK, query="?ood_threshold=0.2")
    assert [r["unknown_reason"] for r in strict] == [None, "ood", "ood"]


def test_min_confidence_from_the_request_and_from_the_version(client: TestClient) -> None:
    grey, red = predict(client, "scored", GREY, RED)  # grey: 1/3 each; red: ~1.0 for "red"
    assert not grey["unknown"] and not red["unknown"]  # this version has no floor
    grey, red = predict(client, "scored", GREY, RED, query="?min_confidence=0.5")
    assert grey["unknown_reason"] == "low_confidence" and red["unknown"] is False
    assert grey["predictions"][0]["probability"] == pytest.approx(1 / 3, abs=1e-3)
    (floored,) = predict(client, "floored", GREY)  # the manifest's selective.min_confidence: 0.9
    assert floored["unknown_reason"] == "low_confidence"
    (waived,) = predict(client, "floored", GREY, query="?min_confidence=0")
    assert waived["unknown"] is False
    (both,) = predict(client, "floored", BLACK)  # out of distribution and unsure: "ood" is the reason given
    assert both["unknown_reason"] == "ood"


def test_a_model_without_the_score_answers_null_and_only_the_floor_applies(client: TestClient) -> None:
    grey, red = predict(client, "old", GREY, RED, query="?ood_threshold=-5")
    assert grey["ood_score"] is None and red["ood_score"] is None
    assert not grey["unknown"] and not red["unknown"]
    grey, red = predict(client, "old", GREY, RED, query="?min_confidence=0.5")
    assert grey["unknown_reason"] == "low_confidence" and not red["unknown"]


@pytest.mark.parametrize("query, named", [
    ("?min_confidence=1.5", "min_confidence"), ("?min_confidence=-0.1", "min_confidence"),
    ("?ood_threshold=nan", "ood_threshold"), ("?ood_threshold=inf", "ood_threshold"),
    ("?ood_threshold=high", "ood_threshold"),
])
def test_bad_thresholds_get_a_422_naming_them(client: TestClient, query: str, named: str) -> None:
    resp = client.post(f"/v1/models/scored/predict{query}", content=GREY, headers={"content-type": "image/png"})
    assert resp.status_code == 422 and named in resp.json()["detail"], resp.text


def test_the_model_description_shows_the_scorer_and_the_curve(client: TestClient) -> None:
    version = client.get("/v1/models/floored").json()["versions"][0]
    assert version["ood"] == OOD
    assert version["selective"] == {"risk_coverage": [], "target_accuracy": 0.99, "min_confidence": 0.9}
    old = client.get("/v1/models/old").json()["versions"][0]
    assert old["ood"] is None and old["selective"] is None


def test_stage_histograms_count_each_request(client: TestClient) -> None:
    def counts() -> dict[str, float]:
        text = client.get("/metrics").text
        found = {}
        for stage in ("preprocess", "infer", "postprocess"):
            line = next((ln for ln in text.splitlines() if ln.startswith("tuneserve_predict_stage_seconds_count")
                         and f'stage="{stage}"' in ln and 'model="scored"' in ln), None)
            found[stage] = float(line.rsplit(" ", 1)[1]) if line else 0.0
        return found

    before = counts()
    predict(client, "scored", GREY, RED)
    client.post("/v1/models/scored/predict", content=GREY, headers={"content-type": "image/png"})
    after = counts()
    assert {stage: after[stage] - before[stage] for stage in after} == {
        "preprocess": 2, "infer": 2, "postprocess": 2}


def test_a_request_over_the_decode_budget_is_refused_naming_the_setting(client: TestClient) -> None:
    # 16x16 photos: 256 pixels each; the budget of this service is 1000 per request.
    assert len(predict(client, "scored", GREY, RED, BLACK)) == 3
    files = [("file", (f"{i}.png", GREY, "image/png")) for i in range(4)]
    resp = client.post("/v1/models/scored/predict", files=files)
    assert resp.status_code == 413
    assert "1,024 pixels" in resp.json()["detail"] and "TUNESERVE_MAX_REQUEST_PIXELS" in resp.json()["detail"]


def test_the_decode_pool_takes_requests_in_turn() -> None:
    """One thread; a request of 6 jobs is running when a request of 1 arrives: the 1 runs next, not last."""
    decoder = FairDecoder(1)
    gate, order = threading.Event(), []

    def job(tag: str) -> str:
        if tag == "big-0":
            gate.wait(5)
        order.append(tag)
        return tag

    try:
        big = decoder.submit_all(job, [f"big-{i}" for i in range(6)])
        time.sleep(0.05)  # big-0 holds the thread
        small = decoder.submit_all(job, ["small"])
        gate.set()
        assert [f.result(5) for f in small] == ["small"] and len([f.result(5) for f in big]) == 6
        assert order[:2] == ["big-0", "small"]
    finally:
        decoder.shutdown()


def test_the_predictor_takes_tensors_as_other_protocols_send_them(client: TestClient) -> None:
    """The same answer for an encoded photo and for its preprocessed tensor (an Open Inference Protocol
    request would send the latter), without HTTP."""
    predictor = client.app.state.manager.loaded()["scored"].predictor  # type: ignore[attr-defined]
    tensor = preprocess(BLACK, predictor.pre, 1_000_000)
    options = PredictOptions(top_k=2, ood_threshold=0.9)
    from_photo, from_tensor = (asyncio.run(predictor.predict([image], options)) for image in (BLACK, tensor))
    assert from_photo == from_tensor and from_tensor.top_k == 2
    assert from_tensor.results[0].unknown_reason == "ood" and len(from_tensor.results[0].predictions) == 2
    with pytest.raises(ValueError, match="shape"):
        asyncio.run(predictor.predict([np.zeros((3, 4, 4), np.float32)], options))


def test_the_gpu_pipeline_fetches_the_score_in_the_same_run(tmp_path: Path) -> None:
    """The GPU decoder's code path (nvImageCodec's CPU backend here) binds ood_score beside the logits."""
    settings = Settings(home=tmp_path, device="cpu")
    engine = OnnxEngine(tiny_model(tmp_path / "m.onnx", with_ood=True), settings)
    pre = Preprocessing(input_size=8, resize=8, crop=8)
    pipeline = GpuPipeline(engine, pre, settings, max_batch=4)
    try:
        rows = pipeline.run([GREY, RED, BLACK])
    finally:
        pipeline.close()
    logits, ood = engine.unpack(rows)
    assert ood is not None and logits.shape == (3, 3)
    np.testing.assert_allclose(ood, [0.0039, 1 / 3, 1.0], atol=2e-3)
    expected = engine.infer(np.stack([preprocess(p, pre, 1_000_000) for p in (GREY, RED, BLACK)]))
    np.testing.assert_allclose(rows, expected, atol=1e-4)
