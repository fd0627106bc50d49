/* reason.c -- split reply text into the answer and the model's thoughts.
 *
 * The original's regex (spec §5.4) is <(reasoning|thinking)>(.*?)</(reasoning|
 * thinking)>, case-insensitive; we also accept <think> (Qwen3, DeepSeek-R1),
 * and, like the regex, any closer ends any opener.
 *
 * Streaming: text arrives in arbitrary pieces, so a tag may be split
 * ("...<reas" + "oning>..."). The splitter emits everything it can decide
 * and holds back only a tail that starts with '<' and is still a prefix of
 * a tag that could come next (at most 12 bytes). Outside a thought only
 * openers count, inside only closers; everything else is text. An unclosed
 * thought at the end stays a thought (the model was cut off mid-thought).
 */
#include "chat_internal.h"

#include <ctype.h>
#include <string.h>

static const char *const OPEN[] = { "<reasoning>", "<thinking>", "<think>" };
static const char *const CLOSE[] = { "</reasoning>", "</thinking>", "</think>" };

void elpis_reason_init(elpis_reason *r, elpis_reason_fn fn, void *ud) {
    memset(r, 0, sizeof *r);
    r->fn = fn;
    r->ud = ud;
}

void elpis_reason_free(elpis_reason *r) { elpis_buf_free(&r->pending); }

/* Tag at s: its length (> 0), 0 if none, -1 if s might still become one. */
static int tag_at(const char *s, size_t n, bool closers) {
    const char *const *tags = closers ? CLOSE : OPEN;
    bool maybe = false;
    for (size_t i = 0; i < 3; i++) {
        bool partial;
        if (chat__starts_ci(s, n, tags[i], &partial)) return (int)strlen(tags[i]);
        maybe = maybe || partial;
    }
    return maybe ? -1 : 0;
}

static void emit(elpis_reason *r, const char *t, size_t n) {
    if (n && r->fn) r->fn(r->ud, r->in_thought, t, n);
}

/* Process s[0..n); returns how many bytes were consumed (the rest is held). */
static size_t run(elpis_reason *r, const char *s, size_t n, bool final) {
    size_t start = 0, i = 0;
    while (i < n) {
        const char *lt = memchr(s + i, '<', n - i);
        if (!lt) break;
        i = (size_t)(lt - s);
        int k = tag_at(s + i, n - i, r->in_thought);
        if (k < 0 && !final) {   /* undecided: hold from here */
            emit(r, s + start, i - start);
            return i;
        }
        if (k <= 0) { i++; continue; }
        emit(r, s + start, i - start);
        r->in_thought = !r->in_thought;
        r->had_thought = r->had_thought || r->in_thought;
        i += (size_t)k;
        start = i;
    }
    emit(r, s + start, n - start);
    return n;
}

void elpis_reason_feed(elpis_reason *r, const char *t, size_t n) {
    if (r->pending.len == 0) {
        size_t used = run(r, t, n, false);
        if (used < n) elpis_buf_append(&r->pending, t + used, n - used);
        return;
    }
    elpis_buf_append(&r->pending, t, n);
    elpis_buf b = r->pending;
    r->pending = (elpis_buf){ 0 };
    size_t used = run(r, b.data, b.len, false);
    if (used < b.len) elpis_buf_append(&r->pending, b.data + used, b.len - used);
    elpis_buf_free(&b);
}

void elpis_reason_flush(elpis_reason *r) {
    elpis_buf b = r->pending;
    r->pending = (elpis_buf){ 0 };
    if (b.len) run(r, b.data, b.len, true);
    elpis_buf_free(&b);
}

/* ---- whole text ---------------------------------------------------------------------------- */

typedef struct split_ctx {
    elpis_buf *answer, *thought;
    bool was_thought;
    elpis_status st;
} split_ctx;

static void split_cb(void *ud, bool thought, const char *t, size_t n) {
    split_ctx *c = ud;
    elpis_buf *b = thought ? c->thought : c->answer;
    if (thought && !c->was_thought && c->thought && c->thought->len && c->st == ELPIS_OK)
        c->st = elpis_buf_puts(c->thought, "\n\n");   /* a new block */
    c->was_thought = thought;
    if (b && c->st == ELPIS_OK) c->st = elpis_buf_append(b, t, n);
}

static void trim(elpis_buf *b) {
    if (!b || !b->data) return;
    size_t s = 0, e = b->len;
    while (s < e && isspace((unsigned char)b->data[s])) s++;
    while (e > s && isspace((unsigned char)b->data[e - 1])) e--;
    memmove(b->data, b->data + s, e - s);
    b->len = e - s;
    b->data[b->len] = 0;
}

elpis_status elpis_reason_split(const char *text, elpis_buf *answer, elpis_buf *thought) {
    split_ctx c = { answer, thought, false, ELPIS_OK };
    elpis_reason r;
    elpis_reason_init(&r, split_cb, &c);
    elpis_reason_feed(&r, text, strlen(text));
    elpis_reason_flush(&r);
    elpis_reason_free(&r);
    if (c.st != ELPIS_OK) return c.st;
    trim(answer);
    trim(thought);
    return ELPIS_OK;
}
