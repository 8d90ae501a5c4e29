"""Numbers, schema round trips and config validation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import config, schema
from common.numbers import BadNumber, fmt, parse_decimal
from common.schema import BookMsg, BusError, HeartbeatMsg, StatusMsg


@pytest.mark.parametrize("d,text", [("43250.10000000", "43250.1"), ("0.00050000", "0.0005"), ("100", "100"),
                                    ("1E+2", "100"), ("0E-8", "0"), ("-0.50", "-0.5"), ("1E-12", "0.000000000001"),
                                    ("12.000", "12")])
def test_fmt_is_plain_positional(d: str, text: str) -> None:
    assert fmt(Decimal(d)) == text


@given(st.decimals(allow_nan=False, allow_infinity=False, places=10, min_value=-10**9, max_value=10**9))
def test_fmt_round_trips_exactly(d: Decimal) -> None:
    s = fmt(d)
    assert Decimal(s) == d
    assert "E" not in s and "e" not in s and not s.startswith("+")
    if "." in s:
        assert not s.endswith("0") and not s.endswith(".")


@pytest.mark.parametrize("bad", ["NaN", "inf", "-1", "abc", "", 1.5, None, True, "1e30", [1]])
def test_parse_decimal_rejects(bad: object) -> None:
    with pytest.raises(BadNumber):
        parse_decimal(bad)


def test_feed_messages_round_trip() -> None:
    """Every feed message type decodes to itself, and its payload is the schema-2 array."""
    msgs = [
        BookMsg(schema.SNAP, "binance", "BTC/USDT", 7, 1, 10, 20,
                [(Decimal("43000.10"), Decimal("0.5"))], [(Decimal("43001"), Decimal("0.00000001"))]),
        BookMsg(schema.DELTA, "binance", "BTC/USDT", 7, 2, 10, 20, [(Decimal("43000.1"), Decimal("0"))], []),
        StatusMsg("bitstamp", "ETH/USDT", 9, 3, schema.STALE, "no frames for 10 s", 30),
        HeartbeatMsg("bitstamp", 9, 40, {"ETH/USDT": 3}),
        HeartbeatMsg("bitstamp", 9, 40, {}, "cancel_only"),
        BookMsg(schema.SNAP, "kraken", "BTC/USD", 7, 3, 10, 20, [(Decimal("1E-8"), Decimal("0E-8"))], [],
                (Decimal("42000.5"), None)),
    ]
    for m in msgs:
        frames = schema.encode_feed(m)
        assert schema.decode_feed(frames) == m
        assert schema.decode_feed_bytes(frames[1]) == m
        assert schema.decode_feed_payload(schema.unpack(frames[1])) == m
    assert msgpack.unpackb(schema.encode_feed(msgs[0])[1]) == [
        "snap", 2, "binance", 7, "BTC/USDT", 1, 10, 20, [["43000.10", "0.5"]], [["43001", "1E-8"]]]
    assert msgpack.unpackb(schema.encode_feed(msgs[2])[1]) == [
        "status", 2, "bitstamp", 9, "ETH/USDT", 3, 30, "stale", "no frames for 10 s"]
    assert msgpack.unpackb(schema.encode_feed(msgs[4])[1]) == ["hb", 2, "bitstamp", 9, 40, {}, "cancel_only"]
    assert msgpack.unpackb(schema.encode_feed(msgs[5])[1])[10] == ["42000.5", ""]


@pytest.mark.parametrize("payload", [
    b"\xc1", b"", msgpack.packb([1, 2]), msgpack.packb({"ver": 99, "t": "snap"}),
    msgpack.packb({"ver": 1, "t": "delta", "v": "binance", "sess": 1, "rts": 1, "s": "BTC/USDT", "seq": 1,
                   "ets": 0, "b": [], "a": []}),                                # a valid schema-1 map
    msgpack.packb(["delta", 2, "binance", 1, "BTC/USDT", 1, 0, 1, [["NaN", "1"]], []]),
    msgpack.packb(["delta", 2, "binance", 1, "BTC/USDT", "1", 0, 1, [], []]),
    msgpack.packb(["delta", 2, "binance", 1, "BTC/USDT", 1, 0, 1, [["1", "-1"]], []]),
    msgpack.packb(["delta", 2, "binance", 1, "BTC/USDT", 1, 0, 1, []]),           # asks missing
    msgpack.packb(["delta", 2, "binance", 1, "BTC/USDT", 1, 0, 1, [], [], None, 1]),  # a position too many
    msgpack.packb(["delta", 1, "binance", 1, "BTC/USDT", 1, 0, 1, [], []]),       # schema 1
    msgpack.packb(["status", 2, "binance", 1, "BTC/USDT", 1, 1, "happy", ""]),
    msgpack.packb(["what", 2, "binance", 1, "BTC/USDT", 1, 1]),
])
def test_malformed_bus_payloads_raise_bus_error(payload: bytes) -> None:
    with pytest.raises(BusError):
        schema.decode_feed([b"md.binance.BTC/USDT", payload])


def test_topic_must_match_payload() -> None:
    frames = schema.encode_feed(StatusMsg("binance", "BTC/USDT", 1, 1, "live", "", 1))
    with pytest.raises(BusError):
        schema.decode_feed([b"md.binance.ETH/USDT", frames[1]])
    with pytest.raises(BusError):
        schema.decode_feed([frames[0]])


@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_another_exception(raw: bytes) -> None:
    try:
        schema.decode_feed([b"md.x.Y/Z", raw])
    except BusError:
        pass


REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_load() -> None:
    live = config.load(REPO / "deploy" / "bookmux.toml")
    assert live.publisher.endpoint == "tcp://127.0.0.1:50052" and live.levels == 10
    assert [v.id for v in live.enabled_venues] == ["binance", "bitstamp", "kraken", "coinbase", "gemini"]
    carried = {v.id: v.symbols for v in live.enabled_venues}
    assert carried == {"binance": ("BTC/USDT",), "bitstamp": ("BTC/USDT", "BTC/USD"),
                       "kraken": ("BTC/USDT", "BTC/USD"), "coinbase": ("BTC/USDT", "BTC/USD"),
                       "gemini": ("BTC/USD",)}
    assert live.venue("kraken").depth == 1000 and live.venue("kraken").api == "v2"
    demo = config.load(REPO / "deploy" / "demo.toml")
    assert demo.venue("binance").ws_url.startswith("ws://127.0.0.1")
    assert [v.id for v in demo.enabled_venues] == ["binance", "bitstamp", "kraken", "coinbase", "gemini"]


def test_venue_lists_narrow_to_the_requested_symbols() -> None:
    """--symbols narrows every venue to what it lists; a venue left with none does not run."""
    c = config.load(REPO / "deploy" / "bookmux.toml", symbols="BTC/USD")
    assert {v.id: v.symbols for v in c.enabled_venues} == {
        "bitstamp": ("BTC/USD",), "kraken": ("BTC/USD",), "coinbase": ("BTC/USD",), "gemini": ("BTC/USD",)}


def test_shipped_configs_follow_the_port_plan() -> None:
    """Every port of both shipped configs is the one deploy/ports.py plans for it, none twice."""
    from deploy import ports

    plan = ports.all_ports()
    for name in ("bookmux.toml", "demo.toml"):
        c = config.load(REPO / "deploy" / name)
        got = {"publisher": c.publisher.port, "aggregator.query": c.aggregator.query,
               "aggregator.pub": c.aggregator.pub, "aggregator.ctl": c.aggregator.ctl,
               "aggregator.metrics": c.aggregator.metrics, "publisher.metrics": c.publisher.metrics,
               "gateway_grpc.metrics": c.gateway_grpc.metrics}
        for v in c.venues.values():
            got[f"venues.{v.id}.pub"], got[f"venues.{v.id}.ctl"] = v.pub, v.ctl
            got[f"venues.{v.id}.metrics"] = v.metrics
        assert all(val for val in got.values()), (name, got)    # every service has its metrics endpoint
        used = []
        for key, val in got.items():
            port = val if isinstance(val, int) else int(str(val).rsplit(":", 1)[1])
            assert port == plan[key], (name, key, port)
            used.append(port)
        assert len(used) == len(set(used)), name


def test_ops_keys_metrics_quiet_after_capture(tmp_path: Path) -> None:
    """metrics, quiet_after(_symbols) and capture land in the config dataclasses; a shard has its own metrics."""
    live = config.load(REPO / "deploy" / "bookmux.toml")
    b = live.venue("bitstamp")
    assert (b.metrics, b.quiet_after, dict(b.quiet_after_symbols)) == ("127.0.0.1:50111", 30.0, {"BTC/USDT": 120.0})
    assert (b.quiet_after_for("BTC/USDT"), b.quiet_after_for("BTC/USD")) == (120.0, 30.0)
    assert (b.capture, b.capture_rotate_mb, b.capture_rotate_s) == (None, 64.0, 3600.0)
    c = config.load(REPO / "deploy" / "bookmux.toml", sets=[
        "venues.binance.capture=/tmp/cap", "venues.binance.capture_rotate_mb=8", "venues.binance.capture_rotate_s=60",
        'venues.binance.metrics=""', "aggregator.metrics=''"])
    v = c.venue("binance")
    assert (v.capture, v.capture_rotate_mb, v.capture_rotate_s, v.metrics) == ("/tmp/cap", 8.0, 60.0, None)
    assert c.aggregator.metrics is None
    p = tmp_path / "c.toml"
    p.write_text(with_shards(SHARDS.replace('cpu = 0', 'cpu = 0\nmetrics = "127.0.0.1:50116"')))
    sharded = config.load(p).venue("binance")
    assert [sharded.shard(i).metrics for i in (0, 1)] == ["127.0.0.1:50116", None]
    for sets, key in ((["venues.binance.metrics=50110"], "venues.binance.metrics"),
                      (["publisher.metrics='127.0.0.1'"], "publisher.metrics"),
                      (["venues.binance.quiet_after=0"], "venues.binance.quiet_after"),
                      (["venues.bitstamp.quiet_after_symbols.BTCUSD=3"], "venues.bitstamp.quiet_after_symbols"),
                      (["venues.binance.capture_rotate_mb=-1"], "venues.binance.capture_rotate_mb"),
                      (["gateway_grpc.metrics='127.0.0.1:50100'"], "aggregator.metrics")):
        with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
            config.load(REPO / "deploy" / "bookmux.toml", sets=sets)


def test_overrides() -> None:
    c = config.load(REPO / "deploy" / "bookmux.toml", symbols="eth/usdt,BTC/USDT", levels=20,
                    venues="binance", sets=["venues.binance.ws_url=ws://127.0.0.1:9", "publisher.port=6001",
                                            "aggregator.down_after=1.5"])
    assert c.symbols == ("ETH/USDT", "BTC/USDT") and c.levels == 20
    assert [v.id for v in c.enabled_venues] == ["binance"] and c.venue("binance").symbols == ("BTC/USDT",)
    assert c.venue("binance").ws_url == "ws://127.0.0.1:9" and c.publisher.port == 6001
    assert c.aggregator.down_after == 1.5


@pytest.mark.parametrize("kw,needle", [
    ({"sets": ["venues.binance.wsurl=x"]}, "unknown key"),
    ({"sets": ["levls=3"]}, "unknown key"),
    ({"symbols": "BTCUSDT"}, "BASE/QUOTE"),
    ({"venues": "nasdaq"}, "unknown venue"),
    ({"sets": ["publisher.port=70000"]}, "not a TCP port"),
    ({"sets": ["venues.binance.taker_fee=0.1"]}, "strings"),
    ({"sets": ["venues.binance.kind='ftx'"]}, "kind"),
    ({"sets": ["venues.binance.stale_after='soon'"]}, "must be float"),
])
def test_config_errors_name_the_key(kw, needle: str) -> None:
    with pytest.raises(config.ConfigError, match=needle):
        config.load(REPO / "deploy" / "bookmux.toml", **kw)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


SHARDS = """
[[venues.binance.shards]]
symbols = ["BTC/USDT", "ETH/USDT"]
pub = "tcp://127.0.0.1:51060"
ctl = "tcp://127.0.0.1:51061"
cpu = 0

