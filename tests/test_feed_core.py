"""The feed core in-process, without sockets: a toy STREAM venue written here drives every rule
the core owns (in-band snapshots, per-symbol resubscribe on a checksum mismatch, truncation that
publishes its deletions, the connection sequence, venue modes, refused symbols, timeouts)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import zlib
from decimal import Decimal
from typing import Any

from common.book import Book
from common.config import VenueConfig
from common.feed.actions import Fetch, Reconnect, Send
from common.feed.core import FeedCore
from common.feed.runner import resolve_options
from common.feed.spec import RECONNECT, RESUBSCRIBE, STREAM, FeedSpec
from common.feed.sync import StreamSequencer
from common.feed.types import (
    ConnSeq,
    Control,
    ControlKind,
    DepthEvent,
    Frame,
    ParseError,
    Snapshot,
)
from common.schema import DELTA, DOWN, LIVE, SNAP, SYNCING, BookMsg, HeartbeatMsg, StatusMsg

D = Decimal


def toy_checksum(book: Book, precision: tuple[int, int] | None) -> int:
    """CRC32 of the top 3 levels per side as text (a stand-in for Kraken's)."""
    text = ";".join(f"{p}:{q}" for side in (0, 1) for p, q in book.levels(side, 3))
    return zlib.crc32(text.encode())


def levels(v: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(q)) for p, q in v]


def parse(text: str | bytes) -> Frame | list[Frame]:
    """Toy wire: {"seq": n, "items": [...]} with items snap/upd/mode/err/ack."""
    m = json.loads(text)
    if "bad" in m:
        raise ParseError("bad frame", m["bad"])
    out: list[Frame] = []
    if "seq" in m:
        out.append(ConnSeq(m["seq"]))
    for it in m["items"]:
        t = it["t"]
        if t == "snap":
            out.append(Snapshot(it["k"], 0, 0, levels(it["b"]), levels(it["a"]), it.get("c")))
        elif t == "upd":
            out.append(DepthEvent(it["k"], 0, 0, 5, levels(it.get("b", [])), levels(it.get("a", [])), it.get("c")))
        elif t == "mode":
            out.append(Control(ControlKind.MODE, it["m"]))
        elif t == "err":
            out.append(Control(ControlKind.SYMBOL_ERROR, "pair not supported", key=it["k"]))
    return out


def spec(**kw: Any) -> FeedSpec:
    base: dict[str, Any] = dict(
        kind="toy", key_of=lambda s: s.replace("/", ""), ws_url=lambda cfg, keys: "ws://x",
        subscribe=lambda cfg, keys: [f"sub {' '.join(keys)}"], parse_frame=parse,
        pairs_url=lambda cfg: None, parse_pairs=lambda t: {}, sequencer=StreamSequencer,
        snapshot=STREAM, resync=RESUBSCRIBE, resubscribe=lambda cfg, key: [f"unsub {key}", f"sub {key}"],
        checksum=toy_checksum, conn_seq=True, truncate=True, depth_limit=lambda cfg: cfg.depth,
        snapshot_timeout=5.0)
    base.update(kw)
    return FeedSpec(**base)


def core_of(sp: FeedSpec, depth: int = 3) -> FeedCore:
    cfg = VenueConfig(id="toy", kind="binance", enabled=True, symbols=("BTC/USD", "ETH/USD"), ws_url="ws://x",
                      rest_url="http://x", pub="inproc://p", ctl="inproc://c", stale_after=5.0, depth=depth,
                      taker_fee=D(0), cpu=None)
    c = FeedCore(sp, cfg, resolve_options(sp, cfg), sess=1)
    c.start(0)
    c.take_bus()
    return c


