"""Free loopback TCP ports for tests, benchmarks and generated configs.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the same range it
uses for the local end of outgoing connections: between the moment a test picks it and the moment
a service binds it, any ``connect()`` on the machine may take it ("Address already in use"). The
ports here come from below that range, so only another listener could take one, and each is
handed out once per process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, below the ephemeral range, not handed out before."""
    hi = max(_ephemeral_low(), 20_001)
    lo = min(20_000, hi - 1)
    for _ in range(2000):
        port = random.randrange(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:   # everything below the range is taken: fall back to the kernel
        s.bind((host, 0))
        return int(s.getsockname()[1])
