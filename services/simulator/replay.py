"""Replay of real recordings (cryptofeed capture format, see fixtures/recorded/README.md) on the
venue's real wire protocol, so a feed sees what the real exchange sent.

Files in a recording folder: ``<EXCHANGE>.0`` (pair list REST call + a ``configuration:`` line),
``<EXCHANGE>.http.N.M`` (REST snapshots: ``<url> -> <ts>: <body>``) and ``<EXCHANGE>.ws.N.M``
(``<url> <-> <ts>`` open, ``<url> <- <ts>: <text>`` sent by the client, ``<ts>: <text>`` received).

What is served:

* REST: the recorded pair list (``exchangeInfo`` / ``trading-pairs-info``; ``?symbol=`` filters;
  ``unlist`` faults remove entries) and the recorded snapshot of each symbol, verbatim (Binance:
  cut to ``limit`` levels when that is smaller than what was recorded). A listed symbol without a
  recorded snapshot answers 404.
* WebSocket: on each connection, once it has a subscription (from the URL at once; from a
  subscribe frame after a 0.2 s settle so a burst of subscribe frames lands first), the
  recorded received frames in recorded order, only those of streams / channels the connection
  subscribed to, verbatim (Binance ``/ws`` raw connections get the unwrapped ``data``). Frames
  that come after a symbol's recorded snapshot are held until that snapshot has been served
  since the connection opened (or ``gate_timeout`` passed), so the feed meets the same
  older/equal/newer mix as the recorder did. "After" is decided by the venue's own numbers
  (Binance ``u > lastUpdateId``; Bitstamp ``microtimestamp`` above the snapshot's) and, for
  other frames, by the recorder's clock. Pacing: recorded gaps divided by ``speed``
  (0 = as fast as possible). Recorded Bitstamp acks are not replayed: acks answer the live
  subscribe frames.
* ``/book``: the book the recording implies, computed here with the venue's documented rule:
  Binance: snapshot, drop events with ``u <= lastUpdateId``, the first kept one must straddle
  ``lastUpdateId + 1``, then ``U == previous u + 1``; Bitstamp: snapshot, then the diffs with
  ``microtimestamp`` (integer) greater than the snapshot's, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Response

from services.simulator.binance import BinanceServer, venue_symbol
from services.simulator.bitstamp import CHANNEL_PREFIX, BitstampServer
from services.simulator.market import SymbolSpec
from services.simulator.venue import Conn, HttpError, VenueServer, dumps, http_response

log = logging.getLogger("simulator.replay")

KINDS = {"BINANCE": "binance", "BINANCE_US": "binance", "BITSTAMP": "bitstamp"}
SETTLE = 0.2


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
    key: str            # Binance: stream name; Bitstamp: channel
    obj: Any = field(compare=False, repr=False)
    gate: str | None = None  # symbol whose snapshot must have been served before this frame


def detect_kind(folder: Path) -> str:
    """'binance' or 'bitstamp', from the ``<EXCHANGE>.0`` file name."""
    if not folder.is_dir():
        raise RecordingError(f"{folder} is not a directory")
    for p in sorted(folder.iterdir()):
        if p.suffix == ".0" and p.name.count(".") == 1 and p.stem in KINDS:
            return KINDS[p.stem]
    raise RecordingError(f"{folder}: no <EXCHANGE>.0 file of a known exchange ({sorted(KINDS)})")


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


def read_ws(path: Path) -> tuple[float, list[float], list[tuple[float, str]]]:
    """(open time, times of frames the client sent, received frames (time, text))."""
    opened = 0.0
    sent: list[float] = []
    received: list[tuple[float, str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        if line.startswith(("ws://", "wss://")):
            head = line.split(": ", 1)[0]
            if " <-> " in head:
                opened = float(head.rsplit(" <-> ", 1)[1])
            elif " <- " in head:
                sent.append(float(head.rsplit(" <- ", 1)[1]))
            continue
        ts, sep, text = line.partition(": ")
        if not sep:
            raise RecordingError(f"{path.name}: not a frame record: {line[:80]!r}")
        received.append((float(ts), text))
    return opened, sent, received


def apply(side: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
    for p, a in levels:
        amount = Decimal(a)
        if amount:
            side[Decimal(p)] = amount
        else:
            side.pop(Decimal(p), None)


class ReplayMixin(VenueServer):
    """Shared replay machinery; the venue classes below add the recording's specifics."""

    folder: Path
    speed: float
    gate_timeout: float
    frames: list[WsFrame]
    origin: float
    snap_ts: dict[str, float]        # canonical symbol -> recorded time of its snapshot
    implied: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]]

    def setup_replay(self, folder: Path, speed: float, gate_timeout: float) -> None:
        self.folder = folder
        self.source = str(folder)
        self.speed = speed
        self.gate_timeout = gate_timeout
        self.implied = {}
        self.snap_ts = {}

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.folder.glob(pattern))

    def frame_symbol(self, f: WsFrame) -> str | None:
        raise NotImplementedError

    def wants(self, conn: Conn, f: WsFrame) -> bool:
        return f.key in conn.subs

    def outgoing(self, conn: Conn, f: WsFrame) -> str:
        return f.text

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

    async def on_open(self, conn: Conn) -> None:
        conn.state["gates"] = {s: asyncio.Event() for s in self.specs}
        await super().on_open(conn)
        if conn.subs:
            self.start_replay(conn, settle=0.0)

    def start_replay(self, conn: Conn, settle: float) -> None:
        if "replay" not in conn.state:
            conn.state["replay"] = self.spawn(self._replay(conn, settle))

    async def on_close(self, conn: Conn) -> None:
        task = conn.state.get("replay")
        if task is not None:
            task.cancel()

    async def _replay(self, conn: Conn, settle: float) -> None:
        await asyncio.sleep(settle)
        start = time.monotonic()
        sent = 0
        for f in self.frames:
            if conn.closed:
                return
            if not self.wants(conn, f):
                continue
            sym = f.gate
            if sym is not None:
                gate: asyncio.Event = conn.state["gates"][sym]
                if not gate.is_set():
                    t0 = time.monotonic()
                    try:
                        await asyncio.wait_for(gate.wait(), self.gate_timeout)
                    except TimeoutError:
                        log.info("%s: snapshot of %s not requested within %.1f s; replay goes on",
                                 self.id, sym, self.gate_timeout)
                        gate.set()
                    start += time.monotonic() - t0
            if self.speed > 0:
                delay = start + (f.ts - self.origin) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while conn.silenced():
                await asyncio.sleep(0.05)
            conn.push(self.outgoing(conn, f))
            self.stats["events_sent"] += 1
            sent += 1
        log.info("%s: replay finished on a connection (%d frames sent)", self.id, sent)


