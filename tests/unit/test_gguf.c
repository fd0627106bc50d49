/* test_gguf.c -- the GGUF reader (gguf.c), the writer (gguf_write.c), and the
 * model loader's validation of what they carry.
 *
 * Valid files come from the writer; malformed ones are assembled byte by byte
 * with the small `r_*` builder below, so each test states exactly which field
 * is wrong and at which offset the reader must say so. Every rejection is
 * checked for the status code AND for a message that names the file, the
 * problem and the offset ("crafted.gguf: nested array at offset 37").
 *
 * Robustness loops (every truncation, every single-byte overwrite) copy the
 * input into a heap block of exactly its size, so that under ASan any read
 * past the end is caught, not just crashes.
 *
 * `test_gguf --write-seeds DIR` writes the fuzzer's seed files
 * (tests/fuzz/corpus/fuzz_gguf/) from the same builders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elpis/gguf.h"
#include "elpis/gguf_write.h"
#include "elpis/model.h"

#define NAME "crafted.gguf"

static char g_tmpdir[256];

/* ==== helpers ================================================================ */

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected [%s] in [%s]", needle, hay);
}

static const char *tmp_path(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", g_tmpdir, name);
    return p;
}

/* Touch everything a parsed file exposes (as the fuzzer does). */
static void exercise(const gguf_file *f) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)ELPIS_MIN(kv->key.len, 120), kv->key.ptr);
        uint64_t u; int64_t s; float x; bool b; gguf_str str;
        (void)gguf_get_u64(f, key, &u); (void)gguf_get_i64(f, key, &s); (void)gguf_get_f32(f, key, &x);
        (void)gguf_get_bool(f, key, &b); (void)gguf_get_str(f, key, &str);
        if (kv->type == GGUF_ARRAY && kv->arr_type != GGUF_STRING)
            for (uint64_t j = 0; j < ELPIS_MIN(kv->arr_n, 64); j++) { (void)gguf_arr_i64(kv, j); (void)gguf_arr_f32(kv, j); }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        volatile uint8_t sink = 0;
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        (void)sink;
    }
}

/* Parse a heap copy of exactly n bytes, so ASan sees any read past the end.
 * A file that parses is exercised and closed. On failure, *untouched (if
 * given) tells whether the output pointer was left alone. */
static elpis_status parse_exact(const void *p, size_t n, bool *untouched, elpis_error *err) {
    void *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n) memcpy(copy, p, n);
    gguf_file *const sentinel = (gguf_file *)(uintptr_t)0x1;
    gguf_file *f = sentinel;
    elpis_status st = gguf_parse(&f, copy, n, NAME, err);
    if (st == ELPIS_OK) { exercise(f); gguf_close(f); }
    else if (untouched) *untouched = f == sentinel;
    free(copy);
    return st;
}

static gguf_file *parse_ok(const elpis_buf *b) {
    gguf_file *f = NULL;
    elpis_error err = { 0 };
    if (gguf_parse(&f, b->data, b->len, NAME, &err) != ELPIS_OK) fail_msg("parse failed: %s", err.msg);
    return f;
}

/* The reader must reject p[0..n) with `code`, a message naming the file, the
 * problem and the offset (exactly `offset` unless it is -1), and leave the
 * output pointer alone. */
static void expect_reject(const void *p, size_t n, elpis_status code, const char *phrase, long long offset) {
    bool untouched = false;
    elpis_error err = { 0 };
    elpis_status st = parse_exact(p, n, &untouched, &err);
    if (st == ELPIS_OK) fail_msg("accepted a file that should fail with '%s'", phrase);
    assert_true(untouched);
    if (st != code) fail_msg("status %s, want %s: %s", elpis_status_name(st), elpis_status_name(code), err.msg);
    assert_int_equal(err.code, code);
    assert_contains(err.msg, NAME);
    assert_contains(err.msg, phrase);
    assert_contains(err.msg, "offset");
    if (offset >= 0) {
        char at[64];
        snprintf(at, sizeof at, "at offset %lld", offset);
        assert_contains(err.msg, at);
    }
}

/* expect_reject on a crafted buffer, which is freed (and left empty for
 * reuse) before checking, so that a failing check leaks nothing. */
static void expect_reject_buf(elpis_buf *b, const char *phrase, long long offset) {
    static char slot[4096];   /* crafted files are small */
    size_t len = b->len;
    assert_true(len <= sizeof slot);
    memcpy(slot, b->data, len);
    elpis_buf_free(b);
    expect_reject(slot, len, ELPIS_EFORMAT, phrase, offset);
}

/* ---- raw builder for malformed files ---------------------------------------- */

static void r_bytes(elpis_buf *b, const void *p, size_t n) { assert_int_equal(elpis_buf_append(b, p, n), ELPIS_OK); }
static void r_u32(elpis_buf *b, uint32_t v) { r_bytes(b, &v, 4); }
static void r_u64(elpis_buf *b, uint64_t v) { r_bytes(b, &v, 8); }
static void r_str(elpis_buf *b, const char *s) { r_u64(b, strlen(s)); r_bytes(b, s, strlen(s)); }
static void r_zeros(elpis_buf *b, size_t n) { while (n--) r_bytes(b, "", 1); }
static void r_pad(elpis_buf *b, size_t align) { r_zeros(b, (align - b->len % align) % align); }

static void r_header(elpis_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    r_bytes(b, "GGUF", 4);
    r_u32(b, version);
    r_u64(b, n_tensors);
    r_u64(b, n_kv);
}

static void r_tensor_info(elpis_buf *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                          uint64_t offset) {
    r_str(b, name);
    r_u32(b, n_dims);
    for (uint32_t d = 0; ne && d < n_dims; d++) r_u64(b, (uint64_t)ne[d]);   /* ne NULL: a lying n_dims */
    r_u32(b, type);
    r_u64(b, offset);
}

/* A file with one tensor info and `data` zero bytes after the aligned header. */
static void r_one_tensor(elpis_buf *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                         uint64_t offset, size_t data) {
    r_header(b, 3, 1, 0);
    r_tensor_info(b, name, n_dims, ne, type, offset);
    r_pad(b, 32);
    r_zeros(b, data);
}

/* ---- a writer exercising every value type ---------------------------------- */

static const float   A_DATA[6] = { 1, 2, 3, 4, 5, 6 };
static const float   LAST_DATA[8] = { -1, -2, -3, -4, -5, -6, -7, -8 };
static uint8_t       q8_data[2 * 34];
static uint16_t      f16_data[5];

static void init_blobs(void) {
    for (size_t i = 0; i < sizeof q8_data; i++) q8_data[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < 5; i++) f16_data[i] = elpis_f32_to_f16((float)i * 0.5f);
}