class Wire:
    """Builds toy frames with a running connection sequence."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, *items: dict[str, Any], skip: int = 0) -> str:
        self.n += 1 + skip
        return json.dumps({"seq": self.n, "items": list(items)})


def snap(k: str, b: list[list[str]], a: list[list[str]], good: bool = True) -> dict[str, Any]:
    book = Book()
    book.load(levels(b), levels(a))
    return {"t": "snap", "k": k, "b": b, "a": a, "c": toy_checksum(book, None) + (0 if good else 1)}


def bus(c: FeedCore) -> list[Any]:
    c.flush()
    return c.take_bus()


def test_core_imports_no_io() -> None:
    """The core and everything it imports pull in no asyncio, websockets, zmq or requests."""
    code = ("import sys, common.feed.core, common.feed.handlers, common.feed.stream, common.feed.outbox; "
            "bad = [m for m in ('asyncio', 'websockets', 'zmq', 'requests') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"the feed core imports {r.stdout.strip()} {r.stderr[-300:]}"


def test_connect_subscribes_and_stream_snapshot_makes_live() -> None:
    """Connecting sends the subscribe frames; each symbol is live once its in-band snapshot checks."""
    c = core_of(spec())
    c.connected(0.0, 1)
    assert c.take_actions() == [Send(["sub BTCUSD ETHUSD"])]
    assert [(m.symbol, m.status) for m in bus(c)] == []       # already syncing since start
    w = Wire()
    c.frame(w(snap("BTCUSD", [["10", "1"], ["9", "2"]], [["11", "1"]])), 2, 0.1)
    out = bus(c)
    assert len(out) == 1 and isinstance(out[0], BookMsg) and out[0].kind == SNAP
    assert out[0].bids == [(D(10), D(1)), (D(9), D(2))] and out[0].asks == [(D(11), D(1))]
    assert out[0].exact == (None, None)           # fewer levels than the depth: whole sides known
    assert c.streams["BTC/USD"].status == LIVE and c.streams["ETH/USD"].status == SYNCING


def test_checksum_mismatch_resubscribes_that_symbol_only() -> None:
    """A wrong checksum voids one symbol (syncing, resubscribe); the other stays live and updating."""
    c = core_of(spec())
    c.connected(0.0, 1)
    c.take_actions()
    w = Wire()
    c.frame(w(snap("BTCUSD", [["10", "1"]], [["11", "1"]]), snap("ETHUSD", [["2", "1"]], [["3", "1"]])), 2, 0.1)
    bus(c)
    c.frame(w({"t": "upd", "k": "BTCUSD", "b": [["10", "5"]], "c": 12345}), 3, 0.2)
    out = bus(c)
    assert [(type(m).__name__, m.symbol, getattr(m, "status", None)) for m in out] == \
        [("StatusMsg", "BTC/USD", SYNCING)]
    assert "checksum mismatch (venue 12345, ours" in out[0].reason
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"])]
    assert c.counters["checksum_failures"] == 1 and c.streams["ETH/USD"].status == LIVE
    b = Book()
    b.load([(D(2), D(7))], [(D(3), D(1))])
    c.frame(w({"t": "upd", "k": "ETHUSD", "b": [["2", "7"]], "c": toy_checksum(b, None)}), 4, 0.3)
    out = bus(c)
    assert len(out) == 1 and out[0].kind == DELTA and out[0].bids == [(D(2), D(7))]
    # The resubscription's snapshot makes BTC live again; an update before it is dropped.
    c.frame(w({"t": "upd", "k": "BTCUSD", "b": [["10", "6"]]}), 5, 0.4)
    c.frame(w(snap("BTCUSD", [["10", "2"]], [["11", "1"]])), 6, 0.5)
    out = bus(c)
    assert [m.kind for m in out] == [SNAP] and out[0].bids == [(D(10), D(2))]


def test_wrong_snapshot_checksum_is_never_published() -> None:
    """A snapshot failing its checksum is not published; the symbol resyncs."""
    c = core_of(spec())
    c.connected(0.0, 1)
    c.take_actions()
    c.frame(Wire()(snap("BTCUSD", [["10", "1"]], [["11", "1"]], good=False)), 2, 0.1)
    out = bus(c)
    assert all(not isinstance(m, BookMsg) for m in out)
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"])]


def test_truncation_publishes_cut_levels_and_exact_to() -> None:
    """Levels pushed out of the subscribed depth leave the book and go out as deletions."""
    c = core_of(spec(checksum=None), depth=2)
    c.connected(0.0, 1)
    c.take_actions()
    w = Wire()
    c.frame(w(snap("BTCUSD", [["10", "1"], ["9", "1"]], [["11", "1"]])), 2, 0.1)
    first = bus(c)[0]
    assert first.exact == (D(9), None)                 # 2 bids = the depth: known down to 9
    c.frame(w({"t": "upd", "k": "BTCUSD", "b": [["9.5", "3"]]}), 3, 0.2)
    out = bus(c)
    assert out[0].bids == [(D("9.5"), D(3)), (D(9), D(0))] and out[0].exact == (D("9.5"), None)
    assert c.streams["BTC/USD"].book.levels(0) == [(D(10), D(1)), (D("9.5"), D(3))]


def test_connection_sequence_jump_reconnects() -> None:
    """A skipped sequence number ends the connection; later frames on it are ignored."""
    c = core_of(spec())
    c.connected(0.0, 1)
    c.take_actions()
    w = Wire()
    c.frame(w(snap("BTCUSD", [["10", "1"]], [["11", "1"]])), 2, 0.1)
    c.frame(w({"t": "upd", "k": "BTCUSD", "b": [["10", "2"]]}, skip=1), 3, 0.2)
    assert c.take_actions() == [Reconnect(SYNCING, "sequence_num jumped from 1 to 3")]
    c.frame(w({"t": "upd", "k": "BTCUSD", "b": [["10", "9"]]}), 4, 0.3)
    assert c.counters["ignored_after_reconnect"] == 1
    c.disconnected(SYNCING, "sequence_num jumped", 5)
    out = bus(c)
    assert [(m.symbol, m.status) for m in out if isinstance(m, StatusMsg)] == [("BTC/USD", SYNCING)]
    assert c.streams["BTC/USD"].book.levels(0) == []


def test_maintenance_takes_books_down_and_back() -> None:
    """Maintenance: every symbol down and its updates dropped; back online: resubscribe each."""
    c = core_of(spec(conn_seq=False))
    c.connected(0.0, 1)
    c.take_actions()
    c.frame(json.dumps({"items": [snap("BTCUSD", [["10", "1"]], [["11", "1"]])]}), 2, 0.1)
    bus(c)
    c.frame(json.dumps({"items": [{"t": "mode", "m": "maintenance"}]}), 3, 0.2)
    out = bus(c)
    assert isinstance(out[0], HeartbeatMsg) and out[0].mode == "maintenance"
    assert [(m.symbol, m.status) for m in out[1:]] == [("BTC/USD", DOWN), ("ETH/USD", DOWN)]
    c.frame(json.dumps({"items": [snap("BTCUSD", [["10", "1"]], [["11", "1"]])]}), 4, 0.3)
    assert bus(c) == [] and c.counters["dropped_offline"] == 1
    c.frame(json.dumps({"items": [{"t": "mode", "m": "online"}]}), 5, 0.4)
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"]), Send(["unsub ETHUSD", "sub ETHUSD"])]
    assert [getattr(m, "status", None) for m in bus(c)] == [None, SYNCING, SYNCING]
    c.frame(json.dumps({"items": [{"t": "mode", "m": "cancel_only"}]}), 6, 0.5)
    c.frame(json.dumps({"items": [snap("BTCUSD", [["10", "1"]], [["11", "1"]])]}), 7, 0.6)
    out = bus(c)
    assert out[0].mode == "cancel_only" and out[-1].kind == SNAP     # cancel_only: books stay live


def test_refused_symbol_is_down_and_timeouts_resubscribe_the_others() -> None:
    """A symbol the venue refuses goes down; one whose book never comes is resubscribed."""
    c = core_of(spec(conn_seq=False))
    c.connected(0.0, 1)
    c.take_actions()
    c.frame(json.dumps({"items": [{"t": "err", "k": "ETHUSD"}]}), 2, 0.1)
    out = bus(c)
    assert (out[0].symbol, out[0].status) == ("ETH/USD", DOWN) and "pair not supported" in out[0].reason
    c.tick(4.0, 3)
    assert c.take_actions() == []
    c.tick(5.5, 4)
    assert c.take_actions() == [Send(["unsub BTCUSD", "sub BTCUSD"])]   # not the refused ETH
    assert c.counters["snapshot_timeouts"] == 1


def test_first_event_snapshot_replaces_the_book_no_ghosts() -> None:
    """A sequencer's SNAPSHOT verdict replaces the book: a level of the old book does not survive;
    a RECONNECT venue's gap ends the connection."""
    from common.feed.types import Verdict

    class FirstIsBook(StreamSequencer):
        def on_event(self, ev: DepthEvent) -> Verdict:
            if not self.synced:
                self.synced = True
                return Verdict.SNAPSHOT
            return Verdict.GAP if ev.bids and ev.bids[0][1] == D(99) else Verdict.APPLY

    c = core_of(spec(sequencer=FirstIsBook, resync=RECONNECT, conn_seq=False, checksum=None, truncate=False))
    c.connected(0.0, 1)
    c.take_actions()
    c.frame(json.dumps({"items": [{"t": "upd", "k": "BTCUSD", "b": [["10", "1"], ["8", "1"]], "a": [["11", "1"]]}]}),
            2, 0.1)
    assert bus(c)[0].kind == SNAP
    c.frame(json.dumps({"items": [{"t": "upd", "k": "BTCUSD", "b": [["7", "99"]]}]}), 3, 0.2)
    acts = c.take_actions()
    assert len(acts) == 1 and isinstance(acts[0], Reconnect)
    c.disconnected(SYNCING, "gap", 4)
    c.connected(1.0, 5)
    c.take_actions()
    bus(c)
    c.frame(json.dumps({"items": [{"t": "upd", "k": "BTCUSD", "b": [["10", "1"]], "a": [["11", "1"]]}]}), 6, 1.1)
    assert bus(c)[0].bids == [(D(10), D(1))]        # the 8 bid of the old book is gone


