"""Replay of real recordings (cryptofeed capture format, see fixtures/recorded/README.md) on the
venue's real wire protocol, so a feed sees what the real exchange sent. Five venues, one skeleton.

Files in a recording folder: ``<EXCHANGE>.0`` (pair list REST call(s) + a ``configuration:``
line), ``<EXCHANGE>.http.N.M`` (REST snapshots: ``<url> -> <ts>: <body>``) and
``<EXCHANGE>.ws.N.M`` (``<url> <-> <ts>`` open, ``<url> <- <ts>: <text>`` sent by the client,
``<ts>: <text>`` received). :func:`detect_kind` names the venue from the ``<EXCHANGE>.0`` file.

The skeleton (:class:`ReplayServer`) reads the folder, turns every received frame into a
:class:`WsFrame` (its text verbatim, the subscription ``key`` it belongs to, and for REST-snapshot
venues a ``gate``), and on each connection replays the frames in recorded order once the
connection has subscribed (from the URL at once; from a subscribe frame after a 0.2 s settle so
a burst of subscribe frames lands first), only those whose ``key`` the connection subscribed to
(``key`` None: every subscribed connection gets it). Pacing: recorded gaps divided by ``speed``
(0 = as fast as possible), from the first subscribe frame the recorder sent (or the opening).
``/book`` answers the book the recording implies, computed here with the venue's documented rule.

A venue part says how to read its files (``load``), what subscription a frame belongs to
(``frame_key``), the implied books (``imply``) and, through its server class, the subscribe
messages and REST paths it answers:

* **Binance** (``BINANCE``, ``BINANCE_US``) and **Bitstamp**: the live servers' protocol; REST
  serves the recorded pair list (``exchangeInfo`` / ``trading-pairs-info``; ``?symbol=`` filters;
  ``unlist`` removes entries) and each symbol's recorded snapshot verbatim (Binance: cut to
  ``limit`` levels when smaller); a listed symbol without a snapshot answers 404. Frames that come
  after a symbol's snapshot are held until that snapshot has been served since the connection
  opened (or ``gate_timeout`` passed), so the feed meets the older/equal/newer mix the recorder
  did; "after" by the venue's numbers (Binance ``u > lastUpdateId``; Bitstamp ``microtimestamp``
  above the snapshot's), else by the recorder's clock. Recorded Bitstamp acks are not replayed
  (the live subscribe frames are acknowledged). Implied book: Binance snapshot, drop
  ``u <= lastUpdateId``, first kept straddles ``lastUpdateId + 1``, then ``U == previous u + 1``;
  Bitstamp snapshot, then the diffs with a greater ``microtimestamp``.
* **Kraken** v1 (``KRAKEN``; WebSocket at ``/``): ``{"event":"subscribe","pair":[..],
  "subscription":{"name":"book","depth":1000}}`` (depth must be the recorded one; unknown pair ->
  ``subscriptionStatus`` error), ``ping`` -> ``pong``; the recorded ``systemStatus`` is sent on
  connect, everything else (acks with their ``channelID``, heartbeats, snapshots, updates) after
  the subscribe. REST ``/0/public/AssetPairs[?pair=..]`` from the recording. Implied book:
  snapshot, then every update in order, each side truncated to the depth after every message.
  A recording of **Kraken v2** (``book`` channel frames; WebSocket at ``/v2``) is served with v2's
  requests: ``{"method":"subscribe","params":{"channel":"book","symbol":[..],"depth":D}}`` (D the
  recorded depth) and ``"instrument"`` are acknowledged (``success``, ``req_id`` echoed; one ack
  per book symbol, an unknown one refused), ``ping`` -> ``pong``; the recorded ``status`` frame is
  sent on connect, the recorded ``instrument`` snapshot to its subscribers, book frames to theirs.
  Implied book as v1 (numbers read as the ``Decimal`` of their text).
* **Coinbase** Exchange ``level2`` (``COINBASE``; WebSocket at ``/``): ``{"type":"subscribe",
  "product_ids":[..],"channels":[..]}`` (``level2``/``level2_batch`` carry the l2 frames,
  ``ticker``, ``matches`` theirs); recorded ``subscriptions`` acks go to every subscribed
  connection. REST ``/products``, ``/products/<id>`` and the Advanced Trade
  ``/api/v3/brokerage/market/products[/<id>]`` (``product_ids`` filters) from the recorded
  product list. Implied book: snapshot, then every ``l2update``. A recording of **Advanced
  Trade** ``level2`` (``l2_data`` messages, one product's event each) is served with its requests:
  ``{"type":"subscribe","product_ids":[..],"channel":"level2"}`` and ``"heartbeats"`` are
  acknowledged with a ``subscriptions`` message, and every message sent carries the
  connection's own ``sequence_num`` (0, 1, 2 ... whatever was recorded); implied book: the
  ``snapshot`` event, then every ``update``.
* **Gemini** market data v2 (``GEMINI``; WebSocket at ``/v2/marketdata``):
  ``{"type":"subscribe","subscriptions":[{"name":"l2","symbols":[..]}]}``; recorded heartbeats go
  to every subscribed connection. REST ``/v1/symbols`` and ``/v1/symbols/details/<sym>`` from
  the recording. Implied book: the first ``l2_updates`` with ``trades`` replaces the book, then
  every change. A recording of the current WebSocket API (``depthUpdate`` frames with ``s``,
  ``U``/``u``; the first of each symbol its full book, as with ``?snapshot=-1``) is served at
  ``/``: ``{"id":N,"method":"SUBSCRIBE","params":["<sym>@depth@100ms",..]}`` ->
  ``{"id":N,"status":200,"result":null}`` (an unknown stream: status 400); implied book: the
  first ``depthUpdate`` replaces the book, then every one applies.

So a client that sends what the recorder sent gets every recorded frame, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlsplit

from websockets.http11 import Response

from common.feed import capture as cap
from common.feed.capture import CaptureError, find_runs, is_capture
from common.feed.replay import final_books
from services.simulator.binance import BinanceServer, venue_symbol
from services.simulator.bitstamp import CHANNEL_PREFIX, BitstampServer
from services.simulator.kraken import iso_now, v2_reply
from services.simulator.market import SymbolSpec
from services.simulator.venue import Conn, HttpError, VenueServer, dumps, http_response

log = logging.getLogger("simulator.replay")

SETTLE = 0.2
Side = dict[Decimal, Decimal]


class RecordingError(ValueError):
    """The folder is not a recording this module understands; the message says why."""


@dataclass(frozen=True)
class RestRecord:
    url: str
    ts: float
    body: str


@dataclass(frozen=True)
class WsFrame:
    ts: float
    text: str
    key: str | None      # subscription the frame belongs to; None: every subscribed connection
    obj: Any = field(compare=False, repr=False)
    gate: str | None = None  # symbol whose snapshot must have been served before this frame
    at_open: bool = False    # sent as soon as the connection opens (Kraken's systemStatus)


@dataclass(frozen=True)
class Recording:
    """One recording folder, read: the pair list records, REST snapshots, the client's frames and
    the received frames (every ``*.ws.*`` file, merged in recorded order)."""

    folder: Path
    stem: str
    listing: list[RestRecord]
    rest: list[RestRecord]
    origin: float                    # first subscribe sent (or the opening when none was)
    sent: list[tuple[float, str]]
    received: list[tuple[float, str]]


def read_rest(path: Path) -> list[RestRecord]:
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("configuration: "):
            continue
        url, sep, rest = line.partition(" -> ")
        ts, sep2, body = rest.partition(": ")
        if not sep or not sep2:
            raise RecordingError(f"{path.name}: not a REST record: {line[:80]!r}")
        out.append(RestRecord(url, float(ts), body))
    return out


def read_ws(path: Path) -> tuple[float, list[tuple[float, str]], list[tuple[float, str]]]:
    """(open time, frames the client sent (time, text), received frames (time, text))."""
    opened = 0.0
    sent: list[tuple[float, str]] = []
    received: list[tuple[float, str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        if line.startswith(("ws://", "wss://")):
            head, _, text = line.partition(": ")
            if " <-> " in head:
                opened = float(head.rsplit(" <-> ", 1)[1])
            elif " <- " in head:
                sent.append((float(head.rsplit(" <- ", 1)[1]), text))
            continue
        ts, sep, text = line.partition(": ")
        if not sep:
            raise RecordingError(f"{path.name}: not a frame record: {line[:80]!r}")
        received.append((float(ts), text))
    return opened, sent, received


def find_stem(folder: Path) -> str:
    """The ``<EXCHANGE>`` of the folder's ``<EXCHANGE>.0`` file, if it is a known venue."""
    if not folder.is_dir():
        raise RecordingError(f"{folder} is not a directory")
    for p in sorted(folder.iterdir()):
        if p.suffix == ".0" and p.name.count(".") == 1 and p.stem in STEMS:
            return p.stem
    raise RecordingError(f"{folder}: no <EXCHANGE>.0 file of a known exchange ({sorted(STEMS)})")


