"""Capture of a feed process's input, for replay (``--capture DIR`` or ``capture = "DIR"`` in
``[venues.<id>]``; docs/capture.md).

What is written: every input of the feed's :class:`~common.feed.core.FeedCore`, in the order the
core got it, each with the monotonic time (s) and wall-clock time (ns) it came in -- the raw
WebSocket frames, every REST answer (pair list and snapshots, errors included), connections
opening and closing, the transport's clock ticks, bus heartbeats, snapshot requests and delta
flushes -- and every bus message the feed published (``bus`` records), so a replay can be checked
against what the feed really said. Feeding the same inputs to a new FeedCore reproduces the same
bus messages (:mod:`common.feed.replay`); the simulator can also play the frames and REST answers
back over the venue's wire protocol (``services/simulator/replay.py``).

How: :class:`CapturingCore` is a FeedCore that records its inputs (the transport picks it when
capturing; the core itself stays free of I/O). Records are msgpack-packed on the event loop (a
few microseconds) and appended to a buffer; one writer thread compresses and writes them, so the
loop never waits for the disk. A writer that falls :data:`MAX_BACKLOG` bytes behind, or any
write error (a full disk), stops the capture with one logged error and a counter
(``capture_errors``); the feed goes on without capture -- never a crash loop.

Files: ``<DIR>/<venue>.<sess>.<part>.cap.gz``, gzip (stdlib ``zlib``, level 1: it keeps up with
the busiest venue on one core and needs no extra package; a feed killed mid-file leaves a
readable prefix because each write batch ends with a sync flush). A new part starts when the
current one reaches ``capture_rotate_mb`` compressed or is ``capture_rotate_s`` old. Each part
starts with the same header record (venue config, spec, options, session), so every file is
self-describing. Record layout (one msgpack array each)::

    ["hdr",   mono, wall, {format, venue, kind, api, sess, cfg, opts, part, host, pid}]
    ["start", mono, wall]                       core.start
    ["unlist", mono, wall, symbol, why]         pair check: not listed      ["rekey", .., symbol, key]
    ["open",  mono, wall, url]                  core.connected (a WebSocket connection is open)
    ["ws",    mono, wall, text | bytes]         core.frame (one received frame, verbatim)
    ["rest",  mono, wall, url, symbol|None, http status|None, body|None, error|None, delay|None]
                                                a REST answer (symbol None: the pair check)
    ["tick",  mono, wall]                       core.tick
    ["close", mono, wall, status, reason]       core.disconnected
    ["hb",    mono, wall]                       core.heartbeat
    ["snapreq", mono, wall, [symbols]]          core.snapshot_reply (a snapshot request)
    ["flush", mono, wall]                       core.flush (the transport's idle flush)
    ["stop",  mono, wall]                       the feed stops (every symbol goes down)
    ["bus",   mono, wall, [payload, ...]]       bus messages the transport took (schema payloads)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

from common.config import DustRule, VenueConfig
from common.feed.core import FeedCore
from common.feed.stream import SymbolStream
from common.schema import SCHEMA_VERSION, FeedMsg, encode_feed_payload

#: Capture file format. 2: ``bus`` records hold feed-bus schema 2 payloads (positional arrays);
#: format 1 files (schema 1 maps) are refused by :func:`read_header` with a message saying so.
FORMAT = 2
SUFFIX = ".cap.gz"
#: Records buffered for the writer thread beyond which the capture stops (bytes, packed).
MAX_BACKLOG = 256 * 1024 * 1024
#: The writer wakes at least this often (s) to write what is buffered.
WRITE_EVERY = 0.25
#: ... or as soon as this much is buffered (bytes).
WRITE_BATCH = 1 << 20
#: Progress line every this many seconds.
PROGRESS_EVERY = 30.0
#: zlib level: 1 is ~3x faster than the default 6 for ~15% more bytes on venue JSON.
LEVEL = 1

# Record kinds.
HDR, START, UNLIST, REKEY, OPEN, WS, REST, TICK, CLOSE, HB, SNAPREQ, FLUSH, STOP, BUS = (
    "hdr", "start", "unlist", "rekey", "open", "ws", "rest", "tick", "close", "hb", "snapreq", "flush",
    "stop", "bus")
#: The records that are inputs of the core (one replay step each); ``bus`` and ``hdr`` are not.
INPUTS = frozenset((START, UNLIST, REKEY, OPEN, WS, REST, TICK, CLOSE, HB, SNAPREQ, FLUSH, STOP))


class CaptureError(RuntimeError):
    """The capture folder cannot be written, or a capture cannot be read; the message says why."""


# --- the venue config in a header -------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return {"$dec": str(v)}
    if isinstance(v, DustRule):
        return {"$dust": [str(v.min_amount), str(v.min_notional)]}
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if dataclasses.is_dataclass(v):
        return None            # shards: a shard's config has none
    return v


def _unplain(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"$dec"}:
            return Decimal(v["$dec"])
        if set(v) == {"$dust"}:
            return DustRule(Decimal(v["$dust"][0]), Decimal(v["$dust"][1]))
        return {k: _unplain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unplain(x) for x in v]
    return v


def venue_config_plain(cfg: VenueConfig) -> dict[str, Any]:
    """``cfg`` as plain msgpack-able data (every field the dataclass has today)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "shards"}


