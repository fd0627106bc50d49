#!/usr/bin/env bash
# `elpis mcp` driven by the official MCP TypeScript SDK (Client + StdioClientTransport)
# and by a raw line-protocol client: lifecycle, every tool (the memory tools too),
# progress, cancellation, streams, 1,000 malformed lines, interleaved calls on one
# connection, steering from --config.
# The tests themselves are tests/mcp/{sdk,raw,interleave,memory}.test.js.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../mcp/node-tests.sh"
[ -f "$ELPIS_SHARED/models/stories260K.gguf" ] || { bad "model present"; finish; exit 1; }
mcp_node_deps && mcp_node_run sdk.test.js raw.test.js interleave.test.js memory.test.js
finish
