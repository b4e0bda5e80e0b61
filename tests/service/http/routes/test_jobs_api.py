"""``POST /v1/jobs`` against hostile bodies: the real app over TestClient, a real dataset, real Redis.

Every refusal is a 4xx JSON ``{"detail": ...}`` naming the field and what it accepts; a body that
passes is queued (202) on a private Redis queue no worker reads. The last test fuzzes the body with
hypothesis and asserts that nothing gets a 5xx.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.jobspec import TrainSpec
from core.searchspec import DISTRIBUTIONS, METHODS, SEARCHABLE
from core.settings import Settings
from service.http.app import create_app
from tests.dataset_store.datasets_kit import class_files, make_zip
from tests.integration.procs import private_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[dict[str, str]]:
    env = private_broker()
    yield env
    conn = redis.Redis.from_url(env["TUNESERVE_BROKER_URL"])
    queue = env["TUNESERVE_TASK_QUEUE"]
    conn.delete(queue, *conn.keys(f"*{queue}*"))  # the queued jobs and kombu's binding key


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, broker: dict[str, str]) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("jobs-home")
    app = create_app(Settings(home=home, broker_url=broker["TUNESERVE_BROKER_URL"],
                              task_queue=broker["TUNESERVE_TASK_QUEUE"]))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def dataset_id(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = make_zip(tmp_path_factory.mktemp("zip") / "d.zip", class_files({"ants": 5, "bees": 5}, seed=5))
    resp = client.post("/v1/datasets", files={"file": ("d.zip", archive.read_bytes(), "application/zip")})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def post_json(client: TestClient, body: Any) -> Any:
    """The body as Python's json writes it: NaN and Infinity as bare words, lone surrogates escaped."""
    return client.post("/v1/jobs", content=json.dumps(body, allow_nan=True).encode(),
                       headers={"content-type": "application/json"})


@pytest.mark.parametrize(("extra", "words"), [
    ({"search": {"method": "random", "space": {"batch_size": "int(1, 1e400)"}}},
     ["search.space", "batch_size", "finite", "1 <= batch_size <= 4096"]),
    ({"search": {"method": "random", "space": {"lr": {"low": 1e-4, "high": math.inf}}}},
     ["search.space", "lr", "high", "finite", "0 < lr <= 10"]),
    ({"search": {"method": "random", "space": {"weight_decay": "uniform(0, 1e400)"}}},
     ["weight_decay", "finite", "0 <= weight_decay <= 1"]),
    ({"search": {"method": "grid", "space": {"batch_size": [8, math.nan]}}}, ["batch_size", "finite"]),
    ({"search": {"method": "random", "space": {"batch_size": "int(8, 64, 100000)"}}}, ["step", "1 <= step <= 4096"]),
    ({"search": {"method": "random", "trials": 10**400}}, ["search.trials", "1 <= trials <= 1000"]),
    ({"search": {"method": "random", "space": {"base": ["registry:\ud800:1"]}}},
     ["base", "registry:<model>:<version>"]),
    ({"hyperparameters": {"lr": math.inf}}, ["hyperparameters.lr", "0 < lr <= 10"]),
    ({"hyperparameters": {"lr": -math.inf}}, ["hyperparameters.lr", "0 < lr <= 10"]),
    ({"hyperparameters": {"batch_size": 1e400}}, ["hyperparameters.batch_size", "integer", "1 <= batch_size <= 4096"]),
    ({"hyperparameters": {"max_epochs": 10**400}}, ["hyperparameters.max_epochs", "1 <= max_epochs <= 1000"]),
    ({"hyperparameters": {"early_stopping": {"min_delta": math.nan}}},
     ["early_stopping.min_delta", "0 <= min_delta <= 1"]),
    ({"hyperparameters": {"num_workers": 1e400}}, ["hyperparameters.num_workers", "0 <= num_workers <= 64"]),
    ({"hyperparameters": {"label_smoothing": -0.0001}}, ["label_smoothing", "0 <= label_smoothing < 1"]),
])
def test_hostile_numbers_are_422_naming_field_and_range(client: TestClient, dataset_id: str,
                                                        extra: dict[str, Any], words: list[str]) -> None:
    resp = post_json(client, {"dataset_id": dataset_id, "model": "bees", **extra})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    for word in words:
        assert word in detail, detail


def test_a_good_body_is_queued_and_shows_what_it_stored(client: TestClient, dataset_id: str) -> None:
    body = {"dataset_id": dataset_id, "model": "bees", "hyperparameters": {"lr": 1, "num_workers": "2"},
            "search": {"method": "random", "trials": 2, "space": {"batch_size": "int(8, 16, 8)"}}}
    resp = post_json(client, body)
    assert resp.status_code == 202, resp.text
    job = client.get(f"/v1/jobs/{resp.json()['id']}").json()
    assert job["spec"]["lr"] == 1.0 and job["spec"]["num_workers"] == 2
    assert job["spec"]["search"]["space"]["batch_size"] == {"distribution": "int", "low": 8, "high": 16, "step": 8,
                                                           "auto": False}


