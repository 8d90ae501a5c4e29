"""The simulated Coinbase seen from outside, over real WebSockets and HTTP: Advanced Trade
(``sequence_num`` contiguous across channels, ``skip_seq`` jumps, multi-product messages, the
snapshot + updates = the true book, a multi-MB snapshot, the 5 s subscribe deadline) and the
Exchange feed (``level2_batch``/``level2``, tickers, spelled zeros, ``crossed``). The client code
here is a few lines of plain dicts on purpose (no import of any feed or of the simulator's
book code)."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from services.simulator.app import settings_from
from tests.test_simulator import Running, true_book

SYMBOLS = ("BTC/USD", "ETH/USD")
RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
PLAIN = re.compile(r"^(0|[1-9]\d*)(\.\d*[1-9])?$")   # not zero-padded


def make(rate: float = 100.0, **venue: Any) -> Running:
    raw = {"host": "127.0.0.1", "control_port": 0, "seed": 5, "rate": rate,
           "venues": {"coinbase": {"kind": "coinbase", "port": 0, **venue}}}
    return Running(settings_from(raw, SYMBOLS, replay_speed=0.0))


@pytest.fixture
def sim() -> Iterator[Running]:
    r = make()
    try:
        yield r
    finally:
        r.close()


def recv_all(ws: ClientConnection, quiet: float = 0.5, until: Any = None, limit: float = 20.0) -> list[Any]:
    """Decoded frames until nothing arrives for ``quiet`` s, or ``until(frames)`` is true."""
    out: list[Any] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out.append(json.loads(ws.recv(timeout=quiet)))
        except TimeoutError:
            if until is None:
                break
            continue
        if until is not None and until(out):
            break
    return out


def at_subscribe(ws: ClientConnection, *products: str) -> None:
    ws.send(json.dumps({"type": "subscribe", "product_ids": list(products), "channel": "level2"}))
    ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))


def apply_at(books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]], msg: dict[str, Any]) -> None:
    for ev in msg["events"]:
        if ev["type"] == "snapshot":
            books[ev["product_id"]] = ({}, {})
        bids, asks = books[ev["product_id"]]
        for u in ev["updates"]:
            side = bids if u["side"] == "bid" else asks
            assert u["side"] in ("bid", "offer")
            q = Decimal(u["new_quantity"])
            if q:
                side[Decimal(u["price_level"])] = q
            else:
                side.pop(Decimal(u["price_level"]), None)


def apply_ex(book: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]], changes: list[list[str]]) -> None:
    for side, p, s in changes:
        d = book[0] if side == "buy" else book[1]
        if Decimal(s):
            d[Decimal(p)] = Decimal(s)
        else:
            d.pop(Decimal(p), None)


# --- Advanced Trade ----------------------------------------------------------------------------------

def test_at_sequence_contiguous_and_snapshot_plus_updates_equal_truth(sim: Running) -> None:
    """sequence_num +1 per message across l2_data/subscriptions/heartbeats; book = /book after pause."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD", "ETH-USD")
        got = recv_all(ws, until=lambda fs: sum(f.get("channel") == "heartbeats" for f in fs) >= 2)
        assert sim.ctl("/pause").json()["paused"] is True
        got += recv_all(ws)
    assert [f["sequence_num"] for f in got] == list(range(len(got)))
    assert {f["channel"] for f in got} == {"l2_data", "subscriptions", "heartbeats"}
    for f in got:
        assert set(f) == {"channel", "client_id", "timestamp", "sequence_num", "events"}
        assert RFC3339_NS.match(f["timestamp"]) and f["client_id"] == ""
    acks = [f["events"][0]["subscriptions"] for f in got if f["channel"] == "subscriptions"]
    assert acks[-1] == {"level2": ["BTC-USD", "ETH-USD"], "heartbeats": ["heartbeats"]}
    beats = [f["events"][0]["heartbeat_counter"] for f in got if f["channel"] == "heartbeats"]
    assert beats == list(range(1, len(beats) + 1))
    l2 = [f for f in got if f["channel"] == "l2_data"]
    assert [(e["type"], e["product_id"]) for f in l2[:2] for e in f["events"]] == [
        ("snapshot", "BTC-USD"), ("snapshot", "ETH-USD")]
    books: dict[str, Any] = {}
    for f in l2:
        for e in f["events"]:
            for u in e["updates"]:
                assert set(u) == {"side", "event_time", "price_level", "new_quantity"}
                assert PLAIN.match(u["price_level"]) and PLAIN.match(u["new_quantity"])
        apply_at(books, f)
    assert books["BTC-USD"] == true_book(sim, "coinbase", "BTC/USD")
    assert books["ETH-USD"] == true_book(sim, "coinbase", "ETH/USD")
    sim.ctl("/resume")


