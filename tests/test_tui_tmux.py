"""The full-screen ``watch`` view, driven as a person would: in tmux, against a real pipeline
(simulator -> both feeds -> aggregator -> publisher), read back with ``capture-pane``.

tmux runs on a private socket (``-L``) and its server is always killed at the end; the pipeline's
processes are cleaned up by :class:`tests.harness.Procs`. No timed assertions: every wait is for a
condition on the screen, with generous timeouts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.harness import REPO, Procs, SimControl, Subscriber, free_port, wait_until, write_config

SYMS = ["BTC/USDT", "ETH/USDT"]
SGR = r"\x1b\[[0-9;]*m"


class Tmux:
    """One private tmux server (``tmux -L <name>``) with one 160x50 session running ``command``."""

    def __init__(self, tmp: Path, command: str) -> None:
        self.name = f"bookmux-tui-{os.getpid()}-{time.monotonic_ns()}"
        conf = tmp / "tmux.conf"
        # remain-on-exit: the pane (and the server) stays after the program ends, to read the screen.
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 0\n")
        self.base = ["tmux", "-L", self.name, "-f", str(conf)]
        self.run("new-session", "-d", "-s", "main", "-x", "160", "-y", "50", command)

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True, timeout=30).stdout

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "main")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def dead(self) -> bool:
        """The pane's program has ended (its terminal closed)."""
        return self.run("display-message", "-p", "-t", "main", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=30)


def need_tmux() -> None:
    if shutil.which("tmux"):
        return
    if os.environ.get("CI"):
        pytest.fail("tmux is not installed: make deps installs it (apt-get install -y tmux)")
    pytest.skip("tmux is not installed (make deps installs it)")


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[Procs, dict, Path]]:
    """The simulator, both feeds, the aggregator and the publisher, on free loopback ports."""
    need_tmux()
    bin_port, bts_port, ctl_port = free_port(), free_port(), free_port()
    extra = (f'[simulator]\nhost = "127.0.0.1"\ncontrol_port = {ctl_port}\nseed = 5\nrate = 10.0\n\n'
             f'[simulator.venues.binance]\nkind = "binance"\nport = {bin_port}\n\n'
             f'[simulator.venues.bitstamp]\nkind = "bitstamp"\nport = {bts_port}\n')
    cfg = tmp_path / "bookmux.toml"
    ep = write_config(cfg, symbols=SYMS, levels=10, down_after=2.0, extra=extra, depletion={"BTC/USDT": ["1", "5"]},
                      venues={"binance": {"kind": "binance", "ws_url": f"ws://127.0.0.1:{bin_port}",
                                          "rest_url": f"http://127.0.0.1:{bin_port}", "stale_after": 5.0},
                              "bitstamp": {"kind": "bitstamp", "ws_url": f"ws://127.0.0.1:{bts_port}",
                                           "rest_url": f"http://127.0.0.1:{bts_port}/api/v2", "stale_after": 5.0}})
    ps = Procs(tmp_path)
    try:
        c = str(cfg)
        ps.start("simulator", "services.simulator", "--config", c)
        wait_until(SimControl(ctl_port).up, timeout=60, what="simulator up")
        ps.start("feed_binance", "services.feed_binance", "--venue", "binance", "--config", c)
        ps.start("feed_bitstamp", "services.feed_bitstamp", "--venue", "bitstamp", "--config", c)
        ps.start("aggregator", "services.aggregator", "--config", c)
        ps.start("publisher", "services.publisher", "--config", c)
        yield ps, ep, cfg
    finally:
        ps.close()


def wait_all_live(endpoint: str) -> None:
    """Until a plain subscriber sees both symbols with both venues live (so the view has a book)."""
    ctx = zmq.Context()
    subs = [Subscriber(endpoint, s, ctx) for s in SYMS]
    try:
        def live() -> bool:
            return all(s.last is not None and set(s.last["venues"].values()) == {"live"} for s in subs)
        wait_until(live, timeout=90, pump=lambda: [s.drain(20) for s in subs], what="both venues live")
    finally:
        for s in subs:
            s.sock.close(0)
        ctx.term()


def book_line(screen: str) -> str:
    """The line that names the shown book (``<SYMBOL>   spread ...``), or ''."""
    return next((ln for ln in screen.splitlines() if re.match(r"^[A-Z0-9]+/[A-Z0-9]+ +spread", ln)), "")


