"""Across hosts: the cluster file, one host's supervisord configuration, and the whole pipeline on
three "hosts" made of Linux network namespaces joined by veth pairs, CURVE on every connection.

    feeds host (ns) 10.77.1.1 ── veth ── 10.77.1.2 core host (ns) 10.77.2.1 ── veth ── 10.77.2.2 subscriber host (ns)
    simulator, feed_binance,              aggregator, publisher                     a CURVE subscriber,
    feed_bitstamp (supervisord)           (supervisord)                             a depletion query

Each host runs the supervisord configuration ``python -m deploy.supervisor --cluster F --host H``
writes for it. The test checks the published books against the simulator's true books, cuts the
feeds host's link (``ip link set down``), sees every venue go ``down`` (``down_after``: a cut link
closes no TCP connection), restores it, and checks the books again; then the same with the
subscriber's link. Times are printed (``-s``), never asserted.

Namespaces need root and iproute2: without them the test is skipped with the reason, except under
``CI=true``, where it fails. Namespace names carry this process's pid; a run that was killed
leaves namespaces whose pid is gone: the next run kills what still runs in them and deletes them.
Only 10.77.x.y addresses on the test's own veths are used; nothing is added to the host's own
network namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest

from common import config, security
from deploy import supervisor
from tests.harness import REPO, Procs, check_snapshot, reference_merge, wait_until

# --- the cluster file and one host's configuration (no namespaces needed) ------------------------

CLUSTER = REPO / "deploy" / "cluster.toml"


def _cluster(path: Path) -> tuple[config.Config, dict[str, supervisor.Host], list[supervisor.Endpoint]]:
    cfg = config.load(path)
    names = [p.name for p in supervisor.programs(cfg, common="", demo=True, python="py")]
    hosts = supervisor.load_cluster(supervisor.read_cluster(path), names)
    demo = any("simulator" in h.programs for h in hosts.values())
    eps = supervisor.endpoints(cfg, simulator=demo)
    supervisor.check_cluster(cfg, hosts, eps)
    return cfg, hosts, eps


def test_shipped_cluster_places_every_program_once() -> None:
    """deploy/cluster.toml is valid: CURVE on, every enabled program on one host, endpoints on host addresses."""
    cfg, hosts, _ = _cluster(CLUSTER)
    assert cfg.security.curve is True
    assert {h: v.programs for h, v in hosts.items()} == {
        "feeds-a": ("feed_binance", "feed_bitstamp", "feed_kraken"),
        "feeds-b": ("feed_coinbase", "feed_gemini"),
        "core": ("aggregator", "publisher")}
    assert (cfg.venue("binance").pub, cfg.venue("gemini").ctl) == ("tcp://10.0.1.11:50060", "tcp://10.0.1.12:50071")
    assert (cfg.publisher.endpoint, cfg.aggregator.pub) == ("tcp://10.0.2.20:50052", "tcp://127.0.0.1:50054")


def test_shipped_cluster_follows_the_port_plan() -> None:
    """Every port of deploy/cluster.toml is the one deploy/ports.py plans for it."""
    from deploy import ports

    cfg = config.load(CLUSTER)
    plan = ports.all_ports()
    for e in supervisor.endpoints(cfg):
        if e.key.endswith(".metrics"):
            assert e.port in ports.METRICS_RESERVE, e.key
            continue
        key = {"publisher.bind": "publisher", "publisher.latest_port": "publisher.latest"}.get(e.key, e.key)
        assert e.port == plan[key], e.key


def test_host_config_has_only_its_programs(capsys: pytest.CaptureFixture[str]) -> None:
    """--cluster --host writes one host's supervisord configuration: its programs, nothing else."""
    assert supervisor.main(["--cluster", str(CLUSTER), "--host", "core", "--print"]) == 0
    text = capsys.readouterr().out
    assert re.findall(r"^\[program:(\w+)\]$", text, re.M) == ["aggregator", "publisher"]
    assert "programs=aggregator,publisher" in text
    assert f"--config {CLUSTER}" in text
    assert supervisor.main(["--cluster", str(CLUSTER), "--host", "feeds-b", "--print"]) == 0
    text = capsys.readouterr().out
    assert re.findall(r"^\[program:(\w+)\]$", text, re.M) == ["feed_coinbase", "feed_gemini"]


