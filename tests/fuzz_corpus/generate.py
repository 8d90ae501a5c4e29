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


#: Valid feed-bus payloads of schema 2 (positional arrays, common/schema.py "Feed bus"): every
#: bus_payload input below is one of them with ONE fault, so a decoder that refused everything
#: would fail tests/test_fuzz_parsers.py (it checks these decode first).
FEED_OK: list[object] = ["delta", 2, "alpha", 7, "BTC/USDT", 5, 1, 1, [["100.5", "1"]], [["101", "2"]]]
SNAP_OK: list[object] = ["snap", 2, "alpha", 7, "BTC/USDT", 5, 1, 1, [["100.5", "1"]], [["101", "2"]],
                         ["100", ""]]
STATUS_OK: list[object] = ["status", 2, "alpha", 7, "BTC/USDT", 5, 1, "stale", "no frames"]
HB_OK: list[object] = ["hb", 2, "alpha", 7, 1, {"BTC/USDT": 5}, "online"]
#: Position of each field in a snap/delta array.
POS = {"t": 0, "ver": 1, "v": 2, "sess": 3, "s": 4, "seq": 5, "ets": 6, "rts": 7, "b": 8, "a": 9, "x": 10}


def feed(base: list[object] | None = None, **repl: object) -> list[object]:
    """A copy of ``base`` (FEED_OK) with some positions replaced (by field name, :data:`POS`; the
    status and heartbeat arrays share positions 0-3)."""
    m = list(FEED_OK if base is None else base)
    for k, v in repl.items():
        m[POS[k]] = v
    return m


DROP = object()
QUERY_OK = {"op": "deplete", "symbol": "BTC/USDT", "side": "buy", "quantity": "1"}

_V1_MAP = {"ver": 1, "t": "delta", "v": "alpha", "sess": 7, "s": "BTC/USDT", "seq": 5, "ets": 1, "rts": 1,
           "b": [["100.5", "1"]], "a": [["101", "2"]]}

