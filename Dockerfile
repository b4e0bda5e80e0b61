# Two images from one file:
#   docker build --target api .     the HTTP API from the base package: no torch (a venv of it is 0.8 GB, 6.5 GB with every extra)
#   docker build --target worker .  a training worker: the base package plus the `train` extra
# Both install from the lock (requirements/constraints.txt, `make lock`).
# On a GPU host either runs onnxruntime's CUDA provider (and the worker torch's) when the driver is mounted.
FROM python:3.11-slim AS source
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY core core
COPY models models
COPY jobs jobs
COPY dataset_store dataset_store
COPY feedback feedback
COPY transport transport
COPY service service
COPY trainer trainer
COPY tuneserve tuneserve
ENV TUNESERVE_HOME=/data PORT=8000
VOLUME /data

FROM source AS api
RUN pip install --no-cache-dir -c requirements/constraints.txt .
EXPOSE 8000
# No worker here (it needs the train extra); the registry is filled by a worker's `tuneserve bootstrap`.
# It binds 0.0.0.0, so it starts only with TUNESERVE_API_KEYS (or _FILE) set: README, "Running in production".
CMD ["tuneserve", "serve", "--no-worker", "--host", "0.0.0.0"]

FROM source AS worker
RUN pip install --no-cache-dir -c requirements/constraints.txt '.[train]'
CMD ["sh", "-c", "tuneserve bootstrap && tuneserve worker"]
