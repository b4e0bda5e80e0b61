"""The naive peer: a FastAPI endpoint that runs the torch model once per request (no batching, no ONNX).

What a first version of an image-classification endpoint usually looks like: decode with PIL,
torchvision's eval transform, ``model(x)`` under ``no_grad`` in Starlette's thread pool, JSON out.
Run: ``uvicorn bench.serving.naive_torch_app:app`` (bench/serving/serve.py starts it for the comparison).
"""

from __future__ import annotations

import torch
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from core.images import open_rgb
from trainer.backbones import create_backbone, imagenet_labels
from trainer.data.transforms import EvalPreset

backbone = create_backbone()
model = backbone.model.eval()
preset = EvalPreset(backbone.preprocessing)
labels = imagenet_labels()
app = FastAPI()


def classify(data: bytes, k: int) -> list[dict[str, object]]:
    x = preset(open_rgb(data, 40_000_000)).unsqueeze(0)
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1)[0]
    top = torch.topk(probs, k)
    return [{"label": labels[int(i)], "index": int(i), "probability": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request, top_k: int = 5) -> dict[str, object]:
    data = await request.body()
    return {"results": [{"predictions": await run_in_threadpool(classify, data, top_k)}]}
