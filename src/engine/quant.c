/* quant.c -- type table, reference (de)quantization, portable dot kernels,
 * and the run-time choice of kernel path.
 *
 * DESIGN
 * - Facts (block layouts, formulas) are ggml's, as summarised in
 *   shared/docs/engine-facts.md §2. The structs live in quant.h.
 * - The code here is the REFERENCE: plain C, one block at a time, integer sums
 *   inside a block and float accumulation across blocks. The SIMD files
 *   (quant_avx2.c, quant_avx512.c) are tested against it.
 * - A weight row is dotted with an activation row already converted to the
 *   weight type's vec_dot_type:  sum_blocks (d_w*d_x) * sum_i(q_w*q_x)
 *   (+ the min/offset term for the types that have one).
 * - Kernel tables: the portable table is complete; a SIMD table starts as a
 *   copy of it and the SIMD file overwrites what it implements (avx512 on top
 *   of avx2), so an entry is never NULL for a weight type.
 *
 * INVARIANTS
 * - Batch invariance: the portable vec_dot for nrc>1 simply calls the nrc==1
 *   routine per column, so each column's bits cannot depend on nrc.
 * - Kernels and quantizers never allocate and never touch global state.
 * - Tables are built exactly once (pthread_once) and are read-only after.
 */
#include "elpis/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

