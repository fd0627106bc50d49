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

static inline float f16(uint16_t h) { return elpis_f16_to_f32(h); }

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

/* 5-bit value of element j and j+16 of a Q5 block: high bit from qh (u32 LE),
 * bit j for the low half and bit j+16 (read as (qh>>(j+12))&0x10) for the high. */
static inline void q5_pair(const uint8_t qh4[4], const uint8_t *qs, int j, int *lo, int *hi) {
    const uint32_t qh = load_u32le(qh4);
    *lo = (int)((qs[j] & 15) | (((qh >> j) << 4) & 0x10));
    *hi = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10));
}

static void deq_q5_0(const elpis_block_q5_0 *b, float *y) {
    const float d = f16(b->d);
    for (int j = 0; j < 16; j++) {
        int lo, hi;
        q5_pair(b->qh, b->qs, j, &lo, &hi);
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static void deq_q5_1(const elpis_block_q5_1 *b, float *y) {
    const float d = f16(b->d), m = f16(b->m);
    for (int j = 0; j < 16; j++) {
        int lo, hi;
        q5_pair(b->qh, b->qs, j, &lo, &hi);
        y[j] = (float)lo * d + m;
        y[j + 16] = (float)hi * d + m;
    }
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

/* Q6_K 6-bit value (0..63) of element 32*g + l of half h, g = 0..3. */
static inline int q6_value(const elpis_block_q6_K *b, int h, int g, int l) {
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    const int lo = (g & 1) ? ql[l + 32] : ql[l];
    const int nib = (g < 2) ? (lo & 15) : (lo >> 4);
    return nib | (((qh[l] >> (2 * g)) & 3) << 4);
}

static void deq_q6_K(const elpis_block_q6_K *b, float *y) {
    const float d = f16(b->d);
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                const int e = 128 * h + 32 * g + l;  /* scale index = e/16 */
                y[e] = d * (float)b->scales[e / 16] * (float)(q6_value(b, h, g, l) - 32);
            }
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
    default: memset(dst, 0, (size_t)n * sizeof(float)); break; /* Q2_K/Q3_K: no dequant */
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
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo, hi;
            q5_pair(w[i].qh, w[i].qs, j, &lo, &hi);
            isum += (lo - 16) * x[i].qs[j] + (hi - 16) * x[i].qs[j + 16];
        }
        sum += (float)isum * (f16(w[i].d) * f16(x[i].d));
    }
    return sum;
}

static float dot1_q5_1(int64_t nb, const void *vw, const void *vx) {
    const elpis_block_q5_1 *w = vw;
    const elpis_block_q8_1 *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo, hi;
            q5_pair(w[i].qh, w[i].qs, j, &lo, &hi);
            isum += lo * x[i].qs[j] + hi * x[i].qs[j + 16];
        }
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
        int sumi = 0;
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++)
                for (int half16 = 0; half16 < 2; half16++) {  /* one scale per 16 weights */
                    const int e0 = 128 * h + 32 * g + 16 * half16;
                    int s = 0;
                    for (int l = 16 * half16; l < 16 * half16 + 16; l++)
                        s += (q6_value(&w[i], h, g, l) - 32) * x[i].qs[128 * h + 32 * g + l];
                    sumi += w[i].scales[e0 / 16] * s;
                }
        sum += (f16(w[i].d) * x[i].d) * (float)sumi;
    }
    return sum;
}

static float dot1_f16(int64_t n, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += f16(w[i]) * f16(x[i]);
    return sum;
}

static float dot1_bf16(int64_t n, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += elpis_bf16_to_f32(w[i]) * elpis_bf16_to_f32(x[i]);
    return sum;
}

static float dot1_f32(int64_t n, const void *vw, const void *vx) {
    const float *w = vw, *x = vx;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += w[i] * x[i];
    return sum;
}

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
