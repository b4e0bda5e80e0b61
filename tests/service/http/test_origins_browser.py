"""Cross-site requests in a real browser (Chromium via Playwright, tests/browser.py): a page of another site cannot
activate a version, a page of the service itself can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from core.settings import Settings
from models import Registry
from service.http.app import create_app
from tests.service.inference.test_hotswap import add_versions
from tests.service.live import live_server

# What an attacker's page would do: a "simple" POST (no preflight), and a CORS fetch that tries to read.
ATTACK = """
async (url) => {
  const out = {};
  await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "x"});
  try { out.status = (await fetch(url, {method: "POST"})).status; } catch (e) { out.error = String(e); }
  return out;
}
"""
SAME_ORIGIN = "async (path) => (await fetch(path, {method: 'POST'})).status"


def page_app(html: str) -> FastAPI:
    app = FastAPI()
    app.get("/healthz")(lambda: {"status": "ok"})
    app.get("/page", response_class=HTMLResponse)(lambda: html)
    return app


def test_foreign_page_is_refused_own_page_works(browser: Any, settings: Settings, home: Path) -> None:
    v2, v3 = add_versions(home, 2)
    registry = Registry(settings.models_dir)
    api = create_app(settings)
    api.get("/own-page", response_class=HTMLResponse)(lambda: "<html><body>tuneserve</body></html>")
    with live_server(api) as api_url, live_server(page_app("<html><body>evil</body></html>"), ready=False) as evil:
        context = browser.new_context()
        try:
            foreign = context.new_page()
            foreign.goto(evil.replace("127.0.0.1", "localhost") + "/page")  # another site
            result = foreign.evaluate(ATTACK, f"{api_url}/v1/models/imagenet/versions/{v2}/activate")
            assert "status" not in result and "Failed to fetch" in result["error"]  # no CORS headers for it
            assert registry.active_version("imagenet") == 1  # and neither POST changed anything

            own = context.new_page()
            own.goto(f"{api_url}/own-page")
            assert own.evaluate(SAME_ORIGIN, f"/v1/models/imagenet/versions/{v3}/activate") == 200
            assert registry.active_version("imagenet") == v3
        finally:
            context.close()
