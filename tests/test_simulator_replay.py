"""Replays of the real Kraken (v1), Coinbase (Exchange level2) and Gemini (market data v2)
recordings over real WebSockets: a client that sends what the recorder sent gets every recorded
frame verbatim and in order; ``/book`` equals the book a few lines of plain dicts build from those
frames (for Kraken after every recorded checksum has verified); subscriptions filter; the
recorded REST listings are served. No feed code is imported."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from services.simulator.app import settings_from
from services.simulator.replay import RecordingError, detect_kind, make_replay_server
from tests.test_simulator import RECORDED, Running, true_book

PATHS = {"kraken": "/", "coinbase": "/", "gemini": "/v2/marketdata/"}
FILES = {"kraken": "KRAKEN.ws.50.0", "coinbase": "COINBASE.ws.28.0", "gemini": "GEMINI.ws.1.0"}
COUNTS = {"kraken": 4321, "coinbase": 9946, "gemini": 678}


def recording(venue: str) -> tuple[list[str], list[str]]:
    """(frames the recorder sent, frames it received), texts verbatim."""
    sent, received = [], []
    for line in (RECORDED / venue / FILES[venue]).read_text(encoding="utf-8").split("\n"):
        if not line or " <-> " in line.split(": ", 1)[0]:
            continue
        head, _, text = line.partition(": ")
        (sent if " <- " in head else received).append(text)
    return sent, received


def start(venue: str) -> Running:
    raw = {"host": "127.0.0.1", "control_port": 0, "venues": {venue: {"kind": venue, "port": 0}}}
    return Running(settings_from(raw, (), replays={venue: str(RECORDED / venue)}, replay_speed=0.0))


@pytest.fixture(scope="module", params=["kraken", "coinbase", "gemini"])
def replayed(request: pytest.FixtureRequest) -> Iterator[tuple[str, Running, list[str]]]:
    """One replay server per venue and what a recorder-like client received from it."""
    venue = request.param
    r = start(venue)
    try:
        sent, _ = recording(venue)
        got: list[str] = []
        with r.ws(venue, PATHS[venue]) as ws:
            for text in sent:
                ws.send(text)
            got = recv_n(ws, COUNTS[venue])
        yield venue, r, got
    finally:
        r.close()


def recv_n(ws: ClientConnection, n: int, timeout: float = 10.0) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        try:
            out.append(str(ws.recv(timeout=timeout)))
        except TimeoutError:
            break
    return out


def test_every_recorded_frame_verbatim(replayed: tuple[str, Running, list[str]]) -> None:
    """Frame count equals the recording's; first, last and every frame byte-identical, in order."""
    venue, r, got = replayed
    _, received = recording(venue)
    assert len(received) == COUNTS[venue] == len(got)
    assert got[0] == received[0] and got[-1] == received[-1]
    assert got == received
    assert r.ctl("/health").json()["venues"][venue]["frames"] == COUNTS[venue]