static void add_metadata(elpis_gguf_writer *w, uint32_t alignment) {
    static const uint32_t au32[] = { 1, 2, 3, 4000000000u };
    static const int32_t ai32[] = { -1, 0, 7 };
    static const float af32[] = { 0.5f, -2.0f, 1e10f };
    static const char *const astr[] = { "a", "", "ccc", "\xe2\x96\x81tok" };
    static const uint8_t au8[] = { 0, 255 };
    static const int16_t ai16[] = { -5, 300 };
    static const double af64[] = { 0.125 };
    static const uint8_t abool[] = { 1, 0, 1 };
    elpis_gguf_writer_add_str(w, "general.architecture", "llama");
    if (alignment) elpis_gguf_writer_add_u32(w, "general.alignment", alignment);
    elpis_gguf_writer_add_u8(w, "t.u8", 200);
    elpis_gguf_writer_add_i8(w, "t.i8", -100);
    elpis_gguf_writer_add_u16(w, "t.u16", 60000);
    elpis_gguf_writer_add_i16(w, "t.i16", -30000);
    elpis_gguf_writer_add_u32(w, "t.u32", 4000000000u);
    elpis_gguf_writer_add_i32(w, "t.i32", -2000000000);
    elpis_gguf_writer_add_u64(w, "t.u64", (1ull << 40) + 7);
    elpis_gguf_writer_add_i64(w, "t.i64", -(1ll << 40));
    elpis_gguf_writer_add_u64(w, "t.u64_huge", UINT64_MAX);
    elpis_gguf_writer_add_f32(w, "t.f32", 1.5f);
    elpis_gguf_writer_add_f64(w, "t.f64", 0.25);
    elpis_gguf_writer_add_bool(w, "t.true", true);
    elpis_gguf_writer_add_bool(w, "t.false", false);
    elpis_gguf_writer_add_str(w, "t.str", "h\xc3\xa9llo w\xc3\xb6rld");
    elpis_gguf_writer_add_str(w, "t.empty", "");
    elpis_gguf_writer_add_arr_u32(w, "arr.u32", au32, ELPIS_ARRAY_LEN(au32));
    elpis_gguf_writer_add_arr_i32(w, "arr.i32", ai32, ELPIS_ARRAY_LEN(ai32));
    elpis_gguf_writer_add_arr_f32(w, "arr.f32", af32, ELPIS_ARRAY_LEN(af32));
    elpis_gguf_writer_add_arr_str(w, "arr.str", astr, ELPIS_ARRAY_LEN(astr));
    elpis_gguf_writer_add_arr(w, "arr.u8", GGUF_UINT8, au8, ELPIS_ARRAY_LEN(au8));
    elpis_gguf_writer_add_arr(w, "arr.i16", GGUF_INT16, ai16, ELPIS_ARRAY_LEN(ai16));
    elpis_gguf_writer_add_arr(w, "arr.f64", GGUF_FLOAT64, af64, ELPIS_ARRAY_LEN(af64));
    elpis_gguf_writer_add_arr(w, "arr.bool", GGUF_BOOL, abool, ELPIS_ARRAY_LEN(abool));
    elpis_gguf_writer_add_arr_u32(w, "arr.empty", NULL, 0);
    elpis_gguf_writer_add_arr_str(w, "arr.empty_str", NULL, 0);
}

/* Tensor data modes, to check they produce identical files. */
typedef enum { MODE_COPY, MODE_REF, MODE_FILL } tensor_mode;

static elpis_status fill_from_user(void *user, const char *name, uint64_t offset, void *dst, size_t n, elpis_error *err) {
    (void)name; (void)err;
    memcpy(dst, (const uint8_t *)user + offset, n);
    return ELPIS_OK;
}

static void add_tensor_mode(elpis_gguf_writer *w, tensor_mode m, const char *name, elpis_dtype type, uint32_t n_dims,
                            const int64_t *ne, const void *data, size_t nbytes) {
    elpis_status st;
    if (m == MODE_COPY) st = elpis_gguf_writer_add_tensor(w, name, type, n_dims, ne, data, nbytes);
    else if (m == MODE_REF) st = elpis_gguf_writer_add_tensor_ref(w, name, type, n_dims, ne, data, nbytes);
    else st = elpis_gguf_writer_add_tensor_fill(w, name, type, n_dims, ne, fill_from_user, (void *)data);
    if (st != ELPIS_OK) fail_msg("add tensor %s: %s", name, elpis_gguf_writer_error(w)->msg);
}

/* Four tensors; the last one's size is a multiple of 32, so with the default
 * alignment no strict prefix of the file is a valid file. */
static void add_tensors(elpis_gguf_writer *w, tensor_mode m) {
    add_tensor_mode(w, m, "a", ELPIS_F32, 2, (int64_t[]){ 3, 2 }, A_DATA, sizeof A_DATA);
    add_tensor_mode(w, m, "blk.0.b", ELPIS_Q8_0, 2, (int64_t[]){ 64, 1 }, q8_data, sizeof q8_data);
    add_tensor_mode(w, m, "c", ELPIS_F16, 1, (int64_t[]){ 5 }, f16_data, sizeof f16_data);
    add_tensor_mode(w, m, "last", ELPIS_F32, 4, (int64_t[]){ 2, 2, 1, 2 }, LAST_DATA, sizeof LAST_DATA);
}

static void rich_file(elpis_buf *out, uint32_t alignment, tensor_mode m) {
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    assert_non_null(w);
    add_metadata(w, alignment);
    add_tensors(w, m);
    elpis_error err = { 0 };
    if (elpis_gguf_writer_to_buf(w, out, &err) != ELPIS_OK) fail_msg("to_buf: %s", err.msg);
    elpis_gguf_writer_free(w);
}

/* ==== round trip ============================================================= */

static void check_scalars(const gguf_file *f) {
    uint64_t u = 0; int64_t s = 0; float x = 0; bool b = false; gguf_str str;
    /* every integer width reads through the 64-bit getters */
    assert_true(gguf_get_u64(f, "t.u8", &u)); assert_int_equal(u, 200);
    assert_true(gguf_get_i64(f, "t.u8", &s)); assert_int_equal(s, 200);
    assert_false(gguf_get_u64(f, "t.i8", &u));          /* negative: no unsigned value */
    assert_true(gguf_get_i64(f, "t.i8", &s)); assert_int_equal(s, -100);
    assert_true(gguf_get_u64(f, "t.u16", &u)); assert_int_equal(u, 60000);
    assert_true(gguf_get_i64(f, "t.i16", &s)); assert_int_equal(s, -30000);
    assert_true(gguf_get_u64(f, "t.u32", &u)); assert_int_equal(u, 4000000000u);
    assert_true(gguf_get_i64(f, "t.u32", &s)); assert_int_equal(s, 4000000000ll);
    assert_true(gguf_get_i64(f, "t.i32", &s)); assert_int_equal(s, -2000000000);
    assert_true(gguf_get_u64(f, "t.u64", &u)); assert_int_equal(u, (1ull << 40) + 7);
    assert_true(gguf_get_i64(f, "t.i64", &s)); assert_true(s == -(1ll << 40));
    assert_false(gguf_get_u64(f, "t.i64", &u));
    assert_true(gguf_get_u64(f, "t.u64_huge", &u)); assert_true(u == UINT64_MAX);
    assert_false(gguf_get_i64(f, "t.u64_huge", &s));    /* does not fit */
    /* floats: f32 and f64 through get_f32; integers convert; floats are not integers */
    assert_true(gguf_get_f32(f, "t.f32", &x)); assert_true(x == 1.5f);
    assert_true(gguf_get_f32(f, "t.f64", &x)); assert_true(x == 0.25f);
    assert_true(gguf_get_f32(f, "t.i32", &x)); assert_true(x == -2e9f);
    assert_true(gguf_get_f32(f, "t.u16", &x)); assert_true(x == 60000.0f);
    assert_false(gguf_get_u64(f, "t.f32", &u));
    assert_true(gguf_get_bool(f, "t.true", &b)); assert_true(b);
    assert_true(gguf_get_bool(f, "t.false", &b)); assert_false(b);
    assert_true(gguf_get_str(f, "t.str", &str)); assert_true(gguf_str_eq(str, "h\xc3\xa9llo w\xc3\xb6rld"));
    assert_true(gguf_get_str(f, "t.empty", &str)); assert_int_equal(str.len, 0);
    assert_false(gguf_get_str(f, "t.u32", &str));
    assert_false(gguf_get_u64(f, "t.str", &u));
    assert_false(gguf_get_u64(f, "no.such.key", &u));
    assert_null(gguf_find(f, "t.u"));                    /* prefixes do not match */
    static const struct { const char *key; uint32_t type; } types[] = {
        { "t.u8", GGUF_UINT8 }, { "t.i8", GGUF_INT8 }, { "t.u16", GGUF_UINT16 }, { "t.i16", GGUF_INT16 },
        { "t.u32", GGUF_UINT32 }, { "t.i32", GGUF_INT32 }, { "t.u64", GGUF_UINT64 }, { "t.i64", GGUF_INT64 },
        { "t.f32", GGUF_FLOAT32 }, { "t.f64", GGUF_FLOAT64 }, { "t.true", GGUF_BOOL }, { "t.str", GGUF_STRING },
        { "arr.u32", GGUF_ARRAY },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(types); i++) {
        const gguf_kv *kv = gguf_find(f, types[i].key);
        assert_non_null(kv);
        assert_int_equal(kv->type, types[i].type);
    }
}

