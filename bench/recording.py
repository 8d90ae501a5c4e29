"""A synthetic recording at an exact rate, for the simulator's replay mode (``--replay``), for the
five venue kinds.

Why: the simulator's live market model costs ~100-250 us of CPU per event (book model, text
formatting, one asyncio timer per symbol); at 10x the live rate it needs about a whole core of the
two and still delivers only part of the rate. Replaying a recording costs it a fraction of that, so
the pipeline under test gets the CPU and the rate is the one asked for. The simulator still serves
everything over the venues' real wire protocols, gated on the snapshot request as for real
recordings (REST-snapshot venues).

Which API of each venue (:data:`API`, the venue's ``api`` key; every feed's default API, which the
simulator's replay serves, see ``services/simulator/replay.py``):

* Binance spot: combined depth streams with ``U``/``u``, REST snapshot with ``lastUpdateId``;
* Bitstamp v2: ``diff_order_book`` with microtimestamps, REST snapshot;
* Kraken WebSocket v2 (the feed's default): ``status`` on connect, the ``instrument`` snapshot
  (price precision = the tick's decimals, qty precision 8), ``book`` at depth 1000 with an in-band
  snapshot, unquoted numbers at those precisions, a CRC32 ``checksum`` on the snapshot and every
  update, computed here by :func:`kraken_checksum` (Kraken's documented algorithm on the wire
  text: top 10 asks ascending then top 10 bids descending, '.' removed, leading zeros stripped,
  price then qty). ``API["kraken"] = "v1"`` writes v1 instead (arrays, quoted prices with the
  pair's decimals + 3, ``"c"`` on updates);
* Coinbase Advanced Trade ``level2`` (the feed's default): ``l2_data`` messages, one product's
  ``snapshot`` then ``update`` events (``bid``/``offer``, absolute ``new_quantity``); the replay
  numbers every message of a connection with its own ``sequence_num``. ``API["coinbase"] =
  "exchange"`` writes the Exchange's ``level2_batch`` instead (``snapshot``, ``l2update``);
* Gemini's current WebSocket API (the feed's default): one ``SUBSCRIBE`` of
  ``<sym>@depth@100ms`` per symbol on ``/?snapshot=-1``, ``depthUpdate`` events with contiguous
  ``U``/``u`` whose first per symbol is the whole book (``API["gemini"] = "v2"`` writes market
  data v2 ``l2`` instead: its first ``l2_updates``, the one with ``trades``, is the whole book).

Written in the cryptofeed capture format the replay reads (``fixtures/recorded/README.md``), into
the run's results folder (never the repository). Market shape: per symbol a fixed mid, 150 levels
per side at every tick, events of 1-4 level changes (new size ~70%, delete ~15%, re-insert ~15%)
biased to the top of the book like the simulator's model, Poisson arrivals at ``rate`` per symbol
per venue, 8-decimal amounts. Bids stay below the mid and asks above, so books never cross; a book
never holds more than 150 levels per side, so Kraken's depth 1000 never truncates it. REST venues:
the first ``pre`` seconds come before the snapshot (a feed buffers them, as on the real venue);
in-band venues: every snapshot is sent right after the subscription.
"""

from __future__ import annotations

import heapq
import json
import random
import zlib
from collections.abc import Iterable
from pathlib import Path

from services.simulator.binance import BinanceServer
from services.simulator.bitstamp import BitstampServer
from services.simulator.coinbase import CoinbaseServer
from services.simulator.kraken import asset_pair, instrument_snapshot, rest_key, v1_name
from services.simulator.market import spec_for

LEVELS = 150
T0 = 1_700_000_000.0   # recorded clock origin (only differences matter to the replay)
KINDS = ("binance", "bitstamp", "kraken", "coinbase", "gemini")
#: the API each venue's feed must speak to the replay of these recordings (``[venues.<id>] api``)
API = {"binance": "spot", "bitstamp": "v2", "kraken": "v2", "coinbase": "advanced", "gemini": "ws"}
KRAKEN_DEPTH = 1000


