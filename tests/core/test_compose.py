"""docker/compose.yaml (Docker itself is not run here): the object-storage shape parses and is consistent."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.settings import Settings
from core.storage import parse_url

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def test_replicas_and_worker_share_a_bucket_and_no_volume() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"redis", "postgres", "minio", "bucket", "api", "worker"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    bucket_command = " ".join(services["bucket"]["entrypoint"])
    for name in ("api", "worker"):
        service = services[name]
        assert "volumes" not in service, f"{name} must not share a volume"
        env = service["environment"]
        bucket, prefix = parse_url(env["TUNESERVE_STORAGE_URL"])
        assert f"store/{bucket}" in bucket_command and prefix  # the bucket the `bucket` job creates
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
        assert service["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
        # Every TUNESERVE_ variable it sets is a setting the code reads.
        fields = {f"TUNESERVE_{n.upper()}" for n in Settings.model_fields}
        assert {k for k in env if k.startswith("TUNESERVE_")} <= fields
