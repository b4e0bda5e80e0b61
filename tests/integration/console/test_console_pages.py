"""Every console page as a new user sees it, in a real browser (Debian's Chromium driven by Playwright) on
a live stack (a real API process and a real worker): no page shows "null" or "undefined", empty lists say
so in a sentence, datasets and jobs are shown by name, a job's header counts epochs as its chart does
(whole-number ticks), every file of the version can be downloaded, the heatmap says it covers the centre
crop, and a version's model card renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.integration.procs import upload, wait_job

pytestmark = pytest.mark.slow

LEAKS = re.compile(r"\b(null|undefined|NaN|\[object Object\])\b")



def clean(page: Any, where: str) -> str:
    """The page's visible text, checked for values shown as "null"/"undefined" and for script errors."""
    text: str = page.locator("main").inner_text()
    assert not LEAKS.search(text), f"{where} shows {LEAKS.search(text)}: {text[:2000]}"
    assert not [p for p in page.problems if "favicon" not in p], page.problems
    return text


def test_empty_lists_say_so(page: Any) -> None:
    """A fresh install: no datasets, no jobs. Sentences, not bare table headers; the pretrained model's card."""
    page.goto("/#/datasets")
    page.wait_for_selector("#upload-form")
    assert page.locator("#dataset-list").count() == 0
    assert "No datasets yet" in clean(page, "datasets (empty)")
    page.goto("/#/jobs")
    page.wait_for_selector("#job-form")
    assert page.locator("#job-list").count() == 0 and page.locator("#job-form select[name=dataset_id]").count() == 0
    text = clean(page, "jobs (empty)")
    assert "No jobs yet" in text and "No datasets yet" in text
    # the form's learning rate is the API's default (GET /v1/jobs/schema), not "auto"
    assert float(page.input_value("#job-form input[name=lr]")) == 0.001
    page.goto("/#/models")
    page.wait_for_selector(".model[data-model=imagenet] .card-link")
    clean(page, "models")
    page.click(".model[data-model=imagenet] .card-link")
    page.wait_for_selector("#model-card #card-limitations li")
    text = clean(page, "the imagenet card")
    assert "Model card: imagenet version 1" in text  # built on demand: it was published before cards
    assert page.locator("#card-limitations li[data-kind=ood]").count() == 1


def test_every_page_after_a_job(page: Any, stack: Stack, small_hymenoptera_zip: Path, imagenet_samples: Path) -> None:
    http = stack.server.http
    dataset_id = upload(http, small_hymenoptera_zip)
    name = http.get(f"/v1/datasets/{dataset_id}").json()["name"]
    resp = http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "bees", "mode": "finetune",
                                       "hyperparameters": {"max_epochs": 2, "probe_epochs": 3}})
    assert resp.status_code == 202, resp.text
    job = wait_job(http, resp.json()["id"], ("succeeded", "failed", "cancelled"), 300, stack.diagnostics)
    assert job["state"] == "succeeded", job

    # Datasets: listed by name; the dataset's own page
    page.goto("/#/datasets")
    page.wait_for_selector("#dataset-list")
    assert page.locator("#dataset-list a", has_text=name).count() == 1
    clean(page, "datasets")
    page.click(f"#dataset-list a:text-is('{name}')")
    page.wait_for_selector("#class-counts rect.bar")
    assert f"Dataset {name}" in clean(page, "a dataset")

    # Jobs: the dropdown names datasets (name and counts, the id only as a suffix), the list names them too
    page.goto("/#/jobs")
    page.wait_for_selector("#job-list")
    option = page.locator("#job-form select[name=dataset_id] option").first
    assert option.get_attribute("value") == dataset_id and option.inner_text().startswith(f"{name} · 2 classes")
    assert page.locator("#job-list", has_text=name).count() == 1 and "bees train" in clean(page, "jobs")

    # A job: the header counts epochs across stages, as the chart draws them, on whole-number ticks
    page.click("#job-list a:has-text('bees train')")
    page.wait_for_selector("#job-state.state-succeeded")
    page.wait_for_selector("#downloads button")
    points = int(page.get_attribute("#accuracy-chart", "data-points") or 0)
    assert points == len(job["metrics"]) == 5  # 3 probe + 2 fine-tuning epochs
    assert page.locator("#job-progress").inner_text().startswith("5 epochs run (linear 3, finetune 2)")
    ticks = page.locator("#accuracy-chart text.xtick").all_text_contents()  # SVG text has no innerText
    assert ticks and all(t.isdigit() for t in ticks) and int(ticks[-1]) <= 5
    assert page.locator("#accuracy-chart line.mark").count() == 1  # where fine-tuning starts
    files = page.locator("#downloads button").all_inner_texts()
    assert files[0] == "model.onnx" and {"manifest.json", "report.json", "card.json"} <= set(files)
    text = clean(page, "a job")
    assert f"dataset {name}" in text and "Job: bees train" in text

    # The model card from the job page: every section, the numbers of this job
    page.click("#job-card")
    page.wait_for_selector("#model-card #card-limitations li")
    text = clean(page, "the bees card")
    for section in ("Data", "Training", "Evaluation", "Limitations"):
        assert page.locator(f"#model-card h3:text-is('{section}')").count() == 1
    val = job["result"]["metrics"]["val_accuracy"]
    assert f"{100 * val:.1f}%" in page.locator("#card-accuracy").inner_text()
    assert page.locator("#card-confusion tr").count() == 3 and page.locator("#card-stages tr").count() == 3
    assert name in page.locator("#card-data").inner_text()
    assert "Model card: bees version 1" in text

    # Models: lineage by dataset name, a card link per version
    page.goto("/#/models")
    page.wait_for_selector(".model[data-model=bees] .card-link")
    row = page.locator(".model[data-model=bees] tr[data-version='1']").inner_text()
    assert name in row and dataset_id not in row
    clean(page, "models")

    # Try it: the heatmap says it covers the centre crop, and the crop is drawn
    page.goto("/#/try")
    page.select_option("#try-model", "imagenet")
    page.set_input_files("#try-file", str(imagenet_samples / "n01443537_goldfish.JPEG"))
    page.wait_for_selector("#crop-note")
    assert "centre crop" in page.locator("#crop-note").inner_text()
    page.locator("#crop-box").wait_for(state="visible")
    crop, heat = page.locator("#crop-box").bounding_box(), page.locator("#heatmap").bounding_box()
    assert crop and heat and abs(crop["x"] - heat["x"]) < 1 and abs(crop["width"] - heat["width"]) < 1
    clean(page, "try it")