def detect_kind(folder: Path) -> str:
    """The venue kind ('binance', 'bitstamp', 'kraken', 'coinbase', 'gemini') of a recording."""
    return STEMS[find_stem(folder)].kind


def read_recording(folder: Path) -> Recording:
    stem = find_stem(folder)
    listing = read_rest(folder / f"{stem}.0")
    rest = [r for p in sorted(folder.glob(f"{stem}.http.*")) for r in read_rest(p)]
    origin: float | None = None
    sent: list[tuple[float, str]] = []
    received: list[tuple[float, str]] = []
    for p in sorted(folder.glob(f"{stem}.ws.*")):
        opened, s, r = read_ws(p)
        first = s[0][0] if s else opened
        origin = first if origin is None else min(origin, first)
        sent += s
        received += r
    received.sort(key=lambda x: x[0])   # stable: one file keeps its order
    return Recording(folder, stem, listing, rest, origin or 0.0, sent, received)


def loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def apply(side: Side, levels: list[list[str]]) -> None:
    """Absolute amounts; an amount that is zero in any spelling removes the level."""
    for p, a, *_ in levels:
        amount = Decimal(a)
        if amount:
            side[Decimal(p)] = amount
        else:
            side.pop(Decimal(p), None)


# --- the skeleton --------------------------------------------------------------------------------


