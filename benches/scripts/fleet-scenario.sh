#!/usr/bin/env bash
# Fleet benchmark: N apps over one Debian-minbase base; cold build, no-op rebuild and rebuild
# after a base patch, with `strata build --all` and with a loop of `buildah bud --layers` over
# the same fleet, in one run. Prints the figures and the ratios (buildah / strata).
#
#   benches/scripts/fleet-scenario.sh N [--strata-only]
#
# Needs root (RUN steps), debootstrap (apt-get install debootstrap; it downloads ~40 MB of
# packages from deb.debian.org once), buildah, python3. Environment:
#   STRATA   the strata binary (default: $CARGO_TARGET_DIR/release/strata, or target/release/strata)
#   WORK     scratch directory (default /var/tmp/strata-fleet-bench); the rootfs is kept there
#            between runs, everything else is rebuilt.
#
# The base patch is a new Debian point release in miniature: the patched base is the same
# rootfs with changed files in /usr/lib and /etc (one new base layer of the full size), exported
# to the same OCI layout tag, so every image must stand on the new layer.
set -euo pipefail
N=${1:?usage: fleet-scenario.sh N [--strata-only]}
STRATA_ONLY=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/strata-fleet-bench}
STRATA=${STRATA:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/strata}
[ -x "$STRATA" ] || { echo "error: no strata binary at $STRATA; hint: cargo build --release, or set STRATA" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (RUN steps and buildah need it)" >&2; exit 1; }

mkdir -p "$WORK"
ROOTFS=$WORK/rootfs
if [ ! -x "$ROOTFS/bin/sh" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap not found; hint: apt-get install debootstrap" >&2; exit 1; }
  debootstrap --variant=minbase bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1
  rm -rf "$ROOTFS.tmp/var/cache/apt/archives/"*.deb "$ROOTFS.tmp/var/lib/apt/lists/"*
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# The two bases, as rootfs tarballs (deterministic order, numeric owners).
mk_tar() { # DIR OUT
  tar --sort=name --numeric-owner --mtime=@0 -C "$1" -cf "$2" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* .
}
rm -rf "$WORK/run" && mkdir -p "$WORK/run"
R=$WORK/run
mkdir -p "$R/base1" "$R/base2"
mk_tar "$ROOTFS" "$R/base1/rootfs.tar"
# Patched: copy the rootfs (reflink/hardlink would alias), change a library and os files.
rm -rf "$WORK/rootfs2" && cp -a "$ROOTFS" "$WORK/rootfs2"
echo "12.99-patched" > "$WORK/rootfs2/etc/debian_version"
lib=$(ls "$WORK"/rootfs2/usr/lib/x86_64-linux-gnu/libz.so.1.* 2>/dev/null | head -1 || true)
[ -n "$lib" ] && printf 'patched' >> "$lib"
mk_tar "$WORK/rootfs2" "$R/base2/rootfs.tar"
for b in base1 base2; do printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' > "$R/$b/Dockerfile"; done
du -sh "$R/base1/rootfs.tar" | awk '{print "base rootfs tar: " $1}'

# The fleet, and the base as tag 1 of FLEET/base (moved to the patched image later).
python3 "$HERE/gen-fleet.py" "$R/fleet" --apps "$N" --run 'useradd -u 1000 app && chown -R app /app'
BASE_STORE=$R/base-store
export_base() { # base1|base2
  "$STRATA" --store "$BASE_STORE" build --progress plain -t base:1 --output "type=oci,dest=$R/fleet/base" "$R/$1" >/dev/null 2>"$R/base-build.log"
  python3 "$HERE/gen-fleet.py" "$R/fleet" --link-base
}
export_base base1

S=$R/strata-store
strata_all() {
  (cd "$R/fleet" && "$STRATA" --store "$S" build --all --progress plain --report json "$R/report-$1.json" >/dev/null 2>"$R/strata-$1.log")
}
summary() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['images']; print(f'{len(r)} images, executed {sum(i[\"executed\"] for i in r)}, cached {sum(i[\"cached\"] for i in r)}, changed {sum(1 for i in r if i[\"changed\"])}')" "$1"; }

t0=$(now); strata_all cold; t1=$(now); ST_COLD=$(secs "$t0" "$t1")
echo "strata cold:       ${ST_COLD}s  ($(summary "$R/report-cold.json"))"
t0=$(now); strata_all noop; t1=$(now); ST_NOOP=$(secs "$t0" "$t1")
echo "strata no-op:      ${ST_NOOP}s  ($(summary "$R/report-noop.json"))"

# Base patch: the tag moves to the patched image (exporting it is not timed: the base team did it).
# strata.lock pins the old base until `strata lock --update` (timed: it is part of the rebuild).
export_base base2
t0=$(now)
(cd "$R/fleet" && "$STRATA" --store "$S" lock --all --update >"$R/lock-update.txt" 2>/dev/null)
strata_all patch; t1=$(now); ST_PATCH=$(secs "$t0" "$t1")
echo "strata lock --update: $(cat "$R/lock-update.txt")"
echo "strata base patch: ${ST_PATCH}s  ($(summary "$R/report-patch.json"))"

# Bit-identical to a from-scratch build against the new base (fresh store), checked every run.
S_FRESH=$R/strata-fresh
(cd "$R/fleet" && "$STRATA" --store "$S_FRESH" build --all --progress plain >"$R/fresh.digests" 2>/dev/null)
(cd "$R/fleet" && "$STRATA" --store "$S" build --all --progress plain >"$R/patched.digests" 2>/dev/null)
if cmp -s "$R/fresh.digests" "$R/patched.digests"; then echo "strata base-patch digests == from-scratch digests: yes"; else echo "strata base-patch digests == from-scratch digests: NO"; exit 1; fi
rm -rf "$S_FRESH"

if [ "$STRATA_ONLY" = "--strata-only" ]; then exit 0; fi

# buildah: its own storage, overlay, chroot isolation, --layers; one `buildah bud` per app.
export_base base1
BROOT=$R/buildah-root; BRUN=$R/buildah-runroot
B=(buildah --root "$BROOT" --runroot "$BRUN" --storage-driver overlay)
for d in "$R"/fleet/apps/*/; do
  sed 's|^FROM .*|FROM localhost/fleet-base:1|' "$d/Dockerfile" > "$d/Dockerfile.buildah"
done
buildah_loop() {
  for d in "$R"/fleet/apps/*/; do
    "${B[@]}" bud --layers --isolation chroot -q -f "$d/Dockerfile.buildah" -t "localhost/$(basename "$d"):latest" "$d" >/dev/null
  done
}
pull_base_tagged() {
  id=$("${B[@]}" pull -q "oci:$R/fleet/base:1")
  "${B[@]}" tag "$id" localhost/fleet-base:1
}
t0=$(now); pull_base_tagged; buildah_loop; t1=$(now); BU_COLD=$(secs "$t0" "$t1")
echo "buildah cold:       ${BU_COLD}s"
t0=$(now); buildah_loop; t1=$(now); BU_NOOP=$(secs "$t0" "$t1")
echo "buildah no-op:      ${BU_NOOP}s"
export_base base2
t0=$(now); pull_base_tagged; buildah_loop; t1=$(now); BU_PATCH=$(secs "$t0" "$t1")
echo "buildah base patch: ${BU_PATCH}s"

python3 - "$N" "$ST_COLD" "$ST_NOOP" "$ST_PATCH" "$BU_COLD" "$BU_NOOP" "$BU_PATCH" <<'EOF'
import sys
n, sc, sn, sp, bc, bn, bp = sys.argv[1], *map(float, sys.argv[2:])
print(f"\nN={n}            strata    buildah   buildah/strata")
for name, s, b in [("cold", sc, bc), ("no-op", sn, bn), ("base patch", sp, bp)]:
    print(f"{name:<12} {s:>8.2f}s {b:>8.2f}s {b / s:>10.1f}x")
EOF
"${B[@]}" rm -a >/dev/null 2>&1 || true
"${B[@]}" rmi -a -f >/dev/null 2>&1 || true
rm -rf "$BROOT" "$S" "$WORK/rootfs2"