@pytest.mark.parametrize("headers", [
    {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {},
])
def test_a_body_not_sent_as_json_is_told_to_send_json(client: TestClient, dataset_id: str,
                                                       headers: dict[str, str]) -> None:
    body = json.dumps({"dataset_id": dataset_id, "model": "bees"}).encode()
    resp = client.post("/v1/jobs", content=body, headers=headers)
    assert resp.status_code == 415, resp.text
    assert "Content-Type: application/json" in resp.json()["detail"]
    ok = client.post("/v1/jobs", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 202, ok.text


def test_broken_json_is_a_422_saying_where(client: TestClient) -> None:
    resp = client.post("/v1/jobs", content=b'{"model": "bees",', headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "not valid JSON at character" in resp.json()["detail"]
    resp = post_json(client, [1, 2])
    assert resp.status_code == 422 and resp.json()["detail"].startswith("body:")


# ------------------------------------------------------------------ fuzzing
NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**400, -(10**400), 1e308, -0.0, 1e-320]),
)
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # lone surrogates
    st.sampled_from(["auto", "registry:bees:1", "registry:x", "linear", "int(1, 1e400)", "uniform(0, nan)"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=10)
# Arguments of "int(a, b)": numbers as Python writes them, and the spellings that overflow or are not numbers.
NUMBER_TEXT = st.one_of(st.sampled_from(["1e400", "-1e400", "1e309", "9" * 400, "0", "1", "8", "64", "1e-3", "-1"]),
                        NUMBERS.map(repr), st.sampled_from(["nan", "inf", "10**9", "", "x", "[1, 2]"]))


@st.composite
def distributions(draw: st.DrawFn, key: str) -> Any:
    """Any distribution, the key's own kind (whose bounds get checked) twice as often."""
    name = draw(st.sampled_from([SEARCHABLE.get(key, "uniform"), *DISTRIBUTIONS, "normal"]))
    form = draw(st.sampled_from(["call"] * 3 + ["fields"] * 2 + ["list", "scalar"]))
    if form == "call":
        args = [draw(NUMBER_TEXT), draw(NUMBER_TEXT), *draw(st.lists(NUMBER_TEXT, max_size=1))]
        return f"{name}({', '.join(args)})"
    if form == "fields":
        return draw(st.fixed_dictionaries({"low": NUMBERS, "high": NUMBERS}, optional={
            "distribution": st.just(name), "step": NUMBERS, "values": st.lists(SCALARS, max_size=3),
            "grid_points": NUMBERS, "auto": st.booleans()}))
    return draw(st.lists(SCALARS, max_size=4) if form == "list" else SCALARS)


@st.composite
def spaces(draw: st.DrawFn) -> Any:
    keys = draw(st.lists(st.sampled_from([*SEARCHABLE, "epochs"]), min_size=1, max_size=3, unique=True))
    return {key: draw(distributions(key)) for key in keys}


SEARCH = st.fixed_dictionaries({"method": st.sampled_from(METHODS), "space": spaces()}, optional={
    "trials": NUMBERS, "max_epochs": NUMBERS, "min_epochs": NUMBERS, "reduction_factor": NUMBERS,
    "bootstrap_count": NUMBERS, "seed": NUMBERS,
})
EARLY_STOPPING = st.dictionaries(st.sampled_from(["metric", "patience", "min_delta"]), SCALARS, max_size=3)
HYPERPARAMETERS = st.dictionaries(st.sampled_from([*TrainSpec.model_fields, "epochs"]),
                                  st.one_of(SCALARS, EARLY_STOPPING), max_size=3)


@st.composite
def job_bodies(draw: st.DrawFn, dataset_id: str) -> Any:
    """Mostly one hostile part in an otherwise good body (so it is the part checked), sometimes anything."""
    shape = draw(st.sampled_from(["search"] * 4 + ["hyperparameters"] * 2 + ["fields", "any"]))
    if shape == "any":
        return draw(st.one_of(JSON, st.dictionaries(st.sampled_from(["dataset_id", "model", "base", "mode",
                                                                     "hyperparameters", "search", "x"]), JSON)))
    body: dict[str, Any] = {"dataset_id": dataset_id, "model": "bees"}
    if shape == "search":
        body["search"] = draw(st.one_of(SEARCH, SEARCH, JSON))
    elif shape == "hyperparameters":
        body["hyperparameters"] = draw(st.one_of(HYPERPARAMETERS, HYPERPARAMETERS, JSON))
    else:
        body.update(draw(st.fixed_dictionaries({}, optional={
            "dataset_id": TEXT, "model": TEXT, "base": st.one_of(st.sampled_from(["resnet18", "registry:bees:1"]),
                                                                 SCALARS),
            "mode": st.one_of(st.sampled_from(["linear", "finetune"]), SCALARS), "extra": JSON})))
    return body


def test_fuzzed_job_bodies_never_get_a_server_error(client: TestClient, dataset_id: str) -> None:
    statuses: list[int] = []

    @settings(max_examples=300, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=job_bodies(dataset_id))
    def check(body: Any) -> None:
        resp = post_json(client, body)
        assert resp.status_code < 500, (body, resp.status_code, resp.text)
        if resp.status_code >= 400:
            assert isinstance(resp.json()["detail"], str) and resp.json()["detail"], resp.text
        statuses.append(resp.status_code)

    check()
    # The fuzzing reached past validation (queued jobs), and every kind of refusal.
    assert {202, 422} <= set(statuses), sorted(set(statuses))
