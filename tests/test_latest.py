"""The latest-only subscription path (services/publisher/latest.py, common/subscriber.py
``latest_only=True``): the server core and the client core in-process, then the real publisher
fed by a scripted feed (exact seqs), then the whole pipeline on the simulator at 10x traffic with
a subscriber that stalls for 10 s, many latest-only clients and one that never reads.

Ages and lags are printed (``-s``), never asserted."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from common import config, schema
from common.ports import free_port
from common.schema import BusError, LatestRequest, Level, MergedBook
from common.subscriber import BookTracker, LatestClient, SubscriptionRefused, SubscriptionTimeout, asubscribe, subscribe
from services.publisher.latest import LatestBooks
from tests.harness import REPO, ScriptedFeed, SimPipeline, Subscriber, procs, wait_until, write_config

SYM, OTHER = "BTC/USDT", "ETH/USDT"
D = Decimal
REPORT: list[str] = []


def book_frames(symbol: str, epoch: int, seq: int, bid: str = "100") -> list[bytes]:
    b = MergedBook(symbol, epoch, seq, 5, D("1"), [Level(D(bid), D("1"), "alpha")],
                   [Level(D(bid) + 1, D("2"), "beta")], {"alpha": "live", "beta": "live"})
    return schema.encode_merged(b)


def publish(core: LatestBooks, symbol: str, epoch: int, seq: int) -> list[list[bytes]]:
    topic, payload = book_frames(symbol, epoch, seq)
    return core.on_book(symbol, epoch, seq, topic, payload)


def req(rid: int, symbols: tuple[str, ...] = (SYM,), have: dict[str, tuple[int, int]] | None = None,
        wait: float = 5.0) -> bytes:
    return schema.encode_latest_request(LatestRequest(rid, symbols, have or {}, wait))


def answer(msg: list[bytes], envelope: int = 1) -> tuple[int, list[tuple[str, int, int]]]:
    """An answer's request id and its books as (symbol, epoch, seq)."""
    a = schema.decode_latest_answer(msg[envelope:])
    assert a.kind == "books", a
    return a.id, [(m["symbol"], m["epoch"], m["seq"]) for m in (msgpack.unpackb(p) for _t, p in a.books)]


# --- the server core (pure) -------------------------------------------------------------------


def test_a_request_is_answered_at_once_with_the_newest_book_of_each_wanted_symbol() -> None:
    """Books newer than ``have`` come back at once, one per wanted symbol, the newest only."""
    core = LatestBooks()
    for seq in (1, 2, 3):
        publish(core, SYM, 7, seq)
    publish(core, OTHER, 7, 9)
    publish(core, "BTC/USD", 7, 4)
    out = core.on_message([b"c1", req(11, (SYM, OTHER), {OTHER: (7, 8)})], now=0.0)
    assert out is not None and out[0] == b"c1"
    assert answer(out) == (11, [(SYM, 7, 3), (OTHER, 7, 9)])
    out = core.on_message([b"c1", req(12, ())], now=0.0)   # [] = every symbol
    assert out is not None and answer(out) == (12, [(SYM, 7, 3), (OTHER, 7, 9), ("BTC/USD", 7, 4)])
    assert core.held == {}


def test_the_answer_carries_the_very_bytes_of_the_sub_path() -> None:
    """The topic and payload frames answered are those given by the publisher, unchanged."""
    core = LatestBooks()
    topic, payload = book_frames(SYM, 1, 1, bid="123.45")
    core.on_book(SYM, 1, 1, topic, payload)
    out = core.on_message([b"c1", req(1)], now=0.0)
    assert out is not None and out[2:] == [topic, payload]


def test_nothing_newer_holds_the_request_until_a_book_is_published() -> None:
    """A client holding the newest waits; the next book answers it, once."""
    core = LatestBooks()
    publish(core, SYM, 7, 3)
    assert core.on_message([b"c1", req(1, have={SYM: (7, 3)})], now=0.0) is None
    assert list(core.held) == [b"c1"]
    assert publish(core, OTHER, 7, 1) == []           # not a wanted symbol
    out = publish(core, SYM, 7, 4)
    assert [answer(m) for m in out] == [(1, [(SYM, 7, 4)])]
    assert publish(core, SYM, 7, 5) == [] and core.held == {}   # one answer per request
    core.check()


def test_another_epoch_is_newer_whatever_its_seq() -> None:
    """After an aggregator restart (new epoch, seq from 1) the client gets the new book."""
    core = LatestBooks()
    publish(core, SYM, 8, 1)
    out = core.on_message([b"c1", req(1, have={SYM: (7, 500)})], now=0.0)
    assert out is not None and answer(out) == (1, [(SYM, 8, 1)])


