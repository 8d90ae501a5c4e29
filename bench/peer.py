"""The peer: cryptofeed (with its C order book) pointed at the simulator, as one process.

``python -m bench.peer --binance ws://H:P --binance-rest http://H:P --bitstamp ws://H:Q
--bitstamp-rest http://H:Q --symbols BTC/USDT,... --start T0 --stop T1 --out F``

Its exchange classes keep their URLs in the class attributes ``websocket_endpoints`` /
``rest_endpoints``; subclasses here replace only those. For every L2 book callback between
``--start`` and ``--stop`` (Unix s) it records ``time.time() - receipt_timestamp`` (the moment its
connection read the frame: the same start point as bookmux's ``rts``) in ns to ``F``; ``F.json``
gets the counts. A benchmark-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    for k in ("binance", "binance-rest", "bitstamp", "bitstamp-rest", "symbols", "out"):
        ap.add_argument(f"--{k}", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--stop", type=float, required=True)
    a = ap.parse_args()

    import cryptofeed.feed
    from cryptofeed import FeedHandler
    from cryptofeed.connection import WSAsyncConn

    class PlainWS(WSAsyncConn):  # type: ignore[misc]
        """cryptofeed accepts only wss:// addresses; the simulator is plain ws:// on loopback."""

        def __init__(self, address: str, *args: object, **kw: object) -> None:
            plain = address.startswith("ws://")
            super().__init__("wss://" + address[5:] if plain else address, *args, **kw)
            if plain:
                self.address = address

    cryptofeed.feed.WSAsyncConn = PlainWS  # type: ignore[misc]
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import Binance, Bitstamp

    class SimBinance(Binance):  # type: ignore[misc]
        websocket_endpoints = [  # noqa: RUF012 - the attribute cryptofeed reads
            WebsocketEndpoint(a.binance, options={"ping_interval": 10, "ping_timeout": None, "max_size": None,
                                                  "max_queue": None})]
        rest_endpoints = [  # noqa: RUF012
            RestEndpoint(a.binance_rest, routes=Routes("/api/v3/exchangeInfo",
                                                       l2book="/api/v3/depth?symbol={}&limit={}"))]

    class SimBitstamp(Bitstamp):  # type: ignore[misc]
        websocket_endpoints = [  # noqa: RUF012 - the attribute cryptofeed reads
            WebsocketEndpoint(a.bitstamp.rstrip("/") + "/", options={"compression": None})]
        rest_endpoints = [  # noqa: RUF012
            RestEndpoint(a.bitstamp_rest, routes=Routes("/api/v2/trading-pairs-info/",
                                                        l2book="/api/v2/order_book/{}"))]

    lat = array.array("q")
    counts = {"binance": 0, "bitstamp": 0, "all": 0}
    start, stop = a.start, a.stop

    def make_cb(venue: str):  # type: ignore[no-untyped-def]
        async def cb(book, receipt_timestamp):  # type: ignore[no-untyped-def]
            now = time.time()
            counts["all"] += 1
            if start <= now < stop:
                lat.append(int((now - receipt_timestamp) * 1e9))
                counts[venue] += 1
        return cb

    def finish() -> None:
        with open(a.out, "wb") as f:
            lat.tofile(f)
        with open(a.out + ".json", "w") as f:
            json.dump(counts, f)
        os._exit(0)

    threading.Timer(max(0.0, stop - time.time()) + 0.2, finish).start()
    syms = [s.replace("/", "-") for s in a.symbols.split(",") if s]
    import asyncio
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": False})
    fh.add_feed(SimBinance(symbols=syms, channels=[L2_BOOK], callbacks={L2_BOOK: make_cb("binance")}))
    fh.add_feed(SimBitstamp(symbols=syms, channels=[L2_BOOK], callbacks={L2_BOOK: make_cb("bitstamp")}))
    fh.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