static void check_arrays(const gguf_file *f) {
    const gguf_kv *kv = gguf_find_array(f, "arr.u32", GGUF_UINT32);
    assert_non_null(kv);
    assert_null(gguf_find_array(f, "arr.u32", GGUF_INT32));   /* element type must match */
    assert_null(gguf_find_array(f, "t.u32", GGUF_UINT32));    /* not an array */
    assert_int_equal(kv->arr_n, 4);
    assert_int_equal(gguf_arr_i64(kv, 3), 4000000000ll);
    assert_int_equal(gguf_arr_i64(kv, 4), 0);                 /* out of range reads as 0 */
    kv = gguf_find_array(f, "arr.i32", GGUF_INT32);
    assert_non_null(kv);
    assert_int_equal(gguf_arr_i64(kv, 0), -1);
    assert_true(gguf_arr_f32(kv, 2) == 7.0f);
    kv = gguf_find_array(f, "arr.f32", GGUF_FLOAT32);
    assert_non_null(kv);
    assert_true(gguf_arr_f32(kv, 0) == 0.5f && gguf_arr_f32(kv, 1) == -2.0f && gguf_arr_f32(kv, 2) == 1e10f);
    kv = gguf_find_array(f, "arr.str", GGUF_STRING);
    assert_non_null(kv);
    assert_int_equal(kv->arr_n, 4);
    assert_true(gguf_str_eq(kv->arr_str[0], "a") && gguf_str_eq(kv->arr_str[1], "") &&
                gguf_str_eq(kv->arr_str[2], "ccc") && gguf_str_eq(kv->arr_str[3], "\xe2\x96\x81tok"));
    kv = gguf_find_array(f, "arr.u8", GGUF_UINT8);
    assert_non_null(kv);
    assert_int_equal(gguf_arr_i64(kv, 1), 255);
    kv = gguf_find_array(f, "arr.i16", GGUF_INT16);
    assert_non_null(kv);
    assert_int_equal(gguf_arr_i64(kv, 0), -5);
    assert_int_equal(gguf_arr_i64(kv, 1), 300);
    kv = gguf_find_array(f, "arr.f64", GGUF_FLOAT64);
    assert_non_null(kv);
    assert_true(gguf_arr_f32(kv, 0) == 0.125f);
    kv = gguf_find_array(f, "arr.bool", GGUF_BOOL);
    assert_non_null(kv);
    assert_int_equal(gguf_arr_i64(kv, 0) + gguf_arr_i64(kv, 1) + gguf_arr_i64(kv, 2), 2);
    kv = gguf_find_array(f, "arr.empty", GGUF_UINT32);
    assert_non_null(kv);
    assert_int_equal(kv->arr_n, 0);
    kv = gguf_find_array(f, "arr.empty_str", GGUF_STRING);
    assert_non_null(kv);
    assert_int_equal(kv->arr_n, 0);
}

/* Offsets are recomputed here independently: the running sum of padded sizes. */
static void check_tensors(const gguf_file *f, uint64_t align) {
    static const struct { const char *name; uint32_t n_dims, type; int64_t ne[4]; uint64_t nbytes; } want[] = {
        { "a", 2, ELPIS_F32, { 3, 2, 1, 1 }, 24 },
        { "blk.0.b", 2, ELPIS_Q8_0, { 64, 1, 1, 1 }, 68 },
        { "c", 1, ELPIS_F16, { 5, 1, 1, 1 }, 10 },
        { "last", 4, ELPIS_F32, { 2, 2, 1, 2 }, 32 },
    };
    const void *data[] = { A_DATA, q8_data, f16_data, LAST_DATA };
    assert_int_equal(f->n_tensors, 4);
    assert_int_equal(f->alignment, align);
    assert_int_equal(f->data_offset % align, 0);
    uint64_t offset = 0;
    for (size_t i = 0; i < 4; i++) {
        const gguf_tensor *t = &f->tensors[i];
        assert_ptr_equal(gguf_find_tensor(f, want[i].name), t);
        assert_int_equal(t->n_dims, want[i].n_dims);
        assert_int_equal(t->type, want[i].type);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], want[i].ne[d]);
        assert_int_equal(t->nbytes, want[i].nbytes);
        assert_int_equal(t->offset, offset);
        assert_ptr_equal(t->data, f->base + f->data_offset + offset);
        assert_memory_equal(t->data, data[i], want[i].nbytes);
        offset += (want[i].nbytes + align - 1) / align * align;
    }
    assert_int_equal(f->size, f->data_offset + offset);   /* the last tensor is padded too */
    assert_null(gguf_find_tensor(f, "b"));
}

static void test_round_trip(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    rich_file(&b, 0, MODE_COPY);
    gguf_file *f = parse_ok(&b);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->n_kv, 26);
    assert_null(gguf_find(f, "general.alignment"));   /* the writer adds nothing on its own */
    check_scalars(f);
    check_arrays(f);
    check_tensors(f, 32);
    gguf_close(f);
    elpis_buf_free(&b);
}

static void test_alignment_key(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    rich_file(&b, 64, MODE_COPY);
    gguf_file *f = parse_ok(&b);
    uint64_t a = 0;
    assert_true(gguf_get_u64(f, "general.alignment", &a));
    assert_int_equal(a, 64);
    check_tensors(f, 64);
    gguf_close(f);
    elpis_buf_free(&b);
    /* a large alignment pads more than the writer's block of zeros */
    rich_file(&b, 1024, MODE_COPY);
    f = parse_ok(&b);
    check_tensors(f, 1024);
    gguf_close(f);
    elpis_buf_free(&b);
}

/* Copy, reference and fill modes, and write vs to_buf, give the same bytes;
 * gguf_open reads the written file like gguf_parse reads the buffer. */
static void test_modes_and_file_agree(void **state) {
    (void)state;
    elpis_buf copy = { 0 }, ref = { 0 }, fill = { 0 };
    rich_file(&copy, 0, MODE_COPY);
    rich_file(&ref, 0, MODE_REF);
    rich_file(&fill, 0, MODE_FILL);
    assert_int_equal(copy.len, ref.len);
    assert_int_equal(copy.len, fill.len);
    assert_memory_equal(copy.data, ref.data, copy.len);
    assert_memory_equal(copy.data, fill.data, copy.len);

    elpis_gguf_writer *w = elpis_gguf_writer_new();
    add_metadata(w, 0);
    add_tensors(w, MODE_COPY);
    elpis_error err = { 0 };
    const char *path = tmp_path("rich.gguf");
    if (elpis_gguf_writer_write(w, path, &err) != ELPIS_OK) fail_msg("write: %s", err.msg);
    /* writing again replaces the file (atomic rename over it) */
    if (elpis_gguf_writer_write(w, path, &err) != ELPIS_OK) fail_msg("rewrite: %s", err.msg);
    elpis_gguf_writer_free(w);
    char *disk = NULL;
    size_t n = 0;
    assert_int_equal(elpis_read_file(path, 1 << 20, &disk, &n, &err), ELPIS_OK);
    assert_int_equal(n, copy.len);
    assert_memory_equal(disk, copy.data, n);
    gguf_file *f = NULL;
    if (gguf_open(&f, path, &err) != ELPIS_OK) fail_msg("open: %s", err.msg);
    assert_true(f->mapped);
    check_scalars(f);
    check_arrays(f);
    check_tensors(f, 32);
    gguf_close(f);
    free(disk);
    unlink(path);
    elpis_buf_free(&copy);
    elpis_buf_free(&ref);
    elpis_buf_free(&fill);
}