def test_wait_zero_answers_at_once_and_a_held_request_expires_empty() -> None:
    """``wait`` 0 answers at once; a held request is answered empty when its (capped) wait ends."""
    core = LatestBooks()
    publish(core, SYM, 7, 3)
    out = core.on_message([b"c1", req(1, have={SYM: (7, 3)}, wait=0)], now=0.0)
    assert out is not None and answer(out) == (1, [])
    assert core.on_message([b"c1", req(2, have={SYM: (7, 3)}, wait=2.0)], now=10.0) is None
    assert core.on_message([b"c2", req(3, have={SYM: (7, 3)}, wait=1e9)], now=10.0) is None
    assert core.expire(11.9) == []
    assert [answer(m) for m in core.expire(12.0)] == [(2, [])]
    assert core.expire(10.0 + schema.LATEST_MAX_WAIT - 0.1) == []
    assert [m[0] for m in core.expire(10.0 + schema.LATEST_MAX_WAIT)] == [b"c2"]
    assert core.held == {}
    core.check()


def test_a_later_request_replaces_the_held_one() -> None:
    """A client holds at most one request: the later one is answered, the earlier never."""
    core = LatestBooks()
    publish(core, SYM, 7, 3)
    assert core.on_message([b"c1", req(1, (SYM,), {SYM: (7, 3)})], now=0.0) is None
    assert core.on_message([b"c1", req(2, (OTHER,))], now=0.0) is None
    assert publish(core, SYM, 7, 4) == []
    assert [answer(m) for m in publish(core, OTHER, 7, 1)] == [(2, [(OTHER, 7, 1)])]
    assert core.counters["replaced"] == 1
    core.check()


def test_a_gone_client_leaves_no_state() -> None:
    """Answering a held request frees it; the I/O side reporting the client gone counts it."""
    core = LatestBooks()
    publish(core, SYM, 7, 1)
    for i in range(100):
        assert core.on_message([f"c{i}".encode(), req(i, have={SYM: (7, 1)})], now=0.0) is None
    assert len(core.held) == 100
    out = publish(core, SYM, 7, 2)
    assert len(out) == 100 and core.held == {}
    for m in out:
        core.gone(m[0])
    assert core.counters["gone"] == 100 and core.held == {}
    core.check()


def test_an_envelope_is_echoed_for_req_sockets() -> None:
    """A REQ client's empty delimiter frame comes back before the answer."""
    core = LatestBooks()
    publish(core, SYM, 7, 1)
    out = core.on_message([b"c1", b"", req(5)], now=0.0)
    assert out is not None and out[:2] == [b"c1", b""] and answer(out, envelope=2) == (5, [(SYM, 7, 1)])


@pytest.mark.parametrize("raw,message", [
    (b"\xc1", "bad msgpack"),
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb({"t": "latest"}), "'id' is not an int"),
    (msgpack.packb({"t": "latest", "id": -1}), "'id' is negative"),
    (msgpack.packb({"t": "subscribe", "id": 1}), "unknown request type"),
    (msgpack.packb({"t": "latest", "id": 1, "s": "BTC/USDT"}), "'s' is not a list of symbols"),
    (msgpack.packb({"t": "latest", "id": 1, "s": [SYM] * 1001}), "more than 1000 symbols"),
    (msgpack.packb({"t": "latest", "id": 1, "have": {SYM: 3}}), "'have' of 'BTC/USDT' is not [epoch, seq]"),
    (msgpack.packb({"t": "latest", "id": 1, "wait": -1}), "'wait' is not a number of seconds"),
    (msgpack.packb({"t": "latest", "id": 1, "wait": "5"}), "'wait' is not a number of seconds"),
])
def test_a_malformed_request_gets_an_error_naming_the_key(raw: bytes, message: str) -> None:
    """Every malformed request is answered with an error naming what is wrong, and counted."""
    core = LatestBooks()
    out = core.on_message([b"c1", raw], now=0.0)
    assert out is not None and out[0] == b"c1"
    a = schema.decode_latest_answer(out[1:])
    assert a.kind == "error" and message in a.error, a.error
    assert core.counters["malformed"] == 1 and core.held == {}


def test_held_requests_are_bounded() -> None:
    """Past ``max_waiting`` held requests a further one is refused with an error, not held."""
    core = LatestBooks(max_waiting=2)
    assert core.on_message([b"a", req(1)], now=0.0) is None
    assert core.on_message([b"b", req(1)], now=0.0) is None
    out = core.on_message([b"c", req(9)], now=0.0)
    assert out is not None
    a = schema.decode_latest_answer(out[1:])
    assert (a.kind, a.id) == ("error", 9) and "holds 2 requests" in a.error
    assert sorted(core.held) == [b"a", b"b"]


