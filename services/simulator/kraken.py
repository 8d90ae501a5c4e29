"""Simulated Kraken spot: WebSocket v2 (``/v2``), WebSocket v1 (``/``) and the REST pair list on
one loopback port. Written from Kraken's documentation and real recordings (exchanges.md §3), not
from the feed's parser.

REST (plain HTTP GET):

* ``/0/public/AssetPairs[?pair=XBTUSD,ETHUSD]`` -> ``{"error":[],"result":{"XXBTZUSD":{"altname":
  "XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","pair_decimals":2,"lot_decimals":8,..}}}``;
  a pair may be named by key, altname, wsname or v2 name; an unknown one -> HTTP 200
  ``{"error":["EQuery:Unknown asset pair"]}``.
* ``/0/public/SystemStatus`` -> ``{"error":[],"result":{"status":"online","timestamp":".."}}``;
  ``/0/public/Time``.

WebSocket v2 at ``/v2``:

* on connect ``{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",
  "api_version":"v2","connection_id":N}]}``; the ``status`` fault broadcasts a new ``system``
  (``maintenance``, ``cancel_only``, ``post_only``, ``online``) to every v2 connection.
* ``{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10},"req_id":1}``:
  depth one of 10/25/100/500/1000 (default 10, anything else -> one error reply "Subscription
  depth not supported"); one ack per
  symbol (``"success":true``, ``result`` with channel/depth/snapshot/symbol), an unknown symbol ->
  ``{"error":"Currency pair not supported XYZ/USD","method":"subscribe","success":false,
  "symbol":"XYZ/USD",..}``; a symbol already subscribed -> ``"error":"Already subscribed"``.
  Then ``{"channel":"book","type":"snapshot","data":[{"symbol":..,"bids":[{"price":43000.12,
  "qty":0.50000000},..],"asks":[..],"checksum":N,"timestamp":".."}]}`` and ``"type":"update"``
  messages of the same shape. Numbers are *unquoted* and printed at the instrument precision
  (price: the symbol's tick decimals; qty: 8), trailing zeros kept; qty ``0.00000000`` deletes.
* ``unsubscribe`` with the same params: one ack per symbol (``"Subscription Not Found"`` if none).
* ``{"method":"subscribe","params":{"channel":"instrument"}}`` -> ack, then ``{"channel":
  "instrument","type":"snapshot","data":{"assets":[..],"pairs":[{"symbol":"BTC/USD",
  "price_precision":2,"qty_precision":8,"status":"online",..}]}}``.
* ``{"method":"ping","req_id":N}`` -> ``{"method":"pong","req_id":N,"time_in":..,"time_out":..}``;
  ``{"channel":"heartbeat"}`` about once a second while a subscribed connection gets nothing else.

WebSocket v1 at ``/``:

* on connect ``{"connectionID":N,"event":"systemStatus","status":"online","version":"1.9.1"}``;
* ``{"event":"subscribe","pair":["XBT/USD"],"subscription":{"name":"book","depth":10},"reqid":1}``
  -> per pair ``{"channelID":N,"channelName":"book-10","event":"subscriptionStatus","pair":"XBT/USD",
  "status":"subscribed","subscription":{"depth":10,"name":"book"}}`` (errors: ``"status":"error"``
  with ``errorMessage``); ``unsubscribe`` -> ``"status":"unsubscribed"``;
* snapshot ``[N,{"as":[["43000.12000","0.50000000","1700000000.123456"],..],"bs":[..]},"book-10",
  "XBT/USD"]``; updates ``[N,{"a":[..]},{"b":[..],"c":"<crc>"},"book-10","XBT/USD"]`` (one dict
  when one side changed; the checksum ``c`` in the last one); a republished level carries a 4th
  element ``"r"``. Quoted strings: prices with the tick's decimals + 3 (Kraken's v1 text is wider
  than ``pair_decimals``), volumes with 8.
* ``{"event":"ping","reqid":N}`` -> ``{"event":"pong","reqid":N}``; ``{"event":"heartbeat"}`` once a
  second on a subscribed connection, between the updates (as in the real recording).

The book: after every message each side is cut to the subscribed depth; levels pushed out of scope
get no delete, levels entering it are sent (:class:`~services.simulator.market.DepthView`). The
CRC32 ``checksum`` (v2) / ``c`` (v1) is over the top 10 asks then top 10 bids of the wire text
(``.`` removed, leading zeros stripped, price then qty), so v1 and v2 checksums of one book differ.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import json
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from websockets.http11 import Response

from services.simulator.market import Book, Changes, DepthView, Level, Sent, SymbolSpec, fixed
from services.simulator.venue import Conn, HttpError, RestFault, VenueServer, dumps, http_response

DEPTHS = (10, 25, 100, 500, 1000)
SYSTEM_STATES = ("online", "maintenance", "cancel_only", "post_only")
V2_VERSION = "2.0.10"
V1_VERSION = "1.9.1"
HEARTBEAT_EVERY = 1.0
V1_ALIASES = {"BTC": "XBT", "DOGE": "XDG"}
_LEGACY_CRYPTO = {"XBT", "ETH", "LTC", "XDG", "XRP", "XMR", "ZEC", "ETC", "XLM", "REP", "MLN"}
_LEGACY_FIAT = {"USD", "EUR", "GBP", "JPY", "CAD"}
_conn_ids = itertools.count(13688620010177543517)
_channel_ids = itertools.count(336, 16)


# --- names -------------------------------------------------------------------------------------

def v1_name(symbol: str) -> str:
    """Canonical / v2 name -> v1 and REST ``wsname``: BTC/USD -> XBT/USD, DOGE/USD -> XDG/USD."""
    base, quote = symbol.split("/")
    return f"{V1_ALIASES.get(base, base)}/{V1_ALIASES.get(quote, quote)}"


def symbol_of_v1(pair: str) -> str:
    """v1 / ``wsname`` -> canonical: XBT/USD -> BTC/USD (unknown aliases pass through)."""
    back = {v: k for k, v in V1_ALIASES.items()}
    base, _, quote = pair.partition("/")
    return f"{back.get(base, base)}/{back.get(quote, quote)}"


def rest_asset(code: str) -> str:
    """Kraken's REST asset name: XBT -> XXBT, USD -> ZUSD, USDT -> USDT."""
    if code in _LEGACY_CRYPTO:
        return "X" + code
    if code in _LEGACY_FIAT:
        return "Z" + code
    return code


