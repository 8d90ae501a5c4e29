"""Depletion queries: request validation, the query service against a fake book source, both
ROUTER envelopes, a real socket round trip, and the ``deplete`` command."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import msgpack
import pytest
import zmq

from common import bus, subscriber
from common.book import ASK, BID, Book
from common.query import (
    MAX_REQUEST_BYTES,
    QueryError,
    Request,
    decode_reply,
    encode_error,
    encode_request,
    parse_request,
    split_envelope,
)
from services.aggregator.depletion import deplete
from services.aggregator.merge import merge_levels
from services.aggregator.query import QueryService
from services.client import deplete_cmd as cli

SYM = "BTC/USDT"


def book(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> Book:
    b = Book()
    b.load([(D(p), D(q)) for p, q in bids], [(D(p), D(q)) for p, q in asks])
    return b


class FakeSource:
    """Two live venues and one stale one for BTC/USDT; ETH/USDT known but not published yet."""

    def __init__(self) -> None:
        self.books = {
            "alpha": book([("100", "1"), ("99", "2")], [("101", "1"), ("102", "4")]),
            "beta": book([("100.5", "0.5"), ("98", "10")], [("101.5", "2"), ("103", "10")]),
            "gamma": book([("105", "50")], [("90", "50")]),   # stale and crossed: out of the merged book
        }
        self.status = {"alpha": "live", "beta": "live", "gamma": "stale"}
        self.fee_rates = {"alpha": D("0.001"), "beta": D("0.002"), "gamma": D(0)}
        self.fail = False
        self.exact: dict[tuple[str | None, int], D] = {}   # (venue or None for merged, side) -> exact-to

    def position(self, symbol: str) -> tuple[int, int] | None:
        return (7, 42) if symbol == SYM else None

    def symbols(self) -> list[str]:
        return [SYM, "ETH/USDT"]

    def statuses(self, symbol: str) -> dict[str, str]:
        return dict(self.status)

    def merged_side(self, symbol: str, side: int) -> Iterator[tuple[D, D, str]]:
        if self.fail:
            raise RuntimeError("boom")
        live = {v: b.iter_side(side) for v, b in self.books.items() if self.status[v] == "live"}
        return merge_levels(live, side)

    def venue_side(self, symbol: str, venue: str, side: int) -> Iterator[tuple[D, D]] | None:
        b = self.books.get(venue)
        return None if b is None else b.iter_side(side)

    def fees(self) -> dict[str, D]:
        return dict(self.fee_rates)

    def exact_to(self, symbol: str, side: int, venue: str | None = None) -> D | None:
        return self.exact.get((venue, side))


def ask(svc: QueryService, m: Any) -> dict[str, Any]:
    """Send ``m`` (a map, packed, or raw bytes) REQ-style and return the decoded reply map."""
    raw = m if isinstance(m, bytes) else msgpack.packb(m)
    frames = svc.handle([b"id-1", b"", raw])
    assert frames[:2] == [b"id-1", b""] and len(frames) == 3
    return msgpack.unpackb(frames[2])


GOOD = {"op": "deplete", "symbol": SYM, "side": "sell", "quantity": "15"}

MALFORMED: list[tuple[str, Any, str]] = [
    ("garbage bytes", b"\xc1\xff\x00garbage", "not valid msgpack"),
    ("empty frame", b"", "not valid msgpack"),
    ("trailing bytes", msgpack.packb(GOOD) + b"x", "not valid msgpack"),
    ("too large", msgpack.packb({**GOOD, "x": "y" * MAX_REQUEST_BYTES}), "limit"),
    ("not a map", msgpack.packb(["deplete", SYM, "sell", "15"]), "must be a msgpack map"),
    ("a string", msgpack.packb("deplete BTC/USDT sell 15"), "must be a msgpack map"),
    ("int keys", msgpack.packb({1: 2}), "keys must be strings"),
    ("unknown key", {**GOOD, "qty": "15"}, "unknown key(s) ['qty']"),
    ("missing op", {k: v for k, v in GOOD.items() if k != "op"}, "missing 'op'"),
    ("unknown op", {**GOOD, "op": "drop_tables"}, "unknown op"),
    ("op not a string", {**GOOD, "op": 1}, "op must be a string"),
    ("missing symbol", {k: v for k, v in GOOD.items() if k != "symbol"}, "missing 'symbol'"),
    ("symbol not a string", {**GOOD, "symbol": ["BTC", "USDT"]}, "symbol must be a string"),
    ("symbol as bytes", {**GOOD, "symbol": b"BTC/USDT"}, "symbol must be a string"),
    ("symbol shape", {**GOOD, "symbol": "BTCUSDT"}, "not of the form BASE/QUOTE"),
    ("missing side", {k: v for k, v in GOOD.items() if k != "side"}, "missing 'side'"),
    ("unknown side", {**GOOD, "side": "short"}, "unknown side 'short'"),
    ("side upper case", {**GOOD, "side": "SELL"}, "unknown side"),
    ("side not a string", {**GOOD, "side": True}, "side must be a string"),
    ("no size", {k: v for k, v in GOOD.items() if k != "quantity"}, "exactly one of 'quantity'"),
    ("both sizes", {**GOOD, "notional": "100"}, "not both"),
    ("int quantity", {**GOOD, "quantity": 15}, "decimal string"),
    ("float quantity", {**GOOD, "quantity": 1.5}, "decimal string"),
    ("bool quantity", {**GOOD, "quantity": True}, "decimal string"),
    ("null quantity", {**GOOD, "quantity": None}, "decimal string"),
    ("non-numeric", {**GOOD, "quantity": "fifteen"}, "not a decimal"),
    ("empty number", {**GOOD, "quantity": ""}, "not a decimal"),
    ("NaN", {**GOOD, "quantity": "NaN"}, "not finite"),
    ("sNaN", {**GOOD, "quantity": "sNaN"}, "not finite"),
    ("infinity", {**GOOD, "quantity": "Infinity"}, "not finite"),
    ("negative", {**GOOD, "quantity": "-1"}, "negative"),
    ("zero", {**GOOD, "quantity": "0"}, "must be > 0"),
    ("negative zero", {**GOOD, "quantity": "-0.000"}, "must be > 0"),
    ("huge", {**GOOD, "quantity": "1e30"}, "too large"),
    ("too many decimals", {**GOOD, "quantity": "1e-30"}, "decimals"),
    ("long text", {**GOOD, "quantity": "1" + "0" * 100}, "longer than"),
    ("negative notional", {k: v for k, v in GOOD.items() if k != "quantity"} | {"notional": "-5"},
     "notional: negative"),
    ("venue not a string", {**GOOD, "venue": 3}, "venue must be a string"),
    ("venue shape", {**GOOD, "venue": "Bin ance"}, "not a venue id"),
    ("venues not all", {**GOOD, "venues": "some"}, "venues must be \"all\""),
    ("venues a list", {**GOOD, "venues": ["alpha"]}, "venues must be \"all\""),
    ("venue and venues", {**GOOD, "venue": "alpha", "venues": "all"}, "not both"),
    ("version", {**GOOD, "ver": 2}, "version"),
]


@pytest.mark.parametrize(("name", "request_", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_a_clear_error(name: str, request_: Any, message: str) -> None:
    """Every kind of malformed request: QueryError from the parser, an error reply from the service."""
    raw = request_ if isinstance(request_, bytes) else msgpack.packb(request_)
    with pytest.raises(QueryError) as e:
        parse_request(raw)
    assert message in str(e.value)
    svc = QueryService(FakeSource())
    reply = ask(svc, raw)
    assert reply["ok"] is False and message in reply["error"]
    assert svc.errors == 1 and svc.failures == 0


def test_parse_good_requests() -> None:
    assert parse_request(msgpack.packb(GOOD)) == Request(SYM, "sell", quantity=D(15))
    r = parse_request(encode_request(SYM, "buy", notional=D("100000.50"), venue="alpha"))
    assert r == Request(SYM, "buy", notional=D("100000.5"), venue="alpha")
    assert parse_request(encode_request(SYM, "buy", quantity="0.5", all_venues=True)).all_venues
    with pytest.raises(QueryError, match="exactly one"):
        encode_request(SYM, "buy")


def test_merged_reply_matches_engine() -> None:
    """Default request: the merged walk over live venues only, as of the stated epoch/seq."""
    src = FakeSource()
    reply = ask(QueryService(src), {**GOOD, "quantity": "2"})
    assert reply["ok"] is True and (reply["epoch"], reply["seq"], reply["symbol"]) == (7, 42, SYM)
    assert reply["venues"] == {} and reply["statuses"] == src.status
    m = reply["merged"]
    # bids: beta 0.5 @ 100.5, alpha 1 @ 100, alpha 0.5 @ 99 (gamma's 105 is stale: out)
    assert m["fills"] == [["100.5", "0.5", "beta"], ["100", "1", "alpha"], ["99", "0.5", "alpha"]]
    assert (m["filled"], m["notional"], m["levels"], m["partial"]) == ("2", "199.75", 3, False)
    assert (m["vwap"], m["best"], m["worst"]) == ("99.875", "100.5", "99")
    assert m["fee"] == "0.25"   # 50.25 * 0.002 + 149.5 * 0.001
    assert m["vwap_fee"] == "99.75"   # (199.75 - 0.25) / 2
    expected = deplete(src.merged_side(SYM, BID), "sell", quantity=D(2), fees=src.fee_rates).to_wire()
    assert m == {**expected, "exact_to": None, "beyond_known_depth": False}


def test_walk_past_known_depth_says_so() -> None:
    """A walk deeper than the book is known exactly carries ``beyond_known_depth``; one that ends
    at the exact-to price, or a book known whole, does not."""
    src = FakeSource()
    src.exact[(None, BID)] = D("100")
    src.exact[("alpha", BID)] = D("99")
    reply = ask(QueryService(src), {**GOOD, "quantity": "2", "venues": "all"})
    assert (reply["merged"]["worst"], reply["merged"]["exact_to"]) == ("99", "100")
    assert reply["merged"]["beyond_known_depth"] is True
    assert reply["venues"]["alpha"]["exact_to"] == "99" and reply["venues"]["alpha"]["beyond_known_depth"] is False
    assert reply["venues"]["beta"]["exact_to"] is None and reply["venues"]["beta"]["beyond_known_depth"] is False
    reply = ask(QueryService(src), {**GOOD, "quantity": "1.5"})        # ends at 100: exact
    assert reply["merged"]["beyond_known_depth"] is False
    reply = ask(QueryService(src), {**GOOD, "venue": "alpha", "quantity": "50"})   # ran out: may be more
    assert reply["venues"]["alpha"]["partial"] is True and reply["venues"]["alpha"]["beyond_known_depth"] is True


def test_all_venues_reply() -> None:
    """``venues: all``: the merged book plus every venue's full book, stale ones included."""
    src = FakeSource()
    reply = ask(QueryService(src), {**GOOD, "side": "buy", "quantity": "3", "venues": "all"})
    assert list(reply["venues"]) == ["alpha", "beta", "gamma"]
    assert reply["venues"]["alpha"]["fills"] == [["101", "1", "alpha"], ["102", "2", "alpha"]]
    assert reply["venues"]["gamma"]["vwap"] == "90"
    assert reply["merged"]["fills"] == [["101", "1", "alpha"], ["101.5", "2", "beta"]]
    for v in ("alpha", "beta", "gamma"):
        assert reply["venues"][v] == {**deplete(((p, a, v) for p, a in src.books[v].iter_side(ASK)), "buy",
                                                quantity=D(3), fees=src.fee_rates).to_wire(),
                                      "exact_to": None, "beyond_known_depth": False}


