"""The gateway's input: merged books from the publisher through the client library
(:func:`common.subscriber.asubscribe`), the gateway being one more subscriber of the README's
contract (it imports only ``common``).

One subscription to every configured symbol, up front, so a new gRPC client of any symbol gets
the current book from memory at once. The library compares topics exactly, decodes into
:class:`common.schema.MergedBook` (exact ``Decimal``), and counts malformed messages, missed
``seq`` and new epochs; :func:`books` copies those counts into the gateway's counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from common.schema import MergedBook
from common.security import Security
from common.subscriber import CurveKeys, asubscribe


def curve_keys(sec: Security | None) -> CurveKeys | None:
    """CURVE client keys of a bookmux service (the internal identity) when CURVE is on."""
    if sec is None:
        return None
    return CurveKeys(server_public=sec.server_public, public=sec.client_public, secret=sec.client_secret)


async def books(endpoint: str, symbols: list[str], *, sec: Security | None = None,
                counters: dict[str, int] | None = None) -> AsyncIterator[MergedBook]:
    """Every snapshot of ``symbols`` published on ``endpoint``, decoded, as they arrive (never
    ends; cancel the consumer to stop). ``counters`` gets ``malformed``, ``upstream_missed``
    (snapshots lost before the gateway: ``seq`` jumps) and ``upstream_epochs`` (aggregator
    restarts) as the subscription counts them."""
    counters = counters if counters is not None else {}
    async with asubscribe(endpoint, symbols, curve=curve_keys(sec)) as sub:
        async for book in sub:
            counters["malformed"] = sub.malformed
            counters["upstream_missed"] = sub.missed
            counters["upstream_epochs"] = sub.epochs
            yield book
