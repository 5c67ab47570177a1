#!/usr/bin/env bash
# No-op rebuild time of `strata build` (a whole process: store open, plan, lookups, exit) for
# testdata/example and for a generated 80-step Dockerfile, mean of N runs after one warm-up.
# Compare two binaries in one run for a ratio:
#   benches/scripts/noop-rebuild.sh OLD_STRATA NEW_STRATA [N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
n="${3:-30}"
work="$(mktemp -d /var/tmp/strata-noop.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# 80 steps: 40 COPY of small files, 40 config-only instructions.
ctx="$work/ctx80"
mkdir -p "$ctx/src"
{
  echo "FROM scratch"
  for i in $(seq 0 39); do
    echo "f$i" > "$ctx/src/f$i"
    echo "COPY src/f$i /data/f$i"
    echo "ENV K$i=v$i"
  done
} > "$ctx/Dockerfile"
mean() { # strata store context
  "$1" --store "$2" build --progress plain "$3" > /dev/null 2>&1
  "$1" --store "$2" build --progress plain "$3" > /dev/null 2>&1
  local s e
  s=$(date +%s%N)
  for _ in $(seq "$n"); do "$1" --store "$2" build --progress plain "$3" > /dev/null 2>&1; done
  e=$(date +%s%N)
  echo $(( (e - s) / n / 1000 ))
}
for name in example ctx80; do
  c="$repo/testdata/example"; [ "$name" = ctx80 ] && c="$ctx"
  # Interleave the two binaries' runs so machine load hits both alike.
  old=0; new=0
  for round in 1 2 3; do
    o=$(mean "$1" "$work/store-old-$name" "$c"); nw=$(mean "$2" "$work/store-new-$name" "$c")
    old=$((old + o)); new=$((new + nw))
  done
  echo "$name: old $((old / 3)) us, new $((new / 3)) us, new/old $(echo "scale=3; $new / $old" | bc)"
done
