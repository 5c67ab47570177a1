#!/usr/bin/env python3
"""Where executed RUN steps' time went, from a `strata build --progress json` log (its `run-cost`
events; docs/read-set.md, "Cost").

    run-cost.py LOG                  the mean per executed RUN of each phase, in ms (nothing
                                     when no RUN ran, or the binary has no such events)
    run-cost.py LOG --sum P1,P2,...  the total of those phases over every RUN, in seconds
"""
import json
import sys


def events(path):
    for line in open(path, errors="replace"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "run-cost":
            yield e["ms"]


def main():
    if len(sys.argv) == 4 and sys.argv[2] == "--sum":
        phases = sys.argv[3].split(",")
        total = sum(r.get(p, 0) for r in events(sys.argv[1]) for p in phases)
        print(f"{total / 1000:.3f}")
    elif len(sys.argv) == 2:
        runs = list(events(sys.argv[1]))
        if runs:
            phases = list(runs[0])
            mean = {p: sum(r[p] for r in runs) / len(runs) for p in phases}
            print(f"  per executed RUN ({len(runs)} runs), mean ms: "
                  + ", ".join(f"{p} {mean[p]:.1f}" for p in phases)
                  + f"; sum {sum(mean.values()):.1f}")
    else:
        sys.exit(__doc__)


main()