_Static_assert(sizeof(elpis_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(elpis_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(elpis_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(elpis_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(elpis_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(elpis_block_q8_1) == 36, "q8_1 block");
_Static_assert(sizeof(elpis_block_q2_K) == 84, "q2_K block");
_Static_assert(sizeof(elpis_block_q3_K) == 110, "q3_K block");
_Static_assert(sizeof(elpis_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(elpis_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(elpis_block_q6_K) == 210, "q6_K block");
_Static_assert(sizeof(elpis_block_q8_K) == 292, "q8_K block");
_Static_assert(sizeof(elpis_block_q8_s) == 40, "q8_s block");
_Static_assert(sizeof(elpis_block_q8_0x8) == 8 * 34, "q8_0x8 block");
_Static_assert(sizeof(elpis_block_q4_0x8) == 8 * 18, "q4_0x8 block");
_Static_assert(sizeof(elpis_block_q4_Kx8) == 8 * 144 + 32, "q4_Kx8 block");
_Static_assert(sizeof(elpis_block_q8_ks) == 276, "q8_ks block");

/* ==== Type table ========================================================== */

/* Q2_K and Q3_K are known (sizes, so a loader can skip or report them) but
 * not weights: this engine has no dot kernels for them. */
static const elpis_type_info g_types[ELPIS_DTYPE_MAX] = {
    [ELPIS_F32]  = { "f32",  1,   4,   ELPIS_F32,  true },
    [ELPIS_F16]  = { "f16",  1,   2,   ELPIS_F16,  true },
    [ELPIS_BF16] = { "bf16", 1,   2,   ELPIS_BF16, true },
    [ELPIS_Q4_0] = { "q4_0", 32,  18,  ELPIS_Q8_0, true },
    [ELPIS_Q4_1] = { "q4_1", 32,  20,  ELPIS_Q8_1, true },
    [ELPIS_Q5_0] = { "q5_0", 32,  22,  ELPIS_Q8_0, true },
    [ELPIS_Q5_1] = { "q5_1", 32,  24,  ELPIS_Q8_1, true },
    [ELPIS_Q8_0] = { "q8_0", 32,  34,  ELPIS_Q8_0, true },
    [ELPIS_Q8_1] = { "q8_1", 32,  36,  ELPIS_Q8_1, false },
    [ELPIS_Q2_K] = { "q2_K", 256, 84,  ELPIS_Q8_K, false },
    [ELPIS_Q3_K] = { "q3_K", 256, 110, ELPIS_Q8_K, false },
    [ELPIS_Q4_K] = { "q4_K", 256, 144, ELPIS_Q8_K, true },
    [ELPIS_Q5_K] = { "q5_K", 256, 176, ELPIS_Q8_K, true },
    [ELPIS_Q6_K] = { "q6_K", 256, 210, ELPIS_Q8_K, true },
    [ELPIS_Q8_K] = { "q8_K", 256, 292, ELPIS_Q8_K, false },
    [ELPIS_Q8_KS] = { "q8_ks", 256, 276, ELPIS_Q8_KS, false },  /* internal (pack.c) */
    [ELPIS_Q8_S]  = { "q8_s",  32,  40,  ELPIS_Q8_S,  false },  /* internal (pack.c) */
};

const elpis_type_info *elpis_type_info_of(uint32_t t) {
    if (t >= ELPIS_DTYPE_MAX || !g_types[t].name) return NULL;
    return &g_types[t];
}

size_t elpis_row_bytes(elpis_dtype t, int64_t n) {
    const elpis_type_info *ti = elpis_type_info_of((uint32_t)t);
    if (!ti || n < 0) return 0;
    return (size_t)(n / ti->blck) * ti->bytes;
}

/* Exact f16 -> f32 without a call: place exponent and mantissa in the f32
 * fields and scale by 2^112 (re-biases 15 -> 127; also makes f16
 * subnormals exact normals). Inf/NaN keep an all-ones exponent. Checked
 * against elpis_f16_to_f32 for all 65536 inputs by the tests. */
static inline float f16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    union { uint32_t u; float f; } v;
    if (em >= 0x7c00u) {
        v.u = sign | 0x7f800000u | (em & 0x3ffu) << 13;
        return v.f;
    }
    v.u = em << 13;
    v.f *= 0x1p112f;
    v.u |= sign;
    return v.f;
}

static inline uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ==== Reference dequantization (engine-facts §2) =========================== */

static void deq_q4_0(const elpis_block_q4_0 *b, float *y) {
    const float d = f16(b->d);
    for (int j = 0; j < 16; j++) {                  /* low nibbles = elements 0..15 */
        y[j]      = (float)((b->qs[j] & 15) - 8) * d;
        y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const elpis_block_q4_1 *b, float *y) {
    const float d = f16(b->d), m = f16(b->m);
    for (int j = 0; j < 16; j++) {
        y[j]      = (float)(b->qs[j] & 15) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

/* The 32 5-bit values (0..31) of a Q5 block: the fifth bit of element j is
 * bit j of qh (u32 LE) for j < 16, and for j+16 it is (qh >> (j+12)) & 0x10. */
static inline void q5_unpack(const uint8_t qh4[4], const uint8_t qs[16], int q[32]) {
    const uint32_t qh = load_u32le(qh4);
    for (int j = 0; j < 16; j++) {
        q[j]      = (int)((qs[j] & 15) | (((qh >> j) << 4) & 0x10));
        q[j + 16] = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10));
    }
}

static void deq_q5_0(const elpis_block_q5_0 *b, float *y) {
    const float d = f16(b->d);
    int q[32];
    q5_unpack(b->qh, b->qs, q);
    for (int j = 0; j < 32; j++) y[j] = (float)(q[j] - 16) * d;
}

static void deq_q5_1(const elpis_block_q5_1 *b, float *y) {
    const float d = f16(b->d), m = f16(b->m);
    int q[32];
    q5_unpack(b->qh, b->qs, q);
    for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d + m;
}

static void deq_q8_0(const elpis_block_q8_0 *b, float *y) {
    const float d = f16(b->d);
    for (int j = 0; j < 32; j++) y[j] = (float)b->qs[j] * d;
}

static void deq_q8_1(const elpis_block_q8_1 *b, float *y) {
    const float d = f16(b->d);
    for (int j = 0; j < 32; j++) y[j] = (float)b->qs[j] * d;
}

static void deq_q4_K(const elpis_block_q4_K *b, float *y) {
    const float d = f16(b->d), dmin = f16(b->dmin);
    uint8_t sc[8], mn[8];
    elpis_k4_scales(b->scales, sc, mn);
    for (int c = 0; c < 4; c++) {                   /* 64-weight chunk = 32 qs bytes */
        const uint8_t *q = b->qs + 32 * c;
        const float d0 = d * sc[2 * c], m0 = dmin * mn[2 * c];
        const float d1 = d * sc[2 * c + 1], m1 = dmin * mn[2 * c + 1];
        for (int l = 0; l < 32; l++) {
            y[64 * c + l]      = d0 * (float)(q[l] & 15) - m0;
            y[64 * c + 32 + l] = d1 * (float)(q[l] >> 4) - m1;
        }
    }
}

static void deq_q5_K(const elpis_block_q5_K *b, float *y) {
    const float d = f16(b->d), dmin = f16(b->dmin);
    uint8_t sc[8], mn[8];
    elpis_k4_scales(b->scales, sc, mn);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = b->qs + 32 * c;
        const float d0 = d * sc[2 * c], m0 = dmin * mn[2 * c];
        const float d1 = d * sc[2 * c + 1], m1 = dmin * mn[2 * c + 1];
        for (int l = 0; l < 32; l++) {
            const int h0 = ((b->qh[l] >> (2 * c)) & 1) << 4;
            const int h1 = ((b->qh[l] >> (2 * c + 1)) & 1) << 4;
            y[64 * c + l]      = d0 * (float)((q[l] & 15) + h0) - m0;
            y[64 * c + 32 + l] = d1 * (float)((q[l] >> 4) + h1) - m1;
        }
    }
}

/* The 256 values of a Q6_K block minus 32 (-32..31), in element order:
 * per half h (ql += 64, qh += 32), l < 32:
 *   y[l]    = ql[l]&15    | ((qh[l]>>0)&3)<<4      y[l+64] = ql[l]>>4    | ((qh[l]>>4)&3)<<4
 *   y[l+32] = ql[l+32]&15 | ((qh[l]>>2)&3)<<4      y[l+96] = ql[l+32]>>4 | ((qh[l]>>6)&3)<<4 */
static void q6_unpack(const elpis_block_q6_K *b, int q[256]) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int *y = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            y[l]      = ((ql[l] & 15)      | ((qh[l] >> 0) & 3) << 4) - 32;
            y[l + 32] = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
            y[l + 64] = ((ql[l] >> 4)      | ((qh[l] >> 4) & 3) << 4) - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        }
    }
}

/* Scale k covers elements 16k..16k+15. */
static void deq_q6_K(const elpis_block_q6_K *b, float *y) {
    const float d = f16(b->d);
    int q[256];
    q6_unpack(b, q);
    for (int e = 0; e < 256; e++) y[e] = d * (float)b->scales[e / 16] * (float)q[e];
}

static void deq_q8_K(const elpis_block_q8_K *b, float *y) {
    for (int j = 0; j < ELPIS_QK_K; j++) y[j] = b->d * (float)b->qs[j];
}

/* Run `deq` over the nb blocks of a row. */
#define DEQ_ROW(fn, btype)                                        \
    do {                                                          \
        const btype *b = src;                                     \
        for (int64_t i = 0; i < n / blck; i++) fn(&b[i], dst + i * blck); \
    } while (0)

void elpis_dequantize_row(elpis_dtype t, const void *src, float *dst, int64_t n) {
    const elpis_type_info *ti = elpis_type_info_of((uint32_t)t);
    if (!ti) return;
    const int blck = ti->blck;
    switch (t) {
    case ELPIS_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case ELPIS_F16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = f16(h[i]);
        break;
    }
    case ELPIS_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = elpis_bf16_to_f32(h[i]);
        break;
    }
    case ELPIS_Q4_0: DEQ_ROW(deq_q4_0, elpis_block_q4_0); break;
    case ELPIS_Q4_1: DEQ_ROW(deq_q4_1, elpis_block_q4_1); break;
    case ELPIS_Q5_0: DEQ_ROW(deq_q5_0, elpis_block_q5_0); break;
    case ELPIS_Q5_1: DEQ_ROW(deq_q5_1, elpis_block_q5_1); break;
    case ELPIS_Q8_0: DEQ_ROW(deq_q8_0, elpis_block_q8_0); break;
    case ELPIS_Q8_1: DEQ_ROW(deq_q8_1, elpis_block_q8_1); break;
    case ELPIS_Q4_K: DEQ_ROW(deq_q4_K, elpis_block_q4_K); break;
    case ELPIS_Q5_K: DEQ_ROW(deq_q5_K, elpis_block_q5_K); break;
    case ELPIS_Q6_K: DEQ_ROW(deq_q6_K, elpis_block_q6_K); break;
    case ELPIS_Q8_K: DEQ_ROW(deq_q8_K, elpis_block_q8_K); break;
    default:   /* known but unsupported (Q2_K, Q3_K): NaN, so misuse cannot pass unnoticed */
        for (int64_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
}

/* ==== Reference activation quantizers ====================================== */

static float block_amax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* Q8_0: d = amax/127, q = roundf(x/d) (ties away from zero). */
static void quantize_q8_0(const float *src, void *dst, int64_t n) {
    elpis_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) {
        const float *x = src + i * ELPIS_QK;
        const float d = block_amax(x, ELPIS_QK) / 127.0f;
        y[i].d = elpis_f32_to_f16(d);
        for (int j = 0; j < ELPIS_QK; j++) y[i].qs[j] = d != 0.0f ? (int8_t)roundf(x[j] / d) : 0;
    }
}

/* Q8_1: as Q8_0, plus s = d*sum(q) so Q4_1/Q5_1 can add their min in O(1). */
static void quantize_q8_1(const float *src, void *dst, int64_t n) {
    elpis_block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) {
        const float *x = src + i * ELPIS_QK;
        const float d = block_amax(x, ELPIS_QK) / 127.0f;
        int sum = 0;
        for (int j = 0; j < ELPIS_QK; j++) {
            y[i].qs[j] = d != 0.0f ? (int8_t)roundf(x[j] / d) : 0;
            sum += y[i].qs[j];
        }
        y[i].d = elpis_f32_to_f16(d);
        y[i].s = elpis_f32_to_f16(d * (float)sum);
    }
}

/* Q8_K: iscale = -127/max where max is the SIGNED value of largest |x| (first
 * one wins a tie), q = min(127, nearest_int(iscale*x)), d = 1/iscale, and
 * bsums[j] = sum of q[16j..16j+15] (the k-quant kernels use them for the
 * min/offset terms). nearest_int is round-half-even, i.e. lrintf in the
 * default rounding mode, which is what cvtps2dq does in the SIMD paths. */
static void quantize_q8_K(const float *src, void *dst, int64_t n) {
    elpis_block_q8_K *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK_K; i++) {
        const float *x = src + i * ELPIS_QK_K;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < ELPIS_QK_K; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        memset(&y[i], 0, sizeof(y[i]));
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < ELPIS_QK_K; j++) {
            const long v = lrintf(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v > 127 ? 127 : v);
            y[i].bsums[j / 16] = (int16_t)(y[i].bsums[j / 16] + y[i].qs[j]);
        }
        y[i].d = 1.0f / iscale;
    }
}

