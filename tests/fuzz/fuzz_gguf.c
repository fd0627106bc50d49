/* fuzz_gguf.c -- libFuzzer target for the GGUF reader.
 *
 * Parses the input with gguf_parse and, when it parses, reads everything the
 * file exposes through the public getters, so that any pointer or length the
 * parser accepted is actually dereferenced under ASan. Invariants checked
 * (abort on violation, which libFuzzer reports as a crash):
 *   - a rejection comes with a message naming the input and an offset;
 *   - every accepted tensor's data lies inside the input, at an aligned offset;
 *   - gguf_find finds each key (the first one with that name; keys are unique).
 * Seeds: tests/fuzz/corpus/fuzz_gguf/ (written by `test_gguf --write-seeds`).
 */
#include "elpis/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz.gguf"

static void check(bool ok, const char *what) {
    if (!ok) { fprintf(stderr, "fuzz_gguf: invariant broken: %s\n", what); abort(); }
}

/* Keys are not NUL-terminated in the file; look them up by a copy. */
static void exercise_kv(const gguf_file *f, const gguf_kv *kv) {
    char key[256];
    if (kv->key.len >= sizeof key) return;
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = 0;
    bool plain = memchr(key, 0, kv->key.len) == NULL;   /* else a C-string look-up sees a prefix */
    check(!plain || gguf_find(f, key) == kv, "gguf_find returns the unique key");
    uint64_t u; int64_t s; float x; bool b; gguf_str str;
    (void)gguf_get_u64(f, key, &u);
    (void)gguf_get_i64(f, key, &s);
    (void)gguf_get_f32(f, key, &x);
    (void)gguf_get_bool(f, key, &b);
    if (gguf_get_str(f, key, &str) && str.len) {
        volatile char c = str.ptr[0] ^ str.ptr[str.len - 1];
        (void)c;
    }
    if (kv->type != GGUF_ARRAY) return;
    check(!plain || gguf_find_array(f, key, kv->arr_type) == kv, "gguf_find_array with the element type");
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        if (kv->arr_type == GGUF_STRING) {
            const gguf_str *e = &kv->arr_str[i];
            volatile char c = e->len ? e->ptr[0] ^ e->ptr[e->len - 1] : 0;
            (void)c;
        } else {
            (void)gguf_arr_i64(kv, i);
            (void)gguf_arr_f32(kv, i);
        }
    }
    (void)gguf_arr_i64(kv, kv->arr_n);   /* out of range: must return 0, not read */
}

static void exercise_tensor(const gguf_file *f, const gguf_tensor *t, const uint8_t *data, size_t size) {
    char name[GGUF_MAX_NAME + 1];
    memcpy(name, t->name.ptr, t->name.len);   /* the parser bounds names below GGUF_MAX_NAME */
    name[t->name.len] = 0;
    if (!memchr(t->name.ptr, 0, t->name.len)) check(gguf_find_tensor(f, name) == t, "gguf_find_tensor");
    const uint8_t *p = t->data;
    check(t->offset % f->alignment == 0, "tensor offset aligned");
    check(p >= data && t->nbytes <= size && (size_t)(p - data) <= size - t->nbytes, "tensor data inside the input");
    if (t->nbytes) {
        volatile uint8_t c = p[0] ^ p[t->nbytes - 1];
        (void)c;
    }
    (void)gguf_vtype_name(t->type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *f = NULL;
    elpis_error err = { 0 };
    if (gguf_parse(&f, data, size, FUZZ_NAME, &err) != ELPIS_OK) {
        check(strstr(err.msg, FUZZ_NAME) != NULL, "error names the input");
        check(err.code != ELPIS_EFORMAT || strstr(err.msg, "offset") != NULL, "format error names an offset");
        return 0;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) exercise_kv(f, &f->kv[i]);
    for (uint64_t i = 0; i < f->n_tensors; i++) exercise_tensor(f, &f->tensors[i], data, size);
    (void)gguf_find(f, "general.architecture");
    gguf_close(f);
    return 0;
}
