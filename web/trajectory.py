"""Trajectory export: one session, live or finished, as a versioned bundle read from the store alone.

Nothing is re-run: the bundle is built from the event log, the screenshot files and the history checkpoint
(``web.checkpoints.history_path``). Files of a bundle (format ``deskpilot-trajectory``, ``TRAJECTORY_VERSION``;
JSON Schema: ``docs/trajectory.schema.json``; prose: ``docs/evaluation.md``):

- ``meta.json``: task, model, provider, policy, desktop size, deskpilot version, start/end, status, totals and
  the timeline (status changes, approvals, takeovers, user messages, errors);
- ``traj.jsonl``: one line per action (plus a last line for a final answer), OSWorld's field names first
  (``step_num``, ``action_timestamp``, ``action``, ``response``, ``reward``, ``done``, ``info``,
  ``screenshot_file``), then ours;
- ``screenshots/<sha256>.png``: the exact bytes the model saw; ``screenshot_file`` is the settled frame after
  the action (which is also what the model saw next), ``observation_file`` the frame the action was chosen on;
- ``messages.json``: the conversation as last sent to the model, images pointing at their files;
- ``requests.jsonl``: one line per model call, its messages exactly as sent (screenshots pruned since put back
  from the manifest on the call's ``usage`` event), images pointing at their files, and the request's other
  parameters (Anthropic only);
- ``preview.gif``: the run with each action drawn on the screen it was planned on.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import deskpilot
from agent import history as hist
from web.checkpoints import history_path
from web.states import FINAL_STATES
from web.store import EventRow, SessionRow, Store, image_ref

FORMAT = "deskpilot-trajectory"
TRAJECTORY_VERSION = "1.0"
TIMELINE_TYPES = ("status", "approval_requested", "approval_decided", "user_message", "error", "retrying")


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds") + ("Z" if value.tzinfo is None else "")


def _shot(ref: str | None) -> str | None:
    return f"screenshots/{ref}" if ref else None


async def all_events(store: Store, session_id: str) -> list[EventRow]:
    rows: list[EventRow] = []
    while batch := await store.events_after(session_id, rows[-1].seq if rows else 0):
        rows.extend(batch)
    return rows


def build_steps(events: Sequence[EventRow], reward: float | None = None) -> list[dict[str, Any]]:
    """The ``traj.jsonl`` lines, from the event log in ``seq`` order."""
    calls: dict[int, dict[str, Any]] = {}  # model step -> usage, text, thinking, when it was answered
    steps: list[dict[str, Any]] = []
    by_use: dict[str, dict[str, Any]] = {}
    seen_image: str | None = None  # the last screenshot the model was sent

    def call(n: int) -> dict[str, Any]:
        return calls.setdefault(n, {"text": [], "thinking": [], "usage": None, "ts": None, "obs": None,
                                    "charged": False, "acted": False})

    for ev in events:
        data = ev.data
        if ev.type == "usage":
            c = call(int(data.get("step", 0)))
            c.update(usage=data, ts=ev.created_at, obs=seen_image)
        elif ev.type in ("assistant_text", "thinking"):
            c = call(int(data.get("step", 0)))
            c["text" if ev.type == "assistant_text" else "thinking"].append(str(data.get("text", "")))
        elif ev.type == "tool_call":
            n = int(data.get("step", 0))
            c = call(n)
            c["acted"] = True
            step = _new_step(len(steps) + 1, ev, str(data.get("id", "")), str(data.get("tool", "")),
                             data.get("input"), n, c)
            steps.append(step)
            by_use[step["tool_use_id"]] = step
        elif ev.type in ("approval_requested", "approval_decided"):
            asked = by_use.get(str(data.get("tool_use_id", "")))
            if asked is not None:
                step = asked
                approval = step["approval"] or {}
                if ev.type == "approval_requested":
                    approval.update(approval_id=data.get("approval_id"), reason=data.get("reason"), asked=True)
                else:
                    approval.update(decision=data.get("decision"), by=data.get("by"), note=data.get("note") or None,
                                    edited_input=data.get("input"), rule=data.get("rule"))
                    approval.setdefault("asked", False)
                step["approval"] = approval
        elif ev.type == "tool_result":
            use_id = str(data.get("id", ""))
            found = by_use.get(use_id)
            if found is not None:
                step = found
            else:  # answered without a recorded call (a restart cut it off)
                step = _new_step(len(steps) + 1, ev, use_id, str(data.get("tool", "")), None,
                                 data.get("step"), None)
                steps.append(step)
            meta = data.get("meta") or {}
            step.update(result={k: data.get(k) for k in ("output", "error", "system", "is_error")}, meta=meta,
                        screenshot_file=_shot(ev.image_ref), settle_ms=meta.get("settle_ms"),
                        duration_s=round((ev.created_at - step["_started"]).total_seconds(), 3))
            if ev.image_ref:
                seen_image = ev.image_ref
    for n, c in sorted(calls.items()):
        if not c["acted"] and c["ts"] is not None and (c["text"] or c["thinking"]):  # a reply without actions
            ev_ts = c["ts"]
            answer = "\n".join(c["text"]).strip()
            steps.append({**_new_step(len(steps) + 1, None, "", None, None, n, c, ts=ev_ts),
                          "action": {"type": "answer", "text": answer}})
    steps.sort(key=lambda s: (s["_started"], s["step_num"]))
    for i, step in enumerate(steps, 1):
        step["step_num"] = i
        del step["_started"]
        step["done"] = i == len(steps)
        step["reward"] = reward if step["done"] and reward is not None else 0.0
    return steps


def _new_step(num: int, ev: EventRow | None, use_id: str, tool: str | None, given: Any, model_step: Any,
              c: dict[str, Any] | None, ts: datetime | None = None) -> dict[str, Any]:
    started = ts if ev is None else ev.created_at
    usage = None
    if c is not None and not c["charged"] and c["usage"] is not None:
        c["charged"] = True  # a call's tokens go on its first line only, so sums are right
        usage = c["usage"]
    response = {"text": "\n".join(c["text"]).strip(), "thinking": "\n".join(c["thinking"]).strip()} if c else None
    return {
        "step_num": num, "action_timestamp": _ts(started) if started else None,
        "action": {"tool": tool, **given} if isinstance(given, dict) else {"tool": tool, "input": given},
        "response": response, "reward": 0.0, "done": False, "info": {}, "screenshot_file": None,
        "tool": tool, "tool_use_id": use_id, "input": given, "model_step": model_step,
        "observation_file": _shot(c["obs"]) if c else None, "result": None, "meta": {}, "settle_ms": None,
        "approval": None, "duration_s": None,
        "tokens": {k: int(usage.get(k, 0)) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                      "cache_write_tokens")} if usage else None,
        "cost_usd": float(usage.get("cost_usd", 0.0)) if usage else 0.0,
        "_started": started,
    }


def build_meta(row: SessionRow, events: Sequence[EventRow], steps: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [(e.created_at, str(e.data.get("status"))) for e in events if e.type == "status"]
    started = next((t for t, s in statuses if s == "running"), None)
    ended = next((t for t, s in reversed(statuses) if s in FINAL_STATES), None) if row.status in FINAL_STATES else None
    timeline = [{"seq": e.seq, "ts": _ts(e.created_at), "type": e.type,
                 **{k: e.data.get(k) for k in ("status", "reason", "decision", "by", "tool", "text", "message",
                                               "approval_id") if e.data.get(k) not in (None, "")}}
                for e in events if e.type in TIMELINE_TYPES]
    usage = row.usage_totals or {}
    return {
        "format": FORMAT, "version": TRAJECTORY_VERSION, "deskpilot_version": deskpilot.__version__,
        "session_id": row.id, "task": row.task, "model": row.model, "provider": "anthropic",
        "policy": row.policy or {}, "screen": {"width": row.width, "height": row.height},
        "status": row.status, "result": row.result, "error": row.error,
        "created_at": _ts(row.created_at), "started_at": _ts(started) if started else None,
        "ended_at": _ts(ended) if ended else None,
        "totals": {
            "model_calls": int(usage.get("steps", 0)),
            "actions": sum(1 for s in steps if s["tool"] is not None),
            "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
            "cache_read_tokens": int(usage.get("cache_read_tokens", 0)),
            "cache_write_tokens": int(usage.get("cache_write_tokens", 0)),
            "cost_usd": round(row.cost_usd, 6),
            "wall_s": round((ended - started).total_seconds(), 3) if started and ended else None,
        },
        "timeline": timeline,
    }


def _with_files(node: Any, refs: set[str]) -> Any:
    """A checkpointed message (images as store refs) with each image pointing at its bundle file."""
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "ref":
            refs.add(str(src["ref"]))
            return {**node, "source": {"type": "file", "path": _shot(str(src["ref"])),
                                       "media_type": src.get("media_type")}}
        return {k: _with_files(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_files(v, refs) for v in node]
    return node


def _history(store: Store, session_id: str) -> list[dict[str, Any]]:
    path = history_path(store, session_id)
    history: list[dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else []
    return history


def _ref_block(sha256: str, media_type: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "ref", "ref": image_ref(sha256, media_type), "media_type": media_type}}


def build_requests(history: list[dict[str, Any]], events: Sequence[EventRow],
                   refs: set[str]) -> list[dict[str, Any]]:
    """The ``requests.jsonl`` lines: each model call's messages exactly as sent (before the provider's cache
    markers), rebuilt from the final history and the manifest on the call's ``usage`` event."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] | None = None
    for ev in events:
        manifest = ev.data.get("request") if ev.type == "usage" else None
        if not isinstance(manifest, dict) or int(manifest.get("last_message", -1)) >= len(history):
            continue  # recorded before manifests existed, or the history was lost
        if isinstance(manifest.get("params"), dict):
            params = manifest["params"]  # recorded when they change only
        try:
            messages = hist.restore_request(history, manifest, _ref_block)
        except ValueError:
            continue  # a manifest that does not fit the saved history: left out rather than guessed
        out.append({"model_step": int(ev.data.get("step", 0)), "ts": _ts(ev.created_at), "params": params,
                    "messages": _with_files(messages, refs)})
    return out