static void quantize_f16(const float *src, void *dst, int64_t n) {
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = elpis_f32_to_f16(src[i]);
}

static void quantize_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = elpis_f32_to_bf16(src[i]);
}

static void quantize_f32(const float *src, void *dst, int64_t n) {
    memmove(dst, src, (size_t)n * sizeof(float));
}

/* ==== Portable dot kernels (one column) ===================================== */
/* Each returns the dot of one weight row (nb blocks) with one activation row. */

static float dot1_q4_0(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q4_0 *w = vw;
    const elpis_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += ((w[i].qs[j] & 15) - 8) * x[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d));
    }
    return sum;
}

static float dot1_q4_1(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q4_1 *w = vw;
    const elpis_block_q8_1 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (w[i].qs[j] & 15) * x[i].qs[j] + (w[i].qs[j] >> 4) * x[i].qs[j + 16];
        /* (d_w q + m)·(d_x q_x) summed = d_w d_x Σ q q_x + m · (d_x Σ q_x) = ... + m·s */
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d)) + f16(w[i].m) * f16(x[i].s);
    }
    return sum;
}

static float dot1_q5_0(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q5_0 *w = vw;
    const elpis_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[32], isum = 0;
        q5_unpack(w[i].qh, w[i].qs, q);
        for (int j = 0; j < 32; j++) isum += (q[j] - 16) * x[i].qs[j];
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d));
    }
    return sum;
}

