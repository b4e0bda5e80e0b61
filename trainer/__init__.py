"""Training side: backbone catalogue, fine-tuning, evaluation, ONNX export, Celery tasks."""
