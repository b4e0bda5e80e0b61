"""The review page and the drift panel in a real browser (Chromium driven by Playwright) on a live API process:
captured predictions are shown photo by photo with the model's answer, its version and the heatmap, and
labelled by key press (a class, "none of these", skip) or by a typed class name; the API then shows them
labelled. The model page's drift panel shows the numbers GET /v1/models/{name}/drift answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.integration.console.test_console_pages import clean

pytestmark = pytest.mark.slow

PHOTOS = ("n01443537_goldfish.JPEG", "n04398044_teapot.JPEG", "n03063599_coffee_mug.JPEG")


def wait(page: Any, selector: str) -> None:
    """Wait for ``selector``; past the timeout, fail showing what the page shows instead."""
    try:
        page.wait_for_selector(selector)
    except Exception as exc:  # Playwright's TimeoutError
        raise AssertionError(f"{selector} never came: {page.locator('main').inner_text()} {page.problems}") from exc


def card_of(page: Any, capture_id: str) -> None:
    wait(page, f"#review-card[data-capture='{capture_id}']")


def test_review_queue_by_keyboard_then_drift_panel(page: Any, stack: Stack, imagenet_samples: Path) -> None:
    http = stack.server.http
    page.goto("/#/review")
    page.wait_for_selector("a[href='#/review/imagenet']")
    clean(page, "review (pick a model)")
    page.goto("/#/review/imagenet")
    page.wait_for_selector("#review-empty")
    assert "no unlabeled captures" in clean(page, "review (empty queue)")

    assert http.put("/v1/models/imagenet/feedback/policy", json={"policy": "all"}).status_code == 200
    answers = []
    for name in PHOTOS:
        resp = http.post("/v1/models/imagenet/predict", files={"file": (name, (imagenet_samples / name).read_bytes(),
                                                                         "image/jpeg")})
        assert resp.status_code == 200, resp.text
        answers.append(resp.json()["results"][0])
    ids = [a["capture_id"] for a in answers]
    labels = http.get("/v1/models/imagenet").json()["labels"]

    page.reload()  # the same hash: a reload, not a navigation
    card_of(page, ids[0])
    top = answers[0]["predictions"][0]
    answer = page.locator("#review-answer").inner_text()
    assert top["label"] in answer and f"{100 * top['probability']:.1f}%" in answer and "version 1" in answer
    assert page.locator("#review-keys button").first.inner_text() == f"1 {labels[0]}"
    heat = page.locator("#review-heatmap")
    heat.wait_for(state="visible")
    box, photo = heat.bounding_box(), page.locator("#review-photo").bounding_box()
    assert box and photo and box["width"] > 50 and photo["x"] - 1 <= box["x"] <= photo["x"] + photo["width"]
    assert "3 unlabeled" in clean(page, "review (a capture)")

    page.keyboard.press("2")  # the model's second class
    card_of(page, ids[1])
    page.keyboard.press("n")  # none of these
    card_of(page, ids[2])
    page.keyboard.press("ArrowRight")  # skip
    page.wait_for_selector("#review-empty")
    assert "2 labelled, 1 skipped" in clean(page, "review (done)")

    done = http.get("/v1/models/imagenet/feedback", params={"state": "labeled"}).json()["items"]
    labelled = {c["id"]: c for c in done}
    assert set(labelled) == set(ids[:2])
    assert labelled[ids[0]]["label"] == labels[1] and not labelled[ids[0]]["none_of_these"]
    assert labelled[ids[1]]["label"] is None and labelled[ids[1]]["none_of_these"]
    queue = http.get("/v1/models/imagenet/feedback", params={"state": "unlabeled"}).json()
    assert [c["id"] for c in queue["items"]] == [ids[2]]  # skipped: still to review

    # The skipped one comes back on the next visit; a class typed in the field (keys typed there label nothing)
    page.reload()
    card_of(page, ids[2])
    page.fill("#review-new-class", "n0 mug")
    page.press("#review-new-class", "Enter")
    page.wait_for_selector("#review-empty")
    assert http.get(f"/v1/models/imagenet/feedback/{ids[2]}").json()["label"] == "n0 mug"

    # The drift panel on the model's page: the API's numbers for version 1
    page.click("#main a[href='#/models/imagenet']")
    wait(page, "#drift-totals tr[data-version='1']")
    page.wait_for_selector("#drift-confidence rect.bar")
    totals = http.get("/v1/models/imagenet/drift").json()["versions"][0]["totals"]
    assert totals["predictions"] >= 3 and totals["reviewed"] == 3 and totals["none_of_these"] == 1

    def shown(field: str) -> str:
        return str(page.locator(f"#drift-totals tr[data-version='1'] td[data-field={field}]").inner_text())

    assert shown("predictions") == str(totals["predictions"])
    assert shown("unknown") == f"{totals['unknown']} ({100 * totals['unknown_share']:.1f}%)"
    assert (shown("reviewed"), shown("reviewed_correct"), shown("none_of_these")) == \
        (str(totals["reviewed"]), str(totals["reviewed_correct"]), "1")
    assert shown("live_accuracy") == f"{100 * totals['live_accuracy']:.1f}%"
    assert page.locator("#drift-confidence rect.bar").count() == 10
    assert page.locator("#drift-classes circle.point").count() >= 1
    clean(page, "a model's page")
