"""The model card of a version trained here on real photos: written when it is published, every section
checked against the job's own numbers (metrics, report.json, the dataset), served as JSON and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markdown_it import MarkdownIt

from core.datasets import Dataset
from core.jobspec import TrainSpec
from core.settings import Settings
from core.weak_validation import wilson_interval
from models import Registry
from models.card import CARD_FILE
from service.http.app import create_app
from tests.service.conftest import wait_ready
from trainer.data.job_data import JobData
from trainer.publish.publisher import export_and_register
from trainer.run.engine import TrainingResult, fine_tune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(hym_small: Dataset) -> TrainingResult:
    return fine_tune(TrainSpec(mode="linear", probe_epochs=8), hym_small)


def test_card_is_written_at_publish_and_agrees_with_the_job(trained: TrainingResult, hym_small: Dataset,
                                                            settings: Settings) -> None:
    registry = Registry(settings.models_dir)
    info = export_and_register(trained, registry, "ants-bees", JobData(hym_small), {"job_id": "job-7"}, activate=True)
    assert CARD_FILE in info.manifest.files
    card = json.loads((info.path / CARD_FILE).read_text())
    report = json.loads((info.path / "report.json").read_text())
    m = trained.metrics

    # data: the dataset's classes, counts per split, duplicates, lineage
    data = card["data"]
    assert data["dataset_id"] == hym_small.id and data["dataset_name"] == hym_small.name
    assert data["classes"] == hym_small.classes == ["ants", "bees"]
    assert data["counts"] == hym_small.counts and data["totals"] == {"train": 12, "val": 8}
    assert data["duplicates"] == {"exact_groups": 0, "near_groups": 0, "files": 0} == \
        {"exact_groups": len([g for g in hym_small.duplicates if g.kind == "exact"]),
         "near_groups": len([g for g in hym_small.duplicates if g.kind == "near"]), "files": 0}
    assert data["lineage"]["job_id"] == "job-7" and data["lineage"]["base"]["name"] == "efficientnet_lite0"

    # training: the resolved spec, the stages and the chosen one with its reason, the time
    training = card["training"]
    assert training["spec"] == trained.spec.model_dump(mode="json") and training["spec"]["mode"] == "linear"
    assert training["chosen_stage"] == m["best_stage"] and training["chosen_reason"] == m["best_stage_reason"]
    assert [s["stage"] for s in training["stages"]] == [r["stage"] for r in m["stages"]]
    assert sum(s["epochs"] for s in training["stages"]) == training["epochs_run"] == m["epochs_run"] == \
        len(trained.history)
    assert training["wall_s"] == m["wall_s"] > 0 and training["train_images"] == 12

    # evaluation: accuracy with its Wilson interval, per class, confusion, calibration, risk-coverage, ood
    ev = card["evaluation"]
    val = report["splits"]["val"]
    assert ev["held_out"] == "val" and set(ev["splits"]) == {"val"}  # no test split in this dataset
    assert ev["splits"]["val"]["accuracy"] == pytest.approx(m["val_accuracy"]) and ev["splits"]["val"]["images"] == 8
    lo, hi = ev["splits"]["val"]["accuracy_ci95"]
    assert (lo, hi) == pytest.approx(wilson_interval(round(m["val_accuracy"] * 8), 8))
    assert lo <= m["val_accuracy"] <= hi and hi - lo > 0.3  # 8 photos: a wide interval, and the card says so
    assert ev["per_class"] == val["per_class"] and ev["confusion"]["matrix"] == val["confusion_matrix"]
    assert ev["calibration"]["ece_before"] == pytest.approx(m["ece_before"])
    assert ev["calibration"]["ece_after"] == pytest.approx(m["ece_after"])
    assert ev["calibration"]["temperature"] == pytest.approx(trained.temperature)
    assert ev["risk_coverage"]["split"] == "val" and ev["risk_coverage"]["points"][0]["coverage"] == 1.0
    assert ev["risk_coverage"]["points"][0]["accuracy"] == pytest.approx(val["accuracy"])
    assert ev["ood"] == info.manifest.ood and ev["ood"]["method"] == "knn_cosine"

    # limitations, from those numbers: a weak 8-photo validation split, no test split, the OOD caveat
    kinds = {item["kind"] for item in card["limitations"]}
    assert {"weak_validation", "no_test_split", "ood"} <= kinds
    weak = next(i["text"] for i in card["limitations"] if i["kind"] == "weak_validation")
    assert weak.startswith("weak val split (8 images)")
    for name, c in val["per_class"].items():  # every class under the recall floor is named, and only those
        named = any(i["kind"] == "low_recall" and f"class {name!r}" in i["text"] for i in card["limitations"])
        assert named == (c["recall"] < 0.8), (name, c)

    # served: the stored card as JSON (with the registry's version number), and as Markdown that renders
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # an allowed Host
        wait_ready(client)
        resp = client.get(f"/v1/models/ants-bees/versions/{info.version}/card")
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        served = resp.json()
        assert served["model"]["version"] == info.version and served["model"]["status"] == "active"
        assert served["model"]["sha256"] == info.manifest.sha256
        assert {k: v for k, v in served.items() if k != "model"} == {k: v for k, v in card.items() if k != "model"}
        md = client.get(f"/v1/models/ants-bees/versions/{info.version}/card", params={"format": "md"})
        assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
        listing = client.get(f"/v1/models/ants-bees/versions/{info.version}/files").json()
        assert CARD_FILE in {f["name"] for f in listing["files"]}
    html = MarkdownIt("commonmark").enable("table").render(md.text)
    for heading in ("Data", "Training", "Evaluation", "Limitations"):
        assert f"<h2>{heading}</h2>" in html
    assert html.count("<table>") >= 5  # counts, stages, spec, accuracy, per class, confusion, ...
    assert "<td>ants</td>" in html and f"{100 * m['val_accuracy']:.1f}%" in html
    assert f"{100 * lo:.1f}% to {100 * hi:.1f}%" in html
    assert "weak val split (8 images)" in html


def test_a_version_without_a_card_gets_one_built_from_what_it_stores(settings: Settings, tmp_path: Path) -> None:
    """The pretrained model (bootstrapped before cards existed: no card.json, no report): built on demand."""
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # an allowed Host
        wait_ready(client)
        card = client.get("/v1/models/imagenet/versions/1/card").json()
        assert card["model"]["name"] == "imagenet" and card["model"]["version"] == 1
        assert card["model"]["labels"] == 1000 and card["data"]["classes"][:1] == ["tench"]
        assert any(i["kind"] == "ood" for i in card["limitations"])
        md = client.get("/v1/models/imagenet/versions/1/card?format=md").text
        assert md.startswith("# Model card: imagenet version 1")
        assert client.get("/v1/models/imagenet/versions/9/card").status_code == 404
        bad = client.get("/v1/models/imagenet/versions/1/card?format=html")
        assert bad.status_code == 422 and "detail" in bad.json()
