#!/usr/bin/env bash
# `make demo`: the whole user flow on one machine. Starts compactsim-server on loopback
# with a fresh data directory and runs the seed experiment through it: zram-movable-ops
# under each of the four movable-ops designs, the same seeds for every design (a seed
# gives every design the same workload), as one sweep with a progress bar per design.
# Prints the table (means with 95 % intervals, paired differences to NONE and whether
# they are significant; the memory cost rows beside the benefit rows), writes the HTML
# report and a plot of seed 1, and stops the server. SEEDS and DURATION size it.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out/demo}
SEEDS=${SEEDS:-8}
DURATION=${DURATION:-60s}
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

EXP="$OUT/seed-experiment"
rm -rf "$EXP"
echo "== The seed question: zram-movable-ops under each movable-ops design," \
     "$SEEDS seeds x $DURATION each, compared with NONE seed by seed"
arms=()
for design in NONE PAGE_FLAG_CALLBACKS MAPPING_OPS PAGE_TYPE; do
    arms+=(--arm "$design" "kernel.movable_ops=$design")
done
"$BIN/compactsim" experiment --scenario zram-movable-ops --set "duration=$DURATION" \
    "${arms[@]}" --seeds "$SEEDS" --baseline NONE --watch --out "$EXP" \
    --display-name seed-experiment --label experiment=seed
"$BIN/compactsim" compare "$EXP" --format csv >"$EXP/table.csv"
"$BIN/compactsim" plot "$EXP"/runs/*/seed-1 -o "$EXP/seed-1.png"
page=$("$BIN/compactsim" report "$EXP")
echo
echo "Table as CSV: $EXP/table.csv; plot of seed 1: $EXP/seed-1.png"
echo "Report: $page"