def test_random_clients_against_a_model() -> None:
    """5000 random steps: every answer is exactly the model's, and ``check()`` holds after each."""
    # steps: books published, requests (any symbols, have, wait), expiries, clients gone
    rnd = random.Random(3)
    core = LatestBooks()
    newest: dict[str, tuple[int, int]] = {}
    held: dict[bytes, tuple[int, tuple[str, ...], dict[str, tuple[int, int]], float]] = {}
    syms = [SYM, OTHER, "BTC/USD"]

    def expected(rid: int, symbols: tuple[str, ...], have: dict[str, tuple[int, int]]) -> tuple[int, list]:
        out = []
        for s in symbols or list(newest):
            if s in newest and (s not in have or have[s][0] != newest[s][0] or newest[s][1] > have[s][1]):
                out.append((s, *newest[s]))
        return rid, out

    now = 0.0
    for step in range(5000):
        now += rnd.random()
        r = rnd.random()
        if r < 0.4:
            s = rnd.choice(syms)
            e, q = newest.get(s, (1, 0))
            e, q = (e + 1, 1) if rnd.random() < 0.02 else (e, q + 1)
            sent = publish(core, s, e, q)
            newest[s] = (e, q)
            want = sorted(expected(h[0], h[1], h[2]) for ident, h in held.items()
                          if (not h[1] or s in h[1]) and expected(h[0], h[1], h[2])[1]
                          and s in [x[0] for x in expected(h[0], h[1], h[2])[1]])
            assert sorted(answer(m) for m in sent) == want, step
            for m in sent:
                held.pop(m[0])
        elif r < 0.8:
            ident = rnd.choice([b"a", b"b", b"c", b"d"])
            symbols = tuple(rnd.sample(syms, rnd.randint(0, 2)))
            have = {s: newest[s] for s in syms if s in newest and rnd.random() < 0.7}
            wait = rnd.choice([0.0, 1.0, 3.0])
            out = core.on_message([ident, req(step, symbols, have, wait)], now)
            held.pop(ident, None)
            exp = expected(step, symbols, have)
            if wait == 0 or exp[1]:
                assert out is not None and answer(out) == exp, step
            else:
                assert out is None
                held[ident] = (step, symbols, have, now + wait)
        elif r < 0.95:
            sent = core.expire(now)
            due = {i for i, h in held.items() if h[3] <= now}
            assert {m[0] for m in sent} == due and all(answer(m)[1] == [] for m in sent), step
            for i in due:
                del held[i]
        else:
            ident = rnd.choice([b"a", b"b", b"c", b"d"])
            core.gone(ident)
            held.pop(ident, None)
        assert set(core.held) == set(held), step
        core.check()


# --- the client core (pure) -------------------------------------------------------------------


def books_answer(rid: int, *books: tuple[str, int, int]) -> list[bytes]:
    frames = [schema.encode_books_header(rid, len(books))]
    for s, e, q in books:
        frames += book_frames(s, e, q)
    return frames


def test_client_core_asks_with_what_it_holds_and_counts_skips_as_conflated() -> None:
    """Requests carry what is held; only the last request's answer ends a wait; jumps are conflated."""
    # wait 0 while fetched books wait to be taken (a refresh); a late answer never brings older books
    c = LatestClient(BookTracker([SYM, OTHER], conflating=True), wait=5.0)
    r1 = schema.decode_latest_request(c.request(now=100.0))
    assert r1 == LatestRequest(1, (SYM, OTHER), {}, 5.0) and c.due == 100.0 + 5.0 + 2.0
    c.on_answer(books_answer(1, (SYM, 7, 3), (OTHER, 7, 9)), received_ns=1)
    assert c.outstanding is None
    b = c.take()
    assert b is not None and (b.symbol, b.seq, b.conflated, b.missed) == (SYM, 3, 0, 0)
    r2 = schema.decode_latest_request(c.request(now=200.0))
    assert r2 == LatestRequest(2, (SYM, OTHER), {SYM: (7, 3), OTHER: (7, 9)}, 0.0) and c.due == 201.0
    assert c.take() is None                                      # waits for the refresh
    c.on_answer(books_answer(1, (OTHER, 7, 10)), received_ns=2)  # a late answer to request 1
    assert c.outstanding == 2 and c.take() is None
    c.on_answer(books_answer(2, (SYM, 7, 8), (OTHER, 7, 9)), received_ns=3)   # never older than held
    got = [(x.symbol, x.seq, x.conflated, x.missed) for x in iter(c.take, None)]
    assert got == [(OTHER, 10, 0, 0), (SYM, 8, 4, 0)]
    assert c.tracker.conflated == 4 and c.tracker.missed == 0


