"""Hostile peers on every receiving socket, over real processes: garbage frames, odd subscriptions
and messages over MAXMSGSIZE. Each is a counted drop or an error reply; the process keeps serving
and the published book stays the reference merge of the valid messages.

Sockets: the aggregator's feed SUB (via a scripted feed PUB), query ROUTER, ctl ROUTER and XPUB;
the publisher's XPUB and SUB (via a fake aggregator); a real feed process's ctl ROUTER and PUB.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from common import query, schema
from common.schema import BookMsg, StatusMsg
from tests.fuzz_corpus.generate import POS
from tests.harness import (
    Disconnects,
    ScriptedFeed,
    Subscriber,
    procs,
    raw_socket,
    set_top_level,
    wait_until,
    write_config,
)
from tests.test_fuzz_parsers import CORPUS
from tests.test_pipeline import DUST, book_of, matches, pump_all

pytestmark = pytest.mark.slow

SYM = "BTC/USDT"
TOPIC = b"md.alpha.BTC/USDT"
#: MAXMSGSIZE of the aggregator's and publisher's SUB/DEALER in these tests (config max_msg_size).
BUS_LIMIT = 1 << 20


@pytest.fixture
def pipeline(tmp_path: Path):
    """Aggregator + publisher processes, scripted venues alpha and beta, one subscriber."""
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=[SYM], levels=5, down_after=2.0, depletion={SYM: ["1"]},
                      venues={"alpha": {"stale_after": 5.0},
                              "beta": {"stale_after": 5.0, "dust": {SYM: ("0.05", "0")}}})
    set_top_level(cfg, f"max_msg_size = {BUS_LIMIT}")
    ctx = zmq.Context()
    feeds = [ScriptedFeed(v, ep[v]["pub"], ep[v]["ctl"], ctx) for v in ("alpha", "beta")]
    sub = Subscriber(f"tcp://127.0.0.1:{ep['pub_port']}", SYM, ctx)
    with procs(tmp_path) as ps:
        ps.start("aggregator", "services.aggregator", "--config", str(cfg))
        ps.start("publisher", "services.publisher", "--config", str(cfg))
        pump = pump_all(feeds, sub)
        rng = random.Random(11)
        for i, f in enumerate(feeds):
            f.snap(SYM, *book_of(i, 43000 + i, rng))
        wait_until(lambda: matches(sub, feeds, DUST), timeout=20, pump=pump, what="first merged snapshot")
        yield feeds, sub, ps, ep, ctx, pump
    sub.sock.close(0)
    for f in feeds:
        f.close()
    ctx.destroy(0)


def alive(ps: Any, *names: str) -> bool:
    return all(ps.procs[n].poll() is None for n in names)


def random_delta(f: ScriptedFeed, rng: random.Random) -> None:
    b, a = f.books[SYM]
    side = rng.choice([0, 1])
    book = b if side == 0 else a
    if book and rng.random() < 0.3:
        upd = {str(rng.choice(list(book))): "0"}
    else:
        base = 43000 - rng.randint(1, 20) if side == 0 else 43000 + rng.randint(2, 20)
        upd = {f"{base}.{rng.randint(0, 9)}": rng.choice(["0.01", "0.5", "1.25", "3"])}
    f.delta(SYM, upd if side == 0 else {}, upd if side == 1 else {})


def garbage_bus_messages(alpha: ScriptedFeed) -> list[list[bytes]]:
    """Everything the aggregator must drop without touching a book: the bus corpus, plus valid-looking
    messages for a venue or symbol it does not carry, a duplicate (negative seq), wrong frame counts."""
    out: list[list[bytes]] = []
    for f in sorted((CORPUS / "bus_payload").iterdir()):
        out.append([TOPIC, f.read_bytes()])
    for f in sorted((CORPUS / "bus_frames").iterdir()):
        out.append(msgpack.unpackb(f.read_bytes(), raw=True))
    live = BookMsg("delta", "alpha", SYM, alpha.sess, 1, 0, 0, [], [])
    payload = schema.feed_payload(live)     # the schema-2 array: positions as in common/schema.py

    def with_(**at: Any) -> list[bytes]:
        m = list(payload)
        for k, v in at.items():
            m[POS[k]] = v
        return [TOPIC, schema.pack(m)]

    out += [
        schema.encode_feed(BookMsg("delta", "gamma", SYM, 1, 1, 0, 0, [], [])),           # unknown venue
        schema.encode_feed(BookMsg("delta", "alpha", "ETH/USDT", alpha.sess, 1, 0, 0, [], [])),  # symbol
        with_(seq=-5, b=[["43100", "9"]]),                                                # negative seq: dup
        with_(b=[["-43100", "9"]]),                                                       # negative price
        with_(b=[["43100", "1e400"]]),                                                    # huge amount
        with_(t="trade"),                                                                 # unknown type
        with_(seq=1e30),                                                                  # seq as a float
        with_(ver=1),                                                                     # schema 1
        [TOPIC, schema.pack({"ver": 1, "t": "delta", "v": "alpha", "sess": alpha.sess, "s": SYM, "seq": 1,
                             "ets": 0, "rts": 0, "b": [["43100", "9"]], "a": []})],    # a schema-1 map
        [TOPIC, schema.pack([*payload, ["", ""], "extra"])],                              # a position too many
        [TOPIC, schema.pack(payload[:-1])],                                               # one too few
        [TOPIC], [TOPIC, b"", b""], [b""], [TOPIC, b"\x00" * 1000],
        with_(seq=2**64 - 1, v="alpha\x00"),
    ]
    return out


def test_garbage_on_the_feed_bus_is_dropped_and_the_book_stays_right(pipeline) -> None:
    """(a) garbage interleaved with valid deltas on a feed's PUB: the aggregator stays up, counts
    and logs the drops, and the published book equals the reference of the valid messages."""
    feeds, sub, ps, _, _, pump = pipeline
    alpha = feeds[0]
    rng = random.Random(12)
    garbage = garbage_bus_messages(alpha)
    for step in range(240):
        random_delta(rng.choice(feeds), rng)
        alpha.pub.send_multipart(garbage[step % len(garbage)])
        if step % 20 == 0:
            pump()
    wait_until(lambda: matches(sub, feeds, DUST) and sub.last["venues"] == {"alpha": "live", "beta": "live"},
               timeout=20, pump=pump, what="book = reference of the valid messages")
    assert alive(ps, "aggregator", "publisher")
    log = ps.log("aggregator")
    assert "dropped a malformed bus message (10 so far)" in log, "the drops are counted and logged"
    assert "gap" not in log, "no valid message was lost or misordered by the garbage"


@pytest.mark.parametrize("bad", ["foreign_session", "huge_seq"])
def test_one_unfollowable_delta_does_not_lock_a_venue_out(pipeline, bad: str) -> None:
    feeds, sub, _ps, _, _, pump = pipeline
    alpha = feeds[0]
    sess, seq = (alpha.sess + 1, 1) if bad == "foreign_session" else (alpha.sess, 2**62)
    alpha.pub.send_multipart(schema.encode_feed(BookMsg("delta", "alpha", SYM, sess, seq, 0, 0,
                                                        [], [])))
    rng = random.Random(13)
    for _ in range(20):
        random_delta(alpha, rng)
    wait_until(lambda: matches(sub, feeds, DUST) and sub.last["venues"]["alpha"] == "live",
               timeout=6, pump=pump, what="alpha live again with the right book")


def test_tiny_exponent_on_the_bus_does_not_kill_the_aggregator(pipeline) -> None:
    feeds, _sub, ps, _, _, pump = pipeline
    alpha = feeds[0]
    best_ask = min(alpha.books[SYM][1])
    m = schema.feed_payload(BookMsg("delta", "alpha", SYM, alpha.sess, alpha._next(SYM), 0, 0, [], []))
    m[POS["a"]] = [[str(best_ask - 1), "1E-999999999999999999"]]
    alpha.pub.send_multipart([TOPIC, schema.pack(m)])
    time.sleep(0.5)
    pump()
    assert alive(ps, "aggregator")


def dealer_roundtrip(sock: zmq.Socket, frames: list[bytes], timeout_ms: int = 5000) -> list[bytes]:
    sock.send_multipart(frames)
    assert sock.poll(timeout_ms), "no reply"
    return sock.recv_multipart()


def test_garbage_to_query_ctl_and_xpub_then_oversized(pipeline) -> None:
    """(b) garbage to the query ROUTER (error replies), the aggregator ctl ROUTER and both XPUBs
    (dropped); (c) a message over each socket's MAXMSGSIZE disconnects that peer only."""
    _feeds, sub, ps, ep, ctx, pump = pipeline
    q = raw_socket(ctx, zmq.DEALER, ep["query"])
    try:
        bodies = [f.read_bytes() for f in sorted((CORPUS / "query_request").iterdir())]
        bodies += [b"", b"\xc1", msgpack.packb({"op": "deplete", "symbol": "NOPE/X", "side": "buy",
                                                  "quantity": "1"}), b"\x00" * 60000]
        for body in bodies:
            reply = query.decode_reply(dealer_roundtrip(q, [body])[-1])
            assert not reply.ok and reply.error, body[:40]
        for frames in ([b"a", b"b"], [b"", b"", b""], [b"x"] * 50):
            reply = query.decode_reply(dealer_roundtrip(q, frames)[-1])
            assert not reply.ok
        ok = query.decode_reply(dealer_roundtrip(q, [query.encode_request(SYM, "buy", quantity="1")])[-1])
        assert ok.ok, ok.error
    finally:
        q.close(0)

    # aggregator ctl: garbage is dropped (no reply by design); a valid republish still works
    ctl = raw_socket(ctx, zmq.DEALER, ep["agg_ctl"])
    for f in sorted((CORPUS / "snapreq").iterdir()):
        ctl.send(f.read_bytes())
    ctl.send_multipart([b"x"] * 20)
    # XPUBs: odd subscribe frames
    xs_agg = raw_socket(ctx, zmq.XSUB, ep["agg_pub"])
    xs_pub = raw_socket(ctx, zmq.XSUB, f"tcp://127.0.0.1:{ep['pub_port']}")
    odd = [b"", b"\x01", b"\x00", b"\x02book.", b"\x01book.\xff\xfe", b"\x01book." + b"\x00" * 3000,
           b"\x01" + bytes(range(256)), b"\x01book.NOPE/X", b"\x00book.BTC/USDT"]
    for frame in odd:
        xs_agg.send(frame)
        xs_pub.send(frame)
    pump()
    before = sub.last["seq"]
    ctl.send(schema.encode_snapshot_request([SYM]))
    wait_until(lambda: sub.last["seq"] > before, timeout=10, pump=pump, what="republish after garbage")
    assert alive(ps, "aggregator", "publisher")

    # (c) oversized: query and ctl ROUTERs (64 KiB), both XPUBs (4096 B)
    cases = [(zmq.DEALER, ep["query"], [b"\x00" * ((1 << 16) + 1)]),
             (zmq.DEALER, ep["agg_ctl"], [b"\x00" * ((1 << 16) + 1)]),
             (zmq.XSUB, ep["agg_pub"], [b"\x01book." + b"x" * 5000]),
             (zmq.XSUB, f"tcp://127.0.0.1:{ep['pub_port']}", [b"\x01book." + b"x" * 5000])]
    for kind, endpoint, frames in cases:
        s = raw_socket(ctx, kind, endpoint)
        d = Disconnects(s)
        try:
            time.sleep(0.1)
            s.send_multipart(frames)
            wait_until(lambda d=d: d.poll() > 0, timeout=10, what=f"{endpoint} drops an oversized peer")
        finally:
            d.close()
            s.close(0)
    q = raw_socket(ctx, zmq.DEALER, ep["query"])
    try:
        assert query.decode_reply(dealer_roundtrip(q, [query.encode_request(SYM, "sell", quantity="2")])[-1]).ok
    finally:
        q.close(0)
    before = sub.last["seq"]
    ctl.send(schema.encode_snapshot_request([SYM]))
    wait_until(lambda: sub.last["seq"] > before, timeout=10, pump=pump, what="ctl still serves")
    late = Subscriber(f"tcp://127.0.0.1:{ep['pub_port']}", SYM, ctx)
    try:
        wait_until(lambda: bool(late.drain(20)), timeout=10, pump=pump, what="a new subscriber still served")
    finally:
        late.sock.close(0)
    ctl.close(0)
    xs_agg.close(0)
    xs_pub.close(0)
    assert alive(ps, "aggregator", "publisher")