def test_at_messages_carry_several_products(sim: Running) -> None:
    """Updates are batched: some l2_data messages hold events of both products, one event each."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD", "ETH-USD")
        got = recv_all(ws, until=lambda fs: sum(len(f.get("events", ())) > 1 for f in fs) >= 3)
    multi = [f for f in got if f.get("channel") == "l2_data" and len(f["events"]) > 1]
    assert len(multi) >= 3
    for f in multi:
        ids = [e["product_id"] for e in f["events"]]
        assert sorted(ids) == ["BTC-USD", "ETH-USD"] and {e["type"] for e in f["events"]} == {"update"}


def test_at_skip_seq_shows_a_jump(sim: Running) -> None:
    """skip_seq: the next message's sequence_num is previous + 1 + count, then contiguous again."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD")
        before = recv_all(ws, until=lambda fs: len(fs) >= 5)
        r = sim.ctl("/fault", venue="coinbase", kind="skip_seq", count=3).json()
        assert r["fault"] == {"venue": "coinbase", "kind": "skip_seq", "count": 3, "connections": 1}
        after = recv_all(ws, until=lambda fs: len(fs) >= 5)
    seqs = [f["sequence_num"] for f in before + after]
    steps = [b - a for a, b in itertools.pairwise(seqs)]
    assert sorted(steps) == [1] * (len(steps) - 1) + [4]


def test_at_silence_loses_messages_with_their_numbers(sim: Running) -> None:
    """After a silence the next Advanced Trade message shows one jump: the lost messages had numbers."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD")
        before = recv_all(ws, until=lambda fs: len(fs) >= 5)
        sim.ctl("/fault", venue="coinbase", kind="silence", seconds=1.0)
        after = recv_all(ws, until=lambda fs: sum(f["channel"] == "heartbeats" for f in fs) >= 2)
    seqs = [f["sequence_num"] for f in before + after]
    jumps = [b - a for a, b in itertools.pairwise(seqs) if b - a != 1]
    assert len(jumps) == 1 and jumps[0] > 1


def test_at_errors_unsubscribe_and_deadline(sim: Running) -> None:
    """Unknown product/channel are errors; unsubscribe stops updates; no subscribe in 5 s closes."""
    with sim.ws("coinbase", "/") as idle, sim.ws("coinbase", "/") as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "NOPE-USD"], "channel": "level2"}))
        err = json.loads(ws.recv(timeout=5))
        assert err["type"] == "error" and "NOPE-USD" in err["message"] and set(err) == {"type", "message"}
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level3x"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "error", "message": "authentication failure"}
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
        recv_all(ws, until=lambda fs: len(fs) >= 4)
        ws.send(json.dumps({"type": "unsubscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
        got = recv_all(ws, until=lambda fs: fs[-1]["channel"] == "subscriptions")
        assert got[-1]["events"] == [{"subscriptions": {}}]
        assert recv_all(ws, quiet=0.6) == []          # nothing after the unsubscribe ack
        with pytest.raises(ConnectionClosed):
            idle.recv(timeout=15)
        assert idle.close_code == 1008
        ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        assert recv_all(ws, until=lambda fs: fs[-1]["channel"] == "heartbeats")[-1]["channel"] == "heartbeats"
    assert sim.ctl("/stats").json()["venues"]["coinbase"]["closed_unsubscribed"] == 1


def test_at_large_snapshot_exceeds_a_default_frame_limit() -> None:
    """A symbol configured with 15000 levels per side gets a multi-MB snapshot frame."""
    r = make(rate=5.0, levels={"BTC/USD": 15000})
    try:
        with connect(f"ws://127.0.0.1:{r.port('coinbase')}/", open_timeout=5, close_timeout=2) as small:
            small.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
            with pytest.raises(ConnectionClosed) as closed:      # the default 1 MiB frame limit fails on it
                small.recv(timeout=30)
            assert closed.value.sent is not None and closed.value.sent.code == 1009   # message too big
        with r.ws("coinbase", "/") as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
            text = ws.recv(timeout=30)
            r.ctl("/pause")
            rest = recv_all(ws)
        assert len(text) > 2**21
        books: dict[str, Any] = {}
        snap = json.loads(text)
        assert snap["events"][0]["type"] == "snapshot" and len(snap["events"][0]["updates"]) >= 30000
        for f in [snap, *rest]:
            if f["channel"] == "l2_data":
                apply_at(books, f)
        assert books["BTC-USD"] == true_book(r, "coinbase", "BTC/USD")
    finally:
        r.close()


def test_at_gap_consumes_sequence_numbers(sim: Running) -> None:
    """A lost event (gap) leaves a hole in sequence_num on Advanced Trade."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD")
        before = recv_all(ws, until=lambda fs: len(fs) >= 4)
        sim.ctl("/fault", venue="coinbase", kind="gap", symbol="BTC/USD", count=2)
        after = recv_all(ws, until=lambda fs: len(fs) >= 6)
    seqs = [f["sequence_num"] for f in before + after]
    assert seqs[-1] - seqs[0] == len(seqs) - 1 + 2 and seqs == sorted(seqs)