def test_client_core_refused_and_malformed() -> None:
    """An error answering the awaited request raises; malformed answers are counted and dropped."""
    c = LatestClient(BookTracker(SYM, conflating=True))
    c.request(now=0.0)
    c.on_answer([b"\xc1"], received_ns=0)
    c.on_answer([schema.encode_books_header(1, 2), *book_frames(SYM, 1, 1)], received_ns=0)
    c.on_answer(books_answer(7, (OTHER, 1, 1)), received_ns=0)   # not asked for: foreign
    assert (c.tracker.malformed, c.tracker.foreign, c.outstanding) == (2, 1, 1)
    with pytest.raises(SubscriptionRefused, match="holds 2 requests"):
        c.on_answer([schema.encode_latest_error(1, "the publisher already holds 2 requests")], received_ns=0)


def test_answer_decoding_checks_the_frame_count() -> None:
    """An answer whose frames do not match its header's book count is malformed."""
    with pytest.raises(BusError, match="3 frames for 2 books"):
        schema.decode_latest_answer([schema.encode_books_header(1, 2), *book_frames(SYM, 1, 1)])


# --- config -----------------------------------------------------------------------------------


def test_latest_port_is_in_the_port_plan_and_both_shipped_configs() -> None:
    """Both shipped configs serve the latest endpoint on the planned port (50056)."""
    from deploy import ports

    for name in ("bookmux.toml", "demo.toml"):
        c = config.load(REPO / "deploy" / name)
        assert c.publisher.latest_port == ports.PUBLISHER_LATEST == ports.all_ports()["publisher.latest"] == 50056
        assert c.publisher.latest_endpoint == "tcp://127.0.0.1:50056"
    assert len(set(ports.all_ports().values())) == len(ports.all_ports())


@pytest.mark.parametrize("value,needle", [("0", "publisher.latest_port: 0 is not a TCP port"),
                                          ("50052", "publisher.latest_port: 50052 is not a TCP port other than"),
                                          ("'x'", "publisher.latest_port")])
def test_latest_port_errors_name_the_key(value: str, needle: str) -> None:
    """A wrong latest_port is a start-up error naming the key."""
    with pytest.raises(config.ConfigError, match=needle):
        config.load(REPO / "deploy" / "demo.toml", sets=[f"publisher.latest_port={value}"])


# --- the real publisher, fed by a scripted feed (exact seqs) ----------------------------------


class Scripted:
    """A scripted feed -> the real aggregator -> the real publisher with its latest endpoint."""

    def __init__(self, tmp: Path, ps: Any) -> None:
        self.cfg = tmp / "bookmux.toml"
        self.ep = write_config(self.cfg, symbols=[SYM, OTHER], levels=5, down_after=5.0,
                               venues={"alpha": {"stale_after": 10.0}})
        self.latest_port = free_port()
        self.latest = f"tcp://127.0.0.1:{self.latest_port}"
        self.pub = f"tcp://127.0.0.1:{self.ep['pub_port']}"
        self.ctx = zmq.Context()
        self.feed = ScriptedFeed("alpha", self.ep["alpha"]["pub"], self.ep["alpha"]["ctl"], self.ctx)
        self._hb = 0.0
        self.bid = {SYM: 100, OTHER: 10}
        self.ps = ps
        ps.start("aggregator", "services.aggregator", "--config", str(self.cfg))
        self.start_publisher()

    def start_publisher(self) -> None:
        self.ps.start("publisher", "services.publisher", "--config", str(self.cfg),
                      "--latest-port", str(self.latest_port))

    def pump(self) -> None:
        self.feed.pump()
        if time.monotonic() - self._hb > 0.2:
            self._hb = time.monotonic()
            self.feed.heartbeat()

    def move(self, symbol: str = SYM) -> None:
        """One delta that changes the published top of ``symbol``."""
        self.bid[symbol] += 1
        self.feed.delta(symbol, {str(self.bid[symbol]): "1"}, {})

    def stats(self) -> dict[str, Any]:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.latest)
        try:
            s.send(schema.encode_stats_request(1))
            assert s.poll(10_000), "no stats answer"
            return schema.decode_latest_answer(s.recv_multipart()).info
        finally:
            s.close(0)

    def close(self) -> None:
        self.feed.close()
        self.ctx.destroy(linger=0)   # also the sockets a failed test left open


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Scripted]:
    with procs(tmp_path) as ps:
        p = Scripted(tmp_path, ps)
        try:
            p.feed.snap(SYM, {"100": "1"}, {"100000": "1"})
            p.feed.snap(OTHER, {"10": "1"}, {"100000": "1"})
            yield p
        finally:
            p.close()


def newest_seq(sub: Subscriber, pump: Callable[[], None], best_bid: str | None = None) -> int:
    """Drain a plain SUB subscriber until its newest book is live (with ``best_bid`` on top, when
    given: the last move reflected) and nothing more arrives; that book's seq."""
    def done() -> bool:
        more = sub.drain(20)
        m = sub.last
        return (not more and m is not None and bool(m["bids"])
                and (best_bid is None or m["bids"][0][0] == best_bid))
    wait_until(done, timeout=30, pump=pump, what=f"SUB's best bid {best_bid}")
    assert sub.last is not None
    return int(sub.last["seq"])