/* ---- fill callbacks: whole rows, increasing offsets, full coverage ---------- */

typedef struct fill_log {
    uint64_t next;       /* expected next offset */
    size_t   row, max_n;
    int      calls;
} fill_log;

static elpis_status fill_pattern(void *user, const char *name, uint64_t offset, void *dst, size_t n, elpis_error *err) {
    (void)name; (void)err;
    fill_log *lg = user;
    assert_int_equal(offset, lg->next);
    assert_int_equal(offset % lg->row, 0);
    assert_int_equal(n % lg->row, 0);
    for (size_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)((offset + i) * 131 >> 3);
    lg->next += n;
    lg->max_n = ELPIS_MAX(lg->max_n, n);
    lg->calls++;
    return ELPIS_OK;
}

static void test_fill_chunks(void **state) {
    (void)state;
    fill_log small = { .row = 1000 * 4 }, wide = { .row = 300000 * 4 };
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    /* 2.4 MB of 4000-byte rows: several chunks of at most 1 MiB */
    elpis_gguf_writer_add_tensor_fill(w, "small_rows", ELPIS_F32, 2, (int64_t[]){ 1000, 600 }, fill_pattern, &small);
    /* rows of 1.2 MB: one row per call */
    elpis_gguf_writer_add_tensor_fill(w, "wide_rows", ELPIS_F32, 2, (int64_t[]){ 300000, 2 }, fill_pattern, &wide);
    elpis_gguf_writer_add_tensor_fill(w, "empty", ELPIS_F32, 2, (int64_t[]){ 0, 5 }, fill_pattern, &small);
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    if (elpis_gguf_writer_to_buf(w, &b, &err) != ELPIS_OK) fail_msg("%s", err.msg);
    assert_int_equal(small.next, 1000 * 600 * 4);
    assert_true(small.calls >= 3 && small.max_n <= (1u << 20));
    assert_int_equal(wide.calls, 2);
    assert_int_equal(wide.max_n, wide.row);
    gguf_file *f = parse_ok(&b);
    const gguf_tensor *t = gguf_find_tensor(f, "small_rows");
    assert_non_null(t);
    for (size_t i = 0; i < t->nbytes; i += 4099) assert_int_equal(((const uint8_t *)t->data)[i], (uint8_t)(i * 131 >> 3));
    assert_int_equal(gguf_find_tensor(f, "empty")->nbytes, 0);
    gguf_close(f);
    elpis_buf_free(&b);
    elpis_gguf_writer_free(w);
}

/* ==== writer refusals ========================================================= */

/* One bad call: the status and the sticky error, which to_buf then reports,
 * leaving the caller's buffer untouched. */
static void expect_writer_error(elpis_gguf_writer *w, elpis_status st, const char *phrase) {
    if (st != ELPIS_EINVAL) fail_msg("status %s for '%s'", elpis_status_name(st), phrase);
    assert_contains(elpis_gguf_writer_error(w)->msg, phrase);
    assert_int_equal(elpis_gguf_writer_add_u32(w, "later.key", 1), ELPIS_EINVAL);   /* sticky */
    elpis_buf b = { 0 };
    assert_int_equal(elpis_buf_puts(&b, "keep"), ELPIS_OK);
    elpis_error err = { 0 };
    assert_int_equal(elpis_gguf_writer_to_buf(w, &b, &err), ELPIS_EINVAL);
    assert_contains(err.msg, phrase);
    assert_string_equal(b.data, "keep");
    elpis_buf_free(&b);
    elpis_gguf_writer_free(w);
}

/* A writer holding one good key, "a.b". */
static elpis_gguf_writer *fresh_writer(void) {
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(elpis_gguf_writer_add_u32(w, "a.b", 1), ELPIS_OK);
    return w;
}

static void test_writer_refuses_bad_input(void **state) {
    (void)state;
    float x[64] = { 0 };
    elpis_gguf_writer *w;
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_str(w, "a.b", "x"), "duplicate metadata key a.b");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_u32(w, "", 1), "empty metadata key");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_u32(w, "general.alignment", 48), "not a power of two");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_u32(w, "general.alignment", 0), "not a power of two");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_u64(w, "general.alignment", 32), "must be a uint32");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_str(w, "s", NULL), "NULL string");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_arr(w, "arr", GGUF_STRING, x, 1), "numeric elements");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_arr(w, "arr", GGUF_ARRAY, x, 1), "numeric elements");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_arr_str(w, "arr", (const char *const[]){ "a", NULL }, 2), "NULL string");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 5, (int64_t[]){ 1, 1, 1, 1, 1 }, x, 4), "5 dimensions");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 0, (int64_t[]){ 1 }, x, 4), "0 dimensions");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 2, (int64_t[]){ 4, -1 }, x, 4), "negative");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_Q8_0, 1, (int64_t[]){ 16 }, x, 17), "not a multiple of the q8_0 block");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", (elpis_dtype)4, 1, (int64_t[]){ 4 }, x, 16), "unknown tensor type 4");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 1, (int64_t[]){ 4 }, x, 12), "12 bytes given, its shape needs 16");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 1, (int64_t[]){ 4 }, NULL, 16), "NULL data");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, "", ELPIS_F32, 1, (int64_t[]){ 4 }, x, 16), "empty tensor name");
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor_fill(w, "t", ELPIS_F32, 1, (int64_t[]){ 4 }, NULL, NULL), "NULL fill");
    char longname[GGUF_MAX_NAME + 1];
    memset(longname, 'n', GGUF_MAX_NAME);
    longname[GGUF_MAX_NAME] = 0;
    w = fresh_writer(); expect_writer_error(w, elpis_gguf_writer_add_tensor(w, longname, ELPIS_F32, 1, (int64_t[]){ 4 }, x, 16), "at most 63");
    w = fresh_writer();
    elpis_gguf_writer_add_tensor(w, "t", ELPIS_F32, 1, (int64_t[]){ 4 }, x, 16);
    expect_writer_error(w, elpis_gguf_writer_add_tensor_ref(w, "t", ELPIS_F32, 1, (int64_t[]){ 4 }, x, 16), "duplicate tensor name 't'");
    /* a 63-byte name is fine */
    longname[GGUF_MAX_NAME - 1] = 0;
    w = elpis_gguf_writer_new();
    assert_int_equal(elpis_gguf_writer_add_tensor(w, longname, ELPIS_F32, 1, (int64_t[]){ 4 }, x, 16), ELPIS_OK);
    elpis_gguf_writer_free(w);
}

static elpis_status fill_fails(void *user, const char *name, uint64_t offset, void *dst, size_t n, elpis_error *err) {
    (void)user; (void)offset; (void)dst; (void)n;
    return elpis_fail(err, ELPIS_EIO, "boom in %s", name);
}

