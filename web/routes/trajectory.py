"""``GET /api/sessions/{id}/trajectory``: the session's trajectory bundle as a zip (``web.trajectory``);
``…/trajectory/steps``: its ``meta`` and ``steps`` as JSON, for the replay view (``static/replay.html``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from web.auth import CurrentPrincipal
from web.models import ERRORS
from web.store import Store
from web.trajectory import build_bundle, replay_data, to_zip

router = APIRouter(prefix="/api/sessions", tags=["sessions"], responses=ERRORS)


@router.get(
    "/{session_id}/trajectory", operation_id="get_trajectory", response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the bundle (docs/evaluation.md)"}},
)
async def get_trajectory(session_id: str, request: Request, who: CurrentPrincipal) -> Response:
    """Live or finished: what the store holds now. Nothing is re-run."""
    store: Store = request.app.state.store
    files = await build_bundle(store, session_id, who.owner)
    root = f"trajectory-{session_id}"
    data = await asyncio.to_thread(to_zip, files, root)
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{root}.zip"', "Cache-Control": "no-store"})


@router.get("/{session_id}/trajectory/steps", operation_id="get_trajectory_steps")
async def get_trajectory_steps(session_id: str, request: Request, who: CurrentPrincipal) -> dict[str, Any]:
    """The bundle's ``meta.json`` and ``traj.jsonl`` lines (schema: docs/trajectory.schema.json)."""
    store: Store = request.app.state.store
    return await replay_data(store, session_id, who.owner)
