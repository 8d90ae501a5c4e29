"""The exchange simulator, seen from outside: plain HTTP and WebSocket clients check the wire
shapes, the sequencing, that snapshot + later diffs equal the true book, each fault's effect on
the wire, and that replay serves the real recordings. The book code here is a few lines of plain
dicts on purpose (no import of the feeds' or the simulator's book code)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from services.simulator.app import Settings, Simulator, settings_from
from services.simulator.control import ControlServer
from services.simulator.market import Market, canonical, spec_for

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
RECORDED = SHARED / "fixtures" / "recorded"
EIGHT = re.compile(r"^\d+\.\d{8}$")
SYMBOLS = ("BTC/USDT", "ETH/USDT")


class Running:
    """A simulator and its control server on free loopback ports, in a thread with its own loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "simulator did not start"
        if self.error:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:  # reported to the test thread
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        self.sim = Simulator(self.settings)
        await self.sim.start()
        self.control = ControlServer(self.sim, "127.0.0.1", 0)
        await self.control.start()
        self.ready.set()
        await self.stop_event.wait()
        await self.control.stop()
        await self.sim.stop()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)
        self.loop.close()

    def port(self, venue: str) -> int:
        return self.sim.venues[venue].port

    def ctl(self, path: str, **params: Any) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.control.port}{path}", params=params, timeout=10)

    def rest(self, venue: str, path: str, **params: Any) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port(venue)}{path}", params=params, timeout=10)

    def ws(self, venue: str, path: str) -> ClientConnection:
        return connect(f"ws://127.0.0.1:{self.port(venue)}{path}", max_size=None, max_queue=None,
                       open_timeout=5, close_timeout=2)


def make(rate: float = 200.0, replays: dict[str, str] | None = None, **kw: Any) -> Running:
    raw = {"host": "127.0.0.1", "control_port": 0, "seed": 3, "rate": rate,
           "venues": {"binance": {"kind": "binance", "port": 0}, "bitstamp": {"kind": "bitstamp", "port": 0}}}
    raw.update(kw)
    return Running(settings_from(raw, SYMBOLS, replays=replays or {}, replay_speed=0.0))


@pytest.fixture
def sim() -> Iterator[Running]:
    r = make(ping_interval=0.2)
    try:
        yield r
    finally:
        r.close()


def frames(ws: ClientConnection, n: int | None = None, quiet: float = 0.4) -> list[Any]:
    """Up to ``n`` frames (decoded), stopping once nothing arrives for ``quiet`` seconds."""
    out: list[Any] = []
    while n is None or len(out) < n:
        try:
            out.append(json.loads(ws.recv(timeout=quiet)))
        except TimeoutError:
            break
    return out


