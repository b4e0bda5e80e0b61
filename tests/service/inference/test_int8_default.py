"""int8 is the CPU default when the version's int8 variant passed its gate on val and test photos, and the
model's description says which variant serves and why; without one, fp32 with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from core.settings import Settings
from models import Registry
from service.http.app import create_app
from service.inference.selection import variant_and_reason
from tests.service.conftest import wait_ready

TABBY = "n02123045_tabby.JPEG"


def test_auto_on_cpu_serves_a_gated_int8_and_says_why(settings: Settings, imagenet_samples: Path,
                                                      hymenoptera: Path, tmp_path: Path) -> None:
    from service.inference.preprocess import preprocess
    from trainer.publish.variants import GATE_RULE, build_variants

    registry = Registry(settings.models_dir)
    info = registry.get("imagenet", 1)
    pre = info.manifest.preprocessing

    def batch(files: list[Path]) -> np.ndarray:
        return np.stack([preprocess(f.read_bytes(), pre, 10**8) for f in files])

    photos = sorted(imagenet_samples.glob("*.JPEG"))
    calib = batch(sorted(hymenoptera.rglob("*.jpg"))[:16])
    out = tmp_path / "variants"
    out.mkdir()
    built = build_variants(info.model_path, out, calib, batch(photos[:12]), None, kinds=("int8",),
                           test=(batch(photos[12:24]), None))
    gate = built["int8"].gate
    assert gate is not None and gate["rule"] == GATE_RULE  # the manifest states the gate it passed
    assert set(gate["splits"]) == {"val", "test"} and gate["splits"]["test"]["images"] == 12
    assert built["int8"].top1_agreement == min(s["top1_agreement"] for s in gate["splits"].values()) >= 0.99
    extra = {**{v.file: out / v.file for v in built.values()}, **{f: info.path / f for f in info.manifest.files}}
    v2 = registry.register(info.manifest.model_copy(update={"variants": built}), info.model_path,
                           extra_files=extra, activate=True).version

    with TestClient(create_app(Settings(home=settings.home, device="cpu"))) as client:  # variant: auto
        wait_ready(client)
        view = client.get("/v1/models/imagenet").json()
        assert view["serving_version"] == v2 and view["variant"] == "int8"
        assert "int8 passed its gate" in view["variant_reason"] and "test" in view["variant_reason"]
        stored = client.get(f"/v1/models/imagenet/versions/{v2}/files/manifest.json").json()
        assert stored["variants"]["int8"]["gate"]["splits"]["val"]["images"] == 12
        photo = (imagenet_samples / TABBY).read_bytes()
        answer = client.post("/v1/models/imagenet/predict?top_k=1", content=photo,
                             headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200 and answer.json()["version"] == v2
        int8_top1 = answer.json()["results"][0]["predictions"][0]["label"]

        registry.activate("imagenet", 1)  # version 1 has no int8 variant: fp32, and the reason
        client.post("/v1/models/imagenet/versions/1/activate")
        view = client.get("/v1/models/imagenet").json()
        assert view["serving_version"] == 1 and view["variant"] == "fp32"
        assert "no int8 variant" in view["variant_reason"]
        fp32 = client.post("/v1/models/imagenet/predict?top_k=3", content=photo, headers={"content-type": "image/jpeg"})
        assert int8_top1 in [p["label"] for p in fp32.json()["results"][0]["predictions"]]  # same answer, near


def test_reasons_name_the_setting_when_it_decides() -> None:
    assert variant_and_reason("fp32", {}, ["CPUExecutionProvider"]) == ("fp32", "TUNESERVE_VARIANT=fp32")
    variant, why = variant_and_reason("int8", {}, ["CPUExecutionProvider"])
    assert variant == "fp32" and "no int8 variant" in why