static float dot1_q5_1(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q5_1 *w = vw;
    const elpis_block_q8_1 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[32], isum = 0;
        q5_unpack(w[i].qh, w[i].qs, q);
        for (int j = 0; j < 32; j++) isum += q[j] * x[i].qs[j];
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d)) + f16(w[i].m) * f16(x[i].s);
    }
    return sum;
}

static float dot1_q8_0(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q8_0 *w = vw;
    const elpis_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += w[i].qs[j] * x[i].qs[j];
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d));
    }
    return sum;
}

/* Σ_j mn[j] * (sum of the 32 activations of sub-block j), via the bsums of 16:
 * the min term of Q4_K/Q5_K is computed once per super-block this way. */
static int k4_min_sum(const uint8_t mn[8], const int16_t bsums[16]) {
    int s = 0;
    for (int j = 0; j < 8; j++) s += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
    return s;
}

static float dot1_q4_K(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q4_K *w = vw;
    const elpis_block_q8_K *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        elpis_k4_scales(w[i].scales, sc, mn);
        int sumi = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = w[i].qs + 32 * c;
            const int8_t *y = x[i].qs + 64 * c;
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (q[l] & 15) * y[l];
                s1 += (q[l] >> 4) * y[l + 32];
            }
            sumi += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
        }
        const float dd = f16(w[i].d) * x[i].d, dm = f16(w[i].dmin) * x[i].d;
        sum += dd * (float)sumi - dm * (float)k4_min_sum(mn, x[i].bsums);
    }
    return sum;
}

