"""WS /api/sessions/{id}/stream — placeholder until the stream lands."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
