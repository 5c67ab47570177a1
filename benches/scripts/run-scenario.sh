#!/usr/bin/env bash
# RUN-step overhead, strata vs `buildah bud --layers --isolation chroot`, measured in one run so
# the ratio is meaningful. The image: a busybox base from `FROM scratch` (COPY the static
# busybox, `busybox --install`), then N trivial RUN steps (`echo i > /fi`).
# Both tools first build the base alone in a fresh store (untimed, so both have it cached),
# then the full Dockerfile cold (the N RUN steps execute) and again (no-op: all cached).
# Per-step overhead = (cold time - N × the command run directly on the host) / N.
# Usage: benches/scripts/run-scenario.sh [WORKDIR] [N]   (as root or a user with subuids)
set -euo pipefail
work="${1:-/var/tmp/strata-run-bench}"
n="${2:-20}"
strata="${STRATA:-${CARGO_TARGET_DIR:-/var/tmp/strata-target}/release/strata}"
[ -x "$strata" ] || { echo "error: $strata not built (cargo build --release)" >&2; exit 1; }
command -v buildah > /dev/null || { echo "error: buildah not installed" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "error: /bin/busybox missing (package busybox-static)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/ctx"
cp /bin/busybox "$work/ctx/busybox"
base='FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]'
echo "$base" > "$work/ctx/Dockerfile.base"
{
    echo "$base"
    for i in $(seq 1 "$n"); do echo "RUN echo $i > /f$i"; done
} > "$work/ctx/Dockerfile"

now() { date +%s.%N; }
elapsed() { local s e; s=$(now); "$@" > /dev/null 2> "$work/last.err" || { cat "$work/last.err" >&2; exit 1; }; e=$(now); echo "$e - $s" | bc; }

buildah_() {
    buildah --root "$work/buildah-root" --runroot "$work/buildah-runroot" --storage-driver vfs \
        bud --layers --isolation chroot "$@"
}
strata_() { "$strata" --store "$work/strata-store" build --progress plain "$@"; }

# The commands themselves, run directly: what neither tool can avoid.
cmd_s=$(elapsed bash -c "for i in \$(seq 1 $n); do /bin/busybox sh -c \"echo \$i > $work/f\"; done")

strata_ -f "$work/ctx/Dockerfile.base" "$work/ctx" > /dev/null 2>&1
strata_cold=$(elapsed strata_ -f "$work/ctx/Dockerfile" "$work/ctx")
strata_noop=$(elapsed strata_ -f "$work/ctx/Dockerfile" "$work/ctx")

buildah_ -f "$work/ctx/Dockerfile.base" -t base "$work/ctx" > /dev/null 2>&1
buildah_cold=$(elapsed buildah_ -f "$work/ctx/Dockerfile" -t full "$work/ctx")
buildah_noop=$(elapsed buildah_ -f "$work/ctx/Dockerfile" -t full "$work/ctx")

per() { echo "scale=1; ($1 - $cmd_s) * 1000 / $n" | bc; }
s_step=$(per "$strata_cold"); b_step=$(per "$buildah_cold")
echo "RUN steps: $n, cores: $(nproc), user: $(id -un)"
echo "commands run directly     : ${cmd_s}s for all $n"
echo "strata  cold: ${strata_cold}s  per-step overhead ${s_step} ms   no-op rebuild ${strata_noop}s"
echo "buildah cold: ${buildah_cold}s  per-step overhead ${b_step} ms   no-op rebuild ${buildah_noop}s"
echo "ratio buildah/strata: per-step overhead $(echo "scale=2; $b_step / $s_step" | bc)x, no-op $(echo "scale=2; $buildah_noop / $strata_noop" | bc)x"
# buildah's vfs storage holds files of subordinate ids when rootless: remove it in its namespace.
buildah --root "$work/buildah-root" --runroot "$work/buildah-runroot" --storage-driver vfs \
    unshare rm -rf "$work/buildah-root" "$work/buildah-runroot" 2> /dev/null || true
rm -rf "$work"
