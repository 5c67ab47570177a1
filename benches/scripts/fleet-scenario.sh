#!/usr/bin/env bash
# Fleet benchmark: N apps over one Debian-minbase base; cold build, no-op rebuild and rebuild
# after a base patch, with `strata build --all` and, in the same run, with two peers over the
# same fleet: BuildKit (a `docker build` loop against a private dockerd with BuildKit enabled)
# and a `buildah bud --layers` loop. Prints the figures and the ratios (peer / strata).
#
#   benches/scripts/fleet-scenario.sh N [--strata-only]
#
# Needs root (RUN steps, dockerd, buildah), debootstrap (apt-get install debootstrap; it
# downloads ~40 MB of packages from deb.debian.org once), python3, and for the peers: Debian's
# docker.io (dockerd and its client, whose `docker build` talks to the daemon's BuildKit) and
# skopeo (BuildKit), buildah (buildah). Environment:
#   STRATA   the strata binary (default: $CARGO_TARGET_DIR/release/strata, or target/release/strata)
#   WORK     scratch directory (default /var/tmp/strata-fleet-bench); the rootfs is kept there
#            between runs, everything else is rebuilt.
#   PATCH    which base patch(es) to time: unobserved (default), observed, or both (applied one
#            after the other: base1 -> unobserved -> observed, each rebuild timed):
#              unobserved  a new Debian point release in miniature: a new /etc/debian_version, a
#                          changed libz and one new file under /etc, none of which a RUN reads;
#              observed    one new line in /etc/passwd (a system user), which every RUN
#                          (`useradd ... && chown ...`) reads.
#            Either way the patched base is one new base layer of the full size, exported to the
#            same OCI layout tag, so every image must stand on the new layer.
#   BASE     where the apps' base lives: layout (default; FROM oci-layout://base:1) or registry
#            (FROM 127.0.0.1:PORT/fleet/base:1 on a private docker-registry this script runs;
#            each base is pushed there with skopeo, untimed; the peers pull it, timed)
#   REPEAT   times each strata patch rebuild this many times, each from a copy of the store as
#            it was before it, and reports the fastest (default 1)
#   SETTLE   seconds to wait after clearing the previous run, before anything is timed (default 0).
#            On ext4 the inode allocator skips inodes freed in the last 60 s, or 360 s once their
#            inode-table block is dirty again (fs/ext4/ialloc.c, recently_deleted), and each skip
#            costs a buffer lookup: right after a run's stores, registry and peer storage were
#            deleted, strata's cold build here took 4.1 s instead of 2.8 s. SETTLE=400 covers it.
#   STRATA_BUILD_FLAGS  extra flags for every timed `strata build --all` (e.g. --no-readset)
#   PEERS    peers to compare against (default "buildkit buildah"); --strata-only means none.
#   DOCKERD  dockerd binary (default /usr/sbin/dockerd)
#   DOCKER   docker client with BuildKit support (default /usr/bin/docker, Debian's: a docker
#            elsewhere on PATH may be a build without it)
#
# The private dockerd (--bridge=none, no iptables, its own data root, exec root, pid file and
# socket under $WORK/docker) is stopped and its data root removed at the end, also on error.
set -euo pipefail
N=${1:?usage: fleet-scenario.sh N [--strata-only]}
case "$N" in '' | *[!0-9]*) echo "error: N must be a number of apps, got '$N'" >&2; exit 1 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/strata-fleet-bench}
STRATA=${STRATA:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/strata}
PATCH=${PATCH:-unobserved}
BASE=${BASE:-layout}
case "$BASE" in layout | registry) ;; *) echo "error: BASE must be layout or registry, got '$BASE'" >&2; exit 1 ;; esac
REPEAT=${REPEAT:-1}
case "$REPEAT" in '' | *[!0-9]* | 0) echo "error: REPEAT must be a number >= 1, got '$REPEAT'" >&2; exit 1 ;; esac
PEERS=${PEERS-buildkit buildah}
DOCKERD=${DOCKERD:-/usr/sbin/dockerd}
DOCKER=${DOCKER:-/usr/bin/docker}
case "${2:-}" in
  '') ;;
  --strata-only) PEERS= ;;
  *) echo "error: unknown argument '$2'; usage: fleet-scenario.sh N [--strata-only]" >&2; exit 1 ;;