def until(sub: Any, pred: Callable[[MergedBook], bool], pump: Callable[[], None], what: str) -> MergedBook:
    """The first book of ``sub`` satisfying ``pred`` (pumping the feed meanwhile)."""
    hit: list[MergedBook] = []

    def check() -> bool:
        try:
            b = sub.recv(timeout=0.1)
        except SubscriptionTimeout:
            return False
        if pred(b):
            hit.append(b)
        return bool(hit)
    wait_until(check, timeout=30, pump=pump, what=what)
    return hit[0]


def test_a_stalled_latest_subscriber_reads_the_newest_book_first(scripted: Scripted) -> None:
    """After 200 books it did not read, a latest-only read returns the newest; a plain SUB the oldest."""
    # the newest: the seq a SUB subscriber saw last; the ones between counted as conflated, none missed
    p = scripted
    sub = Subscriber(p.pub, SYM, p.ctx)
    with subscribe(p.latest, SYM, latest_only=True, timeout=30, ctx=p.ctx) as latest, \
            subscribe(p.pub, SYM, timeout=30, ctx=p.ctx) as plain:
        first = until(latest, lambda b: bool(b.bids), p.pump, "a live book")
        assert first.symbol == SYM and first.bids[0].price == D(100) and first.missed == 0
        until(plain, lambda b: b.seq >= first.seq, p.pump, "the plain subscription there too")
        seen, conflated_before = first.seq, latest.conflated
        newest_seq(sub, p.pump, "100")
        plain_before = plain.received
        for _ in range(200):         # 200 books published while neither subscription reads
            p.move()
            wait_until(lambda: bool(sub.drain(20)) and sub.last is not None
                       and sub.last["bids"][0][0] == str(p.bid[SYM]), timeout=30, pump=p.pump, what="the move")
        newest = newest_seq(sub, p.pump, str(p.bid[SYM]))
        assert newest >= seen + 200
        b = latest.recv()
        assert (b.seq, b.bids[0].price, b.conflated, b.missed) == (newest, D(p.bid[SYM]), newest - seen - 1, 0)
        assert (latest.conflated - conflated_before, latest.missed) == (newest - seen - 1, 0)
        old = plain.recv()
        assert old.seq < newest and plain.received == plain_before + 1
        REPORT.append(f"scripted: after 200 books, latest-only read seq {b.seq} (newest {newest}), "
                      f"a plain SUB read seq {old.seq} first")
        with pytest.raises(SubscriptionTimeout):   # nothing newer: the read waits, then times out
            latest.recv(timeout=0.3)
        p.move()
        b2 = latest.recv()
        assert (b2.seq, b2.conflated) == (newest + 1, 0)
    sub.sock.close(0)


def test_asyncio_flavour_latest_only(scripted: Scripted) -> None:
    """``asubscribe(..., latest_only=True)`` for every symbol: each symbol once, with its newest book."""
    p = scripted
    sub = {s: Subscriber(p.pub, s, p.ctx) for s in (SYM, OTHER)}
    for s in sub:
        newest_seq(sub[s], p.pump)
    for _ in range(50):
        for s in (SYM, OTHER):
            p.move(s)
            wait_until(lambda s=s: bool(sub[s].drain(20)) and sub[s].last is not None
                       and sub[s].last["bids"][0][0] == str(p.bid[s]), timeout=30, pump=p.pump, what="the move")
    want = {s: newest_seq(sub[s], p.pump, str(p.bid[s])) for s in (SYM, OTHER)}

    async def read() -> list[tuple[str, int]]:
        async with asubscribe(p.latest, None, latest_only=True, timeout=30, ctx=p.ctx) as a:
            return [(b.symbol, b.seq) for b in [await a.recv(), await a.recv()]]

    assert sorted(asyncio.run(read())) == sorted(want.items())
    for s in sub.values():
        s.sock.close(0)


def test_disconnected_and_unread_clients_hold_nothing(scripted: Scripted) -> None:
    """Disconnected clients are forgotten, one that asks and never reads only loses answers."""
    # 50 clients hold a request and disconnect: nothing held once their wait ends, 50 counted gone;
    # one asks 1000 times and never reads: at most its answer queue, the rest counted unread
    p = scripted
    sub = Subscriber(p.pub, SYM, p.ctx)
    newest_seq(sub, p.pump)                      # a live book, nothing more coming
    sub.sock.close(0)
    held = p.stats()["books"][SYM]
    socks = []
    for i in range(50):
        s = p.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(p.latest)
        s.send(req(i, (SYM,), {SYM: tuple(held)}, wait=5.0))
        socks.append(s)
    wait_until(lambda: p.stats()["waiting"] == 50, timeout=30, pump=p.pump, what="50 held requests")
    for s in socks:
        s.close(0)
    greedy = p.ctx.socket(zmq.DEALER)
    greedy.setsockopt(zmq.LINGER, 0)
    greedy.connect(p.latest)
    for i in range(1000):
        greedy.send(req(i, (SYM,), wait=0))
    wait_until(lambda: p.stats()["waiting"] == 0, timeout=30, pump=p.pump, what="held requests expired")
    st = p.stats()["counters"]
    REPORT.append(f"disconnect: counters {st}")
    assert st["latest_gone"] == 50
    wait_until(lambda: p.stats()["counters"].get("latest_requests", 0) >= 1050, timeout=30, pump=p.pump,
               what="the greedy client's requests read")
    assert p.stats()["counters"]["latest_unread"] > 0
    with subscribe(p.latest, SYM, latest_only=True, timeout=30, ctx=p.ctx) as latest:
        assert latest.recv().seq == p.stats()["books"][SYM][1]    # the others are served as before
    greedy.close(0)


