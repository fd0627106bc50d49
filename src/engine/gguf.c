/* gguf.c -- GGUF v2/v3 parser.
 *
 * DESIGN
 * ------
 * The whole file is mmap'd read-only. A cursor (`rd`) walks the header; every
 * read goes through rd_need(), which checks the bytes remaining, so the parser
 * can never read past the end whatever the file says. Counts and lengths from
 * the file are checked against the bytes that remain BEFORE anything is
 * allocated for them: an array of n elements needs at least n bytes of file
 * (a string at least 8), so no allocation can exceed a small multiple of the
 * file size. The first problem found ends the parse with one line:
 *
 *     FILE: PROBLEM at offset N
 *
 * Tensor data is validated as llama.cpp's gguf.cpp does: known type, ne[0] a
 * multiple of the block size, non-negative dims, offsets that are aligned and
 * inside the file. (We do not insist on tight packing: a gap between tensors
 * is harmless to a reader, while an overlap or an out-of-range offset is not.)
 */
#include "elpis/gguf.h"

#include "elpis/quant.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Limits that no real model approaches, so anything beyond is corrupt. */
#define GGUF_MAX_KEY_LEN   (1u << 16)
#define GGUF_MAX_STR_LEN   (1ull << 30)

typedef struct rd {
    const uint8_t *base;
    uint64_t size, pos;
    const char *name;
    elpis_error *err;
} rd;

static elpis_status rd_fail(rd *r, const char *what) {
    return elpis_fail(r->err, ELPIS_EFORMAT, "%s: %s at offset %llu", r->name, what, (unsigned long long)r->pos);
}

static bool rd_need(const rd *r, uint64_t n) { return n <= r->size - r->pos; }

static elpis_status rd_bytes(rd *r, void *dst, uint64_t n, const char *what) {
    if (!rd_need(r, n)) {
        char msg[96];
        snprintf(msg, sizeof msg, "truncated %s", what);
        return rd_fail(r, msg);
    }
    memcpy(dst, r->base + r->pos, n);
    r->pos += n;
    return ELPIS_OK;
}

/* Files are little-endian and so is every machine we build for (checked in gguf_parse). */
#define RD_SCALAR(fn, T) \
    static elpis_status fn(rd *r, T *out, const char *what) { return rd_bytes(r, out, sizeof *out, what); }
RD_SCALAR(rd_u32, uint32_t)
RD_SCALAR(rd_u64, uint64_t)
RD_SCALAR(rd_i64, int64_t)

static elpis_status rd_str(rd *r, gguf_str *s, uint64_t max_len, const char *what) {
    uint64_t len = 0;
    if (rd_u64(r, &len, what) != ELPIS_OK) return ELPIS_EFORMAT;
    if (len > max_len || !rd_need(r, len)) {
        r->pos -= 8;
        char msg[128];
        snprintf(msg, sizeof msg, "%s length %llu exceeds the file", what, (unsigned long long)len);
        if (len > max_len) snprintf(msg, sizeof msg, "%s length %llu is absurd", what, (unsigned long long)len);
        return rd_fail(r, msg);
    }
    s->ptr = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += len;
    return ELPIS_OK;
}

/* Byte size of a scalar value type; 0 for STRING/ARRAY/unknown. */
static uint64_t vtype_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_vtype_name(uint32_t t) {
    static const char *names[] = { "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                   "bool", "string", "array", "uint64", "int64", "float64" };
    return t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

/* Widen a scalar at p of type t into kv->v. */
static void load_scalar(gguf_kv *kv, uint32_t t, const uint8_t *p) {
    switch (t) {
    case GGUF_UINT8:  kv->v.u64 = p[0]; break;
    case GGUF_INT8:   kv->v.i64 = (int8_t)p[0]; break;
    case GGUF_BOOL:   kv->v.b = p[0] != 0; break;
    case GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u64 = x; break; }
    case GGUF_INT16:  { int16_t x; memcpy(&x, p, 2); kv->v.i64 = x; break; }
    case GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u64 = x; break; }
    case GGUF_INT32:  { int32_t x; memcpy(&x, p, 4); kv->v.i64 = x; break; }
    case GGUF_FLOAT32:{ float x; memcpy(&x, p, 4); kv->v.f64 = x; break; }
    case GGUF_UINT64: memcpy(&kv->v.u64, p, 8); break;
    case GGUF_INT64:  memcpy(&kv->v.i64, p, 8); break;
    case GGUF_FLOAT64:memcpy(&kv->v.f64, p, 8); break;
    default: break;
    }
}

