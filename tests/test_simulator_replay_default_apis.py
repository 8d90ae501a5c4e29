"""The replay serves recordings of the feeds' default APIs (Kraken v2, Coinbase Advanced Trade,
Gemini's current WebSocket API), as bench/recording.py writes them, over real WebSockets: the
requests are acknowledged as the venue does, the recorded frames follow, Advanced Trade messages
carry the connection's own contiguous ``sequence_num``, and ``/book`` is the book the frames imply.
No feed code is imported."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from bench import recording
from services.simulator.app import settings_from
from tests.test_simulator import Running
from tests.test_simulator_replay import recv_n

SYMBOLS = ["BTC/USDT", "DOGE/USDT"]


def start(tmp: Path, kind: str) -> tuple[Running, Path]:
    folder = recording.write(tmp, SYMBOLS, 20.0, 1.0, kinds=[kind])[kind]
    raw = {"host": "127.0.0.1", "control_port": 0, "venues": {kind: {"kind": kind, "port": 0}}}
    return Running(settings_from(raw, (), replays={kind: str(folder)}, replay_speed=0.0)), folder


def received(folder: Path, stem: str) -> list[str]:
    lines = (folder / f"{stem}.ws.1.0").read_text().splitlines()
    return [ln.partition(": ")[2] for ln in lines if not ln.startswith("wss://")]


def book_of(r: Running, kind: str, symbol: str) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    b = r.ctl("/book", venue=kind, symbol=symbol).json()
    return ({Decimal(p): Decimal(q) for p, q in b["bids"]}, {Decimal(p): Decimal(q) for p, q in b["asks"]})


def put(side: dict[Decimal, Decimal], price: str, qty: str) -> None:
    if Decimal(qty):
        side[Decimal(price)] = Decimal(qty)
    else:
        side.pop(Decimal(price), None)


def test_kraken_v2_acks_then_the_recorded_frames(tmp_path: Path) -> None:
    """v2 subscribe: status on connect, acks with req_id, the instrument snapshot, then every book frame."""
    r, folder = start(tmp_path, "kraken")
    try:
        want = received(folder, "KRAKEN")
        with r.ws("kraken", "/v2") as ws:
            ws.send(json.dumps({"method": "subscribe", "params": {"channel": "instrument", "snapshot": True},
                                "req_id": 2}))
            ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": SYMBOLS,
                                                                  "depth": 1000, "snapshot": True}, "req_id": 1}))
            got = recv_n(ws, len(want) + 3)
        assert got[0] == want[0]                      # status, on connect
        acks = [json.loads(g) for g in got if '"method"' in g]
        assert [(a["req_id"], a["success"], a["result"].get("symbol")) for a in acks] == [
            (2, True, None), (1, True, "BTC/USDT"), (1, True, "DOGE/USDT")]
        assert [g for g in got if '"method"' not in g] == want
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for w in want:
            m = json.loads(w, parse_float=str)
            if m.get("channel") != "book" or m["data"][0]["symbol"] != "DOGE/USDT":
                continue
            if m["type"] == "snapshot":
                bids, asks = {}, {}
            for side, key in ((bids, "bids"), (asks, "asks")):
                for lv in m["data"][0][key]:
                    put(side, lv["price"], lv["qty"])
        assert book_of(r, "kraken", "DOGE/USDT") == (bids, asks)
    finally:
        r.close()


def test_coinbase_advanced_sequence_num_is_the_connections(tmp_path: Path) -> None:
    """Acks and frames carry sequence_num 0, 1, 2 ... on the connection; frames otherwise verbatim."""
    r, folder = start(tmp_path, "coinbase")
    try:
        want = received(folder, "COINBASE")
        with r.ws("coinbase", "/") as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USDT", "DOGE-USDT"], "channel": "level2"}))
            ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
            got = recv_n(ws, len(want) + 2)
        msgs = [json.loads(g) for g in got]
        assert [m["sequence_num"] for m in msgs] == list(range(len(want) + 2))
        assert [m["channel"] for m in msgs[:2]] == ["subscriptions", "subscriptions"]
        assert msgs[1]["events"] == [{"subscriptions": {"level2": ["BTC-USDT", "DOGE-USDT"],
                                                        "heartbeats": ["heartbeats"]}}]
        assert [{**m, "sequence_num": 0} for m in msgs[2:]] == [json.loads(w) for w in want]
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for m in msgs[2:]:
            ev = m["events"][0]
            if ev["product_id"] != "BTC-USDT":
                continue
            for u in ev["updates"]:
                put(bids if u["side"] == "bid" else asks, u["price_level"], u["new_quantity"])
        assert book_of(r, "coinbase", "BTC/USDT") == (bids, asks)
    finally:
        r.close()


def test_gemini_ws_subscribe_acks_then_depth_updates(tmp_path: Path) -> None:
    """One SUBSCRIBE per stream, each acknowledged with its id; an unknown stream is refused."""
    r, folder = start(tmp_path, "gemini")
    try:
        want = received(folder, "GEMINI")
        with r.ws("gemini", "/?snapshot=-1") as ws:
            ws.send(json.dumps({"id": 9, "method": "SUBSCRIBE", "params": ["nosuchusd@depth@100ms"]}))
            assert json.loads(recv_n(ws, 1)[0])["status"] == 400
            for i, name in enumerate(("btcusdt", "dogeusdt"), 1):
                ws.send(json.dumps({"id": i, "method": "SUBSCRIBE", "params": [f"{name}@depth@100ms"]}))
            got = recv_n(ws, len(want) + 2)
        assert [json.loads(g) for g in got[:2]] == [{"id": 1, "status": 200, "result": None},
                                                     {"id": 2, "status": 200, "result": None}]
        assert got[2:] == want
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for w in want:
            m = json.loads(w)
            if m["s"] == "dogeusdt":
                for side, key in ((bids, "b"), (asks, "a")):
                    for p, q in m[key]:
                        put(side, p, q)
        assert book_of(r, "gemini", "DOGE/USDT") == (bids, asks)
    finally:
        r.close()