/* write() failures leave no file behind and name the path. */
static void test_writer_write_failures(void **state) {
    (void)state;
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    elpis_gguf_writer_add_tensor_fill(w, "w", ELPIS_F32, 1, (int64_t[]){ 8 }, fill_fails, NULL);
    elpis_error err = { 0 };
    const char *path = tmp_path("never.gguf");
    assert_int_equal(elpis_gguf_writer_write(w, path, &err), ELPIS_EIO);
    assert_contains(err.msg, "boom in w");
    assert_contains(err.msg, path);
    assert_int_equal(access(path, F_OK), -1);
    elpis_gguf_writer_free(w);
    /* the directory does not exist */
    w = elpis_gguf_writer_new();
    elpis_gguf_writer_add_u32(w, "a", 1);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.gguf", g_tmpdir);
    assert_int_equal(elpis_gguf_writer_write(w, bad, &err), ELPIS_EIO);
    assert_contains(err.msg, "no/such/dir/x.gguf");
    elpis_gguf_writer_free(w);
    /* a NULL writer (new failed) is an error, not a crash */
    assert_int_equal(elpis_gguf_writer_write(NULL, path, &err), ELPIS_ENOMEM);
    assert_int_equal(elpis_gguf_writer_add_u32(NULL, "a", 1), ELPIS_EINVAL);
    elpis_gguf_writer_free(NULL);
}

/* ==== malformed files: one test per class ===================================== */

static void test_bad_magic(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_bytes(&b, "GGUX", 4); r_u32(&b, 3); r_u64(&b, 0); r_u64(&b, 0);
    expect_reject(b.data, 3, ELPIS_EFORMAT, "truncated magic", 0);
    expect_reject_buf(&b, "bad magic", 0);
    expect_reject("", 0, ELPIS_EFORMAT, "truncated magic", 0);
    expect_reject("\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24, ELPIS_EFORMAT, "bad magic", 0);
    elpis_buf_free(&b);
}

static void test_unsupported_versions(void **state) {
    (void)state;
    static const struct { uint32_t v; const char *phrase; } cases[] = {
        { 1, "GGUF v1 is not supported" }, { 4, "unsupported GGUF version" }, { 0xFFFFFFFFu, "unsupported GGUF version" },
        { 0x03000000u, "big-endian" }, { 0, "big-endian" },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cases); i++) {
        elpis_buf b = { 0 };
        r_header(&b, cases[i].v, 0, 0);
        expect_reject_buf(&b, cases[i].phrase, 4);
    }
    /* v2 has v3's layout and is accepted */
    elpis_buf b = { 0 };
    r_header(&b, 2, 0, 0);
    gguf_file *f = parse_ok(&b);
    assert_int_equal(f->version, 2);
    gguf_close(f);
    elpis_buf_free(&b);
}

/* Cut a valid file at every length: always a clean EFORMAT, never a crash,
 * an over-read or a leak (run under ASan). */
static void check_every_truncation(const elpis_buf *b) {
    for (size_t n = 0; n < b->len; n++) {
        elpis_error err = { 0 };
        elpis_status st = parse_exact(b->data, n, NULL, &err);
        if (st == ELPIS_OK) fail_msg("a file cut to %zu of %zu bytes parsed", n, b->len);
        if (st != ELPIS_EFORMAT || !strstr(err.msg, NAME) || !strstr(err.msg, "offset"))
            fail_msg("cut at %zu: %s: %s", n, elpis_status_name(st), err.msg);
    }
}

static void tiny_model_file(elpis_buf *out);

static void test_truncated_everywhere(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    rich_file(&b, 0, MODE_COPY);
    check_every_truncation(&b);
    elpis_buf_free(&b);
    tiny_model_file(&b);
    check_every_truncation(&b);
    /* the same through gguf_open on real files at a few cut points */
    size_t cuts[] = { 0, 10, 23, 24, 100, b.len / 2, b.len - 1 };
    const char *path = tmp_path("cut.gguf");
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cuts); i++) {
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(b.data, 1, cuts[i], fp), cuts[i]);
        fclose(fp);
        gguf_file *f = NULL;
        elpis_error err = { 0 };
        assert_int_equal(gguf_open(&f, path, &err), ELPIS_EFORMAT);
        assert_null(f);
        assert_contains(err.msg, path);
        assert_contains(err.msg, "offset");
    }
    unlink(path);
    elpis_buf_free(&b);
}

/* Overwrite each byte with a few values: the parse may succeed or fail, but
 * never crashes, and a success is safe to use. */
static void test_single_byte_corruption(void **state) {
    (void)state;
    static const uint8_t values[] = { 0x00, 0x01, 0x0c, 0x7f, 0x80, 0xff };
    elpis_buf b = { 0 };
    rich_file(&b, 0, MODE_COPY);
    for (size_t i = 0; i < b.len; i++) {
        uint8_t orig = (uint8_t)b.data[i];
        for (size_t v = 0; v < ELPIS_ARRAY_LEN(values); v++) {
            b.data[i] = (char)values[v];
            elpis_error err = { 0 };
            elpis_status st = parse_exact(b.data, b.len, NULL, &err);
            if (st == ELPIS_OK) continue;   /* parsed, and exercised under ASan */
            if (st != ELPIS_EFORMAT || !strstr(err.msg, NAME) || !strstr(err.msg, "offset"))
                fail_msg("byte %zu = 0x%02x: %s: %s", i, values[v], elpis_status_name(st), err.msg);
        }
        b.data[i] = (char)orig;
    }
    elpis_buf_free(&b);
}

static void test_absurd_counts(void **state) {
    (void)state;
    static const struct { uint64_t n_tensors, n_kv; const char *phrase; long long at; } cases[] = {
        { 1ull << 62, 0, "absurd tensor count", 8 },
        { UINT64_MAX, 0, "absurd tensor count", 8 },       /* -1 as int64 */
        { 1ull << 63, 0, "absurd tensor count", 8 },
        { 0, 1ull << 62, "absurd metadata count", 16 },
        { 0, UINT64_MAX, "absurd metadata count", 16 },
        { 0, 1000, "absurd metadata count", 16 },         /* plausible, but 100 bytes cannot hold it */
        { 1000, 0, "absurd tensor count", 8 },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cases); i++) {
        elpis_buf b = { 0 };
        r_header(&b, 3, cases[i].n_tensors, cases[i].n_kv);
        r_zeros(&b, 100);
        expect_reject_buf(&b, cases[i].phrase, cases[i].at);
    }
}

static void test_absurd_string_lengths(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    /* key length */
    r_header(&b, 3, 0, 1); r_u64(&b, 1ull << 62); r_zeros(&b, 64);
    expect_reject_buf(&b, "key length 4611686018427387904 is absurd", 24);
    r_header(&b, 3, 0, 1); r_u64(&b, 1000); r_zeros(&b, 64);
    expect_reject_buf(&b, "key length 1000 exceeds the file", 24);
    /* string value: 24 + 9 ("k") + 4 (type) = 37 */
    r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_STRING); r_u64(&b, UINT64_MAX); r_zeros(&b, 64);
    expect_reject_buf(&b, "string value length", 37);
    /* a string inside an array: 37 + 4 (elem type) + 8 (count) = 49 */
    r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_ARRAY); r_u32(&b, GGUF_STRING); r_u64(&b, 1);
    r_u64(&b, 1ull << 40); r_zeros(&b, 64);
    expect_reject_buf(&b, "array string length", 49);
    /* a tensor name */
    r_header(&b, 3, 1, 0); r_u64(&b, 1ull << 62); r_zeros(&b, 64);
    expect_reject_buf(&b, "tensor name length", 24);
}

static void test_absurd_array_lengths(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_ARRAY); r_u32(&b, GGUF_UINT64); r_u64(&b, 1ull << 61);
    r_zeros(&b, 64);
    expect_reject_buf(&b, "array length exceeds the file", 41);
    r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_ARRAY); r_u32(&b, GGUF_STRING); r_u64(&b, UINT64_MAX);
    r_zeros(&b, 64);
    expect_reject_buf(&b, "string array length exceeds the file", 41);
}

static void test_nested_array(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_ARRAY); r_u32(&b, GGUF_ARRAY); r_u64(&b, 1);
    r_u32(&b, GGUF_UINT8); r_u64(&b, 1); r_zeros(&b, 64);
    expect_reject_buf(&b, "nested array", 37);
}