esac
case "$PATCH" in
  unobserved | observed) PATCHES=("$PATCH") ;;
  both) PATCHES=(unobserved observed) ;;
  *) echo "error: PATCH must be unobserved, observed or both, got '$PATCH'" >&2; exit 1 ;;
esac

# Every prerequisite is checked before anything is timed, so a missing peer fails in seconds.
if [ "$BASE" = registry ]; then
  command -v docker-registry >/dev/null || { echo "error: docker-registry not found; hint: apt-get install docker-registry" >&2; exit 1; }
  command -v skopeo >/dev/null || { echo "error: skopeo not found (it pushes the base); hint: apt-get install skopeo" >&2; exit 1; }
fi
[ -x "$STRATA" ] || { echo "error: no strata binary at $STRATA; hint: cargo build --release, or set STRATA" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "error: run as root (RUN steps, dockerd and buildah need it)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 not found; hint: apt-get install python3" >&2; exit 1; }
for p in $PEERS; do
  case "$p" in
    buildkit)
      [ -x "$DOCKERD" ] || { echo "error: no dockerd at $DOCKERD; hint: apt-get install docker.io, or set DOCKERD" >&2; exit 1; }
      [ -x "$DOCKER" ] || { echo "error: no docker client at $DOCKER; hint: apt-get install docker.io, or set DOCKER" >&2; exit 1; }
      command -v skopeo >/dev/null || { echo "error: skopeo not found (it loads the base into dockerd); hint: apt-get install skopeo" >&2; exit 1; }
      ;;
    buildah)
      command -v buildah >/dev/null || { echo "error: buildah not found; hint: apt-get install buildah, or PEERS=buildkit" >&2; exit 1; }
      ;;
    *) echo "error: unknown peer '$p' in PEERS (known: buildkit buildah)" >&2; exit 1 ;;
  esac
done

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

