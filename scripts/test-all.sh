#!/usr/bin/env bash
# Everything `make test` runs, in order; exits non-zero on the first failure
# and prints one summary line that CI can read.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
step() { echo; echo "==== $* ===="; }

step "release build + tests"
make --no-print-directory test-release JOBS="$JOBS"
step "ASan+UBSan build + tests"
make --no-print-directory test-asan JOBS="$JOBS"
step "TSan build + threaded tests"
make --no-print-directory test-tsan JOBS="$JOBS"
step "fuzz (short)"
make --no-print-directory fuzz JOBS="$JOBS" FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
echo
echo "make test: all steps passed"
