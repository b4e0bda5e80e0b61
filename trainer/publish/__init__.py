"""Turning a run into a served version: evaluation, report, ONNX export, variants, the gate, registration."""
