#!/usr/bin/env bash
# Long chains of stages (issue 18): `FROM s{i-1} AS s{i}` with and without an ENV per stage, for
# a few lengths, each built once into a fresh store; prints wall time and peak RSS per build.
# Linear chains grow linearly; ENV chains grow with the config state each config key holds.
#   benches/scripts/chain-scenario.sh [STRATA] [N...]     (default: target/release/strata; 1000 2000 4000)
set -euo pipefail
strata="${1:-/var/tmp/strata-target/release/strata}"
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 2000 4000)
work="$(mktemp -d /var/tmp/strata-chain.XXXXXX)"
trap 'rm -rf "$work"' EXIT
for kind in plain env; do
  for n in "${sizes[@]}"; do
    d="$work/$kind-$n"
    mkdir -p "$d/ctx"
    python3 - "$kind" "$n" > "$d/ctx/Dockerfile" <<'PY'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
print("FROM scratch AS s0")
for i in range(1, n):
    print(f"FROM s{i-1} AS s{i}")
    if kind == "env":
        print(f"ENV V{i}={i}")
PY
    /usr/bin/time -f "$kind chain of $n stages: %e s, %M KB peak" \
      "$strata" --store "$d/store" build "$d/ctx" > /dev/null 2> "$d/err" || { cat "$d/err" >&2; exit 1; }
    tail -1 "$d/err"
  done
done
