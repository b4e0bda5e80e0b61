"""/metrics with several uvicorn workers: any worker's scrape adds up every worker's samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.procs import Server, base_env, private_broker
from tests.integration.test_api_workers import fresh_client, versions_by_worker

WORKERS = 2


def images_predicted(text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "tuneserve_images_predicted_total" and s.labels == {"model": "imagenet", "version": "1"})


@pytest.mark.slow
def test_scrape_adds_up_every_worker(home: Path, tmp_path: Path, imagenet_samples: Path) -> None:
    env = base_env(home, **private_broker(), TUNESERVE_API_WORKERS=str(WORKERS))
    server = Server(env, tmp_path / "serve.log").wait_ready(timeout=120)
    photo = next(iter(sorted(imagenet_samples.glob("*.JPEG")))).read_bytes()
    try:
        with fresh_client(server.url) as http:
            assert len(versions_by_worker(http)) == WORKERS  # both workers answer
            for _ in range(30):  # fresh connections: both workers predict some
                resp = http.post("/v1/models/imagenet/predict", content=photo, headers={"content-type": "image/jpeg"})
                assert resp.status_code == 200
            for _ in range(10):  # whichever worker answers the scrape, it counts both workers' images
                scrape = http.get("/metrics")
                assert scrape.status_code == 200
                assert images_predicted(scrape.text) == 30, scrape.text[:2000]
    finally:
        server.stop()
    assert (home / "work" / "prometheus").is_dir()  # serve gave the workers their sample folder
