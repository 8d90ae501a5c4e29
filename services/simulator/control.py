"""Control interface of the simulator: HTTP GET on ``host:control_port``, JSON replies.

Every reply is ``application/json``. Errors (unknown venue, kind, symbol, bad parameter) answer
HTTP 400 ``{"ok": false, "error": "<what is wrong and what is allowed>"}``; unknown paths 404.

``GET /health``
    ``{"ok": true, "paused": false, "venues": {"binance": {"kind": "binance", "port": 50080,
    "mode": "live", "connections": 1}, ..}, "symbols": ["BTC/USDT", "ETH/USDT"]}``

``GET /pause`` / ``GET /resume``
    Stop / restart book changes on every venue (connections, pings and heartbeat replies go on).
    ``/pause`` returns ``{"ok": true, "paused": true}`` only once every event already queued has
    been written to its socket: after the reply, no further book event is sent.

``GET /book?venue=binance&symbol=BTC/USDT[&depth=N]``
    ``{"venue": "binance", "symbol": "BTC/USDT", "bids": [["43250.1", "0.5"], ..], "asks": [..]}``:
    the complete true book, best first, canonical decimal strings (no exponent, no trailing
    zeros). In replay mode: the book the recording implies (snapshot + later diffs). ``depth=N``:
    the best N levels per side only, i.e. what a Kraken client subscribed at depth N holds.

``GET /fault?venue=V&kind=K[&symbol=S][&count=N][&seconds=X][&status=C][&ms=M]``
    Replies ``{"ok": true, "fault": {"venue": V, "kind": K, ..parameters used..}}``. Kinds:

    ``gap``         [symbol (default: every symbol of V)] [count=1]: the next event of S is
                    preceded by ``count`` events that change the truth but are never sent.
                    Binance: the next sent event has ``U > previous u + 1``. Bitstamp: a lost
                    diff (undetectable by sequence, as on the real venue). Live mode only.
    ``drop``        close every WebSocket connection of V abruptly (no close frame).
    ``silence``     [seconds=5]: the connections open now stay open but nothing at all is sent on
                    them (a connection opened meanwhile is served normally): no events, no
                    pings, no replies (reading stops, so no pongs either). Book changes during the
                    silence happen in truth and are never sent.
    ``silence_symbol`` symbol [seconds=5]: S's book events stop on every connection of V while
                    the connections, pings, heartbeats and every other symbol go on (a stream the
                    venue stopped feeding). The truth keeps changing; REST snapshots and
                    (re)subscriptions are answered with it, so a feed can resync. After ``seconds``
                    the events resume (Binance: the next ``U`` jumps over the ids used meanwhile;
                    Coinbase: no ``sequence_num`` is consumed; Kraken: the next checksum covers
                    the truth). Live mode only. ``/stats`` lists ``symbols_silenced`` (seconds left)
                    and counts ``events_muted``.
    ``rest_error``  [count=1] [status=500]: the next ``count`` REST book snapshots answer ``status``.
    ``rate_limit``  [count=1] [status=429|418] [seconds=1]: the next ``count`` REST calls (any
                    endpoint) answer ``status`` with ``Retry-After: seconds``.
    ``lag_snapshot`` [count=1] [ms=1000]: the next ``count`` REST snapshots show the state of ``ms``
                    milliseconds ago (older than what the stream already sent; the history kept is
                    ``history_seconds``, 30 s by default). Live mode only.
    ``malformed``   [count=5]: ``count`` frames on each of V's connections, cycling through:
                    invalid JSON, wrong field types, negative amount, NaN amount, and (every fifth,
                    live mode and not paused) a *valid* event with unknown extra fields that is
                    applied to the truth — feeds must accept unknown fields. The invalid ones carry
                    the next update id (Binance) without consuming it.
    ``shutdown``    Binance: ``serverShutdown`` event; Bitstamp: ``bts:request_reconnect``; Coinbase
                    and in-band replays: no notice; the connections are closed (1001) ~0.5 s later.
    ``unlist``      symbol: S disappears from the pair list (exchangeInfo / trading-pairs-info;
                    ``exchangeInfo?symbol=S`` answers 400 -1121; Coinbase: /products lists, the
                    detail says delisted / offline). ``relist`` undoes it.
    ``skip_seq``    [count=1]: Coinbase: the next message of every Advanced Trade connection
                    skips ``count`` ``sequence_num`` values. Reply adds ``connections``.
    ``crossed``     [symbol]: Coinbase Exchange: an ``l2update`` with a bid one tick above the best
                    ask (not in the truth) on each Exchange connection subscribed to S (default:
                    every symbol). Live mode only. Reply adds ``connections``.

    Kraken adds ``bad_checksum`` [symbol] [count=1] (the next ``count`` updates of S on every
    connection carry a wrong checksum, the book is right) and ``status``
    system=maintenance|cancel_only|post_only|online (broadcast on v2 ``status`` and v1
    ``systemStatus``). Gemini's ``drop`` [remove=3] also deletes the best ``remove`` levels per
    side from the truth while nobody is connected (listed in the reply's ``removed``), and
    ``no_initial_book`` [count=1] serves the next ``count`` subscriptions without their initial book.

``GET /stats``
    ``{"paused": false, "venues": {"binance": {"connections": 1, "connections_total": 3,
    "frames_sent": .., "events_generated": .., "events_sent": .., "rest_requests": ..,
    "snapshots_served": .., "faults": {"gap": 1}, ..}, ..}}``
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from services.simulator.app import FaultError, Simulator
from services.simulator.venue import http_response

log = logging.getLogger("simulator.control")

ENDPOINTS = ("/health", "/pause", "/resume", "/book", "/fault", "/stats")


class ControlServer:
    def __init__(self, sim: Simulator, host: str, port: int) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server: Server | None = None

    async def start(self) -> None:
        self._server = await serve(self._never, self.host, self.port, process_request=self._request,
                                   ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control interface on http://%s:%d (%s)", self.host, self.port, " ".join(ENDPOINTS))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _never(self, ws: ServerConnection) -> None:  # pragma: no cover - upgrades are refused
        await ws.close()

    async def _request(self, connection: ServerConnection, request: Request) -> Response:
        url = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = await self.handle(url.path.rstrip("/") or "/", params)
        except FaultError as e:
            return http_response(400, {"ok": False, "error": str(e)})
        if body is None:
            return http_response(404, {"ok": False, "error": f"unknown path {url.path}; endpoints: "
                                                             f"{list(ENDPOINTS)}"})
        return http_response(200, body)

    async def handle(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        sim = self.sim
        if path == "/health":
            return sim.health()
        if path == "/pause":
            await sim.pause()
            return {"ok": True, "paused": True}
        if path == "/resume":
            sim.resume()
            return {"ok": True, "paused": False}
        if path == "/book":
            return sim.book(params.get("venue"), params.get("symbol"), params.get("depth"))
        if path == "/fault":
            return {"ok": True, "fault": sim.fault(params)}
        if path == "/stats":
            return sim.stats()
        return None