async def replay_data(store: Store, session_id: str, owner: str | None = None) -> dict[str, Any]:
    """``meta`` and ``steps`` of the bundle (no files): what the browser's replay view shows."""
    row = await store.get_session(session_id, owner)
    events = await all_events(store, session_id)
    steps = build_steps(events)
    return {"meta": build_meta(row, events, steps), "steps": steps}


async def build_bundle(store: Store, session_id: str, owner: str | None = None,
                       reward: float | None = None) -> dict[str, bytes]:
    """Every file of the bundle by its path inside it. NotFound for an unknown (or someone else's) session."""
    row = await store.get_session(session_id, owner)
    events = await all_events(store, session_id)
    return await asyncio.to_thread(_assemble, store, row, events, reward)


def _assemble(store: Store, row: SessionRow, events: list[EventRow], reward: float | None) -> dict[str, bytes]:
    from web.trajectory_preview import preview_gif

    steps = build_steps(events, reward)
    refs = {e.image_ref for e in events if e.image_ref}
    history = _history(store, row.id)
    messages = _with_files(history, refs)
    requests = build_requests(history, events, refs)
    files: dict[str, bytes] = {}
    shots: dict[str, bytes] = {}
    for ref in sorted(refs):
        path = store.image_path(ref)
        if path is not None:
            shots[ref] = path.read_bytes()
            files[f"screenshots/{ref}"] = shots[ref]
    meta = build_meta(row, events, steps)
    files["meta.json"] = json.dumps(meta, indent=2).encode()
    files["traj.jsonl"] = "".join(json.dumps(s) + "\n" for s in steps).encode()
    files["messages.json"] = json.dumps(messages).encode()
    files["requests.jsonl"] = "".join(json.dumps(r) + "\n" for r in requests).encode()
    gif = preview_gif(steps, shots)
    if gif is not None:
        files["preview.gif"] = gif
    return files


def to_zip(files: dict[str, bytes], root: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            # PNG/GIF are compressed already; deflating them again only costs time.
            kind = zipfile.ZIP_STORED if name.endswith((".png", ".gif", ".jpg")) else zipfile.ZIP_DEFLATED
            zf.writestr(f"{root}/{name}", data, compress_type=kind)
    return buf.getvalue()


def write_dir(files: dict[str, bytes], target: Path) -> None:
    for name, data in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