def test_rest_venue_fetches_on_connect() -> None:
    """A REST venue asks for one snapshot fetch per symbol when a connection opens."""
    from services.feed_binance.spec import SPEC

    c = core_of(SPEC)
    c.connected(0.0, 1)
    assert c.take_actions() == [Fetch("BTC/USD"), Fetch("ETH/USD")]


def test_repeated_resubscriptions_back_off() -> None:
    """A symbol whose book keeps failing its checksum is resubscribed at once the first time,
    then after 0.5, 1, 2 ... s (ticks), never in a hot loop; a whole book resets the count."""
    c = core_of(spec(conn_seq=False))
    c.connected(0.0, 1)
    c.take_actions()
    bad = json.dumps({"items": [snap("BTCUSD", [["10", "1"]], [["11", "1"]], good=False)]})
    sends: list[float] = []
    now = 0.0
    for _ in range(40):          # the venue answers every (re)subscription with a bad book
        now += 0.25
        c.frame(bad, 2, now)     # the answer, or (waiting) a stray one that must not count again
        c.tick(now, 2)
        got = [now for a in c.take_actions() if isinstance(a, Send) and "BTCUSD" in a.frames[0]]
        sends += got
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(sends)]
    # each answer comes a tick (0.25 s) after its resubscription; then 0.5, 1, 2, 4 s of backoff
    assert sends[0] == 0.25 and gaps == [0.75, 1.25, 2.25, 4.25] and c.streams["BTC/USD"].resubs == 6
    c.frame(json.dumps({"items": [snap("BTCUSD", [["10", "1"]], [["11", "1"]])]}), 3, now)
    assert c.streams["BTC/USD"].status == LIVE and c.streams["BTC/USD"].resubs == 0
    # a new connection starts the count afresh, and forgets a resubscription scheduled on the old one
    c.frame(bad, 4, now)
    c.frame(bad, 4, now)
    assert c.streams["BTC/USD"].resub_at is not None
    c.disconnected(SYNCING, "lost", 5)
    c.connected(now + 1, 6)
    assert (c.streams["BTC/USD"].resubs, c.streams["BTC/USD"].resub_at) == (0, None)


