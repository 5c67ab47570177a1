#!/usr/bin/env bash
# One slow stage beside a chain of quick ones (issue 19's scheduler): on a busybox stage, a stage
# whose RUN sleeps 3 s, and three stages each on the one before whose RUN sleeps 1 s; the final
# stage copies from all. Built with -j 2 into a store holding only the busybox stage. Scheduled
# in waves by depth, each wave waits for its slowest stage (3 + 1 + 1 s of sleeping); scheduled
# per vertex, the chain runs beside the slow stage (3 s).
#   benches/scripts/slow-stage-scenario.sh [STRATA...]   (default: the release build)
set -euo pipefail
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(/var/tmp/strata-target/release/strata)
work="$(mktemp -d /var/tmp/strata-slow-stage.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/ctx"
cp /bin/busybox "$work/ctx/"
cat > "$work/ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /usr/bin /tmp && /bin/busybox --install -s"]
FROM base AS slow
RUN sleep 3 && echo slow > /slow
FROM base AS quick1
RUN sleep 1 && echo 1 > /q1
FROM quick1 AS quick2
RUN sleep 1 && echo 2 > /q2
FROM quick2 AS quick3
RUN sleep 1 && echo 3 > /q3
FROM scratch
COPY --from=slow /slow /slow
COPY --from=quick1 /q1 /q1
COPY --from=quick2 /q2 /q2
COPY --from=quick3 /q3 /q3
DOCKERFILE
for b in "${bins[@]}"; do
  for round in 1 2 3; do
    rm -rf "$work/store"
    # The base stage first (cached), so only the four stages are timed.
    "$b" --store "$work/store" build --target base "$work/ctx" > /dev/null 2>&1
    start=$(date +%s.%N)
    "$b" --store "$work/store" build -j 2 "$work/ctx" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$b round $round: $(echo "$end - $start" | bc) s"
  done
done