# --- Exchange --------------------------------------------------------------------------------------

def test_ex_level2_batch_snapshot_updates_heartbeat_ticker(sim: Running) -> None:
    """subscriptions ack, snapshot, batched l2updates, heartbeats, tickers: book = /book; tickers
    agree with the book as received before them."""
    with sim.ws("coinbase", "/") as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
                            "channels": ["level2_batch", "heartbeat", {"name": "ticker", "product_ids": ["BTC-USD"]}]}))
        got = recv_all(ws, until=lambda fs: sum(f["type"] == "ticker" for f in fs) >= 3)
        sim.ctl("/pause")
        got += recv_all(ws)
    assert got[0] == {"type": "subscriptions", "channels": [
        {"name": "level2_batch", "product_ids": ["BTC-USD", "ETH-USD"]},
        {"name": "heartbeat", "product_ids": ["BTC-USD", "ETH-USD"]},
        {"name": "ticker", "product_ids": ["BTC-USD"]}]}
    assert {f["type"] for f in got} == {"subscriptions", "snapshot", "l2update", "heartbeat", "ticker"}
    books: dict[str, Any] = {}
    zeros: set[str] = set()
    multi = 0
    for f in got:
        if f["type"] == "snapshot":
            assert set(f) == {"type", "product_id", "bids", "asks"}
            books[f["product_id"]] = ({}, {})
            apply_ex(books[f["product_id"]], [["buy", p, s] for p, s in f["bids"]] +
                     [["sell", p, s] for p, s in f["asks"]])
        elif f["type"] == "l2update":
            assert set(f) == {"type", "product_id", "changes", "time"}
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", f["time"])
            multi += len(f["changes"]) > 1
            for side, p, s in f["changes"]:
                assert side in ("buy", "sell") and re.match(r"^\d+\.\d\d$", p) and re.match(r"^\d+(\.\d+)?$", s)
                if not Decimal(s):
                    zeros.add(s)
            apply_ex(books[f["product_id"]], f["changes"])
        elif f["type"] == "ticker":
            bids, asks = books[f["product_id"]]
            assert (Decimal(f["best_bid"]), Decimal(f["best_ask"])) == (max(bids), min(asks))
        elif f["type"] == "heartbeat":
            assert set(f) == {"type", "last_trade_id", "product_id", "sequence", "time"}
    assert multi > 0 and len(zeros) >= 2
    assert books["BTC-USD"] == true_book(sim, "coinbase", "BTC/USD")
    assert books["ETH-USD"] == true_book(sim, "coinbase", "ETH/USD")
    sim.ctl("/resume")


def test_ex_level2_one_change_per_message_and_crossed(sim: Running) -> None:
    """level2 sends one change per l2update; crossed sends a bid above the best ask, not in truth."""
    with sim.ws("coinbase", "/") as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["level2"]}))
        got = recv_all(ws, until=lambda fs: len(fs) >= 30)
        assert all(len(f["changes"]) == 1 for f in got if f["type"] == "l2update")
        sim.ctl("/pause")
        got += recv_all(ws)
        truth = true_book(sim, "coinbase", "ETH/USD")
        assert sim.ctl("/fault", venue="coinbase", kind="crossed").json()["fault"]["connections"] == 1
        bad = json.loads(ws.recv(timeout=5))
    assert bad["type"] == "l2update" and bad["changes"][0][0] == "buy"
    assert Decimal(bad["changes"][0][1]) > min(truth[1])
    assert true_book(sim, "coinbase", "ETH/USD") == truth
    sim.ctl("/resume")


