/* quant_avx512.c -- AVX-512 (F, BW, VL, DQ, VNNI) dot kernels.
 *
 * DESIGN
 * - Same contract as quant_avx2.c (see there); this table starts as a copy of
 *   the avx2 one, so the activation quantizers and every type not replaced
 *   here run the AVX2 code.
 * - Q8_0 / Q4_0: two 32-weight blocks per 512-bit register. The signed x
 *   signed product uses |w| and x negated where w < 0 (AVX-512 has no
 *   vpsignb, so a masked subtract), then VNNI vpdpbusd (u8 x s8 -> s32 in one
 *   instruction). Lanes 0..7 belong to the first block, 8..15 to the second,
 *   so one 512-bit FMA applies both blocks' scales.
 * - Q4_K / Q6_K: 64 weights per register in activation order; maddubs gives
 *   s16 pair sums and VNNI vpdpwssd multiplies them by the per-sub-block
 *   scales and accumulates in one instruction. The scales are spread to s16
 *   lanes with vpermw.
 * - Multi-column bodies are always_inline functions of a constant nc, as in
 *   the AVX2 file.
 *
 * INVARIANTS
 * - Batch invariance: per column, the same IEEE operations in the same order
 *   for every nc (see quant_avx2.c).
 * - No overflow: activations are in [-127, 127]; maddubs pairs <= 2*63*127.
 */
#include "elpis/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define T512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"
#define AVX512 __attribute__((target(T512)))
#define AVX512_INLINE static inline __attribute__((always_inline, target(T512)))

/* ==== Helpers =============================================================== */

AVX512_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

AVX512_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX512_INLINE float hsum16(__m512 v) {
    return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

AVX512_INLINE __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
AVX512_INLINE __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

/* Two 32-byte halves -> one register (lo in lanes 0..31). */
AVX512_INLINE __m512i join256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

#define DISPATCH_NC(CALL)                                                          \
    do {                                                                           \
        for (; nrc >= 4; nrc -= 4, s += 4 * bs, x += 4 * bx) CALL(4);             \
        switch (nrc) {                                                             \
        case 3: CALL(3); break;                                                    \
        case 2: CALL(2); break;                                                    \
        case 1: CALL(1); break;                                                    \
        default: break;                                                            \
        }                                                                          \
    } while (0)

/* ==== Q8_0 and Q4_0 against Q8_0 ============================================ */

/* Weight blocks i and i+1 as 64 signed bytes with their scales. When two == 0
 * only block i is read; the upper half is then never paired with non-zero
 * activations (x8_pair zeroes them) and gets scale 0. */
AVX512_INLINE __m512i x8_wpair(const void *w, int64_t i, const int two, const int q4, float *d0, float *d1) {
    if (q4) {
        const elpis_block_q4_0 *b = (const elpis_block_q4_0 *)w + i;
        const __m128i A = _mm_loadu_si128((const __m128i *)b[0].qs);
        const __m128i B = two ? _mm_loadu_si128((const __m128i *)b[1].qs) : _mm_setzero_si128();
        const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(A), B, 1);
        /* 128-bit lanes [A, B, A>>4, B>>4] -> [A, A>>4, B, B>>4]: each block's
         * low nibbles (elements 0..15) then its high nibbles (16..31). */
        __m512i z = join256(t, _mm256_srli_epi16(t, 4));
        z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
        *d0 = h2f(b[0].d);
        *d1 = two ? h2f(b[1].d) : 0.0f;
        return _mm512_sub_epi8(_mm512_and_si512(z, _mm512_set1_epi8(0x0F)), _mm512_set1_epi8(8));
    }
    const elpis_block_q8_0 *b = (const elpis_block_q8_0 *)w + i;
    *d0 = h2f(b[0].d);
    *d1 = two ? h2f(b[1].d) : 0.0f;
    return join256(load256(b[0].qs), two ? load256(b[1].qs) : _mm256_setzero_si256());
}

/* acc += per-block scale * lanes of sum(w*x), for one column's block pair. */
AVX512_INLINE __m512 x8_pair(__m512i aw, __mmask64 neg, float d0, float d1, const elpis_block_q8_0 *y,
                             const int two, __m512 acc) {
    const __m512i yv = join256(load256(y[0].qs), two ? load256(y[1].qs) : _mm256_setzero_si256());
    const __m512i sy = _mm512_mask_sub_epi8(yv, neg, _mm512_setzero_si512(), yv);
    const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sy);
    const float s0 = d0 * h2f(y[0].d), s1 = two ? d1 * h2f(y[1].d) : 0.0f;
    const __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(s0), _mm256_set1_ps(s1), 1);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc);
}