static void test_unknown_value_type(void **state) {
    (void)state;
    uint32_t bad[] = { GGUF_VTYPE_COUNT, 0x7fffffffu, 0xffffffffu };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(bad); i++) {
        elpis_buf b = { 0 };
        r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, bad[i]); r_zeros(&b, 64);
        expect_reject_buf(&b, "unknown value type", 33);
        r_header(&b, 3, 0, 1); r_str(&b, "k"); r_u32(&b, GGUF_ARRAY); r_u32(&b, bad[i]); r_zeros(&b, 64);
        expect_reject_buf(&b, "unknown array element type", 37);
    }
    elpis_buf b = { 0 };
    r_header(&b, 3, 0, 1); r_str(&b, ""); r_u32(&b, GGUF_UINT8); r_zeros(&b, 64);
    expect_reject_buf(&b, "empty key", -1);
}

static void test_unknown_tensor_type(void **state) {
    (void)state;
    uint32_t bad[] = { 4, 5, 16, 39, 99, 0xffffffffu };   /* removed, IQ*, MXFP4: not known here */
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(bad); i++) {
        elpis_buf b = { 0 };
        /* 24 + 9 (name "w") + 4 (dims) + 8 (ne) = 45 */
        r_one_tensor(&b, "w", 1, (int64_t[]){ 256 }, bad[i], 0, 1024);
        char phrase[64];
        snprintf(phrase, sizeof phrase, "tensor 'w' has unknown type %u", bad[i]);
        expect_reject_buf(&b, phrase, 45);
    }
}

static void test_tensor_dims(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_one_tensor(&b, "w", 5, (int64_t[]){ 1, 1, 1, 1, 1 }, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "tensor dims out of range", 33);
    r_one_tensor(&b, "w", 0, NULL, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "tensor dims out of range", 33);
    r_one_tensor(&b, "w", 0xffffffffu, NULL, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "tensor dims out of range", 33);
}

static void test_negative_dims(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    /* ne[1] at 24 + 9 + 4 + 8 = 45 */
    r_one_tensor(&b, "w", 2, (int64_t[]){ 4, -1 }, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "negative tensor dimension", 45);
    r_one_tensor(&b, "w", 1, (int64_t[]){ INT64_MIN }, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "negative tensor dimension", 37);
}

static void test_row_not_block_multiple(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_one_tensor(&b, "w", 2, (int64_t[]){ 16, 2 }, ELPIS_Q8_0, 0, 256);
    expect_reject_buf(&b, "tensor 'w' row of 16 is not a multiple of the q8_0 block (32)", -1);
    r_one_tensor(&b, "w", 1, (int64_t[]){ 896 }, ELPIS_Q4_K, 0, 1024);   /* Qwen2.5-0.5B's n_embd */
    expect_reject_buf(&b, "row of 896 is not a multiple of the q4_K block (256)", -1);
    /* overflowing shapes are refused before any size arithmetic */
    r_one_tensor(&b, "w", 2, (int64_t[]){ 1ll << 40, 1ll << 40 }, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "tensor too large", -1);
    char name[GGUF_MAX_NAME + 1];
    memset(name, 'x', GGUF_MAX_NAME);
    name[GGUF_MAX_NAME] = 0;
    r_one_tensor(&b, name, 1, (int64_t[]){ 4 }, ELPIS_F32, 0, 64);
    expect_reject_buf(&b, "tensor name too long", -1);
}

static void test_tensor_offsets(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    /* header 24 + tensor info (9 name + 4 dims + 8 ne + 4 type + 8 offset) = 57: data at 64 */
    r_one_tensor(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 4, 64);
    expect_reject_buf(&b, "tensor 'w' data (offset 4, 32 bytes) is not aligned", 68);
    r_one_tensor(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 64, 64);     /* 64 + 32 > 64 bytes of data */
    expect_reject_buf(&b, "is outside the file", 128);
    r_one_tensor(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 1ull << 63, 64);
    expect_reject_buf(&b, "is outside the file", -1);
    r_one_tensor(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 0, 31);        /* one byte short */
    expect_reject_buf(&b, "(offset 0, 32 bytes) is outside the file", 64);
    r_one_tensor(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 0, 32);        /* exactly enough */
    gguf_file *f = parse_ok(&b);
    assert_int_equal(f->data_offset, 64);
    gguf_close(f);
    elpis_buf_free(&b);
    /* the padding before the data section is missing */
    r_header(&b, 3, 1, 0);
    r_tensor_info(&b, "w", 1, (int64_t[]){ 0 }, ELPIS_F32, 0);
    expect_reject_buf(&b, "truncated before tensor data", 57);
}

/* gguf.c promises "non-overlapping in file order": two tensors sharing bytes
 * are rejected (llama.cpp rejects any offset but the packed one). */
static void test_overlapping_tensors(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_header(&b, 3, 2, 0);
    r_tensor_info(&b, "a", 1, (int64_t[]){ 16 }, ELPIS_F32, 0);   /* bytes 0..63 */
    r_tensor_info(&b, "b", 1, (int64_t[]){ 8 }, ELPIS_F32, 32);   /* bytes 32..63: inside a */
    r_pad(&b, 32);
    r_zeros(&b, 64);
    expect_reject_buf(&b, "tensor 'b' data (offset 32, 32 bytes) overlaps", -1);
}

static void test_duplicate_names(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    r_header(&b, 3, 0, 3);
    r_str(&b, "a.b"); r_u32(&b, GGUF_UINT8); r_bytes(&b, "\x01", 1);
    r_str(&b, "a.c"); r_u32(&b, GGUF_UINT8); r_bytes(&b, "\x02", 1);
    r_str(&b, "a.b"); r_u32(&b, GGUF_UINT32); r_u32(&b, 3);
    r_zeros(&b, 32);
    expect_reject_buf(&b, "duplicate metadata key 'a.b'", -1);
    r_header(&b, 3, 2, 0);
    r_tensor_info(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 0);
    r_tensor_info(&b, "w", 1, (int64_t[]){ 8 }, ELPIS_F32, 32);
    r_pad(&b, 32);
    r_zeros(&b, 64);
    expect_reject_buf(&b, "duplicate tensor name 'w'", -1);
}

static void test_bad_alignment(void **state) {
    (void)state;
    struct { uint32_t type; uint64_t value; } cases[] = {
        { GGUF_UINT32, 48 }, { GGUF_UINT32, 0 }, { GGUF_UINT32, 0x80000001u }, { GGUF_UINT64, 32 }, { GGUF_INT32, 32 },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cases); i++) {
        elpis_buf b = { 0 };
        r_header(&b, 3, 0, 1);
        r_str(&b, "general.alignment");
        r_u32(&b, cases[i].type);
        r_bytes(&b, &cases[i].value, cases[i].type == GGUF_UINT64 ? 8 : 4);
        r_zeros(&b, 64);
        expect_reject_buf(&b, "general.alignment must be a uint32 power of two", -1);
    }
}

/* gguf_arr_i64 on a float array must not convert an out-of-range float to
 * int64 (undefined behaviour, which UBSan aborts on): a hostile file can put
 * 1e30 in llama.feed_forward_length, which model.c reads with gguf_arr_i64.
 * Expected: saturation, and NaN -> 0. */