class ReplayServer(VenueServer):
    """What every replay shares: reading, the per-connection replay task, gates, ``/book``.
    Subclasses set ``kind`` and ``stems`` and implement :meth:`load`, :meth:`frame_key` and
    :meth:`imply`; the subscribe handling calls :meth:`subscribed`."""

    stems: ClassVar[tuple[str, ...]] = ()

    def setup_replay(self, folder: Path, speed: float, gate_timeout: float) -> None:
        self.folder = folder
        self.source = str(folder)
        self.speed = speed
        self.gate_timeout = gate_timeout
        self.snap_ts: dict[str, float] = {}       # canonical symbol -> recorded time of its REST snapshot
        self.specs.clear()
        rec = read_recording(folder)
        self.recording = rec
        self.origin = rec.origin
        self.load(rec)
        frames = []
        for ts, text in rec.received:
            obj = loads(text)
            if not self.skip(obj):
                frames.append(WsFrame(ts, text, self.frame_key(obj), obj, None, self.at_open(obj)))
        self.frames = [self.gated(f) for f in frames]
        self.implied: dict[str, tuple[Side, Side]] = self.imply()

    # --- the venue part ------------------------------------------------------------------------

    def load(self, rec: Recording) -> None:
        """Read the pair list and snapshots; fill ``specs`` (canonical symbol -> spec)."""
        raise NotImplementedError

    def frame_key(self, obj: Any) -> str | None:
        raise NotImplementedError

    def imply(self) -> dict[str, tuple[Side, Side]]:
        raise NotImplementedError

    def skip(self, obj: Any) -> bool:
        """Recorded frames that are not replayed."""
        return False

    def at_open(self, obj: Any) -> bool:
        return False

    def gated(self, f: WsFrame) -> WsFrame:
        return f

    def wants(self, conn: Conn, f: WsFrame) -> bool:
        return f.key is None or f.key in conn.subs

    def outgoing(self, conn: Conn, f: WsFrame) -> str:
        return f.text

    # --- shared --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {**super().health(), "mode": "replay", "source": self.source, "frames": len(self.frames)}

    def book_levels(self, symbol: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
        bids, asks = self.implied[symbol]
        return sorted(bids.items(), reverse=True), sorted(asks.items())

    def snapshot_served(self, symbol: str) -> None:
        self.stats["snapshots_served"] += 1
        for c in self.conns:
            gate = c.state.get("gates", {}).get(symbol)
            if gate is not None:
                gate.set()

    def subscribed(self, conn: Conn) -> None:
        """The connection has (or still has) subscriptions: its replay may start."""
        if conn.subs and "subscribed" in conn.state:
            conn.state["subscribed"].set()

    async def on_open(self, conn: Conn) -> None:
        conn.state["gates"] = {s: asyncio.Event() for s in self.specs}
        conn.state["subscribed"] = asyncio.Event()
        await super().on_open(conn)
        settle = 0.0 if conn.subs else SETTLE      # URL subscriptions: nothing more to wait for
        self.subscribed(conn)
        conn.state["replay"] = self.spawn(self._replay(conn, settle))

    async def on_close(self, conn: Conn) -> None:
        task = conn.state.get("replay")
        if task is not None:
            task.cancel()

    async def _replay(self, conn: Conn, settle: float) -> None:
        start: float | None = None
        sent = 0
        for f in self.frames:
            if conn.closed:
                return
            if start is None and not f.at_open:
                await conn.state["subscribed"].wait()
                await asyncio.sleep(settle)
                start = time.monotonic()
            if not self.wants(conn, f):
                continue
            if f.gate is not None and start is not None:
                gate: asyncio.Event = conn.state["gates"][f.gate]
                if not gate.is_set():
                    t0 = time.monotonic()
                    try:
                        await asyncio.wait_for(gate.wait(), self.gate_timeout)
                    except TimeoutError:
                        log.info("%s: snapshot of %s not requested within %.1f s; replay goes on",
                                 self.id, f.gate, self.gate_timeout)
                        gate.set()
                    start += time.monotonic() - t0
            if self.speed > 0 and start is not None:
                delay = start + (f.ts - self.origin) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while conn.silenced():
                await asyncio.sleep(0.05)
            conn.push(self.outgoing(conn, f))
            self.stats["events_sent"] += 1
            sent += 1
        log.info("%s: replay finished on a connection (%d frames sent)", self.id, sent)


class InBandReplay(ReplayServer):
    """Venues whose snapshot comes on the WebSocket (Kraken, Coinbase, Gemini): no REST
    snapshots and no gates. Keys are ``<channel>:<venue symbol>``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.names: dict[str, str] = {}       # venue symbol -> canonical

    def malformed_for(self, conn: Conn, kind: int, i: int) -> str | None:
        """Replays of recorded traffic send only truncated frames (invalid JSON) of the
        connection's subscriptions, whatever ``kind``."""
        keys = sorted(k for k in conn.subs)
        if not keys:
            return None
        key = keys[i % len(keys)]
        f = next((f for f in self.frames if f.key == key), None)
        return f.text[: max(1, len(f.text) // 2)] if f is not None else None

    def listed_names(self) -> set[str]:
        return {n for n, s in self.names.items() if s not in self.unlisted}

    def add_symbol(self, name: str, symbol: str, tick: Decimal) -> None:
        self.names[name] = symbol
        self.specs.setdefault(symbol, SymbolSpec(symbol, tick, Decimal(0)))

    def key_symbol(self, key: str) -> str | None:
        return self.names.get(key.partition(":")[2])

    def _sync_symbols(self, conn: Conn) -> None:
        conn.symbols = {s for k in conn.subs if (s := self.key_symbol(k)) is not None}


# --- Binance / Bitstamp (REST snapshots) ------------------------------------------------------------


class ReplayBinance(ReplayServer, BinanceServer):
    """Binance / Binance.US recording."""

    stems = ("BINANCE", "BINANCE_US")

    def load(self, rec: Recording) -> None:
        info_rec = next(r for r in rec.listing if "exchangeInfo" in r.url)
        self.info_text = info_rec.body
        self.info = json.loads(info_rec.body)
        by_name = {s["symbol"]: s for s in self.info["symbols"]}
        self.snapshots: dict[str, str] = {}
        for r in rec.rest:
            name = parse_qs(urlsplit(r.url).query).get("symbol", [""])[0]
            if name not in by_name or "/depth" not in r.url:
                continue
            s = by_name[name]
            sym = f"{s['baseAsset']}/{s['quoteAsset']}"
            tick = next((Decimal(f["tickSize"]) for f in s["filters"] if f["filterType"] == "PRICE_FILTER"),
                        Decimal("0.00000001"))
            self.specs.setdefault(sym, SymbolSpec(sym, tick.normalize(), Decimal(0)))
            self.snapshots.setdefault(sym, r.body)
            self.snap_ts.setdefault(sym, r.ts)
        self.last_ids = {sym: json.loads(body)["lastUpdateId"] for sym, body in self.snapshots.items()}

    def frame_key(self, obj: Any) -> str:
        return str(obj.get("stream", "")) if isinstance(obj, dict) else ""

    def frame_symbol(self, f: WsFrame) -> str | None:
        name = (f.key or "").split("@", 1)[0].upper()
        names = self.__dict__.get("_frame_names")
        if names is None:       # the recording's names, fixed once loaded (not rebuilt per frame)
            names = self._frame_names = self.by_venue_symbol()
        return names.get(name)

    def gated(self, f: WsFrame) -> WsFrame:
        """Depth events with ``u > lastUpdateId`` come after the snapshot; other frames go by the
        recorder's clock."""
        sym = self.frame_symbol(f)
        if sym is None or sym not in self.last_ids:
            return f
        d = f.obj.get("data") if isinstance(f.obj, dict) else None
        if isinstance(d, dict) and d.get("e") == "depthUpdate" and isinstance(d.get("u"), int):
            after = d["u"] > self.last_ids[sym]
        else:
            after = f.ts > self.snap_ts[sym]
        return WsFrame(f.ts, f.text, f.key, f.obj, sym if after else None)

    def imply(self) -> dict[str, tuple[Side, Side]]:
        out = {}
        by_name: dict[str, list[dict[str, Any]]] = {}     # one pass over the frames, not one per symbol
        for f in self.frames:
            d = f.obj.get("data") if isinstance(f.obj, dict) else None
            if isinstance(d, dict) and d.get("e") == "depthUpdate":
                by_name.setdefault(str(d.get("s")), []).append(d)
        for sym, body in self.snapshots.items():
            snap = json.loads(body)
            bids: Side = {}
            asks: Side = {}
            apply(bids, snap["bids"])
            apply(asks, snap["asks"])
            last = snap["lastUpdateId"]
            synced = False
            for d in by_name.get(venue_symbol(sym), []):
                if d["u"] <= last:
                    continue
                if (not synced and not d["U"] <= last + 1 <= d["u"]) or (synced and d["U"] != last + 1):
                    log.warning("%s %s: recording has a gap at U=%s (book id %s); implied book stops there",
                                self.id, sym, d["U"], last)
                    break
                synced = True
                apply(bids, d["b"])
                apply(asks, d["a"])
                last = d["u"]
            out[sym] = (bids, asks)
        return out

    def outgoing(self, conn: Conn, f: WsFrame) -> str:
        if self.combined(conn) or not isinstance(f.obj, dict) or "data" not in f.obj:
            return f.text
        return dumps(f.obj["data"])

    async def on_message(self, conn: Conn, text: str) -> None:
        await super().on_message(conn, text)
        self.subscribed(conn)

    def exchange_info(self, query: dict[str, list[str]]) -> Any:
        if not self.unlisted and not query:
            return self.info_text
        hidden = {venue_symbol(s) for s in self.unlisted}
        listed = {s["symbol"]: s for s in self.info["symbols"] if s["symbol"] not in hidden}
        wanted: list[str] | None = None
        if "symbol" in query:
            wanted = [query["symbol"][0]]
        elif "symbols" in query:
            try:
                wanted = list(json.loads(query["symbols"][0]))
            except ValueError:
                raise HttpError(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                                            "'symbols'."}) from None
        if wanted is not None and any(w not in listed for w in wanted):
            raise HttpError(400, {"code": -1121, "msg": "Invalid symbol."})
        return {**self.info, "symbols": [listed[w] for w in wanted] if wanted is not None else list(listed.values())}

    def depth(self, symbol: str, limit: int) -> Any:
        body = self.snapshots.get(symbol)
        if body is None:
            raise HttpError(404, {"code": -1, "msg": f"no recorded snapshot for {venue_symbol(symbol)}"})
        self.snapshot_served(symbol)
        snap = json.loads(body)
        if len(snap["bids"]) <= limit and len(snap["asks"]) <= limit:
            return body
        return {"lastUpdateId": snap["lastUpdateId"], "bids": snap["bids"][:limit], "asks": snap["asks"][:limit]}

    def by_venue_symbol(self) -> dict[str, str]:
        # every recorded exchangeInfo symbol is valid for REST; only recorded ones have books
        out = {s["symbol"]: f"{s['baseAsset']}/{s['quoteAsset']}" for s in self.info["symbols"]}
        out.update({venue_symbol(s): s for s in self.specs})
        return out


class ReplayBitstamp(ReplayServer, BitstampServer):
    """Bitstamp recording."""

    stems = ("BITSTAMP",)

    def load(self, rec: Recording) -> None:
        pairs_rec = next(r for r in rec.listing if "trading-pairs-info" in r.url)
        self.pairs_text = pairs_rec.body
        self.pairs = json.loads(pairs_rec.body)
        names = {p["url_symbol"]: p for p in self.pairs}
        self.snapshots: dict[str, str] = {}
        for r in rec.rest:
            parts = [p for p in urlsplit(r.url).path.split("/") if p]
            if len(parts) < 2 or parts[-2] != "order_book" or parts[-1] not in names:
                continue
            p = names[parts[-1]]
            sym = p["name"]
            self.specs.setdefault(sym, SymbolSpec(sym, Decimal(1).scaleb(-int(p["counter_decimals"])), Decimal(0)))
            self.snapshots.setdefault(sym, r.body)
            self.snap_ts.setdefault(sym, r.ts)
        self.stamps = {sym: int(json.loads(body)["microtimestamp"]) for sym, body in self.snapshots.items()}

    def skip(self, obj: Any) -> bool:
        # acks answer the live subscribe frames instead
        return isinstance(obj, dict) and str(obj.get("event", "")).startswith("bts:subscription")

    def frame_key(self, obj: Any) -> str:
        return str(obj.get("channel", "")) if isinstance(obj, dict) else ""

    def frame_symbol(self, f: WsFrame) -> str | None:
        if not (f.key or "").startswith(CHANNEL_PREFIX):
            return None
        names = self.__dict__.get("_frame_names")
        if names is None:       # the recording's names, fixed once loaded (not rebuilt per frame)
            names = self._frame_names = self.by_url_symbol()
        return names.get((f.key or "")[len(CHANNEL_PREFIX):])

    def gated(self, f: WsFrame) -> WsFrame:
        """Diffs with a microtimestamp above the snapshot's come after it. (The recorder's clock
        cannot tell: it read every diff only after it had fetched all snapshots.)"""
        sym = self.frame_symbol(f)
        d = f.obj.get("data") if isinstance(f.obj, dict) else None
        if sym is None or sym not in self.stamps or not isinstance(d, dict):
            return f
        try:
            after = int(d["microtimestamp"]) > self.stamps[sym]
        except (KeyError, ValueError, TypeError):
            after = f.ts > self.snap_ts[sym]
        return WsFrame(f.ts, f.text, f.key, f.obj, sym if after else None)

    def imply(self) -> dict[str, tuple[Side, Side]]:
        out = {}
        by_key: dict[str | None, list[WsFrame]] = {}     # one pass over the frames, not one per symbol
        for f in self.frames:
            by_key.setdefault(f.key, []).append(f)
        for sym, body in self.snapshots.items():
            snap = json.loads(body)
            bids: Side = {}
            asks: Side = {}
            apply(bids, snap["bids"])
            apply(asks, snap["asks"])
            channel = CHANNEL_PREFIX + sym.replace("/", "").lower()
            for f in by_key.get(channel, []):
                d = f.obj.get("data") if isinstance(f.obj, dict) else None
                if f.obj.get("event") != "data" or not isinstance(d, dict):
                    continue
                if int(d["microtimestamp"]) > self.stamps[sym]:
                    apply(bids, d["bids"])
                    apply(asks, d["asks"])
            out[sym] = (bids, asks)
        return out

    async def on_subscribed(self, conn: Conn, channel: str) -> None:
        self.subscribed(conn)

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "v2", "trading-pairs-info"]:
            fault = self.take_rest_fault(snapshot=False)
            if fault is not None:
                return fault
            if not self.unlisted:
                return http_response(200, self.pairs_text)
            return http_response(200, [p for p in self.pairs if p["name"] not in self.unlisted])
        return await super().route_rest(path, query)

    def order_book(self, pair: str) -> Any:
        names = {p["url_symbol"]: p["name"] for p in self.pairs}
        sym = names.get(pair)
        if sym is None:
            raise HttpError(404, {"status": "error", "reason": "Invalid currency pair"})
        body = self.snapshots.get(sym)
        if body is None:
            raise HttpError(404, {"status": "error", "reason": f"no recorded snapshot for {pair}"})
        self.snapshot_served(sym)
        return body


# --- Kraken v1 ------------------------------------------------------------------------------------


def kraken_canonical(wsname: str) -> str:
    """Kraken's v1 / REST asset names to canonical: XBT/CHF -> BTC/CHF, XDG/USD -> DOGE/USD."""
    alias = {"XBT": "BTC", "XDG": "DOGE"}
    return "/".join(alias.get(a, a) for a in wsname.split("/"))


class ReplayKraken(InBandReplay):
    """Kraken WebSocket v1 ``book`` recording (raw wire text)."""

    kind = "kraken"
    stems = ("KRAKEN",)

    def load(self, rec: Recording) -> None:
        pairs_rec = next(r for r in rec.listing if "AssetPairs" in r.url)
        self.pairs_text = pairs_rec.body
        self.pairs: dict[str, Any] = json.loads(pairs_rec.body)["result"]
        decimals = {p.get("wsname"): int(p.get("pair_decimals", 8)) for p in self.pairs.values()}
        self.depth = 10
        self.channel_ids: dict[str, Any] = {}
        self.v2 = any('"method"' in text for _ts, text in rec.sent)     # v1 subscribes with "event"
        if self.v2:
            by_canonical = {kraken_canonical(str(w)): d for w, d in decimals.items()}
            for _ts, text in rec.sent:
                msg = loads(text)
                params = msg.get("params") if isinstance(msg, dict) else None
                if isinstance(params, dict) and params.get("channel") == "book":
                    self.depth = int(params.get("depth", self.depth))
            for _ts, text in rec.received:
                obj = loads(text)
                if isinstance(obj, dict) and obj.get("channel") == "book" and obj.get("type") == "snapshot":
                    for item in obj.get("data", []):
                        name = str(item.get("symbol"))
                        self.add_symbol(name, kraken_canonical(name),
                                        Decimal(1).scaleb(-by_canonical.get(kraken_canonical(name), 8)))
            return
        for _ts, text in rec.received:
            obj = loads(text)
            if isinstance(obj, dict) and obj.get("event") == "subscriptionStatus" and obj.get("status") == "subscribed":
                pair = str(obj.get("pair"))
                self.depth = int(obj.get("subscription", {}).get("depth", self.depth))
                self.channel_ids[pair] = obj.get("channelID")
                self.add_symbol(pair, kraken_canonical(pair), Decimal(1).scaleb(-decimals.get(pair, 8)))

    def frame_key(self, obj: Any) -> str | None:
        if isinstance(obj, list) and obj and isinstance(obj[-1], str):
            return f"book:{obj[-1]}"
        if isinstance(obj, dict) and obj.get("event") == "subscriptionStatus":
            return f"book:{obj.get('pair')}"
        if isinstance(obj, dict) and obj.get("channel") == "book" and isinstance(obj.get("data"), list) and obj["data"]:
            return f"book:{obj['data'][0].get('symbol')}"
        if isinstance(obj, dict) and obj.get("channel") == "instrument":
            return "instrument"
        return None

    def at_open(self, obj: Any) -> bool:
        return isinstance(obj, dict) and (obj.get("event") == "systemStatus" or obj.get("channel") == "status")

    def _imply_v2(self) -> dict[str, tuple[Side, Side]]:
        books: dict[str, tuple[Side, Side]] = {}
        for f in self.frames:
            if f.key is None or not f.key.startswith("book:") or f.key[5:] not in self.names:
                continue
            o = json.loads(f.text, parse_float=Decimal)
            for item in o["data"]:
                name = item["symbol"]
                if o.get("type") == "snapshot":
                    books[name] = ({}, {})
                bids, asks = books[name]
                for side, levels in ((bids, item.get("bids", [])), (asks, item.get("asks", []))):
                    for lv in levels:
                        if lv["qty"]:
                            side[Decimal(lv["price"])] = Decimal(lv["qty"])
                        else:
                            side.pop(Decimal(lv["price"]), None)
                for side, keep in ((bids, sorted(bids, reverse=True)), (asks, sorted(asks))):
                    for p in keep[self.depth:]:
                        del side[p]
        return {self.names[p]: b for p, b in books.items()}

    def imply(self) -> dict[str, tuple[Side, Side]]:
        if self.v2:
            return self._imply_v2()
        books: dict[str, tuple[Side, Side]] = {}
        for f in self.frames:
            if not isinstance(f.obj, list) or f.obj[-1] not in self.names:
                continue
            pair = f.obj[-1]
            for part in f.obj[1:-2]:
                if "as" in part or "bs" in part:
                    books[pair] = ({}, {})
                bids, asks = books[pair]
                apply(asks, part.get("as", part.get("a", [])))
                apply(bids, part.get("bs", part.get("b", [])))
            bids, asks = books[pair]
            for side, keep in ((bids, sorted(bids, reverse=True)), (asks, sorted(asks))):
                for p in keep[self.depth:]:
                    del side[p]
        return {self.names[p]: b for p, b in books.items()}

    def is_ws_path(self, path: str) -> bool:
        return path.rstrip("/") in ("", "/v2")

    def _on_v2(self, conn: Conn, msg: dict[str, Any]) -> None:
        method, req_id = msg["method"], msg.get("req_id")
        params = msg.get("params")
        if method == "ping":
            t = iso_now()
            conn.push(dumps({"method": "pong", "req_id": req_id, "time_in": t, "time_out": t}))
            return
        channel = params.get("channel") if isinstance(params, dict) else None
        if method not in ("subscribe", "unsubscribe") or not isinstance(params, dict) or not isinstance(channel, str):
            conn.push(v2_reply(str(method), req_id, error="this replay serves subscribe/unsubscribe and ping"))
            return
        if channel == "instrument":
            (conn.subs.add if method == "subscribe" else conn.subs.discard)("instrument")
            conn.push(v2_reply(method, req_id, result={"channel": "instrument", "snapshot": True}))
        elif channel in ("status", "heartbeat"):
            conn.push(v2_reply(method, req_id, result={"channel": channel}))
        elif channel != "book" or params.get("depth", 10) != self.depth:
            conn.push(v2_reply(method, req_id, error=f"this replay serves book depth {self.depth} only"))
        else:
            for name in params.get("symbol") or []:
                if name not in self.names:
                    conn.push(v2_reply(method, req_id, error=f"Currency pair not supported {name}", symbol=name))
                    continue
                (conn.subs.add if method == "subscribe" else conn.subs.discard)(f"book:{name}")
                conn.push(v2_reply(method, req_id, result={"channel": "book", "depth": self.depth,
                                                           "snapshot": True, "symbol": name}))
        self._sync_symbols(conn)
        self.subscribed(conn)

    def _status(self, pair: Any, sub: Any, status: str, error: str | None = None) -> str:
        msg: dict[str, Any] = {"event": "subscriptionStatus", "pair": pair, "status": status, "subscription": sub}
        if error:
            msg["errorMessage"] = error
        else:
            msg = {"channelID": self.channel_ids.get(pair), "channelName": f"book-{self.depth}", **msg}
        return dumps(msg)

    async def on_message(self, conn: Conn, text: str) -> None:
        msg = loads(text)
        if isinstance(msg, dict) and isinstance(msg.get("method"), str):
            self._on_v2(conn, msg)
            return
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "ping":
            conn.push(dumps({"event": "pong", "reqid": msg.get("reqid")}))
            return
        if event not in ("subscribe", "unsubscribe") or not isinstance(msg.get("pair"), list):
            conn.push(dumps({"errorMessage": "Malformed request", "event": "error", "status": "error"}))
            return
        sub = msg.get("subscription")
        name = sub.get("name") if isinstance(sub, dict) else None
        depth = sub.get("depth", 10) if isinstance(sub, dict) else None
        for pair in msg["pair"]:
            if pair not in self.names:
                conn.push(self._status(pair, sub, "error", f"Currency pair not supported {pair}"))
            elif name != "book" or depth != self.depth:
                conn.push(self._status(pair, sub, "error", f"this replay serves book depth {self.depth} only"))
            elif event == "subscribe":
                conn.subs.add(f"book:{pair}")     # the recorded ack answers
            else:
                conn.subs.discard(f"book:{pair}")
                conn.push(self._status(pair, sub, "unsubscribed"))
        self._sync_symbols(conn)
        self.subscribed(conn)

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        if path.rstrip("/") != "/0/public/AssetPairs":
            raise HttpError(404, {"error": ["EGeneral:Unknown method"]})
        fault = self.take_rest_fault(snapshot=False)
        if fault is not None:
            return fault
        hidden = {p for p, s in self.names.items() if s in self.unlisted}
        if not hidden and "pair" not in query:
            return http_response(200, self.pairs_text)
        result = {k: v for k, v in self.pairs.items() if v.get("wsname") not in hidden}
        if "pair" in query:
            wanted = query["pair"][0].split(",")
            picked = {k: v for k, v in result.items() if k in wanted or v.get("altname") in wanted}
            if len(picked) < len(wanted):
                return http_response(200, {"error": ["EQuery:Unknown asset pair"]})
            result = picked
        return http_response(200, {"error": [], "result": result})


# --- Coinbase Exchange ----------------------------------------------------------------------------

COINBASE_KEYS = {"snapshot": "l2", "l2update": "l2", "ticker": "ticker", "match": "matches",
                 "last_match": "matches", "heartbeat": "heartbeat"}
COINBASE_CHANNELS = {"level2": "l2", "level2_batch": "l2", "ticker": "ticker", "matches": "matches",
                     "heartbeat": "heartbeat"}


class ReplayCoinbase(InBandReplay):
    """Coinbase Exchange ``level2`` recording."""

    kind = "coinbase"
    stems = ("COINBASE",)

    def load(self, rec: Recording) -> None:
        products_rec = next(r for r in rec.listing if r.url.rstrip("/").endswith("/products"))
        self.products_text = products_rec.body
        self.products: dict[str, dict[str, Any]] = {p["id"]: p for p in json.loads(products_rec.body)}
        self.at = any('"channel":' in text for _ts, text in rec.sent)   # Exchange sends "channels"
        for _ts, text in rec.received:
            obj = loads(text)
            pid = obj.get("product_id") if isinstance(obj, dict) else None
            if self.at and isinstance(obj, dict) and obj.get("channel") == "l2_data":
                ev = obj["events"][0]
                pid = ev.get("product_id") if ev.get("type") == "snapshot" else None
            elif not isinstance(obj, dict) or obj.get("type") != "snapshot":
                pid = None
            if pid in self.products:
                p = self.products[pid]
                self.add_symbol(p["id"], f"{p['base_currency']}/{p['quote_currency']}",
                                Decimal(p["quote_increment"]))

    def frame_key(self, obj: Any) -> str | None:
        if isinstance(obj, dict) and obj.get("channel") == "l2_data" and obj.get("events"):
            return f"l2:{obj['events'][0].get('product_id')}"
        if isinstance(obj, dict) and obj.get("type") in COINBASE_KEYS:
            return f"{COINBASE_KEYS[obj['type']]}:{obj.get('product_id')}"
        return None

    def outgoing(self, conn: Conn, f: WsFrame) -> str:
        if not self.at:
            return f.text
        return self._at_seq(conn, f.text)

    @staticmethod
    def _at_seq(conn: Conn, text: str) -> str:
        """``text`` (an Advanced Trade message) with the connection's next ``sequence_num``."""
        seq = conn.state.get("seq", 0)
        conn.state["seq"] = seq + 1
        i = text.index('"sequence_num":') + 15
        j = i
        while text[j].isdigit():
            j += 1
        return text[:i] + str(seq) + text[j:]

    def _on_at(self, conn: Conn, msg: dict[str, Any]) -> None:
        """Advanced Trade subscribe / unsubscribe of ``level2`` (products) or ``heartbeats``."""
        channel, pids = msg.get("channel"), msg.get("product_ids") or []
        if channel not in ("level2", "heartbeats") or not isinstance(pids, list):
            conn.push(dumps({"type": "error", "message": "this replay serves level2 and heartbeats"}))
            return
        bad = [p for p in pids if p not in self.names]
        if bad:
            conn.push(dumps({"type": "error", "message": f"Failed to subscribe: {bad[0]} is not a valid product"}))
            return
        keys = [f"l2:{p}" for p in pids] if channel == "level2" else ["heartbeats"]
        if msg["type"] == "subscribe":
            conn.subs.update(keys)
        else:
            conn.subs.difference_update(keys)
        self._sync_symbols(conn)
        subs: dict[str, list[str]] = {}
        l2 = sorted(k[3:] for k in conn.subs if k.startswith("l2:"))
        if l2:
            subs["level2"] = l2
        if "heartbeats" in conn.subs:
            subs["heartbeats"] = ["heartbeats"]
        ack = dumps({"channel": "subscriptions", "client_id": "", "timestamp": "1970-01-01T00:00:00Z",
                     "sequence_num": 0, "events": [{"subscriptions": subs}]})
        conn.push(self._at_seq(conn, ack))
        self.subscribed(conn)

    def imply(self) -> dict[str, tuple[Side, Side]]:
        books: dict[str, tuple[Side, Side]] = {}
        for f in self.frames:
            o = f.obj
            if isinstance(o, dict) and o.get("channel") == "l2_data":
                for ev in o.get("events", []):
                    pid = ev.get("product_id")
                    if pid not in self.names:
                        continue
                    if ev.get("type") == "snapshot":
                        books[pid] = ({}, {})
                    bids, asks = books[pid]
                    for u in ev.get("updates", []):
                        apply(bids if u["side"] == "bid" else asks, [[u["price_level"], u["new_quantity"]]])
                continue
            if not isinstance(o, dict) or o.get("product_id") not in self.names:
                continue
            if o.get("type") == "snapshot":
                books[o["product_id"]] = ({}, {})
                apply(books[o["product_id"]][0], o["bids"])
                apply(books[o["product_id"]][1], o["asks"])
            elif o.get("type") == "l2update":
                bids, asks = books[o["product_id"]]
                for side, p, s in o["changes"]:
                    apply(bids if side == "buy" else asks, [[p, s]])
        return {self.names[p]: b for p, b in books.items()}

    def is_ws_path(self, path: str) -> bool:
        return path in ("", "/")

    async def on_message(self, conn: Conn, text: str) -> None:
        msg = loads(text)
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
            conn.push(dumps({"type": "error", "message": "Failed to parse message"}))
            return
        if self.at and "channel" in msg:
            self._on_at(conn, msg)
            return
        if not isinstance(msg.get("channels"), list):
            conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                             "reason": "this replay serves the Exchange feed: 'channels' is required"}))
            return
        keys = []
        for ch in msg["channels"]:
            name, products = (ch, msg.get("product_ids")) if isinstance(ch, str) else (
                ch.get("name"), ch.get("product_ids", msg.get("product_ids"))) if isinstance(ch, dict) else (None, None)
            if not isinstance(name, str) or name not in COINBASE_CHANNELS:
                conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                                 "reason": f"{name} is not a valid channel"}))
                return
            for pid in products or []:
                if pid not in self.products:
                    conn.push(dumps({"type": "error", "message": "Failed to subscribe",
                                     "reason": f"{pid} is not a valid product"}))
                    return
                keys.append(f"{COINBASE_CHANNELS[name]}:{pid}")
        if msg["type"] == "subscribe":
            conn.subs.update(keys)       # the recorded acks answer
        else:
            conn.subs.difference_update(keys)
        self._sync_symbols(conn)
        self.subscribed(conn)

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        at_list = parts == ["api", "v3", "brokerage", "market", "products"]
        at = parts[:5] == ["api", "v3", "brokerage", "market", "products"] and len(parts) == 6
        if not at and not at_list and not (parts[:1] == ["products"] and len(parts) <= 2):
            raise HttpError(404, {"message": f"Unknown path {path}"})
        fault = self.take_rest_fault(snapshot=len(parts) > 1 and not at_list)
        if fault is not None:
            return fault
        hidden = {p for p, s in self.names.items() if s in self.unlisted}
        if parts == ["products"]:
            if not hidden:
                return http_response(200, self.products_text)
            return http_response(200, [p for i, p in self.products.items() if i not in hidden])
        if at_list:
            wanted = query.get("product_ids") or list(self.products)
            listed = [self._at_product(self.products[i], i in hidden) for i in wanted if i in self.products]
            return http_response(200, {"products": listed, "num_products": len(listed)})
        p = self.products.get(parts[-1])
        if p is None:
            raise HttpError(404, {"error": "NOT_FOUND", "error_details": "product not found",
                                  "message": "product not found"} if at else {"message": "NotFound"})
        gone = p["id"] in hidden
        if not at:
            return http_response(200, {**p, "status": "delisted", "trading_disabled": True} if gone else p)
        return http_response(200, self._at_product(p, gone))

    @staticmethod
    def _at_product(p: dict[str, Any], gone: bool) -> dict[str, Any]:
        """An Advanced Trade product record from an Exchange one."""
        return ({
            "product_id": p["id"], "base_increment": p["base_increment"], "quote_increment": p["quote_increment"],
            "price_increment": p["quote_increment"], "base_min_size": p.get("base_min_size", ""),
            "base_max_size": p.get("base_max_size", ""), "base_currency_id": p["base_currency"],
            "quote_currency_id": p["quote_currency"], "status": "offline" if gone else p["status"],
            "trading_disabled": gone or p["trading_disabled"], "cancel_only": p["cancel_only"],
            "limit_only": p["limit_only"], "post_only": p["post_only"], "product_type": "SPOT"})


