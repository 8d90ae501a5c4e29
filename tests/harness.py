"""Test harness: free loopback ports, config files, service processes that always get cleaned up,
and a scripted feed that speaks the feed bus (schema) from plain dicts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import zmq

from common import schema
from common.ports import free_port
from common.schema import BookMsg, HeartbeatMsg, StatusMsg

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def write_config(path: Path, *, venues: dict[str, dict[str, Any]], symbols: list[str], levels: int = 10,
                 down_after: float = 1.0, depletion: dict[str, list[str]] | None = None,
                 extra: str = "") -> dict[str, Any]:
    """Write a TOML config with fresh loopback ports; returns the endpoints used."""
    ep = {"agg_pub": f"tcp://127.0.0.1:{free_port()}", "agg_ctl": f"tcp://127.0.0.1:{free_port()}",
          "query": f"tcp://127.0.0.1:{free_port()}", "pub_port": free_port()}
    lines = [f"symbols = {symbols!r}".replace("'", '"'), f"levels = {levels}", 'log_level = "DEBUG"',
             f'run_dir = "{path.parent}"', "",
             "[aggregator]", f'pub = "{ep["agg_pub"]}"', f'ctl = "{ep["agg_ctl"]}"', f'query = "{ep["query"]}"',
             f"down_after = {down_after}", ""]
    if depletion:
        lines.append("[aggregator.depletion]")
        for sym, sizes in depletion.items():
            lines.append(f'"{sym}" = {sizes!r}'.replace("'", '"'))
        lines.append("")
    lines += ["[publisher]", 'bind = "127.0.0.1"', f"port = {ep['pub_port']}", "sndhwm = 1000", ""]
    for vid, v in venues.items():
        v = dict(v)
        v.setdefault("kind", "binance")
        v.setdefault("ws_url", "ws://127.0.0.1:1")
        v.setdefault("rest_url", "http://127.0.0.1:1")
        v.setdefault("pub", f"tcp://127.0.0.1:{free_port()}")
        v.setdefault("ctl", f"tcp://127.0.0.1:{free_port()}")
        dust = v.pop("dust", None)
        ep[vid] = v
        lines.append(f"[venues.{vid}]")
        for k, val in v.items():
            if isinstance(val, str):
                lines.append(f'{k} = "{val}"')
            elif isinstance(val, bool):
                lines.append(f"{k} = {'true' if val else 'false'}")
            else:
                lines.append(f"{k} = {val!r}".replace("'", '"'))
        if dust:
            lines.append(f"[venues.{vid}.dust]")
            for sym, (mn_a, mn_n) in dust.items():
                lines.append(f'"{sym}" = {{ min_amount = "{mn_a}", min_notional = "{mn_n}" }}')
        lines.append("")
    path.write_text("\n".join(lines) + "\n" + extra)
    return ep


class Procs:
    """Service processes started by a test; :meth:`close` kills whatever is left."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=log, stderr=log,
                             start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, sig)
            p.wait(10)

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for name in list(self.procs):
            p = self.procs[name]
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(5)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(5)
        self.procs.clear()


@contextmanager
def procs(logdir: Path) -> Iterator[Procs]:
    p = Procs(logdir)
    try:
        yield p
    finally:
        p.close()


Side = dict[Decimal, Decimal]


