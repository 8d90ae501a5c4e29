"""``python -m services.simulator --config deploy/demo.toml [--rate 50] [--seed 1]
[--control-port 0] [--replay DIR | --replay VENUE=DIR] [--replay-speed 0]``

Reads the ``[simulator]`` section of the config (host, control_port, seed, rate and
``[simulator.venues.<id>]`` tables with kind and port), serves every venue and the control
interface, and blocks until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from common import logs
from common.config import ConfigError, add_config_args, from_args
from common.feed.capture import CaptureError
from services.simulator.app import Settings, SettingsError, Simulator, settings_from
from services.simulator.control import ControlServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m services.simulator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(ap)
    g = ap.add_argument_group("simulator (override the [simulator] section)")
    g.add_argument("--host", default=None, help="address to bind (config: simulator.host)")
    g.add_argument("--control-port", type=int, default=None, help="HTTP control port, 0 = any free")
    g.add_argument("--rate", type=float, default=None, help="book events per second per symbol per venue")
    g.add_argument("--seed", type=int, default=None, help="seed of the market model")
    g.add_argument("--ping-interval", type=float, default=None, help="seconds between WebSocket pings")
    g.add_argument("--replay", action="append", default=[], metavar="[VENUE=]DIR",
                   help="serve a recording folder (fixtures/recorded/{binance,binance_us,bitstamp,kraken,"
                        "coinbase,gemini}) instead of the model; without VENUE= it goes to the configured "
                        "venue of the recording's kind. A feed capture folder (--capture of a feed, "
                        "docs/capture.md) is played back too: every captured venue on the simulator venue "
                        "of the same id")
    g.add_argument("--replay-speed", type=float, default=None,
                   help="1 = recorded pace (default), 2 = twice as fast, 0 = as fast as possible")
    return ap.parse_args(argv)


def load_settings(args: argparse.Namespace) -> Settings:
    """The settings of the config's [simulator] table with the flags applied."""
    cfg = from_args(args)
    raw = cfg.simulator
    replays: dict[str, str] = {}
    if args.replay:
        from services.simulator.replay import capture_venues, detect_kind, is_capture
        kinds = {vid: v.get("kind", vid) for vid, v in raw.get("venues", {}).items() if isinstance(v, dict)}
        for item in args.replay:
            vid, eq, folder = item.partition("=")
            if not eq and is_capture(item):
                # a feed capture: each captured venue goes to the simulator venue of the same id
                captured = capture_venues(Path(item))
                matched = [v for v in captured if v in kinds]
                if not matched:
                    raise SettingsError(f"--replay {item}: a capture of {sorted(captured)}, but the config's "
                                        f"simulator venues are {sorted(kinds)}")
                for v in matched:
                    replays[v] = item
                continue
            if not eq:
                folder = item
                kind = detect_kind(Path(folder))
                matches = [v for v, k in kinds.items() if k == kind]
                if len(matches) != 1:
                    raise SettingsError(f"--replay {folder}: a {kind} recording, but the config has "
                                        f"{len(matches)} simulator venues of that kind; write VENUE=DIR")
                vid = matches[0]
            replays[vid] = folder
    return settings_from(raw, cfg.symbols, replays=replays, host=args.host, control_port=args.control_port,
                         rate=args.rate, seed=args.seed, ping_interval=args.ping_interval,
                         replay_speed=args.replay_speed)


async def serve(settings: Settings) -> None:
    sim = Simulator(settings)
    control = ControlServer(sim, settings.host, settings.control_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    await control.start()
    try:
        await stop.wait()
    finally:
        await control.stop()
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = logs.setup("simulator", args.log_level or "INFO")
    try:
        settings = load_settings(args)
    except (ConfigError, SettingsError, OSError, CaptureError) as e:
        log.error("%s", e)
        return 2
    try:
        asyncio.run(serve(settings))
    except OSError as e:  # port in use, etc.
        log.error("cannot serve: %s", e)
        return 1
    except CaptureError as e:  # a capture folder that does not fit the config (venue kind)
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