static elpis_status parse_array(rd *r, gguf_kv *kv) {
    uint32_t et = 0;
    uint64_t n = 0;
    if (rd_u32(r, &et, "array element type") != ELPIS_OK) return ELPIS_EFORMAT;
    if (et == GGUF_ARRAY) { r->pos -= 4; return rd_fail(r, "nested array"); }
    if (et >= GGUF_VTYPE_COUNT) { r->pos -= 4; return rd_fail(r, "unknown array element type"); }
    if (rd_u64(r, &n, "array length") != ELPIS_OK) return ELPIS_EFORMAT;
    kv->arr_type = et;
    kv->arr_n = n;
    if (et == GGUF_STRING) {
        /* every string needs 8 length bytes: bound n before allocating */
        if (n > (r->size - r->pos) / 8) { r->pos -= 8; return rd_fail(r, "string array length exceeds the file"); }
        kv->arr_str = calloc(n ? n : 1, sizeof *kv->arr_str);
        if (!kv->arr_str) return elpis_fail(r->err, ELPIS_ENOMEM, "%s: %llu strings", r->name, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(r, &kv->arr_str[i], GGUF_MAX_STR_LEN, "array string") != ELPIS_OK) return ELPIS_EFORMAT;
        return ELPIS_OK;
    }
    uint64_t es = vtype_size(et);
    if (n > (r->size - r->pos) / es) { r->pos -= 8; return rd_fail(r, "array length exceeds the file"); }
    kv->arr_data = r->base + r->pos;
    r->pos += n * es;
    return ELPIS_OK;
}

static elpis_status parse_kv(rd *r, gguf_kv *kv) {
    if (rd_str(r, &kv->key, GGUF_MAX_KEY_LEN, "key") != ELPIS_OK) return ELPIS_EFORMAT;
    if (kv->key.len == 0) return rd_fail(r, "empty key");
    if (rd_u32(r, &kv->type, "value type") != ELPIS_OK) return ELPIS_EFORMAT;
    if (kv->type >= GGUF_VTYPE_COUNT) { r->pos -= 4; return rd_fail(r, "unknown value type"); }
    if (kv->type == GGUF_STRING) return rd_str(r, &kv->v.str, GGUF_MAX_STR_LEN, "string value");
    if (kv->type == GGUF_ARRAY) return parse_array(r, kv);
    uint64_t es = vtype_size(kv->type);
    if (!rd_need(r, es)) return rd_fail(r, "truncated value");
    load_scalar(kv, kv->type, r->base + r->pos);
    r->pos += es;
    return ELPIS_OK;
}

