#!/usr/bin/env bash
# `make demo`: the whole user flow on one machine. Starts compactsim-server on loopback
# with a fresh data directory, runs the seed experiment (zram-movable-ops once per
# movable-ops design, same seed) through the command line with progress bars, prints the
# comparison, writes a PNG plot, and stops the server.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out/demo}
DATA=$(mktemp -d)
mkdir -p "$OUT"
"$BIN/compactsim-server" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --port-file "$DATA/port" --data-dir "$DATA/store" --workers 2 >"$DATA/server.log" 2>&1 &
server=$!
stop() {
    kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    rm -rf "$DATA"
}
trap stop EXIT
for _ in $(seq 200); do [ -s "$DATA/port" ] && break; sleep 0.1; done
[ -s "$DATA/port" ] || { cat "$DATA/server.log"; echo "demo: the server did not start" >&2; exit 1; }
export COMPACTSIM_SERVER="127.0.0.1:$(cat "$DATA/port")"
echo "compactsim-server listening on $COMPACTSIM_SERVER"

runs=()
for design in NONE PAGE_FLAG_CALLBACKS MAPPING_OPS PAGE_TYPE; do
    id="seed-$(echo "$design" | tr 'A-Z_' 'a-z-')"
    echo "== zram-movable-ops with kernel.movable_ops=$design (runs/$id)"
    "$BIN/compactsim" run --scenario zram-movable-ops --set "kernel.movable_ops=$design" \
        --run-id "$id" --label experiment=seed --watch >"$OUT/$id-summary.txt"
    runs+=("runs/$id")
done
echo
echo "== The seed question: the same workload and seed under each design"
"$BIN/compactsim" compare "${runs[@]}" --diff-only
"$BIN/compactsim" plot "${runs[@]}" -o "$OUT/seed-experiment.png"
echo
echo "Summaries: $OUT/seed-*-summary.txt; plot: $OUT/seed-experiment.png"
