"""One settings class for every process (API, worker, CLI), read from the environment.

Variables are prefixed ``TUNESERVE_`` (``TUNESERVE_HOME``, ``TUNESERVE_BROKER_URL`` ...); ``PORT`` is
also honoured for the HTTP port because that is what ``make run`` users expect.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every field's ``description`` is its row in the README's settings table (``make docs-settings``
    writes it; tests/core/test_settings_doc.py fails when they differ)."""

    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", extra="ignore")

    home: Path = Field(default=Path("var"), description="data folder: models, datasets, jobs database, work files")
    host: str = Field(default="127.0.0.1", description="address `serve` binds (same as `--host`); without API keys "
                      "only loopback addresses are allowed")
    # PORT too: that is what `make run` users expect.
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "TUNESERVE_PORT"),
                      description="HTTP port")

    # Broker and job store.
    broker_url: str | None = Field(default=None, description="external Redis (`redis://host:6379/0`); unset = the "
                                   "private embedded Redis that `serve` starts")
    database_url: str | None = Field(default=None, description="job store, e.g. `postgresql+psycopg://user@host/db`; "
                                     "unset = SQLite in home")
    # Replicas and workers on hosts without a shared disk (core/storage.py).
    storage_url: str | None = Field(default=None, description="object storage for the registry (versions, "
                                    "manifests, active pointers), datasets and job artefacts: `s3://bucket/prefix`; "
                                    "endpoint, region and credentials are boto3's (`AWS_ENDPOINT_URL`, `AWS_*`, "
                                    "profiles, instance roles); unset = the home folder. Each process keeps a "
                                    "checked copy of what it reads under `work/storage`")
    db_auto_upgrade: bool = Field(default=True, description="an older job database is upgraded (Alembic) when a "
                                  "process opens it; 0: it is refused instead, naming `tuneserve db upgrade` to run "
                                  "by hand after a backup (README, Upgrading)")

    # Prediction limits.
    max_image_pixels: int = Field(default=40_000_000, description="larger images are refused with 413")
    # Bounds a request's decode time and memory.
    max_request_pixels: int = Field(default=256_000_000, ge=1, description="decode budget: the pixels (width x "
                                    "height, from the headers) all images of one predict request may hold together; "
                                    "past it the request gets 413 before any pixel is decoded")
    max_request_bytes: int = Field(default=32 * 1024 * 1024, description="prediction request body limit (413)")
    default_top_k: int = Field(default=5, description="labels a prediction lists when the request names no `top_k`")

    device: str = Field(default="auto", description="onnxruntime: `auto` uses the CUDA provider when a GPU is usable, "
                        "else CPU; `cpu` forces the CPU provider")
    intra_op_threads: int = Field(default=0, description="onnxruntime threads for a lone batch; 0 = one per core")
    decode_threads: int = Field(default=0, description="decode threads for requests with several images and on CUDA "
                                "(on CPU lanes a single image is decoded by its lane); 0 = one per core")
    # No fork-join between cores: each lane is one thread of its own session.
    cpu_lanes: int = Field(default=0, description="CPU: batches that may run side by side under load, one thread each; "
                           "a request that arrives alone still gets every core. 0 = one lane per core and one more "
                           "(where there are several cores); 1 = off")
    # Several workers on one machine: their thread pools would fight over the same cores.
    train_threads: int = Field(default=0, description="torch threads per worker; 0 = torch's default (one per core). "
                               "Set cores / workers when several workers share a machine")
    variant: Literal["auto", "fp32", "fp16", "int8"] = Field(
        default="auto", description="which ONNX variant to serve: `auto` = fp16 on CUDA, int8 on CPU, when the "
        "version has that variant and it passed its accuracy gate (top-1 agreement with fp32 on val and test photos, "
        "stated in the manifest's `variants.<kind>.gate`) and, for int8, it ran at least `TUNESERVE_INT8_MIN_SPEEDUP` "
        "times fp32's speed on this CPU, else fp32; `GET /v1/models/{name}` shows `variant` and "
        "`variant_reason` (service/inference/selection.py)")
    int8_min_speedup: float = Field(
        default=1.1, ge=0.0, description="`auto` on the CPU serves a version's int8 variant only when, timed on this "
        "machine as the version loads, it ran at least this many times fp32's speed (measured one thread: int8 2.1x "
        "fp32's speed on an EPYC with VNNI, 1.5-1.7x on a Zen 3 EPYC with AVX2 only, 0.9x on a Zen 2 one; "
        "docs/benchmarks.md); 0 = skip the timing (service/inference/selection.py)")
    decoder: Literal["auto", "pil", "gpu"] = Field(
        default="auto", description="image decoding: `pil` (CPU), `gpu` (nvImageCodec + preprocessing graph, the "
        "`gpu` extra; docs/gpu.md), `auto` = gpu when CUDA serves and nvImageCodec is installed")
    api_workers: int = Field(default=1, ge=1, description="HTTP worker processes of `tuneserve serve` sharing the port "
                             "(and the GPU); same as `--workers`")
    build_variants: str = Field(default="", description="variants jobs build beside fp32, gated on val and "
                                "test: e.g. `int8` or `fp16,int8`")

    # Dynamic batching: the per-device defaults were chosen by measurement (docs/benchmarks.md).
    max_batch_size: int = Field(default=0, description="dynamic batching: largest batch; 0 = per-device default")
    max_delay_ms: float = Field(default=-1.0, description="dynamic batching: longest wait for a batch to fill; "
                                "negative = per-device default")
    max_queue: int = Field(default=256, description="images queued per model; a single-image request beyond it gets "
                           "503 + `Retry-After`")

    # Pub/sub is only a hint: every process polls too.
    refresh_interval_s: float = Field(default=2.0, description="how often every API process re-reads the active "
                                      "versions (hot-swap)")
    activate_wait_s: float = Field(default=10.0, description="how long `POST .../activate` waits for this process to "
                                   "serve the new version before answering `\"pending\"`")
    # Many models per process (service/inference/manager.py; Triton's explicit model control, ModelMesh's LRU).
    max_loaded_models: int = Field(default=0, ge=0, description="at most this many model versions loaded per API "
                                   "process; past it the least recently used one is unloaded (after its in-flight "
                                   "requests) and loaded again on its next request; 0 = no budget: every active model "
                                   "is loaded at start and kept")
    preload_models: str = Field(default="", description="with a budget: comma-separated model names loaded at start "
                                "and never unloaded (readiness waits for them)")

    # Datasets.
    max_upload_bytes: int = Field(default=4 * 1024**3, description="dataset upload body limit (413)")
    max_archive_files: int = Field(default=200_000, description="dataset archives with more entries are refused "
                                   "(413) before anything is unpacked")
    max_uncompressed_bytes: int = Field(default=4 * 1024**3, description="dataset archives that would unpack to more "
                                        "are refused (413)")
    max_compression_ratio: float = Field(default=200.0, description="dataset archive entries that unpack to more than "
                                         "this many times their packed size are refused (zip bombs)")
    min_image_side: int = Field(default=32, description="dataset images with a shorter side are reported and skipped")
    min_images_per_class: int = Field(default=5, description="a dataset class with fewer usable images is refused")

    # Jobs.
    promotion_tolerance: float = Field(default=0.005, description="a candidate is promoted when its held-out "
                                       "accuracy >= the active version's - tolerance")
    lease_seconds: float = Field(default=60.0, description="a running job's lease: when its worker stops renewing it "
                                 "(killed, or stopped by SIGTERM) for this long, the job is re-queued and resumes from "
                                 "its checkpoint")
    job_timeout_s: float = Field(default=6 * 3600.0, description="a job not finished this long after it was created "
                                 "is failed")
    job_max_attempts: int = Field(default=3, description="a job whose worker was lost this many times is failed, not "
                                  "retried")
    task_queue: str = Field(default="tuneserve", description="Celery queue the API sends to and workers consume")

    # Access (README, "Running in production"). SecretStr: a logged or printed Settings never shows the keys.
    api_keys: SecretStr = Field(default=SecretStr(""), description="comma-separated `role:key` pairs, roles "
                                "`admin`, `read` (every GET: dashboards) and `predict`; none: `serve` binds loopback "
                                "addresses only")
    # A file keeps the keys out of process listings.
    api_keys_file: Path | None = Field(default=None, description="a file of one `role:key` a line (`#` comments), "
                                       "read at start")
    allow_anonymous: bool = Field(default=False, description="1 = serve on a non-loopback address without keys (a "
                                  "trusted network only)")
    metrics_require_key: bool = Field(default=False, description="1 = `GET /metrics` needs a `read` or `admin` key "
                                      "(when keys are configured); 0 = open like the probes")
    allowed_origins: str = Field(default="", description="comma-separated `scheme://host[:port]` whose pages may call "
                                 "the API cross-site (CORS); others' mutating requests get 403")
    # The guard against DNS rebinding (service/http/origins.py).
    allowed_hosts: str = Field(default="", description="comma-separated names a request's `Host` may give (`name`, "
                               "`name:port`, `*.domain`, `*`); others get 400 before routing. Empty = the loopback "
                               "names and the bind address (for 0.0.0.0: this machine's names and addresses)")

    # Slow and greedy clients (service/http/guards.py, service/http/http_protocol.py).
    header_timeout_s: float = Field(default=10.0, description="a connection must send a request's headers within "
                                    "this, else 408 and closed")
    body_idle_timeout_s: float = Field(default=15.0, description="a request body that stalls this long gets 408 and "
                                       "the connection is closed")
    body_grace_s: float = Field(default=10.0, description="after this, a body must arrive at `MIN_BODY_RATE` on "
                                "average, else 408")
    min_body_rate: float = Field(default=1024.0, description="bytes/s a body must average after `BODY_GRACE_S`")
    # Bounds the memory unfinished bodies take.
    max_inflight_uploads: int = Field(default=8, ge=1, description="requests with a body over 1 MiB (or chunked) read "
                                      "at once per process; more wait `UPLOAD_WAIT_S`, then 503 + `Retry-After`")
    upload_wait_s: float = Field(default=5.0, description="how long a large body waits for a slot")
    queue_share: float = Field(default=0.25, gt=0, le=1, description="a request of many images holds at most "
                               "`MAX_QUEUE` * this share of them queued at once; the rest follow as those finish")
    queue_wait_s: float = Field(default=30.0, description="how long such a request waits for room, then 503")
    max_event_streams_per_client: int = Field(default=8, ge=1, description="open job event streams "
                                              "(`GET /v1/jobs/{id}/events`) per client address; more get 429")
    max_event_streams: int = Field(default=128, ge=1, description="open job event streams per process; more get 429")

    log_format: Literal["text", "json"] = Field(default="text", description="`json`: one JSON object a line, with "
                                                "`job_id`, `model`, `version` keys where they apply")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="`DEBUG` adds one line per request; identical warnings are written at most once "
        "a minute")

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def feedback_dir(self) -> Path:
        """Captured predictions and corrections, one folder per model (feedback/store.py)."""
        return self.home / "feedback"

    @property
    def work_dir(self) -> Path:
        """Scratch space for checkpoints, caches and temp uploads (same filesystem as home)."""
        return self.home / "work"

    # The work dir's sub-paths: every module that writes scratch files asks here.
    @property
    def storage_cache_dir(self) -> Path:
        """This process's verified copies of what it read from object storage (``TUNESERVE_STORAGE_URL``)."""
        return self.work_dir / "storage"

    @property
    def uploads_dir(self) -> Path:
        return self.work_dir / "uploads"

    def job_checkpoint_dir(self, job_id: str) -> Path:
        """A training job's checkpoint (removed when the job ends)."""
        return self.work_dir / "jobs" / job_id

    def pixel_cache_dir(self, dataset_id: str) -> Path:
        """Decoded pixels of a dataset, shared by every job and trial on it."""
        return self.work_dir / "cache" / dataset_id

    def cli_cache_dir(self, dataset_id: str) -> Path:
        """``tuneserve train``'s decoded pixels (kept apart from the workers')."""
        return self.work_dir / "cli" / dataset_id / "cache"

    def search_dir(self, job_id: str) -> Path:
        """A search's saved best-trial models (the finalizer publishes the best one)."""
        return self.work_dir / "search" / job_id

    def optuna_journal(self, job_id: str) -> Path:
        """A search's Optuna journal when no PostgreSQL is configured."""
        return self.work_dir / "optuna" / f"{job_id}.log"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'jobs.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
