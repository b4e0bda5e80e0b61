"""/metrics over a real socket, parsed with prometheus_client's text parser after real predictions."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr

from core.settings import Settings
from jobs import JobStore
from service.http.app import create_app
from tests.service.inference.test_hotswap import add_versions
from tests.service.live import live_server


def scrape(http: httpx.Client) -> dict[str, list[Sample]]:
    resp = http.get("/metrics")  # no key: open, like the probes
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(resp.text)}


def value(families: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` with these labels (0 when there are none yet)."""
    return sum(s.value for samples in families.values() for s in samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def small_archive(hymenoptera: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split, per_class in (("train", 6), ("val", 5)):
            for label in ("ants", "bees"):
                for photo in sorted((hymenoptera / split / label).glob("*.jpg"))[:per_class]:
                    zf.write(photo, f"set/{split}/{label}/{photo.name}")
    return buf.getvalue()


def test_metrics_after_real_traffic(settings: Settings, home: Path, imagenet_samples: Path,
                                    hymenoptera: Path) -> None:
    JobStore(settings.resolved_database_url).create("imagenet", "some-dataset", {"max_epochs": 1})
    keyed = settings.model_copy(update={"api_keys": SecretStr("admin:metrics-test-key")})
    photos = sorted(imagenet_samples.glob("*.JPEG"))[:4]
    with live_server(create_app(keyed)) as url, httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": "Bearer metrics-test-key"}) as http:
        before = scrape(http)
        assert value(before, "tuneserve_model_active_version", model="imagenet") == 1
        assert value(before, "tuneserve_jobs", state="queued") == 1
        assert value(before, "tuneserve_jobs", state="running") == 0

        for photo in photos[:3]:  # one image each: the encoded path, decoded by a lane (or the pool)
            resp = http.post("/v1/models/imagenet/predict", content=photo.read_bytes(),
                             headers={"Content-Type": "image/jpeg"})
            assert resp.status_code == 200, resp.text
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        assert http.post("/v1/models/imagenet/predict", files=files).status_code == 200
        assert http.post("/v1/models/imagenet/predict", content=b"not an image",
                         headers={"Content-Type": "image/jpeg"}).status_code == 415
        assert httpx.get(f"{url}/v1/models").status_code == 401  # refused requests are counted too
        up = http.post("/v1/datasets", files={"file": ("set.zip", small_archive(hymenoptera), "application/zip")})
        assert up.status_code == 201, up.text
        again = http.post("/v1/datasets", files={"file": ("set.zip", small_archive(hymenoptera), "application/zip")})
        assert again.status_code == 200
        junk = http.post("/v1/datasets", files={"file": ("x.zip", b"junk" * 100, "application/zip")})
        assert junk.status_code == 415
        v2 = add_versions(home, 1)[0]
        assert http.post(f"/v1/models/imagenet/versions/{v2}/activate").json()["swap"]["state"] == "serving"

        after = scrape(http)
    # Metrics live as long as the process (earlier tests may have counted too): compare with before.
    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    assert delta("tuneserve_images_predicted_total", model="imagenet", version="1") == 7
    assert delta("tuneserve_http_request_duration_seconds_count", method="POST",
                 route="/v1/models/{name}/predict", status="200") == 4
    assert delta("tuneserve_http_request_duration_seconds_count", route="/v1/models/{name}/predict",
                 status="415") == 1
    assert delta("tuneserve_http_request_duration_seconds_count", route="/v1/models", status="401") == 1
    # 7 good images and the bad one went through decoding; the 7 good ones ran in batches
    assert delta("tuneserve_decode_duration_seconds_count") >= 8
    assert delta("tuneserve_batch_size_images_sum", model="imagenet") == 7
    assert delta("tuneserve_inference_duration_seconds_count", model="imagenet") >= 2
    assert delta("tuneserve_inference_duration_seconds_sum", model="imagenet") > 0
    assert value(after, "tuneserve_queue_depth_images", model="imagenet") == 0  # all answered
    assert delta("tuneserve_model_swaps_total", model="imagenet") == 1
    assert value(after, "tuneserve_model_active_version", model="imagenet") == v2
    for outcome in ("created", "duplicate", "refused"):
        assert delta("tuneserve_dataset_uploads_total", outcome=outcome) == 1, outcome
    # Prometheus conventions: our names are prefixed, counters end in _total, durations in _seconds.
    ours = [name for name in after if name.startswith("tuneserve_")]
    assert all(n.endswith("_seconds") for n in ours if "duration" in n)
    assert not any(s.labels.get("route", "").startswith("/v1/models/imagenet") for s in
                   after["tuneserve_http_request_duration_seconds"])  # templates, never raw paths
