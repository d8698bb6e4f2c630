"""This replica's part in a group of replicas sharing one PostgreSQL (``Settings.cluster``; docs/scale-out.md).

- Events: every stored event NOTIFYs ``deskpilot_events`` with ``"<session id> <seq>"`` in the transaction that
  stores it. Each replica LISTENs and, for sessions it has viewers of, reads the rows after the last seq it
  published — so a missed or merged notification loses nothing and the 8000-byte payload cap never matters.
- Leases: a queued or running session is leased to one replica (``web/leases.py``), renewed every
  ``lease_renew_s``; a lease not renewed for ``lease_ttl_s`` lapses and another replica adopts the session
  (interrupted, then resumed, as after a restart).
- Commands: control sent to a replica that does not run the session is stored and NOTIFYd on
  ``deskpilot_commands``; the holder applies it.
- Desktops: the holder records its desktop's endpoint on the lease; other replicas reach it for live frames
  and VNC (``web/remote.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from deskpilot.errors import Conflict, DeskpilotError, ServiceUnavailable
from deskpilot.settings import Settings
from web.bus import Bus
from web.frames import FramePumps
from web.leases import COMMANDS_CHANNEL, Leases
from web.recorder import stream_message
from web.remote import RemoteDesktops
from web.session_run import SessionRun, decision_for
from web.states import ACTIVE_STATES
from web.store import SessionRow, Store
from web.tables import CommandRow

log = logging.getLogger(__name__)
EVENTS_CHANNEL = "deskpilot_events"  # payload: "<session id> <seq>"


class Sessions(Protocol):
    """What the cluster drives on this replica (the ``Runner``)."""

    live: dict[str, SessionRun]
    frames: FramePumps

    async def adopt(self, session_id: str) -> None: ...

    def abandon(self, session_id: str) -> None: ...

    async def pause(self, row: SessionRow) -> None: ...

    async def resume(self, row: SessionRow) -> None: ...

    async def cancel(self, row: SessionRow) -> None: ...

    async def takeover(self, row: SessionRow) -> None: ...

    async def handback(self, row: SessionRow, note: str | None) -> None: ...


class Cluster:
    def __init__(self, settings: Settings, store: Store, bus: Bus, runner: Sessions) -> None:
        self.replica = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.leases = Leases(store, self.replica, settings.lease_ttl_s)
        self.remote = RemoteDesktops(self.leases, store, settings.lease_renew_s)
        self.interval = settings.lease_renew_s
        # A takeover waits for the agent's action in flight; a forwarded one also for the holder to hear of it.
        self.takeover_limit_s = settings.settle_cap_ms / 1000 + settings.bash_timeout_s + settings.lease_ttl_s + 5
        self.handback_limit_s = settings.lease_ttl_s + 10
        self.store, self.bus, self.runner = store, bus, runner
        store.notify_channel = EVENTS_CHANNEL
        self._heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._published: dict[str, int] = {}  # session id -> last seq handed to this replica's viewers
        self._fan_lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None
        self._raw: Any = None  # the asyncpg connection that LISTENs
        self._tasks: list[asyncio.Task[None]] = []
        self._applying: set[asyncio.Task[None]] = set()  # takeovers waiting for the agent's action to end

    async def start(self) -> None:
        await self._listen()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._consume()), loop.create_task(self._ticks())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._applying:
            task.cancel()
        for task in [*self._tasks, *self._applying]:
            with contextlib.suppress(BaseException):
                await task
        await self._unlisten()
        await self.remote.aclose()

    # --- LISTEN ---
    async def _listen(self) -> None:
        self._conn = await self.store.engine.connect()  # held for good: LISTEN lives on one connection
        self._raw = (await self._conn.get_raw_connection()).driver_connection
        for channel in (EVENTS_CHANNEL, COMMANDS_CHANNEL):
            await self._raw.add_listener(channel, self._on_notify)

    async def _unlisten(self) -> None:
        conn, self._conn, self._raw = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # never back to the pool with listeners on it
            with contextlib.suppress(Exception):
                await conn.close()

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._heard.put_nowait((channel, payload))

    async def _consume(self) -> None:
        while True:
            channel, payload = await self._heard.get()
            try:
                if channel == EVENTS_CHANNEL:
                    session_id, _, seq = payload.partition(" ")
                    await self.fan_out(session_id, int(seq))
                    await self.remote.check(session_id)  # a handback, say: it changed the row before the event
                else:
                    await self.apply_commands(payload)
            except Exception:
                log.exception("handling %s %r failed", channel, payload)

    # --- events ---
    async def fan_out(self, session_id: str, seq: int | None = None) -> None:
        """Hand this replica's viewers of the session every stored event they have not been offered yet."""
        async with self._fan_lock:
            if not self.bus.viewer_count(session_id):
                self._published.pop(session_id, None)
                return
            after = self._published.get(session_id, seq - 1 if seq is not None else None)
            if after is None:  # viewers read the stored log themselves when they attach
                return
            while rows := await self.store.events_after(session_id, after, limit=500):
                for row in rows:
                    self.bus.publish(session_id, stream_message(row))
                    self.remote.observe(session_id, row.type, row.data)
                after = rows[-1].seq
            self._published[session_id] = after

    # --- leases ---
    async def _ticks(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the database may be briefly away: try again next tick
                log.exception("replica tick failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """Renew this replica's leases, give up runs whose lease another replica took, adopt orphans, apply
        commands a lost notification left behind, catch viewers up (events, frames of a desktop that came up
        elsewhere), and close input VNC connections whose takeover ended unnoticed."""
        if self._raw is None or self._raw.is_closed():
            await self._unlisten()
            await self._listen()
        held = await self.leases.renew()
        for session_id in list(self.runner.live):
            if session_id not in held:
                log.warning("lease of session %s lapsed: another replica runs it now", session_id)
                self.runner.abandon(session_id)
        for session_id in await self.leases.orphans():
            if await self.leases.claim(session_id):
                log.info("adopting session %s", session_id)
                await self.runner.adopt(session_id)
                held.add(session_id)
        for session_id in await self.leases.sessions_with_commands():
            if session_id in held:
                await self.apply_commands(session_id)
        watched = self.bus.watched()
        for session_id in watched:
            await self.fan_out(session_id)
            self.runner.frames.watch(session_id)
        for session_id in self.remote.with_inputs():
            await self.remote.check(session_id)
        await self.remote.prune(watched)

    async def elsewhere(self, session_id: str) -> bool:
        """Another replica holds a live lease on the session: commands for it must go there."""
        holder = await self.leases.holder(session_id)
        return holder is not None and holder != self.replica

    # --- commands ---
    async def forward(self, session_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        await self.leases.send(session_id, kind, data)

    async def take_over(self, row: SessionRow) -> None:
        """Takeover of a session another replica runs: answered, as there, once control is the user's."""
        if row.control == "user":
            raise Conflict("you already hold control")
        if await self.leases.desktop(row.id) is None:
            raise Conflict(f"cannot take over: the session is {row.status}")
        await self.forward(row.id, "takeover")
        await self._until_control(row.id, "user", "take over", self.takeover_limit_s)

    async def hand_back(self, row: SessionRow, note: str | None) -> None:
        if row.control != "user":
            raise Conflict("nobody has taken over this session")
        await self.forward(row.id, "handback", {"note": note})
        await self._until_control(row.id, "agent", "hand back", self.handback_limit_s)

    async def _until_control(self, session_id: str, control: str, action: str, limit_s: float) -> None:
        """Wait for the holder to apply a forwarded takeover or handback (it sets the row's ``control``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while (row := await self.store.get_session(session_id)).control != control:
            if row.status not in ACTIVE_STATES:
                raise Conflict(f"cannot {action}: the session is {row.status}")
            if loop.time() > deadline:
                raise ServiceUnavailable(f"the replica running the session did not {action} in time; the "
                                         "session's control says whether it did since")
            await asyncio.sleep(0.2)

    async def apply_commands(self, session_id: str) -> None:
        if await self.leases.holder(session_id) != self.replica:
            return  # not ours: its holder applies it
        for command in await self.leases.take_commands(session_id):
            try:
                await self._apply(command)
            except DeskpilotError as exc:  # e.g. a pause that came too late: the sender already answered
                log.info("command %s for session %s not applied: %s", command.kind, session_id, exc.message)

    @staticmethod
    async def _quietly(command: CommandRow, applying: Coroutine[Any, Any, None]) -> None:
        try:
            await applying
        except DeskpilotError as exc:
            log.info("command %s for session %s not applied: %s", command.kind, command.session_id, exc.message)

    async def _apply(self, command: CommandRow) -> None:
        runner, sid = self.runner, command.session_id
        row = await self.store.get_session(sid)
        run = runner.live.get(sid)
        if command.kind == "pause":
            await runner.pause(row)
        elif command.kind == "resume":
            await runner.resume(row)
        elif command.kind == "cancel":
            await runner.cancel(row)
        elif command.kind == "takeover":  # waits for the action in flight: never holds up the other commands
            task = asyncio.get_running_loop().create_task(self._quietly(command, runner.takeover(row)))
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)
        elif command.kind == "handback":
            note = command.data.get("note")
            await runner.handback(row, note if isinstance(note, str) else None)
        elif command.kind == "message":  # the sender put it in the inbox; a run not looping yet reads it there
            if run is not None and run.loop is not None and run.loop.running:
                for text in await self.store.take_inbox(sid):
                    run.loop.add_user_message(text)
        elif command.kind == "decide":  # the sender stored the decision (race-free); the loop hears it here
            approval = await self.store.get_approval(sid, str(command.data.get("approval_id")))
            if run is not None:
                run.decide(approval.id, decision_for(approval))