def test_curve_latest_endpoint_serves_only_allowed_keys(tmp_path: Path) -> None:
    """With CURVE on, only the allowed subscriber key gets books from the latest endpoint."""
    # the real Publisher in-process, its steps driven by a thread; a stranger's key and a plain
    # client get nothing
    import zmq.auth

    from common import security
    from services.publisher.service import Publisher

    keys = tmp_path / "keys"
    security.make_keys(keys)
    zmq.auth.create_certificates(str(tmp_path), "stranger")
    path = tmp_path / "bookmux.toml"
    write_config(path, symbols=[SYM], levels=5, venues={"alpha": {}},
                 extra=f'[security]\ncurve = true\nkeys_dir = "{keys}"\n')
    port = free_port()
    path.write_text(path.read_text().replace("[publisher]\n", f"[publisher]\nlatest_port = {port}\n", 1))
    ctx = zmq.Context()
    pub = Publisher(config.load(path), levels=5, ctx=ctx)
    stop = threading.Event()

    def serve() -> None:        # the publisher's sockets are used by this thread only
        for seq in (1, 2, 3):
            pub.on_snapshot(book_frames(SYM, 9, seq, bid=str(100 + seq)))
        while not stop.is_set():
            if pub.latest_sock is not None and pub.latest_sock.poll(50):
                pub.on_latest(time.monotonic())
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = keys / "server.key"
    allowed = subscribe(endpoint, SYM, latest_only=True, ctx=ctx,
                        curve=security_keys(server, keys / "subscriber.key_secret"))
    stranger = subscribe(endpoint, SYM, latest_only=True, ctx=ctx,
                         curve=security_keys(server, tmp_path / "stranger.key_secret"))
    plain = subscribe(endpoint, SYM, latest_only=True, ctx=ctx)
    try:
        b = allowed.recv(timeout=20)
        assert (b.seq, b.bids[0].price, b.conflated) == (3, D(103), 0)
        for s in (stranger, plain):
            with pytest.raises(SubscriptionTimeout):
                s.recv(timeout=0.5)
            assert s.received == 0
    finally:
        stop.set()
        t.join(10)
        for s in (allowed, stranger, plain):
            s.close()
        pub.close()
        ctx.destroy(linger=0)


def security_keys(server: Path, client: Path) -> Any:
    from common.subscriber import CurveKeys

    return CurveKeys.from_files(server, client)


def test_a_latest_subscription_goes_on_across_a_publisher_restart(scripted: Scripted) -> None:
    """Across a publisher restart, a latest-only subscription reads on: the newest book again."""
    # reads while it is down time out; a request lost with the old publisher is asked again
    p = scripted
    sub = Subscriber(p.pub, SYM, p.ctx)
    with subscribe(p.latest, SYM, latest_only=True, timeout=60, ctx=p.ctx) as latest:
        until(latest, lambda b: bool(b.bids), p.pump, "a live book")
        p.ps.kill("publisher")
        with pytest.raises(SubscriptionTimeout):
            latest.recv(timeout=0.3)
        p.start_publisher()
        p.move()
        b = until(latest, lambda b: b.bids[0].price == D(p.bid[SYM]), p.pump, "the moved book after the restart")
        assert b.missed == 0
        newest = newest_seq(sub, p.pump, str(p.bid[SYM]))   # the restarted publisher's republish may follow
        if b.seq < newest:
            b = until(latest, lambda b: b.seq >= newest, p.pump, "the newest")
        assert b.seq == newest
    sub.sock.close(0)


def test_asyncio_latest_timeout_with_no_publisher() -> None:
    """An asyncio latest-only read with nothing listening times out, and may be retried."""
    ctx = zmq.Context()

    async def read() -> int:
        timeouts = 0
        async with asubscribe(f"tcp://127.0.0.1:{free_port()}", SYM, latest_only=True, ctx=ctx) as a:
            for _ in range(3):
                with pytest.raises(SubscriptionTimeout):
                    await a.recv(timeout=0.1)
                timeouts += 1
        return timeouts

    try:
        assert asyncio.run(read()) == 3
    finally:
        ctx.destroy(linger=0)