/* All nc columns for the block pair at i, into acc[]. */
AVX512_INLINE void x8_step(const void *w, int64_t i, const int two, const int q4, const char *x, size_t bx,
                           const int nc, __m512 *acc) {
    float d0, d1;
    const __m512i qw = x8_wpair(w, i, two, q4, &d0, &d1);
    const __m512i aw = _mm512_abs_epi8(qw);
    const __mmask64 neg = _mm512_movepi8_mask(qw);
    for (int c = 0; c < nc; c++) {
        const elpis_block_q8_0 *y = (const elpis_block_q8_0 *)(x + (size_t)c * bx) + i;
        acc[c] = x8_pair(aw, neg, d0, d1, y, two, acc[c]);
    }
}

AVX512_INLINE void x8_cols(int64_t nb, float *s, size_t bs, const void *w, const char *x, size_t bx,
                           const int nc, const int q4) {
    __m512 acc0[4], acc1[4];
    for (int c = 0; c < nc; c++) acc0[c] = acc1[c] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 3 < nb; i += 4) {                 /* two independent FMA chains */
        x8_step(w, i, 1, q4, x, bx, nc, acc0);
        x8_step(w, i + 2, 1, q4, x, bx, nc, acc1);
    }
    if (i + 1 < nb) { x8_step(w, i, 1, q4, x, bx, nc, acc0); i += 2; }
    if (i < nb) x8_step(w, i, 0, q4, x, bx, nc, acc1);
    for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum16(_mm512_add_ps(acc0[c], acc1[c]));
}

static AVX512 void vec_dot_q8_0(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) x8_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, 0)
    DISPATCH_NC(CALL);
#undef CALL
}

static AVX512 void vec_dot_q4_0(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) x8_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, 1)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Q4_K against Q8_K ====================================================== */

AVX512_INLINE __m256i k4_mins16(const uint8_t mn[8]) {
    const __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m, m)),
                                   _mm_unpackhi_epi16(m, m), 1);
}

AVX512_INLINE __m512 zext_ps(__m256 v) { return _mm512_insertf32x8(_mm512_setzero_ps(), v, 0); }

AVX512_INLINE void q4_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q4_K *w, const char *x,
                             size_t bx, const int nc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* vpermw index: s16 lanes 0..15 pick scale 0, lanes 16..31 scale 1 (+2ch). */
    const __m512i half = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1);
    __m512 acc[4];
    for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        uint8_t sc[8], mn[8];
        elpis_k4_scales(w[i].scales, sc, mn);
        const __m512i sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
        __m512i sumi[4];
        for (int c = 0; c < nc; c++) sumi[c] = _mm512_setzero_si512();
        for (int ch = 0; ch < 4; ch++) {
            const __m256i q = load256(w[i].qs + 32 * ch);
            /* [low nibbles | high nibbles] = sub-blocks 2ch, 2ch+1 = activations 64ch..64ch+63 */
            const __m512i z = _mm512_and_si512(join256(q, _mm256_srli_epi16(q, 4)), m4);
            const __m512i scv = _mm512_permutexvar_epi16(_mm512_add_epi16(half, _mm512_set1_epi16((short)(2 * ch))), sc16);
            for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 64 * ch;
                sumi[c] = _mm512_dpwssd_epi32(sumi[c], _mm512_maddubs_epi16(z, load512(y)), scv);
            }
        }
        const __m256i mins = k4_mins16(mn);
        const float d = h2f(w[i].d), dmin = h2f(w[i].dmin);
        for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            const __m256i pm = _mm256_madd_epi16(load256(y->bsums), mins);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[c]), _mm512_set1_ps(d * y->d), acc[c]);
            acc[c] = _mm512_fnmadd_ps(zext_ps(_mm256_cvtepi32_ps(pm)), _mm512_set1_ps(dmin * y->d), acc[c]);
        }
    }
    for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum16(acc[c]);
}

static AVX512 void vec_dot_q4_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q4_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Q6_K against Q8_K ====================================================== */

/* vpermw index for 64 weights: s16 lane i covers weights 2i, 2i+1 -> scale i/8. */
static const int16_t g_q6_idx[32] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                      2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3 };