# --- Gemini market data v2 ------------------------------------------------------------------------


class ReplayGemini(InBandReplay):
    """Gemini market data v2 ``l2`` recording."""

    kind = "gemini"
    stems = ("GEMINI",)

    def load(self, rec: Recording) -> None:
        symbols_rec = next(r for r in rec.listing if r.url.rstrip("/").endswith("/v1/symbols"))
        self.symbols_text = symbols_rec.body
        self.symbols: list[str] = json.loads(symbols_rec.body)
        self.details: dict[str, str] = {}
        for r in rec.listing:
            if "/v1/symbols/details/" in r.url:
                self.details[r.url.rstrip("/").rsplit("/", 1)[1].lower()] = r.body
        recorded = set()
        for _ts, text in rec.received:
            obj = loads(text)
            if isinstance(obj, dict) and obj.get("type") == "l2_updates":
                recorded.add(str(obj.get("symbol")))
            elif isinstance(obj, dict) and obj.get("e") == "depthUpdate":
                recorded.add(str(obj.get("s")))
        for name in sorted(recorded):
            d = json.loads(self.details[name.lower()], parse_float=Decimal)
            self.add_symbol(name, f"{d['base_currency']}/{d['quote_currency']}", Decimal(d["quote_increment"]))

    def frame_key(self, obj: Any) -> str | None:
        if isinstance(obj, dict) and isinstance(obj.get("symbol"), str):
            return f"l2:{obj['symbol']}"
        if isinstance(obj, dict) and obj.get("e") == "depthUpdate" and isinstance(obj.get("s"), str):
            return f"ws:{obj['s']}"
        return None

    def imply(self) -> dict[str, tuple[Side, Side]]:
        books: dict[str, tuple[Side, Side]] = {}
        for f in self.frames:
            o = f.obj
            if isinstance(o, dict) and o.get("e") == "depthUpdate" and o.get("s") in self.names:
                if o["s"] not in books:
                    books[o["s"]] = ({}, {})
                apply(books[o["s"]][0], o.get("b", []))
                apply(books[o["s"]][1], o.get("a", []))
                continue
            if not isinstance(o, dict) or o.get("type") != "l2_updates" or o.get("symbol") not in self.names:
                continue
            if "trades" in o or "auction_events" in o or o["symbol"] not in books:
                books[o["symbol"]] = ({}, {})
            bids, asks = books[o["symbol"]]
            for side, p, q in o["changes"]:
                apply(bids if side == "buy" else asks, [[p, q]])
        return {self.names[s]: b for s, b in books.items()}

    def is_ws_path(self, path: str) -> bool:
        return path.rstrip("/") in ("", "/v2/marketdata")

    def _on_ws_api(self, conn: Conn, msg: dict[str, Any]) -> None:
        """The current API's SUBSCRIBE / UNSUBSCRIBE of ``<sym>@depth[@100ms]`` streams."""
        rid, params = msg.get("id"), msg.get("params")
        if msg["method"] not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            conn.push(dumps({"id": rid, "status": 400, "error": {"code": -1000, "msg": "Invalid request"}}))
            return
        keys = []
        for p in params:
            name = p.split("@", 1)[0] if isinstance(p, str) else ""
            if name not in self.names or not str(p).endswith(("@depth", "@depth@100ms")):
                conn.push(dumps({"id": rid, "status": 400, "error": {"code": -1013,
                                                                     "msg": f"Invalid symbol or stream: {p}"}}))
                return
            keys.append(f"ws:{name}")
        if msg["method"] == "SUBSCRIBE":
            conn.subs.update(keys)
        else:
            conn.subs.difference_update(keys)
        conn.push(dumps({"id": rid, "status": 200, "result": None}))
        self._sync_symbols(conn)
        self.subscribed(conn)

    async def on_message(self, conn: Conn, text: str) -> None:
        msg = loads(text)
        if isinstance(msg, dict) and isinstance(msg.get("method"), str):
            self._on_ws_api(conn, msg)
            return
        subs = msg.get("subscriptions") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe") or not isinstance(
                subs, list):
            conn.push(dumps({"result": "error", "reason": "InvalidJson", "message": "expected a subscribe message"}))
            return
        keys = []
        for s in subs:
            if not isinstance(s, dict) or s.get("name") != "l2" or not isinstance(s.get("symbols"), list):
                conn.push(dumps({"result": "error", "reason": "InvalidSubscription",
                                 "message": "this replay serves the l2 subscription only"}))
                return
            for name in s["symbols"]:
                if name not in self.names:
                    conn.push(dumps({"result": "error", "reason": "InvalidSymbol",
                                     "message": f"{name} is not in this recording"}))
                    return
                keys.append(f"l2:{name}")
        if msg["type"] == "subscribe":
            conn.subs.update(keys)
        else:
            conn.subs.difference_update(keys)
        self._sync_symbols(conn)
        self.subscribed(conn)

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["v1", "symbols"] or len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "details"):
            raise HttpError(404, {"result": "error", "reason": "EndpointNotFound", "message": f"API entry point "
                                                                                             f"{path} not found"})
        fault = self.take_rest_fault(snapshot=False)
        if fault is not None:
            return fault
        hidden = {n.lower() for n, s in self.names.items() if s in self.unlisted}
        if len(parts) == 2:
            if not hidden:
                return http_response(200, self.symbols_text)
            return http_response(200, [s for s in self.symbols if s not in hidden])
        body = self.details.get(parts[3].lower())
        if body is None:
            raise HttpError(400, {"result": "error", "reason": "InvalidSymbol",
                                  "message": f"Supplied value '{parts[3]}' is not a valid symbol"})
        if parts[3].lower() in hidden:
            return http_response(200, {**json.loads(body), "status": "closed"})
        return http_response(200, body)


