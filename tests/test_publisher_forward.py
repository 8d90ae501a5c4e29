"""The publisher's forwarding path: :class:`common.schema.MergedPeek` (the header and shape of a
merged book checked without decoding its levels) against the full decode, and the real
:class:`services.publisher.service.Publisher` drain (bytes forwarded unchanged, malformed messages
counted, cut to ``levels``, the latest store fed)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import msgpack
import pytest
import zmq

from common import config, schema
from common.ports import free_port
from common.schema import BusError, Level, MergedBook, VenueTimes
from tests.harness import write_config

D = Decimal
SPREAD = D("1.5")


def book(symbol: str = "BTC/USDT", *, epoch: int = 1764440000123456789, seq: int = 7, ts: int = 1_700_000_000_000,
         bids: int = 10, asks: int = 10, spread: Decimal | None = SPREAD, depletion: bool = True,
         extra: dict[str, object] | None = None) -> list[bytes]:
    """The frames the aggregator sends for one merged book of this shape."""
    b = MergedBook(symbol, epoch, seq, ts, spread,
                   [Level(D(65000) - k, D("0.5") + k, "alpha" if k % 2 else "beta") for k in range(bids)],
                   [Level(D(65001) + k, D("1.25") + k, "beta" if k % 2 else "alpha") for k in range(asks)],
                   {"alpha": "live", "beta": "syncing"},
                   venue_ts={"alpha": VenueTimes(1, 2, 3), "beta": VenueTimes(4, 5, 6)}, extra=extra or {})
    summary = {"filled": "1", "vwap": "65001.5", "worst": "65002", "slippage_bps": "0.12", "levels": 3,
               "partial": False}
    return schema.encode_merged(b, depletion={"buy": {"1": summary}, "sell": {"1": summary}} if depletion else None)


SHAPES = {
    "usual": book(),
    "empty sides, no spread": book(bids=0, asks=0, spread=None),
    "one side deep (array16)": book(bids=3, asks=40),
    "small ints": book(epoch=1, seq=0, ts=0),
    "uint8/16/32 ints": book(epoch=200, seq=60_000, ts=4_000_000_000),
    "no depletion": book(depletion=False),
    "a newer sender's keys": book(extra={"zzz": [1, 2, {"a": None}], "aaa": "x"}),
    "long symbol": book("VERYLONGBASETOKEN/VERYLONGQUOTETOKEN"),
    "tiny": schema.encode_merged(MergedBook("X/Y", 1, 1, 0, None, [], [], {})),
}


def expected(frames: list[bytes]) -> tuple[str, int, int, int | None, int, int]:
    m, symbol, epoch, seq = schema.peek_merged(frames)
    return symbol, epoch, seq, m.get("ts"), len(m["bids"]), len(m["asks"])


@pytest.mark.parametrize("name", list(SHAPES))
def test_peek_reads_what_the_full_decode_reads(name: str) -> None:
    """Symbol, epoch, seq, ts and the level counts equal the full decode's, in the aggregator's
    key order and in another one."""
    topic, payload = SHAPES[name]
    peek = schema.MergedPeek()
    assert peek.peek(topic, payload) == expected([topic, payload])
    m = msgpack.unpackb(payload)
    reordered = msgpack.packb(dict(reversed(list(m.items()))))
    assert peek.peek(topic, reordered) == expected([topic, payload])
    assert schema.peek_merged_header(topic, payload) == expected([topic, payload])


def test_negative_ints_and_a_non_int_ts_are_read_as_the_full_decode_reads_them() -> None:
    """A negative epoch (not the aggregator's layout) is walked; a ``ts`` that is not an int is None."""
    topic, payload = book(epoch=5)
    m = msgpack.unpackb(payload)
    m["epoch"], m["ts"] = -3, "soon"
    raw = msgpack.packb(m)
    assert schema.MergedPeek().peek(topic, raw) == ("BTC/USDT", -3, 7, None, 10, 10)


def test_a_key_given_twice_counts_as_the_full_decode_counts_it() -> None:
    """A known key again after the aggregator's seven (its last value wins, as in a decoded map)."""
    topic, payload = book(seq=7, asks=3)
    extra = msgpack.packb({"seq": 8, "asks": [["1", "1", "a"]]})
    raw = bytes([payload[0] + 2]) + payload[1:] + extra[1:]
    assert schema.MergedPeek().peek(topic, raw) == expected([topic, raw]) == ("BTC/USDT", 1764440000123456789, 8,
                                                                               1_700_000_000_000, 10, 1)


def malformed() -> list[tuple[str, bytes, bytes, str]]:
    topic, payload = book()
    m = msgpack.unpackb(payload)
    cases = [
        ("trailing bytes", topic, payload + b"\xc0", "bytes after the map"),
        ("not a map", topic, msgpack.packb([1, 2]), "not a map"),
        ("topic of another symbol", b"book.ETH/USDT", payload, "does not match"),
        ("topic without the prefix", b"BTC/USDT", payload, "does not match"),
        ("not msgpack", topic, b"\xc1" * 80, "not a map"),
        ("empty", topic, b"", "bad msgpack"),
    ]
    for key, value, why in (("bids", "x", "'bids' is not a list"), ("asks", {"a": 1}, "'asks' is not a list"),
                            ("symbol", 5, "'symbol' is not a string"), ("epoch", "1", "'epoch' is not an int"),
                            ("seq", True, "'seq' is not an int"), ("seq", None, "'seq' is not an int")):
        bad = dict(m)
        bad[key] = value
        cases.append((f"{key}={value!r}", topic, msgpack.packb(bad), why))
    for key in ("symbol", "bids", "asks"):
        bad = dict(m)
        del bad[key]
        cases.append((f"no {key}", topic, msgpack.packb(bad), "'symbol' is not" if key == "symbol" else "not lists"))
    cases.append(("an int key", topic, msgpack.packb({**m, 5: 1}, strict_types=False), "not a string"))
    cases.append(("non-ASCII symbol", "book.BTC/ÜSDT".encode(), msgpack.packb({**m, "symbol": "BTC/ÜSDT"}),
                  "not ASCII"))
    return cases


@pytest.mark.parametrize("case", malformed(), ids=lambda c: c[0])
def test_a_malformed_message_is_a_bus_error_naming_what_is_wrong(case: tuple[str, bytes, bytes, str]) -> None:
    """Each malformed message raises BusError naming the fault; the peeker reads the next good one."""
    _name, topic, payload, why = case
    peek = schema.MergedPeek()
    with pytest.raises(BusError, match=why):
        peek.peek(topic, payload)
    good = book(seq=99)
    assert peek.peek(*good) == expected(good)


def test_every_truncation_is_a_bus_error_and_the_peeker_goes_on() -> None:
    """Every strict prefix of a payload raises BusError (as the full decode does); good and bad
    messages interleaved, one peeker reads every good one exactly."""
    peek = schema.MergedPeek()
    for frames in (SHAPES["usual"], SHAPES["one side deep (array16)"], SHAPES["tiny"]):
        topic, payload = frames
        for n in range(len(payload)):
            with pytest.raises(BusError):
                schema.peek_merged([topic, payload[:n]])
            with pytest.raises(BusError):
                peek.peek(topic, payload[:n])
            assert peek.peek(topic, payload) == expected(frames)


# --- the publisher's drain ---------------------------------------------------------------------


class Rig:
    """A real Publisher between a PUB standing for the aggregator and one SUB subscriber."""

    def __init__(self, tmp_path: Path, levels: int) -> None:
        from services.publisher.service import Publisher

        path = tmp_path / "bookmux.toml"
        ep = write_config(path, symbols=["BTC/USDT", "ETH/USDT"], levels=levels, venues={"alpha": {}})
        path.write_text(path.read_text().replace("[publisher]\n", f"[publisher]\nlatest_port = {free_port()}\n", 1))
        cfg = config.load(path)
        self.ctx = zmq.Context()
        self.agg = self.ctx.socket(zmq.PUB)
        self.agg.bind(ep["agg_pub"])
        self.pub = Publisher(cfg, levels=levels, ctx=self.ctx)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(cfg.publisher.endpoint)
        assert self.pub.out.poll(10_000)
        self.pub.on_subscription(self.pub.out.recv())
        # the aggregator's PUB drops until the publisher's subscription arrives: probe until one passes
        deadline = time.monotonic() + 20
        while self.pub.counters.get("published", 0) == 0:
            assert time.monotonic() < deadline, "the publisher never received from the test's PUB"
            self.agg.send_multipart(book("ETH/USDT", seq=1))
            if self.pub.sub.poll(100):
                self.pub.drain()
        assert self.sub.poll(10_000)
        while self.sub.poll(200):
            self.sub.recv_multipart()
        self.base = dict(self.pub.counters)

    def through(self, messages: list[list[bytes]], expect: int) -> list[list[bytes]]:
        """Send ``messages`` from the aggregator's side, drain them, return what the subscriber got."""
        for m in messages:
            self.agg.send_multipart(m)
        seen = 0
        deadline = time.monotonic() + 20
        while seen < len(messages):
            assert time.monotonic() < deadline, f"the publisher read {seen} of {len(messages)}"
            if self.pub.sub.poll(200):
                seen += self.pub.drain()
        got = []
        while len(got) < expect:
            assert self.sub.poll(10_000), f"the subscriber got {len(got)} of {expect}"
            got.append(self.sub.recv_multipart())
        assert not self.sub.poll(100)
        return got

    def counted(self) -> dict[str, int]:
        return {k: v - self.base.get(k, 0) for k, v in self.pub.counters.items() if v != self.base.get(k, 0)}

    def close(self) -> None:
        self.pub.close()
        for s in (self.agg, self.sub):
            s.close(0)
        self.ctx.term()


def test_the_drain_forwards_the_bytes_unchanged_and_counts_every_malformed_message(tmp_path: Path) -> None:
    """Good books reach the subscriber byte for byte, in order, and are the latest store's newest;
    a one-frame, a three-frame, a mismatched-topic and an undecodable message are counted, not sent."""
    rig = Rig(tmp_path, levels=10)
    try:
        good = [book(seq=s) for s in (1, 2, 3)] + [book("ETH/USDT", seq=2)]
        bad = [[b"book.BTC/USDT"], [*book(seq=4), b"more"], [b"book.ETH/USDT", book(seq=4)[1]],
               [b"book.BTC/USDT", b"\xc1junk"]]
        got = rig.through([good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3]], expect=4)
        assert got == good
        assert rig.counted() == {"published": 4, "malformed": 4}
        assert rig.pub.last == {"BTC/USDT": (1764440000123456789, 3), "ETH/USDT": (1764440000123456789, 2)}
        assert rig.pub.latest.books["BTC/USDT"] == (1764440000123456789, 3, *good[2])
        assert rig.pub.latency["BTC/USDT"].count == 1         # ts unchanged: one new input
        got = rig.through([book(seq=5)], expect=1)            # 4 never came
        assert rig.counted() == {"published": 5, "malformed": 4, "upstream_gaps": 1}
    finally:
        rig.close()


def test_a_book_deeper_than_levels_is_cut_on_either_side(tmp_path: Path) -> None:
    """With ``levels`` 5: a book with more on one side only is cut to 5 per side, every other key
    unchanged; one within 5 is forwarded byte for byte."""
    rig = Rig(tmp_path, levels=5)
    try:
        deep_asks, deep_bids, shallow = book(seq=2, bids=2, asks=12), book(seq=3, bids=9, asks=0), book(seq=4, bids=5,
                                                                                                       asks=5)
        got = rig.through([deep_asks, deep_bids, shallow], expect=3)
        for sent, received, (nb, na) in zip((deep_asks, deep_bids), got, ((2, 5), (5, 0))):
            full, cut = msgpack.unpackb(sent[1]), msgpack.unpackb(received[1])
            assert (len(cut["bids"]), len(cut["asks"])) == (nb, na)
            assert cut == {**full, "bids": full["bids"][:5], "asks": full["asks"][:5]}
            assert list(cut) == list(full)
        assert got[2] == shallow
        assert rig.pub.latest.books["BTC/USDT"][3] == shallow[1]
    finally:
        rig.close()
