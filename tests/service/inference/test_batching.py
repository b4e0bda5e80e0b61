"""The dynamic batcher: order, isolation between requests, bounded queue, batching on == off.

Most tests run a tiny real ONNX model through real onnxruntime (row-wise, so every image's expected
logits are known exactly); the last ones use the real EfficientNet-Lite0 and the HTTP API.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from core.images import ImageError
from core.settings import Settings
from models import Registry
from models.manifest import Preprocessing
from service.http.app import create_app
from service.inference import onnx_session
from service.inference.batch_sizes import BatchSettings
from service.inference.batching import Batcher, QueueFull
from service.inference.onnx_session import OnnxEngine, session_options
from service.inference.preprocess import preprocess
from tests.service.conftest import wait_ready

WEIGHTS = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """logits = mean over H, W of each channel @ WEIGHTS: each row depends only on its own image."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("w", TensorProto.FLOAT, [3, 5], WEIGHTS.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> OnnxEngine:
    return OnnxEngine(tiny_model, Settings(device="cpu", intra_op_threads=1))


def expected(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([img.mean(axis=(1, 2)) for img in images]) @ WEIGHTS


def images_for(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4, 4)).astype(np.float32) for _ in range(n)]


def make_batcher(engine: OnnxEngine, size: int = 8, delay: float = 5.0, queue: int = 1000) -> Batcher:
    return Batcher(engine, BatchSettings(max_batch_size=size, max_delay_ms=delay, max_queue=queue))


def test_concurrent_requests_get_their_own_results_in_order(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine, size=8, delay=10.0)
    requests = {seed: images_for(seed, 1 + seed % 3) for seed in range(40)}
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = {seed: pool.submit(lambda imgs: batcher.submit_nowait(imgs).result(5), imgs)
                       for seed, imgs in requests.items()}
            results = {seed: f.result() for seed, f in futures.items()}
    finally:
        batcher.stop()
    for seed, imgs in requests.items():
        assert results[seed].shape == (len(imgs), 5)
        np.testing.assert_allclose(results[seed], expected(imgs), rtol=1e-5, atol=1e-6)
    total = sum(len(v) for v in requests.values())
    assert batcher.images_run == total
    assert batcher.batches_run < total  # requests really were grouped


def test_multi_image_request_runs_in_one_batch_and_big_ones_in_consecutive_batches(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine, size=4, delay=0.0)
    try:
        three = images_for(1, 3)
        np.testing.assert_allclose(batcher.submit_nowait(three).result(5), expected(three), rtol=1e-5, atol=1e-6)
        assert batcher.batches_run == 1
        ten = images_for(2, 10)
        np.testing.assert_allclose(batcher.submit_nowait(ten).result(5), expected(ten), rtol=1e-5, atol=1e-6)
        assert batcher.batches_run == 1 + 3  # 4 + 4 + 2
    finally:
        batcher.stop()


def test_a_failing_request_fails_only_itself(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine, size=16, delay=100.0)  # long enough for all four to share a batch
    try:
        good = [images_for(seed, 2) for seed in range(3)]
        futures = [batcher.submit_nowait(imgs) for imgs in good[:2]]
        bad = batcher.submit_nowait([np.zeros((3, 5, 5), np.float32)])  # the model wants 4x4
        futures.append(batcher.submit_nowait(good[2]))
        with pytest.raises(Exception, match=r"(?i)dimension|shape|broadcast"):
            bad.result(5)
        for imgs, fut in zip(good, futures, strict=True):
            np.testing.assert_allclose(fut.result(5), expected(imgs), rtol=1e-5, atol=1e-6)
        assert batcher.pending_images == 0
    finally:
        batcher.stop()


def encode(image: np.ndarray) -> bytes:
    return image.astype(np.float32).tobytes()


