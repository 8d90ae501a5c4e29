"""The start-up pair check of a feed: which configured symbols the venue lists and trades."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

from common.feed import rest
from common.feed.backoff import backoff
from common.feed.core import FeedCore
from common.feed.types import PairInfo, ParseError


async def pair_check(core: FeedCore, get: Callable[[str], Awaitable[tuple[bytes, int]]],
                     sleep: Callable[[float], Awaitable[bool]], rng: random.Random) -> None:
    """Mark symbols the venue does not list (or does not trade) ``down``; the rest go on.
    When the pair list cannot be had, every symbol goes on unchecked (logged)."""
    if core.spec.pair_url is not None and core.spec.parse_pair is not None:
        await _per_symbol(core, get, sleep, rng)
        return
    url = core.spec.pairs_url(core.cfg)
    if url is None:
        return
    delays = backoff(initial=1.0, cap=10.0, rng=rng)
    pairs = None
    for attempt in range(1, 4):
        try:
            body, _ = await get(url)
            pairs = core.spec.parse_pairs(body)
            break
        except rest.RateLimited as e:
            core.log.warning("%s: pair list %s: HTTP %s; not retrying at start-up", core.cfg.id, url,
                             e.status)
            break
        except rest.RestError as e:
            if e.status is not None and 400 <= e.status < 500:
                core.log.warning("%s: pair list unavailable: %s", core.cfg.id, e)
                break
            d = next(delays)
            core.log.warning("%s: pair list attempt %d failed: %s; retrying in %.3f s",
                             core.cfg.id, attempt, e, d)
            if await sleep(d):
                return
        except ParseError as e:
            core.log.warning("%s: pair list from %s does not parse: %s", core.cfg.id, url, e)
            break
    if pairs is None:
        core.log.warning("%s: carrying %s WITHOUT a pair check", core.cfg.id, ", ".join(core.streams))
        return
    for st in core.streams.values():
        info = pairs.get(st.symbol)
        if info is None or not info.trading:
            why = ("not listed" if info is None
                   else f"listed as {info.key} but not trading (status {info.status!r})")
            core.log.error("%s: symbol %s is %s by the venue (pair list %s); it is not carried",
                           core.cfg.id, st.symbol, why, url)
            core.unlist(st, f"{why} by {core.cfg.id}", time.time_ns())
            continue
        if info.key != st.key:
            core.log.info("%s: %s is %s on the venue (pair list)", core.cfg.id, st.symbol, info.key)
            core.rekey(st, info.key)
    listed = [s for s, st in core.streams.items() if st.listed]
    core.log.info("%s: pair check done: %d of %d symbols listed (%s)", core.cfg.id, len(listed),
                  len(core.streams), ", ".join(listed) or "none")


async def _per_symbol(core: FeedCore, get: Callable[[str], Awaitable[tuple[bytes, int]]],
                      sleep: Callable[[float], Awaitable[bool]], rng: random.Random) -> None:
    """The pair check of a venue that answers per symbol (Gemini's symbol details): a 4xx answer
    or an unlisted symbol is ``down``; when an answer cannot be had, that symbol goes on unchecked."""
    assert core.spec.pair_url is not None and core.spec.parse_pair is not None
    for st in list(core.streams.values()):
        url = core.spec.pair_url(core.cfg, st.key)
        delays = backoff(initial=1.0, cap=10.0, rng=rng)
        info: PairInfo | None = None
        answered = False
        for attempt in range(1, 4):
            try:
                body, _ = await get(url)
                info = core.spec.parse_pair(body, st.symbol)
                answered = True
                break
            except rest.RateLimited as e:
                core.log.warning("%s: pair check %s: HTTP %s; %s unchecked", core.cfg.id, url, e.status, st.symbol)
                break
            except rest.RestError as e:
                if e.status is not None and 400 <= e.status < 500:
                    answered = True     # the venue does not know the symbol
                    break
                d = next(delays)
                core.log.warning("%s: pair check %s attempt %d failed: %s; retrying in %.3f s", core.cfg.id,
                                 url, attempt, e, d)
                if await sleep(d):
                    return
            except ParseError as e:
                core.log.warning("%s: pair check answer of %s does not parse: %s; unchecked", core.cfg.id, url, e)
                break
        if not answered:
            core.log.warning("%s: carrying %s WITHOUT a pair check", core.cfg.id, st.symbol)
            continue
        if info is None or not info.trading:
            why = "not listed" if info is None else f"listed as {info.key} but not trading (status {info.status!r})"
            core.log.error("%s: symbol %s is %s by the venue (%s); it is not carried", core.cfg.id, st.symbol,
                           why, url)
            core.unlist(st, f"{why} by {core.cfg.id}", time.time_ns())
        elif info.key != st.key:
            core.rekey(st, info.key)
    listed = [s for s, st in core.streams.items() if st.listed]
    core.log.info("%s: pair check done: %d of %d symbols listed (%s)", core.cfg.id, len(listed),
                  len(core.streams), ", ".join(listed) or "none")
