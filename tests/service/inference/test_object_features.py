"""Near duplicates judged on the object, with the real ImageNet model (bootstrapped once per session).

Two different real photos laid on one textured floor pass the thumbnail check (the floor fills the
thumbnail) but not the features; a re-encoded copy passes both; a copy filed under another label is
still found, with the advice to fix the labels; the report names the method.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter

from core.datasets.schemas import IngestLimits
from core.settings import Settings
from dataset_store.dedup import duplicate_groups
from dataset_store.validate import check_file
from models import Registry
from service.http.app import create_app
from service.inference.object_features import FeatureModel
from tests.dataset_store.datasets_kit import class_files, make_zip, reencoded
from tests.photos import HYMENOPTERA

LIMITS = IngestLimits()
ANT = HYMENOPTERA / "val" / "ants" / "1053149811_f62a3410d3.jpg"
BEE = HYMENOPTERA / "val" / "bees" / "1181173278_23c36fac71.jpg"


def floor() -> Image.Image:
    """Wooden planks with grain, 480x360: one backdrop for every object."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:360, 0:480].astype(np.float32)
    row = (y // 60).astype(int)
    value = 12 * np.sin((x + rng.uniform(0, 500, 8)[row]) / 9 + 3 * np.sin(y / 23)) + np.where(y % 60 < 2, -40, 0)
    rgb = np.clip(np.array([150, 105, 70], np.float32) + value[..., None] + rng.normal(0, 5, (360, 480, 3)), 0, 255)
    return Image.fromarray(rgb.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def on_floor(photo: Path) -> bytes:
    """``photo`` cut out with a soft oval, under a quarter of the frame's height, in the middle of the floor."""
    back = floor()
    obj = Image.open(photo).convert("RGB")
    h = 80
    piece = obj.resize((int(h * obj.width / obj.height), h))
    mask = Image.new("L", piece.size, 0)
    ImageDraw.Draw(mask).ellipse((4, 4, piece.width - 4, piece.height - 4), fill=255)
    back.paste(piece, ((480 - piece.width) // 2, (360 - h) // 2), mask.filter(ImageFilter.GaussianBlur(4)))
    buf = io.BytesIO()
    back.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def feature_model(bootstrapped_home: Path) -> FeatureModel:
    settings = Settings(home=bootstrapped_home)
    return FeatureModel(Registry(settings.models_dir), settings)


def _files(tmp_path: Path, named: dict[str, bytes]) -> list[Path]:
    out = []
    for name, data in named.items():
        out.append(tmp_path / name)
        out[-1].write_bytes(data)
    return out


def test_same_floor_different_objects_pass_the_thumbnails_but_not_the_features(
        tmp_path: Path, feature_model: FeatureModel) -> None:
    ant, bee = on_floor(ANT), on_floor(BEE)
    paths = _files(tmp_path, {"ant.jpg": ant, "bee.jpg": bee, "ant_copy.jpg": reencoded(ant, scale=0.7, quality=60)})
    checked = [check_file(str(p), 10**8, 32) for p in paths]
    digests, prints = [c.sha256 for c in checked], [c.fingerprint for c in checked]
    by_thumb = duplicate_groups(digests, prints, LIMITS.near_duplicate_distance, LIMITS.near_duplicate_similarity)
    assert by_thumb.near == [[0, 1, 2]]  # the floor fills the thumbnails: all three "alike"
    objects = feature_model.current()
    assert objects is not None and objects.model == "imagenet v1"
    dups = duplicate_groups(digests, prints, LIMITS.near_duplicate_distance, LIMITS.near_duplicate_similarity,
                            objects, paths, LIMITS.near_duplicate_cosine)
    assert dups.method == "features" and dups.near == [[0, 2]]  # the ant and its re-encoded copy only
    ((i, j, sim),) = dups.links
    assert (i, j) == (0, 2) and sim >= LIMITS.near_duplicate_cosine
    feats = objects.embed(paths[:2])
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    assert float(unit[0] @ unit[1]) < LIMITS.near_duplicate_cosine  # the ant and the bee: another object


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=home))) as c:
        yield c


def test_upload_finds_a_copy_under_two_labels_and_names_the_method(client: TestClient, tmp_path: Path) -> None:
    ant, bee = on_floor(ANT), on_floor(BEE)
    files = class_files({"hat": 6, "shorts": 6}, seed=5)
    files |= {"hat/on_floor.jpg": ant, "shorts/on_floor.jpg": bee,  # different objects, one floor
              "shorts/same_ant.jpg": reencoded(ant, scale=0.8, quality=70)}  # the hat photo again, mislabelled
    archive = make_zip(tmp_path / "clothes.zip", files)
    r = client.post("/v1/datasets", files={"file": ("clothes.zip", archive.read_bytes(), "application/zip")})
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["duplicate_check"] == {"method": "features", "model": "imagenet v1",
                                         "min_similarity": LIMITS.near_duplicate_cosine, "note": ""}
    near = [g for g in report["duplicates"] if g["kind"] == "near"]
    assert [g["paths"] for g in near] == [["hat/on_floor.jpg", "shorts/same_ant.jpg"]]
    assert near[0]["similarity"] >= LIMITS.near_duplicate_cosine
    advice = [w for w in report["warnings"] if "fix the labels" in w]
    assert len(advice) == 1 and "shorts/same_ant.jpg" in advice[0] and "shorts/on_floor.jpg" not in advice[0]
