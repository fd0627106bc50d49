/* fuzz_mcp_lines.c -- MCP input: the stdin byte stream through the bounded
 * line splitter (small limit, so overlong lines are exercised), each line
 * through the JSON-RPC classifier, and the arguments of every tools/call
 * through every tool's input schema. Every invalid line must come with an
 * error code and message; nothing may crash or leak. */
#include "../../src/mcp/mcp_internal.h"

#include <stdlib.h>
#include <string.h>

static void check_against_tools(const json_t *args) {
    size_t n = 0;
    const mcp_tool *tools = mcp_tools(&n);
    for (size_t i = 0; i < n; i++) {
        json_t *schema = mcp_json_sq(tools[i].input_schema);
        char msg[256];
        if (schema) mcp_schema_check(schema, args, "arguments", msg, sizeof msg);
        json_decref(schema);
    }
}

static void on_line(void *arg, const char *line, size_t len) {
    (void)arg;
    mcp_msg m;
    mcp_msg_parse(line, len, &m);
    if (m.kind == MCP_MSG_INVALID && (m.err_code == 0 || !m.err_msg[0])) abort();
    if (m.params && json_is_object(m.params)) {
        json_t *args = json_object_get(m.params, "arguments");
        if (args) check_against_tools(args);
    }
    mcp_msg_clear(&m);
}

static void on_overlong(void *arg, size_t max) { (void)arg; (void)max; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mcp_lines l;
    mcp_lines_init(&l, 2048);
    /* feed in two pieces to exercise partial lines */
    size_t half = size / 2;
    mcp_lines_feed(&l, (const char *)data, half, on_line, on_overlong, NULL);
    mcp_lines_feed(&l, (const char *)data + half, size - half, on_line, on_overlong, NULL);
    mcp_lines_finish(&l, on_line, NULL);
    mcp_lines_free(&l);
    return 0;
}