static bool str_eq(gguf_str a, gguf_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

static int cmp_str(const void *a, const void *b) {
    const gguf_str *x = *(const gguf_str *const *)a, *y = *(const gguf_str *const *)b;
    int c = memcmp(x->ptr, y->ptr, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Names must be unique. Sorting pointers keeps this O(n log n) even for a
 * hostile file with a hundred thousand keys. */
static elpis_status check_unique(rd *r, const void *items, uint64_t n, size_t stride, size_t off, const char *what) {
    if (n < 2) return ELPIS_OK;
    const gguf_str **v = malloc(n * sizeof *v);
    if (!v) return elpis_fail(r->err, ELPIS_ENOMEM, "%s: %s table", r->name, what);
    for (uint64_t i = 0; i < n; i++) v[i] = (const gguf_str *)((const char *)items + i * stride + off);
    qsort(v, n, sizeof *v, cmp_str);
    elpis_status st = ELPIS_OK;
    for (uint64_t i = 1; i < n && st == ELPIS_OK; i++)
        if (str_eq(*v[i - 1], *v[i])) {
            char msg[160];
            r->pos = (uint64_t)(v[i]->ptr - (const char *)r->base);
            snprintf(msg, sizeof msg, "duplicate %s '%.*s'", what, (int)ELPIS_MIN(v[i]->len, 64), v[i]->ptr);
            st = rd_fail(r, msg);
        }
    free(v);
    return st;
}

static elpis_status parse_tensor_info(rd *r, gguf_file *f, uint64_t idx) {
    gguf_tensor *t = &f->tensors[idx];
    char msg[160];
    if (rd_str(r, &t->name, GGUF_MAX_KEY_LEN, "tensor name") != ELPIS_OK) return ELPIS_EFORMAT;
    if (t->name.len >= GGUF_MAX_NAME) return rd_fail(r, "tensor name too long");
    if (rd_u32(r, &t->n_dims, "tensor dims") != ELPIS_OK) return ELPIS_EFORMAT;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) { r->pos -= 4; return rd_fail(r, "tensor dims out of range"); }
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd_i64(r, &t->ne[d], "tensor shape") != ELPIS_OK) return ELPIS_EFORMAT;
        if (t->ne[d] < 0) { r->pos -= 8; return rd_fail(r, "negative tensor dimension"); }
    }
    if (rd_u32(r, &t->type, "tensor type") != ELPIS_OK) return ELPIS_EFORMAT;
    const elpis_type_info *ti = t->type == ELPIS_Q8_S || t->type == ELPIS_Q8_KS ? NULL : elpis_type_info_of(t->type);   /* ours, in memory only */
    if (!ti) {
        r->pos -= 4;
        snprintf(msg, sizeof msg, "tensor '%.*s' has unknown type %u", (int)t->name.len, t->name.ptr, t->type);
        return rd_fail(r, msg);
    }
    if (t->ne[0] % ti->blck != 0) {
        snprintf(msg, sizeof msg, "tensor '%.*s' row of %lld is not a multiple of the %s block (%d)",
                 (int)t->name.len, t->name.ptr, (long long)t->ne[0], ti->name, ti->blck);
        return rd_fail(r, msg);
    }
    /* element count and bytes, overflow-checked: each dim < 2^62 and product bounded by file size */
    uint64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && nel > (UINT64_MAX / 4) / (uint64_t)t->ne[d]) return rd_fail(r, "tensor too large");
        nel *= (uint64_t)t->ne[d];
    }
    t->nbytes = nel / (uint64_t)ti->blck * ti->bytes;
    return rd_u64(r, &t->offset, "tensor offset");
}

/* Resolve data pointers: aligned, in range, non-overlapping in file order. */
static elpis_status place_tensors(rd *r, gguf_file *f) {
    char msg[200];
    uint64_t data_size = f->size - f->data_offset, end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        const char *problem = NULL;
        if (t->offset % f->alignment != 0) problem = "is not aligned";
        else if (t->offset > data_size || t->nbytes > data_size - t->offset) problem = "is outside the file";
        else if (t->offset < end) problem = "overlaps the previous tensor";
        if (problem) {
            r->pos = f->data_offset + t->offset;
            snprintf(msg, sizeof msg, "tensor '%.*s' data (offset %llu, %llu bytes) %s", (int)t->name.len,
                     t->name.ptr, (unsigned long long)t->offset, (unsigned long long)t->nbytes, problem);
            return rd_fail(r, msg);
        }
        t->data = f->base + f->data_offset + t->offset;
        end = t->offset + t->nbytes;
    }
    return ELPIS_OK;
}