# --- the whole pipeline on the simulator at 10x traffic ---------------------------------------


class TimedSubscriber(Subscriber):
    """A plain SUB subscriber that notes each book's local receive time (``_rx``, ns)."""

    def drain(self, timeout_ms: int = 50) -> list[dict[str, Any]]:
        got = super().drain(timeout_ms)
        now = time.time_ns()
        for m in got:
            m["_rx"] = now
        return got


class LatestLoad(threading.Thread):
    """``n`` latest-only clients asking as fast as answers come (raw DEALERs, no decoding), in
    one thread: load on the publisher's latest endpoint, counted per client."""

    def __init__(self, ctx: zmq.Context, endpoint: str, n: int, symbols: list[str]) -> None:
        super().__init__(daemon=True)
        self.socks = []
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            self.socks.append(s)
        self.symbols = symbols
        self.answers = [0] * n
        self.books = [0] * n
        self.stop = threading.Event()

    def run(self) -> None:
        poller = zmq.Poller()
        have: list[dict[str, tuple[int, int]]] = [{} for _ in self.socks]
        for i, s in enumerate(self.socks):
            poller.register(s, zmq.POLLIN)
            s.send(req(0, (self.symbols[i % len(self.symbols)],), wait=1.0))
        index = {s: i for i, s in enumerate(self.socks)}
        while not self.stop.is_set():
            for s, _ev in poller.poll(200):
                i = index[s]
                a = schema.decode_latest_answer(s.recv_multipart())
                self.answers[i] += 1
                for _t, payload in a.books:
                    m = msgpack.unpackb(payload)
                    have[i][m["symbol"]] = (m["epoch"], m["seq"])
                    self.books[i] += 1
                s.send(req(a.id + 1, (self.symbols[i % len(self.symbols)],), have[i], wait=1.0))
        for s in self.socks:
            s.close(0)


