/* gguf_write.c -- GGUF v3 writer.
 *
 * DESIGN
 * ------
 * Metadata is serialized the moment it is added, into one growable buffer
 * (`kvs`), because a key/value's bytes never depend on anything added later.
 * Tensors are only recorded (name, shape, type, where the bytes come from):
 * their offsets depend on every earlier tensor, so tensor infos are
 * serialized at write time, together with the header that carries the counts.
 * The output is then: [header | kvs | tensor infos] as one in-memory block,
 * zero padding, and each tensor's bytes streamed to the sink followed by zero
 * padding. Only tensor data can be large, and it is never buffered whole.
 *
 * INVARIANTS
 * - Offsets: tensor i starts at sum_{j<i} PAD(nbytes_j); every tensor, the
 *   last included, is padded, as llama.cpp's gguf.cpp writes (its reader
 *   rejects any other offset).
 * - Everything a writer can emit parses with gguf_parse: add_* enforces the
 *   reader's rules (and limits) up front, so the failure points at the call
 *   that caused it rather than at a later read.
 * - The first error is sticky (w->err); after it, add_* does nothing and
 *   write/to_buf refuse. This keeps builder code free of per-call checks.
 * - Outputs are untouched on failure: write renames a temporary file into
 *   place only when complete; to_buf restores the buffer's length.
 */
#include "elpis/gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Scalars and packed arrays are copied in host byte order; GGUF is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_write.c assumes a little-endian host"
#endif

#define GGUF_MAGIC           "GGUF"
#define GGUF_WRITE_VERSION   3u
#define GGUF_DEFAULT_ALIGN   32u
/* Same limits as the reader (gguf.c): longer keys or strings are rejected there. */
#define GGUF_W_MAX_KEY_LEN   ((1u << 16) - 1)
#define GGUF_W_MAX_STR_LEN   (1ull << 30)
#define FILL_CHUNK           ((size_t)1 << 20)

typedef enum { DATA_COPY, DATA_REF, DATA_FILL } data_mode;

typedef struct wtensor {
    char       *name;
    elpis_dtype type;
    uint32_t    n_dims;
    int64_t     ne[GGUF_MAX_DIMS];
    uint64_t    nbytes;          /* unpadded */
    data_mode   mode;
    const void *data;            /* COPY: owned copy; REF: caller's bytes; FILL: NULL */
    elpis_gguf_fill_fn fill;     /* FILL only */
    void       *user;
} wtensor;

struct elpis_gguf_writer {
    elpis_buf kvs;               /* serialized key/value pairs, in order added */
    uint64_t  n_kv;
    char    **keys;              /* copies of the keys, for duplicate checks */
    size_t    keys_cap;
    wtensor  *tensors;
    uint64_t  n_tensors;
    size_t    tensors_cap;
    uint32_t  alignment;         /* general.alignment or the default */
    elpis_error err;             /* first failure; err.code == ELPIS_OK while none */
};

/* ==== errors ================================================================ */

static elpis_status wfail(elpis_gguf_writer *w, elpis_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first failure only: later ones are usually its consequences. */
static elpis_status wfail(elpis_gguf_writer *w, elpis_status code, const char *fmt, ...) {
    if (w->err.code != ELPIS_OK) return w->err.code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err.msg, sizeof w->err.msg, fmt, ap);
    va_end(ap);
    w->err.code = code;
    return code;
}

const elpis_error *elpis_gguf_writer_error(const elpis_gguf_writer *w) { return &w->err; }

/* ==== lifetime ============================================================== */

elpis_gguf_writer *elpis_gguf_writer_new(void) {
    elpis_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGN;
    return w;
}

void elpis_gguf_writer_free(elpis_gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        if (w->tensors[i].mode == DATA_COPY) free((void *)w->tensors[i].data);
    }
    free(w->tensors);
    elpis_buf_free(&w->kvs);
    free(w);
}

/* ==== metadata ============================================================== */

static elpis_status put(elpis_gguf_writer *w, const void *p, size_t n) {
    if (elpis_buf_append(&w->kvs, p, n) != ELPIS_OK)
        return wfail(w, ELPIS_ENOMEM, "gguf writer: out of memory for metadata (%zu bytes)", w->kvs.len + n);
    return ELPIS_OK;
}

static elpis_status put_u32(elpis_gguf_writer *w, uint32_t v) { return put(w, &v, sizeof v); }
static elpis_status put_u64(elpis_gguf_writer *w, uint64_t v) { return put(w, &v, sizeof v); }