static elpis_status parse_header(rd *r, gguf_file *f) {
    char magic[4];
    int64_t n_tensors, n_kv;
    if (rd_bytes(r, magic, 4, "magic") != ELPIS_OK) return ELPIS_EFORMAT;
    if (memcmp(magic, "GGUF", 4) != 0) { r->pos = 0; return rd_fail(r, "bad magic (not a GGUF file)"); }
    if (rd_u32(r, &f->version, "version") != ELPIS_OK) return ELPIS_EFORMAT;
    if (f->version == 1) { r->pos -= 4; return rd_fail(r, "GGUF v1 is not supported"); }
    if ((f->version & 0xFFFF) == 0) { r->pos -= 4; return rd_fail(r, "big-endian GGUF is not supported"); }
    if (f->version > 3) { r->pos -= 4; return rd_fail(r, "unsupported GGUF version"); }
    if (rd_i64(r, &n_tensors, "tensor count") != ELPIS_OK) return ELPIS_EFORMAT;
    if (rd_i64(r, &n_kv, "metadata count") != ELPIS_OK) return ELPIS_EFORMAT;
    /* a kv needs >= 8+1+4+1 bytes, a tensor info >= 8+1+4+8+4+8 */
    char msg[96];
    if (n_tensors < 0 || (uint64_t)n_tensors > (r->size - r->pos) / 33) {
        r->pos -= 16;
        snprintf(msg, sizeof msg, "absurd tensor count %lld (more than the file can hold)", (long long)n_tensors);
        return rd_fail(r, msg);
    }
    if (n_kv < 0 || (uint64_t)n_kv > (r->size - r->pos) / 14) {
        r->pos -= 8;
        snprintf(msg, sizeof msg, "absurd metadata count %lld (more than the file can hold)", (long long)n_kv);
        return rd_fail(r, msg);
    }
    f->n_tensors = (uint64_t)n_tensors;
    f->n_kv = (uint64_t)n_kv;
    return ELPIS_OK;
}

static elpis_status parse_all(rd *r, gguf_file *f) {
    if (parse_header(r, f) != ELPIS_OK) return ELPIS_EFORMAT;
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return elpis_fail(r->err, ELPIS_ENOMEM, "%s: header tables", r->name);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (parse_kv(r, &f->kv[i]) != ELPIS_OK) return ELPIS_EFORMAT;
    }
    if (check_unique(r, f->kv, f->n_kv, sizeof *f->kv, offsetof(gguf_kv, key), "metadata key") != ELPIS_OK)
        return ELPIS_EFORMAT;
    f->alignment = 32;
    const gguf_kv *al = gguf_find(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_UINT32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)) != 0)
            return rd_fail(r, "general.alignment must be a uint32 power of two");
        f->alignment = al->v.u64;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (parse_tensor_info(r, f, i) != ELPIS_OK) return ELPIS_EFORMAT;
    if (check_unique(r, f->tensors, f->n_tensors, sizeof *f->tensors, offsetof(gguf_tensor, name), "tensor name") != ELPIS_OK)
        return ELPIS_EFORMAT;
    uint64_t pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    if (f->n_tensors > 0 && !rd_need(r, pad)) return rd_fail(r, "truncated before tensor data");
    f->data_offset = r->pos + pad;
    if (f->data_offset > f->size) f->data_offset = f->size;
    return place_tensors(r, f);
}

static elpis_status parse_into(gguf_file *f, elpis_error *err) {
    rd r = { .base = f->base, .size = f->size, .pos = 0, .name = f->path, .err = err };
    return parse_all(&r, f);
}

static gguf_file *file_new(const char *name) {
    gguf_file *f = calloc(1, sizeof *f);
    if (f && !(f->path = strdup(name ? name : "<buffer>"))) { free(f); f = NULL; }
    return f;
}

elpis_status gguf_parse(gguf_file **out, const void *buf, size_t size, const char *name, elpis_error *err) {
    gguf_file *f = file_new(name);
    if (!f) return elpis_fail(err, ELPIS_ENOMEM, "gguf: out of memory");
    f->base = buf;
    f->size = size;
    elpis_status st = parse_into(f, err);
    if (st != ELPIS_OK) { gguf_close(f); return st; }
    *out = f;
    return ELPIS_OK;
}