def test_an_event_is_a_book_only_right_after_subscribing() -> None:
    """A venue whose first event after subscribing is the book (Gemini): once the symbol's book
    is voided without a new subscription (a quiet resync held back by the budget), a later event
    is a diff of a book we no longer hold and never becomes the published book."""
    from common.feed.types import Verdict

    class FirstIsBook(StreamSequencer):
        def on_event(self, ev: DepthEvent) -> Verdict:
            if not self.synced:
                self.synced = True
                return Verdict.SNAPSHOT
            return Verdict.APPLY

    c = core_of(spec(sequencer=FirstIsBook, resync=RECONNECT, conn_seq=False, checksum=None, truncate=False))
    c.connected(0.0, 1)
    c.take_actions()
    upd = json.dumps({"items": [{"t": "upd", "k": "BTCUSD", "b": [["10", "1"]], "a": [["11", "1"]]}]})
    c.frame(upd, 2, 0.1)
    assert bus(c)[0].kind == SNAP
    st = c.streams["BTC/USD"]
    st.quiet_after = 1.0
    c.quiet.budget.tokens = 0.0           # the budget holds the resync: the symbol waits, stale
    c.quiet.mark(st, 100.0, 3)
    c.quiet.resyncs(100.0, 3)
    assert st.status == "stale" and c.take_actions() == []
    c.frame(json.dumps({"items": [{"t": "upd", "k": "BTCUSD", "b": [["9", "2"]]}]}), 4, 100.1)
    assert st.status == "stale" and all(not isinstance(m, BookMsg) for m in bus(c))
    assert c.counters["dropped_not_a_book"] == 1