static elpis_status put_str(elpis_gguf_writer *w, const char *s, size_t len) {
    elpis_status st = put_u64(w, len);
    return st != ELPIS_OK ? st : put(w, s, len);
}

static uint64_t vtype_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool key_taken(const elpis_gguf_writer *w, const char *key) {
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return true;
    return false;
}

/* Validate `key`, remember it, and serialize "key, type". The caller then
 * appends the value. On any failure nothing more is written (sticky error). */
static elpis_status begin_kv(elpis_gguf_writer *w, const char *key, uint32_t type) {
    if (w->err.code != ELPIS_OK) return w->err.code;
    if (!key || !*key) return wfail(w, ELPIS_EINVAL, "gguf writer: empty metadata key");
    size_t len = strlen(key);
    if (len > GGUF_W_MAX_KEY_LEN) return wfail(w, ELPIS_EINVAL, "gguf writer: key of %zu bytes is too long", len);
    if (key_taken(w, key)) return wfail(w, ELPIS_EINVAL, "gguf writer: duplicate metadata key %s", key);
    /* the reader insists on this type, and so does llama.cpp */
    if (strcmp(key, "general.alignment") == 0 && type != GGUF_UINT32)
        return wfail(w, ELPIS_EINVAL, "gguf writer: general.alignment must be a uint32, not %s", gguf_vtype_name(type));
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? 2 * w->keys_cap : 16;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) return wfail(w, ELPIS_ENOMEM, "gguf writer: out of memory for keys");
        w->keys = k;
        w->keys_cap = cap;
    }
    if (!(w->keys[w->n_kv] = strdup(key))) return wfail(w, ELPIS_ENOMEM, "gguf writer: out of memory for keys");
    w->n_kv++;
    elpis_status st = put_str(w, key, len);
    return st != ELPIS_OK ? st : put_u32(w, type);
}

static elpis_status add_scalar(elpis_gguf_writer *w, const char *key, uint32_t type, const void *v) {
    if (!w) return ELPIS_EINVAL;
    elpis_status st = begin_kv(w, key, type);
    return st != ELPIS_OK ? st : put(w, v, vtype_size(type));
}

#define SCALAR_ADDER(fn, T, VT) \
    elpis_status fn(elpis_gguf_writer *w, const char *key, T v) { return add_scalar(w, key, VT, &v); }
SCALAR_ADDER(elpis_gguf_writer_add_u8, uint8_t, GGUF_UINT8)
SCALAR_ADDER(elpis_gguf_writer_add_i8, int8_t, GGUF_INT8)
SCALAR_ADDER(elpis_gguf_writer_add_u16, uint16_t, GGUF_UINT16)
SCALAR_ADDER(elpis_gguf_writer_add_i16, int16_t, GGUF_INT16)
SCALAR_ADDER(elpis_gguf_writer_add_i32, int32_t, GGUF_INT32)
SCALAR_ADDER(elpis_gguf_writer_add_u64, uint64_t, GGUF_UINT64)
SCALAR_ADDER(elpis_gguf_writer_add_i64, int64_t, GGUF_INT64)
SCALAR_ADDER(elpis_gguf_writer_add_f32, float, GGUF_FLOAT32)
SCALAR_ADDER(elpis_gguf_writer_add_f64, double, GGUF_FLOAT64)
#undef SCALAR_ADDER

/* u32 is special only because general.alignment is a u32 whose value shapes
 * the whole file. */
elpis_status elpis_gguf_writer_add_u32(elpis_gguf_writer *w, const char *key, uint32_t v) {
    if (!w) return ELPIS_EINVAL;
    if (key && strcmp(key, "general.alignment") == 0) {
        if (v == 0 || (v & (v - 1)) != 0)
            return wfail(w, ELPIS_EINVAL, "gguf writer: general.alignment %u is not a power of two", v);
        if (w->err.code == ELPIS_OK && !key_taken(w, key)) w->alignment = v;
    }
    return add_scalar(w, key, GGUF_UINT32, &v);
}

elpis_status elpis_gguf_writer_add_bool(elpis_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;   /* one byte on disk whatever sizeof(bool) is */
    return add_scalar(w, key, GGUF_BOOL, &b);
}

