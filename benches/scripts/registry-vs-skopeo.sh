#!/usr/bin/env bash
# Registry push and pull of one large layer, strata against skopeo on the same image, the same
# local docker-registry, in one run (so the ratios are meaningful); and strata's peak RSS while
# pulling (layers are streamed: it must not grow with the layer).
# Usage: benches/scripts/registry-vs-skopeo.sh [WORKDIR] [MB]
set -euo pipefail
work="${1:-/var/tmp/strata-registry-bench}"
mb="${2:-256}"
strata="${STRATA:-${CARGO_TARGET_DIR:-/var/tmp/strata-target}/release/strata}"
rm -rf "$work" && mkdir -p "$work/ctx" "$work/pull-ctx"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg=$!
trap 'kill $reg 2>/dev/null || true' EXIT
until curl -fs "http://127.0.0.1:$port/v2/" > /dev/null 2>&1 || python3 -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null; do sleep 0.2; done
h="127.0.0.1:$port"

head -c "${mb}M" /dev/urandom > "$work/ctx/big.bin"
printf 'FROM scratch\nCOPY big.bin /big.bin\n' > "$work/ctx/Dockerfile"
"$strata" --store "$work/store-a" build -t big:1 --progress plain \
  -o "type=oci,dest=$work/oci" "$work/ctx" > /dev/null 2>&1

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }

push_skopeo=$(t skopeo copy --dest-tls-verify=false "oci:$work/oci:1" "docker://$h/skopeo/big:1")
push_strata=$(t "$strata" --store "$work/store-a" push big:1 "$h/strata/big:1")
repush_strata=$(t "$strata" --store "$work/store-a" push big:1 "$h/strata/big:1")

pull_skopeo=$(t skopeo copy --src-tls-verify=false "docker://$h/strata/big:1" "oci:$work/pulled:1")
printf 'FROM %s/strata/big:1\nCOPY Dockerfile /Dockerfile\n' "$h" > "$work/pull-ctx/Dockerfile"
s=$(date +%s.%N)
/usr/bin/time -v "$strata" --store "$work/store-b" build --progress plain "$work/pull-ctx" \
  > /dev/null 2> "$work/pull.time"
e=$(date +%s.%N)
pull_strata=$(echo "$e - $s" | bc)
rss_kb=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/pull.time")

echo "layer: ${mb} MiB (incompressible), registry: docker-registry on $h"
printf 'push   skopeo %6.2fs  strata %6.2fs  ratio strata/skopeo %.2f\n' "$push_skopeo" "$push_strata" "$(echo "$push_strata / $push_skopeo" | bc -l)"
printf 'repush strata %6.2fs (every blob skipped)\n' "$repush_strata"
printf 'pull   skopeo %6.2fs  strata %6.2fs (FROM + one COPY, cold store)  ratio %.2f\n' "$pull_skopeo" "$pull_strata" "$(echo "$pull_strata / $pull_skopeo" | bc -l)"
printf 'strata peak RSS while pulling: %d MiB (layer %d MiB)\n' "$((rss_kb / 1024))" "$mb"
