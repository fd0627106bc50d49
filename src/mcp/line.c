/* line.c -- split the input byte stream into lines of bounded length.
 *
 * The stdio transport frames each message as one line. A peer may send a
 * line of any length, so the buffer never grows beyond `max`: once a line
 * passes it, the line is reported as overlong at once and its remaining bytes
 * are dropped until the next '\n'. A trailing '\r' is stripped (CRLF peers).
 * Lines that arrive whole inside one read are delivered straight from the
 * read buffer, without a copy.
 */
#include "mcp_internal.h"

#include <stdlib.h>
#include <string.h>

void mcp_lines_init(mcp_lines *l, size_t max) {
    memset(l, 0, sizeof *l);
    l->max = max;
}

void mcp_lines_free(mcp_lines *l) {
    free(l->buf);
    memset(l, 0, sizeof *l);
}

static elpis_status lines_append(mcp_lines *l, const char *p, size_t n) {
    if (l->len + n > l->cap) {
        size_t cap = l->cap ? l->cap : 4096;
        while (cap < l->len + n) cap *= 2;
        if (cap > l->max + 1) cap = l->max + 1;
        char *b = realloc(l->buf, cap);
        if (!b) return ELPIS_ENOMEM;
        l->buf = b;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
    return ELPIS_OK;
}

static void deliver(const char *p, size_t n, mcp_line_fn on_line, void *arg) {
    if (n > 0 && p[n - 1] == '\r') n--;
    on_line(arg, p, n);
}

elpis_status mcp_lines_feed(mcp_lines *l, const char *data, size_t n, mcp_line_fn on_line,
                            mcp_overlong_fn on_overlong, void *arg) {
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t chunk = nl ? (size_t)(nl - data) : n;
        if (l->discarding) {
            if (nl) l->discarding = false;
        } else if (l->len + chunk > l->max) {
            /* overlong: report now, drop what we hold and the rest of the line */
            on_overlong(arg, l->max);
            l->len = 0;
            l->discarding = !nl;
        } else if (nl && l->len == 0) {
            deliver(data, chunk, on_line, arg);
        } else {
            if (lines_append(l, data, chunk) != ELPIS_OK) return ELPIS_ENOMEM;
            if (nl) {
                deliver(l->buf, l->len, on_line, arg);
                l->len = 0;
            }
        }
        if (!nl) return ELPIS_OK;
        data += chunk + 1;
        n -= chunk + 1;
    }
    return ELPIS_OK;
}

void mcp_lines_finish(mcp_lines *l, mcp_line_fn on_line, void *arg) {
    if (!l->discarding && l->len > 0) deliver(l->buf, l->len, on_line, arg);
    l->len = 0;
    l->discarding = false;
}
