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
    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", extra="ignore")

    home: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "TUNESERVE_PORT"))

    # Broker and job store. Unset broker URL = the embedded private Redis that `serve` starts.
    broker_url: str | None = None
    database_url: str | None = None
    # An older job database is upgraded (Alembic) when a process opens it; false: it is refused instead,
    # naming `tuneserve db upgrade` to run by hand (after a backup).
    db_auto_upgrade: bool = True

    # Prediction limits.
    max_image_pixels: int = 40_000_000
    # Decode budget: the pixels (width x height, from the headers) all images of one predict request may
    # hold together; past it the request gets 413 before any pixel is decoded (bounds its time and memory).
    max_request_pixels: int = Field(default=256_000_000, ge=1)
    max_request_bytes: int = 32 * 1024 * 1024
    max_top_k: int = 1000
    default_top_k: int = 5

    # onnxruntime: "auto" picks CUDA when usable, else CPU; "cpu" forces the CPU provider.
    device: str = "auto"
    intra_op_threads: int = 0  # 0 = one per core
    decode_threads: int = 0  # 0 = one per core
    # CPU inference lanes: under load, this many batches run at once, each on one thread of its own
    # session (no fork-join between cores); a request that arrives alone still gets every core.
    # 0 = one lane per core; 1 = off (one batch at a time on intra_op_threads).
    cpu_lanes: int = 0
    # torch threads in a worker; 0 = torch's default (one per core). Set it to cores / workers when
    # several workers share one machine, or their thread pools fight over the same cores.
    train_threads: int = 0
    # Which ONNX variant to serve when a version has several; auto = fp16 on CUDA when the version has a
    # validated fp16 variant, else fp32 (service/selection.py).
    variant: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    # Image decoding: pil (CPU), gpu (nvImageCodec + preprocessing graph on the model's provider; the
    # `gpu` extra), auto = gpu when the CUDA provider serves and nvImageCodec is installed.
    decoder: Literal["auto", "pil", "gpu"] = "auto"
    # HTTP worker processes of `tuneserve serve` (uvicorn workers sharing the port and the GPU).
    api_workers: int = Field(default=1, ge=1)
    build_variants: str = ""  # e.g. "int8" or "fp16,int8": variants jobs build (gated on val) beside fp32

    # Dynamic batching (0 = per-device default chosen by measurement).
    max_batch_size: int = 0
    max_delay_ms: float = -1.0
    max_queue: int = 256

    # Hot-swap: how often every API process re-reads the active pointers (pub/sub is only a hint).
    refresh_interval_s: float = 2.0
    # POST .../activate waits up to this long for this process to serve the new version, then says "pending".
    activate_wait_s: float = 10.0

    # Datasets.
    max_upload_bytes: int = 4 * 1024**3
    max_archive_files: int = 200_000
    max_uncompressed_bytes: int = 4 * 1024**3
    max_compression_ratio: float = 200.0
    min_image_side: int = 32
    min_images_per_class: int = 5

    # Jobs.
    promotion_tolerance: float = 0.005
    lease_seconds: float = 60.0
    job_timeout_s: float = 6 * 3600.0
    job_max_attempts: int = 3  # a job whose worker was lost this many times is failed, not retried
    task_queue: str = "tuneserve"  # Celery queue the API sends to and workers consume

    # Access (README, "Running in production"). API keys: comma-separated ``role:key`` pairs, roles admin
    # and predict; or a file of one ``role:key`` a line (keeps them out of process listings). SecretStr
    # so a logged or printed Settings never shows them. No keys: `serve` binds loopback addresses only,
    # unless allow_anonymous says the operator means it.
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    allow_anonymous: bool = False
    # Origins (scheme://host[:port], comma-separated) whose pages may call the API cross-site (CORS).
    allowed_origins: str = ""

    # Slow and greedy clients (service/guards.py, service/http_protocol.py). A connection must finish
    # sending its headers within header_timeout_s; a body must never stall longer than body_idle_timeout_s
    # and, after body_grace_s, arrive at min_body_rate bytes/s on average; otherwise 408 and closed.
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 15.0
    body_grace_s: float = 10.0
    min_body_rate: float = 1024.0
    # Requests with a large body (over 1 MiB, or chunked) held at once per process; more wait up to
    # upload_wait_s for a slot, then get 503 + Retry-After (bounds the memory unfinished bodies take).
    max_inflight_uploads: int = Field(default=8, ge=1)
    upload_wait_s: float = 5.0
    # Fair queue: a request of many images holds at most max_queue * queue_share of them queued at once
    # (the rest follow as those finish); such requests wait up to queue_wait_s for room, then 503.
    queue_share: float = Field(default=0.25, gt=0, le=1)
    queue_wait_s: float = 30.0

    # Logs: text or json lines (json carries job_id, model and version as keys); DEBUG adds a line per request.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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
