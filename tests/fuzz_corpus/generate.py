"""Write the hostile-input corpus of tests/test_fuzz_parsers.py and tests/test_fuzz_sockets.py.

Every input is hand-made here (never copied from a recording). Run from the repository root:
``.venv/bin/python -m tests.fuzz_corpus.generate``; it rewrites the files and README.md. Layout:
one folder per entry point, one small file per input, the README says what each one is.

* ``*.json`` / ``*.txt``: the raw text a venue would send (frame or REST body);
* ``*.bin``: raw bytes of one frame (a bus payload, a snapshot request, a query request/reply);
* ``bus_frames/*.bin``: a whole multipart bus message, as a msgpack array of its frames.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent

B_DEPTH = ('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT",'
           '"U":100,"u":101,"b":[["43000.10","1.5"]],"a":[["43000.20","0.25"]]}}')
S_DIFF = ('{"data":{"timestamp":"1700000000","microtimestamp":"1700000000123456","bids":[["43000.1","1.5"]],'
          '"asks":[["43000.2","0.25"]]},"channel":"diff_order_book_btcusd","event":"data"}')


def b_depth(**repl: str) -> str:
    """The Binance depth frame with raw JSON text substituted for some fields' values."""
    data = {"e": '"depthUpdate"', "E": "1700000000000", "s": '"BTCUSDT"', "U": "100", "u": "101",
            "b": '[["43000.10","1.5"]]', "a": '[["43000.20","0.25"]]', **repl}
    body = ",".join(f'"{k}":{v}' for k, v in data.items() if v is not None)
    return '{"stream":"btcusdt@depth@100ms","data":{' + body + "}}"


def s_diff(**repl: str) -> str:
    data = {"timestamp": '"1700000000"', "microtimestamp": '"1700000000123456"', "bids": '[["43000.1","1.5"]]',
            "asks": '[["43000.2","0.25"]]', **repl}
    body = ",".join(f'"{k}":{v}' for k, v in data.items() if v is not None)
    return '{"data":{' + body + '},"channel":"diff_order_book_btcusd","event":"data"}'


