"""The feeds' WebSocket connection (common/feed/runner.py VenueSocket) against a websockets server
written here: messages in order with one batch call per read, fragmented messages, pings answered
and counted, the venue's close and its code, and the connection failed on bad text (1007) or an
oversized message (1009)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from common.feed.runner import VenueSocket, env_proxy

pytestmark = pytest.mark.timeout(30)


async def session(handler: Callable[[ServerConnection], Awaitable[None]], *, max_size: int = 1 << 20,
                  deliver_after: float = 0.0) -> tuple[VenueSocket, list[Any], list[int]]:
    """Connect a VenueSocket to a server running ``handler``; collect messages and batch calls
    until the connection ends."""
    got: list[Any] = []
    batches: list[int] = []
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await VenueSocket.connect(f"ws://127.0.0.1:{port}", open_timeout=5.0, max_size=max_size)
        if deliver_after:
            await asyncio.sleep(deliver_after)
        ws.deliver(lambda m, rts, now: got.append(m), lambda: batches.append(len(got)))
        await asyncio.wait_for(asyncio.shield(ws.ended), 10)
    return ws, got, batches


def test_messages_in_order_early_ones_kept_and_the_venue_close_is_normal() -> None:
    """Text and binary messages arrive in order (those before deliver() too); 1000 is a normal close."""
    async def handler(conn: ServerConnection) -> None:
        await conn.send("one")
        await conn.send(b"\x00two")
        await asyncio.sleep(0.3)
        for i in range(50):
            await conn.send(f"m{i}")
        await conn.close(1000, "bye")

    ws, got, batches = asyncio.run(session(handler, deliver_after=0.1))
    assert got == ["one", b"\x00two", *[f"m{i}" for i in range(50)]]
    assert batches[-1] == 52
    assert ws.outcome_reason() == (True, "1000 'bye'")


def test_fragmented_message_is_reassembled() -> None:
    """A message sent in fragments is delivered once, whole."""
    async def handler(conn: ServerConnection) -> None:
        await conn.send(["hel", "lo ", "world"])
        await conn.send("after")
        await conn.close()

    _, got, _ = asyncio.run(session(handler))
    assert got == ["hello world", "after"]


def test_pings_are_answered_and_counted() -> None:
    """A venue ping gets its pong (the server's ping completes) and is counted."""
    pongs: list[float] = []

    async def handler(conn: ServerConnection) -> None:
        for _ in range(3):
            waiter = await conn.ping()
            pongs.append(await asyncio.wait_for(waiter, 5))
        await conn.close()

    ws, _, _ = asyncio.run(session(handler))
    assert len(pongs) == 3 and ws.pings == 3


def test_abnormal_close_code_is_a_lost_connection() -> None:
    """A close with an error code ends the connection as lost, naming the code and reason."""
    async def handler(conn: ServerConnection) -> None:
        await conn.close(4000, "go away")

    ws, _, _ = asyncio.run(session(handler))
    assert ws.outcome_reason() == (False, "received 4000 'go away'")


def test_text_that_is_not_utf8_fails_the_connection_with_1007() -> None:
    """Invalid UTF-8 in a text frame: nothing delivered, close 1007 sent to the venue."""
    codes: list[int | None] = []

    async def handler(conn: ServerConnection) -> None:
        conn.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
        conn.send_data()
        try:
            await conn.recv()
        except ConnectionClosed as e:
            codes.append(e.rcvd.code if e.rcvd else None)

    ws, got, _ = asyncio.run(session(handler))
    assert got == [] and codes == [1007]
    assert ws.outcome_reason()[0] is False and ws.outcome_reason()[1].startswith("sent 1007")


def test_oversized_fragmented_message_fails_the_connection_with_1009() -> None:
    """Fragments adding up to more than max_size: close 1009, nothing delivered."""
    codes: list[int | None] = []

    async def handler(conn: ServerConnection) -> None:
        try:
            await conn.send(["x" * 600, "y" * 600])
            await conn.recv()
        except ConnectionClosed as e:
            codes.append(e.rcvd.code if e.rcvd else None)

    ws, got, _ = asyncio.run(session(handler, max_size=1000))
    assert got == [] and codes == [1009]
    assert ws.outcome_reason() == (False, "sent 1009 (message over 1000 bytes)")


def test_a_callback_error_ends_the_connection_and_is_raised() -> None:
    """An exception in the message callback ends the connection and comes out of ``ended``."""
    async def handler(conn: ServerConnection) -> None:
        await conn.send("boom")
        await asyncio.sleep(5)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await VenueSocket.connect(f"ws://127.0.0.1:{port}", open_timeout=5.0, max_size=1 << 20)

            def bad(m: Any, rts: int, now: float) -> None:
                raise RuntimeError("core bug")
            ws.deliver(bad, lambda: None)
            with pytest.raises(RuntimeError, match="core bug"):
                await asyncio.wait_for(asyncio.shield(ws.ended), 10)
            assert ws.transport is not None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.transport.wait_disconnected(), 10)
            assert ws.closed

    asyncio.run(main())


def test_environment_proxy_is_used_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """wss takes the https proxy, ws also the http one; no_proxy hosts and an empty environment go direct."""
    for k in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "socks_proxy", "no_proxy", "all_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    assert env_proxy("wss://stream.example.com:9443/ws") is None
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "http://plain.example:8080")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    assert env_proxy("wss://stream.example.com:9443/ws") == "http://proxy.example:3128"
    assert env_proxy("ws://stream.example.com/ws") == "http://proxy.example:3128"
    assert env_proxy("ws://127.0.0.1:5000/ws") is None