#: (file, bytes, what, a fragment of the BusError message tests/test_fuzz_parsers.py expects):
#: every fault class of the bus decoder, each on an otherwise valid schema-2 payload.
BUS_PAYLOAD: list[tuple[str, bytes, str, str]] = [
    # not msgpack, or not one msgpack value
    ("garbage.bin", b"\xc1\xc1\xc1", "reserved msgpack byte 0xc1", "bad msgpack"),
    ("empty.bin", b"", "empty payload", "bad msgpack"),
    ("truncated.bin", pk(FEED_OK)[:20], "a valid delta cut short", "bad msgpack"),
    ("truncated_in_level.bin", pk(FEED_OK)[:-6], "a valid delta cut inside a level string", "bad msgpack"),
    ("extra_data.bin", pk(FEED_OK) + b"\x00", "a valid delta followed by one more byte", "bad msgpack"),
    ("bad_utf8.bin", pk(FEED_OK).replace(b"alpha", b"alph\xff"), "venue with invalid UTF-8", "bad msgpack"),
    ("ext_type.bin", b"\xd4\x05\x00", "a msgpack ext value", "not a feed message array"),
    ("nil.bin", pk(None), "nil", "not a feed message array"),
    ("int_keys.bin", pk({1: 2}), "a map with integer keys", "payload is a map"),
    # huge lengths: headers that claim more than the frame holds
    ("huge_array_header.bin", b"\xdd\xff\xff\xff\xff", "array header claiming 2^32-1 items, no items",
     "bad msgpack"),
    ("huge_str_header.bin", b"\xdb\xff\xff\xff\xff" + b"x" * 8, "str header claiming 4 GiB", "bad msgpack"),
    ("huge_levels_header.bin", b"\x9a" + pk(FEED_OK[:8])[1:] + b"\xdd\xff\xff\xff\xff",
     "delta whose bids claim 2^32-1 levels", "bad msgpack"),
    ("huge_seqs_header.bin", b"\x96" + pk(HB_OK[:5])[1:] + b"\xdf\xff\xff\xff\xff",
     "heartbeat whose seqs claim 2^32-1 entries", "bad msgpack"),
    ("deep_nesting.bin", b"\x91" * 5000 + b"\xc0", "5000 nested one-element arrays", "bad msgpack"),
    # version
    ("v1_map.bin", pk(_V1_MAP), "a valid schema-1 delta (a map)", "payload is a map (feed-bus schema 1"),
    ("ver_1.bin", pk(feed(ver=1)), "schema version 1 in the array", "schema version 1, expected 2"),
    ("ver_3.bin", pk(feed(ver=3)), "unknown schema version", "schema version 3, expected 2"),
    ("ver_bool.bin", pk(feed(ver=True)), "version true", "schema version True"),
    ("ver_float.bin", pk(feed(ver=2.0)), "version 2.0 (a float)", "schema version 2.0"),
    ("ver_string.bin", pk(feed(ver="2")), "version as a string", "schema version '2'"),
    ("ver_missing.bin", pk(["delta"]), "only the type", "Expected `array` of at least length"),
    # type (position 0)
    ("t_unknown.bin", pk(feed(t="trade")), "unknown message type", "unknown message type 'trade'"),
    ("t_upper.bin", pk(feed(t="DELTA")), "type in capitals", "unknown message type 'DELTA'"),
    ("t_bytes.bin", pk(feed(t=b"delta")), "type as bin, not str", "unknown message type b'delta'"),
    ("t_int.bin", pk(feed(t=1)), "type as an int", "unknown message type 1"),
    ("not_an_array.bin", pk("delta"), "a string", "not a feed message array"),
    ("empty_array.bin", pk([]), "an empty array", "not a feed message array"),
    # missing and extra positions
    ("delta_no_asks.bin", pk(FEED_OK[:9]), "delta without its asks (9 positions)", "at least length 10"),
    ("snap_extra.bin", pk([*SNAP_OK, "zz"]), "snap with a 12th position",
     "snap: Expected `array` of at most length"),
    ("delta_extra.bin", pk([*FEED_OK, ["", ""], 0]), "delta with a 12th position",
     "delta: Expected `array` of at most length"),
    ("status_no_st.bin", pk(STATUS_OK[:7]), "status without its status", "at least length 8"),
    ("status_extra.bin", pk([*STATUS_OK, 1]), "status with a 10th position",
     "status: Expected `array` of at most length"),
    ("hb_extra.bin", pk([*HB_OK, "x"]), "heartbeat with an 8th position", "hb: Expected `array` of at most length"),
    ("hb_as_delta.bin", pk(feed(t="hb")), "heartbeat type on a delta's positions", "hb 'rts'"),
    # wrong type per position
    ("venue_int.bin", pk(feed(v=3)), "venue as an int", "delta 'v': Expected `str`"),
    ("venue_bytes.bin", pk(feed(v=b"alpha")), "venue as bin", "delta 'v': Expected `str`"),
    ("sess_string.bin", pk(feed(sess="7")), "session as a string", "delta 'sess': Expected `int`"),
    ("sess_nil.bin", pk(feed(sess=None)), "session nil", "delta 'sess': Expected `int`"),
    ("symbol_int.bin", pk(feed(s=5)), "symbol as an int", "delta 's': Expected `str`"),
    ("seq_string.bin", pk(feed(seq="5")), "seq as a string", "delta 'seq': Expected `int`"),
    ("seq_float.bin", pk(feed(seq=5.0)), "seq as a float", "delta 'seq': Expected `int`"),
    ("seq_bool.bin", pk(feed(seq=True)), "seq as a bool", "delta 'seq': Expected `int`"),
    ("ets_float.bin", pk(feed(ets=1.5)), "exchange time as a float", "delta 'ets': Expected `int`"),
    ("rts_string.bin", pk(feed(rts="1")), "receive time as a string", "delta 'rts': Expected `int`"),
    ("levels_map.bin", pk(feed(b={"1": "2"})), "bids as a map", "delta 'b': Expected `array`"),
    ("levels_nil.bin", pk(feed(a=None)), "asks nil", "delta 'a': Expected `array`"),
    ("level_three.bin", pk(feed(b=[["100", "1", "x"]])), "level of three entries", "delta 'b': Expected `array`"),
    ("level_one.bin", pk(feed(b=[["100"]])), "level of one entry", "delta 'b': Expected `array`"),
    ("level_map.bin", pk(feed(b=[{"p": "100", "q": "1"}])), "level as a map", "delta 'b': Expected `array`"),
    ("level_floats.bin", pk(feed(b=[[100.5, 1.0]])), "level numbers as floats", "delta 'b': Expected `str`"),
    ("level_ints.bin", pk(feed(b=[[100, 1]])), "level numbers as ints", "delta 'b': Expected `str`"),
    ("level_bytes.bin", pk(feed(a=[[b"101", b"2"]])), "level numbers as bin", "delta 'a': Expected `str`"),
    ("x_one.bin", pk([*FEED_OK, ["100"]]), "exact-to of one entry", "delta 'x': Expected `array`"),
    ("x_number.bin", pk([*FEED_OK, [100, ""]]), "exact-to price as an int", "delta 'x': Expected `str`"),
    ("status_unknown.bin", pk([*STATUS_OK[:7], "exploded", "x"]), "unknown status",
     "status 'st': Invalid enum value 'exploded'"),
    ("status_int.bin", pk([*STATUS_OK[:7], 1, "x"]), "status as an int", "status 'st': Expected `str`"),
    ("why_int.bin", pk([*STATUS_OK[:8], 5]), "reason as an int", "status 'why': Expected `str`"),
    ("hb_seqs_list.bin", pk(["hb", 2, "alpha", 7, 1, [1]]), "heartbeat seqs as a list", "hb 'seqs': Expected `object`"),
    ("hb_seqs_str_values.bin", pk(["hb", 2, "alpha", 7, 1, {"BTC/USDT": "5"}]), "heartbeat seq values as strings",
     "hb 'seqs': Expected `int`"),
    ("hb_seqs_int_keys.bin", pk(["hb", 2, "alpha", 7, 1, {5: 5}]), "heartbeat seqs keyed by ints",
     "hb 'seqs': Expected `str`"),
    ("hb_mode_long.bin", pk([*HB_OK[:6], "m" * 41]), "heartbeat mode of 41 characters",
     "hb 'mode': Expected `str` of length <= 40"),
    ("hb_mode_int.bin", pk([*HB_OK[:6], 1]), "heartbeat mode as an int", "hb 'mode': Expected `str`"),
    # bad numbers
    ("qty_negative.bin", pk(feed(a=[["101", "-2"]])), "negative quantity", "'a': negative"),
    ("price_negative.bin", pk(feed(b=[["-100.5", "1"]])), "negative price", "'b': negative"),
    ("price_zero.bin", pk(feed(b=[["0", "1"]])), "price 0", "'b': price 0"),
    ("price_minus_zero.bin", pk(feed(b=[["-0.0", "1"]])), "price -0.0", "'b': price 0"),
    ("qty_nan.bin", pk(feed(a=[["101", "NaN"]])), "NaN quantity", "'a': not finite"),
    ("price_snan.bin", pk(feed(b=[["sNaN", "1"]])), "signalling NaN price", "'b': not finite"),
    ("qty_inf.bin", pk(feed(a=[["101", "Infinity"]])), "infinite quantity", "'a': not finite"),
    ("price_minus_inf.bin", pk(feed(b=[["-inf", "1"]])), "minus infinity price", "'b': not finite"),
    ("qty_1e400.bin", pk(feed(a=[["101", "1e400"]])), "huge quantity (exponent)", "'a': too large"),
    ("price_over_max.bin", pk(feed(b=[["1000000000000000000.1", "1"]])), "price just above MAX_ABS",
     "'b': too large"),
    ("qty_tiny_exponent.bin", pk(feed(a=[["101", "1E-999999999999999999"]])),
     "finite, tiny quantity whose plain text would be 10^18 characters", "'a': more than 18 decimals"),
    ("price_19_decimals.bin", pk(feed(b=[["0.0000000000000000001", "1"]])), "price with 19 decimals",
     "'b': more than 18 decimals"),
    ("qty_long_text.bin", pk(feed(a=[["101", "1" * 400]])), "quantity of 400 digits", "'a': too large"),
    ("qty_hex.bin", pk(feed(a=[["101", "0x10"]])), "hex quantity", "'a': not a decimal"),
    ("qty_empty.bin", pk(feed(a=[["101", ""]])), "empty quantity", "'a': not a decimal"),
    ("qty_comma.bin", pk(feed(a=[["101", "1,5"]])), "decimal comma", "'a': not a decimal"),
    ("x_nan.bin", pk([*FEED_OK, ["NaN", ""]]), "exact-to price NaN", "'x': not finite"),
    ("snap_bad_deep_level.bin", pk(feed(SNAP_OK, b=[[str(1000 - i), "1"] for i in range(40)] + [["1", "-1"]])),
     "a snap whose 41st bid is negative (the long-list path)", "'b': negative"),
    ("snap_nan_deep_level.bin", pk(feed(SNAP_OK, a=[[str(1000 + i), "1"] for i in range(40)] + [["2000", "nan"]])),
     "a snap whose 41st ask is NaN (the long-list path)", "'a': not finite"),
]

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
    "bus_payload": [(name, raw, what) for name, raw, what, _ in BUS_PAYLOAD],
    "bus_frames": [
        ("one_frame.bin", pk([pk(FEED_OK)]), "one frame only"),
        ("three_frames.bin", pk([b"md.alpha.BTC/USDT", pk(FEED_OK), b"x"]), "three frames"),
        ("topic_mismatch.bin", pk([b"md.alpha.ETH/USDT", pk(FEED_OK)]), "topic names another symbol"),
        ("topic_other_venue.bin", pk([b"md.beta.BTC/USDT", pk(FEED_OK)]), "topic names another venue"),
        ("hb_topic_for_delta.bin", pk([b"hb.alpha", pk(FEED_OK)]), "heartbeat topic on a delta"),
        ("delta_topic_for_hb.bin", pk([b"md.alpha.BTC/USDT", pk(HB_OK)]), "stream topic on a heartbeat"),
        ("topic_non_ascii.bin", pk([b"md.\xff", pk(FEED_OK)]), "topic not ASCII"),
        ("venue_non_ascii.bin", pk([b"md.alpha.BTC/USDT", pk(feed(v="alph\u00e4"))]), "venue not ASCII"),
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