def send_oversized_feed_message(alpha: ScriptedFeed, pump: Any) -> None:
    d = Disconnects(alpha.pub)
    try:
        alpha.pub.send_multipart([TOPIC, b"\x00" * (BUS_LIMIT + 1)])
        wait_until(lambda: d.poll() > 0, timeout=10, pump=pump, what="aggregator drops the oversized feed")
    finally:
        d.close()


def test_oversized_feed_message_cuts_that_feed_off_then_it_is_redialled(pipeline) -> None:
    """(c) a feed PUB message over the aggregator's MAXMSGSIZE (config max_msg_size): ZeroMQ drops
    that connection and would never re-dial it by itself; the aggregator sees the disconnect, marks
    that venue down at once (its levels leave the book, the other venue goes on), re-dials with
    backoff, resyncs it by snapshot, and the book equals the reference again."""
    feeds, sub, ps, _, _, pump = pipeline
    alpha, beta = feeds
    mark = len(sub.received)
    send_oversized_feed_message(alpha, pump)
    rng = random.Random(14)

    def seen_down() -> bool:
        return any(m["venues"]["alpha"] == "down" for m in sub.received[mark:])

    deadline = time.monotonic() + 15
    while not seen_down():
        assert time.monotonic() < deadline, "alpha never went down"
        random_delta(beta, rng)
        pump()
        time.sleep(0.02)
    for m in sub.received[mark:]:
        if m["venues"]["alpha"] != "live":
            assert all(lv[2] == "beta" for lv in m["bids"] + m["asks"])
    deadline = time.monotonic() + 15
    while not (matches(sub, feeds, DUST) and sub.last["venues"] == {"alpha": "live", "beta": "live"}):
        assert time.monotonic() < deadline, "alpha never came back"
        random_delta(alpha, rng)
        pump()
        time.sleep(0.05)
    assert alive(ps, "aggregator", "publisher")
    assert "connection to the feed" in ps.log("aggregator")