REPLAYS: dict[str, type[ReplayServer]] = {
    c.kind: c for c in (ReplayBinance, ReplayBitstamp, ReplayKraken, ReplayCoinbase, ReplayGemini)}
STEMS: dict[str, type[ReplayServer]] = {stem: c for c in REPLAYS.values() for stem in c.stems}


def make_replay_server(venue_id: str, kind: str, folder: Path, *, speed: float, gate_timeout: float,
                       **kw: Any) -> VenueServer:
    """A venue server of ``kind`` serving the recording in ``folder`` (a feed capture, see
    :class:`CaptureReplay`, or a cryptofeed recording)."""
    if is_capture(folder):
        cap = CaptureReplay(venue_id, specs={}, **kw)
        cap.setup_capture(folder, kind, speed, gate_timeout)
        return cap
    found = detect_kind(folder)
    if found != kind:
        raise RecordingError(f"{folder} holds a {found} recording, but venue {venue_id!r} is {kind}")
    server = REPLAYS[kind](venue_id, specs={}, **kw)
    server.setup_replay(folder, speed, gate_timeout)
    return server


# --- feed captures (common/feed/capture.py) -------------------------------------------------------


def capture_venues(folder: Path) -> dict[str, str]:
    """Venue id -> kind of every feed session in a capture folder."""
    return {r.venue: str(r.header.get("kind", "")) for r in find_runs(folder)}


