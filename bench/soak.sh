#!/usr/bin/env bash
# bench/soak.sh [SECONDS] -- the long soak of `elpis serve` (issue 3): 16
# concurrent clients with random disconnects and same-session supersedes for
# SECONDS (default 60), preceded by the long-and-rapid generation plan. It is
# the same script `make test` runs briefly (tests/cli/test_server_soak.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ELPIS_BIN=${ELPIS_BIN:-$ROOT/build/elpis}
export ELPIS_SHARED=${ELPIS_SHARED:-$(cd "$ROOT/../shared" && pwd)}
export ELPIS_SOAK_SECONDS=${1:-60}
exec bash "$ROOT/tests/cli/test_server_soak.sh"