def test_one_venue_and_partial_fill() -> None:
    """``venue``: that venue's full book only; asking more than it holds is a partial fill."""
    reply = ask(QueryService(FakeSource()), {**GOOD, "venue": "beta", "quantity": "100"})
    assert reply["ok"] and reply["merged"] is None and list(reply["venues"]) == ["beta"]
    beta = reply["venues"]["beta"]
    assert beta["partial"] is True and beta["filled"] == "10.5" and beta["requested"] == "100"


def test_notional_reply() -> None:
    reply = ask(QueryService(FakeSource()), {k: v for k, v in GOOD.items() if k != "quantity"}
                | {"side": "buy", "notional": "304"})
    m = reply["merged"]
    assert m["mode"] == "notional" and m["filled"] == "3" and m["notional"] == "304" and not m["partial"]


def test_no_fees_configured_means_no_fee_fields() -> None:
    src = FakeSource()
    src.fee_rates = {v: D(0) for v in src.fee_rates}
    m = ask(QueryService(src), GOOD)["merged"]
    assert m["fee"] is None and m["vwap_fee"] is None


@pytest.mark.parametrize(("req", "message"), [
    ({**GOOD, "symbol": "DOGE/USDT"}, "unknown symbol 'DOGE/USDT'; known: ['BTC/USDT', 'ETH/USDT']"),
    ({**GOOD, "symbol": "ETH/USDT"}, "no snapshot of ETH/USDT published yet (venues syncing); try again"),
    ({**GOOD, "venue": "kraken"}, "venue 'kraken' does not carry BTC/USDT; venues: ['alpha', 'beta', 'gamma']"),
])
def test_unknown_symbol_or_venue_names_what_is_known(req: dict[str, Any], message: str) -> None:
    reply = ask(QueryService(FakeSource()), req)
    assert reply == {"ok": False, "ver": 1, "error": message}