def _rest_key(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    u = urlsplit(url)
    return u.path.rstrip("/"), tuple(sorted(parse_qsl(u.query, keep_blank_values=True)))


@dataclass
class _CapConn:
    frames: list[tuple[float, str | bytes]]
    opened: float                     # captured monotonic time of the opening
    first: int                        # index of its first frame in the whole capture
    closed: float | None = None       # captured close (None: the feed stopped with it open)
    close_reason: str = ""


@dataclass
class _CapRest:
    mono: float
    needs: int                        # frames captured before this answer (all must have been sent)
    status: int | None
    body: bytes | None
    error: str | None
    delay: float | None


class CaptureReplay(VenueServer):
    """One venue of a feed capture played back on the wire, whatever the venue: the frames are
    the ones the feed received, verbatim, so no venue protocol is needed here.

    * The k-th WebSocket connection (any path) gets the frames the feed received on its k-th
      captured connection, paced at the captured gaps divided by ``speed`` (0: as fast as the
      connection takes them), then is closed where the captured one ended (kept open when the
      feed stopped with it open). What the client sends is read and ignored (the captured
      answers are already among the frames). Connections beyond the captured ones get nothing.
    * REST: each GET is answered with the next captured answer of the same path and query (the
      last one again once they are used up; 404 when there is none), errors with their HTTP
      status (and ``Retry-After``) -- held until every frame captured before that answer has been
      sent (or ``gate_timeout`` passed), so a feed meets its snapshot where it met it live.
    * ``/book`` answers the book the feed had published when the capture ended.
    """

    kind = "capture"

    def setup_capture(self, folder: Path, kind: str, speed: float, gate_timeout: float) -> None:
        runs = [r for r in find_runs(folder) if r.venue == self.id]
        if not runs:
            raise CaptureError(f"{folder}: no capture of venue {self.id!r} (captured: "
                                 f"{sorted(capture_venues(folder))})")
        found = {str(r.header.get("kind")) for r in runs}
        if found != {kind}:
            raise CaptureError(f"{folder}: venue {self.id!r} was captured as {sorted(found)}, "
                                 f"but is configured as {kind}")
        self.kind = kind
        self.folder = folder
        self.source = f"capture {folder}"
        self.speed = speed
        self.gate_timeout = gate_timeout
        self.cap_conns: list[_CapConn] = []
        self.cap_rest: dict[tuple[str, tuple[tuple[str, str], ...]], list[_CapRest]] = {}
        frames = 0
        cur: _CapConn | None = None
        for run in runs:
            for rec in run.records():
                kind_ = rec[0]
                if kind_ == cap.OPEN:
                    cur = _CapConn([], float(rec[1]), frames)
                    self.cap_conns.append(cur)
                elif kind_ == cap.WS and cur is not None:
                    cur.frames.append((float(rec[1]), rec[3]))
                    frames += 1
                elif kind_ == cap.CLOSE and cur is not None:
                    cur.closed, cur.close_reason = float(rec[1]), str(rec[4])
                    cur = None
                elif kind_ == cap.REST:
                    self.cap_rest.setdefault(_rest_key(rec[3]), []).append(
                        _CapRest(float(rec[1]), frames, rec[5], rec[6], rec[7], rec[8]))
            cur = None             # a new session starts with a new connection
        self.frames_total = frames
        self.sent_upto = 0         # every frame below this index has been sent (or skipped)
        self.rest_served: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._progress = asyncio.Event()
        self._accepted = 0
        books = final_books(runs)
        self.final = {sym: sides for (v, sym), sides in books.items() if v == self.id}
        for sym in dict.fromkeys(s for r in runs for s in r.cfg.symbols):
            self.specs[sym] = SymbolSpec(sym, Decimal("0.00000001"), Decimal(0))
        log.info("%s: capture of %d connection(s), %d frames, %d REST answers from %s", self.id,
                 len(self.cap_conns), frames, sum(len(v) for v in self.cap_rest.values()), folder)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "mode": "replay", "source": self.source, "frames": self.frames_total,
                "sent": self.sent_upto, "finished": self.finished}

    @property
    def finished(self) -> bool:
        """Every captured frame has been sent (or its connection ended first)."""
        return self.sent_upto >= self.frames_total and self._accepted >= len(self.cap_conns)

    def book_levels(self, symbol: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
        bids, asks = self.final.get(symbol, ({}, {}))
        return sorted(bids.items(), reverse=True), sorted(asks.items())

    def is_ws_path(self, path: str) -> bool:
        return True

    def _advance(self, upto: int) -> None:
        if upto > self.sent_upto:
            self.sent_upto = upto
            self._progress.set()

    async def route_rest(self, path: str, query: dict[str, list[str]]) -> Response:
        key = (path.rstrip("/"), tuple(sorted((k, v) for k, vs in query.items() for v in vs)))
        answers = self.cap_rest.get(key)
        if not answers:
            raise HttpError(404, {"error": f"no captured answer for {path}", "captured": len(self.cap_rest)})
        i = self.rest_served[key]
        self.rest_served[key] += 1
        a = answers[min(i, len(answers) - 1)]
        deadline = time.monotonic() + self.gate_timeout
        while i < len(answers) and self.sent_upto < a.needs and time.monotonic() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), max(0.0, deadline - time.monotonic()))
        self.stats["rest_answers"] += 1
        if a.body is not None:
            return http_response(a.status or 200, a.body)
        headers = [("Retry-After", f"{a.delay:g}")] if a.delay is not None else []
        return http_response(a.status or 503, {"error": a.error or "captured failure"}, headers)

    async def on_open(self, conn: Conn) -> None:
        k = self._accepted
        self._accepted += 1
        if k >= len(self.cap_conns):
            log.info("%s: connection %d is beyond the %d captured: nothing to send", self.id, k + 1,
                     len(self.cap_conns))
            return
        conn.state["replay"] = self.spawn(self._play(conn, self.cap_conns[k]))

    async def on_message(self, conn: Conn, text: str) -> None:
        self.stats["client_frames_ignored"] += 1

    async def on_close(self, conn: Conn) -> None:
        task = conn.state.get("replay")
        if task is not None:
            task.cancel()
        c = conn.state.get("cap")
        if c is not None:
            self._advance(c.first + len(c.frames))      # what it did not get is passed over

    async def _play(self, conn: Conn, c: _CapConn) -> None:
        conn.state["cap"] = c
        self._advance(c.first)
        start = time.monotonic()
        sent = 0
        for i, (mono, text) in enumerate(c.frames):
            if conn.closed:
                return
            if self.speed > 0:
                delay = start + (mono - c.opened) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif len(conn._out) > 1000:          # as fast as possible, but not faster than the socket
                await conn.idle.wait()
            conn.push(text if isinstance(text, str) else text.decode("utf-8", "replace"))
            sent += 1
            self.stats["events_sent"] += 1
            self._advance(c.first + i + 1)
        self._advance(c.first + len(c.frames))
        if c.closed is None:
            log.info("%s: capture replayed on a connection (%d frames); the feed stopped with it open: "
                     "keeping it open", self.id, sent)
            return
        if self.speed > 0:
            delay = start + (c.closed - c.opened) / self.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await conn.idle.wait()
        log.info("%s: capture replayed on a connection (%d frames); closing it as captured (%s)", self.id,
                 sent, c.close_reason[:80])
        with contextlib.suppress(Exception):
            await conn.ws.close(1000, "captured close")
