"""Serving predictions: loaded models, the predictor, batching, decoding, preprocessing, onnxruntime."""
