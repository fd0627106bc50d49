/* quant.h -- tensor types, reference (de)quantization, and dot-product kernels.
 *
 * Design (as llama.cpp's CPU backend; facts in shared/docs/engine-facts.md §2):
 * every weight type has a `vec_dot_type`. A matmul converts its activations
 * ONCE into that type (Q8_0, Q8_1, Q8_K, F16, BF16 or F32), then every output
 * element is an integer (or half) dot product of one weight row against one
 * converted activation row.
 *
 * Kernels are chosen at run time: elpis_kernels_init() reads CPUID (and the
 * environment variable ELPIS_KERNELS=portable|avx2|avx512 to force a path, used
 * by the tests) and fills a table of function pointers. The portable C path is
 * the reference the SIMD paths are tested against.
 *
 * Batch invariance: vec_dot with nrc>1 must give, for every column, exactly the
 * bits that nrc==1 gives for that column (same operations in the same order).
 * The scheduler's reproducibility under load depends on it.
 */
#ifndef ELPIS_QUANT_H
#define ELPIS_QUANT_H

#include "elpis/base.h"

/* ggml type ids (the numbers stored in GGUF files). */
typedef enum elpis_dtype {
    ELPIS_F32 = 0, ELPIS_F16 = 1, ELPIS_Q4_0 = 2, ELPIS_Q4_1 = 3,
    ELPIS_Q5_0 = 6, ELPIS_Q5_1 = 7, ELPIS_Q8_0 = 8, ELPIS_Q8_1 = 9,
    ELPIS_Q2_K = 10, ELPIS_Q3_K = 11, ELPIS_Q4_K = 12, ELPIS_Q5_K = 13,
    ELPIS_Q6_K = 14, ELPIS_Q8_K = 15, ELPIS_BF16 = 30,
    ELPIS_Q8_KS = 38,  /* internal activation types for packed weights; never in a file */
    ELPIS_Q8_S = 39,
    ELPIS_DTYPE_MAX = 40
} elpis_dtype;

typedef struct elpis_type_info {
    const char *name;      /* "q4_0" */
    int      blck;         /* weights per block */
    size_t   bytes;        /* bytes per block */
    elpis_dtype vec_dot_type; /* activation type for dot products */
    bool     weight;       /* usable as a model weight by this engine */
} elpis_type_info;

/* NULL if `t` is not a type this engine knows. */
const elpis_type_info *elpis_type_info_of(uint32_t t);
/* Bytes of a row of n elements (n must be a multiple of blck). */
size_t elpis_row_bytes(elpis_dtype t, int64_t n);

/* Reference conversions, one row (n a multiple of the block size).
 * Dequantize handles every weight type and Q8_0/Q8_1/Q8_K; for a known type
 * without support (Q2_K, Q3_K: weight=false) it writes NaN; unknown t: no-op. */
void elpis_dequantize_row(elpis_dtype t, const void *src, float *dst, int64_t n);
/* Quantize activations into `t` (any vec_dot_type: Q8_0, Q8_1, Q8_K, F16, BF16, F32);
 * other types: no-op. */
void elpis_quantize_row(elpis_dtype t, const float *src, void *dst, int64_t n);

/* One kernel path. vec_dot computes nrc dot products of ONE weight row `w`
 * (type t, n elements) with nrc activation rows x, x+bx, x+2bx, ... (already
 * in t's vec_dot_type), writing s[0], s[bs], s[2bs], ...
 * Units: bx is in BYTES (activation rows are quantized blocks), bs in floats.
 * Every kernel accepts any nrc >= 1; max_nrc is only a tiling hint. */
typedef void (*elpis_vec_dot_fn)(int64_t n, float *s, size_t bs, const void *w,
                                 const void *x, size_t bx, int nrc);
typedef void (*elpis_quantize_fn)(const float *src, void *dst, int64_t n);
/* gemm8: ng consecutive packed groups of 8 rows (see "packed weights"
 * below; group i at groups + i*elpis_pack8_bytes(t, n)) against nrc
 * activation rows of type elpis_pack8_act(t): s[c*bs + 8*i + r] for i < ng,
 * r in 0..7, c < nrc. Batch invariant like vec_dot: each output's bits
 * depend on neither nrc nor ng. */
