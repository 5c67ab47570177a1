#!/usr/bin/env bash
# Issue 7's workload, strata vs `buildah bud --layers`, measured in ONE run so the ratios mean
# something on a shared machine:
#   FROM a Debian bookworm minbase (debootstrap --variant=minbase, as an OCI layout made by umoci)
#   COPY of an ~800 MB / 50k-file tree (gen-context.py)
#   one RUN
# Scenarios: cold, no-op, one-file change (one line appended to one file of the tree); wall time
# and peak RSS of each (GNU time), plus `tar | gzip -6 | sha256sum` over the same bytes (the base
# rootfs and the tree): the practical limit of a single-stream builder.
# Targets (issue 7): cold >= 5x, no-op >= 40x (and <= 0.3 s), one-file change >= 15x faster than
# buildah; strata's peak RSS < 150 MB.
# Usage: benches/scripts/workload-scenario.sh [WORKDIR] [FILES] [MB]
# Needs: debootstrap, umoci, buildah, GNU time (.ci/install-deps), root, network to a Debian mirror
# for the first run (the base is cached in WORKDIR/rootfs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-/var/tmp/strata-workload}"
files="${2:-50000}"
mb="${3:-800}"
strata="${STRATA:-${CARGO_TARGET_DIR:-/var/tmp/strata-target}/release/strata}"
strata="$(readlink -f "$strata")"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
# One run at a time per work dir: two would edit the same context file and share stores.
exec 9> "$work/.scenario.lock"
flock -n 9 || { echo "another workload-scenario.sh is running on $work" >&2; exit 1; }

# The base: Debian minbase, made once.
if [ ! -f "$work/rootfs/.done" ]; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1
  touch "$work/rootfs/.done"
fi
ctx="$work/ctx"
if [ ! -f "$ctx/.done" ]; then
  rm -rf "$ctx"
  mkdir -p "$ctx"
  # The tree: shared with context-scenario.sh's generated context when present (copied: the
  # one-file change edits it).
  gen="$(dirname "$work")/strata-bench/ctx-$files-$mb"
  [ -d "$gen/tree" ] || python3 "$here/gen-context.py" "$gen" --files "$files" --mb "$mb"
  cp -a "$gen/tree" "$ctx/tree"
  tar --numeric-owner --exclude=./.done -C "$work/rootfs" -cf "$work/base.tar" .
  umoci init --layout "$ctx/base"
  umoci new --image "$ctx/base:bookworm"
  umoci raw add-layer --image "$ctx/base:bookworm" "$work/base.tar"
  rm "$work/base.tar"
  touch "$ctx/.done"
fi
cat > "$ctx/Dockerfile" <<'EOF'
FROM oci-layout://base:bookworm
COPY tree/ /data/
RUN du -s /data > /data-size.txt
EOF
printf 'base\n.done\n' > "$ctx/.dockerignore"
sed 's|oci-layout://|oci:|' "$ctx/Dockerfile" > "$ctx/Dockerfile.buildah"

one=$(find "$ctx/tree" -type f -name '*.txt' | sort | sed -n 100p)
cp -p "$one" "$work/one.bak"
restore() { cp -p "$work/one.bak" "$one"; }
trap restore EXIT
# Every input either builder reads: the tree, the base as an OCI layout (both import it) and
# the base rootfs (the tar limit reads it). Without the layout, whoever ran first read it from
# disk (up to 7 s on a slow disk) and the other found it cached.
cat_all() { find "$ctx" "$work/rootfs" -type f -print0 | xargs -0 cat > /dev/null; }

# measure NAME CMD...: wall seconds and peak RSS (KB) into $work/NAME.time
measure() {
  local name="$1"; shift
  if ! /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err"; then
    echo "$name failed:" >&2; tail -20 "$work/$name.err" >&2; exit 1
  fi
}
wall() { awk '{print $1}' "$work/$1.time"; }
rss_mb() { awk '{printf "%d", $2 / 1024}' "$work/$1.time"; }

# Remove both contenders' old state first, then let the file system settle. On ext4 without a
# journal (these machines' root fs), the inode allocator skips inodes freed in the last 60 s,
# or 360 s once their inode-table block is dirty again — and the first file created in a block
# dirties it — and each skip costs a buffer lookup (fs/ext4/ialloc.c, recently_deleted:
# RECENTCY_MIN 60 + RECENTCY_DIRTY 300 since Linux 5.7): creating 50k files right after
# deleting a 1M-inode store cost up to half of a cold build's CPU, for whichever builder ran
# next (strata, which runs first). The default wait, 400 s, covers the 360 s; SETTLE=0 skips
# it (the figures then include that penalty).
bstore="$work/buildah"
B=(buildah --root "$bstore/root" --runroot "$bstore/runroot" --storage-driver overlay)
"${B[@]}" rm --all > /dev/null 2>&1 || true
"${B[@]}" rmi --all --force > /dev/null 2>&1 || true
rm -rf "$bstore" "$work/store"
sync
sleep "${SETTLE:-400}"

cat_all  # warm the page cache for every contender
measure tar bash -c "tar --sort=name -C '$work/rootfs' -cf - . | cat - <(tar --sort=name -C '$ctx' -cf - tree) | gzip -6 | sha256sum"

# strata
S=("$strata" --store "$work/store" build --progress plain "$ctx")
measure strata-cold "${S[@]}"
measure strata-noop "${S[@]}"
echo "one more line" >> "$one"
measure strata-one "${S[@]}"
restore

# buildah (its own storage; overlay)
BB=(bash -c "cd '$ctx' && exec ${B[*]} bud --layers --isolation chroot --quiet -f Dockerfile.buildah -t workload .")
measure buildah-cold "${BB[@]}"
measure buildah-noop "${BB[@]}"
echo "one more line" >> "$one"
measure buildah-one "${BB[@]}"
restore

# Two decimals, rounded (bc's scale=1 truncated: 5.09 printed as 5.0, 4.96 as 4.9).
ratio() { printf '%.2f' "$(echo "scale=4; $(wall "$1") / $(wall "$2")" | bc)"; }
base_mb=$(du -sm --exclude=.done "$work/rootfs" | cut -f1)
echo "workload: debian bookworm minbase (${base_mb} MB) + COPY ${files} files / ${mb} MB + one RUN; cores=$(nproc)"
printf '%-34s %9s %9s %9s\n' "" "strata s" "buildah s" "speedup"
for s in cold noop one; do
  printf '%-34s %9s %9s %8sx\n' "$s" "$(wall strata-$s)" "$(wall buildah-$s)" "$(ratio buildah-$s strata-$s)"
done
echo "peak RSS MB   strata: cold $(rss_mb strata-cold), no-op $(rss_mb strata-noop), one-file $(rss_mb strata-one);" \
     "buildah: cold $(rss_mb buildah-cold), no-op $(rss_mb buildah-noop), one-file $(rss_mb buildah-one)"
echo "tar|gzip -6|sha256sum over base+tree: $(wall tar)s; strata cold = $(ratio tar strata-cold)x of that speed"
echo "targets: cold >= 5x, no-op >= 40x and <= 0.3 s, one-file >= 15x, strata peak RSS < 150 MB"