def venue_config_from(plain: Mapping[str, Any]) -> VenueConfig:
    """The VenueConfig of a header; fields this version does not know are ignored, fields the
    capture lacks keep their defaults."""
    known = {f.name: f for f in dataclasses.fields(VenueConfig)}
    kw: dict[str, Any] = {}
    for k, v in plain.items():
        if k not in known:
            continue
        v = _unplain(v)
        if isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return VenueConfig(**kw)


# --- the writer -------------------------------------------------------------------------------


@dataclass
class CaptureStats:
    """What a capture wrote so far (read from any thread; approximate while it runs)."""

    files: int = 0
    records: int = 0
    frames: int = 0
    rest: int = 0
    bus: int = 0
    raw_bytes: int = 0              # packed, before compression
    written: int = 0                # compressed bytes in files closed or flushed
    dropped: int = 0                # records not written because the capture had stopped
    written_records: int = 0
    paths: list[str] = field(default_factory=list)


class CaptureWriter:
    """Records in, compressed rotated files out, written by one thread. :meth:`add` never blocks
    on the disk. Raises :class:`CaptureError` at construction when ``folder`` cannot be written."""

    def __init__(self, folder: str | Path, venue: str, sess: int, header: dict[str, Any], *,
                 rotate_mb: float = 64.0, rotate_s: float = 3600.0, log: logging.Logger | None = None,
                 counters: Counter[str] | None = None, max_backlog: int = MAX_BACKLOG,
                 progress_every: float = PROGRESS_EVERY) -> None:
        if not rotate_mb > 0 or not rotate_s > 0:
            raise CaptureError(f"capture_rotate_mb ({rotate_mb}) and capture_rotate_s ({rotate_s}) must be > 0")
        self.folder = Path(folder)
        self.venue = venue
        self.sess = sess
        self.header = header
        self.rotate_bytes = int(rotate_mb * 1024 * 1024)
        self.rotate_s = float(rotate_s)
        self.log = log or logging.getLogger(f"feed.{venue}.capture")
        self.counters = counters if counters is not None else Counter()
        self.max_backlog = max_backlog
        self.progress_every = progress_every
        self.stats = CaptureStats()
        self.error: str | None = None
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._part = 0
        self._file: Any = None
        self._z: Any = None
        self._opened_at = 0.0
        self._file_bytes = 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._open_part()
        except OSError as e:
            raise CaptureError(f"capture folder {self.folder}: cannot write there: {e}") from None
        self.log.info("capturing %s to %s (gzip level %d; a new file every %.0f MB or %.0f s)", venue,
                      self.folder, LEVEL, rotate_mb, rotate_s)
        self._thread = threading.Thread(target=self._run, name=f"capture-{venue}", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self.error is None and not self._closing

    # --- the loop side -----------------------------------------------------------------------

    def add(self, rec: list[Any]) -> None:
        """Queue one record (packed here, written by the thread)."""
        if self.error is not None:
            self.stats.dropped += 1
            return
        raw = msgpack.packb(rec, use_bin_type=True)
        st = self.stats
        st.records += 1
        st.raw_bytes += len(raw)
        kind = rec[0]
        if kind == WS:
            st.frames += 1
        elif kind == REST:
            st.rest += 1
        elif kind == BUS:
            st.bus += len(rec[3])
        with self._lock:
            self._buf.append(raw)
            self._buf_bytes += len(raw)
            backlog = self._buf_bytes
            if backlog >= WRITE_BATCH:
                self._wake.notify()
        if backlog > self.max_backlog:
            self._fail(f"the writer fell {backlog / 1e6:.0f} MB behind (disk too slow?)")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, close the file and stop the thread."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        self._progress("capture closed")

    # --- the writer thread -------------------------------------------------------------------

    def _path(self, part: int) -> Path:
        return self.folder / f"{self.venue}.{self.sess}.{part:05d}{SUFFIX}"

    def _open_part(self) -> None:
        self._part += 1
        path = self._path(self._part)
        self._file = self._open_file(path)
        self._z = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)     # 31: a gzip stream
        self._opened_at = time.monotonic()
        self._file_bytes = 0
        self.stats.files += 1
        self.stats.paths.append(str(path))
        hdr = [HDR, time.monotonic(), time.time_ns(), {**self.header, "part": self._part}]
        self._write_chunk([msgpack.packb(hdr, use_bin_type=True)], sync=True)

    def _open_file(self, path: Path) -> Any:
        """A new file for writing (never one that exists)."""
        return open(path, "xb")

    def _write_chunk(self, recs: list[bytes], *, sync: bool) -> None:
        z, f = self._z, self._file
        out = [z.compress(r) for r in recs]
        if sync:
            out.append(z.flush(zlib.Z_SYNC_FLUSH))
        data = b"".join(out)
        f.write(data)
        if sync:
            f.flush()
        self._file_bytes += len(data)
        self.stats.written += len(data)

    def _close_part(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            data = self._z.flush(zlib.Z_FINISH)
            f.write(data)
            self.stats.written += len(data)
            f.close()
        finally:
            if not f.closed:
                try:
                    f.close()
                except OSError:
                    pass

    def _run(self) -> None:
        last_progress = time.monotonic()
        while True:
            with self._lock:
                if not self._buf and not self._closing and self.error is None:
                    self._wake.wait(WRITE_EVERY)
                batch, self._buf = self._buf, []
                self._buf_bytes = 0
                closing = self._closing
            if self.error is not None:          # stopped (here or by the loop side): close, end
                with contextlib.suppress(OSError, ValueError):
                    self._close_part()
                return
            try:
                if batch:
                    self._write_chunk(batch, sync=True)
                    self.stats.written_records += len(batch)
                now = time.monotonic()
                if closing:
                    self._close_part()
                    return
                if self._file_bytes >= self.rotate_bytes or now - self._opened_at >= self.rotate_s:
                    self._close_part()
                    self.log.info("capture: %s done (%d bytes); next part", self.stats.paths[-1], self._file_bytes)
                    self._open_part()
            except OSError as e:
                self._fail(f"{type(e).__name__}: {e}")
                continue
            if now - last_progress >= self.progress_every:
                last_progress = now
                self._progress("capture")

    def _fail(self, why: str) -> None:
        """Stop capturing for good: one error line, a counter; the feed goes on. (The writer
        thread closes the file.)"""
        with self._lock:
            if self.error is not None:
                return
            self.error = why
            self.stats.dropped += len(self._buf)
            self._buf = []
            self._buf_bytes = 0
            self._wake.notify()
        self.counters["capture_errors"] += 1
        self.log.error("capture to %s STOPPED: %s; %d records in %d file(s) were written before it; the feed "
                       "goes on without capture", self.folder, why, self.stats.written_records, self.stats.files)

    def _progress(self, what: str) -> None:
        s = self.stats
        self.log.info("%s %s: %d file(s), %.2f MB written (%.2f MB raw), %d frames, %d REST answers, %d bus "
                      "messages%s", what, self.venue, s.files, s.written / 1e6, s.raw_bytes / 1e6, s.frames, s.rest,
                      s.bus, f"; STOPPED: {self.error}" if self.error else "")


# --- the recording core -----------------------------------------------------------------------


class CapturingCore(FeedCore):
    """A :class:`FeedCore` that records each input from the transport (not the calls the core
    makes to itself, e.g. the heartbeat a venue's maintenance triggers) and each batch of bus
    messages the transport takes. ``writer`` is set by the transport after construction."""

    writer: CaptureWriter | None = None
    _inside = 0

    def _rec(self, rec: list[Any]) -> None:
        w = self.writer
        if w is not None and self._inside == 0:
            w.add(rec)

    def _mono(self) -> float:
        return time.monotonic()

    def start(self, rts: int) -> None:
        self._rec([START, self._mono(), rts])
        self._inside += 1
        try:
            super().start(rts)
        finally:
            self._inside -= 1

    def unlist(self, st: SymbolStream, why: str, rts: int) -> None:
        self._rec([UNLIST, self._mono(), rts, st.symbol, why])
        self._inside += 1
        try:
            super().unlist(st, why, rts)
        finally:
            self._inside -= 1

    def rekey(self, st: SymbolStream, key: str) -> None:
        self._rec([REKEY, self._mono(), time.time_ns(), st.symbol, key])
        self._inside += 1
        try:
            super().rekey(st, key)
        finally:
            self._inside -= 1

    def connected(self, now: float, rts: int) -> None:
        url = self.spec.ws_url(self.cfg, [st.key for st in self.active])   # what the transport dialled
        self._rec([OPEN, now, rts, url])
        self._inside += 1
        try:
            super().connected(now, rts)
        finally:
            self._inside -= 1

    def frame(self, text: str | bytes, rts: int, now: float) -> None:
        self._rec([WS, now, rts, text])
        self._inside += 1
        try:
            super().frame(text, rts, now)
        finally:
            self._inside -= 1

    def tick(self, now: float, rts: int) -> None:
        self._rec([TICK, now, rts])
        self._inside += 1
        try:
            super().tick(now, rts)
        finally:
            self._inside -= 1

    def disconnected(self, status: str, reason: str, rts: int) -> None:
        self._rec([CLOSE, self._mono(), rts, status, reason])
        self._inside += 1
        try:
            super().disconnected(status, reason, rts)
        finally:
            self._inside -= 1

    def heartbeat(self, rts: int) -> None:
        self._rec([HB, self._mono(), rts])
        self._inside += 1
        try:
            super().heartbeat(rts)
        finally:
            self._inside -= 1

    def snapshot_reply(self, wanted: list[str], rts: int) -> list[bytes]:
        self._rec([SNAPREQ, self._mono(), rts, list(wanted)])
        self._inside += 1
        try:
            return super().snapshot_reply(wanted, rts)
        finally:
            self._inside -= 1

    def flush(self) -> None:
        if self.out.pending:                 # a flush with nothing pending changes nothing
            self._rec([FLUSH, self._mono(), time.time_ns()])
        self._inside += 1
        try:
            super().flush()
        finally:
            self._inside -= 1

    def take_bus(self) -> list[FeedMsg]:
        msgs = super().take_bus()
        if msgs:
            self._rec([BUS, self._mono(), time.time_ns(), [encode_feed_payload(m) for m in msgs]])
        return msgs

    # Not core inputs but transport events the replay needs: a REST answer and the stop.

    def record_rest(self, url: str, symbol: str | None, status: int | None, body: bytes | None,
                    error: str | None, delay: float | None, rts: int) -> None:
        self._rec([REST, self._mono(), rts, url, symbol, status, body, error, delay])

    def record_stop(self, rts: int) -> None:
        self._rec([STOP, self._mono(), rts])


def header_for(core: FeedCore) -> dict[str, Any]:
    """The header every capture file of ``core``'s session starts with."""
    return {"format": FORMAT, "venue": core.cfg.id, "kind": core.spec.kind, "api": core.cfg.api,
            "sess": core.sess, "cfg": venue_config_plain(core.cfg), "opts": _plain(dict(core.opts)),
            "host": socket.gethostname(), "pid": os.getpid()}


# --- reading ----------------------------------------------------------------------------------


@dataclass
class CaptureRun:
    """The files of one feed session (one process run) of one venue, in part order."""

    venue: str
    sess: int
    paths: list[Path]
    header: dict[str, Any]
    truncated: bool = False          # the last file ends mid-stream (the feed was killed)

    def records(self) -> Iterator[list[Any]]:
        """Every record of the run in capture order, headers left out. A file cut short (the
        feed was killed) ends the run there; ``truncated`` is then True."""
        for i, path in enumerate(self.paths):
            for rec in _read_file(path, self, last=i == len(self.paths) - 1):
                if rec[0] != HDR:
                    yield rec

    @property
    def cfg(self) -> VenueConfig:
        return venue_config_from(self.header["cfg"])

    @property
    def opts(self) -> dict[str, Any]:
        return dict(_unplain(self.header["opts"]))


def _read_file(path: Path, run: CaptureRun, *, last: bool) -> Iterator[list[Any]]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 31, strict_map_key=False)
    z = zlib.decompressobj(31)
    ended = False
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            while chunk:
                try:
                    data = z.decompress(chunk)
                except zlib.error as e:
                    raise CaptureError(f"{path}: not a capture file (gzip: {e})") from None
                unpacker.feed(data)
                yield from unpacker
                if z.eof:
                    ended = True
                    chunk = z.unused_data
                    if chunk:
                        z = zlib.decompressobj(31)
                        ended = False
                else:
                    chunk = b""
    if not ended:
        run.truncated = True
        if not last:
            raise CaptureError(f"{path}: cut short, but later parts of the run follow")