class ScriptedFeed:
    """A feed process stand-in: plain-dict books, the real bus schema, a snapshot ROUTER."""

    def __init__(self, venue: str, pub: str, ctl: str, ctx: zmq.Context, sec: Any = None) -> None:
        self.venue = venue
        self.sess = time.time_ns()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        if sec is not None:      # common.security.Security: CURVE servers, as a real feed
            sec.server(self.pub)
            sec.server(self.ctl)
        self.pub.bind(pub)
        self.ctl.bind(ctl)
        self.books: dict[str, tuple[Side, Side]] = {}
        self.seq: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.silent = False
        self.snap_requests = 0

    def _next(self, symbol: str) -> int:
        self.seq[symbol] = self.seq.get(symbol, 0) + 1
        return self.seq[symbol]

    def _send(self, msg: schema.FeedMsg) -> None:
        self.pub.send_multipart(schema.encode_feed(msg))

    @staticmethod
    def _levels(side: Side) -> list[tuple[Decimal, Decimal]]:
        return sorted(side.items())

    def snap(self, symbol: str, bids: dict[str, str], asks: dict[str, str]) -> None:
        b = {Decimal(p): Decimal(q) for p, q in bids.items()}
        a = {Decimal(p): Decimal(q) for p, q in asks.items()}
        self.books[symbol] = (b, a)
        self.status[symbol] = schema.LIVE
        self._send(self._snap_msg(symbol, self._next(symbol)))

    def _snap_msg(self, symbol: str, seq: int) -> BookMsg:
        b, a = self.books[symbol]
        now = time.time_ns()
        return BookMsg(schema.SNAP, self.venue, symbol, self.sess, seq, now, now, self._levels(b), self._levels(a))

    def delta(self, symbol: str, bids: dict[str, str], asks: dict[str, str], *, send: bool = True) -> None:
        """Apply to the plain-dict book; ``send=False`` loses the message on the bus (a drop)."""
        b, a = self.books[symbol]
        for side, upd in ((b, bids), (a, asks)):
            for p, q in upd.items():
                if Decimal(q):
                    side[Decimal(p)] = Decimal(q)
                else:
                    side.pop(Decimal(p), None)
        seq = self._next(symbol)
        if send:
            now = time.time_ns()
            self._send(BookMsg(schema.DELTA, self.venue, symbol, self.sess, seq, now, now,
                               [(Decimal(p), Decimal(q)) for p, q in bids.items()],
                               [(Decimal(p), Decimal(q)) for p, q in asks.items()]))

    def set_status(self, symbol: str, status: str, reason: str = "test") -> None:
        self.status[symbol] = status
        if status != schema.LIVE:
            self.books[symbol] = ({}, {})
        self._send(StatusMsg(self.venue, symbol, self.sess, self._next(symbol), status, reason, time.time_ns()))

    def heartbeat(self) -> None:
        if not self.silent:
            self._send(HeartbeatMsg(self.venue, self.sess, time.time_ns(), dict(self.seq)))

    def pump(self) -> None:
        """Answer pending snapshot requests (clone pattern: current state with the current seq)."""
        while True:
            try:
                frames = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if self.silent:
                continue
            self.snap_requests += 1
            syms = schema.decode_snapshot_request(frames[-1]) or list(self.books)
            out = []
            for s in syms:
                if s not in self.seq:
                    continue
                if self.status.get(s) == schema.LIVE:
                    out.append(schema.pack(schema.feed_payload(self._snap_msg(s, self.seq[s]))))
                else:
                    out.append(schema.pack(schema.feed_payload(StatusMsg(
                        self.venue, s, self.sess, self.seq[s], self.status[s], "test", time.time_ns()))))
            if out:
                self.ctl.send_multipart([frames[0], *out])

    def close(self) -> None:
        self.pub.close(0)
        self.ctl.close(0)


class Subscriber:
    """A plain SUB client of the publisher, as a user would write it."""

    def __init__(self, endpoint: str, symbol: str, ctx: zmq.Context) -> None:
        self.topic = f"book.{symbol}".encode()
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, self.topic)
        self.sock.connect(endpoint)
        self.received: list[dict[str, Any]] = []

    def drain(self, timeout_ms: int = 50) -> list[dict[str, Any]]:
        got = []
        while self.sock.poll(timeout_ms):
            frames = self.sock.recv_multipart()
            assert len(frames) == 2
            if frames[0] != self.topic:
                continue
            got.append(msgpack.unpackb(frames[1], raw=False))
            timeout_ms = 0
        self.received += got
        return got

    @property
    def last(self) -> dict[str, Any] | None:
        return self.received[-1] if self.received else None


def wait_until(pred: Callable[[], bool], *, timeout: float, pump: Callable[[], None] = lambda: None,
               what: str = "condition") -> float:
    """Call ``pump`` and test ``pred`` until it holds; returns the seconds it took (for reports)."""
    t0 = time.monotonic()
    while True:
        pump()
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def reference_merge(books: dict[str, tuple[list[list[str]], list[list[str]]]], n: int,
                    dust: dict[str, tuple[str, str]] | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """Top-n merged levels of venue books given as text levels, written independently of the
    aggregator: filter dust, sort (price, then larger amount, then venue), cut, canonical text."""

    def canon(d: Decimal) -> str:
        s = format(d, "f")
        return s.rstrip("0").rstrip(".") if "." in s else s

    out: list[list[tuple[Decimal, Decimal, str]]] = [[], []]
    for venue, sides in books.items():
        min_amount, min_notional = (Decimal(x) for x in (dust or {}).get(venue, ("0", "0")))
        for i, side in enumerate(sides):
            for p, q in side:
                price, qty = Decimal(p), Decimal(q)
                if qty > 0 and qty >= min_amount and price * qty >= min_notional:
                    out[i].append((price, qty, venue))
    out[0].sort(key=lambda x: (-x[0], -x[1], x[2]))
    out[1].sort(key=lambda x: (x[0], -x[1], x[2]))
    return ([[canon(p), canon(q), v] for p, q, v in out[0][:n]],
            [[canon(p), canon(q), v] for p, q, v in out[1][:n]])


class SimControl:
    """Client of the simulator's HTTP control interface."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        import requests

        r = requests.get(self.base + path, params=params, timeout=10)
        body: dict[str, Any] = r.json()
        if r.status_code != 200:
            raise AssertionError(f"simulator {path} {params}: HTTP {r.status_code} {body}")
        return body

    def up(self) -> bool:
        try:
            return bool(self.get("/health").get("ok"))
        except Exception:
            return False

    def truth(self, venue: str, symbol: str, depth: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        """The venue's true book; with ``depth`` its best ``depth`` levels per side (what a client
        subscribed at that depth holds: Kraken)."""
        b = self.get("/book", venue=venue, symbol=symbol, **({"depth": depth} if depth else {}))
        return b["bids"], b["asks"]


# --- fuzzing over sockets (tests/test_fuzz_sockets.py) ------------------------------------------


class Disconnects:
    """Count the ``EVENT_DISCONNECTED`` events of one socket with ZeroMQ's socket monitor: on a
    test's connecting socket, the service dropping its connection (e.g. MAXMSGSIZE exceeded)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.count = 0

    def poll(self) -> int:
        from zmq.utils.monitor import recv_monitor_message

        while self.mon.poll(0):
            if recv_monitor_message(self.mon)["event"] == zmq.EVENT_DISCONNECTED:
                self.count += 1
        return self.count

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.mon.close(0)


