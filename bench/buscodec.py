"""Feed-bus codec microbenchmark: encode (feed side) and decode (aggregator side) in process, in
microseconds per message, for this tree's :mod:`common.schema` and, in the same run, the schema of
a baseline git revision (``--base``, default the commit before the positional encoding).

Messages are real-shaped: deltas as the simulator's market emits them (one event, ~2.7 levels,
and grouped to >= 10 levels), snaps of the simulator's whole book (250-500 levels a side), a
status and a heartbeat of 20 symbols, and (``recorded``) one delta per depth frame of the Binance
and Bitstamp recordings in shared/fixtures/recorded. Encode is ``encode_feed(msg)`` (topic + payload); decode is
``decode_feed(frames)`` as the aggregator's ``on_feed`` calls it (snapshot replies decode through
the same payload decoder). Every delta is decoded once per run and the decoder's memo of level text
is emptied before each run (so a snap's figure is all misses, the deltas' what a stream's own
repeats give). Each figure is the best of ``--repeat`` runs, in process CPU time
(this machine is shared: wall time counts the other processes' turns too).

    .venv/bin/python -m bench.buscodec [--base REV] [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.aggbench import market_delta
from common import schema
from services.simulator.market import Market, spec_for

ROOT = Path(__file__).resolve().parents[1]
BASE = "38e3c534ab3aab27484e4922c21a929fadf5b9d0"
SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def load_base(rev: str) -> ModuleType:
    """``common/schema.py`` as of git revision ``rev``, imported as a module of its own."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:common/schema.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "schema_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("schema_base", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["schema_base"] = mod
    spec.loader.exec_module(mod)
    return mod


Levels = list[tuple[Decimal, Decimal]]


def workload(n: int) -> dict[str, list[tuple[str, Any]]]:
    """Per case, ``n`` messages as constructor arguments ``(class name, args)``."""
    out: dict[str, list[tuple[str, Any]]] = {"delta": [], "delta10": [], "snap": [], "status": [], "hb": []}
    for sym in SYMBOLS:
        rng = random.Random(f"bus:{sym}")
        m = Market(spec_for(sym), rng)
        out["snap"].append(("BookMsg", ("snap", "binance", sym, 7, 1, 1, 2, m.book.sorted_bids(),
                                        m.book.sorted_asks(), None)))
        for group, case in ((1, "delta"), (10, "delta10")):
            for i in range(n):
                bids, asks = market_delta(m, rng, group)
                ts = 1_700_000_000_000_000_000 + i * 1_000_000
                out[case].append(("BookMsg", ("delta", "binance", sym, 1795979906978404976, i + 2, ts, ts + 5,
                                              bids, asks, None)))
        out["status"].append(("StatusMsg", ("binance", sym, 1795979906978404976, 9, "stale", "no frames for 10 s",
                                            1_700_000_000_000_000_000)))
    # deltas as the feeds publish the recorded Binance and Bitstamp depth frames (str of the parsed
    # Decimal: "0.00000000" goes out as "0E-8"); absent when shared/ is not beside the repository
    from bench.frames import recorded
    from services.feed_binance import parse as bparse
    from services.feed_bitstamp import parse as sparse

    out["recorded"] = []
    for kind, parse in (("binance", bparse), ("bitstamp", sparse)):
        for st in recorded(kind) or []:
            for i, text in enumerate(st.frames):
                ev = parse.parse_frame(text)
                out["recorded"].append(("BookMsg", ("delta", kind, st.symbol, 7, i + 2, ev.ets, ev.ets + 5,
                                                    ev.bids, ev.asks, None)))
    if not out["recorded"]:
        del out["recorded"]
    out["hb"].append(("HeartbeatMsg", ("binance", 1795979906978404976, 1_700_000_000_000_000_000,
                                       {f"S{i}/USDT": 1000 + i for i in range(20)}, "")))
    return out


def best(fn: Callable[[], None], count: int, repeat: int, mod: ModuleType | None = None) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``count`` messages), in us per message;
    ``mod``'s memo caches of level text (if any) are emptied before each run."""
    times = []
    for _ in range(repeat):
        for name in ("_price_memo", "_qty_memo"):
            memo = getattr(mod, name, None)
            if memo is not None:
                memo.clear()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times) / count * 1e6


def measure(mod: ModuleType, work: dict[str, list[tuple[str, Any]]], repeat: int) -> dict[str, tuple[float, float]]:
    out = {}
    for case, specs in work.items():
        msgs = [getattr(mod, cls)(*args) for cls, args in specs]
        loops = 1 if len(msgs) > 100 or case == "snap" else 2000
        enc, dec = mod.encode_feed, mod.decode_feed
        frames = [enc(m) for m in msgs]
        for m, f in zip(msgs, frames):
            assert dec(f) == m, (case, m)

        def run_enc(msgs: list[Any] = msgs, loops: int = loops, enc: Any = enc) -> None:
            for _ in range(loops):
                for m in msgs:
                    enc(m)

        def run_dec(frames: list[list[bytes]] = frames, loops: int = loops, dec: Any = dec) -> None:
            for _ in range(loops):
                for f in frames:
                    dec(f)

        n = loops * len(msgs)
        out[case] = (best(run_enc, n, repeat), best(run_dec, n, repeat, mod))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=BASE, help="git revision of the baseline schema (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure; the best is kept (default: 7)")
    ap.add_argument("--n", type=int, default=3000, help="deltas per symbol and shape (default: %(default)s)")
    args = ap.parse_args(argv)
    base = load_base(args.base)
    work = workload(args.n)
    sizes = {c: sum(len(schema.encode_feed(getattr(schema, k)(*a))[1]) for k, a in s) / len(s)
             for c, s in work.items()}
    base_sizes = {c: sum(len(base.encode_feed(getattr(base, k)(*a))[1]) for k, a in s) / len(s)
                  for c, s in work.items()}
    levels = {c: sum(len(a[7]) + len(a[8]) for k, a in s if k == "BookMsg") / len(s) for c, s in work.items()}
    # interleave base and this tree, twice, so drift on a shared machine hits both alike
    res: dict[str, list[dict[str, tuple[float, float]]]] = {"base": [], "new": []}
    for _ in range(2):
        res["base"].append(measure(base, work, args.repeat))
        res["new"].append(measure(schema, work, args.repeat))
    b = {c: tuple(min(r[c][i] for r in res["base"]) for i in (0, 1)) for c in work}
    n = {c: tuple(min(r[c][i] for r in res["new"]) for i in (0, 1)) for c in work}
    print(f"feed bus codec, us/message (best of {args.repeat}x2), baseline {args.base[:10]} vs this tree")
    print(f"{'message':<9}{'levels':>7}{'bytes':>13} | {'enc base':>9}{'enc new':>9}{'ratio':>7} | "
          f"{'dec base':>9}{'dec new':>9}{'ratio':>7}")
    for c in work:
        print(f"{c:<9}{levels[c]:>7.1f}{base_sizes[c]:>7.0f}->{sizes[c]:<5.0f}| "
              f"{b[c][0]:>9.2f}{n[c][0]:>9.2f}{n[c][0] / b[c][0]:>7.2f} | "
              f"{b[c][1]:>9.2f}{n[c][1]:>9.2f}{n[c][1] / b[c][1]:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
