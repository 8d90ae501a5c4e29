"""Simulated Binance spot: the real REST paths and WebSocket streams on one loopback port.

REST (plain HTTP GET):

* ``/api/v3/ping`` -> ``{}``; ``/api/v3/time`` -> ``{"serverTime": ms}``
* ``/api/v3/exchangeInfo[?symbol=BTCUSDT | ?symbols=["BTCUSDT","ETHUSDT"]]`` -> the listed
  symbols with ``status: TRADING`` and PRICE_FILTER / LOT_SIZE filters; unknown symbol ->
  HTTP 400 ``{"code":-1121,"msg":"Invalid symbol."}``
* ``/api/v3/depth?symbol=BTCUSDT&limit=N`` (default 100, capped at 5000) ->
  ``{"lastUpdateId":..,"bids":[["43250.10000000","0.50000000"],..],"asks":[..]}``

WebSocket:

* ``/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms`` (combined: every event wrapped as
  ``{"stream":"btcusdt@depth@100ms","data":{..}}``), ``/ws/<stream>`` (raw events), and the
  ``{"method":"SUBSCRIBE","params":[..],"id":N}`` frame (reply ``{"result":null,"id":N}``; also
  UNSUBSCRIBE and LIST_SUBSCRIPTIONS).
* diff events ``{"e":"depthUpdate","E":ms,"s":"BTCUSDT","U":first,"u":last,"b":[..],"a":[..]}``
  with ``U == previous u + 1`` per symbol (unless a ``gap`` fault is injected);
  ``<symbol>@depth`` and ``<symbol>@depth@100ms`` both carry them; other stream names are accepted
  and stay quiet.
* a ping every ``ping_interval`` s; ``serverShutdown`` as
  ``{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":ms}}`` (raw on ``/ws``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from decimal import Decimal
from typing import Any

from websockets.http11 import Response

from services.simulator.market import Changes, SymbolSpec, fixed
from services.simulator.venue import Conn, HttpError, RestFault, VenueServer, dumps, http_response

DEPTH_SUFFIXES = ("@depth@100ms", "@depth")
MAX_LIMIT = 5000

INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}


def venue_symbol(symbol: str) -> str:
    """BTC/USDT -> BTCUSDT."""
    return symbol.replace("/", "")


def now_ms() -> int:
    return int(time.time() * 1000)


def depth_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class BinanceServer(VenueServer):
    kind = "binance"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._weights: deque[tuple[float, int]] = deque()

    # --- symbols -------------------------------------------------------------------------------

    def by_venue_symbol(self) -> dict[str, str]:
        """BTCUSDT -> BTC/USDT for every symbol this venue serves."""
        return {venue_symbol(s): s for s in self.specs}

    def stream_symbol(self, stream: str) -> str | None:
        """'btcusdt@depth@100ms' -> 'BTC/USDT' when it is a depth stream of a served symbol."""
        for suffix in DEPTH_SUFFIXES:
            if stream.endswith(suffix):
                return self.by_venue_symbol().get(stream[: -len(suffix)].upper())
        return None

    # --- REST ----------------------------------------------------------------------------------

    def _use_weight(self, w: int) -> int:
        now = time.monotonic()
        self._weights.append((now, w))
        while self._weights and self._weights[0][0] < now - 60:
            self._weights.popleft()
        return sum(x for _, x in self._weights)

    def rate_limit_response(self, f: RestFault) -> Response:
        if f.status == 418:
            body = {"code": -1003, "msg": f"Way too many requests; IP(127.0.0.1) banned until "
                                          f"{now_ms() + int(float(f.retry_after or 120) * 1000)}."}
        else:
            body = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) request "
                                          "weight is 6000 per minute."}
        return http_response(f.status, body, [("Retry-After", f.retry_after or "1")])

    def error_response(self, status: int) -> Response:
        return http_response(status, {"code": -1000, "msg": "An unknown error occurred while processing "
                                                             "the request."})

    def is_ws_path(self, path: str) -> bool:
        return path in ("/ws", "/stream") or path.startswith("/ws/")

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        path = path.rstrip("/")
        weight = 20 if path == "/api/v3/exchangeInfo" else 1
        if path == "/api/v3/depth":
            weight = depth_weight(self._limit(query))
        fault = self.take_rest_fault(snapshot=path == "/api/v3/depth")
        if fault is not None:
            return fault
        used = [("X-MBX-USED-WEIGHT-1M", str(self._use_weight(weight)))]
        if path == "/api/v3/ping":
            return http_response(200, {}, used)
        if path == "/api/v3/time":
            return http_response(200, {"serverTime": now_ms()}, used)
        if path == "/api/v3/exchangeInfo":
            return http_response(200, self.exchange_info(query), used)
        if path == "/api/v3/depth":
            sym = self._symbol_param(query)
            return http_response(200, self.depth(sym, self._limit(query)), used)
        raise HttpError(404, {"code": -1, "msg": f"Unknown path {path}"})

    @staticmethod
    def _limit(query: dict[str, list[str]]) -> int:
        raw = query.get("limit", ["100"])[0]
        if not raw.isdigit():
            raise HttpError(400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'; "
                                                        "legal range is '^[0-9]{1,20}$'."})
        return max(1, min(int(raw), MAX_LIMIT))

    def _symbol_param(self, query: dict[str, list[str]]) -> str:
        raw = query.get("symbol", [""])[0]
        if not raw:
            raise HttpError(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was "
                                                        "empty/null, or malformed."})
        sym = self.by_venue_symbol().get(raw)
        if sym is None:
            raise HttpError(400, INVALID_SYMBOL)
        return sym

    def symbol_info(self, spec: SymbolSpec) -> dict[str, Any]:
        return {
            "symbol": venue_symbol(spec.symbol), "status": "TRADING",
            "baseAsset": spec.base, "baseAssetPrecision": 8,
            "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fixed(spec.tick, 8),
                 "maxPrice": "1000000.00000000", "tickSize": fixed(spec.tick, 8)},
                {"filterType": "LOT_SIZE", "minQty": "0.00000001", "maxQty": "9000.00000000",
                 "stepSize": "0.00000001"},
            ],
            "permissions": ["SPOT"],
        }

    def listed(self) -> list[str]:
        return [s for s in self.specs if s not in self.unlisted]

    def exchange_info(self, query: dict[str, list[str]]) -> dict[str, Any]:
        listed = {venue_symbol(s): s for s in self.listed()}
        wanted: list[str] | None = None
        if "symbol" in query:
            wanted = [query["symbol"][0]]
        elif "symbols" in query:
            try:
                wanted = json.loads(query["symbols"][0])
                assert isinstance(wanted, list) and all(isinstance(x, str) for x in wanted)
            except (ValueError, AssertionError):
                raise HttpError(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                                            "'symbols'."}) from None
        if wanted is not None and any(w not in listed for w in wanted):
            raise HttpError(400, INVALID_SYMBOL)
        names = wanted if wanted is not None else list(listed)
        return {
            "timezone": "UTC", "serverTime": now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [self.symbol_info(self.specs[listed[n]]) for n in names],
        }

    def depth(self, symbol: str, limit: int) -> dict[str, Any]:
        m = self.markets[symbol]
        lag = self.take_lag()
        if lag:
            self.stats["lagged_snapshots"] += 1
            book, last_id = m.state_at(lag, time.monotonic())
        else:
            book, last_id = m.book, m.marker
        self.stats["snapshots_served"] += 1
        return {"lastUpdateId": last_id,
                "bids": [[fixed(p, 8), fixed(a, 8)] for p, a in book.sorted_bids(limit)],
                "asks": [[fixed(p, 8), fixed(a, 8)] for p, a in book.sorted_asks(limit)]}

    # --- WebSocket -----------------------------------------------------------------------------

    def combined(self, conn: Conn) -> bool:
        return conn.path == "/stream"

    def _subscribe(self, conn: Conn, streams: list[str]) -> None:
        for s in streams:
            conn.subs.add(s)
        self._recompute(conn)

    def _recompute(self, conn: Conn) -> None:
        depth: dict[str, list[str]] = {}
        for s in sorted(conn.subs):
            sym = self.stream_symbol(s)
            if sym is not None:
                depth.setdefault(sym, []).append(s)
        conn.state["depth"] = depth
        conn.symbols = set(depth)

    async def on_open(self, conn: Conn) -> None:
        streams: list[str] = []
        if conn.path == "/stream":
            raw = conn.query.get("streams", [""])[0]
            streams = [s for s in raw.split("/") if s]
        elif conn.path.startswith("/ws/"):
            streams = [s for s in conn.path[len("/ws/"):].split("/") if s]
        self._subscribe(conn, streams)

    async def on_message(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as e:
            conn.push(dumps({"code": 3, "msg": f"Invalid JSON: {e}"}))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            conn.push(dumps({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer",
                             "id": msg.get("id") if isinstance(msg, dict) else None}))
            return
        method, params, rid = msg["method"], msg.get("params", []), msg.get("id")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                conn.push(dumps({"code": 2, "msg": "Invalid request: invalid value for params", "id": rid}))
                return
            if method == "SUBSCRIBE":
                self._subscribe(conn, params)
            else:
                conn.subs.difference_update(params)
                self._recompute(conn)
            conn.push(dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.push(dumps({"result": sorted(conn.subs), "id": rid}))
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            conn.push(dumps({"result": None if method == "SET_PROPERTY" else False, "id": rid}))
        else:
            conn.push(dumps({"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}))

    def frame(self, conn: Conn, stream: str, data: dict[str, Any] | str) -> str:
        body = data if isinstance(data, str) else dumps(data)
        return f'{{"stream":"{stream}","data":{body}}}' if self.combined(conn) else body

    def shutdown_frame(self, conn: Conn) -> str:
        return self.frame(conn, "!serverShutdown", {"e": "serverShutdown", "E": now_ms()})

    # --- book events ---------------------------------------------------------------------------

    @staticmethod
    def _levels(levels: list[tuple[Decimal, Decimal]]) -> list[list[str]]:
        return [[fixed(p, 8), fixed(a, 8)] for p, a in levels]

    def event(self, symbol: str, first: int, last: int, ch: Changes, extra: bool = False) -> dict[str, Any]:
        ev: dict[str, Any] = {"e": "depthUpdate", "E": now_ms(), "s": venue_symbol(symbol),
                              "U": first, "u": last, "b": self._levels(ch.bids), "a": self._levels(ch.asks)}
        if extra:
            ev["x"] = "an unknown field"
            ev["T"] = now_ms()
        return ev

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        m = self.markets[symbol]
        first = m.marker + 1
        last = first + m.rng.choice((0, 0, 0, 1, 2, 5))
        ch = m.step(last, now, burst=burst)
        self.stats["events_generated"] += 1
        if hidden:
            self.stats["events_hidden"] += 1
            return
        data = dumps(self.event(symbol, first, last, ch, extra))
        for c in self.conns:
            for stream in c.state.get("depth", {}).get(symbol, ()):
                c.push(self.frame(c, stream, data))
                self.stats["events_sent"] += 1

    def bad_event(self, kind: int, symbol: str, next_id: int) -> str:
        """A malformed depth event body (kinds 0..3: invalid JSON, wrong types, negative amount,
        NaN amount). Carries the next update id without consuming it."""
        vs = venue_symbol(symbol)
        good = {"e": "depthUpdate", "E": now_ms(), "s": vs, "U": next_id, "u": next_id}
        if kind == 0:
            return dumps({**good, "b": [], "a": []})[:-9] + ',"b":[["1.0'
        if kind == 1:
            return dumps({**good, "U": str(next_id), "u": None, "b": "not a list", "a": {"1": 2}})
        if kind == 2:
            return dumps({**good, "b": [["1.00000000", "-1.00000000"]], "a": []})
        return dumps({**good, "b": [], "a": [["99999.00000000", "NaN"]]})

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        depth: dict[str, list[str]] = conn.state.get("depth", {})
        if not depth:
            return None
        sym = sorted(depth)[i % len(depth)]
        m = self.markets.get(sym)
        next_id = m.marker + 1 if m is not None else int(conn.state.get("last_u", {}).get(sym, 0)) + 1
        body = self.bad_event(kind, sym, next_id)
        stream = depth[sym][0]
        return f'{{"stream":"{stream}","data":{body}}}' if self.combined(conn) else body
