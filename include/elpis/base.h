/* base.h -- the small pieces every Elpis module uses.
 *
 * Error handling (one idiom everywhere):
 *   Functions that can fail return `elpis_status` (ELPIS_OK == 0) and take an
 *   `elpis_error *err` last. On failure they fill err->msg with one line that
 *   names the thing and the problem, release what they acquired (goto fail),
 *   and leave their outputs untouched. `err` may be NULL.
 *
 *       elpis_status st = ELPIS_OK;
 *       if (!(buf = malloc(n))) { st = elpis_fail(err, ELPIS_ENOMEM, "x: %zu bytes", n); goto fail; }
 *       ...
 *   fail:
 *       free(buf);
 *       return st;
 *
 * Memory: long-lived objects are malloc'd once at load; per-request and
 * per-parse scratch comes from an elpis_arena, freed in one call.
 */
#ifndef ELPIS_BASE_H
#define ELPIS_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum elpis_status {
    ELPIS_OK = 0,
    ELPIS_EINVAL,      /* bad argument or bad input from a user */
    ELPIS_ENOMEM,      /* allocation failed or would exceed a limit */
    ELPIS_EIO,         /* open/read/mmap failed */
    ELPIS_EFORMAT,     /* malformed file or message */
    ELPIS_EUNSUPPORTED,/* well-formed but not something we implement */
    ELPIS_ECANCELLED,  /* the caller asked us to stop */
    ELPIS_ERANGE,      /* a value outside its allowed range (context full, ...) */
} elpis_status;

#define ELPIS_ERROR_MAX 512
typedef struct elpis_error {
    elpis_status code;
    char msg[ELPIS_ERROR_MAX];
} elpis_error;

/* Fill `err` (if not NULL) and return `code`, so it can be used as
 * `return elpis_fail(err, ELPIS_EINVAL, "...")`. */
elpis_status elpis_fail(elpis_error *err, elpis_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *elpis_status_name(elpis_status code);

/* ---- arena: bump allocator in chunks; freed all at once ----------------- */
typedef struct elpis_arena_chunk elpis_arena_chunk;
typedef struct elpis_arena {
    elpis_arena_chunk *head;
    size_t chunk_size;   /* default size of a new chunk */
    size_t used_total;   /* bytes handed out, for metrics and tests */
} elpis_arena;

void  elpis_arena_init(elpis_arena *a, size_t chunk_size);
void *elpis_arena_alloc(elpis_arena *a, size_t size, size_t align); /* NULL on OOM; zeroed */
char *elpis_arena_strndup(elpis_arena *a, const char *s, size_t n);
void  elpis_arena_reset(elpis_arena *a);   /* keep the first chunk, drop the rest */
void  elpis_arena_free(elpis_arena *a);

/* ---- growable byte buffer (always NUL-terminated) ------------------------ */
typedef struct elpis_buf {
    char  *data;
    size_t len, cap;
} elpis_buf;

elpis_status elpis_buf_append(elpis_buf *b, const void *p, size_t n);
elpis_status elpis_buf_puts(elpis_buf *b, const char *s);
elpis_status elpis_buf_printf(elpis_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void elpis_buf_free(elpis_buf *b);

/* ---- growable token-id vector --------------------------------------------- */
typedef struct elpis_tokens {
    int32_t *ids;
    size_t   n, cap;
} elpis_tokens;

elpis_status elpis_tokens_push(elpis_tokens *t, int32_t id);
void elpis_tokens_free(elpis_tokens *t);

/* ---- files ---------------------------------------------------------------- */
/* Read a whole file (at most max_bytes) into a NUL-terminated malloc'd buffer. */
elpis_status elpis_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, elpis_error *err);
/* Write all n bytes to fd, retrying short writes and EINTR. false on error (errno set). */
bool elpis_write_all(int fd, const void *p, size_t n);

/* ---- INI lines (the server's and psyche's config files) --------------------- */
/* Split one line in place. Blank and comment (# ;) lines give *key = NULL;
 * a [header] updates section (cap bytes) and gives *key = NULL; "key = value"
 * gives trimmed *key and *val (one pair of matching quotes removed from val).
 * Errors name src (e.g. "file:line"). */
elpis_status elpis_ini_line(char *line, char *section, size_t cap, const char *src, char **key, char **val,
                            elpis_error *err);

/* ---- half floats ------------------------------------------------------------ */
float    elpis_f16_to_f32(uint16_t h);
uint16_t elpis_f32_to_f16(float f);          /* round to nearest even */
static inline float elpis_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
uint16_t elpis_f32_to_bf16(float f);         /* round to nearest even, NaN kept */

/* ---- time and logging --------------------------------------------------------- */
double elpis_now_ms(void);                   /* monotonic clock, milliseconds */

typedef enum { ELPIS_LOG_DEBUG, ELPIS_LOG_INFO, ELPIS_LOG_WARN, ELPIS_LOG_ERROR } elpis_log_level;
void elpis_log_set_level(elpis_log_level lvl);
void elpis_log(elpis_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ELPIS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ELPIS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ELPIS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