def test_internal_failure_is_an_error_reply_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    src = FakeSource()
    src.fail = True
    svc = QueryService(src)
    reply = ask(svc, GOOD)
    assert reply["ok"] is False and "internal error" in reply["error"]
    assert svc.stats() == {"requests": 1, "errors": 0, "failures": 1}
    assert "depletion query failed" in caplog.text


def test_envelopes() -> None:
    """REQ-style [id, "", body] and DEALER-style [id, body] get their own envelope back; a wrong
    number of body frames is an error on the same envelope."""
    svc = QueryService(FakeSource())
    body = msgpack.packb(GOOD)
    req_reply = svc.handle([b"\x00k\x8b\x45\x67", b"", body])
    assert req_reply[:2] == [b"\x00k\x8b\x45\x67", b""] and len(req_reply) == 3
    assert decode_reply(req_reply[2]).ok
    dealer_reply = svc.handle([b"D", body])
    assert dealer_reply[0] == b"D" and len(dealer_reply) == 2 and decode_reply(dealer_reply[1]).ok
    proxied = svc.handle([b"P", b"C", b"", body])
    assert proxied[:3] == [b"P", b"C", b""] and decode_reply(proxied[3]).ok
    for frames, env in (([b"D"], [b"D"]), ([b"D", b""], [b"D", b""]), ([b"D", b"", body, body], [b"D", b""]),
                        ([], [])):
        out = svc.handle(frames)
        assert out[:-1] == env
        r = decode_reply(out[-1])
        assert not r.ok and "expected one request frame" in (r.error or "")
    assert split_envelope([b"D", body]) == ([b"D"], body)