static float dot1_q5_K(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q5_K *w = vw;
    const elpis_block_q8_K *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        elpis_k4_scales(w[i].scales, sc, mn);
        int sumi = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = w[i].qs + 32 * c;
            const int8_t *y = x[i].qs + 64 * c;
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += ((q[l] & 15) + (((w[i].qh[l] >> (2 * c)) & 1) << 4)) * y[l];
                s1 += ((q[l] >> 4) + (((w[i].qh[l] >> (2 * c + 1)) & 1) << 4)) * y[l + 32];
            }
            sumi += sc[2 * c] * s0 + sc[2 * c + 1] * s1;
        }
        const float dd = f16(w[i].d) * x[i].d, dm = f16(w[i].dmin) * x[i].d;
        sum += dd * (float)sumi - dm * (float)k4_min_sum(mn, x[i].bsums);
    }
    return sum;
}

static float dot1_q6_K(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q6_K *w = vw;
    const elpis_block_q8_K *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[256], sumi = 0;
        q6_unpack(&w[i], q);
        for (int k = 0; k < 16; k++) {       /* one scale per 16 weights */
            int s = 0;
            for (int l = 16 * k; l < 16 * k + 16; l++) s += q[l] * x[i].qs[l];
            sumi += w[i].scales[k] * s;
        }
        sum += (f16(w[i].d) * x[i].d) * (float)sumi;
    }
    return sum;
}

