/* gguf_write.h -- build GGUF v3 files (tests, `elpis mkmodel`, `elpis vectors build`).
 *
 * Usage:
 *     elpis_gguf_writer *w = elpis_gguf_writer_new();
 *     elpis_gguf_writer_add_str(w, "general.architecture", "llama");
 *     elpis_gguf_writer_add_u32(w, "llama.embedding_length", 64);
 *     elpis_gguf_writer_add_tensor(w, "output_norm.weight", ELPIS_F32, 1, (int64_t[]){ 64 }, norm, 64 * 4);
 *     st = elpis_gguf_writer_write(w, "out.gguf", &err);
 *     elpis_gguf_writer_free(w);
 *
 * The file is laid out exactly as llama.cpp's gguf.cpp writes and insists on
 * reading (shared/docs/engine-facts.md §1.1): header, key/values in the order
 * added, tensor infos in the order added, zero padding to the alignment, then
 * each tensor's data followed by zero padding to the alignment. Tensor i's
 * offset is the sum of the padded sizes of tensors 0..i-1. The alignment is
 * the value of `general.alignment` if it was added (it must then be a uint32
 * power of two), else 32.
 *
 * Errors: every add_* validates its arguments (non-empty key, no duplicate
 * key or tensor name, tensor name < 64 bytes, 1..4 dims, known type, ne[0] a
 * multiple of the block size, nbytes equal to the size the shape implies) so
 * that a writer can only produce files our own reader accepts. The first
 * failure is sticky: it is returned by that add_* call, by every later call
 * (which then do nothing), and by write/to_buf together with its message.
 * This lets a builder make twenty add_* calls and check once.
 *
 * Tensor data has three ownership modes:
 *   add_tensor      copies the bytes now (small tensors, tests);
 *   add_tensor_ref  keeps the caller's pointer, which must stay valid until
 *                   the last write/to_buf call (big tensors already in memory);
 *   add_tensor_fill calls `fill` during write to produce the bytes in chunks
 *                   of whole rows (random-weight models that never exist in
 *                   memory at once).
 * Nothing is written before write/to_buf, and a writer may be written any
 * number of times (fill callbacks are then called again).
 */
#ifndef ELPIS_GGUF_WRITE_H
#define ELPIS_GGUF_WRITE_H

#include "elpis/base.h"
#include "elpis/gguf.h"
#include "elpis/quant.h"

typedef struct elpis_gguf_writer elpis_gguf_writer;

/* Produce bytes [offset, offset+n) of tensor `name`'s data into dst. Each call
 * covers whole rows (offset and n are multiples of the row size, n <= 1 MiB
 * unless one row is larger) and calls come in increasing offset order.
 * Return ELPIS_OK, or an error (filling err) to abort the write. */
typedef elpis_status (*elpis_gguf_fill_fn)(void *user, const char *name, uint64_t offset, void *dst,
                                           size_t n, elpis_error *err);

elpis_gguf_writer *elpis_gguf_writer_new(void);          /* NULL on OOM */
void elpis_gguf_writer_free(elpis_gguf_writer *w);       /* NULL is fine */

/* ---- metadata (keys and string values are copied) -------------------------- */
elpis_status elpis_gguf_writer_add_u8(elpis_gguf_writer *w, const char *key, uint8_t v);
elpis_status elpis_gguf_writer_add_i8(elpis_gguf_writer *w, const char *key, int8_t v);
elpis_status elpis_gguf_writer_add_u16(elpis_gguf_writer *w, const char *key, uint16_t v);
elpis_status elpis_gguf_writer_add_i16(elpis_gguf_writer *w, const char *key, int16_t v);
elpis_status elpis_gguf_writer_add_u32(elpis_gguf_writer *w, const char *key, uint32_t v);
elpis_status elpis_gguf_writer_add_i32(elpis_gguf_writer *w, const char *key, int32_t v);
elpis_status elpis_gguf_writer_add_u64(elpis_gguf_writer *w, const char *key, uint64_t v);
elpis_status elpis_gguf_writer_add_i64(elpis_gguf_writer *w, const char *key, int64_t v);
elpis_status elpis_gguf_writer_add_f32(elpis_gguf_writer *w, const char *key, float v);
elpis_status elpis_gguf_writer_add_f64(elpis_gguf_writer *w, const char *key, double v);
elpis_status elpis_gguf_writer_add_bool(elpis_gguf_writer *w, const char *key, bool v);
elpis_status elpis_gguf_writer_add_str(elpis_gguf_writer *w, const char *key, const char *v);

/* Arrays. add_arr takes n packed elements of any numeric (or bool) elem_type
 * in native little-endian layout; the typed forms are shorthands. */
elpis_status elpis_gguf_writer_add_arr(elpis_gguf_writer *w, const char *key, uint32_t elem_type,
                                       const void *elems, size_t n);
elpis_status elpis_gguf_writer_add_arr_u32(elpis_gguf_writer *w, const char *key, const uint32_t *v, size_t n);
elpis_status elpis_gguf_writer_add_arr_i32(elpis_gguf_writer *w, const char *key, const int32_t *v, size_t n);
elpis_status elpis_gguf_writer_add_arr_f32(elpis_gguf_writer *w, const char *key, const float *v, size_t n);
elpis_status elpis_gguf_writer_add_arr_str(elpis_gguf_writer *w, const char *key, const char *const *v, size_t n);

/* ---- tensors (name copied; shape {ne[0] contiguous, ...}) ------------------- */
elpis_status elpis_gguf_writer_add_tensor(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                          uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes);
elpis_status elpis_gguf_writer_add_tensor_ref(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                              uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes);
elpis_status elpis_gguf_writer_add_tensor_fill(elpis_gguf_writer *w, const char *name, elpis_dtype type,
                                               uint32_t n_dims, const int64_t *ne, elpis_gguf_fill_fn fill,
                                               void *user);

/* Bytes of data a tensor of this shape and type takes (unpadded) into *out;
 * ELPIS_EINVAL (message naming the problem) if the shape or type is invalid. */
elpis_status elpis_gguf_tensor_nbytes(elpis_dtype type, uint32_t n_dims, const int64_t *ne, uint64_t *out,
                                      elpis_error *err);

/* ---- output ---------------------------------------------------------------------
 * write: streams to PATH.tmp.PID.N in the same directory, then renames it over
 * `path`, so `path` is never left half-written (on failure it is untouched).
 * to_buf: appends the whole file to `out` (for in-memory files and tests). */
elpis_status elpis_gguf_writer_write(elpis_gguf_writer *w, const char *path, elpis_error *err);
elpis_status elpis_gguf_writer_to_buf(elpis_gguf_writer *w, elpis_buf *out, elpis_error *err);

/* The sticky error, if any add_* failed (ELPIS_OK and "" otherwise). */
const elpis_error *elpis_gguf_writer_error(const elpis_gguf_writer *w);

#endif