# --- a real feed process: ctl ROUTER and PUB ----------------------------------------------------


def test_feed_ctl_and_pub_garbage_and_oversized(tmp_path: Path) -> None:
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=[SYM], venues={"binance": {"kind": "binance", "stale_after": 5.0}})
    ctx = zmq.Context()
    with procs(tmp_path) as ps:
        ps.start("feed", "services.feed_binance", "--config", str(cfg), "--venue", "binance")
        c = raw_socket(ctx, zmq.DEALER, ep["binance"]["ctl"])
        try:
            valid = schema.encode_snapshot_request([SYM])
            wait_until(lambda: (c.send(valid), c.poll(200))[1] != 0, timeout=20, what="feed ctl up")
            while c.poll(500):    # the replies to every try above
                c.recv_multipart()
            for f in sorted((CORPUS / "snapreq").iterdir()):
                c.send(f.read_bytes())
            c.send_multipart([b"x"] * 10)   # too many frames for a request
            c.send(b"\x00" * 60000)
            replies = []
            while c.poll(1000):
                replies.append(c.recv_multipart())
            # dup_symbols (500 x BTC/USDT) is answered once; unknown_symbols with three "down"
            assert sorted(len(r) for r in replies) == [1, 3], [len(r) for r in replies]
            for r in replies:
                for raw in r:
                    assert isinstance(schema.decode_feed_payload(schema.unpack(raw)), StatusMsg)
            # oversized request (> 64 KiB): this peer is disconnected, others are served
            big = raw_socket(ctx, zmq.DEALER, ep["binance"]["ctl"])
            d = Disconnects(big)
            big.send(b"\x00" * ((1 << 16) + 1))
            wait_until(lambda: d.poll() > 0, timeout=10, what="feed ctl drops the oversized peer")
            d.close()
            big.close(0)
            # a subscription over the PUB's 4096 B: disconnected too
            xs = raw_socket(ctx, zmq.XSUB, ep["binance"]["pub"])
            d = Disconnects(xs)
            time.sleep(0.1)
            xs.send(b"\x01md." + b"x" * 5000)
            wait_until(lambda: d.poll() > 0, timeout=10, what="feed PUB drops the oversized subscriber")
            d.close()
            xs.close(0)
            reply = dealer_roundtrip(c, [valid])
            assert isinstance(schema.decode_feed_payload(schema.unpack(reply[-1])), StatusMsg)
        finally:
            c.close(0)
        assert ps.procs["feed"].poll() is None
        wait_until(lambda: "pub peer" in ps.log("feed") and "ctl peer" in ps.log("feed"), timeout=10,
                   what="disconnects logged")
        ps.kill("feed", signal.SIGTERM)
        log = ps.log("feed")
    ctx.destroy(0)
    assert "bad snapshot request dropped" in log
    stopped = next(line for line in log.splitlines() if "feed stopped; counters" in line)
    assert "'ctl_disconnects'" in stopped and "'pub_disconnects'" in stopped and "'ctl_bad_request'" in stopped


