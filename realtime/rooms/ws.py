"""The signaling WebSocket: ``GET /v1/rooms/{id}/signal?token=<join token>``.

The token is verified before anything else; a bad token still gets an upgrade
so that the browser can read why: one ``error`` message (``token_invalid``,
``token_expired``, ``token_other_room``), then close code 4401/4403. Messages
are limited to `signaling.MAX_MESSAGE_BYTES`; binary frames are refused. The
first message must be ``join``. Every malformed or refused message is answered
with an ``error`` and the connection stays up; nothing a client sends can kill
the handler task. A closed socket ends the participant's session
("disconnected"), as does a missed heartbeat.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from realtime.rooms import signaling as sig
from realtime.rooms.room import RoomError
from realtime.rooms.service import RoomService, Session
from realtime.rooms.tokens import TokenError

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
JOIN_TIMEOUT_S = 15.0


def signal_handler(service: RoomService):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        room_id = request.match_info["id"]
        token = request.query.get("token") or ""
        if not token:
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[7:].strip()
        ws = web.WebSocketResponse(
            max_msg_size=sig.MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S, autoping=True
        )
        ready = ws.can_prepare(request)
        try:
            grant = service.tokens.verify(token, room_id)
        except TokenError as exc:
            if not ready.ok:
                raise web.HTTPForbidden(
                    text=sig.to_json(sig.Error(exc.code, exc.message)),
                    content_type="application/json",
                ) from None
            await ws.prepare(request)
            await ws.send_str(sig.to_json(sig.Error(exc.code, exc.message)))
            await ws.close(
                code=4401 if exc.code == "token_invalid" else 4403, message=exc.code.encode()
            )
            return ws
        if not ready.ok:
            raise web.HTTPBadRequest(
                text=sig.to_json(sig.Error("websocket_required", "upgrade to a WebSocket")),
                content_type="application/json",
            )
        await ws.prepare(request)
        send_lock = asyncio.Lock()

        async def send(msg: sig.ServerMessage) -> None:
            if ws.closed:
                return
            async with send_lock:
                await ws.send_str(sig.to_json(msg))

        session: Session | None = None

        async def close_unless_joined() -> None:
            # a socket that never joins holds a connection and a task for nothing
            await asyncio.sleep(JOIN_TIMEOUT_S)
            if session is None and not ws.closed:
                await send(sig.Error("join_timeout", f"no join within {JOIN_TIMEOUT_S:g} s"))
                await ws.close(code=4408, message=b"join_timeout")

        join_timer = asyncio.ensure_future(close_unless_joined())
        try:
            try:
                async for raw in ws:
                    if raw.type is WSMsgType.BINARY:
                        await send(sig.Error("bad_message", "binary frames are not accepted"))
                        continue
                    if raw.type is not WSMsgType.TEXT:
                        break
                    try:
                        msg = sig.parse_client(raw.data)
                        if session is None:
                            if not isinstance(msg, sig.Join):
                                raise sig.SignalingError("not_joined", "send 'join' first")
                            try:
                                session = await service.join(
                                    room_id, grant, send, auto_subscribe=msg.auto_subscribe
                                )
                            except RoomError as exc:
                                await send(sig.Error(exc.code, exc.message))
                                await ws.close(code=4409, message=exc.code.encode())
                                break
                            watch = asyncio.ensure_future(_close_when_done(session, ws))
                            watch.add_done_callback(lambda t: None)
                        else:
                            await session.handle(msg)
                            if session.closed:
                                break
                    except sig.SignalingError as exc:
                        await send(sig.Error(exc.code, exc.message))
                    except Exception:
                        log.exception("signaling message failed")
                        await send(
                            sig.Error("internal", "the server could not handle that message")
                        )
            finally:
                join_timer.cancel()
                if session is not None and not session.closed:
                    await service._end_session(session, "disconnected")
        except asyncio.CancelledError:
            raise
        finally:
            if not ws.closed:
                await ws.close()
        return ws

    return handler


async def _close_when_done(session: Session, ws: web.WebSocketResponse) -> None:
    """Close the socket when the server ends the session (kick, room closed)."""
    await session.closed_event.wait()
    if not ws.closed:
        await ws.close(code=4000, message=(session.close_reason or "closed").encode()[:100])
