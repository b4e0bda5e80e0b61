"""Job routes (create, list, get, cancel, events)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