def test_firewall_ports_per_host(capsys: pytest.CaptureFixture[str]) -> None:
    """--ports lists each port a host binds off loopback, and who comes in on it."""
    assert supervisor.main(["--cluster", str(CLUSTER), "--host", "core", "--ports"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tcp 50053 on 10.0.2.20  from depletion clients (CURVE)   # aggregator.query (aggregator)",
        "tcp 50052 on 10.0.2.20  from subscribers (CURVE)   # publisher.bind (publisher)",
        "tcp 50056 on 10.0.2.20  from latest-only subscribers (CURVE)   # publisher.latest_port (publisher)",
        "tcp 50100 on 10.0.2.20  from metrics scraper   # aggregator.metrics (aggregator)",
        "tcp 50101 on 10.0.2.20  from metrics scraper   # publisher.metrics (publisher)"]
    assert supervisor.main(["--cluster", str(CLUSTER), "--host", "feeds-b", "--ports"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"tcp {p} on 10.0.1.12  from core (10.0.1.20, 10.0.2.20)   # venues.{v}.{w} (feed_{v})"
        for v, w, p in (("coinbase", "pub", 50068), ("coinbase", "ctl", 50069),
                        ("gemini", "pub", 50070), ("gemini", "ctl", 50071))] + [
        f"tcp {p} on 10.0.1.12  from metrics scraper   # venues.{v}.metrics (feed_{v})"
        for v, p in (("coinbase", 50114), ("gemini", 50115))]


def test_cluster_needs_a_known_host(capsys: pytest.CaptureFixture[str]) -> None:
    """--cluster without --host, or with a host it does not have, is an error listing the hosts."""
    assert supervisor.main(["--cluster", str(CLUSTER), "--print"]) == 2
    assert capsys.readouterr().err == (
        f"configuration error: give --host NAME; hosts of {CLUSTER}: ['core', 'feeds-a', 'feeds-b']\n")
    assert supervisor.main(["--cluster", str(CLUSTER), "--host", "feeds-c"]) == 2
    assert capsys.readouterr().err == (
        f"configuration error: --host 'feeds-c' is not a host; hosts of {CLUSTER}: ['core', 'feeds-a', 'feeds-b']\n")


def test_supervisor_help_names_the_cluster_mode() -> None:
    """python -m deploy.supervisor --help documents --cluster, --host and --ports."""
    out = subprocess.run([sys.executable, "-m", "deploy.supervisor", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for flag in ("--cluster PATH", "--host NAME", "--ports", "[cluster.hosts.<name>]"):
        assert flag in out, flag


BAD_CLUSTERS = [
    # (text replaced in deploy/cluster.toml, by what, the error names)
    ('pub = "tcp://10.0.1.11:50060"', 'pub = "tcp://10.0.1.12:50060"',
     "venues.binance.pub: feed_binance runs on host feeds-a ['10.0.1.11'], which does not have 10.0.1.12"),
    ('pub = "tcp://10.0.1.11:50060"', 'pub = "tcp://127.0.0.1:50060"',
     "venues.binance.pub: loopback 127.0.0.1, but feed_binance runs on feeds-a and ['aggregator'] on ['core']"),
    ('pub = "tcp://10.0.1.11:50060"', 'pub = "tcp://*:50060"',
     "venues.binance.pub: a wildcard address cannot be dialled by ['aggregator']"),
    ('pub = "tcp://10.0.1.11:50060"', 'pub = "tcp://feeds-a.lan:50060"',
     "venues.binance.pub: 'feeds-a.lan' is not an IP address"),
    ('programs = ["feed_coinbase", "feed_gemini"]', 'programs = ["feed_coinbase", "feed_gemini", "feed_binance"]',
     "cluster.hosts.feeds-b.programs: feed_binance already runs on host feeds-a"),
    ('programs = ["feed_coinbase", "feed_gemini"]', 'programs = ["feed_coinbase"]',
     "cluster.hosts: no host runs ['feed_gemini']"),
    ('programs = ["feed_coinbase", "feed_gemini"]', 'programs = ["feed_coinbase", "feed_gemini", "feed_ftx"]',
     "cluster.hosts.feeds-b.programs: 'feed_ftx' is not a program of this config"),
    ('addresses = ["10.0.1.12"]', 'addresses = ["feeds-b"]', "cluster.hosts.feeds-b.addresses: 'feeds-b'"),
    ('addresses = ["10.0.1.12"]', 'address = "10.0.1.12"', "cluster.hosts.feeds-b: unknown key(s) ['address']"),
    ("curve = true ", "curve = false ",
     "publisher.bind: '10.0.2.20' is not a loopback address and security.curve is off"),
]


@pytest.mark.parametrize("old,new,error", BAD_CLUSTERS,
                         ids=[f"{i}-{e.split(':')[0]}" for i, (_, _, e) in enumerate(BAD_CLUSTERS)])
def test_cluster_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
                                     error: str) -> None:
    """A misplaced endpoint or program is a configuration error (exit 2) naming the key."""
    text = CLUSTER.read_text()
    assert old in text
    p = tmp_path / "cluster.toml"
    p.write_text(text.replace(old, new, 1))
    assert supervisor.main(["--cluster", str(p), "--host", "core", "--print"]) == 2
    err = capsys.readouterr().err
    assert error in err, err


def test_cluster_of_loopback_hosts_needs_curve(tmp_path: Path) -> None:
    """Two hosts without CURVE is an error even when every endpoint is loopback."""
    p = tmp_path / "c.toml"
    p.write_text((REPO / "deploy" / "demo.toml").read_text() + """
[cluster.hosts.a]
addresses = ["10.0.0.1"]
programs = ["simulator", "feed_binance", "feed_bitstamp", "feed_kraken", "feed_coinbase", "feed_gemini"]
[cluster.hosts.b]
addresses = ["10.0.0.2"]
programs = ["aggregator", "publisher"]
""")
    with pytest.raises(config.ConfigError, match=r"^security.curve: a cluster of 2 hosts needs"):
        _cluster(p)


def test_publisher_refuses_a_non_loopback_bind_without_curve() -> None:
    """publisher --bind 0.0.0.0 with CURVE off exits 2, the key named on the last line."""
    r = subprocess.run([sys.executable, "-m", "services.publisher", "--config", str(REPO / "deploy" / "demo.toml"),
                        "--bind", "0.0.0.0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "publisher: configuration error: publisher.bind: '0.0.0.0' is not a loopback address and security.curve "
        "is off: anyone who reaches it could read or inject; set [security] curve = true (make keys) or bind "
        "127.0.0.1")


# --- three hosts in network namespaces --------------------------------------------------------

NS_PREFIX = "bmxt"
NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)([a-z]+)$")
SYMS = ["BTC/USDT", "ETH/USDT"]
VENUES = ["binance", "bitstamp"]
N = 10
DUST = {v: ("0.0001", "1") for v in VENUES}
DOWN_AFTER = 2.0
REPORT: list[str] = []


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _netns_list() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def _kill_inside(ns: str) -> None:
    """Kill what still runs in a namespace of this test (started by this test, or by a killed run)."""
    for pid in ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces of runs whose process is gone (killed before its clean-up)."""
    gone = []
    for ns in _netns_list():
        m = NS_RE.match(ns)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue                       # that run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_inside(ns)
        ip("netns", "delete", ns, check=False)
        gone.append(ns)
    return gone


def namespaces_or_skip() -> None:
    """Skip (fail under CI=true) unless this machine lets us create network namespaces."""
    why = None
    if shutil.which("ip") is None:
        why = "the `ip` command (iproute2) is not installed (`make test` installs it when run as root)"
    else:
        probe = f"{NS_PREFIX}{os.getpid()}probe"
        r = ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            why = f"cannot create a network namespace (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}"
        else:
            ip("netns", "delete", probe, check=False)
    if why is not None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI=true and the namespace test cannot run: {why}")
        pytest.skip(why)


class Net:
    """Three namespaces: feeds <-> core <-> subs, each link a veth pair made inside the namespaces."""

    LINKS: ClassVar[dict[tuple[str, str], str]] = {  # (ns, device): address
        ("feeds", "tocore"): "10.77.1.1/24", ("core", "tofeeds"): "10.77.1.2/24",
        ("core", "tosubs"): "10.77.2.1/24", ("subs", "tocore"): "10.77.2.2/24",
    }

    def __init__(self) -> None:
        self.ns = {role: f"{NS_PREFIX}{os.getpid()}{role}" for role in ("feeds", "core", "subs")}

    def up(self) -> None:
        for n in self.ns.values():
            ip("netns", "add", n)
            ip("-n", n, "link", "set", "lo", "up")
        ip("-n", self.ns["feeds"], "link", "add", "tocore", "type", "veth", "peer", "name", "tofeeds",
           "netns", self.ns["core"])
        ip("-n", self.ns["core"], "link", "add", "tosubs", "type", "veth", "peer", "name", "tocore",
           "netns", self.ns["subs"])
        for (role, dev), addr in self.LINKS.items():
            ip("-n", self.ns[role], "addr", "add", addr, "dev", dev)
            ip("-n", self.ns[role], "link", "set", dev, "up")

    def link(self, role: str, dev: str, state: str) -> None:
        ip("-n", self.ns[role], "link", "set", dev, state)

    def close(self) -> None:
        for n in self.ns.values():
            if n in _netns_list():
                _kill_inside(n)
                ip("netns", "delete", n, check=False)


class NsProcs(Procs):
    """Procs whose processes run inside a namespace (``ip netns exec`` execs the command: the pid is
    the program's own)."""

    def __init__(self, logdir: Path) -> None:
        super().__init__(logdir)
        self.readers: list[threading.Thread] = []     # threads reading a process's stdout

    def start_in(self, ns: str, name: str, argv: list[str], *, pipes: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed right after the fork
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=REPO, stdout=subprocess.PIPE if pipes else log,
                             stderr=log, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                             start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def close(self) -> None:
        """Stop every process; then close the pipes (after their readers saw the end)."""
        pipes = [s for p in self.procs.values() for s in (p.stdin, p.stdout) if s is not None]
        super().close()
        for t in self.readers:
            t.join(30)
        for s in pipes:
            s.close()


class Agent:
    """A line-per-request helper inside a namespace (``python -m tests.test_cluster_netns http``):
    HTTP GETs to the simulator's loopback control port on the feeds host."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc, self.stdin, self.stdout = proc, proc.stdin, proc.stdout

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.stdin.write((json.dumps({"path": path, "params": params}) + "\n").encode())
        self.stdin.flush()
        line = self.stdout.readline()
        if not line:
            raise AssertionError("the HTTP agent on the feeds host exited")
        r: dict[str, Any] = json.loads(line)
        if r["status"] != 200:
            raise AssertionError(f"simulator {path} {params}: {r}")
        body: dict[str, Any] = r["body"]
        return body

    def up(self) -> bool:
        try:
            return bool(self.get("/health").get("ok"))
        except AssertionError:
            return False

    def truth(self, symbol: str) -> tuple[list[list[str]], list[list[str]]]:
        books = {}
        for v in VENUES:
            b = self.get("/book", venue=v, symbol=symbol)
            books[v] = (b["bids"], b["asks"])
        return reference_merge(books, N, DUST)


class Received:
    """Every snapshot the subscriber host printed, with its receive time (monotonic: one clock for
    every namespace), read by a thread that blocks on the pipe."""

    def __init__(self, out: IO[bytes]) -> None:
        self.items: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, args=(out,), daemon=True)
        self.thread.start()

    def _read(self, out: IO[bytes]) -> None:
        for line in out:
            self.items.append(json.loads(line))

    def last(self, symbol: str) -> dict[str, Any] | None:
        return next((it["m"] for it in reversed(self.items) if it["m"]["symbol"] == symbol), None)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.items[mark:]


def cluster_file(tmp: Path, keys: Path) -> Path:
    """The test's cluster: endpoints on the namespaces' addresses, the simulator on the feeds host."""
    venues = ""
    for i, (v, rest) in enumerate((("binance", ""), ("bitstamp", "/api/v2"))):
        venues += (f'[venues.{v}]\nkind = "{v}"\nsymbols = {json.dumps(SYMS)}\n'
                   f'ws_url = "ws://127.0.0.1:{50080 + i}"\nrest_url = "http://127.0.0.1:{50080 + i}{rest}"\n'
                   f'pub = "tcp://10.77.1.1:{50060 + 2 * i}"\nctl = "tcp://10.77.1.1:{50061 + 2 * i}"\n'
                   f'stale_after = 2.0\ndepth = 5000\ntaker_fee = "0.001"\n\n'
                   f'[venues.{v}.dust]\n"*" = {{ min_amount = "{DUST[v][0]}", min_notional = "{DUST[v][1]}" }}\n\n'
                   f'[simulator.venues.{v}]\nkind = "{v}"\nport = {50080 + i}\n\n')
    p = tmp / "cluster.toml"
    p.write_text(f"""symbols = {json.dumps(SYMS)}
levels = {N}
log_level = "DEBUG"
run_dir = "{tmp / 'run'}"

[aggregator]
pub = "tcp://127.0.0.1:50054"
ctl = "tcp://127.0.0.1:50055"
query = "tcp://10.77.2.1:50053"
down_after = {DOWN_AFTER}

[aggregator.depletion]
"BTC/USDT" = ["1", "5"]

[publisher]
bind = "10.77.2.1"
port = 50052
sndhwm = 1000

[security]
curve = true
keys_dir = "{keys}"

[simulator]
host = "127.0.0.1"
control_port = 50090
seed = 13
rate = 20.0

{venues}
[cluster.hosts.feeds]
addresses = ["10.77.1.1"]
programs = ["simulator", "feed_binance", "feed_bitstamp"]

[cluster.hosts.core]
addresses = ["10.77.1.2", "10.77.2.1"]
programs = ["aggregator", "publisher"]
""")
    return p


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net = Net()
        self.procs = NsProcs(tmp)
        self.keys = tmp / "keys"
        security.make_keys(self.keys)
        self.file = cluster_file(tmp, self.keys)
        self.sim: Agent | None = None
        self.rx: Received | None = None

    def start(self) -> None:
        self.net.up()
        py = sys.executable
        for host in ("feeds", "core"):
            run = self.tmp / f"run-{host}"
            out = subprocess.run([py, "-m", "deploy.supervisor", "--cluster", str(self.file), "--host", host,
                                  "--set", f"run_dir={str(run)!r}"], cwd=REPO, capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            conf = out.stdout.strip()
            assert conf == str(run / "supervisord.conf")
            self.procs.start_in(self.net.ns[host], f"supervisord-{host}",
                                [str(Path(py).parent / "supervisord"), "-n", "-c", conf])
        self.sim = Agent(self.procs.start_in(self.net.ns["feeds"], "http-agent",
                                             [py, "-m", "tests.test_cluster_netns", "http", "50090"], pipes=True))
        sub = self.procs.start_in(self.net.ns["subs"], "subscriber", [
            py, "-m", "tests.test_cluster_netns", "subscribe", "tcp://10.77.2.1:50052",
            str(self.keys / "server.key"), str(self.keys / "subscriber.key_secret"), *SYMS], pipes=True)
        assert sub.stdout is not None
        self.rx = Received(sub.stdout)
        self.procs.readers.append(self.rx.thread)

    def log(self, host: str, program: str) -> str:
        p = self.tmp / f"run-{host}" / "logs" / f"{program}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def all_live(self) -> bool:
        assert self.rx is not None
        return all((m := self.rx.last(s)) is not None and set(m["venues"].values()) == {"live"} for s in SYMS)

    def settled(self) -> bool:
        assert self.rx is not None and self.sim is not None
        for s in SYMS:
            m = self.rx.last(s)
            if m is None or set(m["venues"].values()) != {"live"}:
                return False
            bids, asks = self.sim.truth(s)
            if (m["bids"], m["asks"]) != (bids, asks):
                return False
        return True

    def settle(self, what: str, timeout: float = 90) -> float:
        """With every venue live, pause the market and wait until every published book equals the
        merged truth (if a venue leaves live meanwhile, resume and start again)."""
        assert self.sim is not None
        t0 = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            wait_until(self.all_live, timeout=max(left, 1), what=f"all venues live ({what})")
            self.sim.get("/pause")
            try:
                wait_until(lambda: self.settled() or not self.all_live(),
                           timeout=max(timeout - (time.monotonic() - t0), 1),
                           what=f"published books = simulator truth ({what})")
                if self.all_live():
                    return time.monotonic() - t0
            finally:
                self.sim.get("/resume")

    def close(self) -> None:
        try:
            self.procs.close()
        finally:
            self.net.close()


def check_stream(items: list[dict[str, Any]]) -> None:
    """Per symbol: one epoch, seq contiguous, and never a level of a venue that is not live."""
    for s in SYMS:
        ms = [it["m"] for it in items if it["m"]["symbol"] == s]
        assert ms, s
        assert {m["epoch"] for m in ms} == {ms[0]["epoch"]}, s
        seqs = [m["seq"] for m in ms]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), s
        for m in ms:
            check_snapshot(m)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    namespaces_or_skip()
    stale = remove_stale_namespaces()
    if stale:
        REPORT.append(f"removed stale namespaces of killed runs: {stale}")
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.close()
        assert not [n for n in _netns_list() if n in c.net.ns.values()], "namespaces left behind"
        print("\n" + "\n".join(REPORT))


def test_namespaces_of_a_killed_run_are_removed() -> None:
    """A namespace named after a pid that is gone is deleted, and what still ran in it killed."""
    namespaces_or_skip()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)                      # its pid: a run that no longer exists
    ns = f"{NS_PREFIX}{dead.pid}core"
    ip("netns", "add", ns)
    left = None
    try:
        left = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", "import time; time.sleep(600)"],
                                start_new_session=True)
        wait_until(lambda: str(left.pid) in ip("netns", "pids", ns).stdout.split(), timeout=30,
                   what="a process left in the namespace")
        assert ns in remove_stale_namespaces()
        assert ns not in _netns_list()
        assert left.wait(30) == -signal.SIGKILL
    finally:
        if left is not None and left.poll() is None:
            left.kill()
            left.wait(30)
        if ns in _netns_list():
            ip("netns", "delete", ns, check=False)


#: How the feeds host's link is cut: its interface down (the sender's packets fail to leave, TCP
#: retries them at a fixed short interval), the core host's interface down, or every frame lost in
#: flight (each side's neighbour entry points to a MAC nobody has: packets leave and vanish, as on a
#: link that fails further away; TCP backs off exponentially).
CUTS = {"down-feeds": "the feeds host's interface down", "down-core": "the core host's interface down",
        "lost": "frames lost in flight"}
NOBODY = "02:00:00:00:77:01"


def _cut(c: Cluster, how: str, cut: bool) -> None:
    if how == "down-feeds":
        c.net.link("feeds", "tocore", "down" if cut else "up")
    elif how == "down-core":
        c.net.link("core", "tofeeds", "down" if cut else "up")
    else:
        for role, dev, peer in (("feeds", "tocore", "10.77.1.2"), ("core", "tofeeds", "10.77.1.1")):
            if cut:
                ip("-n", c.net.ns[role], "neigh", "replace", peer, "lladdr", NOBODY, "dev", dev, "nud", "permanent")
            else:
                ip("-n", c.net.ns[role], "neigh", "del", peer, "dev", dev)


def cut_feeds(c: Cluster, how: str) -> None:
    """Cut the feeds host's link (``how``: a key of CUTS): every venue goes down with no level left,
    nothing comes back while cut; restored, every venue is live again and the books equal the truth."""
    assert c.sim is not None and c.rx is not None
    rx = c.rx
    where = CUTS[how]
    mark = len(rx.items)
    t_cut = time.monotonic()
    _cut(c, how, True)

    def all_down() -> dict[str, Any] | None:
        found = {}
        for it in rx.since(mark):
            if set(it["m"]["venues"].values()) == {"down"}:
                found.setdefault(it["m"]["symbol"], it)
        return found if set(found) == set(SYMS) else None

    wait_until(lambda: all_down() is not None, timeout=60, what=f"every venue down after the cut ({where})")
    downs = all_down()
    assert downs is not None
    for it in downs.values():
        assert (it["m"]["bids"], it["m"]["asks"]) == ([], []), "no level of a down venue"
    t_down = max(it["t"] for it in downs.values())
    # Keep it cut while the market moves on (the books the feeds hold change meanwhile).
    marker = c.sim.get("/book", venue="binance", symbol="BTC/USDT")
    wait_until(lambda: c.sim.get("/book", venue="binance", symbol="BTC/USDT") != marker and
               time.monotonic() - t_cut > 3 * DOWN_AFTER, timeout=60, what="the market moving during the cut")
    assert all(set(it["m"]["venues"].values()) == {"down"} for it in rx.since(mark) if it["t"] >= t_down), \
        "nothing comes back while cut"
    mark = len(rx.items)
    t_up = time.monotonic()
    _cut(c, how, False)
    wait_until(lambda: c.all_live() and len(rx.items) > mark, timeout=120, what="venues live after the link is back")
    live = next(it["t"] for it in rx.since(mark) if set(it["m"]["venues"].values()) == {"live"}) - t_up
    c.settle(f"after the cut ({where})", timeout=120)
    REPORT.append(f"feeds link cut ({where}) for {t_up - t_cut:.1f} s: every venue down after "
                  f"{t_down - t_cut:.2f} s (down_after {DOWN_AFTER} s); restored: first all-live book after "
                  f"{live:.2f} s, books equal to truth (market paused) after {time.monotonic() - t_up:.2f} s")


@pytest.mark.timeout(600)
def test_three_hosts_cut_and_heal(cluster: Cluster) -> None:
    """Three CURVE hosts: books equal the truth; a cut feeds link takes every venue down; healed, equal again."""
    c = cluster
    assert c.sim is not None and c.rx is not None
    rx = c.rx
    wait_until(c.sim.up, timeout=60, what="the simulator on the feeds host")
    took = c.settle("start-up", timeout=120)
    REPORT.append(f"start-up to books equal to truth on the subscriber host: {took:.2f} s")
    assert "CURVE on" in c.log("core", "aggregator")
    check_stream(rx.items)

    # A depletion query from the subscriber host, over CURVE, answered by the core host.
    r = subprocess.run(["ip", "netns", "exec", c.net.ns["subs"], sys.executable, "-m", "services.client", "deplete",
                        "BTC/USDT", "sell", "1", "--json", "--endpoint", "tcp://10.77.2.1:50053",
                        "--server-key", str(c.keys / "server.key"),
                        "--client-key", str(c.keys / "subscriber.key_secret"), "--timeout", "10"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["ok"] is True and reply["symbol"] == "BTC/USDT"

    # Cut the feeds host off, three ways (see CUTS). No TCP connection closes: the aggregator
    # notices the silence (down_after).
    for how in ("down-feeds", "down-core", "lost"):
        cut_feeds(c, how)
        check_stream(rx.items)

    # Cut the subscriber host off: it gets nothing meanwhile, then the queued books, contiguous.
    t_cut = time.monotonic()
    c.net.link("subs", "tocore", "down")
    marker = c.sim.get("/book", venue="binance", symbol="BTC/USDT")
    wait_until(lambda: c.sim.get("/book", venue="binance", symbol="BTC/USDT") != marker and
               time.monotonic() - t_cut > 3.0, timeout=60, what="the market moving during the cut")
    mark = len(rx.items)
    t_up = time.monotonic()
    c.net.link("subs", "tocore", "up")
    wait_until(lambda: len(rx.items) > mark, timeout=120, what="books again on the subscriber host")
    first = rx.items[mark]["t"] - t_up
    c.settle("after the subscriber link cut", timeout=120)
    healed = time.monotonic() - t_up
    REPORT.append(f"subscriber link cut for {t_up - t_cut:.1f} s: first book {first:.2f} s after restoring, "
                  f"books equal to truth at {healed:.2f} s")
    check_stream(rx.items)


# --- the helpers run inside the namespaces (python -m tests.test_cluster_netns ...) -------------


def _http_agent(port: int) -> None:
    """Answer one JSON request line ({"path", "params"}) with one JSON line ({"status", "body"})."""
    import urllib.error
    import urllib.parse
    import urllib.request

    for line in sys.stdin:
        req = json.loads(line)
        url = f"http://127.0.0.1:{port}{req['path']}?{urllib.parse.urlencode(req['params'])}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                out = {"status": r.status, "body": json.loads(r.read())}
        except urllib.error.HTTPError as e:
            out = {"status": e.code, "body": e.read().decode(errors="replace")}
        except OSError as e:
            out = {"status": 0, "body": str(e)}
        print(json.dumps(out), flush=True)


def _subscriber(endpoint: str, server_key: str, client_key: str, symbols: list[str]) -> None:
    """A plain CURVE SUB client: one JSON line per snapshot ({"t": monotonic receive time, "m": map})."""
    import msgpack
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    security.client_keys(s, server_key=server_key, client_key=client_key)
    topics = {f"book.{sym}".encode() for sym in symbols}
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(endpoint)
    while True:
        topic, payload = s.recv_multipart()
        if topic in topics:
            print(json.dumps({"t": time.monotonic(), "m": msgpack.unpackb(payload)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "http":
        _http_agent(int(sys.argv[2]))
    elif sys.argv[1] == "subscribe":
        _subscriber(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
