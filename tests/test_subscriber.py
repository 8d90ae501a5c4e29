"""The merged-book codec and the client library (common/schema.py, common/subscriber.py): exact
topics, epoch and seq tracking, timeout, CURVE, exact decimals, and the venue_ts freshness key,
over real sockets (a bare PUB for the library's own rules, the real aggregator and publisher for
the pipeline)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from common import config, schema, security
from common.ports import free_port
from common.schema import (
    DELTA,
    SNAP,
    BookMsg,
    DepletionSummary,
    HeartbeatMsg,
    Level,
    MergedBook,
    VenueTimes,
)
from common.subscriber import (
    BookTracker,
    CurveKeys,
    QueryRefused,
    Subscription,
    SubscriptionTimeout,
    asubscribe,
    subscribe,
)
from services.client import deplete
from tests.harness import ScriptedFeed, procs, wait_until, write_config

SYM = "BTC/USDT"
D = Decimal


def book(symbol: str = SYM, epoch: int = 1, seq: int = 1, *, bid: str = "100", ask: str = "101") -> MergedBook:
    return MergedBook(symbol, epoch, seq, 5, D(ask) - D(bid), [Level(D(bid), D("1"), "alpha")],
                      [Level(D(ask), D("2"), "beta")], {"alpha": "live", "beta": "live"})


def frames(b: MergedBook) -> list[bytes]:
    return schema.encode_merged(b)


# --- the codec (pure) -------------------------------------------------------------------------


def test_encoding_is_byte_identical_to_the_hand_built_payload() -> None:
    """The codec writes exactly the map the aggregator packed by hand before it existed, then
    the new venue_ts key."""
    depl = {"buy": {"1": {"filled": "1", "vwap": "101.25", "worst": "101.5", "slippage_bps": "24.6305",
                          "levels": 2, "partial": False}},
            "sell": {"1": {"filled": "0.5", "vwap": "100", "worst": "100", "slippage_bps": "0", "levels": 1,
                           "partial": True}}}
    legacy = {"symbol": SYM, "epoch": 17, "seq": 3, "ts": 1_700_000_000_123_456_789, "spread": "-0.5",
              "bids": [["100.5", "0.00000001", "alpha"], ["100", "2", "beta"]], "asks": [["100", "1", "beta"]],
              "venues": {"alpha": "live", "beta": "live", "gamma": "down"}, "depletion": depl}
    raw = msgpack.packb(legacy, use_bin_type=True)
    b = schema.decode_merged([b"book.BTC/USDT", raw])
    assert schema.encode_merged(b) == [b"book.BTC/USDT", raw]
    assert schema.encode_merged(b, depletion=depl)[1] == raw
    b.venue_ts = {"alpha": VenueTimes(1, 2, 3)}
    assert schema.encode_merged(b)[1] == raw[:1].replace(b"\x89", b"\x8a") + raw[1:] + msgpack.packb(
        "venue_ts") + msgpack.packb({"alpha": {"ets": 1, "rts": 2, "heard": 3}})


def test_decoding_is_exact_decimal() -> None:
    """Prices, amounts, spread and the depletion summary decode to the exact Decimal of their text."""
    m = {"symbol": SYM, "epoch": 1, "seq": 1, "ts": 0, "spread": "-0.00000001",
         "bids": [["43250.12345678", "0.00000001", "alpha"]], "asks": [["43250.12345677", "123456789.1", "beta"]],
         "venues": {"alpha": "live", "beta": "live"},
         "depletion": {"sell": {"0.1": {"filled": "0.00000001", "vwap": "43250.12345678", "worst": "43250.12345678",
                                        "slippage_bps": "0", "levels": 1, "partial": True}},
                       "buy": {"5": {"filled": "0", "vwap": None, "worst": None, "slippage_bps": None, "levels": 0,
                                     "partial": True}}},
         "venue_ts": {"alpha": {"ets": 1, "rts": 2, "heard": 3}}, "future_key": [1, 2]}
    b = schema.decode_merged([b"book.BTC/USDT", msgpack.packb(m)])
    assert b.bids == [Level(D("43250.12345678"), D("0.00000001"), "alpha")]
    assert b.asks == [Level(D("43250.12345677"), D("123456789.1"), "beta")]
    assert b.bids[0].price.as_tuple() == (0, (4, 3, 2, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8), -8)
    assert b.spread == D("-0.00000001") and b.mid == D("43250.123456775")
    assert b.depletion == {
        "sell": {D("0.1"): DepletionSummary(D("0.00000001"), D("43250.12345678"), D("43250.12345678"), D("0"), 1,
                                            True)},
        "buy": {D("5"): DepletionSummary(D("0"), None, None, None, 0, True)}}
    assert b.venue_ts == {"alpha": VenueTimes(1, 2, 3)} and b.extra == {"future_key": [1, 2]}
    assert schema.encode_merged(b)[1] == msgpack.packb(m)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bids", [["1e400", "1", "alpha"]], "'bids'"),
    ("bids", [[1.5, "1", "alpha"]], "'bids'"),
    ("asks", [["100", "1"]], "[price, amount, venue]"),
    ("spread", "NaN", "'spread'"),
    ("seq", "7", "'seq'"),
    ("venues", {"alpha": 1}, "'venues'"),
    ("venue_ts", {"alpha": {"ets": 1, "rts": 2}}, "'heard'"),
    ("depletion", {"buy": {"1": {"filled": "-1", "levels": 1, "partial": False}}}, "depletion.buy.1"),
])
def test_malformed_snapshots_name_the_key(key: str, value: object, message: str) -> None:
    """Every malformed field raises BusError naming it."""
    m = schema.merged_payload(book())
    m[key] = value
    with pytest.raises(schema.BusError, match=re.escape(message)):
        schema.decode_merged([b"book.BTC/USDT", msgpack.packb(m)])


def test_mid_is_exact_at_the_widest_wire_values() -> None:
    """(bid + ask) / 2 keeps every digit (37 significant digits here, beyond the default 28)."""
    b = book(bid="999999999999999999.999999999999999998", ask="999999999999999999.999999999999999999")
    assert b.mid == D("999999999999999999.9999999999999999985")
    assert book(bid="100", ask="100").mid == D("100") and (b.best_bid, b.best_ask) == (b.bids[0], b.asks[0])


def test_topic_must_name_the_payload_symbol() -> None:
    with pytest.raises(schema.BusError, match="does not match"):
        schema.decode_merged([b"book.BTC/USD", frames(book())[1]])


# --- the tracker (pure) -----------------------------------------------------------------------


def test_tracker_counts_missed_seq_new_epoch_duplicates_and_foreign() -> None:
    """A seq jump shows on the book and in the counters; a new epoch starts afresh; a replayed
    seq and a prefix-matched topic are dropped and counted; malformed is dropped and counted."""
    t = BookTracker(["BTC/USD"])
    assert t.subscriptions() == [b"book.BTC/USD"]
    seen = []
    for f in (frames(book("BTC/USD", 1, 1)), frames(book("BTC/USDT", 1, 1)), frames(book("BTC/USD", 1, 2)),
              frames(book("BTC/USD", 1, 5)), frames(book("BTC/USD", 1, 5)), [b"book.BTC/USD", b"\xc1"],
              frames(book("BTC/USD", 2, 1)), frames(book("BTC/USD", 2, 2))):
        b = t.accept(f, 42)
        seen.append(None if b is None else (b.epoch, b.seq, b.missed, b.new_epoch, b.received_ns))
    assert seen == [(1, 1, 0, False, 42), None, (1, 2, 0, False, 42), (1, 5, 2, False, 42), None, None,
                    (2, 1, 0, True, 42), (2, 2, 0, False, 42)]
    assert (t.received, t.missed, t.epochs, t.duplicates, t.malformed, t.foreign) == (5, 2, 1, 1, 1, 1)


def test_tracker_without_symbols_takes_every_book_per_symbol() -> None:
    t = BookTracker(None)
    assert t.subscriptions() == [b"book."]
    assert t.accept(frames(book("ETH/USDT", 1, 4))) is not None
    b = t.accept(frames(book(SYM, 1, 9)))
    assert b is not None and b.missed == 0 and t.missed == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not a symbol"):
        BookTracker("BTCUSDT")
    with pytest.raises(ValueError, match="timeout"):
        subscribe("tcp://127.0.0.1:9", SYM, timeout=-1)
    with pytest.raises(TypeError, match="floats are inexact"):
        deplete("tcp://127.0.0.1:9", SYM, "buy", 1.5)  # type: ignore[arg-type]


# --- the library over a bare PUB ----------------------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.term()


class Pub:
    """A bare PUB standing in for the publisher."""

    def __init__(self, ctx: zmq.Context, sec: security.Security | None = None) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if sec is not None:
            sec.server(self.sock)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.sock.bind(self.endpoint)

    def send(self, b: MergedBook) -> None:
        self.sock.send_multipart(frames(b))

    def first(self, sub: Subscription, b: MergedBook) -> MergedBook:
        """Send ``b`` until ``sub`` has it (a SUB joins asynchronously); repeats are duplicates."""
        def got() -> bool:
            self.send(b)
            try:
                out.append(sub.recv(timeout=0.05))
            except SubscriptionTimeout:
                pass
            return bool(out)
        out: list[MergedBook] = []
        wait_until(got, timeout=20, what="the subscription's first book")
        return out[0]

    def close(self) -> None:
        self.sock.close(0)


def test_exact_topic_over_a_socket(ctx: zmq.Context) -> None:
    """Subscribed to BTC/USD, BTC/USDT (a prefix match in ZeroMQ) is never yielded: counted."""
    pub = Pub(ctx)
    with subscribe(pub.endpoint, "BTC/USD", ctx=ctx) as sub:
        pub.first(sub, book("BTC/USD", 1, 1))
        pub.send(book("BTC/USDT", 1, 1))
        pub.send(book("BTC/USDT", 1, 2))
        pub.send(book("BTC/USD", 1, 2, bid="99"))
        b = sub.recv(timeout=20)
        assert (b.symbol, b.seq, b.bids[0].price) == ("BTC/USD", 2, D("99"))
        assert sub.foreign == 2 and sub.last["BTC/USD"] is b and sub.symbols == ("BTC/USD",)
    pub.close()


def test_missed_seq_is_counted_and_shown(ctx: zmq.Context) -> None:
    """seq 1, 2, 5, 5, 6: the book of seq 5 says 2 missed, the subscription counts 2, nothing hidden."""
    pub = Pub(ctx)
    with subscribe(pub.endpoint, SYM, ctx=ctx) as sub:
        pub.first(sub, book(seq=1))
        for seq in (2, 5, 5, 6):
            pub.send(book(seq=seq))
        got = [(b.seq, b.missed) for b in (sub.recv(timeout=20) for _ in range(3))]
        assert got == [(2, 0), (5, 2), (6, 0)]
        assert sub.missed == 2 and sub.duplicates >= 1 and sub.epochs == 0
    pub.close()


def test_timeout_raises_and_the_subscription_goes_on(ctx: zmq.Context) -> None:
    """Nothing within the timeout: SubscriptionTimeout (a TimeoutError) naming the symbol; the
    subscription still yields what comes later; timeout 0 takes only what is queued."""
    pub = Pub(ctx)
    sub = subscribe(pub.endpoint, SYM, timeout=0.2, ctx=ctx)
    with pytest.raises(TimeoutError, match=r"no book of BTC/USDT within 0\.2 s"):
        next(iter(sub))
    assert pub.first(sub, book(seq=7)).seq == 7
    pub.send(book(seq=8))
    assert sub.recv(timeout=20).seq == 8          # every repeat of seq 7 came before it
    pub.send(book(seq=9))
    wait_until(lambda: bool(sub.sock.poll(50)), timeout=20, what="seq 9 queued")
    assert sub.recv(timeout=0).seq == 9           # timeout 0: what is queued, without waiting
    with pytest.raises(SubscriptionTimeout):
        sub.recv(timeout=0)
    sub.close()
    assert list(sub) == []
    pub.close()


def test_curve_allowed_key_gets_books_others_nothing(tmp_path: Path, ctx: zmq.Context) -> None:
    """A CURVE publisher: the allowed subscriber key gets books; a stranger's key and a plain
    subscriber get nothing."""
    keys = tmp_path / "keys"
    security.make_keys(keys)
    zmq.auth.create_certificates(str(tmp_path), "stranger")
    sp, ss = security.load_pair(keys / "server.key_secret")
    ip, isec = security.load_pair(keys / "internal.key_secret")
    sec = security.Security(sp, ss, ip, isec, keys / "clients")
    pub = Pub(ctx, sec)
    allowed = subscribe(pub.endpoint, SYM, ctx=ctx,
                        curve=CurveKeys.from_files(keys / "server.key", keys / "subscriber.key_secret"))
    stranger = subscribe(pub.endpoint, SYM, ctx=ctx,
                         curve=CurveKeys.from_files(keys / "server.key", tmp_path / "stranger.key_secret"))
    plain = subscribe(pub.endpoint, SYM, ctx=ctx)
    try:
        assert pub.first(allowed, book(seq=1)).seq == 1
        for seq in (2, 3):
            pub.send(book(seq=seq))
        assert [allowed.recv(timeout=20).seq for _ in range(2)] == [2, 3]
        for s in (stranger, plain):
            with pytest.raises(SubscriptionTimeout):
                s.recv(timeout=0.3)
            assert s.received == 0
    finally:
        for s in (allowed, stranger, plain):
            s.close()
        pub.close()
        sec.close()


def test_curve_key_files_must_hold_a_secret(tmp_path: Path) -> None:
    security.make_keys(tmp_path)
    with pytest.raises(ValueError, match="no secret key"):
        CurveKeys.from_files(tmp_path / "server.key", tmp_path / "subscriber.key")


def test_asyncio_flavour(ctx: zmq.Context) -> None:
    """async for over asubscribe: typed books, the same seq rule and timeout."""
    pub = Pub(ctx)

    async def main() -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        async with asubscribe(pub.endpoint, SYM, timeout=0.05, ctx=ctx) as sub:
            while not out:      # the SUB joins asynchronously: repeat the first book until it lands
                pub.send(book(seq=1))
                try:
                    first = await sub.recv()
                    out.append((first.seq, first.missed))
                except SubscriptionTimeout:
                    pass
            for seq in (2, 4):
                pub.send(book(seq=seq))
            async for b in sub:
                out.append((b.seq, b.missed))
                if b.seq == 4:
                    break
            assert sub.missed == 1 and isinstance(b.bids[0].price, Decimal)
        return out

    assert asyncio.run(main()) == [(1, 0), (2, 0), (4, 1)]
    pub.close()


# --- venue_ts in the aggregator (in process, no clock games) ----------------------------------------


def test_venue_ts_heard_advances_with_heartbeats_while_the_book_is_quiet(tmp_path: Path) -> None:
    """ets/rts are those of the last book update of the symbol from the venue; heard moves with
    every heartbeat; a heartbeat alone never publishes, the next snapshot carries it."""
    from services.aggregator.service import Aggregator

    cfg = tmp_path / "bookmux.toml"
    write_config(cfg, symbols=[SYM], levels=5, venues={"alpha": {}, "beta": {}})
    ctx = zmq.Context()
    agg = Aggregator(config.load(cfg), ctx=ctx)

    def published() -> MergedBook:
        payload = agg.states[SYM].last_payload
        assert payload is not None
        return schema.decode_merged([schema.book_topic(SYM), payload])

    def heartbeat(seq: int) -> None:
        agg.on_feed(schema.encode_feed(HeartbeatMsg("alpha", 7, time.time_ns(), {SYM: seq})), time.monotonic())

    try:
        snap = BookMsg(SNAP, "alpha", SYM, 7, 1, 1_000_001, 1_000_002, [(D("100"), D("1"))], [(D("101"), D("2"))])
        agg.on_snapshot_reply("alpha", [schema.pack(schema.feed_payload(snap))], time.monotonic())
        heartbeat(1)
        assert agg.publish_dirty() == 1
        b1 = published()
        assert b1.venue_ts is not None and b1.venue_ts["beta"] == VenueTimes(0, 0, 0)
        a1 = b1.venue_ts["alpha"]
        assert (a1.ets, a1.rts) == (1_000_001, 1_000_002) and a1.heard > 0
        heartbeat(1)
        assert agg.publish_dirty() == 0            # freshness alone is never a reason to publish
        agg.states[SYM].force = True               # a subscriber joins: the book is published again
        assert agg.publish_dirty() == 1
        b2 = published()
        assert b2.venue_ts is not None and b2.seq == b1.seq + 1 and b2.bids == b1.bids
        a2 = b2.venue_ts["alpha"]
        assert (a2.ets, a2.rts) == (1_000_001, 1_000_002) and a2.heard > a1.heard
        delta = BookMsg(DELTA, "alpha", SYM, 7, 2, 2_000_001, 2_000_002, [(D("100"), D("3"))], [])
        agg.on_feed(schema.encode_feed(delta), time.monotonic())
        assert agg.publish_dirty() == 1
        b3 = published()
        assert b3.venue_ts is not None and b3.bids == [Level(D("100"), D("3"), "alpha")]
        a3 = b3.venue_ts["alpha"]
        assert (a3.ets, a3.rts) == (2_000_001, 2_000_002) and a3.heard >= a2.heard
    finally:
        agg.close()
        ctx.term()


# --- the real pipeline: scripted feed -> aggregator -> publisher -> the library -------------------


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[ScriptedFeed, dict, Callable[[], None], object]]:
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=["BTC/USD", SYM], levels=5, down_after=2.0,
                      venues={"alpha": {"stale_after": 5.0}})
    ctx = zmq.Context()
    feed = ScriptedFeed("alpha", ep["alpha"]["pub"], ep["alpha"]["ctl"], ctx)
    last_hb = [0.0]

    def pump() -> None:
        feed.pump()
        if time.monotonic() - last_hb[0] > 0.2:
            last_hb[0] = time.monotonic()
            feed.heartbeat()

    with procs(tmp_path) as ps:
        ps.start("aggregator", "services.aggregator", "--config", str(cfg))
        ps.start("publisher", "services.publisher", "--config", str(cfg))
        yield feed, {**ep, "cfg": str(cfg), "ctx": ctx}, pump, ps
    feed.close()
    ctx.term()


def until(sub: Subscription, pred: Callable[[MergedBook], bool], pump: Callable[[], None], what: str) -> MergedBook:
    """The first book satisfying ``pred`` (pumping the feed meanwhile)."""
    hit: list[MergedBook] = []

    def check() -> bool:
        try:
            b = sub.recv(timeout=0.05)
        except SubscriptionTimeout:
            return False
        if pred(b):
            hit.append(b)
        return bool(hit)
    wait_until(check, timeout=30, pump=pump, what=what)
    return hit[0]


def test_pipeline_exact_topic_venue_ts_epoch_and_deplete(pipeline) -> None:
    """Through the real aggregator and publisher: only BTC/USD for a BTC/USD subscription;
    venue_ts carries the feed's ets/rts with heard after rts; deplete answers; an aggregator
    restart shows as new_epoch, never as missed snapshots."""
    feed, ep, pump, ps = pipeline
    endpoint = f"tcp://127.0.0.1:{ep['pub_port']}"
    feed.snap("BTC/USD", {"100": "1"}, {"101": "1"})
    feed.snap(SYM, {"200": "1"}, {"201": "1"})
    with subscribe(endpoint, "BTC/USD", ctx=ep["ctx"]) as sub:
        until(sub, lambda b: b.venues == {"alpha": "live"}, pump, "BTC/USD live")
        feed.delta(SYM, {"200": "5"}, {})
        rts = time.time_ns()
        ets = rts - 5_000_000
        feed.books["BTC/USD"][0][D("100")] = D("2")
        feed._send(BookMsg(DELTA, "alpha", "BTC/USD", feed.sess, feed._next("BTC/USD"), ets, rts,
                           [(D("100"), D("2"))], []))
        b = until(sub, lambda b: b.bids == [Level(D("100"), D("2"), "alpha")], pump, "the BTC/USD delta")
        feed.delta("BTC/USD", {"99": "1"}, {})      # published after the BTC/USDT book, on one socket
        until(sub, lambda x: len(x.bids) == 2, pump, "a second BTC/USD delta")
        assert sub.foreign >= 1 and set(sub.last) == {"BTC/USD"}
        assert b.venue_ts is not None and set(b.venue_ts) == {"alpha"}
        t = b.venue_ts["alpha"]
        assert (t.ets, t.rts) == (ets, rts) and rts <= t.heard <= b.received_ns
        assert b.ts == rts and b.spread == D("1") and b.missed == 0

        reply = deplete(ep["query"], "btc/usd", "SELL", "1.5", timeout=10)
        assert reply.merged is not None and reply.merged["filled"] == "1.5" and reply.seq >= b.seq
        with pytest.raises(QueryRefused, match="DOGE/USDT"):
            deplete(ep["query"], "DOGE/USDT", "buy", D("1"), timeout=10)

        ps.kill("aggregator")
        ps.start("aggregator", "services.aggregator", "--config", ep["cfg"])
        nb = until(sub, lambda x: x.epoch != b.epoch and x.venues == {"alpha": "live"}, pump, "the new epoch")
        assert sub.epochs == 1 and sub.missed == 0 and nb.symbol == "BTC/USD"
        assert nb.bids == [Level(D("100"), D("2"), "alpha"), Level(D("99"), D("1"), "alpha")]
