"""The shipped demo's venues and symbols (deploy/demo.toml), over real sockets against the
simulator: one snapshot of BTC/USD shows Bitstamp, Kraken, Coinbase and Gemini all ``live`` and one
of BTC/USDT Binance, Bitstamp, Kraken and Coinbase, each equal to the merged truth."""

from __future__ import annotations

from pathlib import Path

from common import config
from tests.harness import SimPipeline, wait_until

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"BTC/USD": {"bitstamp", "kraken", "coinbase", "gemini"},
            "BTC/USDT": {"binance", "bitstamp", "kraken", "coinbase"}}


def test_demo_venues_all_live_in_one_snapshot(tmp_path: Path) -> None:
    """Every venue of the demo that lists a symbol is live in one snapshot of it, books exact."""
    demo = config.load(REPO / "deploy" / "demo.toml", symbols=",".join(EXPECTED))
    venues = {v.id: {"kind": v.kind, "api": v.api, "symbols": list(v.symbols),
                     **({"depth": v.depth} if v.kind == "kraken" else {})} for v in demo.enabled_venues}
    assert {v for v, c in venues.items() if "BTC/USD" in c["symbols"]} == EXPECTED["BTC/USD"]
    assert {v for v, c in venues.items() if "BTC/USDT" in c["symbols"]} == EXPECTED["BTC/USDT"]
    p = SimPipeline(tmp_path, venues, list(EXPECTED))
    try:
        p.start()
        for sym, want in EXPECTED.items():
            wait_until(lambda s=sym, w=want: (m := p.subs[s].last) is not None
                       and m["venues"] == dict.fromkeys(w, "live"),
                       timeout=90, pump=p.drain, what=f"{sym}: {sorted(want)} live in one snapshot")
        p.settle("demo venues")
        for sym, want in EXPECTED.items():
            m = p.subs[sym].last
            assert m["venues"] == dict.fromkeys(want, "live")
            assert {lv[2] for lv in m["bids"] + m["asks"]} <= want
    finally:
        p.close()