def test_ex_errors_and_one_api_per_connection(sim: Running) -> None:
    """Unknown product / channel: Exchange error shape; an AT subscribe on an Exchange connection fails."""
    with sim.ws("coinbase", "/") as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["NOPE-USD"], "channels": ["level2_batch"]}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "error", "message": "Failed to subscribe",
                                                  "reason": "NOPE-USD is not a valid product"}
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["nope"]}))
        assert json.loads(ws.recv(timeout=5))["reason"] == "nope is not a valid channel"
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat"]}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "subscriptions", "channels": [
            {"name": "heartbeat", "product_ids": ["BTC-USD"]}]}
        ws.send(json.dumps({"type": "unsubscribe", "channels": ["heartbeat"]}))
        got = recv_all(ws, until=lambda fs: fs[-1]["type"] == "subscriptions")
        assert got[-1] == {"type": "subscriptions", "channels": []}
        assert recv_all(ws, quiet=1.5) == []          # no heartbeats after the unsubscribe
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}))
        got = recv_all(ws, until=lambda fs: fs[-1]["type"] == "error")
        assert got[-1]["reason"] == "one connection speaks one API"


def test_malformed_frames_on_both_apis(sim: Running) -> None:
    """malformed: bad JSON, wrong types, negative and NaN sizes on each API; AT ones keep sequence_num."""
    with sim.ws("coinbase", "/") as at, sim.ws("coinbase", "/") as ex:
        at_subscribe(at, "BTC-USD")
        ex.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]}))
        recv_all(at, until=lambda fs: len(fs) >= 3)
        recv_all(ex, until=lambda fs: len(fs) >= 2)
        sim.ctl("/pause")
        recv_all(at)
        recv_all(ex)
        sim.ctl("/fault", venue="coinbase", kind="malformed", count=4)
        raw_at = [at.recv(timeout=5) for _ in range(4)]
        raw_ex = [ex.recv(timeout=5) for _ in range(4)]
    for raw in (raw_at, raw_ex):
        parsed = []
        for t in raw:
            try:
                parsed.append(json.loads(t))
            except ValueError:
                parsed.append(None)
        assert parsed.count(None) == 1
    texts = "".join(raw_at + raw_ex)
    assert '"-1"' in texts and '"NaN"' in texts and '"-1.00000000"' in texts
    sim.ctl("/resume")


# --- REST ------------------------------------------------------------------------------------------

def test_product_endpoints(sim: Running) -> None:
    """AT and Exchange product endpoints: status, trading_disabled, increments; 404s; unlist."""
    at = sim.rest("coinbase", "/api/v3/brokerage/market/products/BTC-USD").json()
    assert (at["product_id"], at["status"], at["trading_disabled"], at["quote_increment"],
            at["base_increment"], at["price_increment"]) == ("BTC-USD", "online", False, "0.01", "0.00000001", "0.01")
    ex = sim.rest("coinbase", "/products/ETH-USD").json()
    assert (ex["id"], ex["status"], ex["trading_disabled"], ex["quote_increment"], ex["base_increment"]) == (
        "ETH-USD", "online", False, "0.01", "0.00000001")
    assert [p["id"] for p in sim.rest("coinbase", "/products").json()] == ["BTC-USD", "ETH-USD"]
    lst = sim.rest("coinbase", "/api/v3/brokerage/market/products").json()
    assert lst["num_products"] == 2 and [p["product_id"] for p in lst["products"]] == ["BTC-USD", "ETH-USD"]
    r = sim.rest("coinbase", "/api/v3/brokerage/market/products/NOPE-USD")
    assert r.status_code == 404 and r.json()["message"]
    r = sim.rest("coinbase", "/products/NOPE-USD")
    assert (r.status_code, r.json()) == (404, {"message": "NotFound"})
    sim.ctl("/fault", venue="coinbase", kind="unlist", symbol="ETH/USD")
    assert [p["id"] for p in sim.rest("coinbase", "/products").json()] == ["BTC-USD"]
    gone = sim.rest("coinbase", "/products/ETH-USD").json()
    assert (gone["status"], gone["trading_disabled"]) == ("delisted", True)
    gone = sim.rest("coinbase", "/api/v3/brokerage/market/products/ETH-USD").json()
    assert (gone["status"], gone["trading_disabled"]) == ("offline", True)
    sim.ctl("/fault", venue="coinbase", kind="rest_error", status=503)
    assert sim.rest("coinbase", "/products/BTC-USD").status_code == 503
    assert sim.ctl("/fault", venue="coinbase", kind="lag_snapshot").status_code == 400
    assert sim.ctl("/fault", venue="coinbase", kind="skip_seq").json()["fault"]["connections"] == 0


def test_shutdown_closes_without_notice(sim: Running) -> None:
    """shutdown: no documented notice, the connection closes with 1001."""
    with sim.ws("coinbase", "/") as ws:
        at_subscribe(ws, "BTC-USD")
        recv_all(ws, until=lambda fs: len(fs) >= 2)
        sim.ctl("/fault", venue="coinbase", kind="shutdown")
        with pytest.raises(ConnectionClosed):
            while True:
                assert "channel" in json.loads(ws.recv(timeout=5))
        assert ws.close_code == 1001