typedef void (*elpis_gemm8_fn)(int64_t n, float *s, size_t bs, const void *groups, int64_t ng,
                               const void *x, size_t bx, int nrc);

typedef struct elpis_kernels {
    const char *name;                                 /* "portable", "avx2", "avx512" */
    elpis_vec_dot_fn  vec_dot[ELPIS_DTYPE_MAX];       /* indexed by weight type */
    elpis_quantize_fn quantize[ELPIS_DTYPE_MAX];      /* indexed by activation type */
    elpis_gemm8_fn    gemm8[ELPIS_DTYPE_MAX];         /* packed weights; set for every packable type */
    int max_nrc;                                      /* largest nrc worth passing */
    bool pack8;                                       /* models loaded for this path pack their weights */
} elpis_kernels;

/* Pick kernels once (CPUID + ELPIS_KERNELS). Thread-safe, idempotent. */
const elpis_kernels *elpis_kernels_get(void);
/* A specific path by name, or NULL if this CPU cannot run it. */
const elpis_kernels *elpis_kernels_by_name(const char *name);

/* ---- block layouts (ggml src/ggml-common.h; engine-facts §2) ---------------
 * Exposed so model code and tests can build or inspect blocks. Half floats
 * are stored as raw IEEE fp16 bits (uint16_t); convert with elpis_f16_to_f32.
 * Byte arrays keep every struct free of padding: sizes are static_asserted
 * in quant.c against the table in engine-facts §2. */
#define ELPIS_QK   32    /* weights per legacy block (Q4_0 ... Q8_1) */
#define ELPIS_QK_K 256   /* weights per k-quant super-block */

typedef struct { uint16_t d; uint8_t qs[16]; } elpis_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } elpis_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } elpis_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } elpis_block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } elpis_block_q8_0;
typedef struct { uint16_t d, s; int8_t qs[32]; } elpis_block_q8_1;   /* s = d*sum(qs) */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } elpis_block_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } elpis_block_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } elpis_block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } elpis_block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } elpis_block_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } elpis_block_q8_K;

/* Q4_K/Q5_K: unpack the 12 packed bytes into 8 6-bit scales and 8 6-bit mins
 * (get_scale_min_k4, engine-facts §2). The portable kernels use this form. */