[[venues.binance.shards]]
symbols = ["SOL/USDT"]
pub = "tcp://127.0.0.1:51062"
ctl = "tcp://127.0.0.1:51063"
"""


def with_shards(shards: str) -> str:
    """The live config with binance split by ``shards`` (a sharded venue has no venue-wide metrics address)."""
    live = (REPO / "deploy" / "bookmux.toml").read_text()
    return live.replace('metrics = "127.0.0.1:50110"', "", 1) + shards


def test_shards_split_one_venue_over_feed_processes(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(with_shards(SHARDS))
    c = config.load(p)
    b = c.venue("binance")
    assert b.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert [sh.symbols for sh in b.processes] == [("BTC/USDT", "ETH/USDT"), ("SOL/USDT",)]
    one = b.shard(1)
    assert (one.symbols, one.pub, one.ctl, one.cpu) == (("SOL/USDT",), "tcp://127.0.0.1:51062",
                                                        "tcp://127.0.0.1:51063", None)
    assert c.venue("bitstamp").processes[0].symbols == ("BTC/USDT", "BTC/USD")   # its own list, no shards
    with pytest.raises(config.ConfigError, match="--shard 2"):
        b.shard(2)
    from deploy.supervisor import render
    text = render(c, flags=["--config", str(p)], demo=False, python="py")
    assert "[program:feed_binance_0]" in text and "--venue binance --shard 1" in text
    assert "[program:feed_bitstamp]" in text


def test_shards_must_not_share_symbols_or_endpoints(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(with_shards(SHARDS.replace('["SOL/USDT"]', '["BTC/USDT"]')))
    with pytest.raises(config.ConfigError, match="already in shard 0"):
        config.load(p)
    p.write_text(with_shards(SHARDS.replace("51062", "51060")))
    with pytest.raises(config.ConfigError, match="own pub and ctl"):
        config.load(p)


def test_non_ascii_venue_is_a_bus_error() -> None:
    """Found by the fuzzer: a venue or symbol that is not ASCII raised UnicodeEncodeError (which
    the aggregator does not catch) while checking the topic."""
    for msg in (HeartbeatMsg("\x80", 1, 1, {}), StatusMsg("a", "AA/\u00e9", 1, 1, "live", "", 1)):
        payload = schema.pack(schema.feed_payload(msg))
        with pytest.raises(BusError, match="ASCII"):
            schema.decode_feed([b"md.a.AA/AA", payload])
