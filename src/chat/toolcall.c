/* toolcall.c -- tool calls: the list type, ```tool_call blocks in reply
 * text, and the small string helpers the chat files share.
 *
 * The prompt format the original taught its models (spec §5.4):
 *
 *     ```tool_call
 *     {"name": "tool_name", "arguments": {"param1": "value1"}}
 *     ```
 *
 * Parsing follows the server's regex ```tool_call\s*\n?(.*?)\n?``` applied to
 * every block, with two tolerances: the fence tag is matched without regard
 * to case (as the [0116] client did), and a block left open at the end of a
 * reply (the model stopped before the closing fence) is still read. Blocks
 * that do not decode to {"name": string, ...} are skipped, never fatal.
 * The server (src/server/agent.c) uses the same parser, plus the [0116]
 * fallback of a bare leading {"name":..,"arguments":..} object, and strips
 * the blocks from the content it returns.
 */
#include "chat_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- shared helpers ---------------------------------------------------------------------- */

void chat__call_id(char out[24]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char r[6];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
        memcpy(r, &x, sizeof r);
    }
    memcpy(out, "call_", 5);
    for (int i = 0; i < 6; i++) {
        out[5 + 2 * i] = hex[r[i] >> 4];
        out[6 + 2 * i] = hex[r[i] & 15];
    }
    out[17] = 0;
}

bool chat__str_append(char **s, const char *add, size_t n) {
    size_t old = *s ? strlen(*s) : 0;
    char *p = realloc(*s, old + n + 1);
    if (!p) return false;
    memcpy(p + old, add, n);
    p[old + n] = 0;
    *s = p;
    return true;
}

bool chat__starts_ci(const char *s, size_t n, const char *pre, bool *partial) {
    size_t i = 0;
    for (; pre[i]; i++) {
        if (i == n) {
            if (partial) *partial = true;
            return false;
        }
        if (tolower((unsigned char)s[i]) != tolower((unsigned char)pre[i])) break;
    }
    if (partial) *partial = false;
    return pre[i] == 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

elpis_status chat__utf8_clean(const char *s, size_t n, elpis_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0, i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (k && u[i]) { i += k; run += k; continue; }
        if (elpis_buf_append(out, s + i - run, run) != ELPIS_OK) return ELPIS_ENOMEM;
        run = 0;
        if (elpis_buf_append(out, u[i] ? "\xEF\xBF\xBD" : " ", u[i] ? 3 : 1) != ELPIS_OK) return ELPIS_ENOMEM;
        i++;
    }
    return elpis_buf_append(out, s + n - run, run);
}

/* ---- the list ------------------------------------------------------------------------------- */

elpis_status elpis_tool_calls_add(elpis_tool_calls *c, const char *id, const char *name, const char *args) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        elpis_tool_call *v = realloc(c->v, cap * sizeof *v);
        if (!v) return ELPIS_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    char fresh[24];
    chat__call_id(fresh);
    elpis_tool_call t = { strdup(id ? id : fresh), strdup(name ? name : ""), strdup(args ? args : "{}") };
    if (!t.id || !t.name || !t.arguments) {
        free(t.id);
        free(t.name);
        free(t.arguments);
        return ELPIS_ENOMEM;
    }
    c->v[c->n++] = t;
    return ELPIS_OK;
}

void elpis_tool_calls_free(elpis_tool_calls *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].id);
        free(c->v[i].name);
        free(c->v[i].arguments);
    }
    free(c->v);
    memset(c, 0, sizeof *c);
}

/* ---- ```tool_call blocks -------------------------------------------------------------------- */

static const char FENCE[] = "```tool_call";

static const char *find_fence(const char *p) {
    for (; (p = strstr(p, "```")); p += 3)
        if (chat__starts_ci(p, strlen(p), FENCE, NULL)) return p;
    return NULL;
}

/* Decode one block body; a block that is not a call is skipped (ELPIS_OK). */
static elpis_status add_block(const char *s, size_t n, elpis_tool_calls *out, elpis_error *err) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    json_error_t je;
    json_t *o = json_loadb(s, n, 0, &je), *name = json_object_get(o, "name"), *args = json_object_get(o, "arguments");
    char *text = NULL;
    elpis_status st = ELPIS_OK;
    if (!json_is_object(o) || !json_is_string(name) || json_string_length(name) == 0) goto done;
    if (json_is_string(args)) {   /* arguments given as JSON text: keep it if it is an object */
        json_t *inner = json_loads(json_string_value(args), 0, &je);
        if (json_is_object(inner)) text = strdup(json_string_value(args));
        json_decref(inner);
        if (!text) goto done;
    } else if (json_is_object(args)) {
        if (!(text = json_dumps(args, JSON_COMPACT))) st = ELPIS_ENOMEM;
    } else if (args && !json_is_null(args)) {
        goto done;
    }
    if (st == ELPIS_OK) st = elpis_tool_calls_add(out, NULL, json_string_value(name), text);
    if (st != ELPIS_OK) elpis_fail(err, st, "tool call: out of memory");
done:
    free(text);
    json_decref(o);
    return st;
}

elpis_status elpis_tool_calls_from_text(const char *text, elpis_tool_calls *out, elpis_error *err) {
    const char *p = text ? text : "";
    for (const char *f; (f = find_fence(p));) {
        const char *body = f + sizeof FENCE - 1;
        const char *end = strstr(body, "```");
        size_t n = end ? (size_t)(end - body) : strlen(body);
        elpis_status st = add_block(body, n, out, err);
        if (st != ELPIS_OK) return st;
        p = end ? end + 3 : body + n;
    }
    return ELPIS_OK;
}

/* Bytes of the JSON value at the start of s (after blanks), 0 if none. */
static size_t json_prefix(const char *s, size_t *lead) {
    size_t i = 0;
    while (isspace((unsigned char)s[i])) i++;
    *lead = i;
    if (s[i] != '{') return 0;
    json_error_t je;
    json_t *o = json_loads(s + i, JSON_DISABLE_EOF_CHECK, &je);
    size_t n = o ? (size_t)je.position : 0;
    json_decref(o);
    return n;
}

elpis_status elpis_tool_call_bare(const char *text, elpis_tool_calls *out, size_t *consumed, elpis_error *err) {
    size_t lead, n = json_prefix(text ? text : "", &lead), before = out->n;
    *consumed = 0;
    if (!n) return ELPIS_OK;
    elpis_status st = add_block(text + lead, n, out, err);
    if (st == ELPIS_OK && out->n > before) *consumed = lead + n;
    return st;
}

elpis_status elpis_tool_calls_strip(const char *text, size_t skip, elpis_buf *out) {
    const char *p = text ? text + skip : "";
    elpis_status st = ELPIS_OK;
    for (const char *f; st == ELPIS_OK && (f = find_fence(p));) {
        st = elpis_buf_append(out, p, (size_t)(f - p));
        const char *end = strstr(f + sizeof FENCE - 1, "```");
        p = end ? end + 3 : f + strlen(f);
    }
    return st == ELPIS_OK ? elpis_buf_puts(out, p) : st;
}
