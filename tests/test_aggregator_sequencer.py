"""The aggregator's per-stream sequencer (clone pattern), in process: no sockets, no clock."""

from __future__ import annotations

from decimal import Decimal as D

from common.schema import DELTA, SNAP, BookMsg, StatusMsg
from services.aggregator.sequencer import (
    APPLY,
    BUFFERED,
    DUPLICATE,
    GAP,
    MAX_BUFFERED,
    OVERFLOW,
    Stream,
)


def delta(seq: int, sess: int = 7) -> BookMsg:
    return BookMsg(DELTA, "alpha", "BTC/USD", sess, seq, 1, 2, [(D(100), D(1))], [])


def snap(seq: int, sess: int = 7) -> BookMsg:
    return BookMsg(SNAP, "alpha", "BTC/USD", sess, seq, 1, 2, [(D(100), D(1))], [(D(101), D(2))])


def synced(seq: int = 5, sess: int = 7) -> Stream:
    s = Stream("alpha", "BTC/USD", None)
    assert s.accept_reply()
    s.advance(snap(seq, sess))
    assert s.replay() == []
    return s


def test_new_stream_buffers_until_a_snapshot_reply() -> None:
    """A stream starts awaiting its first snapshot: messages are buffered, not applied."""
    s = Stream("alpha", "BTC/USD", None)
    assert s.awaiting and s.offer(delta(1)) == (BUFFERED, "") and len(s.buffer) == 1


def test_contiguous_messages_apply_and_old_ones_are_duplicates() -> None:
    """seq + 1 applies; at or below the last seq is a duplicate; nothing changes until advance."""
    s = synced(5)
    assert s.offer(delta(6)) == (APPLY, "")
    assert s.seq == 5
    s.advance(delta(6))
    assert (s.seq, s.msgs) == (6, 2)
    assert s.offer(delta(6)) == (DUPLICATE, "")
    assert s.offer(delta(3)) == (DUPLICATE, "")


def test_jump_is_a_gap_with_the_expected_seq() -> None:
    """A jump says which seq was expected and which came."""
    assert synced(5).offer(delta(8)) == (GAP, "bus gap: expected seq 6, got 8")


def test_new_session_delta_is_a_gap_but_a_snapshot_resyncs() -> None:
    """A delta of another feed session is a gap; a snapshot of it applies whatever its seq."""
    s = synced(5)
    assert s.offer(delta(1, sess=8)) == (GAP, "delta from feed session 8 without a snapshot")
    assert s.offer(snap(1, sess=8)) == (APPLY, "")
    status = StatusMsg("alpha", "BTC/USD", 8, 1, "stale", "quiet", 3)
    assert s.offer(status) == (APPLY, "")


def test_heartbeat_sees_a_lost_tail_or_another_session() -> None:
    """A heartbeat ahead of the stream, or of another session, is a gap; an awaiting stream
    ignores heartbeats."""
    s = synced(5)
    assert s.heartbeat(7, 5) is None
    assert s.heartbeat(7, 7) == "lost messages 6..7 (seen in heartbeat)"
    assert s.heartbeat(9, 5) == "feed session 9 without a snapshot"
    s.request(1.5)
    assert (s.awaiting, s.requested_at) == (True, 1.5)
    assert s.heartbeat(9, 99) is None


def test_reply_drops_buffered_messages_it_covers_and_replays_the_rest_in_order() -> None:
    """Clone pattern: after a reply at seq 10, buffered 9 and 10 are dropped, 11 and 12 replayed
    in arrival order; a message of another session is kept for the sequence check."""
    s = synced(5)
    s.request(0.0)
    other = delta(2, sess=8)
    for m in (delta(9), delta(10), delta(11), other, delta(12)):
        assert s.offer(m) == (BUFFERED, "")
    assert s.accept_reply() and not s.awaiting
    s.advance(snap(10))
    assert [(m.sess, m.seq) for m in s.replay()] == [(7, 11), (8, 2), (7, 12)]
    assert s.buffer == []


def test_unwanted_reply_is_refused() -> None:
    """A reply to a stream that is not awaiting one is dropped (accept_reply is False)."""
    s = synced(5)
    assert not s.accept_reply() and s.seq == 5


def test_gap_empties_the_buffer() -> None:
    """What was buffered before a gap is worthless: the next snapshot covers it."""
    s = Stream("alpha", "BTC/USD", None)
    s.offer(delta(1))
    s.gap()
    assert s.buffer == []


def test_a_full_buffer_overflows_without_changing_state() -> None:
    """At MAX_BUFFERED messages the next one is an OVERFLOW (the caller resyncs and buffers it
    again); the buffer is left as it was."""
    s = Stream("alpha", "BTC/USD", None)
    s.buffer = [delta(1)] * MAX_BUFFERED
    assert s.offer(delta(2)) == (OVERFLOW, f"{MAX_BUFFERED} messages buffered while waiting for a snapshot")
    assert len(s.buffer) == MAX_BUFFERED
