"""python -m services.replay DIR: replay a feed capture deterministically (docs/capture.md).

Every captured feed session goes through its own real FeedCore, one step per captured input with
the captured clocks, and their bus messages through the real aggregator's merge and depletion,
in this process (no sockets). After every input, each venue book rebuilt from the replay is
compared with the one rebuilt from the bus messages the feed published while it was captured.
Prints the replay speed, the verdict and a digest of every published merged book (identical
runs give identical digests). Exit status 0 when every book was equal, 1 when not, 2 on a bad
folder or config.

  python -m services.replay run/demo/capture --config deploy/demo.toml --twice
"""

from __future__ import annotations

import argparse
import json
import sys

from common import logs
from common.config import ConfigError, add_config_args, from_args
from common.feed.capture import CaptureError, find_runs
from services.replay.engine import replay


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", metavar="DIR", help="a capture folder (feeds run with --capture DIR)")
    ap.add_argument("--only", default=None, metavar="VENUES",
                    help="comma-separated venue ids to replay (default: every venue in the folder)")
    ap.add_argument("--twice", action="store_true",
                    help="replay twice and check both runs published identical books")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_config_args(ap)
    args = ap.parse_args(argv)
    log = logs.setup("replay", args.log_level or "WARNING")
    try:
        base = from_args(args)
        only = {v.strip() for v in args.only.split(",") if v.strip()} if args.only else None
        runs = find_runs(args.folder, only)
        results = [replay(runs, base) for _ in range(2 if args.twice else 1)]
    except (ConfigError, CaptureError) as e:
        log.error("%s", e)
        return 2
    r = results[0]
    same = all(x.digest == r.digest and x.published == r.published for x in results)
    v = r.verdict
    if args.json:
        print(json.dumps({
            "runs": [{"venue": x.venue, "sess": x.sess, "files": len(x.paths), "truncated": x.truncated} for x in runs],
            "inputs": v.inputs, "frames": v.frames, "seconds": round(r.seconds, 3), "captured_s": round(r.span_s, 3),
            "frames_per_s": round(r.frames_per_s, 1), "x_real_time": round(r.speedup, 2),
            "book_checks": v.book_checks, "book_mismatches": v.book_mismatches, "bus_mismatches": v.bus_mismatches,
            "first_mismatch": v.first_mismatch, "published": r.published, "digest": r.digest,
            "deterministic": same if args.twice else None}))
    else:
        print(f"{len(runs)} feed session(s): " + ", ".join(f"{x.venue}/{x.sess} ({len(x.paths)} file(s)"
                                                          f"{', cut short' if x.truncated else ''})" for x in runs))
        for i, x in enumerate(results, 1):
            print(f"run {i}: {x.summary()}")
        if v.first_mismatch:
            print(f"first mismatch: {v.first_mismatch}")
        if args.twice:
            print("identical published books on both runs" if same else "the two runs published DIFFERENT books")
    return 0 if v.equal and same else 1


if __name__ == "__main__":
    sys.exit(main())