def test_decode_reply_rejects_garbage() -> None:
    for raw in (b"\xc1", msgpack.packb([1]), msgpack.packb({"ok": True})):
        with pytest.raises(QueryError):
            decode_reply(raw)
    assert decode_reply(encode_error("nope")).error == "nope"


# --- over real sockets ------------------------------------------------------------------------


class Server:
    """A ROUTER on a loopback port answering with a QueryService in a thread (the aggregator's
    loop in miniature)."""

    def __init__(self, svc: QueryService | None) -> None:
        self.ctx = zmq.Context()
        self.sock = bus.router("tcp://127.0.0.1:*", max_msg_size=1 << 16, ctx=self.ctx)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.svc = svc
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(20):
                frames = self.sock.recv_multipart()
                if self.svc is not None:   # None: a server that never answers
                    self.sock.send_multipart(self.svc.handle(frames))

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(linger=0)
        self.ctx.term()


def test_round_trip_req_and_dealer() -> None:
    """A REQ client (the client library's socket) and a DEALER client both get answers over TCP loopback."""
    with Server(QueryService(FakeSource())) as srv:
        ctx = zmq.Context()
        try:
            r = subscriber.deplete(srv.endpoint, SYM, "sell", "2", timeout=5.0, ctx=ctx)
            assert r.ok and r.merged is not None and r.merged["filled"] == "2" and (r.epoch, r.seq) == (7, 42)
            d = bus.dealer(srv.endpoint, ctx=ctx)
            try:
                d.send(b"garbage")
                assert d.poll(5000)
                r2 = decode_reply(d.recv())
                assert not r2.ok and "not valid msgpack" in (r2.error or "")
            finally:
                d.close(linger=0)
        finally:
            ctx.term()


