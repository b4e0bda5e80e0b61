"""Photos whose cost is out of proportion to their bytes are refused from their header, before any pixel is
decoded or resized: a 20000x1 PNG (143 bytes) once became a 5,120,000x256 resize of 5.5 GB."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.images import MAX_ASPECT, ImageError, check_resized
from dataset_store.validate import check_file
from models.manifest import Preprocessing
from service.inference.preprocess import decode

PRE = Preprocessing()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def resizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Every size Pillow is asked to resize to (the arrays a resize allocates)."""
    seen: list[tuple[int, int]] = []
    original = Image.Image.resize

    def recording(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        seen.append((int(size[0]), int(size[1])))
        return original(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recording)
    yield seen


@pytest.mark.parametrize("size", [(20000, 1), (1, 20000), (8000, 1), (1000, 10)])
def test_stripes_are_refused_before_any_resize(size: tuple[int, int], resizes: list[tuple[int, int]]) -> None:
    with pytest.raises(ImageError) as err:
        decode(png(*size), PRE, 40_000_000)
    assert err.value.kind == "aspect" and f"{MAX_ASPECT:g}:1" in str(err.value)
    assert resizes == []


def test_the_longest_allowed_stripe_resizes_within_its_bound(resizes: list[tuple[int, int]]) -> None:
    width, height = int(60 * MAX_ASPECT), 60
    out = decode(png(width, height), PRE, 40_000_000)
    assert out.size == (PRE.crop, PRE.crop)
    assert resizes and all(w * h <= PRE.resize * PRE.resize * MAX_ASPECT for w, h in resizes), resizes
    with pytest.raises(ImageError):
        check_resized(width + 1, height, PRE.resize)


@pytest.mark.parametrize("size", [(20000, 1), (1, 20000), (8000, 1)])
def test_predict_and_explain_answer_422_naming_the_limit(client: TestClient, size: tuple[int, int]) -> None:
    for query in ("", "?explain=true"):
        resp = client.post(f"/v1/models/imagenet/predict{query}", content=png(*size),
                           headers={"Content-Type": "image/png"})
        assert resp.status_code == 422, resp.text
        assert "aspect ratio" in resp.json()["detail"] and f"{MAX_ASPECT:g}:1" in resp.json()["detail"]
    many = client.post("/v1/models/imagenet/predict", files=[
        ("file", ("ok.png", png(300, 200), "image/png")), ("file", ("stripe.png", png(20000, 1), "image/png"))])
    assert many.status_code == 422 and "stripe.png" in many.json()["detail"]
    assert client.post("/v1/models/imagenet/predict", content=png(300, 200),
                       headers={"Content-Type": "image/png"}).status_code == 200


def test_a_stripe_in_a_dataset_is_listed_as_a_problem(tmp_path: Path) -> None:
    stripe = tmp_path / "stripe.png"
    stripe.write_bytes(png(4000, 40))  # passes the 32 px minimum side, not the aspect ratio
    checked = check_file(str(stripe), 40_000_000, 32)
    assert checked.problem is not None and "aspect ratio" in checked.problem
    fine = tmp_path / "fine.png"
    fine.write_bytes(png(400, 40))
    assert check_file(str(fine), 40_000_000, 32).problem is None