# --- the publisher alone, behind a fake aggregator ----------------------------------------------


@pytest.fixture
def publisher_alone(tmp_path: Path):
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=[SYM], venues={"alpha": {}})
    set_top_level(cfg, f"max_msg_size = {BUS_LIMIT}")
    ctx = zmq.Context()
    agg = ctx.socket(zmq.XPUB)
    agg.setsockopt(zmq.LINGER, 0)
    agg.bind(ep["agg_pub"])
    agg_ctl = raw_socket(ctx, zmq.ROUTER, ep["agg_ctl"], bind=True)
    sub = Subscriber(f"tcp://127.0.0.1:{ep['pub_port']}", SYM, ctx)
    with procs(tmp_path) as ps:
        ps.start("publisher", "services.publisher", "--config", str(cfg))
        assert agg.poll(20000), "publisher never subscribed"
        agg.recv()
        seq = [0]

        def book(**extra: Any) -> list[bytes]:
            seq[0] += 1
            m = {"symbol": SYM, "epoch": 1, "seq": seq[0], "ts": 1, "spread": "1", "bids": [["1", "1", "alpha"]],
                 "asks": [["2", "1", "alpha"]], "venues": {"alpha": "live"}, **extra}
            return [b"book." + SYM.encode(), schema.pack(m)]

        def served() -> bool:
            agg.send_multipart(book())
            sub.drain(50)
            return sub.last is not None and sub.last["seq"] == seq[0]

        wait_until(served, timeout=20, what="publisher forwards")
        yield agg, sub, ps, book, served
    sub.sock.close(0)
    agg.close(0)
    agg_ctl.close(0)
    ctx.destroy(0)