static elpis_status check_str(elpis_gguf_writer *w, const char *key, const char *v, size_t *len) {
    if (!v) return wfail(w, ELPIS_EINVAL, "gguf writer: NULL string for key %s", key ? key : "?");
    *len = strlen(v);
    if (*len > GGUF_W_MAX_STR_LEN)
        return wfail(w, ELPIS_EINVAL, "gguf writer: string of %zu bytes for key %s is too long", *len, key ? key : "?");
    return ELPIS_OK;
}

elpis_status elpis_gguf_writer_add_str(elpis_gguf_writer *w, const char *key, const char *v) {
    if (!w) return ELPIS_EINVAL;
    size_t len = 0;
    elpis_status st;
    if (w->err.code != ELPIS_OK) return w->err.code;
    if ((st = check_str(w, key, v, &len)) != ELPIS_OK || (st = begin_kv(w, key, GGUF_STRING)) != ELPIS_OK) return st;
    return put_str(w, v, len);
}

elpis_status elpis_gguf_writer_add_arr(elpis_gguf_writer *w, const char *key, uint32_t elem_type,
                                       const void *elems, size_t n) {
    if (!w) return ELPIS_EINVAL;
    if (w->err.code != ELPIS_OK) return w->err.code;
    uint64_t es = vtype_size(elem_type);
    if (es == 0)
        return wfail(w, ELPIS_EINVAL, "gguf writer: key %s: add_arr takes numeric elements, not %s",
                     key ? key : "?", gguf_vtype_name(elem_type));
    if (n > 0 && !elems) return wfail(w, ELPIS_EINVAL, "gguf writer: key %s: NULL array", key ? key : "?");
    if (n > SIZE_MAX / es) return wfail(w, ELPIS_EINVAL, "gguf writer: key %s: array of %zu elements is too long", key ? key : "?", n);
    elpis_status st = begin_kv(w, key, GGUF_ARRAY);
    if (st == ELPIS_OK) st = put_u32(w, elem_type);
    if (st == ELPIS_OK) st = put_u64(w, n);
    if (st == ELPIS_OK && n > 0) st = put(w, elems, n * es);
    return st;
}

elpis_status elpis_gguf_writer_add_arr_u32(elpis_gguf_writer *w, const char *key, const uint32_t *v, size_t n) {
    return elpis_gguf_writer_add_arr(w, key, GGUF_UINT32, v, n);
}

elpis_status elpis_gguf_writer_add_arr_i32(elpis_gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    return elpis_gguf_writer_add_arr(w, key, GGUF_INT32, v, n);
}

elpis_status elpis_gguf_writer_add_arr_f32(elpis_gguf_writer *w, const char *key, const float *v, size_t n) {
    return elpis_gguf_writer_add_arr(w, key, GGUF_FLOAT32, v, n);
}

elpis_status elpis_gguf_writer_add_arr_str(elpis_gguf_writer *w, const char *key, const char *const *v, size_t n) {
    if (!w) return ELPIS_EINVAL;
    if (w->err.code != ELPIS_OK) return w->err.code;
    if (n > 0 && !v) return wfail(w, ELPIS_EINVAL, "gguf writer: key %s: NULL array", key ? key : "?");
    size_t len = 0;
    for (size_t i = 0; i < n; i++)   /* validate all first: no half-written kv */
        if (check_str(w, key, v[i], &len) != ELPIS_OK) return w->err.code;
    elpis_status st = begin_kv(w, key, GGUF_ARRAY);
    if (st == ELPIS_OK) st = put_u32(w, GGUF_STRING);
    if (st == ELPIS_OK) st = put_u64(w, n);
    for (size_t i = 0; i < n && st == ELPIS_OK; i++) st = put_str(w, v[i], strlen(v[i]));
    return st;
}

/* ==== tensors =============================================================== */

elpis_status elpis_gguf_tensor_nbytes(elpis_dtype type, uint32_t n_dims, const int64_t *ne, uint64_t *out,
                                      elpis_error *err) {
    const elpis_type_info *ti = elpis_type_info_of((uint32_t)type);
    if (!ti) return elpis_fail(err, ELPIS_EINVAL, "unknown tensor type %u", (unsigned)type);
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || !ne)
        return elpis_fail(err, ELPIS_EINVAL, "%u dimensions (1..%d allowed)", n_dims, GGUF_MAX_DIMS);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0) return elpis_fail(err, ELPIS_EINVAL, "dimension %u is negative (%lld)", d, (long long)ne[d]);
        /* the reader's bound: element count below 2^62, so bytes fit in 64 bits */
        if (ne[d] != 0 && nel > (UINT64_MAX / 4) / (uint64_t)ne[d])
            return elpis_fail(err, ELPIS_EINVAL, "shape is too large");
        nel *= (uint64_t)ne[d];
    }
    if (ne[0] % ti->blck != 0)
        return elpis_fail(err, ELPIS_EINVAL, "row of %lld is not a multiple of the %s block (%d)", (long long)ne[0],
                          ti->name, ti->blck);
    *out = nel / (uint64_t)ti->blck * ti->bytes;
    return ELPIS_OK;
}

