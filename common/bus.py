"""ZeroMQ socket helpers: every bookmux socket is made here, with its limits set.

Rules kept by every stage:
* receive sockets set ``MAXMSGSIZE`` (a peer sending more is disconnected by ZeroMQ);
* PUB sockets set ``SNDHWM`` so a slow peer costs bounded memory (ZeroMQ drops for that peer
  only; the receiver's sequence check sees the drop);
* ``LINGER`` is short so a stopping process never hangs on unsent data;
* nothing busy-polls: loops block in ``poll``/``recv`` with a timeout for their timers;
* a connecting tcp socket sends ZMTP heartbeats and drops a connection silent for 3 s, then
  re-dials (a network cut closes no connection; see :data:`HEARTBEAT_TIMEOUT_MS`);
* with ``sec`` (CURVE on, see common/security.py) a binding socket is a CURVE server admitting
  only the allowed client keys and a connecting one a CURVE client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import recv_monitor_message

if TYPE_CHECKING:
    from common.security import Security

DEFAULT_HWM = 10_000
LINGER_MS = 200


def context() -> zmq.Context:
    """The process-wide ZeroMQ context."""
    return zmq.Context.instance()


def _common(s: zmq.Socket, max_msg_size: int | None) -> zmq.Socket:
    s.setsockopt(zmq.LINGER, LINGER_MS)
    if max_msg_size:
        s.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
    return s


def _bind(s: zmq.Socket, endpoint: str, sec: Security | None) -> None:
    if sec is not None:
        sec.server(s)
    s.bind(endpoint)


#: A connecting socket pings its peer (ZMTP heartbeats, answered by the peer's ZeroMQ I/O thread)
#: and drops a tcp connection that stays silent, then re-dials with a bounded connect time. A link cut
#: in the network closes no connection: without this, after the link returns the stuck connection
#: waits out TCP's retransmission back-off (measured: ~24 s after a 30 s cut; up to 2 min).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 2000


def _connect(s: zmq.Socket, endpoint: str, sec: Security | None) -> None:
    if sec is not None:
        sec.client(s)
    if endpoint.startswith("tcp://"):
        s.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        s.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    s.connect(endpoint)


#: What a PUB/XPUB receives is subscriptions: small. Set before bind (the listener copies it).
SUBSCRIPTION_MAX = 4096


def pub(endpoint: str, *, hwm: int = DEFAULT_HWM, ctx: zmq.Context | None = None,
        sec: Security | None = None) -> zmq.Socket:
    """A PUB socket bound to ``endpoint`` with send high-water mark ``hwm``."""
    s = (ctx or context()).socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, hwm)
    _common(s, SUBSCRIPTION_MAX)
    _bind(s, endpoint, sec)
    return s


def xpub(endpoint: str, *, hwm: int = DEFAULT_HWM, ctx: zmq.Context | None = None,
         sec: Security | None = None) -> zmq.Socket:
    """An XPUB bound to ``endpoint``: a PUB that also reports every subscription (verbose), so a
    publisher can serve late joiners."""
    s = (ctx or context()).socket(zmq.XPUB)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.XPUB_VERBOSE, 1)
    _common(s, SUBSCRIPTION_MAX)
    _bind(s, endpoint, sec)
    return s


def sub(endpoints: list[str] | str, topics: list[bytes] | None = None, *, hwm: int = DEFAULT_HWM,
        max_msg_size: int | None = None, ctx: zmq.Context | None = None,
        sec: Security | None = None) -> zmq.Socket:
    """A SUB socket connected to every endpoint, subscribed to ``topics`` (all when None)."""
    s = (ctx or context()).socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, hwm)
    _common(s, max_msg_size)
    for t in topics if topics is not None else [b""]:
        s.setsockopt(zmq.SUBSCRIBE, t)
    for e in [endpoints] if isinstance(endpoints, str) else endpoints:
        _connect(s, e, sec)
    return s


def router(endpoint: str, *, max_msg_size: int | None = None, ctx: zmq.Context | None = None,
           sec: Security | None = None) -> zmq.Socket:
    """A ROUTER bound to ``endpoint`` (request side of snapshot and query services)."""
    s = (ctx or context()).socket(zmq.ROUTER)
    s.setsockopt(zmq.ROUTER_MANDATORY, 0)
    s.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
    _common(s, max_msg_size)
    _bind(s, endpoint, sec)
    return s


def dealer(endpoint: str, *, max_msg_size: int | None = None, ctx: zmq.Context | None = None,
           sec: Security | None = None) -> zmq.Socket:
    """A DEALER connected to ``endpoint`` (asynchronous requests to a ROUTER)."""
    s = (ctx or context()).socket(zmq.DEALER)
    _common(s, max_msg_size)
    _connect(s, endpoint, sec)
    return s


def req(endpoint: str, *, timeout_ms: int, max_msg_size: int | None = None,
        ctx: zmq.Context | None = None) -> zmq.Socket:
    """A REQ socket with send/receive time-outs (for command-line clients)."""
    s = (ctx or context()).socket(zmq.REQ)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.SNDTIMEO, timeout_ms)
    s.setsockopt(zmq.REQ_RELAXED, 1)
    s.setsockopt(zmq.REQ_CORRELATE, 1)
    _common(s, max_msg_size)
    s.connect(endpoint)
    return s


class Reconnector:
    """Re-dial an endpoint of a connecting socket when ZeroMQ will not.

    ZeroMQ re-dials a peer that went away by itself (it reports ``EVENT_CONNECT_RETRIED``), but
    not one it cut off for a protocol error such as a message above ``MAXMSGSIZE``: that
    connection would stay dead until the process restarts. Every ``EVENT_DISCONNECTED`` is
    counted and handed to the caller (e.g. to mark a feed down at once); if ZeroMQ has neither
    retried nor reconnected within ``grace`` seconds, this does ``disconnect`` + ``connect``, with
    a capped backoff per endpoint so a peer that keeps misbehaving cannot cause a hot loop. It
    never touches a connection ZeroMQ is already re-dialling (doing so while a multipart message
    was half read tripped a libzmq assertion). Register :attr:`monitor` in the poller, call
    :meth:`on_events` when it is readable and :meth:`tick` from the loop's timer.
    """

    def __init__(self, sock: zmq.Socket, *, grace: float = 1.0, initial: float = 0.5, cap: float = 10.0) -> None:
        self.sock = sock
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED)
        self.grace, self.initial, self.cap = grace, initial, cap
        self.disconnects = 0
        self.redials = 0
        self._delay: dict[str, float] = {}
        self._due: dict[str, float] = {}

    def on_events(self, now: float) -> list[str]:
        """Read the pending monitor events; returns the endpoints that just disconnected."""
        out: list[str] = []
        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return out
            raw = ev.get("endpoint", b"")
            endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                self._due[endpoint] = now + max(self.grace, self._delay.get(endpoint, 0.0))
                out.append(endpoint)
            else:   # ZeroMQ is re-dialling (or has): leave it to ZeroMQ
                self._due.pop(endpoint, None)

    def tick(self, now: float) -> None:
        """Re-dial the endpoints ZeroMQ gave up on, once their grace and backoff have passed."""
        for endpoint, due in list(self._due.items()):
            if now >= due:
                del self._due[endpoint]
                self._delay[endpoint] = min(self.cap, max(self.initial, self._delay.get(endpoint, 0.0) * 2))
                self.redials += 1
                try:
                    self.sock.disconnect(endpoint)
                except zmq.ZMQError:
                    pass  # ZeroMQ already dropped the endpoint
                self.sock.connect(endpoint)

    def healthy(self, endpoint: str) -> None:
        """The endpoint delivered again: the next failure starts the backoff afresh."""
        self._delay.pop(endpoint, None)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