def send_oversized_snapshot(agg: zmq.Socket) -> None:
    d = Disconnects(agg)
    try:
        agg.send_multipart([b"book." + SYM.encode(), b"\x00" * (BUS_LIMIT + 1)])
        wait_until(lambda: d.poll() > 0, timeout=10, what="publisher drops the oversized aggregator message")
    finally:
        d.close()


def test_publisher_survives_an_oversized_snapshot(publisher_alone) -> None:
    agg, _sub, ps, _book, _served = publisher_alone
    send_oversized_snapshot(agg)
    time.sleep(0.3)
    assert ps.procs["publisher"].poll() is None


def test_publisher_reconnects_after_an_oversized_snapshot(publisher_alone) -> None:
    agg, _sub, _ps, _book, served = publisher_alone
    send_oversized_snapshot(agg)
    wait_until(served, timeout=4, what="publisher forwards again")


def test_publisher_drops_malformed_snapshots(publisher_alone) -> None:
    """Garbage that the publisher's own checks catch: counted as malformed, nothing forwarded."""
    agg, _sub, ps, book, served = publisher_alone
    for frames in ([b"book.BTC/USDT"], [b"nope", b"x"], [b"book.BTC/USDT", b"\xc1"],
                   [b"book.BTC/USDT", schema.pack([1])], [b"book.ETH/USDT", book()[1]],
                   [b"book.BTC/USDT", schema.pack({"symbol": SYM, "epoch": "1", "seq": 1})]):
        agg.send_multipart(frames)
    wait_until(served, timeout=10, what="publisher forwards after garbage")
    assert ps.procs["publisher"].poll() is None
    assert "dropped a malformed snapshot" in ps.log("publisher")


@pytest.mark.parametrize("extra", [{"bids": None}, {"asks": 5}])
def test_publisher_survives_a_snapshot_without_levels(publisher_alone, extra: dict[str, Any]) -> None:
    agg, _sub, ps, book, served = publisher_alone
    agg.send_multipart(book(**extra))
    time.sleep(0.3)
    wait_until(served, timeout=3, what="publisher still forwards")
    assert ps.procs["publisher"].poll() is None
