"""A synthetic recording at an exact rate, for the simulator's replay mode (``--replay``).

Why: the simulator's live market model costs ~100-250 us of CPU per event (book model, text
formatting, one asyncio timer per symbol); at 10x the live rate (4,000 events/s) it needs about a
whole core of the two and still delivers only ~60% of the rate, and at 30x it cannot. Replaying a
recording costs it a fraction of that, so the pipeline under test gets the CPU and the rate is the
one asked for. The simulator still serves everything over the venues' real wire protocols (REST
pair lists and snapshots, Binance combined streams with ``U``/``u``, Bitstamp diffs with
microtimestamps), gated on the snapshot request as for real recordings.

Written in the cryptofeed capture format the replay reads (``fixtures/recorded/README.md``), into
the run's results folder (never the repository). Market shape: per symbol a fixed mid, 150 levels
per side at every tick, events of 1-4 level changes (new size ~70%, delete ~15%, re-insert ~15%)
biased to the top of the book like the simulator's model, Poisson arrivals at ``rate`` per symbol
per venue, 8-decimal amounts. Bids stay below the mid and asks above, so books never cross.
The first ``pre`` seconds come before the snapshot (a feed buffers them, as on the real venue).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from services.simulator.binance import BinanceServer
from services.simulator.bitstamp import BitstampServer
from services.simulator.market import spec_for

LEVELS = 150
T0 = 1_700_000_000.0   # recorded clock origin (only differences matter to the replay)


def _price(ticks: int, decimals: int, width: int) -> str:
    """ticks of 10**-decimals as text with ``width`` decimals (Binance pads to 8)."""
    s = str(ticks).rjust(decimals + 1, "0")
    whole, frac = s[:-decimals] if decimals else s, s[-decimals:] if decimals else ""
    return f"{whole}.{frac.ljust(width, '0')}" if width else whole


def _amount(rng: random.Random) -> str:
    q = rng.randint(1, rng.choice((10**5, 10**6, 10**7, 10**8, 10**8, 10**9)))
    return f"{q // 10**8}.{q % 10**8:08d}"


class _Book:
    def __init__(self, symbol: str, rng: random.Random) -> None:
        spec = spec_for(symbol)
        self.decimals = spec.price_decimals
        self.mid = int(spec.mid / spec.tick)
        self.rng = rng
        self.bids = {self.mid - k: _amount(rng) for k in range(1, LEVELS + 1)}
        self.asks = {self.mid + k: _amount(rng) for k in range(1, LEVELS + 1)}

    def event(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        r = self.rng
        b: dict[int, str] = {}
        a: dict[int, str] = {}
        for _ in range(r.randint(1, 4)):
            is_bid = r.random() < 0.5
            side, out, sign = (self.bids, b, -1) if is_bid else (self.asks, a, 1)
            k = min(int(r.expovariate(1 / 12)), LEVELS - 1) + 1
            t = self.mid + sign * k
            op = r.random()
            if t in side and op < 0.15:
                out[t] = "0"
                del side[t]
            else:
                side[t] = out[t] = _amount(r)
        return list(b.items()), list(a.items())


def _levels(levels: list[tuple[int, str]], decimals: int, width: int) -> str:
    return ",".join(f'["{_price(t, decimals, width)}","{q}"]' for t, q in levels)


def _book_body(book: _Book, width: int) -> tuple[list[list[str]], list[list[str]]]:
    bids = [[_price(t, book.decimals, width), q] for t, q in sorted(book.bids.items(), reverse=True)]
    asks = [[_price(t, book.decimals, width), q] for t, q in sorted(book.asks.items())]
    return bids, asks


def write(root: Path, symbols: list[str], rate: float, seconds: float, *, pre: float = 0.5,
          seed: int = 1) -> dict[str, Path]:
    """Write ``root/binance`` and ``root/bitstamp`` recordings of ``pre + seconds`` s at ``rate``
    events/s per symbol; returns the folders. Cost: a few us per frame."""
    out = {}
    for kind in ("binance", "bitstamp"):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{kind}")
        books = {s: _Book(s, random.Random(f"{seed}:{kind}:{s}")) for s in symbols}
        times: list[tuple[float, str]] = []
        for s in symbols:
            times.append((rng.uniform(0, pre / 2), s))   # every symbol has an event before its snapshot
            t = rng.expovariate(rate)
            while t < pre + seconds:
                times.append((t, s))
                t += rng.expovariate(rate)
        times.sort()
        snap_written: dict[str, str] = {}
        lines: list[str] = []
        if kind == "binance":
            ids = {s: rng.randint(10**8, 10**9) for s in symbols}
            url = "wss://stream.binance.com:9443/stream?streams=" + "/".join(
                s.replace("/", "").lower() + "@depth@100ms" for s in symbols)
            lines.append(f"{url} <-> {T0}")
            for t, s in times:
                if t >= pre and s not in snap_written:
                    bids, asks = _book_body(books[s], 8)
                    snap_written[s] = json.dumps({"lastUpdateId": ids[s], "bids": bids, "asks": asks},
                                                 separators=(",", ":"))
                bk = books[s]
                bl, al = bk.event()
                first = ids[s] + 1
                ids[s] = last = first + rng.choice((0, 0, 0, 1, 2, 5))
                key = s.replace("/", "")
                ms = int((T0 + t) * 1000)
                lines.append(f'{T0 + t:.6f}: {{"stream":"{key.lower()}@depth@100ms","data":{{"e":"depthUpdate",'
                             f'"E":{ms},"s":"{key}","U":{first},"u":{last},"b":[{_levels(bl, bk.decimals, 8)}],'
                             f'"a":[{_levels(al, bk.decimals, 8)}]}}}}')
            srv = BinanceServer("binance", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
            info = srv.exchange_info({})
            (folder / "BINANCE.0").write_text(
                f"https://api.binance.com/api/v3/exchangeInfo -> {T0}: {json.dumps(info, separators=(',', ':'))}\n")
            http = [f"https://api.binance.com/api/v3/depth?symbol={s.replace('/', '')}&limit=5000 -> "
                    f"{T0 + pre:.6f}: {body}" for s, body in snap_written.items()]
            (folder / "BINANCE.http.0.0").write_text("\n".join(http) + "\n")
            (folder / "BINANCE.ws.1.0").write_text("\n".join(lines) + "\n")
        else:
            base_us = int(T0 * 1e6)
            last_us = dict.fromkeys(symbols, 0)
            url = "wss://ws.bitstamp.net/"
            lines.append(f"{url} <-> {T0}")
            for s in symbols:
                ch = "diff_order_book_" + s.replace("/", "").lower()
                lines.append(f'{url} <- {T0:.6f}: {{"event":"bts:subscribe","data":{{"channel":"{ch}"}}}}')
            for t, s in times:
                bk = books[s]
                us = max(base_us + 2 * int(t * 1e6), last_us[s] + 2)
                if t >= pre and s not in snap_written:
                    bids, asks = _book_body(bk, 0)
                    mt = last_us[s] + 1 if last_us[s] else us - 1
                    snap_written[s] = json.dumps({"timestamp": str(mt // 1_000_000), "microtimestamp": str(mt),
                                                  "bids": bids, "asks": asks})
                last_us[s] = us
                bl, al = bk.event()
                ch = "diff_order_book_" + s.replace("/", "").lower()
                lines.append(f'{T0 + t:.6f}: {{"data":{{"timestamp":"{us // 1_000_000}","microtimestamp":"{us}",'
                             f'"bids":[{_levels(bl, bk.decimals, 0)}],"asks":[{_levels(al, bk.decimals, 0)}]}},'
                             f'"channel":"{ch}","event":"data"}}')
            srv2 = BitstampServer("bitstamp", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
            (folder / "BITSTAMP.0").write_text(
                f"https://www.bitstamp.net/api/v2/trading-pairs-info/ -> {T0}: "
                f"{json.dumps(srv2.pairs_info(), separators=(',', ':'))}\n")
            http = [f"https://www.bitstamp.net/api/v2/order_book/{s.replace('/', '').lower()} -> {T0 + pre:.6f}: {body}"
                    for s, body in snap_written.items()]
            (folder / "BITSTAMP.http.0.0").write_text("\n".join(http) + "\n")
            (folder / "BITSTAMP.ws.1.0").write_text("\n".join(lines) + "\n")
        missing = sorted(set(symbols) - set(snap_written))
        if missing:
            raise ValueError(f"{kind}: no event after {pre} s for {missing}: record longer")
        out[kind] = folder
    return out