static inline void elpis_k4_scales(const uint8_t q[12], uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t)((q[j + 8] & 15) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

/* The same unpacking on 32-bit words (kmask1/2/3 = 0x3f3f3f3f, 0x0f0f0f0f,
 * 0x03030303): byte j of *sc / *mn is scale / min j. Stays in registers,
 * which the SIMD kernels need; tested against elpis_k4_scales. */
static inline void elpis_k4_scales_packed(const uint8_t q[12], uint64_t *sc, uint64_t *mn) {
    const uint32_t k1 = 0x3f3f3f3fu, k2 = 0x0f0f0f0fu, k3 = 0x03030303u;
    const uint32_t u0 = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
    const uint32_t u1 = (uint32_t)q[4] | (uint32_t)q[5] << 8 | (uint32_t)q[6] << 16 | (uint32_t)q[7] << 24;
    const uint32_t u2 = (uint32_t)q[8] | (uint32_t)q[9] << 8 | (uint32_t)q[10] << 16 | (uint32_t)q[11] << 24;
    *sc = (uint64_t)(u0 & k1) | (uint64_t)((u2 & k2) | ((u0 >> 6) & k3) << 4) << 32;
    *mn = (uint64_t)(u1 & k1) | (uint64_t)(((u2 >> 4) & k2) | ((u1 >> 6) & k3) << 4) << 32;
}

/* ---- packed weights (pack.c) ------------------------------------------------
 * Why: a row-at-a-time dot product ends in a horizontal sum per output and
 * re-derives the weight bytes' signs per activation column. For batched
 * matmuls (prefill, many streams) the AVX-512 path instead packs Q8_0 and
 * Q4_0 weights at load time: 8 consecutive rows, block by block,
 * interleaved so that one 32-byte load holds weights 4k..4k+3 of each of the
 * 8 rows. vpdpbusd of that against the 4 activation bytes 4k..4k+3 broadcast
 * gives 8 rows' partial sums in 8 lanes: no horizontal sums, no sign tricks.
 * Weights are stored unsigned: w + 128 for Q8_0, the raw nibble (w + 8) for
 * Q4_0; the offset times the activation block's sum (Q8_S carries it) is
 * subtracted in integers, so every block sum is exact before scaling.
 *
 * Layout of block b of a group (rows r = 0..7, element e of the block):
 *   Q8_0x8: d[r] = row r's scale; qs[(e/4)*32 + r*4 + e%4] = w + 128
 *   Q4_0x8: d[r]; chunk m = e/8 (32 bytes), byte r*4 + e%4, low nibble when
 *           (e/4) is even, high nibble otherwise; the raw Q4_0 nibble.
 *   Q4_Kx8 (super-block of 256): d[r], dmin[r]; sc[j][r] and the mins as
 *           pairs mn[j/2][r][j%2] for sub-block j (unpacked 6-bit values);
 *           qs[j] = sub-block j's nibbles arranged as a Q4_0x8 block's qs.
 *           Against Q8_KS: the sub-block scales multiply exact integer
 *           sub-block sums; the mins meet the activation's sub-block sums.
 * A Q8_0 / Q4_0 group is exactly as large as its 8 source rows; a Q4_K group
 * 32 bytes per super-block larger (elpis_pack8_bytes). */
/* Q8_S: d = Q8_0's f16 scale, widened; ms = -128 * sum(qs), the Q8_0x8
 * offset term as is (one broadcast), and Q4_0x8's -8 * sum(qs) as ms >> 4. */
typedef struct { float d; int32_t ms; int8_t qs[32]; } elpis_block_q8_s;
/* Q8_KS: Q8_K's quantization (d, qs) with the sums of each 32-value sub-block. */
typedef struct { float d; int16_t bsub[8]; int8_t qs[256]; } elpis_block_q8_ks;
typedef struct { uint16_t d[8]; uint8_t qs[256]; } elpis_block_q8_0x8;
typedef struct { uint16_t d[8]; uint8_t qs[128]; } elpis_block_q4_0x8;
typedef struct { uint16_t d[8], dmin[8]; uint8_t sc[8][8]; uint8_t mn[4][8][2]; uint8_t qs[8][128]; } elpis_block_q4_Kx8;

/* Can weights of type t be packed (Q8_0, Q4_0, Q4_K)? */
bool elpis_pack8_supported(elpis_dtype t);
/* Bytes of one packed group of 8 rows of n elements. */
size_t elpis_pack8_bytes(elpis_dtype t, int64_t n);
/* The activation type gemm8 takes for packed weights of type t. */
elpis_dtype elpis_pack8_act(elpis_dtype t);
/* Pack 8 rows of n elements (row r at rows + r*row_bytes) into dst
 * (elpis_pack8_bytes bytes, not overlapping the source). */
void elpis_pack8(elpis_dtype t, const void *rows, size_t row_bytes, int64_t n, void *dst);
/* Row r (0..7) of a packed group as floats: the exact path and the tests. */
void elpis_unpack8_row(elpis_dtype t, const void *group, int64_t n, int r, float *dst);

/* ---- internal to src/engine/quant*.c ---------------------------------------
 * quant.c fills a table with the portable kernels, then lets a SIMD file
 * overwrite the entries it implements, so no entry is ever NULL. Each returns
 * false (touching nothing) when built for a non-x86-64 target. The caller
 * has already checked CPUID. */
bool elpis_quant__fill_avx2(elpis_kernels *k);
/* pack.c: the reference gemm8 kernels and the portable Q8_S / Q8_KS quantizers. */
void elpis_quant__fill_pack_portable(elpis_kernels *k);
void elpis_quant__quantize_q8_s(const float *src, void *dst, int64_t n);
void elpis_quant__quantize_q8_ks(const float *src, void *dst, int64_t n);
bool elpis_quant__fill_avx512(elpis_kernels *k);

#endif
