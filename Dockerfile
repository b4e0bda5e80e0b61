# CPU image; on a GPU host the same image runs onnxruntime's CUDA provider when the driver is mounted.
FROM python:3.11-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY core core
COPY models models
COPY jobs jobs
COPY dataset_store dataset_store
COPY transport transport
COPY service service
COPY trainer trainer
COPY tuneserve tuneserve
RUN pip install --no-cache-dir .
ENV TUNESERVE_HOME=/data PORT=8000
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "tuneserve bootstrap && tuneserve serve --host 0.0.0.0"]
