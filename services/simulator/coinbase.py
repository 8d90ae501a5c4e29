"""Simulated Coinbase: the Advanced Trade and the Exchange WebSocket market data feeds, and both
public product endpoints, on one loopback port. A connection speaks the API of its first
subscribe message (``"channel": "<name>"`` = Advanced Trade, ``"channels": [..]`` = Exchange);
a client that has not subscribed within ``subscribe_timeout`` (5 s, as both real feeds) is closed
(1008).

REST (plain HTTP GET):

* Advanced Trade ``/api/v3/brokerage/market/products`` (``{"products":[..],"num_products":N}``)
  and ``/api/v3/brokerage/market/products/<id>`` -> ``{"product_id":"BTC-USD","status":"online",
  "trading_disabled":false,"price_increment":"0.01","quote_increment":"0.01",
  "base_increment":"0.00000001",..}``; unknown id -> 404 ``{"error":"NOT_FOUND",..,"message":..}``.
* Exchange ``/products`` and ``/products/<id>`` -> ``{"id":"BTC-USD","quote_increment":"0.01",
  "base_increment":"0.00000001","status":"online","trading_disabled":false,..}``; unknown id ->
  404 ``{"message":"NotFound"}``. An ``unlist``-ed product leaves both lists and its detail says
  ``"status":"delisted"`` (Exchange) / ``"offline"`` (Advanced Trade) with ``trading_disabled``.

Advanced Trade (WebSocket at ``/``):

* ``{"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2"}``,
  ``{"type":"subscribe","channel":"heartbeats"}``; ``unsubscribe`` likewise. Every message is
  ``{"channel":..,"client_id":"","timestamp":"<RFC3339, ns>","sequence_num":N,"events":[..]}``
  and ``sequence_num`` counts every message of the connection (0, 1, 2, .. across channels).
* a subscribe to level2 sends one ``l2_data`` snapshot message per product (the complete book:
  bids best first, then offers), then the ``subscriptions`` ack listing all subscriptions;
  updates are collected for ``batch_interval`` (50 ms) and sent as one ``l2_data`` message
  with one ``update`` event per product that changed (so a message may carry several
  products); an update is ``{"side":"bid"|"offer","event_time":..,"price_level":"43000.01",
  "new_quantity":"0.5"}`` (not zero-padded; ``"0"`` removes).
* ``heartbeats`` every second with a per-connection ``heartbeat_counter``.
* unknown product -> ``{"type":"error","message":..}`` and nothing of that message is
  subscribed; unknown channel -> ``{"type":"error","message":"authentication failure"}``
  (as the real feed says). Other public channels (ticker, market_trades, ..) are accepted and
  stay quiet.

Exchange (WebSocket at ``/``):

* ``{"type":"subscribe","product_ids":[..],"channels":["level2_batch","heartbeat"]}`` (channels
  may also be ``{"name":..,"product_ids":[..]}``) -> ``{"type":"subscriptions","channels":
  [{"name":"level2_batch","product_ids":[..]},..]}``, then a ``snapshot`` per new product
  ``{"type":"snapshot","product_id":..,"bids":[["43000.01","0.50000000"],..],"asks":[..]}``.
* ``l2update`` ``{"type":"l2update","product_id":..,"changes":[["buy"|"sell",p,s],..],
  "time":..}``: ``level2_batch`` collects 50 ms of changes per product into one message;
  ``level2`` sends one change per message (as the recording does). Prices carry the tick's
  decimals, sizes 8; a removal's size is spelled ``"0.00000000"``, ``"0"``, ``"0.00"`` or
  ``"0.000000"`` in turn. No sequence numbers on l2 messages.
* ``heartbeat`` channel: every second per product ``{"type":"heartbeat","last_trade_id":..,
  "product_id":..,"sequence":..,"time":..}``; ``ticker`` channel: one ``ticker`` at subscribe,
  then one whenever the top of the book changed and a second has passed, with ``best_bid`` /
  ``best_ask`` equal to the book after the l2 messages sent before it.
* errors ``{"type":"error","message":"Failed to subscribe","reason":..}``.

Faults besides the shared ones: ``skip_seq`` (the next ``sequence_num`` of every Advanced Trade
connection jumps), ``crossed`` (an Exchange ``l2update`` with a bid at or above the best ask that
is not in the truth). A ``gap`` loses events: on Advanced Trade each lost event consumes a
``sequence_num`` (detectable), on Exchange it is undetectable. ``shutdown`` closes (1001) without
a notice: Coinbase documents none. Snapshots come in-band, so ``lag_snapshot`` does not apply and
``rest_error`` hits the product endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from websockets.http11 import Response

from services.simulator.market import Changes, SymbolSpec, canonical, fixed
from services.simulator.venue import Conn, HttpError, VenueServer, dumps, http_response

log = logging.getLogger("simulator")

AT, EX = "at", "ex"
AT_QUIET = {"ticker", "ticker_batch", "market_trades", "status", "candles", "user", "futures_balance_summary"}
EX_L2 = ("level2", "level2_batch")
EX_QUIET = {"matches", "full", "status", "ticker_batch", "auctionfeed", "level3", "rfq_matches"}
EX_KNOWN = {*EX_L2, "heartbeat", "ticker", *EX_QUIET}
ZEROS = ("0.00000000", "0", "0.00", "0.000000")
AT_NOT_FOUND = {"error": "NOT_FOUND", "error_details": "product not found", "message": "product not found"}
EX_NOT_FOUND = {"message": "NotFound"}


def product_id(symbol: str) -> str:
    """BTC/USD -> BTC-USD."""
    return symbol.replace("/", "-")


def rfc3339(ns: int, digits: int = 9) -> str:
    """UTC RFC 3339 with ``digits`` fractional digits: 2026-09-07T01:57:58.894355123Z."""
    s, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}"[: digits + 1] + "Z"


def go_time(ns: int) -> str:
    """The heartbeat's ``current_time``, Go's time.String(): '2023-06-23 20:31:56.12 +0000 UTC m=+9.5'."""
    s, frac = divmod(ns, 10**9)
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s)) + f".{frac:09d} +0000 UTC "
            f"m=+{time.monotonic():.9f}")


class CoinbaseServer(VenueServer):
    kind = "coinbase"
    FAULTS: ClassVar[dict[str, str]] = {
        "skip_seq": "[count=1]: the next message of every Advanced Trade connection skips count sequence_num "
                    "values (nothing is lost)",
        "crossed": "[symbol]: an Exchange l2update with a bid one tick above the best ask, not in the truth, "
                   "on each Exchange connection subscribed to S (default: every symbol)",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.subscribe_timeout = 5.0
        self.batch_interval = 0.05
        self.heartbeat_interval = 1.0
        self._zero = 0
        self._trade_id = 1000
        self._tick_top: dict[str, tuple[Any, Any]] = {}
        self._tick_at: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        self.spawn(self._every(self.batch_interval, self.flush_all))
        self.spawn(self._every(self.heartbeat_interval, self._heartbeats))

    async def _every(self, interval: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                fn()
            except Exception:  # a bug here must not stop the venue's clock
                log.exception("%s: %s failed", self.id, getattr(fn, "__name__", fn))

    async def drain(self, timeout: float = 2.0) -> None:
        self.flush_all()
        await super().drain(timeout)

    # --- symbols -------------------------------------------------------------------------------

    def by_product(self) -> dict[str, str]:
        return {product_id(s): s for s in self.specs}

    def _zero_text(self) -> str:
        self._zero += 1
        return ZEROS[self._zero % len(ZEROS)]

    # --- REST ----------------------------------------------------------------------------------

    def is_ws_path(self, path: str) -> bool:
        return path in ("", "/")

    def error_response(self, status: int) -> Response:
        return http_response(status, {"message": "Internal server error"})

    def rate_limit_response(self, f: Any) -> Response:
        return http_response(f.status, {"message": "Public rate limit exceeded"},
                             [("Retry-After", f.retry_after or "1")])

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        at = parts[:5] == ["api", "v3", "brokerage", "market", "products"]
        rest = parts[5:] if at else parts[1:] if parts[:1] == ["products"] else None
        if rest is None or len(rest) > 1:
            raise HttpError(404, {"message": f"Unknown path {path}"})
        fault = self.take_rest_fault(snapshot=bool(rest))
        if fault is not None:
            return fault
        products = self.by_product()
        if not rest:
            listed = [self.specs[products[p]] for p in products if products[p] not in self.unlisted]
            if at:
                return http_response(200, {"products": [self.at_product(s) for s in listed],
                                           "num_products": len(listed)})
            return http_response(200, [self.ex_product(s) for s in listed])
        sym = products.get(rest[0])
        if sym is None:
            raise HttpError(404, AT_NOT_FOUND if at else EX_NOT_FOUND)
        spec = self.specs[sym]
        return http_response(200, self.at_product(spec) if at else self.ex_product(spec))

    def _top(self, symbol: str) -> tuple[str, str]:
        m = self.markets.get(symbol)
        if m is None or not m.book.bids or not m.book.asks:
            return "", ""
        return canonical(max(m.book.bids)), canonical(min(m.book.asks))

    def at_product(self, spec: SymbolSpec) -> dict[str, Any]:
        """Advanced Trade's public product (the fields a pair check needs, and their neighbours)."""
        gone = spec.symbol in self.unlisted
        bid, ask = self._top(spec.symbol)
        mid = canonical((Decimal(bid) + Decimal(ask)) / 2) if bid and ask else ""
        tick = canonical(spec.tick)
        return {"product_id": product_id(spec.symbol), "price": bid, "price_percentage_change_24h": "0.5",
                "volume_24h": "1234.5", "volume_percentage_change_24h": "-2.1",
                "base_increment": "0.00000001", "quote_increment": tick, "quote_min_size": "1",
                "quote_max_size": "150000000", "base_min_size": "0.00000001", "base_max_size": "3400",
                "base_name": spec.base, "quote_name": spec.quote, "watched": False, "is_disabled": gone,
                "new": False, "status": "offline" if gone else "online", "cancel_only": False,
                "limit_only": False, "post_only": False, "trading_disabled": gone, "auction_mode": False,
                "product_type": "SPOT", "quote_currency_id": spec.quote, "base_currency_id": spec.base,
                "fcm_trading_session_details": None, "mid_market_price": mid, "alias": "", "alias_to": [],
                "base_display_symbol": spec.base, "quote_display_symbol": spec.quote, "view_only": False,
                "price_increment": tick, "display_name": f"{spec.base}-{spec.quote}",
                "product_venue": "CBE"}

    def ex_product(self, spec: SymbolSpec) -> dict[str, Any]:
        """The Exchange's product record, as in the recorded product list."""
        gone = spec.symbol in self.unlisted
        return {"id": product_id(spec.symbol), "base_currency": spec.base, "quote_currency": spec.quote,
                "quote_increment": canonical(spec.tick), "base_increment": "0.00000001",
                "display_name": f"{spec.base}-{spec.quote}", "min_market_funds": "1", "margin_enabled": False,
                "post_only": False, "limit_only": False, "cancel_only": False,
                "status": "delisted" if gone else "online", "status_message": "",
                "trading_disabled": gone, "fx_stablecoin": False, "max_slippage_percentage": "0.02000000",
                "auction_mode": False, "high_bid_limit_percentage": ""}

    # --- WebSocket: common -----------------------------------------------------------------------

    async def on_open(self, conn: Conn) -> None:
        conn.state.update(api=None, pending={}, seq=0, hb=0, ex={})
        self.spawn(self._deadline(conn))

    async def _deadline(self, conn: Conn) -> None:
        await asyncio.sleep(self.subscribe_timeout)
        if conn.state.get("api") is None and not conn.closed:
            self.stats["closed_unsubscribed"] += 1
            with contextlib.suppress(Exception):
                await conn.ws.close(1008, f"no subscribe within {self.subscribe_timeout:g} s")

    async def on_message(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
            conn.push(dumps({"type": "error", "message": "Failed to parse message",
                             "reason": "expected a subscribe or unsubscribe message"}))
            return
        api = AT if "channel" in msg else EX if "channels" in msg else None
        if api is None:
            conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                             "reason": "a subscribe message needs 'channel' or 'channels'"}))
            return
        if conn.state["api"] not in (None, api):
            conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                             "reason": "one connection speaks one API"}))
            return
        if api == AT:
            self._at_subscribe(conn, msg, msg["type"] == "subscribe")
        else:
            self._ex_subscribe(conn, msg, msg["type"] == "subscribe")

    def _products(self, conn: Conn, raw: Any) -> list[str] | str:
        """Canonical symbols of ``raw`` product ids, or the first bad id."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            return repr(raw)
        products = self.by_product()
        out = []
        for p in raw:
            if not isinstance(p, str) or p not in products:
                return str(p)
            out.append(products[p])
        return out

    def snapshot_levels(self, symbol: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        m = self.markets[symbol]
        return m.book.sorted_bids(), m.book.sorted_asks()

    # --- Advanced Trade --------------------------------------------------------------------------

    def at_push(self, conn: Conn, channel: str, events: list[Any], *, extra: bool = False) -> None:
        """One Advanced Trade message; takes the connection's next ``sequence_num`` even if the
        message is then lost (silence): a lost message must show as a jump."""
        seq = conn.state["seq"]
        conn.state["seq"] = seq + 1
        msg: dict[str, Any] = {"channel": channel, "client_id": "", "timestamp": rfc3339(time.time_ns()),
                               "sequence_num": seq, "events": events}
        if extra:
            msg["x_unknown"] = {"a": 1}
        conn.push(dumps(msg))

    def _at_ack(self, conn: Conn) -> None:
        subs: dict[str, list[str]] = {}
        if conn.symbols:
            subs["level2"] = sorted(product_id(s) for s in conn.symbols)
        for ch in sorted(conn.subs):
            subs[ch] = [ch] if ch in ("heartbeats", "status") else []
        self.at_push(conn, "subscriptions", [{"subscriptions": subs}])

    def _at_subscribe(self, conn: Conn, msg: dict[str, Any], on: bool) -> None:
        channel = msg.get("channel")
        products = self._products(conn, msg.get("product_ids"))
        if isinstance(products, str):
            conn.push(dumps({"type": "error", "message": f"Failed to subscribe: {products} is not a valid product"}))
            return
        if channel not in ("level2", "heartbeats") and channel not in AT_QUIET:
            conn.push(dumps({"type": "error", "message": "authentication failure"}))
            return
        if channel == "level2" and not products:
            conn.push(dumps({"type": "error", "message": "Failed to subscribe: product_ids are required for level2"}))
            return
        conn.state["api"] = AT
        if channel == "level2":
            for sym in products:
                conn.state["pending"].pop(sym, None)
                if on:
                    conn.symbols.add(sym)
                    self._at_snapshot(conn, sym)
                else:
                    conn.symbols.discard(sym)
        elif on:
            conn.subs.add(str(channel))
        else:
            conn.subs.discard(str(channel))
        self._at_ack(conn)

    def _at_snapshot(self, conn: Conn, symbol: str) -> None:
        bids, asks = self.snapshot_levels(symbol)
        t = rfc3339(time.time_ns())
        updates = [{"side": "bid", "event_time": t, "price_level": canonical(p), "new_quantity": canonical(q)}
                   for p, q in bids]
        updates += [{"side": "offer", "event_time": t, "price_level": canonical(p), "new_quantity": canonical(q)}
                    for p, q in asks]
        self.at_push(conn, "l2_data", [{"type": "snapshot", "product_id": product_id(symbol), "updates": updates}])
        self.stats["snapshots_served"] += 1

    def venue_fault(self, kind: str, symbol: str | None, params: Mapping[str, str]) -> dict[str, Any] | None:
        """Coinbase's own faults (see ``FAULTS``); ``lag_snapshot`` is refused (the snapshots come
        in-band); the other generic kinds keep their handling."""
        if kind == "skip_seq":
            raw = params.get("count") or "1"
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"count={raw!r} must be an integer >= 1")
            return {"count": int(raw), "connections": self.fault_skip_seq(int(raw))}
        if kind == "crossed":
            return {"symbol": symbol, "connections": self.fault_crossed(symbol)}
        if kind == "lag_snapshot":
            raise ValueError(f"lag_snapshot: venue {self.id!r} (coinbase) sends its snapshots in-band, not over REST")
        return None

    def fault_skip_seq(self, count: int) -> int:
        """The next message of every Advanced Trade connection skips ``count`` sequence numbers."""
        n = 0
        for c in self.conns:
            if c.state.get("api") == AT:
                c.state["seq"] += count
                n += 1
        self.stats["seq_skipped"] += n * count
        return n

    # --- Exchange ------------------------------------------------------------------------------

    def _ex_channels(self, msg: dict[str, Any]) -> list[tuple[str, Any]] | str:
        raw = msg.get("channels")
        if not isinstance(raw, list):
            return "channels must be a list"
        out = []
        for ch in raw:
            if isinstance(ch, str):
                out.append((ch, msg.get("product_ids")))
            elif isinstance(ch, dict) and isinstance(ch.get("name"), str):
                out.append((ch["name"], ch.get("product_ids", msg.get("product_ids"))))
            else:
                return f"{ch!r} is not a channel"
            if out[-1][0] not in EX_KNOWN:
                return f"{out[-1][0]} is not a valid channel"
        return out

    def _ex_subscribe(self, conn: Conn, msg: dict[str, Any], on: bool) -> None:
        chans = self._ex_channels(msg)
        if isinstance(chans, str):
            conn.push(dumps({"type": "error", "message": "Failed to subscribe", "reason": chans}))
            return
        wanted: list[tuple[str, list[str]]] = []
        for name, raw in chans:
            products = self._products(conn, raw)
            if isinstance(products, str):
                conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                                 "reason": f"{products} is not a valid product"}))
                return
            if on and not products and name != "status":
                conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                                 "reason": f"{name} requires product ids"}))
                return
            wanted.append((name, products))
        conn.state["api"] = EX
        subs: dict[str, set[str]] = conn.state["ex"]
        before = set(conn.symbols)
        new_tickers: list[str] = []
        for name, products in wanted:
            have = subs.setdefault(name, set())
            if on:
                if name == "ticker":
                    new_tickers += [p for p in products if p not in have]
                have.update(products)
            else:
                have.difference_update(products or list(have))
        self._ex_recompute(conn)
        for sym in before - conn.symbols:
            conn.state["pending"].pop(sym, None)
        for sym in sorted(set(conn.state["pending"]) - conn.state["batched"]):
            self._flush(conn, sym)        # now unbatched: what was collected must go first
        conn.push(dumps({"type": "subscriptions", "channels": [
            {"name": name, "product_ids": sorted(product_id(s) for s in prods)}
            for name, prods in subs.items() if prods]}))
        if on:
            for name, products in wanted:
                if name in EX_L2:
                    for sym in products:
                        if sym not in before:
                            self._ex_snapshot(conn, sym)
                            before.add(sym)
            for sym in new_tickers:
                conn.push(self.ticker(sym))

    def _ex_recompute(self, conn: Conn) -> None:
        subs: dict[str, set[str]] = conn.state["ex"]
        unbatched = subs.get("level2", set())
        conn.symbols = unbatched | subs.get("level2_batch", set())
        conn.state["batched"] = conn.symbols - unbatched

    def _ex_snapshot(self, conn: Conn, symbol: str) -> None:
        bids, asks = self.snapshot_levels(symbol)
        d = self.specs[symbol].price_decimals
        conn.push(dumps({"type": "snapshot", "product_id": product_id(symbol),
                         "bids": [[fixed(p, d), fixed(q, 8)] for p, q in bids],
                         "asks": [[fixed(p, d), fixed(q, 8)] for p, q in asks]}))
        self.stats["snapshots_served"] += 1

    def _ex_change(self, symbol: str, side: str, price: Decimal, qty: Decimal) -> list[str]:
        d = self.specs[symbol].price_decimals
        return [side, fixed(price, d), fixed(qty, 8) if qty else self._zero_text()]

    def ex_update(self, symbol: str, changes: list[list[str]], extra: bool = False) -> str:
        msg: dict[str, Any] = {"type": "l2update", "product_id": product_id(symbol), "changes": changes,
                               "time": rfc3339(time.time_ns(), 6)}
        if extra:
            msg["x_unknown"] = "an unknown field"
        return dumps(msg)

    def ticker(self, symbol: str) -> str:
        m = self.markets[symbol]
        bid, ask = self._top(symbol)
        self._trade_id += 1
        return dumps({"type": "ticker", "sequence": m.marker, "product_id": product_id(symbol), "price": bid,
                      "open_24h": bid, "volume_24h": "1234.50000000", "low_24h": bid, "high_24h": ask,
                      "volume_30d": "45678.90000000", "best_bid": bid, "best_bid_size": canonical(
                          m.book.bids[Decimal(bid)]) if bid else "", "best_ask": ask,
                      "best_ask_size": canonical(m.book.asks[Decimal(ask)]) if ask else "", "side": "buy",
                      "time": rfc3339(time.time_ns(), 6), "trade_id": self._trade_id, "last_size": "0.01"})

    def fault_crossed(self, symbol: str | None) -> int:
        """On every Exchange connection with an l2 subscription to ``symbol`` (default: all), an
        ``l2update`` adding a bid one tick above the best ask: a crossed book that is not in the
        truth (a feed must notice and resync)."""
        n = 0
        for c in list(self.conns):
            if c.state.get("api") != EX:
                continue
            for sym in sorted(c.symbols):
                if symbol is not None and sym != symbol:
                    continue
                m = self.markets.get(sym)
                if m is None or not m.book.asks:
                    continue
                self._flush(c, sym)
                price = min(m.book.asks) + m.spec.tick
                c.push(self.ex_update(sym, [self._ex_change(sym, "buy", price, Decimal("1.5"))]))
                n += 1
        self.stats["crossed_sent"] += n
        return n

    # --- book events ---------------------------------------------------------------------------

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        m = self.markets[symbol]
        ch = m.step(m.marker + 1, now, burst=burst)
        self.stats["events_generated"] += 1
        subscribed = [c for c in self.conns if symbol in c.symbols]
        if hidden:
            self.stats["events_hidden"] += 1
            for c in subscribed:
                if c.state.get("api") == AT:
                    c.state["seq"] += 1       # the lost message had a number
            return
        t = rfc3339(time.time_ns())
        for c in subscribed:
            if c.state["api"] == EX and symbol not in c.state.get("batched", ()):
                for side, levels in (("buy", ch.bids), ("sell", ch.asks)):
                    for p, q in levels:
                        c.push(self.ex_update(symbol, [self._ex_change(symbol, side, p, q)], extra))
            else:
                self._collect(c, symbol, ch, t)
                if extra:
                    c.state.setdefault("extra", set()).add(symbol)
            self.stats["events_sent"] += 1
        self._maybe_ticker(symbol, now)

    def emit_muted(self, symbol: str, now: float) -> None:
        """A silenced product's event: applied to the truth, sent nowhere, and, unlike a gap's
        lost event, no ``sequence_num`` is consumed (the venue never made the message; the
        connection's other products go on undisturbed). No ticker either."""
        m = self.markets[symbol]
        m.step(m.marker + 1, now)
        self.stats["events_generated"] += 1
        self.stats["events_muted"] += 1

    @staticmethod
    def _collect(conn: Conn, symbol: str, ch: Changes, t: str) -> None:
        """Add an event's changes to the connection's batch; a later change of a level replaces
        an earlier one of the same batch."""
        batch: dict[tuple[str, Decimal], tuple[Decimal, str]] = conn.state["pending"].setdefault(symbol, {})
        for side, levels in (("bid", ch.bids), ("offer", ch.asks)):
            for p, q in levels:
                batch.pop((side, p), None)
                batch[(side, p)] = (q, t)

    def _maybe_ticker(self, symbol: str, now: float) -> None:
        conns = [c for c in self.conns if c.state.get("api") == EX and symbol in c.state["ex"].get("ticker", ())]
        if not conns or now - self._tick_at.get(symbol, 0.0) < 1.0:
            return
        top = self._top(symbol)
        if top == self._tick_top.get(symbol):
            return
        self._tick_top[symbol] = top
        self._tick_at[symbol] = now
        frame = self.ticker(symbol)
        for c in conns:
            self._flush(c, symbol)
            c.push(frame)

    def flush_all(self) -> None:
        """Send every connection's collected batch: Advanced Trade one ``l2_data`` message with an
        event per product, Exchange one ``l2update`` per product."""
        for c in list(self.conns):
            if c.state.get("pending"):
                self._flush(c, None)

    def _flush(self, conn: Conn, symbol: str | None) -> None:
        pending: dict[str, dict[tuple[str, Decimal], tuple[Decimal, str]]] = conn.state["pending"]
        syms = sorted(pending) if symbol is None else [symbol] if symbol in pending else []
        if not syms:
            return
        extra: set[str] = conn.state.get("extra", set())
        if conn.state["api"] == AT:
            events = []
            for sym in syms:
                batch = pending.pop(sym)
                ev: dict[str, Any] = {"type": "update", "product_id": product_id(sym), "updates": [
                    {"side": side, "event_time": t, "price_level": canonical(p), "new_quantity": canonical(q)}
                    for (side, p), (q, t) in batch.items()]}
                if sym in extra:
                    ev["x_unknown"] = "an unknown field"
                events.append(ev)
            self.at_push(conn, "l2_data", events, extra=bool(extra & set(syms)))
        else:
            for sym in syms:
                batch = pending.pop(sym)
                changes = [self._ex_change(sym, "buy" if side == "bid" else "sell", p, q)
                           for (side, p), (q, _t) in batch.items()]
                conn.push(self.ex_update(sym, changes, sym in extra))
        extra.difference_update(syms)

    def _heartbeats(self) -> None:
        ns = time.time_ns()
        for c in list(self.conns):
            api = c.state.get("api")
            if api == AT and "heartbeats" in c.subs:
                c.state["hb"] += 1
                self.at_push(c, "heartbeats", [{"current_time": go_time(ns), "heartbeat_counter": c.state["hb"]}])
            elif api == EX:
                for sym in sorted(c.state["ex"].get("heartbeat", ())):
                    m = self.markets.get(sym)
                    c.push(dumps({"type": "heartbeat", "last_trade_id": self._trade_id, "product_id": product_id(sym),
                                  "sequence": m.marker if m else 0, "time": rfc3339(ns, 6)}))

    # --- malformed frames ----------------------------------------------------------------------

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        if not conn.symbols:
            return None
        sym = sorted(conn.symbols)[i % len(conn.symbols)]
        pid = product_id(sym)
        if conn.state["api"] == AT:
            bad: Any = [{"side": "bid", "event_time": rfc3339(time.time_ns()), "price_level": "1",
                         "new_quantity": "-1" if kind == 2 else "NaN"}]
            if kind == 1:
                bad = [{"side": 7, "event_time": None, "price_level": 1.5, "new_quantity": None}]
            seq = conn.state["seq"]
            conn.state["seq"] = seq + 1
            text = dumps({"channel": "l2_data", "client_id": "", "timestamp": rfc3339(time.time_ns()),
                          "sequence_num": seq, "events": [{"type": "update", "product_id": pid, "updates": bad}]})
            return text[:-40] if kind == 0 else text
        good = {"type": "l2update", "product_id": pid, "time": rfc3339(time.time_ns(), 6)}
        if kind == 0:
            return dumps({**good, "changes": []})[:-8] + '[["buy","1.0'
        if kind == 1:
            return dumps({**good, "changes": "not a list", "time": 17})
        size = "-1.00000000" if kind == 2 else "NaN"
        return dumps({**good, "changes": [["buy", "1.00", size]]})
