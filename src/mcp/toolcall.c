/* toolcall.c -- function calling for models that only produce text.
 *
 * The prompt side teaches the call format the Psyche prompts used
 * (elpis-spec.md §5.4): a fenced block
 *
 *     ```tool_call
 *     {"name": "tool_name", "arguments": {"param1": "value1"}}
 *     ```
 *
 * and lists each function with its JSON Schema. The parsing side accepts
 * that block, the <tool_call>...</tool_call> tags that Hermes- and
 * Qwen-style templates train models to write, and, when neither occurs, a
 * reply that is nothing but such an object (the [0116] fallback). A block
 * whose JSON does not parse, or has no string "name", is skipped, as the
 * original did. Calls come back in OpenAI format with `arguments` as JSON
 * text.
 */
#include "mcp_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char g_intro[] =
    "You can call functions. To call one, reply with exactly this block and then stop:\n"
    "```tool_call\n"
    "{\"name\": \"function_name\", \"arguments\": {\"param\": \"value\"}}\n"
    "```\n"
    "Never write a function's result yourself; it will be given to you.\n\n"
    "### Available functions\n";

static elpis_status describe_tool(const json_t *tool, elpis_buf *out) {
    const json_t *fn = json_object_get(tool, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *desc = json_string_value(json_object_get(fn, "description"));
    const json_t *params = json_object_get(fn, "parameters");
    elpis_status st = elpis_buf_printf(out, "**%s**\n", name ? name : "?");
    if (st == ELPIS_OK && desc) st = elpis_buf_printf(out, "  %s\n", desc);
    if (st == ELPIS_OK && params) {
        char *schema = json_dumps(params, JSON_COMPACT);
        st = schema ? elpis_buf_printf(out, "  Parameters (JSON Schema): %s\n", schema) : ELPIS_ENOMEM;
        free(schema);
    }
    return st;
}

elpis_status mcp_toolcall_prompt(const json_t *tools, elpis_buf *out, elpis_error *err) {
    elpis_status st = elpis_buf_puts(out, g_intro);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        if (st != ELPIS_OK) break;
        st = describe_tool(t, out);
    }
    return st == ELPIS_OK ? ELPIS_OK : elpis_fail(err, ELPIS_ENOMEM, "function_call: prompt");
}

/* ---- parsing --------------------------------------------------------------------------- */

typedef struct block {
    size_t start, end;           /* the whole block in the text, markers included */
    size_t body, body_end;       /* its JSON */
} block;

/* The next tool-call block at or after `from`; false when there is none. */
static bool next_block(const char *text, size_t from, block *b) {
    static const struct { const char *open, *close; } kinds[] = {
        { "```tool_call", "```" },
        { "<tool_call>", "</tool_call>" },
    };
    bool found = false;
    for (size_t k = 0; k < ELPIS_ARRAY_LEN(kinds); k++) {
        const char *o = strstr(text + from, kinds[k].open);
        if (!o || (found && (size_t)(o - text) >= b->start)) continue;
        const char *body = o + strlen(kinds[k].open);
        const char *c = strstr(body, kinds[k].close);
        size_t end = c ? (size_t)(c - text) + strlen(kinds[k].close) : strlen(text);  /* unclosed: to the end */
        *b = (block){ (size_t)(o - text), end, (size_t)(body - text), c ? (size_t)(c - text) : strlen(text) };
        found = true;
    }
    return found;
}

static void call_id(char out[24]) {
    unsigned char r[6] = { 0 };
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        double t = elpis_now_ms();
        memcpy(r, &t, sizeof r);
    }
    snprintf(out, 24, "call_%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
}

/* One OpenAI-format call from a JSON text, or NULL when it is not a call. */
static json_t *parse_call(const char *p, size_t n) {
    json_t *obj = json_loadb(p, n, 0, NULL);
    const char *name = json_string_value(json_object_get(obj, "name"));
    json_t *call = NULL;
    if (name && *name) {
        const json_t *a = json_object_get(obj, "arguments");
        if (!a) a = json_object_get(obj, "parameters");
        char *args = json_is_string(a) ? strdup(json_string_value(a)) : a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
        char id[24];
        call_id(id);
        if (args)
            call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function", "name", name,
                             "arguments", args);
        free(args);
    }
    json_decref(obj);
    return call;
}

static bool only_space(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)p[i])) return false;
    return true;
}

/* Copy text without the blocks, trimmed. */
static char *strip_blocks(const char *text, const block *blocks, size_t nb) {
    elpis_buf b = { 0 };
    size_t at = 0;
    elpis_status st = elpis_buf_append(&b, "", 0);
    for (size_t i = 0; i < nb && st == ELPIS_OK; i++) {
        st = elpis_buf_append(&b, text + at, blocks[i].start - at);
        at = blocks[i].end;
    }
    if (st == ELPIS_OK) st = elpis_buf_puts(&b, text + at);
    if (st != ELPIS_OK) { elpis_buf_free(&b); return NULL; }
    size_t s = 0, e = b.len;
    while (s < e && isspace((unsigned char)b.data[s])) s++;
    while (e > s && isspace((unsigned char)b.data[e - 1])) e--;
    memmove(b.data, b.data + s, e - s);
    b.data[e - s] = 0;
    return b.data;
}

json_t *mcp_toolcall_parse(const char *text, char **content) {
    json_t *calls = json_array();
    block blocks[64];
    size_t nb = 0, at = 0;
    block b;
    while (calls && nb < ELPIS_ARRAY_LEN(blocks) && next_block(text, at, &b)) {
        blocks[nb++] = b;
        json_t *c = parse_call(text + b.body, b.body_end - b.body);
        if (c) json_array_append_new(calls, c);
        at = b.end;
    }
    if (calls && nb == 0 && !only_space(text, strlen(text))) {
        /* fallback: the whole reply is one call object */
        json_t *c = parse_call(text, strlen(text));
        if (c) {
            json_array_append_new(calls, c);
            blocks[nb++] = (block){ 0, strlen(text), 0, strlen(text) };
        }
    }
    if (content) *content = strip_blocks(text, blocks, nb);
    if (calls && json_array_size(calls) == 0) {
        json_decref(calls);
        calls = NULL;
    }
    return calls;
}
