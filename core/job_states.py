"""The states a job goes through (the job store's ``state`` column, the API's ``state`` filter)."""

from __future__ import annotations

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
