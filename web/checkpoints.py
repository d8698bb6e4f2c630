"""A session's conversation on disk: ``data_dir/sessions/<id>/history.json``, every image replaced by its
screenshot ref, so a restarted service continues the same conversation."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

from agent import history as hist
from web.store import Store


def history_path(store: Store, session_id: str) -> Path:
    return store.data_dir / "sessions" / session_id / "history.json"


def _pack(store: Store, node: Any) -> Any:
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "base64":
            ref = store.save_image(base64.b64decode(src["data"]), str(src.get("media_type", "image/png")))
            return {**node, "source": {"type": "ref", "ref": ref, "media_type": src.get("media_type")}}
        return {k: _pack(store, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_pack(store, v) for v in node]
    return node


def _unpack(store: Store, node: Any) -> Any:
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "ref":
            path = store.image_path(str(src["ref"]))
            if path is None:
                return {"type": "text", "text": hist.PLACEHOLDER}
            data = base64.b64encode(path.read_bytes()).decode()
            return {**node, "source": {"type": "base64", "media_type": src.get("media_type"), "data": data}}
        return {k: _unpack(store, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unpack(store, v) for v in node]
    return node


def save_history(store: Store, session_id: str, history: list[dict[str, Any]]) -> None:
    path = history_path(store, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(_pack(store, history)))
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def load_history(store: Store, session_id: str) -> list[dict[str, Any]] | None:
    path = history_path(store, session_id)
    if not path.is_file():
        return None
    data: list[dict[str, Any]] = _unpack(store, json.loads(path.read_text()))
    return data