def pk(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


FEED_OK = {"ver": 1, "t": "delta", "v": "alpha", "sess": 7, "s": "BTC/USDT", "seq": 5, "ets": 1, "rts": 1,
           "b": [["100.5", "1"]], "a": [["101", "2"]]}


def feed(**repl: object) -> dict[str, object]:
    m = dict(FEED_OK)
    for k, v in repl.items():
        if v is DROP:
            m.pop(k, None)
        else:
            m[k] = v
    return m


DROP = object()
QUERY_OK = {"op": "deplete", "symbol": "BTC/USDT", "side": "buy", "quantity": "1"}

CORPUS: dict[str, list[tuple[str, str | bytes, str]]] = {
    "binance_frame": [
        ("truncated.json", B_DEPTH[:57], "depth frame cut in the middle of the data object"),
        ("truncated_number.json", B_DEPTH[: B_DEPTH.index("43000.10") + 3], "cut inside a price string"),
        ("garbage.txt", "\x00\xff{{]]", "not JSON at all"),
        ("empty.txt", "", "empty frame"),
        ("array.json", "[1,2,3]", "valid JSON, not an object"),
        ("data_string.json", '{"stream":"btcusdt@depth@100ms","data":"x"}', "data is a string"),
        ("stream_int.json", '{"stream":5,"data":{}}', "stream is not a string"),
        ("U_string.json", b_depth(U='"100"'), "U as a string"),
        ("u_float.json", b_depth(u="101.0"), "u as a float"),
        ("U_gt_u.json", b_depth(U="200"), "U greater than u"),
        ("U_negative.json", b_depth(U="-1"), "negative first id"),
        ("u_huge.json", b_depth(u="9" * 400), "integer of 400 digits"),
        ("E_bool.json", b_depth(E="true"), "event time as a bool"),
        ("no_symbol.json", '{"e":"depthUpdate","U":1,"u":2,"b":[],"a":[]}', "raw depth event without s"),
        ("qty_nan.json", b_depth(b='[["43000.1","NaN"]]'), "NaN quantity"),
        ("qty_inf.json", b_depth(b='[["43000.1","Infinity"]]'), "infinite quantity"),
        ("qty_negative.json", b_depth(a='[["43000.2","-1"]]'), "negative quantity"),
        ("qty_1e400.json", b_depth(a='[["43000.2","1e400"]]'), "quantity 1e400 (above MAX_ABS)"),
        ("qty_tiny_exponent.json", b_depth(a='[["43000.2","1E-999999999999999999"]]'),
         "finite, tiny quantity whose plain text would be 10^18 characters"),
        ("price_tiny_exponent.json", b_depth(b='[["1E-2000000000","1"]]'), "price with 2e9 decimals"),
        ("price_zero.json", b_depth(b='[["0","1"]]'), "price 0"),
        ("price_number.json", b_depth(b="[[43000.1,1]]"), "levels as JSON numbers (floats)"),
        ("level_three.json", b_depth(b='[["1","2","3"]]'), "level with three entries"),
        ("level_object.json", b_depth(b='[{"p":"1","q":"2"}]'), "level as an object"),
        ("bids_null.json", b_depth(b="null"), "bids null"),
        ("bids_missing.json", b_depth(b=None), "bids missing"),
        ("huge_array.json", b_depth(b="[" + ",".join(['["1","x"]'] * 500) + "]"), "500 levels, all bad"),
        ("deep_nesting.json", '{"stream":"btcusdt@depth","data":' + "[" * 3000 + "]" * 3000 + "}",
         "3000 levels of nesting"),
        ("unknown_fields.json", b_depth(zz='{"x":[1,2,{"y":null}]}', Z='"?"'), "unknown extra fields"),
        ("event_type_wrong.json", b_depth(e='"trade"'), "depth stream with another event type"),
        ("unicode_symbol.json", b_depth(s='"\\u00dfUSDT"'), "symbol with a non-ASCII letter"),
        ("unknown_keys.json", '{"foo":1}', "object without any known key"),
        ("bad_utf8.txt", b'{"e":"\xff\xfe"}', "invalid UTF-8"),
        ("lone_surrogate.json", '{"e":"\\ud800"}', "lone UTF-16 surrogate escape"),
    ],
    "bitstamp_frame": [
        ("truncated.json", S_DIFF[:70], "diff frame cut in the middle"),
        ("garbage.txt", "}{", "not JSON"),
        ("event_missing.json", '{"channel":"diff_order_book_btcusd","data":{}}', "no event"),
        ("event_int.json", '{"event":3}', "event not a string"),
        ("channel_empty_pair.json", '{"event":"data","channel":"diff_order_book_","data":{}}', "empty pair"),
        ("data_list.json", '{"event":"data","channel":"diff_order_book_btcusd","data":[]}', "data is a list"),
        ("mt_negative.json", s_diff(microtimestamp='"-5"'), "negative microtimestamp string"),
        ("mt_float.json", s_diff(microtimestamp="1.5"), "microtimestamp a float"),
        ("mt_20_digits.json", s_diff(microtimestamp='"' + "9" * 20 + '"'), "microtimestamp of 20 digits"),
        ("mt_unicode_digits.json", s_diff(microtimestamp='"\\u0661\\u0662"'), "Arabic-Indic digits"),
        ("qty_nan.json", s_diff(bids='[["1","nan"]]'), "NaN quantity"),
        ("qty_negative.json", s_diff(asks='[["1","-0.5"]]'), "negative quantity"),
        ("qty_1e400.json", s_diff(asks='[["1","1e400"]]'), "huge quantity"),
        ("qty_tiny_exponent.json", s_diff(asks='[["1","1e-999999999"]]'), "quantity with 1e9 decimals"),
        ("price_hex.json", s_diff(bids='[["0x10","1"]]'), "hex price"),
        ("bids_string.json", s_diff(bids='"[]"'), "bids as a string"),
        ("error_data_string.json", '{"event":"bts:error","data":"boom"}', "error with string data"),
        ("unknown_fields.json", s_diff(extra='{"a":[[[[]]]]}'), "unknown extra fields"),
        ("deep_nesting.json", '{"event":"x","channel":' + "[" * 3000 + "]" * 3000 + "}", "deep nesting"),
    ],
    "binance_snapshot": [
        ("truncated.json", '{"lastUpdateId":5,"bids":[["1","2"]],"asks":[["3"', "cut REST body"),
        ("error_body.json", '{"code":-1121,"msg":"Invalid symbol."}', "REST error body"),
        ("last_string.json", '{"lastUpdateId":"5","bids":[],"asks":[]}', "lastUpdateId a string"),
        ("last_negative.json", '{"lastUpdateId":-5,"bids":[],"asks":[]}', "negative lastUpdateId"),
        ("asks_missing.json", '{"lastUpdateId":5,"bids":[]}', "no asks"),
        ("qty_tiny_exponent.json", '{"lastUpdateId":5,"bids":[["1","1e-99999999"]],"asks":[]}', "1e8 decimals"),
        ("html.txt", "<html><body>502 Bad Gateway</body></html>", "an HTML error page"),
    ],
    "bitstamp_snapshot": [
        ("truncated.json", '{"timestamp":"1","microtimestamp":"17', "cut REST body"),
        ("error_body.json", '{"status":"error","reason":"x"}', "REST error body"),
        ("mt_missing.json", '{"timestamp":"1","bids":[],"asks":[]}', "no microtimestamp"),
        ("mt_list.json", '{"microtimestamp":[1],"bids":[],"asks":[]}', "microtimestamp a list"),
        ("price_inf.json", '{"microtimestamp":"1","bids":[["inf","1"]],"asks":[]}', "infinite price"),
    ],
    "pairs": [
        ("binance_symbols_not_list.json", '{"symbols":{}}', "exchangeInfo symbols is an object"),
        ("binance_bad_entries.json", '{"symbols":[1,null,{"symbol":5},{"symbol":"X","baseAsset":[]}]}',
         "exchangeInfo entries of wrong types"),
        ("bitstamp_not_list.json", '{"name":"BTC/USD"}', "trading-pairs-info is an object"),
        ("bitstamp_bad_entries.json", '[1,"x",{"name":5},{"name":"BTC/USD","url_symbol":""}]', "bad entries"),
        ("truncated.json", '[{"name":"BTC/USD","url_sym', "cut body"),
    ],
    "bus_payload": [
        ("garbage.bin", b"\xc1\xc1\xc1", "reserved msgpack byte 0xc1"),
        ("truncated.bin", pk(FEED_OK)[:20], "a valid delta cut short"),
        ("extra_data.bin", pk(FEED_OK) + b"\x00", "a valid delta followed by one more byte"),
        ("not_a_map.bin", pk([1, 2, 3]), "an array"),
        ("int_keys.bin", pk({1: 2}), "a map with integer keys"),
        ("ver_2.bin", pk(feed(ver=2)), "unknown schema version"),
        ("ver_bool.bin", pk(feed(ver=True)), "version true (== 1 in Python)"),
        ("t_unknown.bin", pk(feed(t="trade")), "unknown message type"),
        ("t_bytes.bin", pk(feed(t=b"delta")), "type as bin, not str"),
        ("seq_string.bin", pk(feed(seq="5")), "seq as a string"),
        ("seq_float.bin", pk(feed(seq=5.0)), "seq as a float"),
        ("seq_bool.bin", pk(feed(seq=True)), "seq as a bool"),
        ("sess_missing.bin", pk(feed(sess=DROP)), "no session"),
        ("venue_int.bin", pk(feed(v=3)), "venue as an int"),
        ("levels_map.bin", pk(feed(b={"1": "2"})), "bids as a map"),
        ("level_floats.bin", pk(feed(b=[[100.5, 1.0]])), "levels as floats"),
        ("qty_negative.bin", pk(feed(a=[["101", "-2"]])), "negative quantity"),
        ("qty_nan.bin", pk(feed(a=[["101", "NaN"]])), "NaN quantity"),
        ("qty_1e400.bin", pk(feed(a=[["101", "1e400"]])), "huge quantity"),
        ("price_zero.bin", pk(feed(b=[["0", "1"]])), "price 0"),
        ("status_unknown.bin", pk(feed(t="status", st="exploded", why="x")), "unknown status"),
        ("hb_seqs_list.bin", pk({"ver": 1, "t": "hb", "v": "alpha", "sess": 7, "rts": 1, "seqs": [1]}),
         "heartbeat seqs as a list"),
        ("hb_seqs_str_values.bin", pk({"ver": 1, "t": "hb", "v": "alpha", "sess": 7, "rts": 1,
                                       "seqs": {"BTC/USDT": "5"}}), "heartbeat seq values as strings"),
        ("deep_nesting.bin", b"\x91" * 5000 + b"\xc0", "5000 nested one-element arrays"),
        ("huge_array_header.bin", b"\xdd\xff\xff\xff\xff", "array header claiming 2^32-1 items, no items"),
        ("huge_str_header.bin", b"\xdb\xff\xff\xff\xff" + b"x" * 8, "str header claiming 4 GiB"),
        ("ext_type.bin", b"\xd4\x05\x00", "a msgpack ext value"),
    ],
    "bus_frames": [
        ("one_frame.bin", pk([pk(FEED_OK)]), "one frame only"),
        ("three_frames.bin", pk([b"md.alpha.BTC/USDT", pk(FEED_OK), b"x"]), "three frames"),
        ("topic_mismatch.bin", pk([b"md.alpha.ETH/USDT", pk(FEED_OK)]), "topic names another symbol"),
        ("topic_other_venue.bin", pk([b"md.beta.BTC/USDT", pk(FEED_OK)]), "topic names another venue"),
        ("hb_topic_for_delta.bin", pk([b"hb.alpha", pk(FEED_OK)]), "heartbeat topic on a delta"),
        ("topic_non_ascii.bin", pk([b"md.\xff", pk(FEED_OK)]), "topic not ASCII"),
        ("empty_frames.bin", pk([b"", b""]), "two empty frames"),
    ],
    "snapreq": [
        ("garbage.bin", b"\xff\x00garbage", "not msgpack"),
        ("empty.bin", b"", "empty frame"),
        ("wrong_t.bin", pk({"t": "snap", "s": []}), "wrong t"),
        ("s_string.bin", pk({"t": "snapreq", "s": "BTC/USDT"}), "symbols as one string"),
        ("s_ints.bin", pk({"t": "snapreq", "s": [1, 2]}), "symbols as ints"),
        ("s_bytes.bin", pk({"t": "snapreq", "s": [b"BTC/USDT"]}), "symbols as bin"),
        ("dup_symbols.bin", pk({"t": "snapreq", "s": ["BTC/USDT"] * 500}), "one symbol 500 times"),
        ("unknown_symbols.bin", pk({"t": "snapreq", "s": ["NOPE/X", "\u00e9/\u00e9", ""]}), "unknown symbols"),
    ],
    "query_request": [
        ("garbage.bin", b"\x00garbage", "not msgpack"),
        ("truncated.bin", pk(QUERY_OK)[:10], "a valid request cut short"),
        ("list.bin", pk(["deplete"]), "an array"),
        ("qty_nan.bin", pk({**QUERY_OK, "quantity": "NaN"}), "NaN quantity"),
        ("qty_negative.bin", pk({**QUERY_OK, "quantity": "-1"}), "negative quantity"),
        ("qty_1e400.bin", pk({**QUERY_OK, "quantity": "1e400"}), "huge quantity"),
        ("qty_tiny.bin", pk({**QUERY_OK, "quantity": "1e-999999999"}), "quantity with 1e9 decimals"),
        ("qty_int.bin", pk({**QUERY_OK, "quantity": 1}), "quantity as an int"),
        ("qty_float.bin", pk({**QUERY_OK, "quantity": 1.5}), "quantity as a float"),
        ("both_sizes.bin", pk({**QUERY_OK, "notional": "5"}), "quantity and notional"),
        ("unknown_key.bin", pk({**QUERY_OK, "qty": "1"}), "an unknown key"),
        ("int_key.bin", pk({**QUERY_OK, 1: "x"}), "an integer key"),
        ("ver_true.bin", pk({**QUERY_OK, "ver": True}), "version true"),
        ("side_bytes.bin", pk({**QUERY_OK, "side": b"buy"}), "side as bin"),
        ("oversized.bin", pk({**QUERY_OK, "venue": "v" * 5000}), "a request over MAX_REQUEST_BYTES"),
    ],
    "query_reply": [
        ("garbage.bin", b"\xc1", "not msgpack"),
        ("ok_string.bin", pk({"ok": "yes"}), "ok not a bool"),
        ("ok_no_epoch.bin", pk({"ok": True, "seq": 1, "symbol": "X"}), "no epoch"),
        ("venues_list.bin", pk({"ok": True, "epoch": 1, "seq": 1, "symbol": "X", "merged": None,
                                "venues": [], "statuses": {}}), "venues as a list"),
        ("error_int.bin", pk({"ok": False, "error": 5}), "error not a string"),
    ],
}


def main() -> None:
    lines = ["# Fuzz corpus", "",
             "Hostile inputs, hand-made by `generate.py` (never copied from a recording). Every one must",
             "end in the entry point's documented error (ParseError / BusError / QueryError) or a valid",
             "value, never another exception: `tests/test_fuzz_parsers.py` replays them all, and",
             "`tests/test_fuzz_sockets.py` sends some over real sockets. Regenerate with",
             "`.venv/bin/python -m tests.fuzz_corpus.generate`.", "",
             "`*.json`/`*.txt`: venue text; `*.bin`: one raw frame; `bus_frames/*.bin`: a msgpack array of",
             "the frames of one multipart bus message.", ""]
    for folder, items in CORPUS.items():
        d = HERE / folder
        d.mkdir(exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        lines += [f"## {folder}", ""]
        for name, content, what in items:
            data = content.encode() if isinstance(content, str) else content
            (d / name).write_bytes(data)
            lines.append(f"* `{name}` ({len(data)} B): {what}")
        lines.append("")
    (HERE / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
