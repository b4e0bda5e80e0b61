"""API keys over real sockets: the 401/403 matrix over every route the app has, and `serve`'s bind check."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr

from core.settings import Settings
from service.http.app import create_app
from service.http.auth import PUBLIC_PATHS, allowed_roles, bind_refusal, load_keys
from tests.integration.procs import REPO, Server, base_env, private_broker
from tests.service.live import live_server

ADMIN, PREDICT, FILE_PREDICT = "adm-0123456789abcdef", "prd-0123456789abcdef", "file-prd-9876543210"
READ = "read-0123456789abcdef"
# What a predict key may read: the models' public descriptions, nothing of datasets, jobs or model files.
DESCRIPTIONS = {"/v1/models", "/v1/models/imagenet", "/v2", "/v2/models/imagenet", "/v2/models/imagenet/ready",
                "/v2/models/imagenet/versions/1", "/v2/models/imagenet/versions/1/ready"}
# Values for path parameters: real ones where they exist (the bootstrapped model), others unknown (404).
PARAMS = {"name": "imagenet", "version": "1", "dataset_id": "no-such-dataset", "job_id": "no-such-job",
          "file": "model.onnx", "path": "train/ants/no-such.jpg", "capture_id": "no-such-capture"}


@pytest.fixture
def keyed(settings: Settings, tmp_path: Path) -> Settings:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators' keys\npredict:{FILE_PREDICT}\n\n")
    return settings.model_copy(update={"api_keys": SecretStr(f"admin:{ADMIN}, predict:{PREDICT}, read:{READ}"),
                                       "api_keys_file": keys_file, "metrics_require_key": True})


@pytest.fixture
def server(keyed: Settings) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    app = create_app(keyed)
    # Every route the app answers, included routers flattened (a mount without methods counts as GET).
    routes = [(method, re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m.group(1)], ctx.path))
              for ctx in iter_route_contexts(app.routes) if ctx.path is not None
              for method in sorted(ctx.methods or {"GET"})]
    with live_server(app) as url:
        yield url, routes


def call(url: str, method: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=30) as http:
        if path.endswith("/events"):  # an SSE stream: the status line is enough
            with http.stream(method, path, headers=headers) as resp:
                return resp.status_code
        return http.request(method, path, headers=headers).status_code


def test_every_route_needs_the_right_role(server: tuple[str, list[tuple[str, str]]]) -> None:
    url, routes = server
    guarded = [(m, p) for m, p in routes if p not in PUBLIC_PATHS]
    assert len(guarded) >= 12, routes  # models, datasets, jobs: a refactor that drops routers shows here
    # Every GET route is also served for HEAD, under the same rule.
    routes += [("HEAD", p) for m, p in routes if m == "GET" and not p.endswith("/events")]
    for method, path in routes:
        if path in PUBLIC_PATHS and path != "/metrics":
            assert call(url, method, path, None) not in (401, 403), (method, path)
            continue
        # Sending a correction is a user's act (predict); the captured photos are users' data (admin).
        predict = method == "POST" and path.endswith(("/predict", "/infer", "/feedback"))
        read = method in ("GET", "HEAD") and "/feedback" not in path
        may = {ADMIN: True, READ: read,
               PREDICT: predict or (read and path in DESCRIPTIONS)}
        may[FILE_PREDICT] = may[PREDICT]
        assert call(url, method, path, None) == 401, (method, path)
        assert call(url, method, path, "not-a-key") == 401, (method, path)
        assert call(url, method, path, ADMIN[:-1]) == 401, (method, path)  # a near miss is no key either
        for key, allowed in may.items():
            status = call(url, method, path, key)
            assert (status not in (401, 403)) if allowed else (status == 403), (method, path, key[:4], status)


def test_answers_say_what_to_send(server: tuple[str, list[tuple[str, str]]]) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        missing = http.post("/v1/models/imagenet/versions/1/activate")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in missing.json()["detail"]
        wrong = http.post("/v1/models/imagenet/versions/1/activate", headers={"Authorization": f"Bearer {PREDICT}"})
        assert wrong.status_code == 403 and "admin key" in wrong.json()["detail"]
        assert PREDICT not in wrong.text
        photos = http.get("/v1/datasets", headers={"Authorization": f"Bearer {PREDICT}"})
        assert photos.status_code == 403 and "admin or read key" in photos.json()["detail"]
        assert http.get("/metrics").status_code == 401
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {READ}"})
        assert scraped.status_code == 200 and "tuneserve_" in scraped.text
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        photo = (Path(__file__).parents[2] / "data" / "imagenet" / "n02123045_tabby.JPEG").read_bytes()
        ok = http.post("/v1/models/imagenet/predict", content=photo,
                       headers={"Authorization": f"Bearer {FILE_PREDICT}", "Content-Type": "image/jpeg"})
        assert ok.status_code == 200 and ok.json()["results"][0]["predictions"][0]["label"]


def test_only_the_console_assets_are_open_under_their_prefix() -> None:
    assert allowed_roles("GET", "/console/app.js") is None
    assert allowed_roles("POST", "/console/app.js") == {"admin"}
    assert allowed_roles("GET", "/consolex") == {"admin", "read"} == allowed_roles("GET", "/v1/console/x")
    assert allowed_roles("GET", "/metrics") is None and allowed_roles("GET", "/metrics", True) == {"admin", "read"}
    assert allowed_roles("GET", "/v1/models/x/versions/1/files") == {"admin", "read"}
    assert allowed_roles("GET", "/v1/models/x") == {"admin", "read", "predict"}


def test_bad_key_settings_are_named_not_quoted(settings: Settings, tmp_path: Path) -> None:
    pasted = settings.model_copy(update={"api_keys": SecretStr("s3cret-without-role")})
    refusal = bind_refusal(pasted, "127.0.0.1")
    assert refusal is not None and "TUNESERVE_API_KEYS" in refusal and "s3cret" not in refusal
    missing = settings.model_copy(update={"api_keys_file": tmp_path / "absent"})
    assert "TUNESERVE_API_KEYS_FILE" in (bind_refusal(missing, "127.0.0.1") or "")
    assert load_keys(settings) == [] and bind_refusal(settings, "127.0.0.1") is None
    assert bind_refusal(settings, "localhost") is None and bind_refusal(settings, "::1") is None
    assert "TUNESERVE_API_KEYS" in (bind_refusal(settings, "0.0.0.0") or "")
    assert ADMIN not in repr(settings.model_copy(update={"api_keys": SecretStr(f"admin:{ADMIN}")}))


def test_serve_on_all_interfaces_needs_keys(home: Path, tmp_path: Path) -> None:
    env = base_env(home, **private_broker())
    refused = subprocess.run([sys.executable, "-m", "tuneserve.cli", "serve", "--host", "0.0.0.0", "--no-worker"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "TUNESERVE_API_KEYS" in refused.stderr and "TUNESERVE_ALLOW_ANONYMOUS" in refused.stderr

    keyed = Server({**env, "TUNESERVE_API_KEYS": f"admin:{ADMIN}", "TUNESERVE_HOST": "0.0.0.0"},
                   tmp_path / "keyed.log")
    try:
        keyed.wait_ready()
        assert keyed.http.get("/v1/models").status_code == 401
        assert keyed.http.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    finally:
        keyed.stop()
    assert ADMIN not in keyed.log.read_text()  # never logged

    anonymous = Server({**env, "TUNESERVE_ALLOW_ANONYMOUS": "1", "TUNESERVE_HOST": "0.0.0.0"},
                       tmp_path / "anon.log")
    try:
        assert anonymous.wait_ready().http.get("/v1/models").status_code == 200
    finally:
        anonymous.stop()