/* Float dots: four partial sums (element i goes to sum i%4), combined in a
 * fixed order, so the loop is not one long chain of dependent adds. */
#define FLOAT_DOT(name, T, CONV)                                                     \
    static float dot1_##name(int64_t n, const void *vw, const void *vx) {            \
        const T *w = vw, *x = vx;                                                    \
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;                            \
        int64_t i = 0;                                                               \
        for (; i + 4 <= n; i += 4) {                                                 \
            a0 += CONV(w[i]) * CONV(x[i]);                                           \
            a1 += CONV(w[i + 1]) * CONV(x[i + 1]);                                   \
            a2 += CONV(w[i + 2]) * CONV(x[i + 2]);                                   \
            a3 += CONV(w[i + 3]) * CONV(x[i + 3]);                                   \
        }                                                                            \
        float sum = (a0 + a1) + (a2 + a3);                                           \
        for (; i < n; i++) sum += CONV(w[i]) * CONV(x[i]);                           \
        return sum;                                                                  \
    }

#define AS_F32(v) (v)
FLOAT_DOT(f16, uint16_t, f16)
FLOAT_DOT(bf16, uint16_t, elpis_bf16_to_f32)
FLOAT_DOT(f32, float, AS_F32)

/* nrc columns = nrc independent calls: batch invariant by construction. */
#define PORTABLE_VEC_DOT(name, blck)                                                   \
    static void vec_dot_##name(int64_t n, float *s, size_t bs, const void *w,          \
                               const void *x, size_t bx, int nrc) {                    \
        for (int c = 0; c < nrc; c++)                                                  \
            s[(size_t)c * bs] = dot1_##name(n / (blck), w, (const char *)x + (size_t)c * bx); \
    }

PORTABLE_VEC_DOT(q4_0, ELPIS_QK)
PORTABLE_VEC_DOT(q4_1, ELPIS_QK)
PORTABLE_VEC_DOT(q5_0, ELPIS_QK)
PORTABLE_VEC_DOT(q5_1, ELPIS_QK)
PORTABLE_VEC_DOT(q8_0, ELPIS_QK)
PORTABLE_VEC_DOT(q4_K, ELPIS_QK_K)
PORTABLE_VEC_DOT(q5_K, ELPIS_QK_K)
PORTABLE_VEC_DOT(q6_K, ELPIS_QK_K)
PORTABLE_VEC_DOT(f16, 1)
PORTABLE_VEC_DOT(bf16, 1)
PORTABLE_VEC_DOT(f32, 1)

void elpis_quantize_row(elpis_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case ELPIS_Q8_0: quantize_q8_0(src, dst, n); break;
    case ELPIS_Q8_1: quantize_q8_1(src, dst, n); break;
    case ELPIS_Q8_K: quantize_q8_K(src, dst, n); break;
    case ELPIS_Q8_S: elpis_quant__quantize_q8_s(src, dst, n); break;
    case ELPIS_Q8_KS: elpis_quant__quantize_q8_ks(src, dst, n); break;
    case ELPIS_F16:  quantize_f16(src, dst, n); break;
    case ELPIS_BF16: quantize_bf16(src, dst, n); break;
    case ELPIS_F32:  quantize_f32(src, dst, n); break;
    default: break;  /* not an activation type */
    }
}

/* ==== Kernel tables and selection =========================================== */