def _kraken_books(frames: list[Any]) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Kraken v1 book from the wire text, truncated to the depth; every checksum verified."""
    def digits(t: str) -> str:
        return t.replace(".", "").lstrip("0")

    books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    checked = 0
    for f in frames:
        if not isinstance(f, list):
            continue
        pair, depth = f[-1], int(f[-2].split("-")[1])
        crc = None
        for part in f[1:-2]:
            if "as" in part:
                books[pair] = ({}, {})
            bids, asks = books[pair]
            for key, side in (("as", asks), ("bs", bids), ("a", asks), ("b", bids)):
                for p, v, *_ in part.get(key, []):
                    if Decimal(v):
                        side[p] = v
                    else:
                        side.pop(p, None)
            crc = part.get("c", crc)
        bids, asks = books[pair]
        for side, rev in ((bids, True), (asks, False)):
            for p in sorted(side, key=Decimal, reverse=rev)[depth:]:
                del side[p]
        if crc is not None:
            top = [(p, asks[p]) for p in sorted(asks, key=Decimal)[:10]]
            top += [(p, bids[p]) for p in sorted(bids, key=Decimal, reverse=True)[:10]]
            text = "".join(digits(p) + digits(v) for p, v in top)
            assert str(zlib.crc32(text.encode())) == crc, (pair, checked)
            checked += 1
    assert checked == 4269
    return books


def _plain_books(venue: str, frames: list[Any]) -> dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]]:
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}

    def put(side: dict[Decimal, Decimal], p: str, q: str) -> None:
        if Decimal(q):
            side[Decimal(p)] = Decimal(q)
        else:
            side.pop(Decimal(p), None)

    for f in frames:
        if venue == "coinbase" and f.get("type") == "snapshot":
            books[f["product_id"]] = ({}, {})
            for p, q in f["bids"]:
                put(books[f["product_id"]][0], p, q)
            for p, q in f["asks"]:
                put(books[f["product_id"]][1], p, q)
        elif venue == "coinbase" and f.get("type") == "l2update":
            for side, p, q in f["changes"]:
                put(books[f["product_id"]][0 if side == "buy" else 1], p, q)
        elif venue == "gemini" and f.get("type") == "l2_updates":
            if "trades" in f:
                books[f["symbol"]] = ({}, {})
            for side, p, q in f["changes"]:
                put(books[f["symbol"]][0 if side == "buy" else 1], p, q)
    return books


def test_book_is_what_the_frames_imply(replayed: tuple[str, Running, list[str]]) -> None:
    """/book of every recorded symbol equals the book built here from the frames received."""
    venue, r, got = replayed
    frames = [json.loads(t) for t in got]
    if venue == "kraken":
        text_books = _kraken_books(frames)
        books = {pair: ({Decimal(p): Decimal(v) for p, v in b.items()}, {Decimal(p): Decimal(v) for p, v in a.items()})
                 for pair, (b, a) in text_books.items()}
        names = {pair: pair.replace("XBT", "BTC") for pair in books}
    else:
        books = _plain_books(venue, frames)
        if venue == "coinbase":
            names = {pid: pid.replace("-", "/") for pid in books}
        else:
            names = {"BTCGBP": "BTC/GBP", "LINKETH": "LINK/ETH", "FILUSD": "FIL/USD", "ZECLTC": "ZEC/LTC",
                     "BATBTC": "BAT/BTC", "ETHEUR": "ETH/EUR", "LTCETH": "LTC/ETH", "GRTUSD": "GRT/USD",
                     "ANKRUSD": "ANKR/USD", "ALCXUSD": "ALCX/USD"}
    assert len(books) == 10
    for key, book in books.items():
        assert true_book(r, venue, names[key]) == book, key


@pytest.mark.parametrize("venue", ["kraken", "coinbase", "gemini"])
def test_subscription_filters_and_errors(venue: str) -> None:
    """One symbol subscribed: only its frames (and the unkeyed ones); bad subscribes are errors."""
    r = start(venue)
    try:
        _, received = recording(venue)
        if venue == "kraken":
            sub = {"event": "subscribe", "pair": ["XBT/CHF"], "subscription": {"name": "book", "depth": 1000}}
            mine = [t for t in received if '"XBT/CHF"' in t or '"event":"heartbeat"' in t or "systemStatus" in t]
            bad = [{"event": "subscribe", "pair": ["XBT/EUR"], "subscription": {"name": "book", "depth": 1000}},
                   {"event": "subscribe", "pair": ["XBT/CHF"], "subscription": {"name": "book", "depth": 10}}]
        elif venue == "coinbase":
            sub = {"type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["level2_batch"]}
            mine = [t for t in received if '"type":"subscriptions"' in t or (
                '"product_id":"SKL-USD"' in t and ('"type":"snapshot"' in t or '"type":"l2update"' in t))]
            bad = [{"type": "subscribe", "product_ids": ["NOPE-USD"], "channels": ["level2_batch"]},
                   {"type": "subscribe", "product_ids": ["SKL-USD"], "channel": "level2"}]
        else:
            sub = {"type": "subscribe", "subscriptions": [{"name": "l2", "symbols": ["ETHEUR"]}]}
            mine = [t for t in received if '"symbol":"ETHEUR"' in t or '"type":"heartbeat"' in t]
            bad = [{"type": "subscribe", "subscriptions": [{"name": "l2", "symbols": ["BTCUSD"]}]},
                   {"type": "subscribe", "subscriptions": [{"name": "candles_1m", "symbols": ["ETHEUR"]}]}]
        with r.ws(venue, PATHS[venue]) as ws:
            got = [str(ws.recv(timeout=5))] if venue == "kraken" else []   # systemStatus on connect
            errors = []
            for b in bad:
                ws.send(json.dumps(b))
                errors.append(json.loads(ws.recv(timeout=5)))
            ws.send(json.dumps(sub))
            got += recv_n(ws, len(mine) - len(got), timeout=3)
            assert recv_n(ws, 1, timeout=0.5) == []
        assert all(e.get("status") == "error" or e.get("type") == "error" or e.get("result") == "error"
                   for e in errors), errors
        assert got == mine and len(mine) > 20
    finally:
        r.close()


def test_recorded_rest_listings() -> None:
    """Kraken AssetPairs, Coinbase products (both APIs), Gemini symbols: from the recordings."""
    def body(venue: str, stem: str, url_end: str) -> str:
        for line in (RECORDED / venue / f"{stem}.0").read_text().split("\n"):
            url, _, rest = line.partition(" -> ")
            if url.endswith(url_end):
                return rest.partition(": ")[2]
        raise AssertionError(url_end)

    k = start("kraken")
    try:
        assert k.rest("kraken", "/0/public/AssetPairs").text == body("kraken", "KRAKEN", "/AssetPairs")
        one = k.rest("kraken", "/0/public/AssetPairs", pair="XBTCHF").json()
        assert one["error"] == [] and [v["wsname"] for v in one["result"].values()] == ["XBT/CHF"]
        assert k.rest("kraken", "/0/public/AssetPairs", pair="NOPE").json() == {"error": ["EQuery:Unknown asset pair"]}
    finally:
        k.close()
    c = start("coinbase")
    try:
        assert c.rest("coinbase", "/products").text == body("coinbase", "COINBASE", "/products")
        p = c.rest("coinbase", "/products/SKL-USD").json()
        assert (p["id"], p["status"], p["trading_disabled"]) == ("SKL-USD", "online", False)
        at = c.rest("coinbase", "/api/v3/brokerage/market/products/SKL-USD").json()
        assert (at["product_id"], at["status"], at["quote_increment"]) == ("SKL-USD", "online", p["quote_increment"])
        assert c.rest("coinbase", "/products/NOPE-USD").status_code == 404
    finally:
        c.close()
    g = start("gemini")
    try:
        assert g.rest("gemini", "/v1/symbols").text == body("gemini", "GEMINI", "/v1/symbols")
        assert g.rest("gemini", "/v1/symbols/details/btcgbp").text == body("gemini", "GEMINI", "/details/btcgbp")
        assert g.rest("gemini", "/v1/symbols/details/nope").status_code == 400
    finally:
        g.close()


def test_detect_kind_of_every_recording(tmp_path: Path) -> None:
    """Each folder names its venue; a wrong kind or a folder without <EXCHANGE>.0 is an error."""
    kinds = {name: detect_kind(RECORDED / name) for name in
             ("binance", "binance_us", "bitstamp", "kraken", "coinbase", "gemini")}
    assert kinds == {"binance": "binance", "binance_us": "binance", "bitstamp": "bitstamp", "kraken": "kraken",
                     "coinbase": "coinbase", "gemini": "gemini"}
    with pytest.raises(RecordingError, match="coinbase recording"):
        make_replay_server("k", "kraken", RECORDED / "coinbase", speed=0, gate_timeout=1, host="127.0.0.1", port=0)
    with pytest.raises(RecordingError, match=r"no <EXCHANGE>\.0"):
        detect_kind(tmp_path)
