"""The bare relay chain, the latency baseline: the same processes, ZeroMQ hops and message sizes as
bookmux, doing nothing but moving bytes.

    simulator --ws--> relay feed (one per venue) --PUB/SUB--> relay agg --PUB/SUB--> relay pub --PUB/SUB--> subscriber

* ``feed``: the same websockets client on uvloop as the real feeds, subscribing with its venue's
  protocol (``--api``, as the bench's recordings: Binance combined streams, Bitstamp
  ``bts:subscribe``, Kraken v2 (or v1) ``book``, Coinbase Advanced Trade ``level2`` (or Exchange
  ``level2_batch``), Gemini ``SUBSCRIBE`` (or v2 ``l2``); REST snapshots requested once where the
  replay gates on them); per received frame: stamp ``time_ns()``, find the symbol with a string
  search (no JSON parse), publish
  ``[md.<venue>.<key>, msgpack {"ts", "pad"}]`` padded to the mean size of a real feed-bus delta;
* ``agg``: unpack (to read ``ts``), publish ``[book.<key>, msgpack {"ts", "pad"}]`` padded to the
  mean size of a real merged snapshot; one output per input (no coalescing);
* ``pub``: forward both frames unchanged.

Every loop blocks in ``poll``/``recv``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import msgpack
import zmq


def _pad(size: int) -> bytes:
    # msgpack {"ts": <u64>, "pad": <bin>} costs ~17 bytes of framing around the padding
    return b"x" * max(0, size - 17)


def _snapshots(kind: str, rest: str, keys: list[str]) -> None:
    import urllib.request

    if kind not in ("binance", "bitstamp"):
        return      # in-band snapshots
    for k in keys:
        url = (f"{rest.rstrip('/')}/api/v3/depth?symbol={k}&limit=5000" if kind == "binance"
               else f"{rest.rstrip('/')}/order_book/{k}/")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
        except OSError:
            pass


async def _feed(a: argparse.Namespace) -> None:
    import websockets

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.bind(a.pub)
    pad = _pad(a.pad)
    keys = [k for k in a.keys.split(",") if k]
    prefix = f"md.{a.venue}.".encode()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if a.kind == "binance":
        url = a.url.rstrip("/") + "/stream?streams=" + "/".join(f"{k.lower()}@depth@100ms" for k in keys)
    elif a.kind == "gemini" and a.api != "v2":
        url = a.url.rstrip("/") + "/?snapshot=-1"
    else:
        url = a.url
    async with websockets.connect(url, ping_interval=None, max_size=2**26) as ws:
        if a.kind == "bitstamp":
            for k in keys:
                await ws.send(f'{{"event":"bts:subscribe","data":{{"channel":"diff_order_book_{k}"}}}}')
        elif a.kind == "kraken" and a.api == "v2":
            await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": keys,
                                                                        "depth": a.depth, "snapshot": True}}))
        elif a.kind == "kraken":
            await ws.send(json.dumps({"event": "subscribe", "pair": keys,
                                      "subscription": {"name": "book", "depth": a.depth}}))
        elif a.kind == "coinbase" and a.api == "advanced":
            await ws.send(json.dumps({"type": "subscribe", "product_ids": keys, "channel": "level2"}))
            await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))
        elif a.kind == "coinbase":
            await ws.send(json.dumps({"type": "subscribe", "product_ids": keys,
                                      "channels": ["level2_batch", "heartbeat"]}))
        elif a.kind == "gemini" and a.api == "v2":
            await ws.send(json.dumps({"type": "subscribe", "subscriptions": [{"name": "l2", "symbols": keys}]}))
        elif a.kind == "gemini":
            for i, k in enumerate(keys, 1):
                await ws.send(json.dumps({"id": i, "method": "SUBSCRIBE", "params": [f"{k}@depth@100ms"]}))
        marker = {"coinbase": '"product_id":"', "gemini": '"symbol":"' if a.api == "v2" else '"s":"'}.get(a.kind, "")
        packb = msgpack.packb
        send = pub.send_multipart
        if a.rest:
            # a real feed asks for every snapshot; the replay holds the stream until it has
            await loop.run_in_executor(None, _snapshots, a.kind, a.rest, keys)

        async def reader() -> None:
            async for text in ws:
                ts = time.time_ns()
                if a.kind == "binance":
                    i = text.find('"stream":"')
                    if i < 0:
                        continue
                    key = text[i + 10:text.index("@", i)]
                elif a.kind == "bitstamp":
                    i = text.find('"channel":"diff_order_book_')
                    if i < 0:
                        continue
                    key = text[i + 27:text.index('"', i + 27)]
                elif a.kind == "kraken" and a.api == "v2":
                    if not text.startswith('{"channel":"book"'):
                        continue        # status, acks, heartbeats
                    i = text.index('"symbol":"') + 10
                    key = text[i:text.index('"', i)]
                elif a.kind == "kraken":
                    if not text.startswith("["):
                        continue        # events (status, acks, heartbeats)
                    key = text[text.rindex('"', 0, len(text) - 2) + 1:len(text) - 2]
                else:
                    i = text.find(marker)
                    if i < 0 or '"type":"subscriptions"' in text or '"type":"heartbeat"' in text \
                            or text.startswith('{"channel":"subscriptions"'):
                        continue
                    i += len(marker)
                    key = text[i:text.index('"', i)]
                send([prefix + key.encode(), packb({"ts": ts, "pad": pad})])
        task = asyncio.create_task(reader())
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
    pub.close(0)
    ctx.term()


def _agg(a: argparse.Namespace) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"md.")
    for e in a.sub.split(","):
        sub.connect(e)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.bind(a.pub)
    pad = _pad(a.pad)
    running = True

    def on_term(*_: object) -> None:
        nonlocal running
        running = False
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    unpackb, packb = msgpack.unpackb, msgpack.packb
    while running:
        if not poller.poll(200):
            continue
        for _ in range(5000):
            try:
                topic, payload = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            m = unpackb(payload)
            key = topic[topic.index(b".", 3) + 1:]
            pub.send_multipart([b"book." + key, packb({"ts": m["ts"], "pad": pad})])
    sub.close(0)
    pub.close(0)
    ctx.term()


def _pub(a: argparse.Namespace) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"book.")
    sub.connect(a.sub)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 1000)
    pub.bind(a.pub)
    running = True

    def on_term(*_: object) -> None:
        nonlocal running
        running = False
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while running:
        if not poller.poll(200):
            continue
        for _ in range(5000):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            pub.send_multipart(frames)
    sub.close(0)
    pub.close(0)
    ctx.term()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("feed", "agg", "pub"))
    ap.add_argument("--kind", default="binance")
    ap.add_argument("--venue", default="binance")
    ap.add_argument("--url", default="")
    ap.add_argument("--rest", default="", help="REST base: snapshots are requested once (replay gates)")
    ap.add_argument("--keys", default="")
    ap.add_argument("--sub", default="")
    ap.add_argument("--pub", required=True)
    ap.add_argument("--pad", type=int, default=200)
    ap.add_argument("--depth", type=int, default=1000, help="Kraken book depth (the recorded one)")
    ap.add_argument("--api", default="", help="the venue API the replay serves (Gemini: ws or v2)")
    a = ap.parse_args()
    if a.role == "feed":
        try:
            import uvloop
            uvloop.run(_feed(a))
        except ImportError:
            asyncio.run(_feed(a))
    elif a.role == "agg":
        _agg(a)
    else:
        _pub(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
