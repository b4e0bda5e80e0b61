"""The web console in a real browser (Chromium driven by Playwright, tests/browser.py) on a live stack: a real
API process and a real worker. Upload an archive through the page, see its report, start a job with
the form, watch the curve grow, see it finish with its evaluation and get promoted, try a photo and
see the top 5 and the heatmap. Screenshots of each page go under the test's tmp path."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.slow



def no_problems(page: Any) -> None:
    """No script error and nothing the Content-Security-Policy refused (it would be logged as an error)."""
    assert not [p for p in page.problems if "favicon" not in p], page.problems


def test_console_is_served_with_a_strict_policy(stack: Stack) -> None:
    http = stack.server.http
    index = http.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in index.text and " on" not in index.text.split("<body>")[1].split("=")[0]
    scripts = re.findall(r'<script src="([^"]+)"', index.text)  # every page's script, each checked below
    assert {"/console/core.js", "/console/review.js", "/console/drift.js", "/console/app.js"} <= set(scripts)
    for asset in (*scripts, "/console/style.css"):
        resp = http.get(asset)
        assert resp.status_code == 200 and resp.headers["content-security-policy"] == csp, asset
        text = resp.text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
        assert "http://" not in text and "https://" not in text, f"{asset} must work offline"


def test_upload_train_watch_and_try(page: Any, stack: Stack, small_hymenoptera_zip: Path, imagenet_samples: Path,
                                    tmp_path: Path) -> None:
    page.goto("/")
    page.wait_for_selector(".model[data-model=imagenet]")
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)

    # Datasets: upload through the page (progress bar), land on its report.
    page.click("text=Datasets")
    page.set_input_files("#upload-file", str(small_hymenoptera_zip))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url("**/#/datasets/*", timeout=60_000)
    dataset_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#class-counts rect.bar")
    assert page.locator("#class-counts rect.bar").count() == 2
    assert page.locator("#problems").inner_text().startswith("problems (")
    page.screenshot(path=str(tmp_path / "dataset.png"), full_page=True)

    # Jobs: the form (fields from the typed spec) starts a linear job on that dataset.
    page.click("text=train on it")
    page.wait_for_selector("#job-form")
    assert page.locator("#job-form select[name=mode] option").all_inner_texts() == \
        ["auto", "linear", "finetune", "gradual"]
    assert page.input_value("#job-form select[name=dataset_id]") == dataset_id
    page.fill("#job-form input[name=model]", "bees")
    # Fine-tuning epochs take seconds each, longer than the event stream's poll: the curve must be seen
    # growing while the job runs (a linear probe's epochs on cached features can all land in one poll).
    page.select_option("#job-form select[name=mode]", "finetune")
    page.fill("#job-form input[name=max_epochs]", "2")
    page.click("#job-form button[type=submit]")
    page.wait_for_url("**/#/jobs/*")

    # While it runs the curves gain points, read from the page as the events arrive.
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = page.locator("#job-state").inner_text() if page.locator("#job-state").count() else ""
        points = int(page.get_attribute("#accuracy-chart", "data-points") or 0) if state else 0
        seen.append((state, points))
        if state in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert seen[-1][0] == "succeeded", (seen[-5:], stack.diagnostics())
    final = seen[-1][1]
    assert final > 1
    counts = [n for _, n in seen]
    assert counts == sorted(counts), "points only ever get added"
    assert any(s == "running" and 0 < n < final for s, n in seen), seen  # seen growing, not only at the end
    page.wait_for_selector("#confusion table")
    assert page.locator("#confusion tr").count() == 3  # header + ants + bees
    assert page.locator("#reliability svg path").count() >= 2
    assert "promoted" in page.locator("#job-result").inner_text() or "first version" in \
        page.locator("#job-result").inner_text()
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    page.click("text=Models")
    page.wait_for_selector(".model[data-model=bees]")
    assert "active version 1" in page.locator(".model[data-model=bees]").inner_text()

    # Try it: a committed photo, top 5 and the heatmap over it, which the toggle hides.
    page.click("text=Try it")
    page.select_option("#try-model", "imagenet")
    page.set_input_files("#try-file", str(imagenet_samples / "n01443537_goldfish.JPEG"))
    page.wait_for_selector("#top5 rect.bar")
    assert page.locator("#top5 rect.bar").count() == 5
    assert "goldfish" in page.locator("#top5").inner_text()
    heat = page.locator("#heatmap")
    heat.wait_for(state="visible")
    box = heat.bounding_box()
    photo = page.locator("#try-photo").bounding_box()
    assert box and photo and box["width"] > 50 and box["x"] >= photo["x"] - 1
    page.screenshot(path=str(tmp_path / "try.png"), full_page=True)
    page.uncheck("#heat-toggle")
    assert not heat.is_visible()
    no_problems(page)
    for name in ("models", "dataset", "job", "try"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_api_key_is_kept_for_the_session_and_sent_as_bearer(page: Any) -> None:
    page.goto("/#/datasets")
    page.wait_for_selector("#upload-form")
    sent: list[str | None] = []
    page.on("request", lambda req: sent.append(req.headers.get("authorization")) if "/v1/" in req.url else None)
    page.fill("#api-key", "key-123")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#upload-form")
    page.reload()
    page.wait_for_selector("#upload-form")
    assert page.input_value("#api-key") == "key-123"  # sessionStorage survives a reload
    assert sent and all(s == "Bearer key-123" for s in sent), sent
    assert page.evaluate("sessionStorage.getItem('tuneserve-api-key')") == "key-123"
    no_problems(page)


def test_search_trials_table_scatter_and_cancel(page: Any, stack: Stack) -> None:
    """A running search as its trials write it (the API reads the same store), drawn and cancelled from the page."""
    from core.settings import Settings
    from jobs import JobStore

    store = JobStore(Settings(home=stack.home).resolved_database_url)
    job = store.create("search-page", "0123456789abcdef", {"search": {"method": "asha", "trials": 5}}, kind="search")
    assert store.claim(job.id, "searcher", 120, 3) is not None
    trials = [
        {"number": 0, "state": "complete", "params": {"lr": 1e-3, "augment": "light"}, "epochs": 6,
         "best_val_accuracy": 0.91, "value": 0.91},
        {"number": 1, "state": "pruned", "params": {"lr": 3e-2, "augment": "none"}, "epochs": 1,
         "best_val_accuracy": 0.55, "value": None},
        {"number": 2, "state": "complete", "params": {"lr": 2e-4, "augment": "standard"}, "epochs": 6,
         "best_val_accuracy": 0.84, "value": 0.84},
        {"number": 3, "state": "running", "params": {"lr": 5e-3, "augment": "light"}, "epochs": 2,
         "best_val_accuracy": None, "value": None},
    ]
    store.record_progress(job.id, "searcher", {"stage": "search", "fraction": 0.6, "epoch": 15, "epochs": 30,
                                               "eta_s": 42.0, "trials": trials, "best_trial": trials[0]})
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("#trial-table")
    assert page.locator("#trial-table tr").count() == 5  # header + 4 trials
    assert page.locator("#trial-table tr.muted").count() == 1  # the pruned one, greyed
    assert page.locator("#trial-scatter circle.point").count() == 3  # trials with an accuracy
    assert page.locator("#trial-scatter circle.pruned").count() == 1
    assert page.locator("#job-eta").inner_text() == "42 s"
    page.click("#cancel-job")
    deadline = time.monotonic() + 10
    while not store.get(job.id).cancel_requested and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.get(job.id).cancel_requested
    store.finish(job.id, "searcher", "cancelled", error="cancelled")
    page.wait_for_selector("#job-state.state-cancelled")
    no_problems(page)