static bool name_taken(const elpis_gguf_writer *w, const char *name) {
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return true;
    return false;
}

/* Validate and append a tensor record; *out points at it (data fields unset). */
static elpis_status new_tensor(elpis_gguf_writer *w, const char *name, elpis_dtype type, uint32_t n_dims,
                               const int64_t *ne, wtensor **out) {
    if (w->err.code != ELPIS_OK) return w->err.code;
    if (!name || !*name) return wfail(w, ELPIS_EINVAL, "gguf writer: empty tensor name");
    if (strlen(name) >= GGUF_MAX_NAME)
        return wfail(w, ELPIS_EINVAL, "gguf writer: tensor name '%s' is %zu bytes (at most %d)", name, strlen(name), GGUF_MAX_NAME - 1);
    if (name_taken(w, name)) return wfail(w, ELPIS_EINVAL, "gguf writer: duplicate tensor name '%s'", name);
    elpis_error e = { 0 };
    uint64_t nbytes = 0;
    if (elpis_gguf_tensor_nbytes(type, n_dims, ne, &nbytes, &e) != ELPIS_OK)
        return wfail(w, ELPIS_EINVAL, "gguf writer: tensor '%s': %s", name, e.msg);
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 16;
        wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return wfail(w, ELPIS_ENOMEM, "gguf writer: out of memory for tensors");
        w->tensors = t;
        w->tensors_cap = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return wfail(w, ELPIS_ENOMEM, "gguf writer: out of memory for tensors");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    t->mode = DATA_REF;   /* nothing owned until the caller says otherwise */
    w->n_tensors++;
    *out = t;
    return ELPIS_OK;
}

static elpis_status check_data(elpis_gguf_writer *w, const char *name, elpis_dtype type, uint32_t n_dims,
                               const int64_t *ne, const void *data, size_t nbytes) {
    elpis_error e = { 0 };
    uint64_t want = 0;
    if (w->err.code != ELPIS_OK) return w->err.code;
    if (elpis_gguf_tensor_nbytes(type, n_dims, ne, &want, &e) != ELPIS_OK)
        return wfail(w, ELPIS_EINVAL, "gguf writer: tensor '%s': %s", name ? name : "?", e.msg);
    if (want != nbytes)
        return wfail(w, ELPIS_EINVAL, "gguf writer: tensor '%s': %zu bytes given, its shape needs %llu",
                     name ? name : "?", nbytes, (unsigned long long)want);
    if (nbytes > 0 && !data) return wfail(w, ELPIS_EINVAL, "gguf writer: tensor '%s': NULL data", name ? name : "?");
    return ELPIS_OK;
}

elpis_status elpis_gguf_writer_add_tensor(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                          uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes) {
    if (!w) return ELPIS_EINVAL;
    elpis_status st = check_data(w, name, type, n_dims, ne, data, nbytes);
    if (st != ELPIS_OK) return st;
    void *copy = malloc(nbytes ? nbytes : 1);
    if (!copy) return wfail(w, ELPIS_ENOMEM, "gguf writer: tensor '%s': out of memory for %zu bytes", name, nbytes);
    if (nbytes) memcpy(copy, data, nbytes);
    wtensor *t = NULL;
    if ((st = new_tensor(w, name, type, n_dims, ne, &t)) != ELPIS_OK) { free(copy); return st; }
    t->mode = DATA_COPY;
    t->data = copy;
    return ELPIS_OK;
}

elpis_status elpis_gguf_writer_add_tensor_ref(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                              uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes) {
    if (!w) return ELPIS_EINVAL;
    elpis_status st = check_data(w, name, type, n_dims, ne, data, nbytes);
    wtensor *t = NULL;
    if (st != ELPIS_OK || (st = new_tensor(w, name, type, n_dims, ne, &t)) != ELPIS_OK) return st;
    t->mode = DATA_REF;
    t->data = data;
    return ELPIS_OK;
}