def decode_or_fail(data: bytes) -> np.ndarray:
    """The lanes' decoder in these tests: 4x4 float images; anything else is 'not an image'."""
    if len(data) != 3 * 4 * 4 * 4:
        raise ImageError("corrupt", f"not a 4x4 image ({len(data)} bytes)")
    return np.frombuffer(data, dtype=np.float32).reshape(3, 4, 4).copy()


def test_encoded_requests_are_decoded_by_the_lanes_and_a_bad_one_fails_only_itself(
    two_lane_engine: OnnxEngine,
) -> None:
    batcher = make_batcher(two_lane_engine, size=4, delay=50.0)  # long enough for requests to share batches
    good = {seed: images_for(seed, 1 + seed % 2) for seed in range(8)}
    assert batcher.decodes_in_lanes
    try:
        futures = {seed: batcher.submit_encoded_nowait([encode(img) for img in imgs], decode_or_fail)
                   for seed, imgs in good.items()}
        bad = batcher.submit_encoded_nowait([encode(good[0][0]), b"GIF89a"], decode_or_fail)
        mixed = batcher.submit_nowait(images_for(99, 1))  # decoded by the caller, batched alongside
        with pytest.raises(ImageError, match="not a 4x4 image"):
            bad.result(5)
        for seed, imgs in good.items():
            np.testing.assert_allclose(futures[seed].result(5), expected(imgs), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mixed.result(5), expected(images_for(99, 1)), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()
    assert batcher.pending_images == 0
    assert batcher.images_run == sum(len(v) for v in good.values()) + 1  # the bad request never ran
    assert batcher.batches_run < len(good) + 1  # they shared batches


def test_one_lane_leaves_decoding_to_the_pool(tiny_model: Path) -> None:
    one_lane = OnnxEngine(tiny_model, Settings(device="cpu", intra_op_threads=1, cpu_lanes=1))
    batcher = make_batcher(one_lane)  # decoding in the only lane would serialise it with inference
    batcher.stop()
    assert batcher.lanes == 1 and not batcher.decodes_in_lanes


def test_encoded_images_count_towards_the_queue_bound(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine, size=100, delay=300.0, queue=3)
    try:
        first = batcher.submit_encoded_nowait([encode(img) for img in images_for(1, 2)], decode_or_fail)
        with pytest.raises(QueueFull, match="full"):
            batcher.submit_encoded_nowait([encode(img) for img in images_for(2, 2)], decode_or_fail)
        assert batcher.pending_images == 2
        np.testing.assert_allclose(first.result(5), expected(images_for(1, 2)), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()
    assert batcher.pending_images == 0


def test_mismatched_shapes_within_one_request_are_refused_at_submit(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine)
    try:
        with pytest.raises(ValueError, match="share one"):
            batcher.submit_nowait([np.zeros((3, 4, 4), np.float32), np.zeros((3, 5, 5), np.float32)])
        assert batcher.pending_images == 0
    finally:
        batcher.stop()


def test_queue_is_bounded_and_frees_up(engine: OnnxEngine) -> None:
    batcher = make_batcher(engine, size=100, delay=300.0, queue=3)
    try:
        first = batcher.submit_nowait(images_for(1, 2))
        second = batcher.submit_nowait(images_for(2, 1))
        with pytest.raises(QueueFull, match="full"):
            batcher.submit_nowait(images_for(3, 1))
        first.result(5)
        second.result(5)
        assert batcher.pending_images == 0
        third = images_for(3, 3)
        np.testing.assert_allclose(batcher.submit_nowait(third).result(5), expected(third), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()


@pytest.mark.parametrize(("lanes", "size", "delay"), [(1, 2, 50.0), (2, 1, 0.0)])
def test_stop_finishes_what_is_queued_and_ends_every_lane(tiny_model: Path, lanes: int, size: int,
                                                           delay: float) -> None:
    engine = OnnxEngine(tiny_model, Settings(device="cpu", intra_op_threads=1, cpu_lanes=lanes))
    batcher = make_batcher(engine, size=size, delay=delay)
    futures = [batcher.submit_nowait(images_for(seed, 1)) for seed in range(7)]
    batcher.stop()
    for seed, fut in enumerate(futures):
        np.testing.assert_allclose(fut.result(0), expected(images_for(seed, 1)), rtol=1e-5, atol=1e-6)
    assert len(batcher._threads) == lanes and not any(t.is_alive() for t in batcher._threads)


# ------------------------------------------------------------------ CPU lanes
class RunSpy:
    """Wraps a real engine's ``infer`` (what the batcher calls): records which session each batch used and
    how many overlapped."""

    def __init__(self, engine: OnnxEngine, hold_s: float = 0.02) -> None:
        self.real, self.hold_s = engine.infer, hold_s
        self.calls: list[bool] = []
        self.threads: list[str] = []
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()
        engine.infer = self  # type: ignore[method-assign]

    def __call__(self, batch: np.ndarray, lane: bool = False) -> np.ndarray:
        with self.lock:
            self.calls.append(lane)
            self.threads.append(threading.current_thread().name)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            out = self.real(batch, lane)
            threading.Event().wait(self.hold_s)  # long enough for the other lane to start meanwhile
            return out
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def two_lane_engine(tiny_model: Path) -> OnnxEngine:
    return OnnxEngine(tiny_model, Settings(device="cpu", intra_op_threads=1, cpu_lanes=2))


@pytest.mark.parametrize("size", [1, 2])  # lanes taking from the idle stack / through the collecting lock
def test_waiting_batches_run_side_by_side_on_the_lane_session(two_lane_engine: OnnxEngine, size: int) -> None:
    spy = RunSpy(two_lane_engine)
    batcher = make_batcher(two_lane_engine, size=size, delay=0.0)
    requests = [images_for(seed, 1) for seed in range(12)]
    try:
        futures = [batcher.submit_nowait(imgs) for imgs in requests]
        results = [f.result(10) for f in futures]
    finally:
        batcher.stop()
    for imgs, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, expected(imgs), rtol=1e-5, atol=1e-6)
    assert batcher.lanes == 2 and spy.most_at_once == 2
    assert batcher.lane_batches >= len(spy.calls) - 1  # only a batch that found nothing else waiting goes wide
    assert batcher.images_run == 12 and batcher.pending_images == 0


def test_a_lone_request_runs_on_the_all_cores_session(two_lane_engine: OnnxEngine) -> None:
    spy = RunSpy(two_lane_engine, hold_s=0.0)
    batcher = make_batcher(two_lane_engine, size=4, delay=0.0)
    try:
        for seed in range(5):
            imgs = images_for(seed, 1 + seed % 2)
            np.testing.assert_allclose(batcher.submit_nowait(imgs).result(5), expected(imgs), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()
    assert spy.calls == [False] * 5 and batcher.lane_batches == 0


def test_at_low_load_one_lane_serves_request_after_request(two_lane_engine: OnnxEngine) -> None:
    spy = RunSpy(two_lane_engine, hold_s=0.0)
    batcher = make_batcher(two_lane_engine, size=1, delay=0.0)
    try:
        for seed in range(12):
            imgs = images_for(seed, 1)
            np.testing.assert_allclose(batcher.submit_nowait(imgs).result(5), expected(imgs), rtol=1e-5, atol=1e-6)
            time.sleep(0.002)  # the lane is back on the idle stack before the next request
    finally:
        batcher.stop()
    # The lane that went idle last takes the next request: no second thread woken, no turn-taking.
    assert len(spy.threads) == 12 and len(set(spy.threads)) == 1


def test_a_batch_alone_in_the_queue_runs_on_a_lane_while_other_requests_are_in_flight(
    two_lane_engine: OnnxEngine,
) -> None:
    spy = RunSpy(two_lane_engine, hold_s=0.0)
    in_flight = [1]  # requests the caller holds, e.g. still being decoded
    batcher = Batcher(two_lane_engine, BatchSettings(max_batch_size=4, max_delay_ms=0.0, max_queue=100),
                      in_flight=lambda: in_flight[0])
    try:
        for held in (1, 3, 2, 1):
            in_flight[0] = held
            imgs = images_for(held, 1)
            np.testing.assert_allclose(batcher.submit_nowait(imgs).result(5), expected(imgs), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()
    # Only the batches holding every request in flight ran wide; the others left cores to the decoders.
    assert spy.calls == [False, True, True, False] and batcher.lane_batches == 2


def test_lanes_wait_for_the_collecting_lane_to_fill_its_batch(two_lane_engine: OnnxEngine) -> None:
    spy = RunSpy(two_lane_engine, hold_s=0.0)
    batcher = make_batcher(two_lane_engine, size=8, delay=200.0)
    try:
        futures = [batcher.submit_nowait(images_for(seed, 1)) for seed in range(6)]
        for seed, fut in enumerate(futures):
            np.testing.assert_allclose(fut.result(5), expected(images_for(seed, 1)), rtol=1e-5, atol=1e-6)
    finally:
        batcher.stop()
    assert batcher.batches_run == 1 and len(spy.calls) == 1  # the idle lane did not split the batch


# ------------------------------------------------------------------ the real model
def real_inputs(hymenoptera: Path, n: int) -> list[np.ndarray]:
    files = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:n]
    return [preprocess(f.read_bytes(), Preprocessing(), 40_000_000) for f in files]


def test_batching_off_gives_the_same_results_on_the_real_model(bootstrapped_home: Path, hymenoptera: Path) -> None:
    model = Registry(bootstrapped_home / "models").get("imagenet").model_path
    real = OnnxEngine(model, Settings(device="cpu"))
    inputs = real_inputs(hymenoptera, 6)
    outputs = {}
    for size in (8, 1):
        batcher = make_batcher(real, size=size, delay=50.0)
        try:
            futures = [batcher.submit_nowait([x]) for x in inputs]
            outputs[size] = np.concatenate([f.result(30) for f in futures])
        finally:
            batcher.stop()
        assert batcher.batches_run == (1 if size == 8 else 6)
    np.testing.assert_allclose(outputs[8], outputs[1], rtol=1e-4, atol=1e-4)
    assert (outputs[8].argmax(1) == outputs[1].argmax(1)).all()


@pytest.mark.parametrize(("cores", "lanes"), [(1, 1), (2, 3), (16, 17)])
def test_by_default_a_cpu_has_one_lane_more_than_its_cores(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                           lanes: int) -> None:
    """The extra lane takes the core a lane leaves idle while it waits for the GIL or its next request;
    one core keeps one lane (decoding then goes to the pool), and the setting still wins."""
    monkeypatch.setattr(onnx_session, "cpu_cores", lambda: cores)
    assert onnx_session.cpu_lanes(Settings(device="cpu"), onnx_session.CPU) == lanes
    assert onnx_session.cpu_lanes(Settings(device="cpu", cpu_lanes=2), onnx_session.CPU) == 2
    assert onnx_session.cpu_lanes(Settings(device="cpu"), onnx_session.CUDA) == 1


def test_lane_session_matches_the_all_cores_session_on_real_photos(bootstrapped_home: Path,
                                                                   hymenoptera: Path) -> None:
    model = Registry(bootstrapped_home / "models").get("imagenet").model_path
    two = OnnxEngine(model, Settings(device="cpu", intra_op_threads=2, cpu_lanes=2))
    assert two.lanes == 2 and two.lane_session is not None and two.lane_session is not two.session
    assert two.lane_session.get_session_options().intra_op_num_threads == 1
    spin = "session.intra_op.allow_spinning"
    # The all-cores session only runs lone batches then: it may spin; the lane session never does.
    assert two.session.get_session_options().get_session_config_entry(spin) == "1"
    assert two.lane_session.get_session_options().get_session_config_entry(spin) == "0"
    batch = np.stack(real_inputs(hymenoptera, 4))
    np.testing.assert_allclose(two.run(batch, lane=True), two.run(batch), rtol=1e-4, atol=1e-4)
    off = OnnxEngine(model, Settings(device="cpu", cpu_lanes=1))
    assert off.lanes == 1 and off.lane_session is None
    assert off.session.get_session_options().get_session_config_entry(spin) == "0"  # it runs under load too
    one_lane = make_batcher(off)
    one_lane.stop()
    assert len(one_lane._threads) == 1


def cpu_seconds_after_runs(engine: OnnxEngine, batch: np.ndarray, window_s: float = 0.2) -> list[float]:
    """Process CPU time spent in the ``window_s`` after each of three runs on the all-cores session."""
    spent = []
    for _ in range(3):
        engine.run(batch)
        before = time.process_time()
        time.sleep(window_s)
        spent.append(time.process_time() - before)
    return spent


def test_spinning_workers_stop_when_a_run_returns(bootstrapped_home: Path, hymenoptera: Path) -> None:
    model = Registry(bootstrapped_home / "models").get("imagenet").model_path
    batch = np.stack(real_inputs(hymenoptera, 1))
    spinning = OnnxEngine(model, Settings(device="cpu", intra_op_threads=2, cpu_lanes=2))
    # Control: the same options without the stop leave a worker spinning after each run (~35 ms of
    # CPU on this VM), so the measurement does see spinning when it happens.
    opts = session_options(Settings(device="cpu", intra_op_threads=2), spin=True)
    opts.add_session_config_entry("session.force_spinning_stop", "0")
    control = OnnxEngine(model, Settings(device="cpu", intra_op_threads=2, cpu_lanes=1))
    control.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    for engine in (spinning, control):
        engine.run(batch)
    assert max(cpu_seconds_after_runs(control, batch)) > 0.015
    assert min(cpu_seconds_after_runs(spinning, batch)) < 0.005


def test_http_bad_image_fails_only_its_own_request(settings: Settings, hymenoptera: Path) -> None:
    settings.max_batch_size, settings.max_delay_ms = 8, 50.0  # concurrent requests share batches
    jpegs = [f.read_bytes() for f in sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[:4]]
    bodies = [*jpegs[:2], b"\xff\xd8\xff\xe0 not really a jpeg", *jpegs[2:]]
    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        def post(body: bytes):  # type: ignore[no-untyped-def]
            return client.post("/v1/models/imagenet/predict?top_k=3", content=body,
                               headers={"content-type": "image/jpeg"})

        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(post, bodies))
        alone = [post(body) for body in jpegs]
    assert [a.status_code for a in answers] == [200, 200, 400, 200, 200]
    assert "corrupt" in answers[2].json()["detail"]
    together = [a.json()["results"] for i, a in enumerate(answers) if i != 2]
    for batched, single in zip(together, [a.json()["results"] for a in alone], strict=True):
        assert batched[0]["predictions"][0]["label"] == single[0]["predictions"][0]["label"]
        assert abs(batched[0]["predictions"][0]["probability"] - single[0]["predictions"][0]["probability"]) < 1e-4


def test_http_full_queue_answers_503_with_retry_after(settings: Settings, hymenoptera: Path) -> None:
    settings.max_queue = 1
    jpeg = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[0].read_bytes()
    gate, entered = threading.Event(), threading.Event()
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        loaded = client.app.state.manager.loaded()["imagenet"]  # type: ignore[attr-defined]
        real_run = loaded.engine.infer  # what the batcher runs

        def held_run(batch: np.ndarray, lane: bool = False) -> np.ndarray:  # real, held until the test says go
            entered.set()
            gate.wait(10)
            return real_run(batch, lane)

        loaded.engine.infer = held_run
        url = "/v1/models/imagenet/predict"
        headers = {"content-type": "image/jpeg"}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, url, content=jpeg, headers=headers)
            assert entered.wait(10)
            refused = client.post(url, content=jpeg, headers=headers)
            gate.set()
            assert first.result(30).status_code == 200
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "queue is full" in refused.json()["detail"]
        assert client.post(url, content=jpeg, headers=headers).status_code == 200
