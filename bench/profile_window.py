"""Where one steady-state segment's wall time goes, from a py-spy trace of a chain render.

``bench/chain.py --profile DIR`` records each render with ``py-spy record --idle --format
chrometrace``. This reads one of those traces and cuts it to the wall-clock window between
two consecutive segment completions (``SegmentDone``: what ``steady_*_s`` averages), then
ranks functions per thread by inclusive time (a frame counted once per stack, so recursion
does not double it) and by self time (the innermost frame). py-spy's ``--idle`` keeps
threads that wait (on CUDA, a lock, a read), so the main thread's entries add up to the
window.

    python bench/profile_window.py bench/results/new/chain.json --run capped --segment shot2
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from machine_info import print_report


def _frame(event: dict[str, Any]) -> str:
    args = event.get("args", {})
    path = str(args.get("filename", ""))
    short = "/".join(path.split("/")[-2:]) if path else "?"
    return f"{event['name']} ({short}:{args.get('line', '?')})"


def thread_times(events: list[dict[str, Any]], start_us: float, end_us: float) -> dict[int, dict[str, Any]]:
    """Per thread id: inclusive and self microseconds per frame inside [start_us, end_us]."""
    by_tid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") in ("B", "E"):
            by_tid[e["tid"]].append(e)
    out: dict[int, dict[str, Any]] = {}
    for tid, evs in by_tid.items():
        evs.sort(key=lambda e: (e["ts"], 0 if e["ph"] == "E" else 1))
        stack: list[tuple[str, float]] = []
        inclusive: dict[str, float] = defaultdict(float)
        own: dict[str, float] = defaultdict(float)
        last_ts = None
        root = ""
        for e in evs:
            ts = float(e["ts"])
            if stack and last_ts is not None:
                lo, hi = max(last_ts, start_us), min(ts, end_us)
                if hi > lo:
                    own[stack[-1][0]] += hi - lo
            last_ts = ts
            if e["ph"] == "B":
                stack.append((_frame(e), ts))
                root = root or stack[0][0]
            elif stack:
                frame, began = stack.pop()
                if all(f != frame for f, _ in stack):  # once per stack: recursion is not double time
                    lo, hi = max(began, start_us), min(ts, end_us)
                    if hi > lo:
                        inclusive[frame] += hi - lo
        total = sum(own.values())
        if total > 0:
            out[tid] = {"root": root, "sampled_s": total / 1e6, "inclusive": inclusive, "self": own}
    return out


def _top(table: dict[str, float], n: int) -> list[list[Any]]:
    return [[round(us / 1e6, 2), frame] for frame, us in sorted(table.items(), key=lambda kv: -kv[1])[:n]]


def window(chain: dict[str, Any], run: str, segment: str) -> tuple[float, float]:
    """(start, end) epoch seconds: from the previous segment's SegmentDone to this one's."""
    done = chain["runs"][run]["segment_done_ts"]
    order = sorted(done, key=done.get)
    i = order.index(segment)
    if i == 0:
        raise SystemExit(f"{segment} is the first segment: no steady-state window (pick a later one)")
    return done[order[i - 1]], done[segment]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chain", type=Path, help="bench/chain.py's JSON (names the traces)")
    ap.add_argument("--run", default="capped", choices=("capped", "uncapped"))
    ap.add_argument("--segment", default="shot2")
    ap.add_argument("--trace", type=Path, default=None, help="the trace, if it moved since the run")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    chain = json.loads(args.chain.read_text())
    run = chain["runs"][args.run]
    trace = args.trace or Path(run["profile"])
    events = json.loads(trace.read_text())
    start, end = window(chain, args.run, args.segment)
    t0 = run["profile_t0"]
    threads = thread_times(events, (start - t0) * 1e6, (end - t0) * 1e6)
    report = {"trace": str(trace), "run": args.run, "segment": args.segment, "window_s": round(end - start, 2),
              "stages": [s for s in run.get("stage_ts", []) if s[3] > start and s[2] < end],
              "threads": [{"tid": tid, "root": t["root"], "sampled_s": round(t["sampled_s"], 2),
                           "inclusive": _top(t["inclusive"], args.top), "self": _top(t["self"], args.top)}
                          for tid, t in sorted(threads.items(), key=lambda kv: -kv[1]["sampled_s"])]}
    return print_report(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
