"""Dataset routes (upload, list, report, delete)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