AVX512_INLINE void q6_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q6_K *w, const char *x,
                             size_t bx, const int nc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i idx = load512(g_q6_idx);
    __m512 acc[4];
    for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
        const __m512i sc512 = _mm512_zextsi256_si512(sc16);
        __m512i sumi[4];
        for (int c = 0; c < nc; c++) sumi[c] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i ql = load512(w[i].ql + 64 * h);
            const __m256i qh = load256(w[i].qh + 32 * h);
            /* [qh, qh>>2]: bits 0-1 / 4-5 of each byte hold the high bits of
             * weights l, l+32 (q01) and l+64, l+96 (q23). */
            const __m512i qhv = join256(qh, _mm256_srli_epi16(qh, 2));
            const __m512i q01 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                                _mm512_and_si512(_mm512_slli_epi16(qhv, 4), m30));
            const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                _mm512_and_si512(qhv, m30));
            const __m512i s01 = _mm512_permutexvar_epi16(_mm512_add_epi16(idx, _mm512_set1_epi16((short)(8 * h))), sc512);
            const __m512i s23 = _mm512_permutexvar_epi16(_mm512_add_epi16(idx, _mm512_set1_epi16((short)(8 * h + 4))), sc512);
            for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 128 * h;
                sumi[c] = _mm512_dpwssd_epi32(sumi[c], _mm512_maddubs_epi16(q01, load512(y)), s01);
                sumi[c] = _mm512_dpwssd_epi32(sumi[c], _mm512_maddubs_epi16(q23, load512(y + 64)), s23);
            }
        }
        const float d = h2f(w[i].d);
        for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            /* the -32 offset, exact in integers: 32 * sum_k scale[k] * bsums[k] */
            const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(load256(y->bsums), sc16), 5);
            const __m512i tot = _mm512_sub_epi32(sumi[c], _mm512_zextsi256_si512(off));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(d * y->d), acc[c]);
        }
    }
    for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum16(acc[c]);
}

static AVX512 void vec_dot_q6_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q6_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== F16 / BF16 / F32 ========================================================== */
/* Per column: four 16-wide accumulators, a 16-wide step, a scalar tail. */

AVX512_INLINE __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(load256(p)); }
AVX512_INLINE __m512 ld_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load256(p)), 16));
}
AVX512_INLINE __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }

#define FLOAT_DOT1(name, T, LOAD, SCALAR)                                                \
    static AVX512 float dot1_##name(int64_t n, const T *w, const T *x) {                 \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                      \
        int64_t i = 0;                                                                   \
        for (; i + 64 <= n; i += 64) {                                                   \
            a0 = _mm512_fmadd_ps(LOAD(w + i), LOAD(x + i), a0);                          \
            a1 = _mm512_fmadd_ps(LOAD(w + i + 16), LOAD(x + i + 16), a1);                \
            a2 = _mm512_fmadd_ps(LOAD(w + i + 32), LOAD(x + i + 32), a2);                \
            a3 = _mm512_fmadd_ps(LOAD(w + i + 48), LOAD(x + i + 48), a3);                \
        }                                                                                \
        for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(LOAD(w + i), LOAD(x + i), a0); \
        float sum = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3))); \
        for (; i < n; i++) sum += SCALAR(w[i]) * SCALAR(x[i]);                           \
        return sum;                                                                      \
    }                                                                                    \
    static AVX512 void vec_dot_##name(int64_t n, float *s, size_t bs, const void *w,     \
                                      const void *x, size_t bx, int nrc) {               \
        for (int c = 0; c < nrc; c++)                                                    \
            s[(size_t)c * bs] = dot1_##name(n, w, (const T *)((const char *)x + (size_t)c * bx)); \
    }

#define ID(v) (v)
FLOAT_DOT1(f16, uint16_t, ld_f16, h2f)
FLOAT_DOT1(bf16, uint16_t, ld_bf16, elpis_bf16_to_f32)
FLOAT_DOT1(f32, float, ld_f32, ID)
#undef ID

/* ==== Table ======================================================================= */

bool elpis_quant__fill_avx512(elpis_kernels *k) {
    k->name = "avx512";
    k->max_nrc = 4;
    k->vec_dot[ELPIS_Q8_0] = vec_dot_q8_0;
    k->vec_dot[ELPIS_Q4_0] = vec_dot_q4_0;
    k->vec_dot[ELPIS_Q4_K] = vec_dot_q4_K;
    k->vec_dot[ELPIS_Q6_K] = vec_dot_q6_K;
    k->vec_dot[ELPIS_F16]  = vec_dot_f16;
    k->vec_dot[ELPIS_BF16] = vec_dot_bf16;
    k->vec_dot[ELPIS_F32]  = vec_dot_f32;
    return true;
}

#else /* not x86-64 */

bool elpis_quant__fill_avx512(elpis_kernels *k) {
    (void)k;
    return false;
}

#endif
