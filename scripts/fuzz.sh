#!/usr/bin/env bash
# Run every libFuzzer target in BUILD_DIR for SECONDS each, seeded from
# tests/fuzz/corpus/NAME (read-only) plus real files where they exist.
set -euo pipefail
bdir=${1:-build-fuzz}; secs=${2:-20}
cd "$(dirname "$0")/.."
shopt -s nullglob
for f in "$bdir"/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  work=$(mktemp -d); seeds="tests/fuzz/corpus/$name"
  mkdir -p "$work/crashes"
  echo "fuzz: $name for ${secs}s"
  args=("$work")
  [ -d "$seeds" ] && args+=("$seeds")
  if ! "$f" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$work/crashes/" -print_final_stats=0 "${args[@]}" >"$work/log" 2>&1; then
    tail -40 "$work/log"; echo "fuzz: $name FAILED (artifacts in $work/crashes)"; exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|Done)' "$work/log" | tail -1 || true
  rm -rf "$work"
done
