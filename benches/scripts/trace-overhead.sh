#!/usr/bin/env bash
# Tracing overhead of read-set reuse (issue 20): a RUN-heavy cold build on a Debian minbase
# base, traced (the default) against `--no-readset` (untraced), alternating, best of R runs
# each, in one run. Every build is cold (--no-cache, fresh store) so the RUN executes; the base
# is imported into each store first and not timed.
#
#   benches/scripts/trace-overhead.sh [R]        (default R=3)
#
# Needs root (RUN steps) and the Debian minbase rootfs that fleet-scenario.sh makes in
# $WORK/rootfs (run that once, or debootstrap it there). Environment: STRATA, WORK as in
# fleet-scenario.sh. Workloads (each one RUN):
#   find-cat   `find / -xdev -type f | xargs cat > /dev/null`: nothing but path syscalls and reads
#   dpkg       `dpkg -L $(dpkg-query -W -f='${Package} ') | sort -u | xargs -r stat -c %s`: dpkg's
#              database read, then a stat of every file it lists
#   useradd    the fleet's RUN: `useradd -u 1000 app && chown -R app /app`
set -euo pipefail
R=${1:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/strata-fleet-bench}
STRATA=${STRATA:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/strata}
[ -x "$STRATA" ] || { echo "error: no strata binary at $STRATA; hint: cargo build --release, or set STRATA" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (RUN steps need it)" >&2; exit 1; }
ROOTFS=$WORK/rootfs
[ -x "$ROOTFS/bin/sh" ] || { echo "error: no Debian rootfs at $ROOTFS; hint: run benches/scripts/fleet-scenario.sh 1 --strata-only once" >&2; exit 1; }

T=$WORK/trace-overhead
rm -rf "$T" && mkdir -p "$T/base" "$T/app"
tar --sort=name --numeric-owner --mtime=@0 -C "$ROOTFS" -cf "$T/base/rootfs.tar" \
  --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* .
printf 'FROM scratch\nADD rootfs.tar /\n' > "$T/base/Dockerfile"
"$STRATA" --store "$T/base-store" build --progress plain -t base:1 \
  --output "type=oci,dest=$T/app/base" "$T/base" >/dev/null 2>"$T/base.log"
printf 'base\n' > "$T/app/.dockerignore"

now() { date +%s.%N; }
# One cold build of workload $1 with flags $2; prints seconds.
build() {
  local s="$T/store-$RANDOM"
  # Import the base (not timed): a build of the bare FROM.
  printf 'FROM oci-layout://base:1\n' > "$T/app/Dockerfile"
  "$STRATA" --store "$s" build --progress plain "$T/app" >/dev/null 2>&1
  printf 'FROM oci-layout://base:1\nRUN %s\n' "$WORKLOAD" > "$T/app/Dockerfile"
  local t0 t1
  t0=$(now)
  # shellcheck disable=SC2086
  "$STRATA" --store "$s" build --progress json $2 "$T/app" >/dev/null 2>"$T/last.log" ||
    { cat "$T/last.log" >&2; exit 1; }
  t1=$(now)
  rm -rf "$s"
  # The whole build, and the RUN's own part of it (its run-cost `command` phase, where the
  # tracer works, plus `readset`, where its observations are fingerprinted), in seconds.
  echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $(python3 "$HERE/run-cost.py" "$T/last.log" --sum command,readset)"
}

declare -A W=(
  [find-cat]='find / -xdev -type f | xargs cat > /dev/null'
  [dpkg]="dpkg -L \$(dpkg-query -W -f='\${Package} ') | sort -u | xargs -r stat -c %s > /dev/null 2>&1; true"
  [useradd]='mkdir -p /app && useradd -u 1000 app && chown -R app /app'
)
# Build: the whole cold build; RUN: the step's command and read-set phases (run-cost events),
# which is where tracing costs; best of R each.
printf '%-10s %9s %9s %7s %9s %9s %7s\n' workload "build t" "build u" ratio "RUN t" "RUN u" ratio
for w in find-cat dpkg useradd; do
  WORKLOAD=${W[$w]}
  best_t=999999; best_u=999999; run_t=999999; run_u=999999
  for _ in $(seq "$R"); do
    read -r t rt < <(build "$w" "")
    read -r u ru < <(build "$w" "--no-readset")
    best_t=$(python3 -c "print(min($best_t, $t))"); run_t=$(python3 -c "print(min($run_t, $rt))")
    best_u=$(python3 -c "print(min($best_u, $u))"); run_u=$(python3 -c "print(min($run_u, $ru))")
  done
  python3 -c "print(f'{\"$w\":<10} {$best_t:>9.3f} {$best_u:>9.3f} {$best_t / $best_u:>6.2f}x {$run_t:>9.3f} {$run_u:>9.3f} {$run_t / max($run_u, 1e-9):>6.2f}x')"
done
echo "(t: traced, the default; u: --no-readset. RUN: its run-cost command + readset phases.)"
[ -n "${KEEP:-}" ] || rm -rf "$T"
