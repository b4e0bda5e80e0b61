"""The HTTP service: routes, onnxruntime predictor, batching, hot-swap. Never imports torch or trainer."""