# The private dockerd (BuildKit peer). Its state lives under $DK, stopped and removed on exit.
DK=$WORK/docker
DSOCK=$DK/docker.sock
DOCKERD_PID=
dockerd_stop() {
  [ -n "$DOCKERD_PID" ] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    echo "warning: dockerd did not stop in 30s; killing it" >&2
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    # Its managed containerd outlives a killed dockerd.
    cpid=$(cat "$DK/exec/containerd/containerd.pid" 2>/dev/null || true)
    [ -n "$cpid" ] && kill -TERM "$cpid" 2>/dev/null || true
  fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
  cp "$DK/dockerd.log" "$WORK/run/dockerd.log" 2>/dev/null || true
  dk_remove
}
dk_remove() { # A daemon that died uncleanly leaves its overlay mounts under the data root.
  awk -v dk="$DK/" 'index($2, dk) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l || true
  rm -rf "$DK"
}
dockerd_start() {
  if [ -f "$DK/dockerd.pid" ] && kill -0 "$(cat "$DK/dockerd.pid")" 2>/dev/null; then
    echo "error: a dockerd from an earlier run is still running (pid $(cat "$DK/dockerd.pid"), socket $DSOCK); hint: stop it, then remove $DK" >&2
    exit 1
  fi
  dk_remove && mkdir -p "$DK"
  "$DOCKERD" --bridge=none --iptables=false --ip6tables=false \
    --data-root "$DK/data" --exec-root "$DK/exec" --pidfile "$DK/dockerd.pid" \
    --host "unix://$DSOCK" >"$DK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 120); do
    "$DOCKER" -H "unix://$DSOCK" info >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "error: dockerd did not come up (log kept in $WORK/run/dockerd.log):" >&2
  tail -5 "$DK/dockerd.log" >&2 || true
  exit 1
}
REGISTRY_PID=
on_exit() {
  rc=$?
  dockerd_stop
  [ -z "$REGISTRY_PID" ] || kill "$REGISTRY_PID" 2>/dev/null || true
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# The bases, as rootfs tarballs (deterministic order, numeric owners): base1, then one per patch,
# each patch applied on top of the previous base.
mk_tar() { # DIR OUT
  tar --sort=name --numeric-owner --mtime=@0 -C "$1" -cf "$2" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* .
}
patch_unobserved() { # ROOTFS
  echo "12.99-patched" > "$1/etc/debian_version"
  lib=$(ls "$1"/usr/lib/x86_64-linux-gnu/libz.so.1.* 2>/dev/null | head -1 || true)
  [ -n "$lib" ] && printf 'patched' >> "$lib"
  printf 'fleet base patch 12.99\n' > "$1/etc/fleet-base-patch"
}
patch_observed() { # ROOTFS
  echo 'fleetsvc:x:999:65534:fleet service:/nonexistent:/usr/sbin/nologin' >> "$1/etc/passwd"
}
rm -rf "$WORK/run" && mkdir -p "$WORK/run"
if [ "${SETTLE:-0}" -gt 0 ]; then
  echo "settling ${SETTLE}s (SETTLE) after clearing the previous run"
  sync
  sleep "$SETTLE"
fi
R=$WORK/run
mkdir -p "$R/base1"
mk_tar "$ROOTFS" "$R/base1/rootfs.tar"
prev=$ROOTFS
BASES=(base1)
for p in "${PATCHES[@]}"; do
  b=base$((${#BASES[@]} + 1))
  # Copy the rootfs (reflink/hardlink would alias), patch it, tar it.
  rm -rf "$WORK/rootfs-$b" && cp -a "$prev" "$WORK/rootfs-$b"
  "patch_$p" "$WORK/rootfs-$b"
  mkdir -p "$R/$b" && mk_tar "$WORK/rootfs-$b" "$R/$b/rootfs.tar"
  [ "$prev" = "$ROOTFS" ] || rm -rf "$prev"
  prev=$WORK/rootfs-$b
  BASES+=("$b")
done
[ "$prev" = "$ROOTFS" ] || rm -rf "$prev"
rm -rf "$WORK/rootfs2" # left by earlier versions of this script
for b in "${BASES[@]}"; do printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' > "$R/$b/Dockerfile"; done
du -sh "$R/base1/rootfs.tar" | awk '{print "base rootfs tar: " $1}'
echo "patches: ${PATCHES[*]}"

# BASE=registry: a private docker-registry on a free loopback port (stopped on exit).
FROM_REF=oci-layout://base:1
if [ "$BASE" = registry ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG=127.0.0.1:$port
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
    "$R/registry" "$REG" > "$R/registry.yml"
  docker-registry serve "$R/registry.yml" > "$R/registry.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 100); do python3 -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/')" 2>/dev/null && break; sleep 0.1; done
  FROM_REF=$REG/fleet/base:1
  echo "base: $FROM_REF (docker-registry)"
fi

# The fleet, and the base as tag 1 of FLEET/base (moved to the patched image later).
python3 "$HERE/gen-fleet.py" "$R/fleet" --apps "$N" --base "$FROM_REF" --run 'useradd -u 1000 app && chown -R app /app'
BASE_STORE=$R/base-store
export_base() { # base1|base2|...
  "$STRATA" --store "$BASE_STORE" build --progress plain -t base:1 --output "type=oci,dest=$R/fleet/base" "$R/$1" >/dev/null 2>"$R/base-build.log"
  python3 "$HERE/gen-fleet.py" "$R/fleet" --link-base
  if [ "$BASE" = registry ]; then
    skopeo copy -q --dest-tls-verify=false "oci:$R/fleet/base:1" "docker://$FROM_REF" >/dev/null
  fi
}
export_base base1

# Results, one `key=seconds` per line (key: tool.phase), for the final table.
RESULTS=$R/results.txt
: >"$RESULTS"
record() { echo "$1=$2" >>"$RESULTS"; }

S=$R/strata-store
# STRATA_BUILD_FLAGS (word-split) go to every timed strata build, e.g. --no-readset to time
# strata without read-set reuse.
read -r -a SFLAGS <<<"${STRATA_BUILD_FLAGS:-}"
strata_all() {
  (cd "$R/fleet" && "$STRATA" --store "$S" build --all --progress json ${SFLAGS[@]+"${SFLAGS[@]}"} --report json "$R/report-$1.json" >/dev/null 2>"$R/strata-$1.log") ||
    { echo "error: strata build --all ($1) failed; see $R/strata-$1.log" >&2; exit 1; }
}
# Where an executed RUN's time went (the `run-cost` events of `--progress json`): the mean per
# RUN of each phase, in ms; nothing when no RUN ran (or the binary has no such events).
run_cost() { python3 "$HERE/run-cost.py" "$1"; } # LOG
# The oracle is a from-scratch build in a fresh store with no read-set reuse at all (when the
# binary has --no-readset), so a wrong reuse cannot hide in both builds.
ORACLE_FLAGS=()
case "$("$STRATA" build --help 2>/dev/null || true)" in *--no-readset*) ORACLE_FLAGS=(--no-readset) ;; esac
summary() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["images"]
count = lambda k: sum(i.get(k, 0) for i in r) if all(k in i for i in r) else "?"
print(f"{len(r)} images, executed {count('executed')}, cached {count('cached')}, "
      f"reused {count('reused')}, changed {sum(1 for i in r if i['changed'])}")
EOF
}

echo "strata: $("$STRATA" --version 2>/dev/null || echo "$STRATA")${SFLAGS[*]:+ (build flags: ${SFLAGS[*]})}"
t0=$(now); strata_all cold; t1=$(now); T=$(secs "$t0" "$t1"); record strata.cold "$T"
echo "strata cold:       ${T}s  ($(summary "$R/report-cold.json"))"
run_cost "$R/strata-cold.log"
t0=$(now); strata_all noop; t1=$(now); T=$(secs "$t0" "$t1"); record strata.noop "$T"
echo "strata no-op:      ${T}s  ($(summary "$R/report-noop.json"))"

# Base patch: the tag moves to the patched image (exporting it is not timed: the base team did it).
# strata.lock pins the old base until `strata lock --update` (timed: it is part of the rebuild).
# Each patched rebuild is checked bit-identical to a from-scratch build against the same base.
for k in "${!PATCHES[@]}"; do
  p=${PATCHES[$k]}
  export_base "${BASES[$((k + 1))]}"
  # REPEAT > 1: the same rebuild again from a copy of the store as it was before it, keeping
  # the fastest (noisy machines; each attempt's time is printed).
  # The workspace lock too: `lock --update` rewrites it, and each attempt must start from the old pins.
  # A used store is moved aside, not deleted (the next run's clean-up deletes it): freeing
  # thousands of inodes just before a timed build slows its file creation on ext4 (SETTLE).
  [ "$REPEAT" -gt 1 ] && { rm -rf "$R/prepatch-store"; cp -a "$S" "$R/prepatch-store"; cp "$R/fleet/strata.lock" "$R/prepatch.lock"; }
  T=
  for attempt in $(seq "$REPEAT"); do
    if [ "$attempt" -gt 1 ]; then mv "$S" "$R/used-store-$p-$attempt" && cp -a "$R/prepatch-store" "$S" && cp "$R/prepatch.lock" "$R/fleet/strata.lock"; fi
    t0=$(now)
    (cd "$R/fleet" && "$STRATA" --store "$S" lock --all --update >"$R/lock-update-$p.txt" 2>/dev/null)
    strata_all "patch-$p"; t1=$(now); Ti=$(secs "$t0" "$t1")
    [ "$REPEAT" -gt 1 ] && echo "strata patch ($p) attempt $attempt: ${Ti}s"
    T=$(python3 -c "import sys; v=[float(x) for x in sys.argv[1:] if x]; print(f'{min(v):.2f}')" $T "$Ti")
  done
  [ ! -d "$R/prepatch-store" ] || mv "$R/prepatch-store" "$R/used-store-$p-0"
  rm -f "$R/prepatch.lock"
  record "strata.patch-$p" "$T"
  echo "strata lock --update: $(cat "$R/lock-update-$p.txt")"
  echo "strata patch ($p): ${T}s  ($(summary "$R/report-patch-$p.json"))"
  run_cost "$R/strata-patch-$p.log"
  S_FRESH=$R/strata-fresh
  rm -rf "$S_FRESH"
  (cd "$R/fleet" && "$STRATA" --store "$S_FRESH" build --all --progress plain ${ORACLE_FLAGS[@]+"${ORACLE_FLAGS[@]}"} >"$R/fresh-$p.digests" 2>/dev/null)
  (cd "$R/fleet" && "$STRATA" --store "$S" build --all --progress plain >"$R/patched-$p.digests" 2>/dev/null)
  if cmp -s "$R/fresh-$p.digests" "$R/patched-$p.digests"; then
    echo "strata patch ($p) digests == from-scratch digests: yes"
  else
    echo "strata patch ($p) digests == from-scratch digests: NO (see $R/fresh-$p.digests, $R/patched-$p.digests)"
    exit 1
  fi
  rm -rf "$S_FRESH"
done

# Peer dockerfiles: the same steps over the base loaded into the peer's own image store.
for d in "$R"/fleet/apps/*/; do
  sed 's|^FROM .*|FROM localhost/fleet-base:1|' "$d/Dockerfile" > "$d/Dockerfile.buildah"
  sed 's|^FROM .*|FROM fleet-base:1|' "$d/Dockerfile" > "$d/Dockerfile.docker"
done

# Runs one peer: cold (loading the base included), no-op, then each patch (loading the new base
# included, as buildah's pull and strata's lock --update are). PEER_LOAD and PEER_LOOP are set
# by the caller.
run_peer() { # NAME
  export_base base1
  t0=$(now); $PEER_LOAD; $PEER_LOOP; t1=$(now); T=$(secs "$t0" "$t1"); record "$1.cold" "$T"
  printf '%-9s cold:       %ss\n' "$1" "$T"
  t0=$(now); $PEER_LOOP; t1=$(now); T=$(secs "$t0" "$t1"); record "$1.noop" "$T"
  printf '%-9s no-op:      %ss\n' "$1" "$T"
  for k in "${!PATCHES[@]}"; do
    export_base "${BASES[$((k + 1))]}"
    t0=$(now); $PEER_LOAD; $PEER_LOOP; t1=$(now); T=$(secs "$t0" "$t1"); record "$1.patch-${PATCHES[$k]}" "$T"
    printf '%-9s patch (%s): %ss\n' "$1" "${PATCHES[$k]}" "$T"
  done
}

# BuildKit: a private dockerd (overlay2, no network), one `docker build` per app; the base is
# copied from the OCI layout into the daemon by skopeo.
D=("$DOCKER" -H "unix://$DSOCK")
buildkit_load() {
  if [ "$BASE" = registry ]; then # dockerd reaches a loopback registry over plain HTTP
    "${D[@]}" pull -q "$FROM_REF" >/dev/null && "${D[@]}" tag "$FROM_REF" fleet-base:1
  else
    skopeo copy -q --dest-daemon-host "unix://$DSOCK" "oci:$R/fleet/base:1" docker-daemon:fleet-base:1 >/dev/null
  fi
}
buildkit_loop() {
  for d in "$R"/fleet/apps/*/; do
    DOCKER_BUILDKIT=1 "${D[@]}" build --network none -q -f "$d/Dockerfile.docker" -t "$(basename "$d"):latest" "$d" >/dev/null ||
      { echo "error: docker build of $d failed (dockerd log: $R/dockerd.log)" >&2; exit 1; }
  done
}

# buildah: its own storage, overlay, chroot isolation, --layers; one `buildah bud` per app.
BROOT=$R/buildah-root; BRUN=$R/buildah-runroot
B=(buildah --root "$BROOT" --runroot "$BRUN" --storage-driver overlay)
buildah_load() {
  if [ "$BASE" = registry ]; then
    # (--policy always: buildah pull keeps a name it has by default, whatever the registry says)
    id=$("${B[@]}" pull -q --policy always --tls-verify=false "docker://$FROM_REF")
  else
    id=$("${B[@]}" pull -q "oci:$R/fleet/base:1")
  fi
  "${B[@]}" tag "$id" localhost/fleet-base:1
}
buildah_loop() {
  for d in "$R"/fleet/apps/*/; do
    "${B[@]}" bud --layers --isolation chroot -q -f "$d/Dockerfile.buildah" -t "localhost/$(basename "$d"):latest" "$d" >/dev/null ||
      { echo "error: buildah bud of $d failed" >&2; exit 1; }
  done
}

VERSIONS=()
# BuildKit probes the binfmt_misc emulators on every build: with QEMU's handlers enabled
# (qemu-user-static, as .ci/install-deps sets up for multi-platform tests) each `docker build`
# took ~0.2 s more here (0.26 s against 0.05 s for a cached one), a third of its no-op time.
case " $PEERS " in
  *" buildkit "*)
    if [ "$(cat /proc/sys/fs/binfmt_misc/status 2>/dev/null)" = enabled ] &&
      ls /proc/sys/fs/binfmt_misc/ 2>/dev/null | grep -q '^qemu-'; then
      echo "note: binfmt_misc handlers are enabled: BuildKit probes them on every build (~0.2 s each here)." \
        "For its figure without them: echo 0 > /proc/sys/fs/binfmt_misc/status (echo 1 after)"
    fi
    ;;
esac
for peer in $PEERS; do
  case "$peer" in
    buildkit)
      VERSIONS+=("dockerd: $("$DOCKERD" --version 2>&1 || echo "unknown ($DOCKERD --version failed)")")
      echo "${VERSIONS[-1]} (BuildKit via $DOCKER build, DOCKER_BUILDKIT=1)"
      dockerd_start
      PEER_LOAD=buildkit_load PEER_LOOP=buildkit_loop run_peer buildkit
      dockerd_stop
      ;;
    buildah)
      VERSIONS+=("buildah: $(buildah --version 2>&1 || echo "unknown (buildah --version failed)")")
      echo "${VERSIONS[-1]}"
      PEER_LOAD=buildah_load PEER_LOOP=buildah_loop run_peer buildah
      "${B[@]}" rm -a >/dev/null 2>&1 || true
      "${B[@]}" rmi -a -f >/dev/null 2>&1 || true
      rm -rf "$BROOT" "$BRUN"
      ;;
  esac
done

python3 - "$N" "$PEERS" "${PATCHES[*]}" "$RESULTS" <<'EOF'
import sys
n, peers, patches, path = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
res = dict(line.strip().split("=", 1) for line in open(path) if "=" in line)
rows = [("cold", "cold"), ("no-op", "noop")] + [(f"patch {p}", f"patch-{p}") for p in patches]
head = f"\nN={n:<17}{'strata':>9}" + "".join(f"{p:>10}" for p in peers)
head += "".join(f"{p + '/strata':>17}" for p in peers)
print(head)
for label, key in rows:
    s = float(res[f"strata.{key}"])
    line = f"{label:<19}{s:>8.2f}s" + "".join(f"{float(res[f'{p}.{key}']):>9.2f}s" for p in peers)
    line += "".join(f"{float(res[f'{p}.{key}']) / s:>16.1f}x" for p in peers)
    print(line)
EOF
for v in ${VERSIONS[@]+"${VERSIONS[@]}"}; do echo "$v"; done
rm -rf "$S"
