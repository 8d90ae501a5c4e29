"""The benchmark's synthetic recordings (bench/recording.py): Kraken checksums that verify with an
independent implementation, and books the simulator's replay implies exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from bench import recording
from services.simulator.kraken import crc32_of
from services.simulator.replay import make_replay_server

SHARED = Path(__file__).resolve().parents[2] / "shared"
VECTORS = SHARED / "fixtures" / "kraken_checksum_examples.json"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "DOGE/USDT"]


def _vectors() -> list[dict]:
    assert VECTORS.is_file(), f"{VECTORS} missing (shared/ must sit beside the repo)"
    return list(json.loads(VECTORS.read_text())["vectors"])


@pytest.mark.parametrize("i", range(3))
def test_kraken_checksum_matches_the_official_vectors(i: int) -> None:
    """The writer's checksum gives each official vector's expected value."""
    v = _vectors()[i]
    asks = [(a[0], a[1]) for a in v["asks_low_to_high"]]
    bids = [(b[0], b[1]) for b in v["bids_high_to_low"]]
    assert recording.kraken_checksum(asks, bids) == v["expected_checksum"]


def _levels_v1(part: dict, keys: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(p, q) for k in keys for p, q, *_ in part.get(k, [])]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_synthetic_kraken_checksum_verifies(api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each checksum equals the simulator's CRC32 of the book rebuilt from the wire text."""
    monkeypatch.setitem(recording.API, "kraken", api)
    folder = recording.write(tmp_path, SYMBOLS, 50.0, 2.0, kinds=["kraken"])["kraken"]
    books: dict[str, tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]]] = {}
    checked = 0
    for line in (folder / "KRAKEN.ws.1.0").read_text().splitlines():
        if line.startswith("wss://"):
            continue
        text = line.partition(": ")[2]
        changes: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]], object]] = []
        if api == "v1":
            msg = json.loads(text)
            if not isinstance(msg, list):
                continue
            crc = next((part["c"] for part in msg[1:-2] if "c" in part), None)
            parts = msg[1:-2]
            changes.append((msg[-1], [lv for part in parts for lv in _levels_v1(part, ("bs", "b"))],
                            [lv for part in parts for lv in _levels_v1(part, ("as", "a"))], crc))
        else:
            if not text.startswith('{"channel":"book"'):
                continue
            # numbers keep their token text (the digits the checksum is computed over)
            msg = json.loads(text, parse_float=str, parse_int=str)
            for item in msg["data"]:
                changes.append((item["symbol"], [(lv["price"], lv["qty"]) for lv in item["bids"]],
                                [(lv["price"], lv["qty"]) for lv in item["asks"]], item["checksum"]))
        for pair, bids_in, asks_in, crc in changes:
            bids, asks = books.setdefault(pair, ({}, {}))
            for side, levels in ((bids, bids_in), (asks, asks_in)):
                for p, q in levels:
                    if Decimal(q):
                        side[Decimal(p)] = (p, q)
                    else:
                        side.pop(Decimal(p), None)
            if crc is None:
                continue
            want = crc32_of([asks[p] for p in sorted(asks)], [bids[p] for p in sorted(bids, reverse=True)])
            assert int(str(crc)) == want, f"{pair}: checksum {crc} != {want}"
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("kind", recording.KINDS)
def test_replay_serves_every_synthetic_recording(kind: str, tmp_path: Path) -> None:
    """The replay reads each kind's recording and implies a book for every symbol, never crossed."""
    folder = recording.write(tmp_path, SYMBOLS, 20.0, 2.0, kinds=[kind])[kind]
    server = make_replay_server(kind, kind, folder, speed=1.0, gate_timeout=5, host="127.0.0.1", port=0)
    assert sorted(server.implied) == sorted(SYMBOLS)
    for sym, (bids, asks) in server.implied.items():
        assert bids and asks, sym
        assert max(bids) < min(asks), sym
