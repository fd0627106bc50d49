#!/usr/bin/env bash
# bench/peer.sh MODEL.gguf [REPEATS] [THREADS] -- Elpis vs llama.cpp, side by side.
#
# Runs `elpis bench` and llama.cpp (node-llama-cpp 3.22.1's prebuilt CPU build,
# driven by ../shared/tools/peer/*.mjs) on the same file and thread count,
# alternating A B A B because the machine is shared and noisy, and prints the
# median of each figure and the ratio Elpis / llama.cpp:
#   pp128 (prompt tok/s), tg64 (generation tok/s), and with STREAMS (default 8)
#   the total tok/s of that many sequences decoding at once.
# node-llama-cpp is installed once into $PEER_DIR (default /tmp/peer).
set -euo pipefail
MODEL=${1:?usage: bench/peer.sh MODEL.gguf [REPEATS] [THREADS]}
REPEATS=${2:-5}; THREADS=${3:-2}; STREAMS=${STREAMS:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${ELPIS_SHARED:-$ROOT/../shared}
PEER_DIR=${PEER_DIR:-/tmp/peer}
ELPIS=${ELPIS_BIN:-$ROOT/build/elpis}

if [ ! -d "$PEER_DIR/node_modules/node-llama-cpp" ]; then
  echo "peer: installing node-llama-cpp@3.22.1 into $PEER_DIR" >&2
  mkdir -p "$PEER_DIR"
  (cd "$PEER_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent node-llama-cpp@3.22.1 >&2)
fi
cp "$SHARED"/tools/peer/*.mjs "$PEER_DIR/"

num() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -a E_PP E_TG E_AGG L_PP L_TG L_AGG
for ((r = 0; r < REPEATS; r++)); do
  e=$("$ELPIS" bench -m "$MODEL" -p 128 -n 64 -t "$THREADS" --streams "$STREAMS" -r 1 --json)
  E_PP+=("$(echo "$e" | num pp_tok_s)"); E_TG+=("$(echo "$e" | num tg_tok_s)"); E_AGG+=("$(echo "$e" | num agg_tok_s)")
  l=$(cd "$PEER_DIR" && node peerbench.mjs "$MODEL" 128 64 "$THREADS" 2>/dev/null | tail -1)
  L_PP+=("$(echo "$l" | num pp_tok_s)"); L_TG+=("$(echo "$l" | num tg_tok_s)")
  b=$(cd "$PEER_DIR" && node peerbatch.mjs "$MODEL" "$STREAMS" 48 "$THREADS" 2>/dev/null | tail -1)
  L_AGG+=("$(echo "$b" | num agg_tok_s)")
  echo "run $((r + 1))/$REPEATS: elpis pp ${E_PP[-1]} tg ${E_TG[-1]} agg ${E_AGG[-1]} | llama.cpp pp ${L_PP[-1]} tg ${L_TG[-1]} agg ${L_AGG[-1]}" >&2
done
row() {  # name elpis-values llama-values
  local e l; e=$(printf '%s\n' $2 | median); l=$(printf '%s\n' $3 | median)
  printf '%-14s %10.2f %10.2f %7.2fx\n' "$1" "$e" "$l" "$(echo "$e $l" | awk '{print $1 / $2}')"
}
echo "model: $(basename "$MODEL"), threads $THREADS, medians of $REPEATS alternating runs"
printf '%-14s %10s %10s %8s\n' figure elpis llama.cpp ratio
row "pp128 tok/s" "${E_PP[*]}" "${L_PP[*]}"
row "tg64 tok/s" "${E_TG[*]}" "${L_TG[*]}"
row "agg x$STREAMS tok/s" "${E_AGG[*]}" "${L_AGG[*]}"