def read_header(path: Path) -> dict[str, Any]:
    """The header record of one capture file."""
    dummy = CaptureRun("", 0, [path], {})
    for rec in _read_file(path, dummy, last=True):
        if rec[0] != HDR or not isinstance(rec[3], dict):
            break
        if rec[3].get("format") == 1:
            raise CaptureError(f"{path}: a capture of format 1, whose bus records are feed-bus schema 1 (maps); "
                               f"this version reads format {FORMAT} (schema {SCHEMA_VERSION}): capture again")
        if rec[3].get("format") != FORMAT:
            break
        return dict(rec[3])
    raise CaptureError(f"{path}: does not start with a capture header of format {FORMAT}")


def find_runs(folder: str | Path, venues: set[str] | None = None) -> list[CaptureRun]:
    """Every capture run in ``folder`` (optionally only those of ``venues``), ordered by
    session (start time). Raises :class:`CaptureError` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptureError(f"{folder} is not a directory")
    groups: dict[tuple[str, int], list[Path]] = {}
    for p in sorted(folder.glob(f"*{SUFFIX}")):
        parts = p.name[: -len(SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        if venues is not None and parts[0] not in venues:
            continue
        groups.setdefault((parts[0], int(parts[1])), []).append(p)
    if not groups:
        raise CaptureError(f"{folder}: no capture files (*{SUFFIX})" + (f" of {sorted(venues)}" if venues else ""))
    runs = []
    for (venue, sess), paths in groups.items():
        paths.sort(key=lambda p: int(p.name[: -len(SUFFIX)].rsplit(".", 1)[1]))
        runs.append(CaptureRun(venue, sess, paths, read_header(paths[0])))
    runs.sort(key=lambda r: (r.sess, r.venue))
    return runs


def is_capture(folder: str | Path) -> bool:
    """True when ``folder`` holds capture files."""
    p = Path(folder)
    return p.is_dir() and any(p.glob(f"*{SUFFIX}"))