class ReplayBinance(ReplayMixin, BinanceServer):
    """Binance / Binance.US recording."""

    def load(self) -> None:
        pairs_file = [p for p in self.files("*.0") if p.name.count(".") == 1]
        info_rec = next(r for r in read_rest(pairs_file[0]) if "exchangeInfo" in r.url)
        self.info_text = info_rec.body
        self.info = json.loads(info_rec.body)
        by_name = {s["symbol"]: s for s in self.info["symbols"]}
        self.snapshots: dict[str, str] = {}
        self.specs.clear()
        for path in self.files("*.http.*"):
            for r in read_rest(path):
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
        frames: list[WsFrame] = []
        for path in self.files("*.ws.*"):
            opened, _sent, received = read_ws(path)
            self.origin = opened if not frames else min(self.origin, opened)
            for ts, text in received:
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
                key = obj.get("stream", "") if isinstance(obj, dict) else ""
                frames.append(WsFrame(ts, text, key, obj))
        frames.sort(key=lambda f: f.ts)
        last_ids = {sym: json.loads(body)["lastUpdateId"] for sym, body in self.snapshots.items()}
        self.frames = [self._gated(f, last_ids) for f in frames]
        if not frames:
            self.origin = 0.0
        self._imply()

    def _gated(self, f: WsFrame, last_ids: dict[str, int]) -> WsFrame:
        """Depth events with ``u > lastUpdateId`` come after the snapshot; other frames go by the
        recorder's clock."""
        sym = self.frame_symbol(f)
        if sym is None or sym not in last_ids:
            return f
        d = f.obj.get("data") if isinstance(f.obj, dict) else None
        if isinstance(d, dict) and d.get("e") == "depthUpdate" and isinstance(d.get("u"), int):
            after = d["u"] > last_ids[sym]
        else:
            after = f.ts > self.snap_ts[sym]
        return WsFrame(f.ts, f.text, f.key, f.obj, sym if after else None)

    def _imply(self) -> None:
        for sym, body in self.snapshots.items():
            snap = json.loads(body)
            bids: dict[Decimal, Decimal] = {}
            asks: dict[Decimal, Decimal] = {}
            apply(bids, snap["bids"])
            apply(asks, snap["asks"])
            last = snap["lastUpdateId"]
            synced = False
            for f in self.frames:
                d = f.obj.get("data") if isinstance(f.obj, dict) else None
                if not isinstance(d, dict) or d.get("e") != "depthUpdate" or d.get("s") != venue_symbol(sym):
                    continue
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
            self.implied[sym] = (bids, asks)

    def frame_symbol(self, f: WsFrame) -> str | None:
        name = f.key.split("@", 1)[0].upper()
        return self.by_venue_symbol().get(name)

    def outgoing(self, conn: Conn, f: WsFrame) -> str:
        if self.combined(conn) or not isinstance(f.obj, dict) or "data" not in f.obj:
            return f.text
        return dumps(f.obj["data"])

    async def on_message(self, conn: Conn, text: str) -> None:
        await super().on_message(conn, text)
        if conn.subs:
            self.start_replay(conn, settle=SETTLE)

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


