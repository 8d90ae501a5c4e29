"""Simulated Bitstamp: the real REST paths and WebSocket protocol on one loopback port.

REST (plain HTTP GET, under ``/api/v2/``):

* ``order_book/<pair>`` and ``order_book/<pair>/`` (``?group=0|1|2`` accepted) -> full depth
  ``{"timestamp":"<s>","microtimestamp":"<us>","bids":[["43250.10","0.50000000"],..],"asks":[..]}``;
  unknown pair -> HTTP 404 ``{"status":"error","reason":"Invalid currency pair"}``
* ``trading-pairs-info/`` -> ``[{"name":"BTC/USDT","url_symbol":"btcusdt","base_decimals":8,
  "counter_decimals":2,"trading":"Enabled",..}]``

WebSocket at ``/``:

* ``{"event":"bts:subscribe","data":{"channel":"diff_order_book_btcusdt"}}`` ->
  ``{"event":"bts:subscription_succeeded","channel":"diff_order_book_btcusdt","data":{}}`` (any
  channel name is acknowledged, as the real venue does; only diff_order_book_<served pair> carries
  data); ``bts:unsubscribe`` -> ``bts:unsubscription_succeeded``.
* diffs ``{"data":{"timestamp":"<s>","microtimestamp":"<us>","bids":[[p,a]..],"asks":[..]},
  "channel":"diff_order_book_btcusdt","event":"data"}``, amount ``"0.00000000"`` deletes, prices with
  the pair's counter decimals, amounts with 8; microtimestamps strictly increase per venue and every
  snapshot's microtimestamp lies strictly between the diffs it includes and the ones it does not.
* ``{"event":"bts:heartbeat"}`` -> ``{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}``;
  bad JSON -> ``{"event":"bts:error","channel":"","data":{"code":null,"message":"Incorrect JSON format."}}``.
* shutdown: ``{"event":"bts:request_reconnect","channel":"","data":""}``, then close.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from websockets.http11 import Response

from services.simulator.market import Changes, SymbolSpec, fixed
from services.simulator.venue import Conn, HttpError, RestFault, VenueServer, dumps, http_response

CHANNEL_PREFIX = "diff_order_book_"
INVALID_PAIR = {"status": "error", "reason": "Invalid currency pair"}


def url_symbol(symbol: str) -> str:
    """BTC/USDT -> btcusdt."""
    return symbol.replace("/", "").lower()


class BitstampServer(VenueServer):
    kind = "bitstamp"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._last_us = 0

    def next_us(self) -> int:
        """A strictly increasing microsecond clock (per venue)."""
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return self._last_us

    def by_url_symbol(self) -> dict[str, str]:
        return {url_symbol(s): s for s in self.specs}

    # --- REST ----------------------------------------------------------------------------------

    def rate_limit_response(self, f: RestFault) -> Response:
        return http_response(f.status, {"status": "error", "reason": "Rate limit exceeded", "code": "400.002"},
                             [("Retry-After", f.retry_after or "1")])

    def error_response(self, status: int) -> Response:
        return http_response(status, {"status": "error", "reason": "Internal server error"})

    def is_ws_path(self, path: str) -> bool:
        return path in ("", "/")

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[:2] != ["api", "v2"]:
            raise HttpError(404, {"status": "error", "reason": f"Unknown path {path}"})
        rest = parts[2:]
        is_book = rest[0] == "order_book" and len(rest) == 2
        fault = self.take_rest_fault(snapshot=is_book)
        if fault is not None:
            return fault
        if rest == ["trading-pairs-info"]:
            return http_response(200, self.pairs_info())
        if is_book:
            group = query.get("group", ["1"])[0]
            if group not in ("0", "1", "2"):
                raise HttpError(400, {"status": "error", "reason": "Invalid group parameter"})
            return http_response(200, self.order_book(rest[1]))
        raise HttpError(404, {"status": "error", "reason": f"Unknown path {path}"})

    def pair_info(self, spec: SymbolSpec) -> dict[str, Any]:
        return {"name": spec.symbol, "url_symbol": url_symbol(spec.symbol), "base_decimals": 8,
                "counter_decimals": spec.price_decimals, "instant_order_counter_decimals": spec.price_decimals,
                "minimum_order": f"10.00000000 {spec.quote}", "trading": "Enabled",
                "instant_and_market_orders": "Enabled", "description": f"{spec.base} / {spec.quote}"}

    def pairs_info(self) -> list[dict[str, Any]]:
        return [self.pair_info(spec) for s, spec in self.specs.items() if s not in self.unlisted]

    def order_book(self, pair: str) -> dict[str, Any]:
        sym = self.by_url_symbol().get(pair)
        if sym is None:
            raise HttpError(404, INVALID_PAIR)
        m = self.markets[sym]
        lag = self.take_lag()
        if lag:
            self.stats["lagged_snapshots"] += 1
            book, us = m.state_at(lag, time.monotonic())
        else:
            book, us = m.book, self.next_us()
        self.stats["snapshots_served"] += 1
        d = m.spec.price_decimals
        return {"timestamp": str(us // 1_000_000), "microtimestamp": str(us),
                "bids": [[fixed(p, d), fixed(a, 8)] for p, a in book.sorted_bids()],
                "asks": [[fixed(p, d), fixed(a, 8)] for p, a in book.sorted_asks()]}

    # --- WebSocket -----------------------------------------------------------------------------

    def _recompute(self, conn: Conn) -> None:
        pairs = self.by_url_symbol()
        conn.symbols = {pairs[c[len(CHANNEL_PREFIX):]] for c in conn.subs
                        if c.startswith(CHANNEL_PREFIX) and c[len(CHANNEL_PREFIX):] in pairs}

    def error(self, message: str, code: int | None = None) -> str:
        return dumps({"event": "bts:error", "channel": "", "data": {"code": code, "message": message}})

    async def on_message(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            conn.push(self.error("Incorrect JSON format."))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            conn.push(self.error("Incorrect JSON format."))
            return
        event = msg["event"]
        if event == "bts:heartbeat":
            conn.push(dumps({"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}))
            return
        if event in ("bts:subscribe", "bts:unsubscribe"):
            data = msg.get("data")
            channel = data.get("channel") if isinstance(data, dict) else None
            if not isinstance(channel, str) or not channel:
                conn.push(self.error("Bad subscription string.", 4009))
                return
            if event == "bts:subscribe":
                conn.subs.add(channel)
                reply = "bts:subscription_succeeded"
            else:
                conn.subs.discard(channel)
                reply = "bts:unsubscription_succeeded"
            self._recompute(conn)
            conn.push(dumps({"event": reply, "channel": channel, "data": {}}))
            await self.on_subscribed(conn, channel)
            return
        conn.push(self.error(f"Unknown event {event!r}."))

    async def on_subscribed(self, conn: Conn, channel: str) -> None:
        """Hook for replay (starts the recorded stream)."""

    def shutdown_frame(self, conn: Conn) -> str:
        return dumps({"event": "bts:request_reconnect", "channel": "", "data": ""})

    # --- book events ---------------------------------------------------------------------------

    def frame(self, symbol: str, us: int, ch: Changes, extra: bool = False) -> str:
        d = self.specs[symbol].price_decimals

        def lv(levels: list[tuple[Decimal, Decimal]]) -> list[list[str]]:
            return [[fixed(p, d), fixed(a, 8)] for p, a in levels]
        data: dict[str, Any] = {"timestamp": str(us // 1_000_000), "microtimestamp": str(us),
                                "bids": lv(ch.bids), "asks": lv(ch.asks)}
        msg: dict[str, Any] = {"data": data, "channel": CHANNEL_PREFIX + url_symbol(symbol), "event": "data"}
        if extra:
            data["x"] = "an unknown field"
            msg["unknown"] = {"a": 1}
        return dumps(msg)

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        m = self.markets[symbol]
        us = self.next_us()
        ch = m.step(us, now, burst=burst)
        self.stats["events_generated"] += 1
        if hidden:
            self.stats["events_hidden"] += 1
            return
        frame = self.frame(symbol, us, ch, extra)
        for c in self.conns:
            if symbol in c.symbols:
                c.push(frame)
                self.stats["events_sent"] += 1

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        chans = sorted(c for c in conn.subs if c.startswith(CHANNEL_PREFIX))
        if not chans:
            return None
        channel = chans[i % len(chans)]
        us = self.next_us()
        good: dict[str, Any] = {"timestamp": str(us // 1_000_000), "microtimestamp": str(us)}
        if kind == 0:
            return dumps({"data": {**good, "bids": [], "asks": []}, "channel": channel,
                          "event": "data"})[:-30] + '"bids":[["1.0'
        if kind == 1:
            data = {**good, "microtimestamp": us, "bids": "not a list", "asks": [[1, None]]}
        elif kind == 2:
            data = {**good, "bids": [["1.00", "-1.00000000"]], "asks": []}
        else:
            data = {**good, "bids": [], "asks": [["99999.00", "NaN"]]}
        return dumps({"data": data, "channel": channel, "event": "data"})
