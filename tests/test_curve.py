"""CURVE on every endpoint: an unauthorized subscriber receives nothing, an authorized one every
snapshot; the services talk to each other through CURVE too."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from common import config, security
from tests.harness import ScriptedFeed, procs, wait_until, write_config

SYM = "BTC/USDT"


def subscriber(ctx: zmq.Context, endpoint: str, keys: tuple[bytes, bytes] | None, server_key: bytes | None):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, f"book.{SYM}".encode())
    if keys is not None:
        s.curve_publickey, s.curve_secretkey = keys
        s.curve_serverkey = server_key
    s.connect(endpoint)
    return s


def drain(s: zmq.Socket) -> list[dict]:
    out = []
    while s.poll(10):
        _topic, payload = s.recv_multipart()
        out.append(msgpack.unpackb(payload))
    return out


def test_unauthorized_subscribers_get_nothing(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    security.make_keys(keys)
    stranger_pub, _ = zmq.auth.create_certificates(str(tmp_path), "stranger")   # not in keys/clients
    cfg_path = tmp_path / "bookmux.toml"
    ep = write_config(cfg_path, symbols=[SYM], levels=5, venues={"alpha": {}},
                      extra=f'[security]\ncurve = true\nkeys_dir = "{keys}"\n')
    cfg = config.load(cfg_path)
    sec = security.Security.from_config(cfg)
    assert sec is not None
    ctx = zmq.Context()
    feed = ScriptedFeed("alpha", ep["alpha"]["pub"], ep["alpha"]["ctl"], ctx, sec=sec)
    endpoint = f"tcp://127.0.0.1:{ep['pub_port']}"
    allowed = subscriber(ctx, endpoint, security.load_pair(keys / "subscriber.key_secret"), sec.server_public)
    stranger = subscriber(ctx, endpoint, security.load_pair(tmp_path / "stranger.key_secret"), sec.server_public)
    plain = subscriber(ctx, endpoint, None, None)
    assert Path(stranger_pub).exists()
    try:
        with procs(tmp_path) as ps:
            ps.start("aggregator", "services.aggregator", "--config", str(cfg_path))
            ps.start("publisher", "services.publisher", "--config", str(cfg_path))
            got: list[dict] = []
            state = {"price": 100}

            def pump() -> None:
                feed.pump()
                feed.heartbeat()
                got.extend(drain(allowed))

            feed.snap(SYM, {"100": "1"}, {"101": "1"})
            wait_until(lambda: any(m["bids"] for m in got), timeout=30, pump=pump,
                       what="the authorized subscriber's first book")
            for _ in range(20):
                state["price"] += 1
                feed.delta(SYM, {str(state["price"] - 1): "0", str(state["price"]): "2"}, {})
                pump()
                time.sleep(0.02)
            wait_until(lambda: got[-1]["bids"] == [[str(state["price"]), "2", "alpha"]], timeout=30, pump=pump,
                       what="the last delta")
            time.sleep(0.5)
            assert drain(stranger) == [] and drain(plain) == []
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "every snapshot, in order"
            assert "CURVE on" in ps.log("aggregator")
    finally:
        for s in (allowed, stranger, plain):
            s.close(0)
        feed.close()
        sec.close()
        ctx.term()


def test_missing_keys_is_a_clear_error(tmp_path: Path) -> None:
    cfg_path = tmp_path / "bookmux.toml"
    write_config(cfg_path, symbols=[SYM], venues={"alpha": {}},
                 extra=f'[security]\ncurve = true\nkeys_dir = "{tmp_path / "nokeys"}"\n')
    with pytest.raises(security.KeyError_, match="make keys"):
        security.Security.from_config(config.load(cfg_path))


def test_real_feed_through_curve(tmp_path: Path) -> None:
    """Simulator -> a real Binance feed -> aggregator -> publisher, every hop under CURVE: the
    allowed subscriber gets the venue live with its levels."""
    from tests.harness import SimControl, free_port

    keys = tmp_path / "keys"
    security.make_keys(keys)
    bin_port, ctl_port = free_port(), free_port()
    extra = (f'[security]\ncurve = true\nkeys_dir = "{keys}"\n\n'
             f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {ctl_port}\nseed = 5\nrate = 20.0\n\n'
             f'[simulator.venues.binance]\nkind = "binance"\nport = {bin_port}\n')
    cfg_path = tmp_path / "bookmux.toml"
    ep = write_config(cfg_path, symbols=[SYM], levels=5, extra=extra,
                      venues={"binance": {"kind": "binance", "ws_url": f"ws://127.0.0.1:{bin_port}",
                                          "rest_url": f"http://127.0.0.1:{bin_port}", "stale_after": 5.0}})
    sec = security.Security.from_config(config.load(cfg_path))
    assert sec is not None
    ctx = zmq.Context()
    allowed = subscriber(ctx, f"tcp://127.0.0.1:{ep['pub_port']}",
                         security.load_pair(keys / "subscriber.key_secret"), sec.server_public)
    got: list[dict] = []
    try:
        with procs(tmp_path) as ps:
            c = str(cfg_path)
            ps.start("simulator", "services.simulator", "--config", c)
            wait_until(SimControl(ctl_port).up, timeout=30, what="simulator up")
            ps.start("feed_binance", "services.feed_binance", "--venue", "binance", "--config", c)
            ps.start("aggregator", "services.aggregator", "--config", c)
            ps.start("publisher", "services.publisher", "--config", c)
            wait_until(lambda: bool(got) and got[-1]["venues"] == {"binance": "live"} and len(got[-1]["bids"]) == 5,
                       timeout=60, pump=lambda: got.extend(drain(allowed)), what="a live book through CURVE")
    finally:
        allowed.close(0)
        sec.close()
        ctx.term()
