"""Simulated Gemini: the current WebSocket API (``/``), market data v2 (``/v2/marketdata``) and the
REST symbol endpoints on one loopback port. Written from Gemini's documentation and the real v2
recording (exchanges.md §5), not from the feed's parser.

REST (plain HTTP GET):

* ``/v1/symbols`` -> ``["btcusd","ethusd"]`` (lowercase);
* ``/v1/symbols/details/<symbol>`` (any case) -> ``{"symbol":"BTCUSD","base_currency":"BTC",
  "quote_currency":"USD","tick_size":1E-8,"quote_increment":0.01,"min_order_size":"0.00001",
  "status":"open","wrap_enabled":false}`` (``tick_size`` is the quantity step, ``quote_increment``
  the price tick, both JSON numbers); unknown -> HTTP 400 ``{"result":"error","reason":
  "InvalidSymbol","message":".."}``.

Current API at ``/`` (``?snapshot=-1``: the first event of each subscribed symbol is its full
book; ``?snapshot=N``: its best N levels per side; no parameter: diffs only):

* ``{"id":1,"method":"SUBSCRIBE","params":["btcusd@depth@100ms"]}`` -> ``{"id":1,"status":200,
  "result":null}``; any unknown symbol or stream in ``params`` -> ``{"id":1,"status":400,"error":
  {"code":-1013,"msg":".."}}`` and nothing of that request is subscribed. ``UNSUBSCRIBE`` and
  ``LIST_SUBSCRIPTIONS`` too. ``<symbol>@depth`` is the same stream.
* diffs ``{"e":"depthUpdate","E":<ns>,"s":"btcusd","U":first,"u":last,"b":[["43000.12","0.5"]],
  "a":[..]}``: absolute quantities, ``"0"`` deletes; ``U == previous u + 1`` per symbol unless a
  ``gap`` fault is injected; the initial book has ``U == u`` = the id of the last update it holds.
  Every subscription starts its book anew (also after a reconnect).

Market data v2 at ``/v2/marketdata``:

* ``{"type":"subscribe","subscriptions":[{"name":"l2","symbols":["BTCUSD"]}]}`` (``unsubscribe``
  likewise); per symbol first ``{"type":"l2_updates","symbol":"BTCUSD","changes":[["buy",p,q],..,
  ["sell",p,q],..],"trades":[..],"auction_events":[]}`` = the full book, then ``l2_updates`` with
  ``changes`` only; ``{"type":"trade",..}`` now and then; ``{"type":"heartbeat","timestamp":<ms>}``
  every 5 s. An unknown symbol -> ``{"type":"error","result":"error","reason":"InvalidSymbol",
  "message":".."}`` (the known ones of the request are subscribed).

Numbers are strings: prices with the tick's decimals (``"292.00"``), quantities without trailing
zeros (``"0.1"``), as in the recording.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from websockets.http11 import Response

from services.simulator.market import Changes, Level, canonical, fixed
from services.simulator.venue import Conn, HttpError, RestFault, VenueServer, dumps, http_response

HEARTBEAT_EVERY = 5.0
STREAM_SUFFIXES = ("@depth@100ms", "@depth")
TRADE_PROBABILITY = 0.1
KEEP_TRADES = 50
V2_PATHS = ("/v2/marketdata",)


def ws_symbol(symbol: str) -> str:
    """BTC/USD -> btcusd (current API and REST)."""
    return symbol.replace("/", "").lower()


def v2_symbol(symbol: str) -> str:
    """BTC/USD -> BTCUSD (market data v2)."""
    return symbol.replace("/", "").upper()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Stream:
    """One subscribed depth stream of a current-API connection."""

    name: str
    symbol: str


def _api(conn: Conn) -> str:
    return str(conn.state.get("api", "ws"))


class GeminiServer(VenueServer):
    """Gemini's current WebSocket API, market data v2 and the symbol REST endpoints on one port."""

    kind = "gemini"
    rest_snapshots = False   # the initial book comes in-band (lag_snapshot does not apply)
    FAULTS: ClassVar[dict[str, str]] = {
        "no_initial_book": "[count=1]: the next count subscriptions (either API) get no initial book, only "
                           "the updates after it (a feed must time out and reconnect)",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._rng = random.Random(f"gemini:{self.id}:trades")
        self._trade_ids = 45465785975
        self.trades: dict[str, deque[dict[str, Any]]] = {}
        self.withhold = 0   # subscriptions still to serve without their initial book (fault)

    def market_added(self, symbol: str) -> None:
        """Update ids start high, as on the real venue (called by the simulator per market)."""
        m = self.markets[symbol]
        m.marker = m.rng.randint(10**9, 10**10)

    # --- symbols -------------------------------------------------------------------------------

    def listed(self) -> list[str]:
        return [s for s in self.specs if s not in self.unlisted]

    def lookup(self, name: str) -> str | None:
        """btcusd / BTCUSD -> BTC/USD when listed."""
        for s in self.listed():
            if ws_symbol(s) == name.lower():
                return s
        return None

    # --- REST ----------------------------------------------------------------------------------

    def rate_limit_response(self, f: RestFault) -> Response:
        return http_response(f.status, {"result": "error", "reason": "RateLimited",
                                        "message": "Requests were made too frequently."},
                             [("Retry-After", f.retry_after or "1")])

    def error_response(self, status: int) -> Response:
        return http_response(status, {"result": "error", "reason": "ServerError",
                                      "message": "An unexpected error occurred"})

    def is_ws_path(self, path: str) -> bool:
        p = path.rstrip("/")
        return p == "" or p in V2_PATHS

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        fault = self.take_rest_fault(snapshot=True)
        if fault is not None:
            return fault
        parts = [p for p in path.split("/") if p]
        if parts == ["v1", "symbols"]:
            return http_response(200, self.symbols_body())
        if len(parts) == 4 and parts[:3] == ["v1", "symbols", "details"]:
            return http_response(200, self.details_body(parts[3]))
        raise HttpError(404, {"result": "error", "reason": "EndpointNotFound", "message": f"API entry point "
                                                                                         f"{path} not found"})

    def symbols_body(self) -> Any:
        return [ws_symbol(s) for s in self.listed()]

    def details_body(self, name: str) -> Any:
        sym = self.lookup(name)
        if sym is None:
            raise HttpError(400, {"result": "error", "reason": "InvalidSymbol",
                                  "message": f"Supplied value '{name}' is not a valid symbol"})
        spec = self.specs[sym]
        # JSON numbers written by hand: 1E-8 and 0.01 as the venue prints them
        return (f'{{"symbol":"{v2_symbol(sym)}","base_currency":"{spec.base}","quote_currency":"{spec.quote}",'
                f'"tick_size":1E-{spec.amount_decimals},"quote_increment":{canonical(spec.tick)},'
                f'"min_order_size":"0.00001","status":"open","wrap_enabled":false}}')

    # --- connection lifecycle --------------------------------------------------------------------

    async def on_open(self, conn: Conn) -> None:
        if conn.path.rstrip("/") in V2_PATHS:
            conn.state["api"] = "v2"
            conn.state["heartbeat"] = self.spawn(self._heartbeats(conn))
        else:
            conn.state["api"] = "ws"
            conn.state["streams"] = {}
            raw = conn.query.get("snapshot", [""])[-1]
            try:
                conn.state["snapshot"] = int(raw) if raw else 0
            except ValueError:
                conn.state["snapshot"] = 0

    async def on_close(self, conn: Conn) -> None:
        task = conn.state.get("heartbeat")
        if task is not None:
            task.cancel()

    async def _heartbeats(self, conn: Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(HEARTBEAT_EVERY)
            conn.push(dumps({"type": "heartbeat", "timestamp": now_ms()}))

    # --- messages ------------------------------------------------------------------------------

    async def on_message(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if _api(conn) == "v2":
            await self.on_v2(conn, msg)
        else:
            await self.on_ws(conn, msg)

    def ws_error(self, rid: Any, msg: str, code: int = -1013) -> str:
        return dumps({"id": rid, "status": 400, "error": {"code": code, "msg": msg}})

    async def on_ws(self, conn: Conn, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            rid = msg.get("id") if isinstance(msg, dict) else None
            conn.push(self.ws_error(rid, "Invalid request", -1000))
            return
        method, rid, params = msg["method"], msg.get("id"), msg.get("params", [])
        streams: dict[str, Stream] = conn.state["streams"]
        if method == "LIST_SUBSCRIPTIONS":
            conn.push(dumps({"id": rid, "status": 200, "result": sorted(streams)}))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            conn.push(self.ws_error(rid, f"Unknown method {method}", -1000))
            return
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            conn.push(self.ws_error(rid, "params must be a list of stream names", -1000))
            return
        if method == "UNSUBSCRIBE":
            for name in params:
                st = streams.pop(name, None)
                if st is not None:
                    conn.subs.discard(name)
            conn.symbols = {st.symbol for st in streams.values()}
            conn.push(dumps({"id": rid, "status": 200, "result": None}))
            return
        new: list[Stream] = []
        for name in params:
            sym = self.stream_symbol(name)
            if sym is None:
                conn.push(self.ws_error(rid, f"Invalid symbol or stream: {name}"))
                return
            new.append(Stream(name, sym))
        conn.push(dumps({"id": rid, "status": 200, "result": None}))
        for st in new:
            if st.name in streams:
                continue
            streams[st.name] = st
            conn.subs.add(st.name)
            conn.symbols.add(st.symbol)
            self.start_book(conn, st.symbol)
            await self.on_subscribed(conn, st.name)

    def stream_symbol(self, name: str) -> str | None:
        """'btcusd@depth@100ms' -> 'BTC/USD' when it is a depth stream of a listed symbol."""
        for suffix in STREAM_SUFFIXES:
            if name.endswith(suffix):
                base = name[: -len(suffix)]
                return self.lookup(base) if base == base.lower() else None
        return None

    async def on_v2(self, conn: Conn, msg: Any) -> None:
        subs = msg.get("subscriptions") if isinstance(msg, dict) else None
        typ = msg.get("type") if isinstance(msg, dict) else None
        if typ not in ("subscribe", "unsubscribe") or not isinstance(subs, list):
            conn.push(dumps({"type": "error", "result": "error", "reason": "InvalidJson",
                             "message": "Expected {\"type\":\"subscribe\",\"subscriptions\":[..]}"}))
            return
        for s in subs:
            if not isinstance(s, dict) or s.get("name") != "l2" or not isinstance(s.get("symbols"), list):
                conn.push(dumps({"type": "error", "result": "error", "reason": "InvalidSubscription",
                                 "message": f"Unsupported subscription {s!r}"}))
                continue
            for name in s["symbols"]:
                sym = self.lookup(name) if isinstance(name, str) else None
                if sym is None:
                    conn.push(dumps({"type": "error", "result": "error", "reason": "InvalidSymbol",
                                     "message": f"Unknown symbol {name}"}))
                    continue
                key = f"l2:{v2_symbol(sym)}"
                if typ == "unsubscribe":
                    conn.subs.discard(key)
                    conn.symbols.discard(sym)
                    continue
                conn.subs.add(key)
                conn.symbols.add(sym)
                self.start_book(conn, sym)
                await self.on_subscribed(conn, key)

    # --- hooks for replay ----------------------------------------------------------------------

    def start_book(self, conn: Conn, symbol: str) -> None:
        """Send the initial book of a new subscription (live mode; a replay sends the recorded one)."""
        m = self.markets.get(symbol)
        if m is None:
            return
        if self.withhold > 0:
            self.withhold -= 1
            self.stats["initial_books_withheld"] += 1
            return
        if _api(conn) == "v2":
            conn.push(self.v2_frame(symbol, m.book.sorted_bids(), m.book.sorted_asks(), initial=True))
        else:
            n = int(conn.state.get("snapshot", 0))
            if n == 0:
                return
            top = None if n < 0 else n
            for st in conn.state["streams"].values():
                if st.symbol == symbol:
                    conn.push(self.ws_frame(symbol, m.marker, m.marker, m.book.sorted_bids(top),
                                            m.book.sorted_asks(top)))
                    break
        self.stats["snapshots_served"] += 1

    async def on_subscribed(self, conn: Conn, key: str) -> None:
        """Called after a subscription (``key``: ``btcusd@depth@100ms`` or ``l2:BTCUSD``)."""

    # --- frames --------------------------------------------------------------------------------

    def _price(self, symbol: str, p: Decimal) -> str:
        return fixed(p, self.specs[symbol].price_decimals)

    def ws_frame(self, symbol: str, first: int, last: int, bids: Iterable[Level], asks: Iterable[Level],
                 extra: bool = False) -> str:
        ev: dict[str, Any] = {"e": "depthUpdate", "E": time.time_ns(), "s": ws_symbol(symbol), "U": first, "u": last,
                              "b": [[self._price(symbol, p), canonical(q)] for p, q in bids],
                              "a": [[self._price(symbol, p), canonical(q)] for p, q in asks]}
        if extra:
            ev["x"] = "an unknown field"
        return dumps(ev)

    def v2_frame(self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], *, initial: bool = False,
                 extra: bool = False) -> str:
        changes = [["buy", self._price(symbol, p), canonical(q)] for p, q in bids]
        changes += [["sell", self._price(symbol, p), canonical(q)] for p, q in asks]
        msg: dict[str, Any] = {"type": "l2_updates", "symbol": v2_symbol(symbol), "changes": changes}
        if initial:
            msg["trades"] = list(self.trades.get(symbol, ()))
            msg["auction_events"] = []
        if extra:
            msg["x"] = "an unknown field"
        return dumps(msg)

    def trade(self, symbol: str) -> dict[str, Any] | None:
        """A trade at the best price of a side (informational: the book change comes as l2)."""
        book = self.markets[symbol].book
        side = self._rng.choice(("buy", "sell"))
        levels = book.sorted_asks(1) if side == "buy" else book.sorted_bids(1)
        if not levels:
            return None
        price, amount = levels[0]
        qty = min(amount, Decimal(self._rng.randint(1, 10**6)).scaleb(-8))
        self._trade_ids += self._rng.randint(1, 300)
        t = {"type": "trade", "symbol": v2_symbol(symbol), "event_id": self._trade_ids, "timestamp": now_ms(),
             "price": self._price(symbol, price), "quantity": canonical(qty), "side": side}
        self.trades.setdefault(symbol, deque(maxlen=KEEP_TRADES)).appendleft(t)
        return t

    # --- book events ---------------------------------------------------------------------------

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        m = self.markets[symbol]
        first = m.marker + 1
        last = first + m.rng.choice((0, 0, 0, 1, 2))
        ch = m.step(last, now, burst=burst)
        self.stats["events_generated"] += 1
        if hidden:
            self.stats["events_hidden"] += 1
            return
        ws_text: str | None = None
        v2_text: str | None = None
        trade = self.trade(symbol) if self._rng.random() < TRADE_PROBABILITY else None
        for c in list(self.conns):
            if symbol not in c.symbols:
                continue
            if _api(c) == "v2":
                if trade is not None:
                    c.push(dumps(trade))
                if v2_text is None:
                    v2_text = self.v2_frame(symbol, ch.bids, ch.asks, extra=extra)
                c.push(v2_text)
            else:
                if ws_text is None:
                    ws_text = self.ws_frame(symbol, first, last, ch.bids, ch.asks, extra=extra)
                for st in c.state["streams"].values():
                    if st.symbol == symbol:
                        c.push(ws_text)
                        break
            self.stats["events_sent"] += 1

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        syms = sorted(conn.symbols)
        if not syms:
            return None
        sym = syms[i % len(syms)]
        if _api(conn) == "v2":
            head = f'{{"type":"l2_updates","symbol":"{v2_symbol(sym)}","changes":'
            if kind == 0:
                return head + '[["buy","1.0'
            if kind == 1:
                return head + '"not a list"}'
            if kind == 2:
                return head + '[["buy","1.00","-1"]]}'
            return head + '[["sell","99999.00","NaN"]]}'
        m = self.markets.get(sym)
        nid = m.marker + 1 if m is not None else 0
        good = {"e": "depthUpdate", "E": time.time_ns(), "s": ws_symbol(sym), "U": nid, "u": nid}
        if kind == 0:
            return dumps({**good, "b": [], "a": []})[:-9] + ',"b":[["1.0'
        if kind == 1:
            return dumps({**good, "U": str(nid), "u": None, "b": "not a list", "a": {"1": 2}})
        if kind == 2:
            return dumps({**good, "b": [["1.00", "-1"]], "a": []})
        return dumps({**good, "b": [], "a": [["99999.00", "NaN"]]})

    # --- faults --------------------------------------------------------------------------------

    def venue_fault(self, kind: str, symbol: str | None, params: Mapping[str, str]) -> dict[str, Any] | None:
        """``drop`` also removes levels from the truth while nobody is connected;
        ``no_initial_book`` withholds initial books; no REST snapshot to lag. The other generic
        kinds keep their handling."""
        if kind == "drop":
            raw = params.get("remove") or "3"
            if not raw.isdigit():
                raise ValueError(f"remove={raw!r} must be an integer >= 0")
            n = self.drop()
            return {"connections": n, "removed": self.remove_top(int(raw), symbol)}
        if kind == "no_initial_book":
            raw = params.get("count") or "1"
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"count={raw!r} must be an integer >= 1")
            self.withhold += int(raw)
            return {"count": int(raw)}
        if kind == "lag_snapshot":
            raise ValueError("lag_snapshot: Gemini has no REST snapshot (its initial book comes in-band)")
        return None

    def remove_top(self, n: int, symbol: str | None = None) -> dict[str, dict[str, list[str]]]:
        """Delete the best ``n`` levels per side of ``symbol`` (default: every symbol) from the
        truth, as one update nobody receives. Returns the removed prices (canonical text)."""
        out: dict[str, dict[str, list[str]]] = {}
        if not n:
            return out
        for sym in [symbol] if symbol else list(self.markets):
            m = self.markets.get(sym)
            if m is None:
                continue
            ch = Changes([(p, Decimal(0)) for p, _ in m.book.sorted_bids(n)],
                         [(p, Decimal(0)) for p, _ in m.book.sorted_asks(n)])
            m.commit(ch, m.marker + 1, time.monotonic())
            self.stats["events_generated"] += 1
            self.stats["events_hidden"] += 1
            out[sym] = {"bids": [canonical(p) for p, _ in ch.bids], "asks": [canonical(p) for p, _ in ch.asks]}
        return out