static void test_arr_i64_of_huge_floats(void **state) {
    (void)state;
    static const float f32[] = { 1e30f, -1e30f, NAN, 9.5f };
    static const double f64[] = { 1e300, -1e300 };
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    elpis_gguf_writer_add_arr_f32(w, "f32", f32, ELPIS_ARRAY_LEN(f32));
    elpis_gguf_writer_add_arr(w, "f64", GGUF_FLOAT64, f64, ELPIS_ARRAY_LEN(f64));
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    assert_int_equal(elpis_gguf_writer_to_buf(w, &b, &err), ELPIS_OK);
    gguf_file *f = parse_ok(&b);
    const gguf_kv *a = gguf_find_array(f, "f32", GGUF_FLOAT32), *d = gguf_find_array(f, "f64", GGUF_FLOAT64);
    assert_true(a && d);
    int64_t got[6] = { gguf_arr_i64(a, 0), gguf_arr_i64(a, 1), gguf_arr_i64(a, 2), gguf_arr_i64(a, 3),
                       gguf_arr_i64(d, 0), gguf_arr_i64(d, 1) };
    gguf_close(f);   /* before asserting, so a failure leaks nothing */
    elpis_buf_free(&b);
    elpis_gguf_writer_free(w);
    static const int64_t want[6] = { INT64_MAX, INT64_MIN, 0, 9, INT64_MAX, INT64_MIN };
    for (int i = 0; i < 6; i++)
        if (got[i] != want[i]) fail_msg("element %d: got %lld, want %lld", i, (long long)got[i], (long long)want[i]);
}

/* ==== model-level validation ================================================== *
 * A 1-layer llama with n_embd 8, 2 heads, n_ff 16 and an 8-token SPM vocab,
 * written with the writer; each test breaks one thing and checks that
 * elpis_model_load names it. */

enum { T_EMBD = 8, T_HEAD = 2, T_FF = 16, T_VOCAB = 8, T_CTX = 64 };

typedef struct tiny_opts {
    const char *arch;          /* general.architecture (default "llama") */
    const char *skip_key;      /* full key name to leave out */
    const char *skip_tensor;   /* tensor to leave out */
    const char *bad_shape;     /* tensor whose last dimension gets +4 */
    bool mixed_widths;         /* hyperparameters as u8/u16/u64/i32/f64 */
} tiny_opts;

static elpis_status fill_weights(void *user, const char *name, uint64_t offset, void *dst, size_t n, elpis_error *err) {
    (void)user; (void)err;
    bool norm = strstr(name, "norm") != NULL;
    float *x = dst;
    for (size_t i = 0; i < n / 4; i++) x[i] = norm ? 1.0f : 0.02f * sinf((float)(offset / 4 + i) * 0.7f);
    return ELPIS_OK;
}

static void tiny_key(elpis_gguf_writer *w, const tiny_opts *o, const char *suffix, uint64_t v, uint32_t mixed_type) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", o->arch, suffix);
    if (o->skip_key && !strcmp(key, o->skip_key)) return;
    switch (o->mixed_widths ? mixed_type : GGUF_UINT32) {
    case GGUF_UINT8: elpis_gguf_writer_add_u8(w, key, (uint8_t)v); break;
    case GGUF_UINT16: elpis_gguf_writer_add_u16(w, key, (uint16_t)v); break;
    case GGUF_UINT64: elpis_gguf_writer_add_u64(w, key, v); break;
    case GGUF_INT32: elpis_gguf_writer_add_i32(w, key, (int32_t)v); break;
    default: elpis_gguf_writer_add_u32(w, key, (uint32_t)v); break;
    }
}

static void tiny_tensor(elpis_gguf_writer *w, const tiny_opts *o, const char *name, int64_t ne0, int64_t ne1) {
    if (o->skip_tensor && !strcmp(name, o->skip_tensor)) return;
    bool bad = o->bad_shape && !strcmp(name, o->bad_shape);
    int64_t ne[2] = { ne0, ne1 };
    uint32_t n_dims = ne1 ? 2 : 1;
    if (bad) ne[n_dims - 1] += 4;
    elpis_gguf_writer_add_tensor_fill(w, name, ELPIS_F32, n_dims, ne, fill_weights, NULL);
}

static void tiny_vocab(elpis_gguf_writer *w) {
    /* "\342\226\201" is U+2581, SentencePiece's space (octal: a hex escape would swallow the 'a') */
    static const char *const tokens[T_VOCAB] = { "<unk>", "<s>", "</s>", "\342\226\201", "a", "b", "\342\226\201a", "ab" };
    static const float scores[T_VOCAB] = { 0, 0, 0, -1, -2, -3, -4, -5 };
    static const int32_t types[T_VOCAB] = { 2, 3, 3, 1, 1, 1, 1, 1 };
    elpis_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    elpis_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, T_VOCAB);
    elpis_gguf_writer_add_arr_f32(w, "tokenizer.ggml.scores", scores, T_VOCAB);
    elpis_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", types, T_VOCAB);
    elpis_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    elpis_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    elpis_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
}

static elpis_gguf_writer *tiny_model(const tiny_opts *in) {
    tiny_opts o = *in;
    if (!o.arch) o.arch = "llama";
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    assert_non_null(w);
    elpis_gguf_writer_add_str(w, "general.architecture", o.arch);
    elpis_gguf_writer_add_str(w, "general.name", "tiny test model");
    tiny_key(w, &o, "context_length", T_CTX, GGUF_UINT64);
    tiny_key(w, &o, "embedding_length", T_EMBD, GGUF_UINT16);
    tiny_key(w, &o, "block_count", 1, GGUF_UINT8);
    tiny_key(w, &o, "feed_forward_length", T_FF, GGUF_INT32);
    tiny_key(w, &o, "attention.head_count", T_HEAD, GGUF_UINT8);
    tiny_key(w, &o, "attention.head_count_kv", T_HEAD, GGUF_UINT64);
    char key[96];
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", o.arch);
    if (o.skip_key && !strcmp(key, o.skip_key)) { /* left out */ }
    else if (o.mixed_widths) elpis_gguf_writer_add_f64(w, key, 1e-5);
    else elpis_gguf_writer_add_f32(w, key, 1e-5f);
    tiny_vocab(w);
    tiny_tensor(w, &o, "token_embd.weight", T_EMBD, T_VOCAB);
    tiny_tensor(w, &o, "output_norm.weight", T_EMBD, 0);
    tiny_tensor(w, &o, "output.weight", T_EMBD, T_VOCAB);
    tiny_tensor(w, &o, "blk.0.attn_norm.weight", T_EMBD, 0);
    tiny_tensor(w, &o, "blk.0.attn_q.weight", T_EMBD, T_EMBD);
    tiny_tensor(w, &o, "blk.0.attn_k.weight", T_EMBD, T_EMBD);
    tiny_tensor(w, &o, "blk.0.attn_v.weight", T_EMBD, T_EMBD);
    tiny_tensor(w, &o, "blk.0.attn_output.weight", T_EMBD, T_EMBD);
    tiny_tensor(w, &o, "blk.0.ffn_norm.weight", T_EMBD, 0);
    tiny_tensor(w, &o, "blk.0.ffn_gate.weight", T_EMBD, T_FF);
    tiny_tensor(w, &o, "blk.0.ffn_up.weight", T_EMBD, T_FF);
    tiny_tensor(w, &o, "blk.0.ffn_down.weight", T_FF, T_EMBD);
    if (elpis_gguf_writer_error(w)->code != ELPIS_OK) fail_msg("tiny model: %s", elpis_gguf_writer_error(w)->msg);
    return w;
}

static void tiny_model_file(elpis_buf *out) {
    elpis_gguf_writer *w = tiny_model(&(tiny_opts){ 0 });
    elpis_error err = { 0 };
    if (elpis_gguf_writer_to_buf(w, out, &err) != ELPIS_OK) fail_msg("%s", err.msg);
    elpis_gguf_writer_free(w);
}

/* Write the variant to a file and load it; returns the status, fills err. */
static elpis_status load_tiny(const tiny_opts *o, const char *file, elpis_model **m, elpis_error *err) {
    elpis_gguf_writer *w = tiny_model(o);
    const char *path = tmp_path(file);
    if (elpis_gguf_writer_write(w, path, err) != ELPIS_OK) fail_msg("write: %s", err->msg);
    elpis_gguf_writer_free(w);
    elpis_status st = elpis_model_load(m, path, err);
    unlink(path);
    return st;
}

