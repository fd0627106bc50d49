/* gguf.h -- read-only access to GGUF v2/v3 model files.
 *
 * The file is mmap'd read-only and never copied. Parsing validates every
 * count, length and offset against the bytes that remain, so a malformed or
 * hostile file yields one error line naming the file, the problem and the
 * byte offset -- never a crash and never an allocation larger than the file
 * could justify (each element of any array takes at least one byte of it).
 *
 * Strings returned here point into the mapping (not NUL-terminated: use the
 * length) and live as long as the gguf_file.
 */
#ifndef ELPIS_GGUF_H
#define ELPIS_GGUF_H

#include "elpis/base.h"

enum gguf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
    GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
    GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_VTYPE_COUNT
};

typedef struct gguf_str {
    const char *ptr;   /* into the mapping; not NUL-terminated */
    uint64_t    len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;             /* enum gguf_vtype */
    union {
        uint64_t u64; int64_t i64; double f64; bool b;
        gguf_str str;
    } v;                       /* scalars, widened */
    /* ARRAY only: */
    uint32_t arr_type;         /* element type (never ARRAY: nested arrays are rejected) */
    uint64_t arr_n;
    const uint8_t *arr_data;   /* raw little-endian elements (numeric arrays) */
    gguf_str *arr_str;         /* string arrays: arr_n entries */
} gguf_kv;

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 64

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t  ne[GGUF_MAX_DIMS];  /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint32_t type;               /* ggml type id (elpis_dtype) */
    uint64_t offset;             /* relative to the data section */
    uint64_t nbytes;
    const void *data;            /* into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    char       *path;            /* for error messages */
    const uint8_t *base;         /* mapping (or caller's buffer for gguf_parse) */
    uint64_t    size;
    bool        mapped;
    uint32_t    version;
    uint64_t    n_kv, n_tensors;
    gguf_kv    *kv;
    gguf_tensor *tensors;
    uint64_t    alignment;
    uint64_t    data_offset;     /* absolute offset of the tensor data section */
} gguf_file;

/* mmap and parse `path`. */
elpis_status gguf_open(gguf_file **out, const char *path, elpis_error *err);
/* Parse a buffer the caller keeps alive (fuzzing, tests). `name` is used in errors. */
elpis_status gguf_parse(gguf_file **out, const void *buf, size_t size, const char *name, elpis_error *err);
void gguf_close(gguf_file *f);

/* ---- metadata look-ups: return false if the key is missing or has a type
 * that cannot be converted (a string where a number is wanted, ...). Numeric
 * getters accept any integer width, and signed/unsigned, if the value fits. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out);  /* float32/64 or integer */
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* Arrays: element type must match `type` exactly (for numeric arrays). */
const gguf_kv *gguf_find_array(const gguf_file *f, const char *key, uint32_t elem_type);
/* i-th element of a numeric array as i64/f32 (any integer or float type). */
int64_t gguf_arr_i64(const gguf_kv *kv, uint64_t i);
float   gguf_arr_f32(const gguf_kv *kv, uint64_t i);

/* Key compare helper for printf("%.*s") style use. */
bool gguf_str_eq(gguf_str s, const char *cstr);

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
const char *gguf_vtype_name(uint32_t t);

#endif