elpis_status gguf_open(gguf_file **out, const char *path, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    gguf_file *f = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return elpis_fail(err, ELPIS_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) { st = elpis_fail(err, ELPIS_EIO, "%s: %s", path, strerror(errno)); goto fail; }
    if (!S_ISREG(sb.st_mode)) { st = elpis_fail(err, ELPIS_EIO, "%s: not a regular file", path); goto fail; }
    if (sb.st_size < 24) { st = elpis_fail(err, ELPIS_EFORMAT, "%s: file of %lld bytes is too small for a GGUF header at offset 0", path, (long long)sb.st_size); goto fail; }
    if (!(f = file_new(path))) { st = elpis_fail(err, ELPIS_ENOMEM, "%s: out of memory", path); goto fail; }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) { st = elpis_fail(err, ELPIS_EIO, "%s: mmap: %s", path, strerror(errno)); goto fail; }
    f->base = map;
    f->size = (uint64_t)sb.st_size;
    f->mapped = true;
    if ((st = parse_into(f, err)) != ELPIS_OK) goto fail;
    close(fd);
    *out = f;
    return ELPIS_OK;
fail:
    gguf_close(f);
    close(fd);
    return st;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].arr_str);
    free(f->kv);
    free(f->tensors);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f->path);
    free(f);
}

/* ---- look-ups ---------------------------------------------------------------- */

bool gguf_str_eq(gguf_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

static bool is_unsigned(uint32_t t) { return t == GGUF_UINT8 || t == GGUF_UINT16 || t == GGUF_UINT32 || t == GGUF_UINT64; }
static bool is_signed(uint32_t t) { return t == GGUF_INT8 || t == GGUF_INT16 || t == GGUF_INT32 || t == GGUF_INT64; }

bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    if (is_unsigned(kv->type)) { *out = kv->v.u64; return true; }
    if (is_signed(kv->type) && kv->v.i64 >= 0) { *out = (uint64_t)kv->v.i64; return true; }
    return false;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    if (is_signed(kv->type)) { *out = kv->v.i64; return true; }
    if (is_unsigned(kv->type) && kv->v.u64 <= INT64_MAX) { *out = (int64_t)kv->v.u64; return true; }
    return false;
}

bool gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    if (kv->type == GGUF_FLOAT32 || kv->type == GGUF_FLOAT64) { *out = (float)kv->v.f64; return true; }
    if (is_signed(kv->type)) { *out = (float)kv->v.i64; return true; }
    if (is_unsigned(kv->type)) { *out = (float)kv->v.u64; return true; }
    return false;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return false;
    if (kv->type == GGUF_BOOL) { *out = kv->v.b; return true; }
    if (is_unsigned(kv->type)) { *out = kv->v.u64 != 0; return true; }
    if (is_signed(kv->type)) { *out = kv->v.i64 != 0; return true; }
    return false;
}

bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_STRING) return false;
    *out = kv->v.str;
    return true;
}

const gguf_kv *gguf_find_array(const gguf_file *f, const char *key, uint32_t elem_type) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != elem_type) return NULL;
    return kv;
}

/* Float -> int64 without undefined behaviour: saturate, NaN -> 0. */
static int64_t f64_to_i64(double x) {
    if (x != x) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

int64_t gguf_arr_i64(const gguf_kv *kv, uint64_t i) {
    gguf_kv tmp = { 0 };
    uint64_t es = vtype_size(kv->arr_type);
    if (i >= kv->arr_n || es == 0) return 0;
    load_scalar(&tmp, kv->arr_type, kv->arr_data + i * es);
    if (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64) return f64_to_i64(tmp.v.f64);
    if (kv->arr_type == GGUF_BOOL) return tmp.v.b;
    return is_unsigned(kv->arr_type) ? (int64_t)tmp.v.u64 : tmp.v.i64;
}

float gguf_arr_f32(const gguf_kv *kv, uint64_t i) {
    gguf_kv tmp = { 0 };
    uint64_t es = vtype_size(kv->arr_type);
    if (i >= kv->arr_n || es == 0) return 0;
    load_scalar(&tmp, kv->arr_type, kv->arr_data + i * es);
    if (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64) return (float)tmp.v.f64;
    return (float)gguf_arr_i64(kv, i);
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}
