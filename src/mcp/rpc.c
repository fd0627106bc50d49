/* rpc.c -- JSON-RPC 2.0 envelopes: classify an incoming line, build replies.
 *
 * Classification follows the JSON-RPC 2.0 spec with MCP's restrictions:
 *   - not JSON                       -> -32700 with line/column/position, id null
 *   - JSON but not an object         -> -32600, id null (arrays: batches were
 *                                       removed from MCP in 2025-06-18)
 *   - id not a string or number      -> -32600, id null (MCP: never null)
 *   - jsonrpc not "2.0", method not a string, params neither object nor
 *     array                          -> -32600, with the id when it is usable
 *   - method + id                    -> request
 *   - method, no id                  -> notification (never answered)
 *   - no method, result or error, id -> a response to us; we send no
 *                                       requests, so it is ignored
 * An invalid message is answered even without an id, as the JSON-RPC spec's
 * examples do ({"foo": "boo"} gets an error with id null); a well-formed
 * notification never is.
 */
#include "mcp_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void msg_invalid(mcp_msg *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msg_invalid(mcp_msg *m, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err_msg, sizeof m->err_msg, fmt, ap);
    va_end(ap);
    m->kind = MCP_MSG_INVALID;
    m->err_code = code;
}

static bool id_usable(const json_t *id) { return json_is_string(id) || json_is_number(id); }

static void parse_failed(mcp_msg *out, const json_error_t *e) {
    msg_invalid(out, MCP_PARSE_ERROR, "Parse error: %s at line %d, column %d (byte %d)", e->text, e->line, e->column,
                e->position);
    out->err_data = json_pack("{s:i, s:i, s:i}", "line", e->line, "column", e->column, "position", e->position);
}

/* Sort an object into request / notification / response / invalid. */
static void classify(mcp_msg *out) {
    json_t *root = out->root;
    json_t *id = json_object_get(root, "id");
    json_t *method = json_object_get(root, "method");
    json_t *params = json_object_get(root, "params");
    const char *version = json_string_value(json_object_get(root, "jsonrpc"));
    if (id_usable(id)) out->id = id;
    if (id && !id_usable(id)) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: id must be a string or a number, not %s",
                    json_is_null(id) ? "null" : "another type");
        return;
    }
    if (!version || strcmp(version, "2.0") != 0) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"");
        return;
    }
    if (!method) {
        if (id && (json_object_get(root, "result") || json_object_get(root, "error"))) out->kind = MCP_MSG_RESPONSE;
        else msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: method is missing");
        return;
    }
    if (!json_is_string(method)) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: method must be a string");
        return;
    }
    if (params && !json_is_object(params) && !json_is_array(params)) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: params must be an object");
        return;
    }
    out->method = json_string_value(method);
    out->params = params;
    out->kind = id ? MCP_MSG_REQUEST : MCP_MSG_NOTIFICATION;
}

void mcp_msg_parse(const char *line, size_t len, mcp_msg *out) {
    memset(out, 0, sizeof *out);
    json_error_t e;
    out->root = json_loadb(line, len, JSON_DECODE_ANY, &e);
    if (!out->root) { parse_failed(out, &e); return; }
    if (json_is_array(out->root)) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: batches are not supported (removed in MCP 2025-06-18)");
        return;
    }
    if (!json_is_object(out->root)) {
        msg_invalid(out, MCP_INVALID_REQUEST, "Invalid Request: a message must be a JSON object");
        return;
    }
    classify(out);
}

void mcp_msg_clear(mcp_msg *m) {
    json_decref(m->root);
    json_decref(m->err_data);
    memset(m, 0, sizeof *m);
}

/* ---- builders ------------------------------------------------------------------ */

static json_t *id_copy(const json_t *id) { return id ? json_deep_copy(id) : json_null(); }

json_t *mcp_result(const json_t *id, json_t *result) {
    if (!result) return NULL;
    return json_pack("{s:s, s:o, s:o}", "jsonrpc", "2.0", "id", id_copy(id), "result", result);
}

json_t *mcp_error(const json_t *id, int code, const char *msg, json_t *data) {
    json_t *err = json_pack("{s:i, s:o}", "code", code, "message", mcp_text(msg, strlen(msg)));
    if (err && data) json_object_set_new(err, "data", data);
    else json_decref(data);
    if (!err) return NULL;
    return json_pack("{s:s, s:o, s:o}", "jsonrpc", "2.0", "id", id_copy(id), "error", err);
}

json_t *mcp_notification(const char *method, json_t *params) {
    if (!params) return NULL;
    return json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

json_t *mcp_text(const char *s, size_t n) {
    if (n == 0) return json_string("");
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;
    while (i < n && (k = utf8_seq(p + i, n - i)) > 0 && p[i] != 0) i += k;
    if (i == n) return json_stringn(s, n);
    elpis_buf b = { 0 };
    elpis_status st = elpis_buf_append(&b, s, i);
    while (st == ELPIS_OK && i < n) {
        k = p[i] ? utf8_seq(p + i, n - i) : 0;
        if (k) st = elpis_buf_append(&b, s + i, k);
        else st = elpis_buf_append(&b, "\xEF\xBF\xBD", 3);   /* U+FFFD; NUL too, for C strings */
        i += k ? k : 1;
    }
    json_t *j = st == ELPIS_OK ? json_stringn(b.data, b.len) : NULL;
    elpis_buf_free(&b);
    return j;
}

char *mcp_dump(const json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15)); }