def apply(side: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
    for p, a in levels:
        if Decimal(a):
            side[Decimal(p)] = Decimal(a)
        else:
            side.pop(Decimal(p), None)


def book_of(reply: dict[str, Any]) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    apply(bids, reply["bids"])
    apply(asks, reply["asks"])
    return bids, asks


def true_book(r: Running, venue: str, symbol: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    reply = r.ctl("/book", venue=venue, symbol=symbol).json()
    for p, a in reply["bids"] + reply["asks"]:
        assert p == canonical(Decimal(p)) and a == canonical(Decimal(a)) and "E" not in p + a
    prices = [Decimal(p) for p, _ in reply["bids"]]
    assert prices == sorted(prices, reverse=True)
    asks = [Decimal(p) for p, _ in reply["asks"]]
    assert asks == sorted(asks) and prices[0] < asks[0]
    return book_of(reply)


# --- market model ---------------------------------------------------------------------------------

def test_market_is_deterministic_never_crossed_and_keeps_history() -> None:
    """Same seed, same books; invariants hold after every event; state_at undoes recent events."""
    import random
    a = Market(spec_for("BTC/USDT"), random.Random(1))
    b = Market(spec_for("BTC/USDT"), random.Random(1))
    assert 250 <= len(a.book.bids) <= 500 and 250 <= len(a.book.asks) <= 500
    for i in range(1500):
        ch = a.step(i + 1, float(i), burst=i % 97 == 0)
        b.step(i + 1, float(i), burst=i % 97 == 0)
        assert len(ch) >= 0
        a.book.check()
        assert a.min_levels <= len(a.book.bids) <= a.max_levels
    assert a.book == b.book
    old = a.book.copy()
    for i in range(1500, 1510):
        a.step(i + 1, float(i))
    past, marker = a.state_at(10.0, 1509.0)
    assert (past, marker) == (old, 1500)
    assert all(p.as_tuple().exponent >= -2 for p in a.book.bids)
    assert all(q == q.quantize(Decimal("0.00000001")) for q in a.book.asks.values())


# --- Binance -------------------------------------------------------------------------------------

def test_binance_rest_shapes(sim: Running) -> None:
    """exchangeInfo lists the configured symbols; unknown symbol is 400 -1121; depth is top N."""
    info = sim.rest("binance", "/api/v3/exchangeInfo").json()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    s = sim.rest("binance", "/api/v3/exchangeInfo", symbol="ETHUSDT").json()["symbols"][0]
    assert s["status"] == "TRADING" and (s["baseAsset"], s["quoteAsset"]) == ("ETH", "USDT")
    assert {f["filterType"] for f in s["filters"]} >= {"PRICE_FILTER", "LOT_SIZE"}
    bad = sim.rest("binance", "/api/v3/exchangeInfo", symbol="NOPEUSDT")
    assert (bad.status_code, bad.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})
    d = sim.rest("binance", "/api/v3/depth", symbol="BTCUSDT", limit=7).json()
    assert set(d) == {"lastUpdateId", "bids", "asks"} and isinstance(d["lastUpdateId"], int)
    assert len(d["bids"]) == len(d["asks"]) == 7
    assert all(EIGHT.match(x) for lv in d["bids"] + d["asks"] for x in lv)
    assert Decimal(d["bids"][0][0]) < Decimal(d["asks"][0][0])
    assert abs(Decimal(d["bids"][0][0]) - 43000) < 500
    assert sim.rest("binance", "/api/v3/depth", symbol="XUSDT").status_code == 400


def test_binance_stream_shapes_and_contiguous_ids(sim: Running) -> None:
    """Combined stream frames have the real shape and U == previous u + 1 per symbol."""
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms") as ws:
        got = frames(ws, 80)
    assert len(got) == 80
    last: dict[str, int] = {}
    for f in got:
        assert set(f) == {"stream", "data"}
        d = f["data"]
        assert set(d) == {"e", "E", "s", "U", "u", "b", "a"} and d["e"] == "depthUpdate"
        assert f["stream"] == d["s"].lower() + "@depth@100ms"
        assert d["U"] <= d["u"]
        if d["s"] in last:
            assert d["U"] == last[d["s"]] + 1
        last[d["s"]] = d["u"]
        assert all(EIGHT.match(x) for lv in d["b"] + d["a"] for x in lv)
    assert set(last) == {"BTCUSDT", "ETHUSDT"}


def test_binance_raw_stream_and_subscribe_frame(sim: Running) -> None:
    """/ws/<stream> sends raw events; SUBSCRIBE is answered {"result":null,"id":N}."""
    with sim.ws("binance", "/ws/btcusdt@depth@100ms") as ws:
        f = frames(ws, 1)[0]
        assert f["e"] == "depthUpdate" and f["s"] == "BTCUSDT"
    with sim.ws("binance", "/stream") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@depth@100ms"], "id": 7}))
        got = frames(ws, 5)
        assert got[0] == {"result": None, "id": 7}
        assert all(g["stream"] == "ethusdt@depth@100ms" for g in got[1:])
        ws.send("{not json")
        assert any(g.get("code") == 3 for g in frames(ws, 30))


def test_binance_snapshot_plus_diffs_equals_truth_after_pause(sim: Running) -> None:
    """Buffer, snapshot, drop u <= lastUpdateId, apply the rest: equals /book after /pause."""
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms") as ws:
        buf = frames(ws, 10)
        snap = sim.rest("binance", "/api/v3/depth", symbol="BTCUSDT", limit=5000).json()
        buf += frames(ws, 20)
        assert sim.ctl("/pause").json() == {"ok": True, "paused": True}
        buf += frames(ws)
        assert frames(ws, quiet=0.3) == []  # nothing after the pause
    bids, asks = book_of(snap)
    book_id = snap["lastUpdateId"]
    kept = [f["data"] for f in buf if f["data"]["u"] > book_id]
    assert kept and kept[0]["U"] <= book_id + 1 <= kept[0]["u"]
    for d in kept:
        assert d["U"] <= book_id + 1
        apply(bids, d["b"])
        apply(asks, d["a"])
        book_id = d["u"]
    assert (bids, asks) == true_book(sim, "binance", "BTC/USDT")
    sim.ctl("/resume")


def test_binance_ping_and_server_shutdown(sim: Running) -> None:
    """Pings go out every ping_interval; shutdown sends !serverShutdown, then closes."""
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms") as ws:
        time.sleep(0.5)
        assert sim.ctl("/stats").json()["venues"]["binance"]["pings_sent"] >= 1
        sim.ctl("/fault", venue="binance", kind="shutdown")
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(json.loads(ws.recv(timeout=3)))
        notice = [g for g in got if g["stream"] == "!serverShutdown"]
        assert len(notice) == 1 and set(notice[0]["data"]) == {"e", "E"}
        assert notice[0]["data"]["e"] == "serverShutdown" and isinstance(notice[0]["data"]["E"], int)
        assert ws.close_code == 1001


# --- Bitstamp ------------------------------------------------------------------------------------

def test_bitstamp_protocol_and_snapshot_plus_diffs(sim: Running) -> None:
    """Ack, heartbeat, bts:error, increasing microtimestamps; snapshot + newer diffs = /book."""
    with sim.ws("bitstamp", "/") as ws:
        ws.send(json.dumps({"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusdt"}}))
        got = frames(ws, 1)
        assert got == [{"event": "bts:subscription_succeeded", "channel": "diff_order_book_btcusdt", "data": {}}]
        ws.send(json.dumps({"event": "bts:heartbeat"}))
        ws.send("nonsense{")
        got = frames(ws, 20)
        assert {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}} in got
        assert {"event": "bts:error", "channel": "",
                "data": {"code": None, "message": "Incorrect JSON format."}} in got
        snap = requests.get(f"http://127.0.0.1:{sim.port('bitstamp')}/api/v2/order_book/btcusdt",
                            timeout=5).json()
        got += frames(ws, 20)
        sim.ctl("/pause")
        got += frames(ws)
    diffs = [g for g in got if g.get("event") == "data"]
    stamps = [int(g["data"]["microtimestamp"]) for g in diffs]
    assert stamps == sorted(set(stamps)) and len(stamps) > 10
    for g in diffs:
        assert g["channel"] == "diff_order_book_btcusdt" and set(g["data"]) == {
            "timestamp", "microtimestamp", "bids", "asks"}
        assert g["data"]["timestamp"] == g["data"]["microtimestamp"][:-6]
        for p, a in g["data"]["bids"] + g["data"]["asks"]:
            assert re.match(r"^\d+\.\d{2}$", p) and EIGHT.match(a)
    assert set(snap) == {"timestamp", "microtimestamp", "bids", "asks"} and len(snap["bids"]) >= 250
    bids, asks = book_of(snap)
    for g in diffs:
        if int(g["data"]["microtimestamp"]) > int(snap["microtimestamp"]):
            apply(bids, g["data"]["bids"])
            apply(asks, g["data"]["asks"])
    assert (bids, asks) == true_book(sim, "bitstamp", "BTC/USDT")


