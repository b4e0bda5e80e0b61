"""The HTTP service, in two rooms: http/ (the FastAPI app, middlewares, routes) over inference/ (loaded models,
the predictor, batching, onnxruntime). Never imports torch or trainer."""