elpis_status elpis_gguf_writer_add_tensor_fill(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                               uint32_t n_dims, const int64_t *ne, elpis_gguf_fill_fn fill,
                                               void *user) {
    if (!w) return ELPIS_EINVAL;
    if (!fill) return wfail(w, ELPIS_EINVAL, "gguf writer: tensor '%s': NULL fill callback", name ? name : "?");
    wtensor *t = NULL;
    elpis_status st = new_tensor(w, name, type, n_dims, ne, &t);
    if (st != ELPIS_OK) return st;
    t->mode = DATA_FILL;
    t->fill = fill;
    t->user = user;
    return ELPIS_OK;
}

/* ==== output ================================================================ */

static uint64_t pad_to(uint64_t n, uint64_t align) { return (align - n % align) % align; }

/* Where bytes go: a FILE (write) or an elpis_buf (to_buf). `pos` counts bytes
 * written, which is all padding needs. */
typedef struct sink {
    FILE       *f;
    elpis_buf  *buf;
    uint64_t    pos;
    const char *name;        /* for messages */
    elpis_error *err;
} sink;

static elpis_status sink_put(sink *s, const void *p, size_t n) {
    if (n == 0) return ELPIS_OK;
    if (s->f) {
        if (fwrite(p, 1, n, s->f) != n) return elpis_fail(s->err, ELPIS_EIO, "%s: write: %s", s->name, strerror(errno));
    } else if (elpis_buf_append(s->buf, p, n) != ELPIS_OK) {
        return elpis_fail(s->err, ELPIS_ENOMEM, "%s: out of memory at %llu bytes", s->name, (unsigned long long)s->pos);
    }
    s->pos += n;
    return ELPIS_OK;
}

static elpis_status sink_pad(sink *s, uint64_t align) {
    static const uint8_t zeros[256];   /* alignment is usually 32; loop for larger */
    uint64_t n = pad_to(s->pos, align);
    elpis_status st = ELPIS_OK;
    while (n > 0 && st == ELPIS_OK) {
        size_t k = (size_t)ELPIS_MIN(n, (uint64_t)sizeof zeros);
        st = sink_put(s, zeros, k);
        n -= k;
    }
    return st;
}

static elpis_status hdr_put(elpis_buf *b, const void *p, size_t n) { return elpis_buf_append(b, p, n); }

/* Header, metadata and tensor infos, with offsets computed from the padded sizes. */
static elpis_status build_head(const elpis_gguf_writer *w, elpis_buf *b) {
    uint32_t version = GGUF_WRITE_VERSION;
    int64_t n_tensors = (int64_t)w->n_tensors, n_kv = (int64_t)w->n_kv;
    elpis_status st = hdr_put(b, GGUF_MAGIC, 4);
    if (!st) st = hdr_put(b, &version, 4);
    if (!st) st = hdr_put(b, &n_tensors, 8);
    if (!st) st = hdr_put(b, &n_kv, 8);
    if (!st) st = hdr_put(b, w->kvs.data, w->kvs.len);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < w->n_tensors && !st; i++) {
        const wtensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t type = (uint32_t)t->type;
        st = hdr_put(b, &len, 8);
        if (!st) st = hdr_put(b, t->name, len);
        if (!st) st = hdr_put(b, &t->n_dims, 4);
        if (!st) st = hdr_put(b, t->ne, 8 * (size_t)t->n_dims);
        if (!st) st = hdr_put(b, &type, 4);
        if (!st) st = hdr_put(b, &offset, 8);
        offset += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    return st;
}

/* Stream one FILL tensor through `chunk`, which fill_chunk_size() made large
 * enough for one step: 1 MiB of whole rows, or one row if a row is larger. */
static elpis_status write_filled(sink *s, const wtensor *t, uint8_t *chunk) {
    if (t->nbytes == 0) return ELPIS_OK;   /* and so row > 0 below */
    size_t row = elpis_row_bytes(t->type, t->ne[0]);
    size_t step = ELPIS_MAX(row, FILL_CHUNK / row * row);
    for (uint64_t off = 0; off < t->nbytes;) {
        size_t n = (size_t)ELPIS_MIN((uint64_t)step, t->nbytes - off);
        elpis_error cb = { 0 };
        memset(chunk, 0, n);   /* a lazy callback must not leak heap bytes into a file */
        elpis_status st = t->fill(t->user, t->name, off, chunk, n, &cb);
        if (st != ELPIS_OK)
            return elpis_fail(s->err, st, "%s: tensor '%s': %s", s->name, t->name, cb.msg[0] ? cb.msg : "fill callback failed");
        if ((st = sink_put(s, chunk, n)) != ELPIS_OK) return st;
        off += n;
    }
    return ELPIS_OK;
}