def test_bitstamp_rest_paths(sim: Running) -> None:
    """order_book with/without slash and ?group=1; trading-pairs-info; unknown pair 404."""
    a = sim.rest("bitstamp", "/api/v2/order_book/ethusdt/", group=1)
    assert a.status_code == 200 and a.json()["bids"]
    assert sim.rest("bitstamp", "/api/v2/order_book/nopeusd").status_code == 404
    pairs = sim.rest("bitstamp", "/api/v2/trading-pairs-info/").json()
    assert [(p["name"], p["url_symbol"], p["base_decimals"], p["counter_decimals"], p["trading"])
            for p in pairs] == [("BTC/USDT", "btcusdt", 8, 2, "Enabled"), ("ETH/USDT", "ethusdt", 8, 2, "Enabled")]


# --- control interface and faults --------------------------------------------------------------------

def test_health_stats_and_bad_requests(sim: Running) -> None:
    h = sim.ctl("/health").json()
    assert h["ok"] is True and set(h["venues"]) == {"binance", "bitstamp"} and h["symbols"] == list(SYMBOLS)
    for params in ({"venue": "nope", "kind": "drop"}, {"venue": "binance", "kind": "nope"},
                   {"venue": "binance", "kind": "gap", "symbol": "DOGE/USD"}, {"venue": "binance", "kind": "unlist"}):
        r = sim.ctl("/fault", **params)
        assert r.status_code == 400 and r.json()["ok"] is False and r.json()["error"]
    assert sim.ctl("/book", venue="binance", symbol="X/Y").status_code == 400
    assert sim.ctl("/nothing").status_code == 404
    st = sim.ctl("/stats").json()["venues"]["binance"]
    assert {"connections", "frames_sent", "events_sent", "faults"} <= set(st)