def raw_socket(ctx: zmq.Context, kind: int, endpoint: str, *, bind: bool = False) -> zmq.Socket:
    """A bare socket with no limits (the hostile peer of a fuzz test), linger 0."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint) if bind else s.connect(endpoint)
    return s


def set_top_level(path: Path, line: str) -> None:
    """Put a top-level TOML ``key = value`` line in a config written by :func:`write_config`."""
    path.write_text(line + "\n" + path.read_text())


# --- one simulator, several venues, the whole pipeline (end-to-end tests per venue) ------------

#: WebSocket / REST paths of each (kind, api) on the simulator's port for that venue.
SIM_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    ("binance", "spot"): ("", ""), ("bitstamp", "v2"): ("", "/api/v2"),
    ("kraken", "v2"): ("/v2", ""), ("kraken", "v1"): ("", ""),
    ("coinbase", "advanced"): ("", ""), ("coinbase", "exchange"): ("", ""),
    ("gemini", "ws"): ("", ""), ("gemini", "v2"): ("/v2/marketdata", ""),
}


def check_snapshot(m: dict[str, Any]) -> None:
    """A venue that is not live never has levels in the merged book."""
    live = {v for v, st in m["venues"].items() if st == "live"}
    for lv in m["bids"] + m["asks"]:
        assert lv[2] in live, f"{lv} from a venue that is {m['venues'][lv[2]]} (seq {m['seq']})"


class SimPipeline:
    """The simulator playing ``venues`` ({id: {"kind", "api", ...venue config keys}}), one feed
    process per venue, the aggregator, the publisher and one subscriber per symbol, on fresh
    loopback ports. :meth:`settle` pauses the market and waits until every published top-N
    equals the merged truth of the simulator's books."""

    def __init__(self, tmp: Path, venues: dict[str, dict[str, Any]], symbols: list[str], *, n: int = 10,
                 rate: float = 20.0, stale_after: float = 2.0, down_after: float = 2.0, seed: int = 11,
                 agg_shards: list[list[str]] | None = None) -> None:
        self.tmp, self.symbols, self.n = tmp, symbols, n
        #: ``[[aggregator.shards]]`` (one aggregator process each, ``aggregator_<i>``) when given.
        self.agg_shards = [{"symbols": list(syms), "pub": f"tcp://127.0.0.1:{free_port()}",
                            "ctl": f"tcp://127.0.0.1:{free_port()}", "query": f"tcp://127.0.0.1:{free_port()}"}
                           for syms in agg_shards or []]
        self.ctl_port = free_port()
        self.dust = {vid: ("0.0001", "1") for vid in venues}
        extra = [f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {self.ctl_port}\nseed = {seed}\nrate = {rate}\n']
        cfg_venues: dict[str, dict[str, Any]] = {}
        self.kinds: dict[str, str] = {}
        self.listed: dict[str, list[str]] = {vid: list(v["symbols"]) for vid, v in venues.items() if "symbols" in v}
        # venues whose books stop at a subscribed depth (Kraken): compared with that view of the truth
        self.depth: dict[str, int] = {vid: int(v["depth"]) for vid, v in venues.items()
                                      if v["kind"] == "kraken" and "depth" in v}
        for vid, v in venues.items():
            v = dict(v)
            kind, api = v.pop("kind"), v.pop("api")
            port = free_port()
            ws_path, rest_path = SIM_PATHS[(kind, api)]
            listed = v.get("symbols", symbols)
            extra.append(f'[simulator.venues.{vid}]\nkind = "{kind}"\nport = {port}\n'
                         + "symbols = [" + ", ".join(f'"{x}"' for x in listed) + "]\n")
            cfg_venues[vid] = {"kind": kind, "api": api, "ws_url": f"ws://127.0.0.1:{port}{ws_path}",
                               "rest_url": f"http://127.0.0.1:{port}{rest_path}", "stale_after": stale_after,
                               "dust": {s: self.dust[vid] for s in symbols}, **v}
            self.kinds[vid] = kind
        for sh in self.agg_shards:
            extra.append("[[aggregator.shards]]\n" + "".join(
                f"{k} = {v!r}\n".replace("'", '"') for k, v in sh.items()))
        self.cfg = tmp / "bookmux.toml"
        self.ep = write_config(self.cfg, symbols=symbols, levels=n, down_after=down_after, venues=cfg_venues,
                               extra="\n".join(extra))
        self.sim = SimControl(self.ctl_port)
        self.ctx = zmq.Context()
        self.subs = {s: Subscriber(f"tcp://127.0.0.1:{self.ep['pub_port']}", s, self.ctx) for s in symbols}
        self.procs = Procs(tmp)

    @property
    def venues(self) -> list[str]:
        return list(self.kinds)

    def start_feed(self, vid: str) -> None:
        from common import venues

        self.procs.start(f"feed_{vid}", venues.kind(self.kinds[vid]).feed, "--venue", vid, "--config", str(self.cfg))

    def start(self) -> None:
        c = str(self.cfg)
        self.procs.start("simulator", "services.simulator", "--config", c)
        wait_until(self.sim.up, timeout=30, what="simulator up")
        for vid in self.kinds:
            self.start_feed(vid)
        if self.agg_shards:
            for i in range(len(self.agg_shards)):
                self.procs.start(f"aggregator_{i}", "services.aggregator", "--config", c, "--shard", str(i))
        else:
            self.procs.start("aggregator", "services.aggregator", "--config", c)
        self.procs.start("publisher", "services.publisher", "--config", c)

    def drain(self) -> None:
        for s in self.subs.values():
            s.drain(10)
            for m in s.received[-50:]:
                check_snapshot(m)

    def carriers(self, symbol: str) -> list[str]:
        """The venues that carry ``symbol`` (their own ``symbols`` list, else all)."""
        return [v for v in self.kinds if symbol in self.listed.get(v, self.symbols)]

    def truth(self, symbol: str) -> tuple[list[list[str]], list[list[str]]]:
        return reference_merge({v: self.sim.truth(v, symbol, self.depth.get(v)) for v in self.carriers(symbol)},
                               self.n, self.dust)

    def settled(self, symbol: str) -> bool:
        m = self.subs[symbol].last
        if m is None or set(m["venues"].values()) != {"live"}:
            return False
        bids, asks = self.truth(symbol)
        return bool(m["bids"] == bids and m["asks"] == asks)

    def diff(self, symbol: str) -> str:
        m = self.subs[symbol].last
        if m is None:
            return f"{symbol}: nothing received"
        bids, asks = self.truth(symbol)
        lines = [f"{symbol} seq {m['seq']} venues {m['venues']}"]
        for name, got, want in (("bids", m["bids"], bids), ("asks", m["asks"], asks)):
            for i, (g, w) in enumerate(zip(got, want, strict=False)):
                if g != w:
                    lines.append(f"  {name}[{i}] published {g} truth {w}")
        return "\n".join(lines)

    def all_live(self) -> bool:
        return all((m := self.subs[s].last) is not None and set(m["venues"].values()) == {"live"}
                   for s in self.symbols)

    def statuses_since(self, marks: dict[str, int], venue: str) -> set[str]:
        return {m["venues"][venue] for s in self.symbols for m in self.subs[s].received[marks[s]:]}

    def marks(self) -> dict[str, int]:
        return {s: len(self.subs[s].received) for s in self.symbols}

    def settle(self, what: str, timeout: float = 60) -> float:
        """With every venue live, pause the market and wait until every published book equals
        the merged truth; if a venue leaves live meanwhile, resume and start again."""
        t0 = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            wait_until(self.all_live, timeout=max(left, 1), pump=self.drain, what=f"all venues live ({what})")
            self.sim.get("/pause")
            try:
                wait_until(lambda: all(self.settled(s) for s in self.symbols) or not self.all_live(),
                           timeout=max(timeout - (time.monotonic() - t0), 1), pump=self.drain,
                           what=f"published books = simulator truth ({what})")
                if self.all_live():
                    return time.monotonic() - t0
            except AssertionError as e:
                raise AssertionError(f"{e}\n" + "\n".join(self.diff(s) for s in self.symbols)) from None
            finally:
                self.sim.get("/resume")

    def close(self) -> None:
        self.procs.close()
        for s in self.subs.values():
            s.sock.close(0)
        self.ctx.term()