def args(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    cli.add_parser(ap.add_subparsers(dest="command"))
    return ap.parse_args(["deplete", *argv])


def test_cli_human_output() -> None:
    """Summary line, a block per venue, the merged block, then the fills per venue."""
    with Server(QueryService(FakeSource())) as srv:
        out, err = io.StringIO(), io.StringIO()
        code = cli.run(args("btc/usdt", "SELL", "2", "--endpoint", srv.endpoint), out=out, err=err)
    text = out.getvalue()
    assert code == 0 and err.getvalue() == ""
    lines = text.splitlines()
    assert lines[0] == "sell 2 BTC of BTC/USDT (a sell takes bids), books of epoch 7 seq 42"
    assert lines.index("alpha [live]") < lines.index("beta [live]") < lines.index("gamma [stale]")
    assert "merged [alpha, beta; dust filtered]" in lines
    assert "├── levels         3  (beta 1, alpha 2)" in lines
    assert "├── VWAP           99.875" in lines
    assert "├── avg incl. fee  99.75 (fee 0.25 USDT)" in lines
    assert lines[-4] == "fills per venue (price, amount)"
    assert lines[-3] == "  alpha: [(100, 1), (99, 1)]"
    assert lines[-1] == "  gamma: [(105, 2)]"


def test_cli_partial_and_json() -> None:
    with Server(QueryService(FakeSource())) as srv:
        out = io.StringIO()
        assert cli.run(args(SYM, "buy", "1000", "--venue", "alpha", "--endpoint", srv.endpoint), out=out) == 0
        assert "PARTIAL: the book ran out" in out.getvalue()
        out = io.StringIO()
        assert cli.run(args(SYM, "buy", "304", "--notional", "--json", "--endpoint", srv.endpoint), out=out) == 0
    m = json.loads(out.getvalue())
    assert m["ok"] is True and m["merged"]["mode"] == "notional" and m["merged"]["filled"] == "3"


def test_cli_errors_exit_2() -> None:
    """An error reply, a bad size and an aggregator that does not answer: message and exit 2."""
    with Server(QueryService(FakeSource())) as srv:
        err = io.StringIO()
        assert cli.run(args("DOGE/USDT", "buy", "1", "--endpoint", srv.endpoint), err=err) == 2
        assert "unknown symbol 'DOGE/USDT'" in err.getvalue()
    err = io.StringIO()
    assert cli.run(args(SYM, "buy", "-3", "--endpoint", "tcp://127.0.0.1:9"), err=err) == 2
    assert "negative" in err.getvalue()
    with Server(None) as silent:
        err = io.StringIO()
        assert cli.run(args(SYM, "buy", "1", "--endpoint", silent.endpoint, "--timeout", "0.2"), err=err) == 2
        assert "no answer from the aggregator" in err.getvalue()


def test_cli_endpoint_from_config_and_rounded_display() -> None:
    """Without --endpoint the CLI asks aggregator.query of the config; people see at most 12
    decimals, marked ≈ when rounded (--json stays exact)."""
    assert cli._endpoint(args(SYM, "buy", "1")) == "tcp://127.0.0.1:50053"
    assert cli._h("1.990196078431372549019607843") == "≈1.990196078431"
    assert cli._h("0.123456789012") == "0.123456789012" and cli._h(None) == "-"
