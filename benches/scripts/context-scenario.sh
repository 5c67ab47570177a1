#!/usr/bin/env bash
# Scenario benchmark for issue 2's targets, measured in one run so the ratios are meaningful:
#   - cold COPY of an ~800 MB / 50k-file context vs `tar | gzip -6 | sha256sum` on the same data
#   - no-op rebuild vs `find -type f | xargs stat` (what stat-ing the files costs)
#   - peak RSS of the cold build
# Usage: benches/scripts/context-scenario.sh [WORKDIR] [FILES] [MB]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-/var/tmp/strata-bench}"
files="${2:-50000}"
mb="${3:-800}"
strata="${STRATA:-${CARGO_TARGET_DIR:-/var/tmp/strata-target}/release/strata}"
ctx="$work/ctx-$files-$mb"
[ -d "$ctx" ] || python3 "$here/gen-context.py" "$ctx" --files "$files" --mb "$mb"
sync
cat_all() { find "$ctx/tree" -type f -print0 | xargs -0 cat > /dev/null; }
cat_all  # warm the page cache for both contenders

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }

base_tar=$(t bash -c "tar -C '$ctx' --sort=name -cf - tree | gzip -6 | sha256sum")
base_stat=$(t bash -c "find '$ctx/tree' -print0 | xargs -0 stat --format=%s > /dev/null")
rm -rf "$work/store"
cold=$( { /usr/bin/time -f "%e %M" "$strata" --store "$work/store" build --progress plain "$ctx" > /dev/null 2> "$work/cold.err"; } 2>&1 | tail -1)
cold_s=$(tail -1 "$work/cold.err" | awk '{print $1}'); cold_rss=$(tail -1 "$work/cold.err" | awk '{print $2}')
noop=$( { /usr/bin/time -f "%e %M" "$strata" --store "$work/store" build --progress plain "$ctx" > /dev/null 2> "$work/noop.err"; } 2>&1 | tail -1)
noop_s=$(tail -1 "$work/noop.err" | awk '{print $1}')
one=$(find "$ctx/tree" -type f -name '*.txt' | sort | sed -n 100p)
cp -p "$one" "$work/one.bak"
echo "one more line" >> "$one"
/usr/bin/time -f "%e %M" "$strata" --store "$work/store" build --progress plain "$ctx" > /dev/null 2> "$work/one.err"
one_s=$(tail -1 "$work/one.err" | awk '{print $1}'); one_rss=$(tail -1 "$work/one.err" | awk '{print $2}')
cp -p "$work/one.bak" "$one"
echo "files=$files size=${mb}MB cores=$(nproc)"
echo "tar|gzip -6|sha256sum   : ${base_tar}s"
echo "strata cold COPY        : ${cold_s}s  (speed = $(echo "scale=2; $base_tar / $cold_s" | bc)x of the tar pipeline), peak RSS $((cold_rss / 1024)) MB"
echo "find+stat of the tree   : ${base_stat}s"
echo "strata no-op rebuild    : ${noop_s}s  ($(echo "scale=2; $noop_s / $base_stat" | bc)x the cost of stat)"
echo "strata one-file change   : ${one_s}s  ($(echo "scale=1; $cold_s / $one_s" | bc)x faster than cold; unchanged chunks reused), peak RSS $((one_rss / 1024)) MB"
