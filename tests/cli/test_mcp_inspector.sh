#!/usr/bin/env bash
# `elpis mcp` under the MCP inspector's CLI mode (@modelcontextprotocol/inspector@0.15.0):
# tools/list, tools/call and resources/read from the command line
# (tests/mcp/inspector.test.js).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../mcp/node-tests.sh"
[ -f "$ELPIS_SHARED/models/stories260K.gguf" ] || { bad "model present"; finish; exit 1; }
mcp_node_deps && mcp_node_run inspector.test.js
finish