/* Largest chunk any FILL tensor needs: 1 MiB, or one row if a row is bigger. */
static size_t fill_chunk_size(const elpis_gguf_writer *w) {
    size_t cap = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        if (t->mode != DATA_FILL || t->nbytes == 0) continue;
        cap = ELPIS_MAX(cap, ELPIS_MAX(FILL_CHUNK, elpis_row_bytes(t->type, t->ne[0])));
    }
    return cap;
}

static elpis_status write_all(const elpis_gguf_writer *w, sink *s) {
    elpis_buf head = { 0 };
    uint8_t *chunk = NULL;
    size_t cap = fill_chunk_size(w);
    elpis_status st = ELPIS_OK;
    if (build_head(w, &head) != ELPIS_OK || (cap && !(chunk = malloc(cap)))) {
        st = elpis_fail(s->err, ELPIS_ENOMEM, "%s: out of memory for the GGUF header", s->name);
        goto done;
    }
    if ((st = sink_put(s, head.data, head.len)) != ELPIS_OK || (st = sink_pad(s, w->alignment)) != ELPIS_OK) goto done;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        st = t->mode == DATA_FILL ? write_filled(s, t, chunk) : sink_put(s, t->data, (size_t)t->nbytes);
        if (st != ELPIS_OK || (st = sink_pad(s, w->alignment)) != ELPIS_OK) goto done;
    }
done:
    free(chunk);
    elpis_buf_free(&head);
    return st;
}

static elpis_status sticky(const elpis_gguf_writer *w, elpis_error *err) {
    if (!w) return elpis_fail(err, ELPIS_ENOMEM, "gguf writer: no writer (elpis_gguf_writer_new failed?)");
    if (w->err.code == ELPIS_OK) return ELPIS_OK;
    if (err) *err = w->err;
    return w->err.code;
}

elpis_status elpis_gguf_writer_to_buf(elpis_gguf_writer *w, elpis_buf *out, elpis_error *err) {
    elpis_status st = sticky(w, err);
    if (st != ELPIS_OK) return st;
    size_t len0 = out->len;
    sink s = { .buf = out, .name = "gguf writer", .err = err };
    if ((st = write_all(w, &s)) != ELPIS_OK && out->data) {
        out->len = len0;          /* leave the caller's buffer as it was */
        out->data[len0] = 0;
    }
    return st;
}

elpis_status elpis_gguf_writer_write(elpis_gguf_writer *w, const char *path, elpis_error *err) {
    static atomic_uint counter;
    elpis_status st = sticky(w, err);
    if (st != ELPIS_OK) return st;
    char *tmp = NULL;
    FILE *f = NULL;
    bool created = false;   /* unlink only a file we made */
    if (asprintf(&tmp, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1)) < 0) {
        tmp = NULL;
        st = elpis_fail(err, ELPIS_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* O_EXCL: never follow or clobber something already there; 0666 & ~umask like any new file */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) { st = elpis_fail(err, ELPIS_EIO, "%s: %s", tmp, strerror(errno)); goto fail; }
    created = true;
    if (!(f = fdopen(fd, "wb"))) { close(fd); st = elpis_fail(err, ELPIS_EIO, "%s: %s", tmp, strerror(errno)); goto fail; }
    sink s = { .f = f, .name = path, .err = err };
    if ((st = write_all(w, &s)) != ELPIS_OK) goto fail;
    /* flush and sync before the rename, so `path` never names a partial file */
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) { st = elpis_fail(err, ELPIS_EIO, "%s: write: %s", path, strerror(errno)); goto fail; }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) { st = elpis_fail(err, ELPIS_EIO, "%s: close: %s", path, strerror(errno)); goto fail; }
    if (rename(tmp, path) != 0) { st = elpis_fail(err, ELPIS_EIO, "%s: rename: %s", path, strerror(errno)); goto fail; }
    free(tmp);
    return ELPIS_OK;
fail:
    if (f) fclose(f);
    if (created) unlink(tmp);
    free(tmp);
    return st;
}
