#!/usr/bin/env bash
# Saves or compares against the committed criterion baseline (benches/baseline/NAME/), so a
# regression in a hot path shows up as criterion's "Performance has regressed" on this machine
# type — compare on the machine type the baseline was saved on (these are 2-core VMs).
#
#   benches/scripts/criterion-baseline.sh save [NAME]      run every bench, keep NAME (default main)
#   benches/scripts/criterion-baseline.sh compare [NAME]   run every bench against NAME
#   extra arguments after NAME go to criterion (e.g. a filter: `compare main gzip`); a filtered
#   `save` merges into the saved baseline instead of replacing it
#
# criterion keeps baselines under $CARGO_TARGET_DIR/criterion/<group>/<bench>/<NAME>/; `save`
# copies their JSON into benches/baseline/NAME/ (commit it), `compare` puts them back first.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
mode="${1:?usage: criterion-baseline.sh save|compare [NAME] [criterion args...]}"
name="${2:-main}"
shift $(( $# >= 2 ? 2 : 1 ))
target="${CARGO_TARGET_DIR:-$(cd "$here" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
crit="$target/criterion"
saved="$here/benches/baseline/$name"
cd "$here"
case "$mode" in
  save)
    cargo bench -p strata-benches --benches -- --save-baseline "$name" "$@"
    # A full save replaces the baseline; a filtered one (extra arguments) merges into it, so
    # the benches it did not run keep their saved figures.
    if [ $# -eq 0 ]; then rm -rf "$saved"; fi
    (cd "$crit" && find . -path "*/$name/*.json" -print0) | while IFS= read -r -d '' f; do
      mkdir -p "$saved/$(dirname "$f")"
      cp "$crit/$f" "$saved/$f"
    done
    { echo "saved: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, commit $(git rev-parse --short HEAD)${*:+ (merged: $*)}"
      (cd "$saved" && find . -name estimates.json | sort | while read -r f; do
        python3 - "$f" <<'PY'
import json, sys
f = sys.argv[1]
e = json.load(open(f))["mean"]["point_estimate"] / 1e6
print(f"{f[2:-len('/estimates.json')]}: mean {e:.2f} ms")
PY
      done) } > "$saved/SUMMARY"
    cat "$saved/SUMMARY"
    ;;
  compare)
    [ -d "$saved" ] || { echo "error: no baseline $saved (run: $0 save $name)" >&2; exit 2; }
    (cd "$saved" && find . -name '*.json' -print0) | while IFS= read -r -d '' f; do
      mkdir -p "$crit/$(dirname "$f")"
      cp "$saved/$f" "$crit/$f"
    done
    cargo bench -p strata-benches --benches -- --baseline "$name" "$@"
    ;;
  *) echo "error: mode must be save or compare, not \`$mode\`" >&2; exit 2 ;;
esac