static void expect_model_error(const tiny_opts *o, elpis_status code, const char *a, const char *b) {
    elpis_model *m = NULL;
    elpis_error err = { 0 };
    elpis_status st = load_tiny(o, "broken.gguf", &m, &err);
    if (st == ELPIS_OK) { elpis_model_free(m); fail_msg("model loaded; wanted an error naming %s", a); }
    if (st != code) fail_msg("status %s: %s", elpis_status_name(st), err.msg);
    assert_null(m);
    assert_contains(err.msg, "broken.gguf");
    assert_contains(err.msg, a);
    if (b) assert_contains(err.msg, b);
}

/* Positive control: the unbroken tiny model loads (needs the tokenizer module). */
static void test_model_tiny_loads(void **state) {
    (void)state;
    for (int mixed = 0; mixed < 2; mixed++) {
        elpis_model *m = NULL;
        elpis_error err = { 0 };
        if (load_tiny(&(tiny_opts){ .mixed_widths = mixed }, "tiny.gguf", &m, &err) != ELPIS_OK)
            fail_msg("mixed=%d: %s", mixed, err.msg);
        assert_int_equal(m->hp.arch, ELPIS_ARCH_LLAMA);
        assert_int_equal(m->hp.n_embd, T_EMBD);
        assert_int_equal(m->hp.n_layer, 1);
        assert_int_equal(m->hp.n_ff, T_FF);
        assert_int_equal(m->hp.n_head, T_HEAD);
        assert_int_equal(m->hp.n_head_kv, T_HEAD);
        assert_int_equal(m->hp.head_dim, T_EMBD / T_HEAD);
        assert_int_equal(m->hp.n_vocab, T_VOCAB);
        assert_int_equal(m->hp.n_ctx_train, T_CTX);
        assert_true(fabsf(m->hp.rms_eps - 1e-5f) < 1e-9f);
        assert_false(m->tied_output);
        assert_string_equal(m->name, "tiny test model");
        elpis_model_free(m);
    }
}

static void test_model_missing_key(void **state) {
    (void)state;
    expect_model_error(&(tiny_opts){ .skip_key = "llama.embedding_length" }, ELPIS_EFORMAT,
                       "missing required key llama.embedding_length", NULL);
    expect_model_error(&(tiny_opts){ .skip_key = "llama.attention.layer_norm_rms_epsilon" }, ELPIS_EFORMAT,
                       "llama.attention.layer_norm_rms_epsilon", NULL);
}

static void test_model_missing_tensor(void **state) {
    (void)state;
    expect_model_error(&(tiny_opts){ .skip_tensor = "blk.0.ffn_up.weight" }, ELPIS_EFORMAT,
                       "missing tensor 'blk.0.ffn_up.weight'", NULL);
    expect_model_error(&(tiny_opts){ .skip_tensor = "token_embd.weight" }, ELPIS_EFORMAT, "token_embd.weight", NULL);
}

static void test_model_wrong_shape(void **state) {
    (void)state;
    expect_model_error(&(tiny_opts){ .bad_shape = "blk.0.attn_q.weight" }, ELPIS_EFORMAT,
                       "tensor 'blk.0.attn_q.weight' has shape [8, 12", "expected [8, 8]");
    expect_model_error(&(tiny_opts){ .bad_shape = "blk.0.ffn_norm.weight" }, ELPIS_EFORMAT,
                       "tensor 'blk.0.ffn_norm.weight' has shape [12, 1", "expected [8, 1]");
}

static void test_model_unsupported_arch(void **state) {
    (void)state;
    expect_model_error(&(tiny_opts){ .arch = "mamba" }, ELPIS_EUNSUPPORTED, "architecture 'mamba' is not supported", NULL);
}

/* ==== seeds for the fuzzer ===================================================== */

static int write_seed(const char *dir, const char *name, elpis_gguf_writer *w) {
    char path[1024];
    elpis_error err = { 0 };
    snprintf(path, sizeof path, "%s/%s", dir, name);
    elpis_status st = elpis_gguf_writer_write(w, path, &err);
    elpis_gguf_writer_free(w);
    if (st != ELPIS_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("wrote %s\n", path);
    return 0;
}

/* Small valid files: every value type; arrays, strings and two tensors;
 * a non-default alignment; a whole (tiny) llama model. */
static int write_seeds(const char *dir) {
    static const char *const strs[] = { "<s>", "\xe2\x96\x81the", "a b" };
    static const int32_t ints[] = { 1, -2, 3 };
    static const float floats[] = { 0.5f, -1.0f };
    float t1[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    init_blobs();
    int rc = 0;
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    add_metadata(w, 0);
    rc |= write_seed(dir, "all_value_types.gguf", w);

    w = elpis_gguf_writer_new();
    elpis_gguf_writer_add_str(w, "general.architecture", "llama");
    elpis_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", strs, 3);
    elpis_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", ints, 3);
    elpis_gguf_writer_add_arr_f32(w, "tokenizer.ggml.scores", floats, 2);
    elpis_gguf_writer_add_u32(w, "llama.block_count", 1);
    elpis_gguf_writer_add_tensor(w, "output_norm.weight", ELPIS_F32, 1, (int64_t[]){ 8 }, t1, sizeof t1);
    elpis_gguf_writer_add_tensor(w, "blk.0.attn_q.weight", ELPIS_Q8_0, 2, (int64_t[]){ 32, 2 }, q8_data, sizeof q8_data);
    rc |= write_seed(dir, "arrays_two_tensors.gguf", w);

    w = elpis_gguf_writer_new();
    elpis_gguf_writer_add_u32(w, "general.alignment", 64);
    elpis_gguf_writer_add_str(w, "general.name", "aligned");
    elpis_gguf_writer_add_tensor(w, "a", ELPIS_F16, 1, (int64_t[]){ 5 }, f16_data, sizeof f16_data);
    elpis_gguf_writer_add_tensor(w, "b", ELPIS_F32, 2, (int64_t[]){ 2, 4 }, t1, sizeof t1);
    rc |= write_seed(dir, "align64.gguf", w);

    rc |= write_seed(dir, "tiny_llama.gguf", tiny_model(&(tiny_opts){ 0 }));
    return rc;
}

/* ==== fixture and main ============================================================ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int group_setup(void **state) {
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/elpis-test-gguf-XXXXXX", t && *t ? t : "/tmp");
    init_blobs();
    return mkdtemp(g_tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    return nftw(g_tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_alignment_key),
        cmocka_unit_test(test_modes_and_file_agree),
        cmocka_unit_test(test_fill_chunks),
        cmocka_unit_test(test_writer_refuses_bad_input),
        cmocka_unit_test(test_writer_write_failures),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_unsupported_versions),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_single_byte_corruption),
        cmocka_unit_test(test_absurd_counts),
        cmocka_unit_test(test_absurd_string_lengths),
        cmocka_unit_test(test_absurd_array_lengths),
        cmocka_unit_test(test_nested_array),
        cmocka_unit_test(test_unknown_value_type),
        cmocka_unit_test(test_unknown_tensor_type),
        cmocka_unit_test(test_tensor_dims),
        cmocka_unit_test(test_negative_dims),
        cmocka_unit_test(test_row_not_block_multiple),
        cmocka_unit_test(test_tensor_offsets),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_arr_i64_of_huge_floats),
        cmocka_unit_test(test_model_tiny_loads),
        cmocka_unit_test(test_model_missing_key),
        cmocka_unit_test(test_model_missing_tensor),
        cmocka_unit_test(test_model_wrong_shape),
        cmocka_unit_test(test_model_unsupported_arch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