def rest_key(symbol: str) -> str:
    """The AssetPairs key: BTC/USD -> XXBTZUSD (legacy pairs), BTC/USDT -> XBTUSDT."""
    base, quote = v1_name(symbol).split("/")
    if base in _LEGACY_CRYPTO and (quote in _LEGACY_FIAT or quote in _LEGACY_CRYPTO):
        return rest_asset(base) + rest_asset(quote)
    return base + quote


# --- wire numbers and the checksum ---------------------------------------------------------------

def v2_price_decimals(spec: SymbolSpec) -> int:
    """v2 ``price_precision`` (= REST ``pair_decimals`` here): the tick's decimals."""
    return spec.price_decimals


def v1_price_decimals(spec: SymbolSpec) -> int:
    """v1 wire decimals of prices: wider than ``pair_decimals``, as on the real venue (XBT/USD:
    ``pair_decimals`` 1, ``"56218.30000"`` on the wire)."""
    return spec.price_decimals + 3


def checksum_digits(text: str) -> str:
    """One number's checksum text: '.' removed, leading zeros stripped ('0.00100000' -> '100000')."""
    return text.replace(".", "").lstrip("0")


def crc32_of(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Kraken's book checksum from wire text: the first 10 ``asks`` (best = lowest first) then the
    first 10 ``bids`` (best = highest first), price then qty each, as unsigned CRC32."""
    parts = []
    for side in (asks, bids):
        for p, q in itertools.islice(side, 10):
            parts.append(checksum_digits(p) + checksum_digits(q))
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


def wrong(crc: int) -> int:
    """A checksum that is certainly not ``crc`` (for the ``bad_checksum`` fault)."""
    return (crc + 0x9E3779B9) & 0xFFFFFFFF


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- replies and pair lists (pure) ---------------------------------------------------------------

def v2_reply(method: str, req_id: Any, *, result: dict[str, Any] | None = None,
             error: str | None = None, **extra: Any) -> str:
    """A v2 method reply: ``success`` with ``result``, or ``error``; ``req_id`` echoed."""
    t = iso_now()
    out: dict[str, Any] = {"method": method}
    if error is None:
        if result is not None:
            out["result"] = result
        out["success"] = True
    else:
        out["error"] = error
        out["success"] = False
    out.update(extra)
    out.update(time_in=t, time_out=t)
    if req_id is not None:
        out["req_id"] = req_id
    return dumps(out)


def v1_status(pair: Any, depth: Any, reqid: Any, status: str, *, channel_id: int | None = None,
              error: str | None = None) -> str:
    """A v1 ``subscriptionStatus`` of a book subscription (``errorMessage`` when ``error``)."""
    out: dict[str, Any] = {}
    if channel_id is not None:
        out.update(channelID=channel_id, channelName=f"book-{depth}")
    if error is not None:
        out["errorMessage"] = error
    out.update(event="subscriptionStatus", pair=pair, status=status,
               subscription={"depth": depth, "name": "book"})
    if reqid is not None:
        out["reqid"] = reqid
    return dumps(out)


def asset_pair(spec: SymbolSpec) -> dict[str, Any]:
    """One AssetPairs entry (REST names; ``pair_decimals`` = the v2 price precision)."""
    base, quote = v1_name(spec.symbol).split("/")
    tick = fixed(spec.tick, spec.price_decimals)
    return {"altname": base + quote, "wsname": f"{base}/{quote}", "aclass_base": "currency",
            "base": rest_asset(base), "aclass_quote": "currency", "quote": rest_asset(quote), "lot": "unit",
            "cost_decimals": 5, "pair_decimals": v2_price_decimals(spec), "lot_decimals": spec.amount_decimals,
            "lot_multiplier": 1, "leverage_buy": [], "leverage_sell": [],
            "fees": [[0, 0.26], [50000, 0.24]], "fees_maker": [[0, 0.16], [50000, 0.14]],
            "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40, "ordermin": "0.0001",
            "costmin": "0.5", "tick_size": tick, "status": "online"}


def instrument_snapshot(specs: Iterable[SymbolSpec]) -> str:
    """The v2 ``instrument`` channel snapshot of ``specs`` (numbers unquoted, as the venue prints them)."""
    pairs = []
    assets: dict[str, dict[str, Any]] = {}
    for spec in specs:
        pd, qd = v2_price_decimals(spec), spec.amount_decimals
        tick = fixed(spec.tick, pd)
        pairs.append(f'{{"symbol":"{spec.symbol}","base":"{spec.base}","quote":"{spec.quote}","status":"online",'
                     f'"qty_precision":{qd},"qty_increment":{fixed(Decimal(1).scaleb(-qd), qd)},'
                     f'"price_precision":{pd},"cost_precision":5,"marginable":false,"has_index":true,'
                     f'"cost_min":0.5,"tick_size":{tick},"price_increment":{tick},"qty_min":0.00010000}}')
        for a in (spec.base, spec.quote):
            assets[a] = {"id": a, "status": "enabled", "precision": 10, "precision_display": 5,
                         "borrowable": False, "collateral_value": 0.0, "margin_rate": 0.0}
    return (f'{{"channel":"instrument","type":"snapshot","data":{{"assets":{dumps(list(assets.values()))},'
            f'"pairs":[{",".join(pairs)}]}}}}')


# --- connections ---------------------------------------------------------------------------------

@dataclass
class BookSub:
    """One book subscription of one connection: the client's view and what is owed to it."""

    symbol: str          # canonical
    depth: int
    view: DepthView
    channel_id: int = 0  # v1 only
    bad: int = 0         # updates still to send with a wrong checksum


def _wire(conn: Conn) -> Wire:
    return WIRES[str(conn.state.get("api", "v2"))]


def _books(conn: Conn) -> dict[str, BookSub]:
    books: dict[str, BookSub] = conn.state.setdefault("books", {})
    return books


# --- the two wire formats (pure: levels and numbers in, text out) --------------------------------

Stamp = Callable[[str, Decimal], str]   # (side "a"/"b", price) -> the level's v1 timestamp


class V2Wire:
    """Kraken WebSocket v2 book text: unquoted numbers at the instrument precision."""

    api = "v2"
    heartbeat = '{"channel":"heartbeat"}'

    @staticmethod
    def price_decimals(spec: SymbolSpec) -> int:
        return v2_price_decimals(spec)

    def status(self, system: str, conn_id: int) -> str:
        return dumps({"channel": "status", "type": "update", "data": [
            {"version": V2_VERSION, "system": system, "api_version": "v2", "connection_id": conn_id}]})

    def _levels(self, spec: SymbolSpec, levels: Iterable[tuple[Decimal, Decimal]]) -> str:
        pd, qd = v2_price_decimals(spec), spec.amount_decimals
        return "[" + ",".join(f'{{"price":{fixed(p, pd)},"qty":{fixed(q, qd)}}}' for p, q in levels) + "]"

    def snapshot(self, spec: SymbolSpec, sub: BookSub, bids: list[Level], asks: list[Level], crc: int,
                 stamp: Stamp) -> str:
        return (f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{sub.symbol}",'
                f'"bids":{self._levels(spec, bids)},"asks":{self._levels(spec, asks)},'
                f'"checksum":{crc},"timestamp":"{iso_now()}"}}]}}')

    def update(self, spec: SymbolSpec, sub: BookSub, bids: list[Sent], asks: list[Sent], crc: int, now: float,
               stamp: Stamp, extra: bool = False) -> str:
        more = ',"x_unknown":{"a":1}' if extra else ""
        return (f'{{"channel":"book","type":"update","data":[{{"symbol":"{sub.symbol}",'
                f'"bids":{self._levels(spec, ((p, q) for p, q, _ in bids))},'
                f'"asks":{self._levels(spec, ((p, q) for p, q, _ in asks))},'
                f'"checksum":{crc},"timestamp":"{iso_now()}"{more}}}]{more}}}')

    def malformed(self, sub: BookSub, kind: int) -> str:
        """Kinds 0..3: invalid JSON, wrong types, negative qty, NaN qty."""
        head = f'{{"channel":"book","type":"update","data":[{{"symbol":"{sub.symbol}",'
        end = f',"timestamp":"{iso_now()}"}}]}}'
        if kind == 0:
            return head + '"bids":[{"price":1.0'
        if kind == 1:
            return head + '"bids":"not a list","asks":[{"price":"x","qty":null}],"checksum":"abc"' + end
        if kind == 2:
            return head + '"bids":[{"price":1.00,"qty":-1.00000000}],"asks":[],"checksum":1' + end
        return head + '"bids":[],"asks":[{"price":99999.00,"qty":NaN}],"checksum":1' + end


class V1Wire:
    """Kraken WebSocket v1 book text: arrays, quoted decimals, level timestamps, ``"r"``."""

    api = "v1"
    heartbeat = '{"event":"heartbeat"}'

    @staticmethod
    def price_decimals(spec: SymbolSpec) -> int:
        return v1_price_decimals(spec)

    def status(self, system: str, conn_id: int) -> str:
        return dumps({"connectionID": conn_id, "event": "systemStatus", "status": system, "version": V1_VERSION})

    def snapshot(self, spec: SymbolSpec, sub: BookSub, bids: list[Level], asks: list[Level], crc: int,
                 stamp: Stamp) -> str:
        pd, qd = v1_price_decimals(spec), spec.amount_decimals
        body = {"as": [[fixed(p, pd), fixed(q, qd), stamp("a", p)] for p, q in asks],
                "bs": [[fixed(p, pd), fixed(q, qd), stamp("b", p)] for p, q in bids]}
        return dumps([sub.channel_id, body, f"book-{sub.depth}", v1_name(sub.symbol)])

    def update(self, spec: SymbolSpec, sub: BookSub, bids: list[Sent], asks: list[Sent], crc: int, now: float,
               stamp: Stamp, extra: bool = False) -> str:
        """One dict per changed side (asks first); ``c`` in the last; a republished level keeps
        its own timestamp and gets ``"r"``."""
        pd, qd, ts = v1_price_decimals(spec), spec.amount_decimals, f"{now:.6f}"

        def levels(side: str, sent: list[Sent]) -> list[list[str]]:
            return [[fixed(p, pd), fixed(q, qd), stamp(side, p), "r"] if again else [fixed(p, pd), fixed(q, qd), ts]
                    for p, q, again in sent]
        parts: list[dict[str, Any]] = []
        if asks:
            parts.append({"a": levels("a", asks)})
        if bids:
            parts.append({"b": levels("b", bids)})
        parts[-1]["c"] = str(crc)
        if extra:
            parts[0]["x_unknown"] = 1
        return dumps([sub.channel_id, *parts, f"book-{sub.depth}", v1_name(sub.symbol)])

    def malformed(self, sub: BookSub, kind: int) -> str:
        """Kinds 0..3: invalid JSON, wrong types, negative volume, NaN volume."""
        tail = f',"book-{sub.depth}","{v1_name(sub.symbol)}"]'
        if kind == 0:
            return f'[{sub.channel_id},{{"b":[["1.0'
        if kind == 1:
            return f'[{sub.channel_id},{{"b":"not a list","c":123}}' + tail
        if kind == 2:
            return f'[{sub.channel_id},{{"b":[["1.00000","-1.00000000","{time.time():.6f}"]],"c":"1"}}' + tail
        return f'[{sub.channel_id},{{"a":[["99999.00000","NaN","{time.time():.6f}"]],"c":"1"}}' + tail


Wire = V2Wire | V1Wire
WIRES: dict[str, Wire] = {"v2": V2Wire(), "v1": V1Wire()}


class KrakenServer(VenueServer):
    """Kraken's v2 and v1 book channels, instrument channel and AssetPairs on one port."""

    kind = "kraken"
    rest_snapshots = False   # the snapshot comes in-band (lag_snapshot does not apply)
    FAULTS: ClassVar[dict[str, str]] = {
        "bad_checksum": "[symbol] [count=1]: the next count updates of S on every connection carry a wrong "
                        "checksum; the book itself is right",
        "status": "system=maintenance|cancel_only|post_only|online: broadcast the system status (v2 status "
                  "channel, v1 systemStatus); book events go on",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.system = "online"
        self.started = time.time()
        self._stamps: dict[str, dict[tuple[str, Decimal], str]] = {}
        # symbol -> (market marker it is valid for, top 10 bids, top 10 asks, api -> checksum)
        self._crcs: dict[str, tuple[int, list[Level], list[Level], dict[str, int]]] = {}

    # --- names of served pairs -----------------------------------------------------------------

    def listed(self) -> list[str]:
        return [s for s in self.specs if s not in self.unlisted]

    def lookup_v2(self, name: str) -> str | None:
        return name if name in self.specs and name not in self.unlisted else None

    def lookup_v1(self, pair: str) -> str | None:
        return self.lookup_v2(symbol_of_v1(pair))

    # --- REST ----------------------------------------------------------------------------------

    def rate_limit_response(self, f: RestFault) -> Response:
        return http_response(f.status, {"error": ["EAPI:Rate limit exceeded"]},
                             [("Retry-After", f.retry_after or "1")])

    def error_response(self, status: int) -> Response:
        return http_response(status, {"error": ["EService:Unavailable"]})

    def is_ws_path(self, path: str) -> bool:
        return path.rstrip("/") in ("", "/v2")

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        fault = self.take_rest_fault(snapshot=True)
        if fault is not None:
            return fault
        path = path.rstrip("/")
        if path == "/0/public/AssetPairs":
            return http_response(200, self.asset_pairs(query))
        if path == "/0/public/SystemStatus":
            status = {"status": self.system, "timestamp": iso_now()[:19] + "Z"}
            return http_response(200, {"error": [], "result": status})
        if path == "/0/public/Time":
            t = time.time()
            return http_response(200, {"error": [], "result": {"unixtime": int(t), "rfc1123": time.strftime(
                "%a, %d %b %y %H:%M:%S +0000", time.gmtime(t))}})
        raise HttpError(404, {"error": ["EGeneral:Unknown method"]})

    def asset_pairs(self, query: dict[str, list[str]]) -> Any:
        """The AssetPairs reply (``pair=`` a comma list of keys, altnames, wsnames or v2 names)."""
        names: dict[str, str] = {}
        for s in self.listed():
            v1 = v1_name(s)
            for n in (rest_key(s), v1.replace("/", ""), v1, s, s.replace("/", "")):
                names[n] = s
        wanted = [w for w in ",".join(query.get("pair", [])).split(",") if w]
        if any(w not in names for w in wanted):
            return {"error": ["EQuery:Unknown asset pair"]}
        syms = [names[w] for w in wanted] if wanted else self.listed()
        return {"error": [], "result": {rest_key(s): asset_pair(self.specs[s]) for s in syms}}

    # --- connection lifecycle --------------------------------------------------------------------

    async def on_open(self, conn: Conn) -> None:
        conn.state["api"] = "v2" if conn.path.rstrip("/") == "/v2" else "v1"
        conn.state["conn_id"] = next(_conn_ids)
        conn.state["last_tx"] = time.monotonic()
        self.send(conn, self.status_frame(conn))
        conn.state["heartbeat"] = self.spawn(self._heartbeats(conn))

    async def on_close(self, conn: Conn) -> None:
        task = conn.state.get("heartbeat")
        if task is not None:
            task.cancel()

    def send(self, conn: Conn, frame: str) -> None:
        conn.state["last_tx"] = time.monotonic()
        conn.push(frame)

    async def _heartbeats(self, conn: Conn) -> None:
        """v2: a heartbeat when a subscribed connection got nothing for a second (the docs); v1:
        one every second while subscribed, between the updates (as in the real recording)."""
        wire = _wire(conn)
        v2, frame = wire.api == "v2", wire.heartbeat
        while not conn.closed:
            await asyncio.sleep(HEARTBEAT_EVERY)
            idle = time.monotonic() - conn.state["last_tx"] >= HEARTBEAT_EVERY * 0.95
            if (conn.subs or conn.state.get("instrument")) and (idle or not v2):
                self.send(conn, frame)

    def status_frame(self, conn: Conn) -> str:
        return _wire(conn).status(self.system, conn.state["conn_id"])

    def set_system(self, system: str) -> int:
        """Switch the system status and tell every connection; returns how many were told."""
        self.system = system
        for c in list(self.conns):
            self.send(c, self.status_frame(c))
        return len(self.conns)

    # --- messages ------------------------------------------------------------------------------

    async def on_message(self, conn: Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if _wire(conn).api == "v2":
            await self.on_v2(conn, msg)
        else:
            await self.on_v1(conn, msg)

    async def on_v2(self, conn: Conn, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            self.send(conn, dumps({"error": "Malformed request", "success": False,
                                   "time_in": iso_now(), "time_out": iso_now()}))
            return
        method, req_id = msg["method"], msg.get("req_id")
        params = msg.get("params", {})
        if method == "ping":
            t = iso_now()
            self.send(conn, dumps({"method": "pong", "req_id": req_id, "time_in": t, "time_out": t}))
            return
        if method not in ("subscribe", "unsubscribe"):
            self.send(conn, v2_reply(method, req_id, error=f"Method not found: {method}"))
            return
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            self.send(conn, v2_reply(method, req_id, error="Missing or invalid params.channel"))
            return
        channel = params["channel"]
        if channel == "instrument":
            if method == "subscribe":
                conn.state["instrument"] = True
                self.send(conn, v2_reply(method, req_id, result={"channel": "instrument", "snapshot": True}))
                self.send(conn, instrument_snapshot(self.specs[s] for s in self.listed()))
            else:
                conn.state["instrument"] = False
                self.send(conn, v2_reply(method, req_id, result={"channel": "instrument"}))
            return
        if channel in ("status", "heartbeat"):  # sent without a subscription; acknowledged anyway
            self.send(conn, v2_reply(method, req_id, result={"channel": channel}))
            if channel == "status" and method == "subscribe":
                self.send(conn, self.status_frame(conn))
            return
        if channel != "book":
            self.send(conn, v2_reply(method, req_id, error=f"Channel {channel} not supported"))
            return
        symbols, depth = params.get("symbol"), params.get("depth", 10)
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            self.send(conn, v2_reply(method, req_id, error="Missing or invalid params.symbol"))
            return
        if depth not in DEPTHS or isinstance(depth, bool):
            # the live venue's text (20 and 50 are refused with it); allowed: DEPTHS
            self.send(conn, v2_reply(method, req_id, error="Subscription depth not supported"))
            return
        snapshot = params.get("snapshot", True) is not False
        books = _books(conn)
        for name in symbols:
            sym = self.lookup_v2(name)
            if method == "unsubscribe":
                sub = books.get(sym) if sym else None
                if sub is None:
                    self.send(conn, v2_reply(method, req_id, error="Subscription Not Found", symbol=name))
                    continue
                self.drop_sub(conn, sub, f"book:{sym}")
                self.send(conn, v2_reply(method, req_id, result={"channel": "book", "depth": sub.depth,
                                                                      "symbol": name}))
            elif sym is None:
                self.send(conn, v2_reply(method, req_id, error=f"Currency pair not supported {name}",
                                              symbol=name))
            elif sym in books:
                self.send(conn, v2_reply(method, req_id, error="Already subscribed", symbol=name))
            else:
                sub = self.add_sub(conn, sym, depth, f"book:{sym}")
                self.send(conn, v2_reply(method, req_id, result={
                    "channel": "book", "depth": depth, "snapshot": snapshot, "symbol": name}))
                if snapshot:
                    self.start_book(conn, sub)
                await self.on_subscribed(conn, f"book:{sym}")

    async def on_v1(self, conn: Conn, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            self.send(conn, dumps({"errorMessage": "Malformed request", "event": "error", "status": "error"}))
            return
        event, reqid = msg["event"], msg.get("reqid")
        if event == "ping":
            self.send(conn, dumps({"event": "pong", "reqid": reqid} if reqid is not None else {"event": "pong"}))
            return
        if event not in ("subscribe", "unsubscribe"):
            self.send(conn, dumps({"errorMessage": "Unsupported event", "event": "error", "status": "error"}))
            return
        sub_req, pairs = msg.get("subscription"), msg.get("pair")
        if not isinstance(sub_req, dict) or sub_req.get("name") != "book":
            name = sub_req.get("name") if isinstance(sub_req, dict) else None
            self.send(conn, dumps({"errorMessage": f"Subscription name invalid {name}", "event": "subscriptionStatus",
                                   "status": "error", "subscription": sub_req}))
            return
        depth = sub_req.get("depth", 10)
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, str) for p in pairs):
            self.send(conn, dumps({"errorMessage": "Pair field must be an array", "event": "subscriptionStatus",
                                   "status": "error", "subscription": sub_req}))
            return
        books = _books(conn)
        for pair in pairs:
            sym = self.lookup_v1(pair)
            if depth not in DEPTHS or isinstance(depth, bool):
                self.send(conn, v1_status(pair, depth, reqid, "error", error="Subscription depth not supported"))
            elif event == "unsubscribe":
                sub = books.get(sym) if sym else None
                if sub is None:
                    self.send(conn, v1_status(pair, depth, reqid, "error", error="Subscription Not Found"))
                    continue
                self.drop_sub(conn, sub, f"book-{sub.depth}:{pair}")
                self.send(conn, v1_status(pair, sub.depth, reqid, "unsubscribed", channel_id=sub.channel_id))
            elif sym is None:
                self.send(conn, v1_status(pair, depth, reqid, "error",
                                               error=f"Currency pair not supported {pair}"))
            elif sym in books:
                self.send(conn, v1_status(pair, depth, reqid, "error", error="Already subscribed"))
            else:
                key = f"book-{depth}:{pair}"
                sub = self.add_sub(conn, sym, depth, key)
                sub.channel_id = self.channel_id(pair, depth)
                self.send(conn, v1_status(pair, depth, reqid, "subscribed", channel_id=sub.channel_id))
                self.start_book(conn, sub)
                await self.on_subscribed(conn, key)

    # --- subscriptions (hooks for replay) ------------------------------------------------------

    def channel_id(self, pair: str, depth: int) -> int:
        """The v1 ``channelID`` of a new subscription (a replay uses the recorded one)."""
        return next(_channel_ids)

    def add_sub(self, conn: Conn, symbol: str, depth: int, key: str) -> BookSub:
        m = self.markets.get(symbol)
        view = DepthView(depth, m.book if m is not None else Book())
        sub = BookSub(symbol, depth, view)
        _books(conn)[symbol] = sub
        conn.subs.add(key)
        conn.symbols.add(symbol)
        return sub

    def drop_sub(self, conn: Conn, sub: BookSub, key: str) -> None:
        _books(conn).pop(sub.symbol, None)
        conn.subs.discard(key)
        conn.symbols.discard(sub.symbol)

    def start_book(self, conn: Conn, sub: BookSub) -> None:
        """Send the snapshot of a new subscription (live mode; a replay sends the recorded one)."""
        if sub.symbol in self.markets:
            self.send(conn, self.snapshot_frame(conn, sub))
            self.stats["snapshots_served"] += 1

    async def on_subscribed(self, conn: Conn, key: str) -> None:
        """Called after a book subscription was acknowledged (``key``: v2 ``book:BTC/USD``, v1
        ``book-10:XBT/USD``); replay starts its stream here."""

    # --- frames --------------------------------------------------------------------------------

    def stamp(self, symbol: str, side: str, price: Decimal) -> str:
        """v1 level timestamp: when the level last changed (seconds, 6 decimals)."""
        got = self._stamps.get(symbol, {}).get((side, price))
        return got if got is not None else f"{self.started:.6f}"

    def _record_stamps(self, symbol: str, ch: Changes, now: float) -> None:
        st = self._stamps.setdefault(symbol, {})
        text = f"{now:.6f}"
        for side, levels in (("b", ch.bids), ("a", ch.asks)):
            for p, q in levels:
                if q:
                    st[(side, p)] = text
                else:
                    st.pop((side, p), None)

    def checksum(self, symbol: str, api: str) -> int:
        """The checksum of the true book of ``symbol`` as ``api`` ("v1"/"v2") prints it. Cached
        while the top 10 levels stay the same (:meth:`_carry_checksums`). O(levels) on a miss."""
        m = self.markets[symbol]
        cached = self._crcs.get(symbol)
        if cached is None or cached[0] != m.marker:
            cached = (m.marker, heapq.nlargest(10, m.book.bids.items()), heapq.nsmallest(10, m.book.asks.items()), {})
            self._crcs[symbol] = cached
        crcs = cached[3]
        if api not in crcs:
            spec = self.specs[symbol]
            pd = WIRES[api].price_decimals(spec)
            qd = spec.amount_decimals
            crcs[api] = crc32_of([(fixed(p, pd), fixed(q, qd)) for p, q in cached[2]],
                                 [(fixed(p, pd), fixed(q, qd)) for p, q in cached[1]])
        return crcs[api]

    def _carry_checksums(self, symbol: str, before: int, ch: Changes) -> None:
        """Keep the cached top 10 and checksums of ``symbol`` across an event that changed nothing
        at or above the 10th level of either side."""
        cached = self._crcs.get(symbol)
        if cached is None or cached[0] != before:
            return
        _, bids, asks, crcs = cached
        if len(bids) < 10 or len(asks) < 10 or any(p >= bids[-1][0] for p, _ in ch.bids) or \
                any(p <= asks[-1][0] for p, _ in ch.asks):
            del self._crcs[symbol]
            return
        self._crcs[symbol] = (self.markets[symbol].marker, bids, asks, crcs)

    def snapshot_frame(self, conn: Conn, sub: BookSub) -> str:
        wire = _wire(conn)
        return wire.snapshot(self.specs[sub.symbol], sub, sub.view.sorted_bids(), sub.view.sorted_asks(),
                             self.checksum(sub.symbol, wire.api), functools.partial(self.stamp, sub.symbol))

    # --- book events ---------------------------------------------------------------------------

    def emit(self, symbol: str, now: float, *, burst: bool = False, hidden: bool = False,
             extra: bool = False) -> None:
        m = self.markets[symbol]
        before = m.marker
        ch = m.step(before + 1, now, burst=burst)
        self._carry_checksums(symbol, before, ch)
        wall = time.time()
        self._record_stamps(symbol, ch, wall)
        self.stats["events_generated"] += 1
        if hidden:
            self.stats["events_hidden"] += 1
        crcs: dict[str, int] = {}
        for c in list(self.conns):
            sub = _books(c).get(symbol)
            if sub is None:
                continue
            bids, asks = sub.view.advance(m.book, ch)  # a hidden event is lost, the view moves on
            if hidden or not (bids or asks):
                continue
            wire = _wire(c)
            if wire.api not in crcs:
                crcs[wire.api] = self.checksum(symbol, wire.api)
            crc = crcs[wire.api]
            if sub.bad > 0:
                sub.bad -= 1
                crc = wrong(crc)
                self.stats["bad_checksums_sent"] += 1
            self.send(c, wire.update(self.specs[symbol], sub, bids, asks, crc, wall,
                                     functools.partial(self.stamp, symbol), extra))
            self.stats["events_sent"] += 1

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        books = _books(conn)
        if not books:
            return None
        return _wire(conn).malformed(books[sorted(books)[i % len(books)]], kind)

    # --- faults --------------------------------------------------------------------------------

    def venue_fault(self, kind: str, symbol: str | None, params: Mapping[str, str]) -> dict[str, Any] | None:
        """Kraken's own faults (see ``FAULTS``); the generic kinds keep their handling."""
        if kind == "bad_checksum":
            if not self.markets:
                raise ValueError("bad_checksum needs the live market model (not available in replay mode)")
            raw = params.get("count") or "1"
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"count={raw!r} must be an integer >= 1")
            count, n = int(raw), 0
            for c in self.conns:
                for sym, sub in _books(c).items():
                    if symbol is None or sym == symbol:
                        sub.bad += count
                        n += 1
            return {"symbol": symbol, "count": count, "subscriptions": n}
        if kind == "status":
            system = params.get("system") or params.get("status") or ""
            if system not in SYSTEM_STATES:
                raise ValueError(f"system={system!r}: one of {list(SYSTEM_STATES)}")
            return {"system": system, "connections": self.set_system(system)}
        if kind == "lag_snapshot":
            raise ValueError("lag_snapshot: Kraken has no REST snapshot (its snapshot comes in-band)")
        return None

    def health(self) -> dict[str, Any]:
        return {**super().health(), "system": self.system}
