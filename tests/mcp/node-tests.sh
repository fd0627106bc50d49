# node-tests.sh -- sourced by tests/cli/test_mcp_*.sh (after tests/cli/lib.sh):
# installs the pinned node packages when they are missing, runs node:test
# files against $ELPIS_BIN and turns each top-level TAP result into the
# ok/bad lines of lib.sh, so the wrapper ends with lib.sh's "N passed, M failed".
MCP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# npm ci from the committed lockfile, once, even when ctest runs two wrappers at once.
mcp_node_deps() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    bad "node and npm are installed" "run scripts/install-deps.sh"; return 1
  fi
  local major; major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 18 ]; then bad "node >= 18" "found $(node --version)"; return 1; fi
  # The marker is written only after npm ci has finished: package directories appear while it
  # still runs, and a wrapper that checked one of them once started on a half-installed tree.
  [ -f "$MCP_DIR/node_modules/.elpis-npm-ci-done" ] && return 0
  ( cd "$MCP_DIR" && flock /tmp/elpis-mcp-npm-ci.lock \
      sh -c '[ -f node_modules/.elpis-npm-ci-done ] ||
             { npm ci --silent --no-audit --no-fund && touch node_modules/.elpis-npm-ci-done; }' ) \
    >"$TMP/npm.log" 2>&1 || { bad "npm ci in tests/mcp" "$(tail -20 "$TMP/npm.log")"; return 1; }
}

# mcp_node_run FILE... : one lib.sh result per top-level test.
mcp_node_run() {
  local tap="$TMP/node.tap" line name
  ( cd "$MCP_DIR" && node --test --test-force-exit --test-concurrency=1 --test-reporter=tap "$@" ) >"$tap" 2>"$TMP/node.err"
  while IFS= read -r line; do
    case "$line" in
      "ok "*) name=${line#ok * - }; ok "$name" ;;
      "not ok "*) name=${line#not ok * - }
        bad "$name" "$(awk -v n="$name" 'index($0, "not ok") == 1 && index($0, n) { p = 1 } p { print } p && /^  \.\.\.$/ { exit }' "$tap" | head -40)" ;;
    esac
  done <"$tap"
  if ! grep -q '^ok \|^not ok ' "$tap"; then bad "node tests ran" "$(tail -30 "$tap"; tail -30 "$TMP/node.err")"; fi
}