def _price(ticks: int, decimals: int, width: int) -> str:
    """ticks of 10**-decimals as text with ``width`` decimals (Binance pads to 8)."""
    s = str(ticks).rjust(decimals + 1, "0")
    whole, frac = s[:-decimals] if decimals else s, s[-decimals:] if decimals else ""
    return f"{whole}.{frac.ljust(width, '0')}" if width else whole


def _amount(rng: random.Random) -> str:
    q = rng.randint(1, rng.choice((10**5, 10**6, 10**7, 10**8, 10**8, 10**9)))
    return f"{q // 10**8}.{q % 10**8:08d}"


def kraken_checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Kraken's book checksum (v1 and v2) of wire text: ``asks`` best (lowest) first, ``bids`` best
    (highest) first; the first 10 of each, asks then bids, each price then qty with '.' removed and
    leading zeros stripped, CRC32 (unsigned) of the concatenation."""
    out = []
    for side in (asks, bids):
        for i, (p, q) in enumerate(side):
            if i == 10:
                break
            out.append(p.replace(".", "").lstrip("0"))
            out.append(q.replace(".", "").lstrip("0"))
    return zlib.crc32("".join(out).encode()) & 0xFFFFFFFF


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


def _levels(levels: list[tuple[int, str]], decimals: int, width: int, zero: str = "0") -> str:
    return ",".join(f'["{_price(t, decimals, width)}","{q if q != "0" else zero}"]' for t, q in levels)


def _book_body(book: _Book, width: int) -> tuple[list[list[str]], list[list[str]]]:
    bids = [[_price(t, book.decimals, width), q] for t, q in sorted(book.bids.items(), reverse=True)]
    asks = [[_price(t, book.decimals, width), q] for t, q in sorted(book.asks.items())]
    return bids, asks


def _schedule(rng: random.Random, symbols: list[str], rate: float, pre: float, seconds: float,
              ) -> list[tuple[float, str]]:
    """Poisson event times per symbol over ``pre + seconds``; every symbol has one in ``pre / 2``."""
    times: list[tuple[float, str]] = []
    for s in symbols:
        times.append((rng.uniform(0, pre / 2), s))
        t = rng.expovariate(rate)
        while t < pre + seconds:
            times.append((t, s))
            t += rng.expovariate(rate)
    times.sort()
    return times


def write(root: Path, symbols: list[str], rate: float, seconds: float, *, kinds: Iterable[str] = KINDS,
          pre: float = 0.5, seed: int = 1) -> dict[str, Path]:
    """Write ``root/<kind>`` recordings of ``pre + seconds`` s at ``rate`` events/s per symbol for
    each of ``kinds``; returns {kind: folder}. Cost: a few us per frame."""
    out = {}
    for kind in kinds:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{kind}")
        books = {s: _Book(s, random.Random(f"{seed}:{kind}:{s}")) for s in symbols}
        times = _schedule(rng, symbols, rate, pre, seconds)
        writer = {"binance": _binance, "bitstamp": _bitstamp,
                  "coinbase": _coinbase_at if API["coinbase"] == "advanced" else _coinbase,
                  "kraken": _kraken_v2 if API["kraken"] == "v2" else _kraken,
                  "gemini": _gemini_ws if API["gemini"] == "ws" else _gemini}[kind]
        writer(folder, symbols, books, times, rng, pre)
        out[kind] = folder
    return out


def _check_snapshots(kind: str, symbols: list[str], snap_written: dict[str, str], pre: float) -> None:
    missing = sorted(set(symbols) - set(snap_written))
    if missing:
        raise ValueError(f"{kind}: no event after {pre} s for {missing}: record longer")


def _binance(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
             rng: random.Random, pre: float) -> None:
    snap_written: dict[str, str] = {}
    ids = {s: rng.randint(10**8, 10**9) for s in symbols}
    url = "wss://stream.binance.com:9443/stream?streams=" + "/".join(
        s.replace("/", "").lower() + "@depth@100ms" for s in symbols)
    lines = [f"{url} <-> {T0}"]
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
    _check_snapshots("binance", symbols, snap_written, pre)
    srv = BinanceServer("binance", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
    info = srv.exchange_info({})
    (folder / "BINANCE.0").write_text(
        f"https://api.binance.com/api/v3/exchangeInfo -> {T0}: {json.dumps(info, separators=(',', ':'))}\n")
    http = [f"https://api.binance.com/api/v3/depth?symbol={s.replace('/', '')}&limit=5000 -> "
            f"{T0 + pre:.6f}: {body}" for s, body in snap_written.items()]
    (folder / "BINANCE.http.0.0").write_text("\n".join(http) + "\n")
    (folder / "BINANCE.ws.1.0").write_text("\n".join(lines) + "\n")


def _bitstamp(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
              rng: random.Random, pre: float) -> None:
    snap_written: dict[str, str] = {}
    base_us = int(T0 * 1e6)
    last_us = dict.fromkeys(symbols, 0)
    url = "wss://ws.bitstamp.net/"
    lines = [f"{url} <-> {T0}"]
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
    _check_snapshots("bitstamp", symbols, snap_written, pre)
    srv = BitstampServer("bitstamp", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
    (folder / "BITSTAMP.0").write_text(
        f"https://www.bitstamp.net/api/v2/trading-pairs-info/ -> {T0}: "
        f"{json.dumps(srv.pairs_info(), separators=(',', ':'))}\n")
    http = [f"https://www.bitstamp.net/api/v2/order_book/{s.replace('/', '').lower()} -> {T0 + pre:.6f}: {body}"
            for s, body in snap_written.items()]
    (folder / "BITSTAMP.http.0.0").write_text("\n".join(http) + "\n")
    (folder / "BITSTAMP.ws.1.0").write_text("\n".join(lines) + "\n")


def _top(side: dict[int, str], best_low: bool, decimals: int, width: int) -> list[tuple[str, str]]:
    keys = heapq.nsmallest(10, side) if best_low else heapq.nlargest(10, side)
    return [(_price(k, decimals, width), side[k]) for k in keys]


def _kraken(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
            rng: random.Random, pre: float) -> None:
    """Kraken WebSocket v1 ``book`` at depth :data:`KRAKEN_DEPTH`: prices with the pair's decimals
    + 3 (as v1 prints them), volumes with 8, a valid checksum on every update."""
    url = "wss://ws.kraken.com"
    pairs = {s: v1_name(s) for s in symbols}
    chan = {s: 336 + 16 * i for i, s in enumerate(symbols)}
    tail = {s: f'"book-{KRAKEN_DEPTH}","{pairs[s]}"]' for s in symbols}
    sub = json.dumps({"event": "subscribe", "pair": list(pairs.values()),
                      "subscription": {"name": "book", "depth": KRAKEN_DEPTH}}, separators=(",", ":"))
    lines = [f"{url} <-> {T0}", f"{url} <- {T0:.6f}: {sub}",
             f'{T0:.6f}: {{"connectionID":13688620010177543517,"event":"systemStatus","status":"online",'
             f'"version":"1.9.1"}}']
    for s in symbols:
        lines.append(f'{T0:.6f}: {{"channelID":{chan[s]},"channelName":"book-{KRAKEN_DEPTH}",'
                     f'"event":"subscriptionStatus","pair":"{pairs[s]}","status":"subscribed",'
                     f'"subscription":{{"depth":{KRAKEN_DEPTH},"name":"book"}}}}')
    for s in symbols:
        bk = books[s]
        w = bk.decimals + 3
        ts = f"{T0:.6f}"
        a = ",".join(f'["{_price(k, bk.decimals, w)}","{q}","{ts}"]' for k, q in sorted(bk.asks.items()))
        b = ",".join(f'["{_price(k, bk.decimals, w)}","{q}","{ts}"]'
                     for k, q in sorted(bk.bids.items(), reverse=True))
        lines.append(f'{T0:.6f}: [{chan[s]},{{"as":[{a}],"bs":[{b}]}},{tail[s]}')
    for t, s in times:
        bk = books[s]
        w = bk.decimals + 3
        bl, al = bk.event()
        ts = f"{T0 + t:.6f}"
        crc = kraken_checksum(_top(bk.asks, True, bk.decimals, w), _top(bk.bids, False, bk.decimals, w))
        parts = []
        for key, levels in (("a", al), ("b", bl)):
            if levels:
                parts.append(f'"{key}":[' + ",".join(
                    f'["{_price(k, bk.decimals, w)}","{q if q != "0" else "0.00000000"}","{ts}"]'
                    for k, q in levels) + "]")
        parts[-1] += f',"c":"{crc}"'
        body = ",".join("{" + p + "}" for p in parts)
        lines.append(f"{T0 + t:.6f}: [{chan[s]},{body},{tail[s]}")
    result = {rest_key(s): asset_pair(spec_for(s)) for s in symbols}
    (folder / "KRAKEN.0").write_text(
        f"https://api.kraken.com/0/public/AssetPairs -> {T0}: "
        f"{json.dumps({'error': [], 'result': result}, separators=(',', ':'))}\n")
    (folder / "KRAKEN.ws.1.0").write_text("\n".join(lines) + "\n")


def _kraken_v2(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
               rng: random.Random, pre: float) -> None:
    """Kraken WebSocket v2 ``book`` at depth :data:`KRAKEN_DEPTH` and the ``instrument`` snapshot."""
    url = "wss://ws.kraken.com/v2"
    sub = json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": symbols,
                                                        "depth": KRAKEN_DEPTH, "snapshot": True}, "req_id": 1},
                     separators=(",", ":"))
    inst = json.dumps({"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}, "req_id": 2},
                      separators=(",", ":"))
    lines = [f"{url} <-> {T0}", f"{url} <- {T0:.6f}: {inst}", f"{url} <- {T0:.6f}: {sub}",
             f'{T0:.6f}: {{"channel":"status","type":"update","data":[{{"version":"2.0.10","system":"online",'
             f'"api_version":"v2","connection_id":13688620010177543517}}]}}',
             f"{T0:.6f}: {instrument_snapshot(spec_for(s) for s in symbols)}"]

    def lv(k: int, q: str, d: int) -> str:
        return f'{{"price":{_price(k, d, d)},"qty":{q if q != "0" else "0.00000000"}}}'
    for s in symbols:
        bk = books[s]
        d = bk.decimals
        crc = kraken_checksum(_top(bk.asks, True, d, d), _top(bk.bids, False, d, d))
        b = ",".join(lv(k, q, d) for k, q in sorted(bk.bids.items(), reverse=True))
        a = ",".join(lv(k, q, d) for k, q in sorted(bk.asks.items()))
        lines.append(f'{T0:.6f}: {{"channel":"book","type":"snapshot","data":[{{"symbol":"{s}","bids":[{b}],'
                     f'"asks":[{a}],"checksum":{crc}}}]}}')
    for t, s in times:
        bk = books[s]
        d = bk.decimals
        bl, al = bk.event()
        crc = kraken_checksum(_top(bk.asks, True, d, d), _top(bk.bids, False, d, d))
        lines.append(f'{T0 + t:.6f}: {{"channel":"book","type":"update","data":[{{"symbol":"{s}","bids":['
                     + ",".join(lv(k, q, d) for k, q in bl) + '],"asks":[' + ",".join(lv(k, q, d) for k, q in al)
                     + f'],"checksum":{crc},"timestamp":"{_rfc3339(T0 + t)}"}}]}}')
    result = {rest_key(s): asset_pair(spec_for(s)) for s in symbols}
    (folder / "KRAKEN.0").write_text(
        f"https://api.kraken.com/0/public/AssetPairs -> {T0}: "
        f"{json.dumps({'error': [], 'result': result}, separators=(',', ':'))}\n")
    (folder / "KRAKEN.ws.1.0").write_text("\n".join(lines) + "\n")


def _rfc3339(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _coinbase(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
              rng: random.Random, pre: float) -> None:
    """Coinbase Exchange ``level2_batch`` (+ ``heartbeat`` subscribed, none recorded)."""
    url = "wss://ws-feed.pro.coinbase.com"
    pids = {s: s.replace("/", "-") for s in symbols}
    ids = list(pids.values())
    sub = json.dumps({"type": "subscribe", "product_ids": ids, "channels": ["level2_batch", "heartbeat"]},
                     separators=(",", ":"))
    ack = json.dumps({"type": "subscriptions", "channels": [{"name": "level2_batch", "product_ids": ids},
                                                            {"name": "heartbeat", "product_ids": ids}]},
                     separators=(",", ":"))
    lines = [f"{url} <-> {T0}", f"{url} <- {T0:.6f}: {sub}", f"{T0:.6f}: {ack}"]
    for s in symbols:
        bk = books[s]
        bids, asks = _book_body(bk, bk.decimals)
        lines.append(f'{T0:.6f}: {{"type":"snapshot","product_id":"{pids[s]}","asks":'
                     f'{json.dumps(asks, separators=(",", ":"))},"bids":{json.dumps(bids, separators=(",", ":"))}}}')
    second = -1
    stamp = ""
    for t, s in times:
        bk = books[s]
        bl, al = bk.event()
        if int(t * 1e6) != second:
            second = int(t * 1e6)
            stamp = _rfc3339(T0 + t)
        ch = [f'["buy","{_price(k, bk.decimals, bk.decimals)}","{q}"]' for k, q in bl]
        ch += [f'["sell","{_price(k, bk.decimals, bk.decimals)}","{q}"]' for k, q in al]
        lines.append(f'{T0 + t:.6f}: {{"type":"l2update","product_id":"{pids[s]}","changes":[{",".join(ch)}],'
                     f'"time":"{stamp}"}}')
    srv = CoinbaseServer("coinbase", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
    products = [srv.ex_product(spec_for(s)) for s in symbols]
    (folder / "COINBASE.0").write_text(
        f"https://api.pro.coinbase.com/products -> {T0}: {json.dumps(products, separators=(',', ':'))}\n")
    (folder / "COINBASE.ws.1.0").write_text("\n".join(lines) + "\n")


def _coinbase_at(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
                 rng: random.Random, pre: float) -> None:
    """Coinbase Advanced Trade ``level2``: one ``l2_data`` message per event (``sequence_num`` 0:
    the replay writes each connection's own)."""
    url = "wss://advanced-trade-ws.coinbase.com"
    pids = {s: s.replace("/", "-") for s in symbols}
    sub = json.dumps({"type": "subscribe", "product_ids": list(pids.values()), "channel": "level2"},
                     separators=(",", ":"))
    lines = [f"{url} <-> {T0}", f"{url} <- {T0:.6f}: {sub}",
             f'{url} <- {T0:.6f}: {{"type":"subscribe","channel":"heartbeats"}}']

    def msg(t: float, kind: str, pid: str, updates: list[str]) -> str:
        ts = _rfc3339(T0 + t)
        return (f'{T0 + t:.6f}: {{"channel":"l2_data","client_id":"","timestamp":"{ts}","sequence_num":0,'
                f'"events":[{{"type":"{kind}","product_id":"{pid}","updates":[{",".join(updates)}]}}]}}')

    def up(side: str, k: int, q: str, d: int, ts: str) -> str:
        return (f'{{"side":"{side}","event_time":"{ts}","price_level":"{_price(k, d, d)}",'
                f'"new_quantity":"{q}"}}')
    for s in symbols:
        bk = books[s]
        ts = _rfc3339(T0)
        ups = [up("bid", k, q, bk.decimals, ts) for k, q in sorted(bk.bids.items(), reverse=True)]
        ups += [up("offer", k, q, bk.decimals, ts) for k, q in sorted(bk.asks.items())]
        lines.append(msg(0.0, "snapshot", pids[s], ups))
    for t, s in times:
        bk = books[s]
        bl, al = bk.event()
        ts = _rfc3339(T0 + t)
        ups = [up("bid", k, q, bk.decimals, ts) for k, q in bl] + [up("offer", k, q, bk.decimals, ts) for k, q in al]
        lines.append(msg(t, "update", pids[s], ups))
    srv = CoinbaseServer("coinbase", host="127.0.0.1", port=0, specs={s: spec_for(s) for s in symbols})
    products = [srv.ex_product(spec_for(s)) for s in symbols]
    (folder / "COINBASE.0").write_text(
        f"https://api.pro.coinbase.com/products -> {T0}: {json.dumps(products, separators=(',', ':'))}\n")
    (folder / "COINBASE.ws.1.0").write_text("\n".join(lines) + "\n")


def _gemini(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
            rng: random.Random, pre: float) -> None:
    """Gemini market data v2 ``l2``: the first ``l2_updates`` of a symbol (with ``trades``) is its book."""
    url = "wss://api.gemini.com/v2/marketdata/"
    names = {s: s.replace("/", "").upper() for s in symbols}
    sub = json.dumps({"type": "subscribe", "subscriptions": [{"name": "l2", "symbols": list(names.values())}]},
                     separators=(",", ":"))
    lines = [f"{url} <-> {T0}", f"{url} <- {T0:.6f}: {sub}"]
    for s in symbols:
        bk = books[s]
        bids, asks = _book_body(bk, bk.decimals)
        ch = [["buy", p, q] for p, q in bids] + [["sell", p, q] for p, q in asks]
        lines.append(f'{T0:.6f}: {{"type":"l2_updates","symbol":"{names[s]}","changes":'
                     f'{json.dumps(ch, separators=(",", ":"))},"trades":[],"auction_events":[]}}')
    for t, s in times:
        bk = books[s]
        bl, al = bk.event()
        ch = [f'["buy","{_price(k, bk.decimals, bk.decimals)}","{q}"]' for k, q in bl]
        ch += [f'["sell","{_price(k, bk.decimals, bk.decimals)}","{q}"]' for k, q in al]
        lines.append(f'{T0 + t:.6f}: {{"type":"l2_updates","symbol":"{names[s]}","changes":[{",".join(ch)}]}}')
    _gemini_listing(folder, symbols, names)
    (folder / "GEMINI.ws.1.0").write_text("\n".join(lines) + "\n")


def _gemini_ws(folder: Path, symbols: list[str], books: dict[str, _Book], times: list[tuple[float, str]],
               rng: random.Random, pre: float) -> None:
    """Gemini's current WebSocket API: per symbol a ``depthUpdate`` with the whole book, then diffs
    with contiguous ``U``/``u`` (``E`` in ns)."""
    url = "wss://ws.gemini.com/?snapshot=-1"
    names = {s: s.replace("/", "").lower() for s in symbols}
    lines = [f"{url} <-> {T0}"]
    lines += [f'{url} <- {T0:.6f}: {{"id":{i},"method":"SUBSCRIBE","params":["{names[s]}@depth@100ms"]}}'
              for i, s in enumerate(symbols, 1)]
    ids = {s: rng.randint(10**6, 10**7) for s in symbols}
    e0 = int(T0 * 1e9)
    for s in symbols:
        bk = books[s]
        bids, asks = _book_body(bk, bk.decimals)
        lines.append(f'{T0:.6f}: {{"e":"depthUpdate","E":{e0},"s":"{names[s]}","U":{ids[s]},"u":{ids[s]},'
                     f'"b":{json.dumps(bids, separators=(",", ":"))},"a":{json.dumps(asks, separators=(",", ":"))}}}')
    for t, s in times:
        bk = books[s]
        bl, al = bk.event()
        first = ids[s] + 1
        ids[s] = last = first + rng.choice((0, 0, 0, 1, 2))
        lines.append(f'{T0 + t:.6f}: {{"e":"depthUpdate","E":{int((T0 + t) * 1e9)},"s":"{names[s]}","U":{first},'
                     f'"u":{last},"b":[{_levels(bl, bk.decimals, bk.decimals)}],'
                     f'"a":[{_levels(al, bk.decimals, bk.decimals)}]}}')
    _gemini_listing(folder, symbols, {s: n.upper() for s, n in names.items()})
    (folder / "GEMINI.ws.1.0").write_text("\n".join(lines) + "\n")


def _gemini_listing(folder: Path, symbols: list[str], names: dict[str, str]) -> None:
    listing = [f"https://api.gemini.com/v1/symbols -> {T0}: "
               f"{json.dumps([n.lower() for n in names.values()], separators=(',', ':'))}"]
    for s in symbols:
        sp = spec_for(s)
        listing.append(f"https://api.gemini.com/v1/symbols/details/{names[s].lower()} -> {T0}: "
                       f'{{"symbol":"{names[s]}","base_currency":"{sp.base}","quote_currency":"{sp.quote}",'
                       f'"tick_size":1E-8,"quote_increment":{format(sp.tick, "f")},'
                       f'"min_order_size":"0.00001","status":"open"}}')
    (folder / "GEMINI.0").write_text("\n".join(listing) + "\n")