def seq_gaps(received: list[dict[str, Any]]) -> int:
    """Snapshots a plain SUB subscriber lost (seq jumps within an epoch)."""
    lost = 0
    for a, b in itertools.pairwise(received):
        if a["epoch"] == b["epoch"] and b["seq"] != a["seq"] + 1:
            lost += b["seq"] - a["seq"] - 1
    return lost


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def test_simulator_10x_stalled_latest_subscriber_gets_the_newest_book(tmp_path: Path) -> None:
    """At 10x traffic, a latest-only subscriber stalled 10 s reads the newest book first."""
    # Under traffic: a book of at least the seq a SUB subscriber already saw (the same bytes); after
    # the market pauses: exactly the newest. Meanwhile 20 latest-only clients read flat out and one
    # asks and never reads: the SUB subscribers lose nothing (contiguous seqs), the publisher misses
    # nothing from the aggregator, nothing stays held once clients leave. Ages, the SUB latency and
    # a stalled plain SUB's backlog are reported (-s).
    demo_rate = float(config.load(REPO / "deploy" / "demo.toml").simulator["rate"])
    syms = [SYM, OTHER]
    pl = SimPipeline(tmp_path, {"binance": {"kind": "binance", "api": "spot"},
                                "bitstamp": {"kind": "bitstamp", "api": "v2"}}, syms, rate=10 * demo_rate,
                     stale_after=60.0)   # no venue goes stale while the market is paused below
    latest_port = free_port()
    pl.cfg.write_text(pl.cfg.read_text().replace("[publisher]\n", f"[publisher]\nlatest_port = {latest_port}\n", 1))
    endpoint = f"tcp://127.0.0.1:{latest_port}"
    for s in syms:
        pl.subs[s].sock.close(0)
        pl.subs[s] = TimedSubscriber(f"tcp://127.0.0.1:{pl.ep['pub_port']}", s, pl.ctx)
    load = None
    try:
        pl.start()
        wait_until(pl.all_live, timeout=60, pump=pl.drain, what="all venues live")
        t0 = time.monotonic()
        marks = pl.marks()
        wait_until(lambda: time.monotonic() - t0 > 3, timeout=10, pump=pl.drain, what="3 s of traffic")
        rate = sum(len(pl.subs[s].received) - marks[s] for s in syms) / (time.monotonic() - t0)
        quiet_lat = [(m["_rx"] - m["ts"]) / 1e6 for s in syms for m in pl.subs[s].received[marks[s]:]]
        load = LatestLoad(pl.ctx, endpoint, 20, syms)
        load.start()
        never = pl.ctx.socket(zmq.DEALER)                   # asks and never reads
        never.setsockopt(zmq.LINGER, 0)
        never.connect(endpoint)
        for i in range(100):
            never.send(req(i, tuple(syms), wait=0))
        latest = subscribe(endpoint, syms, latest_only=True, timeout=30, ctx=pl.ctx)
        plain = subscribe(f"tcp://127.0.0.1:{pl.ep['pub_port']}", syms, timeout=30, ctx=pl.ctx)
        got = {b.symbol for b in (latest.recv(), latest.recv())}
        assert got == set(syms)
        plain.recv()
        marks = pl.marks()

        # Stall 10 s under traffic (the SUB view keeps draining meanwhile).
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 >= 10, timeout=20, pump=pl.drain, what="10 s stall")
        pl.drain()
        before = {s: pl.subs[s].received[-1]["seq"] for s in syms}
        firsts: dict[str, MergedBook] = {}
        while len(firsts) < 2:
            b = latest.recv()
            firsts.setdefault(b.symbol, b)
        now_ns = time.time_ns()
        for s, b in firsts.items():
            assert b.seq >= before[s], (s, b.seq, before[s])
            wait_until(lambda s=s, b=b: pl.subs[s].received[-1]["seq"] >= b.seq, timeout=30, pump=pl.drain,
                       what="the SUB view reaches the book read")
            same = [m for m in pl.subs[s].received if m["seq"] == b.seq and m["epoch"] == b.epoch]
            assert len(same) == 1 and same[0]["bids"][0][0] == str(b.bids[0].price) and same[0]["ts"] == b.ts
            REPORT.append(f"10x stalled 10 s: {s} latest-only first book seq {b.seq} (SUB had seen {before[s]}), "
                          f"age {(now_ns - b.ts) / 1e6:.1f} ms since its input, {b.conflated} conflated")
        old = plain.recv()
        newest_then = pl.subs[old.symbol].received[-1]["seq"]
        REPORT.append(f"10x stalled 10 s: a plain SUB read {old.symbol} seq {old.seq} first "
                      f"(newest then {newest_then}), age {(time.time_ns() - old.ts) / 1e9:.1f} s")

        # Exact: stall again under traffic, pause the market, wait until the SUB view is final.
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 >= 10, timeout=20, pump=pl.drain, what="10 s stall")
        pl.sim.get("/pause")
        try:
            quiet: list[dict[str, int]] = []

            def final() -> bool:     # the publisher's newest equals what the SUB saw, twice in a row
                pl.drain()
                st = {s: msgpack.unpackb(stats(pl.ctx, endpoint))["books"][s][1] for s in syms}
                quiet.append(st)
                return (len(quiet) > 1 and quiet[-1] == quiet[-2]
                        and all(pl.subs[s].received[-1]["seq"] == st[s] for s in syms))
            wait_until(final, timeout=30, what="the pipeline quiet")
            firsts = {}
            while len(firsts) < 2:
                b = latest.recv()
                firsts.setdefault(b.symbol, b)
            assert {s: b.seq for s, b in firsts.items()} == {s: pl.subs[s].received[-1]["seq"] for s in syms}
        finally:
            pl.sim.get("/resume")
        assert latest.missed == 0 and latest.conflated > 0

        pl.drain()
        load.stop.set()
        load.join(10)                              # its 20 clients disconnect: nothing of them stays
        wait_until(lambda: msgpack.unpackb(stats(pl.ctx, endpoint))["waiting"] == 0, timeout=60,
                   pump=pl.drain, what="no request held after the clients left")
        st = msgpack.unpackb(stats(pl.ctx, endpoint))["counters"]
        lat = [(m["_rx"] - m["ts"]) / 1e6 for s in syms for m in pl.subs[s].received[marks[s]:] if "_rx" in m]
        REPORT.append(f"10x: ~{rate:.0f} books/s published; 20 latest-only clients got {sum(load.books)} books "
                      f"in {sum(load.answers)} answers (min per client {min(load.answers)}); publisher counters {st}")
        REPORT.append(f"10x: SUB latency input->receive p50/p99 {pct(quiet_lat, 0.5):.1f}/"
                      f"{pct(quiet_lat, 0.99):.1f} ms without latest-only clients, "
                      f"{pct(lat, 0.5):.1f}/{pct(lat, 0.99):.1f} ms with them")
        assert min(load.answers) > 0
        for s in syms:
            assert seq_gaps(pl.subs[s].received) == 0, s
        assert st.get("upstream_gaps", 0) == 0
        latest.close()
        plain.close()
        never.close(0)
    finally:
        if load is not None and load.is_alive():
            load.stop.set()
            load.join(10)
        pl.close()


def stats(ctx: zmq.Context, endpoint: str) -> bytes:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(schema.encode_stats_request(1))
        assert s.poll(10_000), "no stats answer"
        return bytes(s.recv())
    finally:
        s.close(0)


def test_report() -> None:
    """Print what the tests above measured (-s)."""
    for line in REPORT:
        print(line)
