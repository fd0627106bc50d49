/* sse.c -- server-sent events: bytes in, one callback per event out.
 *
 * The WHATWG event-stream grammar, reduced to what a chat client needs:
 *   - a line ends in "\n", "\r\n" or "\r"; bytes may arrive split anywhere,
 *     including between the '\r' and the '\n' of one line end (after_cr);
 *   - "field: value" or "field:value" (one leading space dropped); a line
 *     without ':' is a field with an empty value; ":..." is a comment
 *     (the server's ": ping" keep-alives);
 *   - only `data` matters: several data lines join with '\n';
 *   - a blank line dispatches the event if it had data, then resets it.
 * The line and the event are bounded (ELPIS_SSE_MAX_EVENT) so a broken or
 * hostile server cannot make the client grow without limit.
 */
#include "elpis/chat_client.h"

#include <string.h>

void elpis_sse_init(elpis_sse *p) { memset(p, 0, sizeof *p); }

void elpis_sse_free(elpis_sse *p) {
    elpis_buf_free(&p->line);
    elpis_buf_free(&p->data);
    memset(p, 0, sizeof *p);
}

static elpis_status dispatch(elpis_sse *p, elpis_sse_fn fn, void *ud, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    if (p->has_data && fn) st = fn(ud, p->data.data ? p->data.data : "", p->data.len, err);
    p->data.len = 0;
    if (p->data.data) p->data.data[0] = 0;
    p->has_data = false;
    return st;
}

/* One complete line (without its end). */
static elpis_status on_line(elpis_sse *p, const char *s, size_t n, elpis_sse_fn fn, void *ud, elpis_error *err) {
    if (n == 0) return dispatch(p, fn, ud, err);
    if (s[0] == ':') return ELPIS_OK;
    const char *colon = memchr(s, ':', n);
    size_t klen = colon ? (size_t)(colon - s) : n;
    if (klen != 4 || memcmp(s, "data", 4) != 0) return ELPIS_OK;
    const char *v = colon ? colon + 1 : s + n;
    if (v < s + n && *v == ' ') v++;
    size_t vlen = (size_t)(s + n - v);
    if (p->data.len + vlen + 1 > ELPIS_SSE_MAX_EVENT)
        return elpis_fail(err, ELPIS_EFORMAT, "event stream: an event exceeds %u bytes", ELPIS_SSE_MAX_EVENT);
    if (p->has_data && elpis_buf_append(&p->data, "\n", 1) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "event stream");
    if (elpis_buf_append(&p->data, v, vlen) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "event stream");
    p->has_data = true;
    return ELPIS_OK;
}

/* The pending line plus s[0..n) form one line: hand it on, reset. */
static elpis_status finish_line(elpis_sse *p, const char *s, size_t n, elpis_sse_fn fn, void *ud, elpis_error *err) {
    if (p->line.len == 0) return on_line(p, s, n, fn, ud, err);
    if (p->line.len + n > ELPIS_SSE_MAX_EVENT)
        return elpis_fail(err, ELPIS_EFORMAT, "event stream: a line exceeds %u bytes", ELPIS_SSE_MAX_EVENT);
    if (elpis_buf_append(&p->line, s, n) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "event stream");
    size_t len = p->line.len;
    p->line.len = 0;   /* on_line never touches p->line: the bytes stay valid until the next append */
    return on_line(p, p->line.data, len, fn, ud, err);
}

elpis_status elpis_sse_feed(elpis_sse *p, const char *bytes, size_t n, elpis_sse_fn fn, void *ud, elpis_error *err) {
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        char c = bytes[i];
        if (c == '\n' && p->after_cr && i == start && p->line.len == 0) {   /* the \n of a \r\n */
            p->after_cr = false;
            start = i + 1;
            continue;
        }
        p->after_cr = false;
        if (c != '\n' && c != '\r') continue;
        elpis_status st = finish_line(p, bytes + start, i - start, fn, ud, err);
        if (st != ELPIS_OK) return st;
        p->after_cr = c == '\r';
        start = i + 1;
    }
    if (start == n) return ELPIS_OK;
    if (p->line.len + (n - start) > ELPIS_SSE_MAX_EVENT)
        return elpis_fail(err, ELPIS_EFORMAT, "event stream: a line exceeds %u bytes", ELPIS_SSE_MAX_EVENT);
    if (elpis_buf_append(&p->line, bytes + start, n - start) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "event stream");
    return ELPIS_OK;
}