def test_fault_gap_skips_update_ids(sim: Running) -> None:
    """After a gap fault the next event of the symbol has U > previous u + 1."""
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms") as ws:
        before = frames(ws, 5)
        sim.ctl("/fault", venue="binance", kind="gap", symbol="BTC/USDT", count=2)
        after = frames(ws, 30)
    last: dict[str, int] = {}
    jumps = []
    for f in before + after:
        d = f["data"]
        if d["s"] in last and d["U"] != last[d["s"]] + 1:
            jumps.append(d["s"])
            assert d["U"] > last[d["s"]] + 1
        last[d["s"]] = d["u"]
    assert jumps == ["BTCUSDT"]


def test_fault_drop_closes_abruptly(sim: Running) -> None:
    with sim.ws("bitstamp", "/") as ws:
        ws.send(json.dumps({"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusdt"}}))
        frames(ws, 2)
        assert sim.ctl("/fault", venue="bitstamp", kind="drop").json()["fault"]["connections"] == 1
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=3)
        assert ws.close_code is None or ws.close_code == 1006  # no close frame


def test_fault_silence_sends_nothing_then_resumes(sim: Running) -> None:
    """During silence: no events, no heartbeat replies, no pings; afterwards the stream goes on."""
    with sim.ws("bitstamp", "/") as ws:
        ws.send(json.dumps({"event": "bts:subscribe", "data": {"channel": "diff_order_book_btcusdt"}}))
        frames(ws, 3)
        pings = sim.ctl("/stats").json()["venues"]["bitstamp"].get("pings_sent", 0)
        sim.ctl("/fault", venue="bitstamp", kind="silence", seconds=1.0)
        frames(ws, quiet=0.05)  # whatever was already in flight
        ws.send(json.dumps({"event": "bts:heartbeat"}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.7)
        assert sim.ctl("/stats").json()["venues"]["bitstamp"].get("pings_sent", 0) == pings
        got = frames(ws, 10, quiet=2)
        assert any(g.get("event") == "data" for g in got)


def test_fault_rest_error_rate_limit_and_lag(sim: Running) -> None:
    sim.ctl("/fault", venue="binance", kind="rest_error", count=2, status=503)
    codes = [sim.rest("binance", "/api/v3/depth", symbol="BTCUSDT").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    sim.ctl("/fault", venue="binance", kind="rate_limit", count=1, seconds=3)
    r = sim.rest("binance", "/api/v3/exchangeInfo")
    assert (r.status_code, r.headers["Retry-After"], r.json()["code"]) == (429, "3", -1003)
    sim.ctl("/fault", venue="bitstamp", kind="rate_limit", status=418)
    assert sim.rest("bitstamp", "/api/v2/order_book/btcusdt/").status_code == 418
    assert sim.rest("bitstamp", "/api/v2/order_book/btcusdt/").status_code == 200
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms") as ws:
        time.sleep(0.6)
        seen = frames(ws, 50)
        sim.ctl("/fault", venue="binance", kind="lag_snapshot", ms=500)
        old = sim.rest("binance", "/api/v3/depth", symbol="BTCUSDT").json()
        new = sim.rest("binance", "/api/v3/depth", symbol="BTCUSDT").json()
    assert old["lastUpdateId"] < seen[-1]["data"]["u"] <= new["lastUpdateId"]


def test_fault_malformed_frames(sim: Running) -> None:
    """Malformed frames: invalid JSON, wrong types, negative and NaN amounts (not in truth)."""
    with sim.ws("binance", "/stream?streams=btcusdt@depth@100ms") as ws:
        frames(ws, 3)
        sim.ctl("/pause")
        frames(ws)
        truth = true_book(sim, "binance", "BTC/USDT")
        sim.ctl("/fault", venue="binance", kind="malformed", count=4)
        raw = []
        while True:
            try:
                raw.append(ws.recv(timeout=0.5))
            except TimeoutError:
                break
    assert len(raw) == 4
    bad_json = [t for t in raw if not _loads(t)]
    assert len(bad_json) == 1
    datas = [json.loads(t)["data"] for t in raw if _loads(t)]
    assert any(not isinstance(d.get("U"), int) or not isinstance(d.get("b"), list) for d in datas)
    amounts = [a for d in datas if isinstance(d.get("b"), list) for _, a in d["b"] + d["a"]]
    assert "-1.00000000" in amounts and "NaN" in amounts
    assert true_book(sim, "binance", "BTC/USDT") == truth


def _loads(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_fault_bitstamp_shutdown_and_unlist(sim: Running) -> None:
    sim.ctl("/fault", venue="bitstamp", kind="unlist", symbol="ETH/USDT")
    assert [p["name"] for p in sim.rest("bitstamp", "/api/v2/trading-pairs-info/").json()] == ["BTC/USDT"]
    sim.ctl("/fault", venue="binance", kind="unlist", symbol="BTC/USDT")
    assert sim.rest("binance", "/api/v3/exchangeInfo", symbol="BTCUSDT").status_code == 400
    sim.ctl("/fault", venue="binance", kind="relist", symbol="BTC/USDT")
    assert sim.rest("binance", "/api/v3/exchangeInfo", symbol="BTCUSDT").status_code == 200
    with sim.ws("bitstamp", "/") as ws:
        sim.ctl("/fault", venue="bitstamp", kind="shutdown")
        assert json.loads(ws.recv(timeout=3)) == {"event": "bts:request_reconnect", "channel": "", "data": ""}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=3)


# --- replay ----------------------------------------------------------------------------------------

def _recorded_frames(path: Path) -> list[str]:
    return [line.partition(": ")[2] for line in path.read_text().split("\n")
            if line and not line.startswith("wss://")]


@pytest.mark.parametrize("folder", ["binance", "binance_us"])
def test_replay_binance_serves_recording_and_implied_book(folder: str) -> None:
    rec = RECORDED / folder
    r = make(replays={"binance": str(rec)})
    try:
        syms = r.sim.venues["binance"].specs
        assert len(syms) == 4
        names = [s.replace("/", "") for s in syms]
        info = r.rest("binance", "/api/v3/exchangeInfo").text
        assert info == (rec / f"{folder.upper()}.0").read_text().split("\n")[0].partition(": ")[2]
        streams = "/".join(n.lower() + "@depth@100ms" for n in names)
        recorded = [t for t in _recorded_frames(next(rec.glob("*.ws.*"))) if "@depth@100ms" in t]
        snaps: dict[str, Any] = {}
        got: list[str] = []
        with r.ws("binance", f"/stream?streams={streams}") as ws:
            # like a feed: buffer, and fetch a symbol's snapshot once its first event is in
            while len(got) < len(recorded):
                try:
                    got.append(ws.recv(timeout=0.5))
                except TimeoutError:
                    missing = [n for n in names if n not in snaps]
                    assert missing, "replay stalled although every snapshot was fetched"
                    got.append("")
                else:
                    missing = [json.loads(got[-1])["data"]["s"]]
                for n in missing:
                    if n not in snaps:
                        snaps[n] = r.rest("binance", "/api/v3/depth", symbol=n, limit=1000).json()
                got = [g for g in got if g]
        assert got == recorded  # verbatim, in recorded order
        for sym, n in zip(syms, names, strict=True):
            bids, asks = book_of(snaps[n])
            book_id = snaps[n]["lastUpdateId"]
            for d in (json.loads(t)["data"] for t in got):
                if d["s"] == n and d["u"] > book_id:
                    assert d["U"] <= book_id + 1
                    apply(bids, d["b"])
                    apply(asks, d["a"])
                    book_id = d["u"]
            assert (bids, asks) == true_book(r, "binance", sym)
    finally:
        r.close()


def test_replay_bitstamp_holds_newer_frames_until_snapshot() -> None:
    rec = RECORDED / "bitstamp"
    r = make(replays={"bitstamp": str(rec)}, replay_gate_timeout=2.0)
    try:
        assert "ETH/USD" in r.sim.venues["bitstamp"].specs
        snap_line = next(line for line in (rec / "BITSTAMP.http.0.0").read_text().split("\n")
                         if "/order_book/ethusd" in line)
        snap_text = snap_line.partition(" -> ")[2].partition(": ")[2]
        recorded = [t for t in _recorded_frames(rec / "BITSTAMP.ws.1.0")
                    if '"channel":"diff_order_book_ethusd"' in t and '"event":"data"' in t]
        assert len(recorded) == 85
        with r.ws("bitstamp", "/") as ws:
            ws.send(json.dumps({"event": "bts:subscribe", "data": {"channel": "diff_order_book_ethusd"}}))
            assert json.loads(ws.recv(timeout=2))["event"] == "bts:subscription_succeeded"
            early = []
            while True:
                try:
                    early.append(ws.recv(timeout=0.8))
                except TimeoutError:
                    break
            # the 11 older diffs and the 1 equal to the snapshot stamp come first (README table)
            assert early == recorded[:12]
            snap = r.rest("bitstamp", "/api/v2/order_book/ethusd")
            assert snap.text == snap_text
            got = early + [ws.recv(timeout=3) for _ in range(len(recorded) - len(early))]
        assert got == recorded
        stamp = int(snap.json()["microtimestamp"])
        assert [int(json.loads(t)["data"]["microtimestamp"]) <= stamp for t in got] == [True] * 12 + [False] * 73
        bids, asks = book_of(snap.json())
        for t in got:
            d = json.loads(t)["data"]
            if int(d["microtimestamp"]) > stamp:
                apply(bids, d["bids"])
                apply(asks, d["asks"])
        assert (bids, asks) == true_book(r, "bitstamp", "ETH/USD")
    finally:
        r.close()


def test_shared_fixtures_exist() -> None:
    """The recordings are part of the test suite: missing is a failure, not a skip."""
    for name in ("binance", "binance_us", "bitstamp"):
        assert (RECORDED / name).is_dir(), RECORDED / name


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "services.simulator", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--replay" in out.stdout and "--control-port" in out.stdout
