/* base.c -- errors, arena, buffers, files, half floats, clock, logging.
 *
 * Nothing here knows about models or requests. Logging goes to stderr (never
 * stdout: stdout is data for the CLI and protocol for `elpis mcp`) and is
 * level-gated before formatting.
 */
#include "elpis/base.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ----------------------------------------------------------------- */

elpis_status elpis_fail(elpis_error *err, elpis_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *elpis_status_name(elpis_status code) {
    switch (code) {
    case ELPIS_OK: return "ok";
    case ELPIS_EINVAL: return "invalid argument";
    case ELPIS_ENOMEM: return "out of memory";
    case ELPIS_EIO: return "i/o error";
    case ELPIS_EFORMAT: return "malformed input";
    case ELPIS_EUNSUPPORTED: return "unsupported";
    case ELPIS_ECANCELLED: return "cancelled";
    case ELPIS_ERANGE: return "out of range";
    }
    return "unknown error";
}

/* ---- arena -------------------------------------------------------------------- */

struct elpis_arena_chunk {
    elpis_arena_chunk *next;
    size_t size, used;
    _Alignas(64) unsigned char data[];
};

void elpis_arena_init(elpis_arena *a, size_t chunk_size) {
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 64 * 1024;
    a->used_total = 0;
}

void *elpis_arena_alloc(elpis_arena *a, size_t size, size_t align) {
    if (align == 0) align = 16;
    elpis_arena_chunk *c = a->head;
    if (c) {
        size_t off = (c->used + align - 1) & ~(align - 1);
        if (off <= c->size && size <= c->size - off) {
            c->used = off + size;
            a->used_total += size;
            memset(c->data + off, 0, size);
            return c->data + off;
        }
    }
    size_t want = size + align > a->chunk_size ? size + align : a->chunk_size;
    if (want < size) return NULL; /* overflow */
    elpis_arena_chunk *n = malloc(sizeof *n + want);
    if (!n) return NULL;
    n->size = want;
    n->used = 0;
    n->next = a->head;
    a->head = n;
    size_t off = 0; /* data is 64-aligned */
    n->used = off + size;
    a->used_total += size;
    memset(n->data, 0, size);
    return n->data;
}

char *elpis_arena_strndup(elpis_arena *a, const char *s, size_t n) {
    char *p = elpis_arena_alloc(a, n + 1, 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

void elpis_arena_reset(elpis_arena *a) {
    elpis_arena_chunk *c = a->head;
    while (c && c->next) {
        elpis_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = c;
    if (c) c->used = 0;
    a->used_total = 0;
}

void elpis_arena_free(elpis_arena *a) {
    elpis_arena_chunk *c = a->head;
    while (c) {
        elpis_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_total = 0;
}

/* ---- buffers ------------------------------------------------------------------ */

static elpis_status buf_reserve(elpis_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return ELPIS_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) return ELPIS_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) return ELPIS_ENOMEM;
    b->data = p;
    b->cap = cap;
    return ELPIS_OK;
}

elpis_status elpis_buf_append(elpis_buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n) != ELPIS_OK) return ELPIS_ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return ELPIS_OK;
}

elpis_status elpis_buf_puts(elpis_buf *b, const char *s) { return elpis_buf_append(b, s, strlen(s)); }

elpis_status elpis_buf_printf(elpis_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return ELPIS_EINVAL;
    if (buf_reserve(b, (size_t)n) != ELPIS_OK) return ELPIS_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return ELPIS_OK;
}

void elpis_buf_free(elpis_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

elpis_status elpis_tokens_push(elpis_tokens *t, int32_t id) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        int32_t *p = realloc(t->ids, cap * sizeof *p);
        if (!p) return ELPIS_ENOMEM;
        t->ids = p;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return ELPIS_OK;
}

void elpis_tokens_free(elpis_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ---- files ---------------------------------------------------------------------- */

elpis_status elpis_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return elpis_fail(err, ELPIS_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) { st = elpis_fail(err, ELPIS_EIO, "%s: %s", path, strerror(errno)); goto fail; }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = elpis_fail(err, ELPIS_ERANGE, "%s: %lld bytes exceeds the limit of %zu", path, (long long)sb.st_size, max_bytes);
        goto fail;
    }
    size_t n = (size_t)sb.st_size;
    if (!(buf = malloc(n + 1))) { st = elpis_fail(err, ELPIS_ENOMEM, "%s: %zu bytes", path, n); goto fail; }
    if (n && fread(buf, 1, n, f) != n) { st = elpis_fail(err, ELPIS_EIO, "%s: short read", path); goto fail; }
    buf[n] = 0;
    *out = buf;
    if (out_len) *out_len = n;
    buf = NULL;
fail:
    free(buf);
    fclose(f);
    return st;
}

/* ---- half floats ----------------------------------------------------------------- */

float elpis_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) v.u = sign | 0x7f800000u | (man << 13);
    else v.u = sign | ((exp + 112) << 23) | (man << 13);
    return v.f;
}

uint16_t elpis_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    uint32_t u = v.u;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10) return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into exp: correct */
    return (uint16_t)(sign | half);
}

uint16_t elpis_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 64);
    return (uint16_t)((v.u + 0x7fff + ((v.u >> 16) & 1)) >> 16);
}

/* ---- clock and log ----------------------------------------------------------------- */

double elpis_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static atomic_int g_log_level = ELPIS_LOG_INFO;

void elpis_log_set_level(elpis_log_level lvl) { atomic_store(&g_log_level, (int)lvl); }

void elpis_log(elpis_log_level lvl, const char *fmt, ...) {
    if ((int)lvl < atomic_load(&g_log_level)) return;
    static const char *names[] = { "debug", "info", "warn", "error" };
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "elpis: %s: %s\n", names[lvl], line);
}

bool elpis_write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* ---- INI lines ---------------------------------------------------------------------------- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

elpis_status elpis_ini_line(char *line, char *section, size_t cap, const char *src, char **key, char **val,
                            elpis_error *err) {
    *key = *val = NULL;
    line = trim(line);
    if (!*line || *line == '#' || *line == ';') return ELPIS_OK;
    if (*line == '[') {
        char *close = strchr(line, ']');
        if (!close) return elpis_fail(err, ELPIS_EINVAL, "%s: unterminated section header", src);
        *close = 0;
        snprintf(section, cap, "%s", trim(line + 1));
        return ELPIS_OK;
    }
    char *eq = strchr(line, '=');
    if (!eq) return elpis_fail(err, ELPIS_EINVAL, "%s: expected key = value", src);
    *eq = 0;
    char *k = trim(line), *v = trim(eq + 1);
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) { v[n - 1] = 0; v++; }
    *key = k;
    *val = v;
    return ELPIS_OK;
}
