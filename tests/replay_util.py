"""Read the real recordings in shared/fixtures/recorded (cryptofeed capture format, see its
README) and replay them through a venue's parse functions and sequencer into a Book, the way the
feed runner does, without sockets. Also: an independent dict-based reference book."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from common.book import Book
from common.feed.spec import FeedSpec, Sequencer
from common.feed.types import DepthEvent, ParseError, Snapshot, Verdict

SHARED = Path(__file__).resolve().parents[2] / "shared"
RECORDED = SHARED / "fixtures" / "recorded"


def recorded(venue: str) -> Path:
    """The recording folder of ``venue``; a missing folder is a failure, never a skip."""
    p = RECORDED / venue
    assert p.is_dir(), f"recorded fixtures missing: {p} (shared/ must sit beside the repo)"
    return p


@dataclass(frozen=True)
class WsIn:
    ts: float
    text: str


@dataclass(frozen=True)
class HttpIn:
    url: str
    ts: float
    body: str


def read_ws(path: Path) -> list[WsIn]:
    """Received frames of one ``EXCHANGE.ws.N.M`` file, in order (sent frames and the opening
    line are skipped: they start with the URL)."""
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line or not line[0].isdigit():
            continue
        ts, _, text = line.partition(": ")
        out.append(WsIn(float(ts), text))
    return out


def read_http(path: Path) -> list[HttpIn]:
    """``<url> -> <ts>: <body>`` records of an ``EXCHANGE.http.N.M`` or ``EXCHANGE.0`` file."""
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line or " -> " not in line:
            continue
        url, _, rest = line.partition(" -> ")
        ts, _, body = rest.partition(": ")
        out.append(HttpIn(url, float(ts), body))
    return out


@dataclass
class Replayed:
    """What happened to one symbol during a replay."""

    key: str
    seqr: Sequencer
    book: Book = field(default_factory=Book)
    synced: bool = False
    buffered: list[DepthEvent] = field(default_factory=list)
    applied: list[DepthEvent] = field(default_factory=list)
    dropped: list[DepthEvent] = field(default_factory=list)
    gaps: list[DepthEvent] = field(default_factory=list)
    syncs: int = 0
    buffered_at_sync: list[int] = field(default_factory=list)
    refused: int = 0


def recorder_time(fr: WsIn, ev: DepthEvent) -> float:
    return fr.ts


def exchange_time(fr: WsIn, ev: DepthEvent) -> float:
    return ev.ets / 1e9


def replay(spec: FeedSpec, frames: Iterable[WsIn], snapshots: list[tuple[float, str, str]],
           at: Callable[[WsIn, DepthEvent], float] = recorder_time) -> dict[str, Replayed]:
    """Feed ``frames`` in order; each snapshot ``(ts, key, body)`` is handed to its symbol's
    sequencer before the first depth event whose time ``at(frame, event)`` is after ``ts`` (as a
    runner would when the REST answer lands). On GAP the symbol's book is voided and waits for
    another snapshot.

    ``at`` is the recorder's receive time by default. The Bitstamp recorder fetched its snapshots
    on the event loop, so its receive times bunch up after all the fetches: there the
    exchange's own microtimestamp is the better estimate of when a diff reached the socket."""
    state: dict[str, Replayed] = {}
    pending = sorted(snapshots)

    def st_of(key: str) -> Replayed:
        if key not in state:
            state[key] = Replayed(key, spec.sequencer())
        return state[key]

    def give(key: str, body: str) -> None:
        st = st_of(key)
        snap: Snapshot = spec.parse_snapshot(body, key)
        st.buffered_at_sync.append(st.seqr.buffered)
        verdict, events = st.seqr.on_snapshot(snap)
        if verdict is Verdict.REFETCH and not st.seqr.buffered:
            st.refused += 1     # nothing buffered to prove the snapshot current (Bitstamp): wait
            return
        assert verdict is Verdict.SYNCED, (key, verdict)
        kept = {id(e) for e in events}
        st.dropped.extend(e for e in st.buffered if id(e) not in kept)
        st.buffered.clear()
        st.book.load(snap.bids, snap.asks)
        for ev in events:
            st.book.apply_levels(ev.bids, ev.asks)
            st.applied.append(ev)
        st.synced = True
        st.syncs += 1

    for fr in frames:
        try:
            ev = spec.parse_frame(fr.text)
        except ParseError as e:  # pragma: no cover - the recordings parse
            raise AssertionError(f"recorded frame does not parse: {e}: {fr.text[:120]}") from None
        if not isinstance(ev, DepthEvent):
            continue
        while pending and pending[0][0] <= at(fr, ev):
            _, key, body = pending.pop(0)
            give(key, body)
        st = st_of(ev.key)
        v = st.seqr.on_event(ev)
        if v is Verdict.BUFFERED:
            st.buffered.append(ev)
        elif v is Verdict.APPLY:
            st.book.apply_levels(ev.bids, ev.asks)
            st.applied.append(ev)
        elif v is Verdict.DROP:
            st.dropped.append(ev)
        elif v is Verdict.GAP:
            st.gaps.append(ev)
            st.book.clear()
            st.synced = False
            st.buffered = [ev]
    for _, key, body in pending:
        give(key, body)
    return state


# --- independent reference: stdlib json, plain dicts, Decimal ---------------------------------


def ref_levels(pairs: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in pairs}


def ref_apply(side: dict[Decimal, Decimal], pairs: list[list[str]]) -> None:
    for p, q in pairs:
        if Decimal(q) == 0:
            side.pop(Decimal(p), None)
        else:
            side[Decimal(p)] = Decimal(q)


def ref_sorted(side: dict[Decimal, Decimal], reverse: bool) -> list[tuple[Decimal, Decimal]]:
    return sorted(((p, q) for p, q in side.items() if q != 0), reverse=reverse)


def raw_json(text: str) -> dict:
    return json.loads(text)