def test_watch_in_tmux_book_colours_keys_restart_and_quit(pipeline, tmp_path: Path) -> None:
    """Plain text into a pipe; in tmux: shows the book (venues coloured, spread, statuses), survives
    an aggregator restart (new epoch shown), says when nothing arrives, switches symbol with Tab,
    changes levels, quits on q."""
    ps, ep, cfg = pipeline
    endpoint = f"tcp://127.0.0.1:{ep['pub_port']}"
    wait_all_live(endpoint)
    # Not a terminal (a pipe): today's plain text, no escape codes.
    plain_run = subprocess.run([sys.executable, "-m", "services.client", "watch", "BTC/USDT", "--endpoint", endpoint,
                                "--count", "2", "--config", str(cfg)], cwd=REPO, capture_output=True, text=True,
                               timeout=60)
    assert plain_run.returncode == 0, plain_run.stderr
    assert len(re.findall(r"^BTC/USDT  spread \S+  epoch \d+ seq \d+", plain_run.stdout, re.M)) == 2
    assert "\x1b" not in plain_run.stdout
    cmd = " ".join(shlex.quote(a) for a in (
        "env", "-u", "NO_COLOR", "-u", "COLUMNS", "-u", "LINES",   # the terminal's own size and colours
        sys.executable, "-m", "services.client", "watch", "BTC/USDT", "--endpoint", endpoint,
        "--config", str(cfg), "--timeout", "2"))
    # The exit status goes to a file: tmux 3.3 sometimes reaps a pane's process late (seconds).
    tmux = Tmux(tmp_path, f"cd {shlex.quote(str(REPO))} && {cmd} 2>{shlex.quote(str(tmp_path / 'watch.err'))}; "
                          f"echo $? >{shlex.quote(str(tmp_path / 'watch.status'))}")
    screen = ""
    try:
        def shows(pred, what: str, timeout: float = 60) -> None:
            def check() -> bool:
                nonlocal screen
                screen = tmux.screen(escapes=True)
                if tmux.dead():
                    raise AssertionError("the view ended")
                return bool(pred(re.sub(SGR, "", screen)))
            try:
                wait_until(check, timeout=timeout, what=what)
            except AssertionError as e:
                err = (tmp_path / "watch.err").read_text(errors="replace")
                raise AssertionError(f"{e}\nscreen:\n{re.sub(SGR, '', screen)}\nstderr:\n{err}") from None

        shows(lambda s: book_line(s).startswith("BTC/USDT") and s.count(" live ") >= 2
              and re.search(r"binance +live", s) and re.search(r"bitstamp +live", s), "the BTC/USDT book")
        plain = re.sub(SGR, "", screen)
        assert re.search(r"spread -?\d+(\.\d+)?", book_line(plain)), book_line(plain)
        assert re.search(r"mid \d+(\.\d+)?", book_line(plain)), book_line(plain)
        assert "BIDS" in plain and "ASKS" in plain and "cost to trade" in plain
        assert re.search(r"binance +live +[\d.]+ (s|min) ago", plain) and re.search(r"bitstamp +live", plain)
        # Each venue's name is preceded by its own colour escape, and the two colours differ.
        colours = {v: set(re.findall(rf"(\x1b\[[0-9;]*m){v}", screen)) for v in ("binance", "bitstamp")}
        assert colours["binance"] and colours["bitstamp"], colours
        assert not colours["binance"] & colours["bitstamp"], colours
        epoch = re.search(r"epoch (\d+) seq", plain)
        assert epoch is not None, plain

        # Aggregator restart: "no snapshot for" while it is gone, then a new epoch, and books again.
        ps.kill("aggregator")
        shows(lambda s: "no snapshot for" in s, "the no-snapshot notice")
        ps.start("aggregator", "services.aggregator", "--config", str(cfg))
        shows(lambda s: "NEW EPOCH" in s and (m := re.search(r"epoch (\d+) seq", s)) is not None
              and m.group(1) != epoch.group(1) and "no snapshot for" not in s, "the new epoch")

        tmux.keys("Tab")
        shows(lambda s: book_line(s).startswith("ETH/USDT"), "the ETH/USDT book after Tab")
        shows(lambda s: re.search(r"binance +live", s) and "levels (10)" in s, "ETH/USDT venues")
        tmux.keys("-", "-")
        shows(lambda s: "levels (8)" in s, "two levels fewer")
        tmux.keys("p")
        shows(lambda s: book_line(s).startswith("BTC/USDT"), "back to BTC/USDT with p")

        tmux.keys("q")
        status = tmp_path / "watch.status"
        try:
            wait_until(lambda: status.exists() and status.read_text().strip() != "", timeout=60,
                       what="the view to quit on q")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{tmux.screen()}") from None
        assert status.read_text().strip() == "0"
    finally:
        tmux.close()