static void fill_portable(elpis_kernels *k) {
    memset(k, 0, sizeof(*k));
    k->name = "portable";
    k->max_nrc = 1;                    /* portable gains nothing from nrc>1 */
    k->vec_dot[ELPIS_Q4_0] = vec_dot_q4_0;
    k->vec_dot[ELPIS_Q4_1] = vec_dot_q4_1;
    k->vec_dot[ELPIS_Q5_0] = vec_dot_q5_0;
    k->vec_dot[ELPIS_Q5_1] = vec_dot_q5_1;
    k->vec_dot[ELPIS_Q8_0] = vec_dot_q8_0;
    k->vec_dot[ELPIS_Q4_K] = vec_dot_q4_K;
    k->vec_dot[ELPIS_Q5_K] = vec_dot_q5_K;
    k->vec_dot[ELPIS_Q6_K] = vec_dot_q6_K;
    k->vec_dot[ELPIS_F16]  = vec_dot_f16;
    k->vec_dot[ELPIS_BF16] = vec_dot_bf16;
    k->vec_dot[ELPIS_F32]  = vec_dot_f32;
    k->quantize[ELPIS_Q8_0] = quantize_q8_0;
    k->quantize[ELPIS_Q8_1] = quantize_q8_1;
    k->quantize[ELPIS_Q8_K] = quantize_q8_K;
    k->quantize[ELPIS_F16]  = quantize_f16;
    k->quantize[ELPIS_BF16] = quantize_bf16;
    k->quantize[ELPIS_F32]  = quantize_f32;
    elpis_quant__fill_pack_portable(k);  /* k->pack8 stays false: packing pays only with SIMD gemm8 */
}

#if defined(__x86_64__)
/* XCR0: which register states the OS saves (AVX needs bits 1,2; AVX-512 also 5,6,7). */
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static void cpu_features(bool *avx2, bool *avx512) {
    unsigned a, b, c, d;
    *avx2 = *avx512 = false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!osxsave || !avx) return;
    const uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    *avx2 = (b & (1u << 5)) && fma && f16c;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    const bool vnni = c & (1u << 11);
    *avx512 = *avx2 && f && dq && bw && vl && vnni && (xcr0 & 0xe0) == 0xe0;
}
#else
static void cpu_features(bool *avx2, bool *avx512) { *avx2 = *avx512 = false; }
#endif

static elpis_kernels g_portable, g_avx2, g_avx512;
static bool g_have_avx2, g_have_avx512;
static const elpis_kernels *g_chosen;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Table for `name`, or NULL if unknown or not runnable here (tables built). */
static const elpis_kernels *lookup(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "portable")) return &g_portable;
    if (!strcmp(name, "avx2")) return g_have_avx2 ? &g_avx2 : NULL;
    if (!strcmp(name, "avx512")) return g_have_avx512 ? &g_avx512 : NULL;
    return NULL;
}

/* Best path this CPU runs, unless ELPIS_KERNELS names another runnable one. */
static const elpis_kernels *choose(void) {
    const char *want = getenv("ELPIS_KERNELS");
    const elpis_kernels *best = g_have_avx512 ? &g_avx512 : g_have_avx2 ? &g_avx2 : &g_portable;
    if (!want || !*want) return best;
    const elpis_kernels *k = lookup(want);
    if (k) return k;
    elpis_log(ELPIS_LOG_WARN, "ELPIS_KERNELS=%s: not available on this CPU (or unknown); using %s",
              want, best->name);
    return best;
}

static void init_once(void) {
    bool avx2, avx512;
    cpu_features(&avx2, &avx512);
    fill_portable(&g_portable);
    g_avx2 = g_portable;
    g_have_avx2 = avx2 && elpis_quant__fill_avx2(&g_avx2);
    g_avx512 = g_avx2;                 /* avx512 keeps avx2 kernels it does not replace */
    g_have_avx512 = g_have_avx2 && avx512 && elpis_quant__fill_avx512(&g_avx512);
    g_chosen = choose();
}

const elpis_kernels *elpis_kernels_by_name(const char *name) {
    pthread_once(&g_once, init_once);
    return lookup(name);
}

const elpis_kernels *elpis_kernels_get(void) {
    pthread_once(&g_once, init_once);
    return g_chosen;
}