class ReplayBitstamp(ReplayMixin, BitstampServer):
    """Bitstamp recording."""

    def load(self) -> None:
        pairs_file = [p for p in self.files("*.0") if p.name.count(".") == 1]
        rec = next(r for r in read_rest(pairs_file[0]) if "trading-pairs-info" in r.url)
        self.pairs_text = rec.body
        self.pairs = json.loads(rec.body)
        names = {p["url_symbol"]: p for p in self.pairs}
        self.snapshots: dict[str, str] = {}
        self.specs.clear()
        for path in self.files("*.http.*"):
            for r in read_rest(path):
                parts = [p for p in urlsplit(r.url).path.split("/") if p]
                if len(parts) < 2 or parts[-2] != "order_book" or parts[-1] not in names:
                    continue
                p = names[parts[-1]]
                sym = p["name"]
                self.specs.setdefault(sym, SymbolSpec(sym, Decimal(1).scaleb(-int(p["counter_decimals"])),
                                                      Decimal(0)))
                self.snapshots.setdefault(sym, r.body)
                self.snap_ts.setdefault(sym, r.ts)
        frames: list[WsFrame] = []
        origin: float | None = None
        for path in self.files("*.ws.*"):
            opened, sent, received = read_ws(path)
            first = sent[0] if sent else opened
            origin = first if origin is None else min(origin, first)
            for ts, text in received:
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and str(obj.get("event", "")).startswith("bts:subscription"):
                    continue  # acks answer the live subscribe frames instead
                key = obj.get("channel", "") if isinstance(obj, dict) else ""
                frames.append(WsFrame(ts, text, str(key), obj))
        frames.sort(key=lambda f: f.ts)
        stamps = {sym: int(json.loads(body)["microtimestamp"]) for sym, body in self.snapshots.items()}
        self.frames = [self._gated(f, stamps) for f in frames]
        self.origin = origin or 0.0
        self._imply()

    def _gated(self, f: WsFrame, stamps: dict[str, int]) -> WsFrame:
        """Diffs with a microtimestamp above the snapshot's come after it. (The recorder's clock
        cannot tell: it read every diff only after it had fetched all snapshots.)"""
        sym = self.frame_symbol(f)
        d = f.obj.get("data") if isinstance(f.obj, dict) else None
        if sym is None or sym not in stamps or not isinstance(d, dict):
            return f
        try:
            after = int(d["microtimestamp"]) > stamps[sym]
        except (KeyError, ValueError, TypeError):
            after = f.ts > self.snap_ts[sym]
        return WsFrame(f.ts, f.text, f.key, f.obj, sym if after else None)

    def _imply(self) -> None:
        for sym, body in self.snapshots.items():
            snap = json.loads(body)
            bids: dict[Decimal, Decimal] = {}
            asks: dict[Decimal, Decimal] = {}
            apply(bids, snap["bids"])
            apply(asks, snap["asks"])
            stamp = int(snap["microtimestamp"])
            channel = CHANNEL_PREFIX + sym.replace("/", "").lower()
            for f in self.frames:
                d = f.obj.get("data") if isinstance(f.obj, dict) else None
                if f.key != channel or f.obj.get("event") != "data" or not isinstance(d, dict):
                    continue
                if int(d["microtimestamp"]) <= stamp:
                    continue
                apply(bids, d["bids"])
                apply(asks, d["asks"])
            self.implied[sym] = (bids, asks)

    def frame_symbol(self, f: WsFrame) -> str | None:
        if not f.key.startswith(CHANNEL_PREFIX):
            return None
        return self.by_url_symbol().get(f.key[len(CHANNEL_PREFIX):])

    async def on_subscribed(self, conn: Conn, channel: str) -> None:
        if conn.subs:
            self.start_replay(conn, settle=SETTLE)

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


def make_replay_server(venue_id: str, kind: str, folder: Path, *, speed: float, gate_timeout: float,
                       **kw: Any) -> VenueServer:
    """A venue server of ``kind`` serving the recording in ``folder``."""
    found = detect_kind(folder)
    if found != kind:
        raise RecordingError(f"{folder} holds a {found} recording, but venue {venue_id!r} is {kind}")
    cls: type[ReplayBinance] | type[ReplayBitstamp] = ReplayBinance if kind == "binance" else ReplayBitstamp
    server = cls(venue_id, specs={}, **kw)
    server.setup_replay(folder, speed, gate_timeout)
    server.load()
    return server
