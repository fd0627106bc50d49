/* quant_avx512.c -- AVX-512 (F, BW, VL, DQ, VNNI) dot kernels.
 *
 * DESIGN
 * - Same contract and structure as quant_avx2.c (read that first); this
 *   table starts as a copy of the avx2 one, so the activation quantizers and
 *   the F16/BF16/F32 dots (faster as AVX2 here) run the AVX2 code.
 * - What AVX-512 adds: VNNI vpdpbusd (u8 x s8 -> s32 in one instruction,
 *   replacing maddubs + madd), vpdpwssd (s16 x scale, accumulate: replaces
 *   madd + add in the K-quants) and mask registers (a Q5 fifth bit becomes a
 *   masked add straight from qh; no byte-spreading shuffles).
 * - Width: on the target machine (AMD Zen 4, where 512-bit integer ops run
 *   as two 256-bit halves) 256-bit VNNI measured faster for the 32-weight
 *   blocks (pairing blocks in a zmm needs extra shuffles), and an earlier
 *   512-bit Q4_K was slower too, so Q4_K/Q5_K are 256-bit. Q6_K keeps
 *   512-bit registers: 64 weights map onto activation order without extra
 *   shuffles, and it measured ~13% faster than the AVX2 kernel.
 *
 * INVARIANTS
 * - Batch invariance: per column, the same IEEE operations in the same order
 *   for every nc (see quant_avx2.c).
 * - No overflow: activations are in [-127, 127]; maddubs pairs <= 2*63*127.
 */
#include "elpis/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define T512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"
#define AVX512 __attribute__((target(T512)))
#define AVX512_INLINE static inline __attribute__((always_inline, target(T512)))
/* The column / sub-block loops have constant trip counts after inlining;
 * unrolling them keeps the accumulators in registers (GCC -O2 would not). */
#define UNROLL _Pragma("GCC unroll 8")

/* ==== Helpers =============================================================== */

AVX512_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

AVX512_INLINE float hsum4(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX512_INLINE float hsum8(__m256 v) {
    return hsum4(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
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

/* ==== 32-weight blocks: Q8_0, Q4_0, Q5_0 (x Q8_0), Q4_1, Q5_1 (x Q8_1) ====== */
/* Same structure as quant_avx2.c, with vpdpbusd for the u8 x s8 sums and the
 * Q5 fifth bits applied straight from qh as a byte mask. Blocks stay one per
 * ymm: on this generation of cores 512-bit integer ops run as two 256-bit
 * halves, and pairing blocks in a zmm cost more shuffles than it saved
 * (measured). */

enum { K_Q8_0, K_Q4_0, K_Q5_0, K_Q4_1, K_Q5_1, K_Q4_K };
#define HAS_M(kind) ((kind) == K_Q4_1 || (kind) == K_Q5_1)

AVX512_INLINE __m256i nibbles32(const uint8_t *qs) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i b = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* Nibbles plus 16 where qh bit k is set: bit k is element k's fifth bit. */
AVX512_INLINE __m256i q5_bytes(const uint8_t *qs, const uint8_t qh4[4]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i n = nibbles32(qs);
    return _mm256_mask_add_epi8(n, (__mmask32)qh, n, _mm256_set1_epi8(16));
}

/* Weight block i as 32 bytes (signed for Q8_0, else unsigned). */
AVX512_INLINE __m256i xw_bytes(const void *w, int64_t i, const int kind) {
    switch (kind) {
    case K_Q4_0: return nibbles32(((const elpis_block_q4_0 *)w)[i].qs);
    case K_Q4_1: return nibbles32(((const elpis_block_q4_1 *)w)[i].qs);
    case K_Q5_0: return q5_bytes(((const elpis_block_q5_0 *)w)[i].qs, ((const elpis_block_q5_0 *)w)[i].qh);
    case K_Q5_1: return q5_bytes(((const elpis_block_q5_1 *)w)[i].qs, ((const elpis_block_q5_1 *)w)[i].qh);
    default: return load256(((const elpis_block_q8_0 *)w)[i].qs);
    }
}

AVX512_INLINE uint16_t xw_d(const void *w, int64_t i, const int kind) {
    switch (kind) {
    case K_Q4_0: return ((const elpis_block_q4_0 *)w)[i].d;
    case K_Q5_0: return ((const elpis_block_q5_0 *)w)[i].d;
    case K_Q4_1: return ((const elpis_block_q4_1 *)w)[i].d;
    case K_Q5_1: return ((const elpis_block_q5_1 *)w)[i].d;
    default: return ((const elpis_block_q8_0 *)w)[i].d;
    }
}

AVX512_INLINE uint16_t xw_m(const void *w, int64_t i, const int kind) {
    return kind == K_Q4_1 ? ((const elpis_block_q4_1 *)w)[i].m : ((const elpis_block_q5_1 *)w)[i].m;
}

AVX512_INLINE const int8_t *xy_qs(const char *y, int64_t i, const int kind) {
    return HAS_M(kind) ? ((const elpis_block_q8_1 *)y)[i].qs : ((const elpis_block_q8_0 *)y)[i].qs;
}
AVX512_INLINE uint16_t xy_d(const char *y, int64_t i, const int kind) {
    return HAS_M(kind) ? ((const elpis_block_q8_1 *)y)[i].d : ((const elpis_block_q8_0 *)y)[i].d;
}
AVX512_INLINE uint16_t xy_s(const char *y, int64_t i) { return ((const elpis_block_q8_1 *)y)[i].s; }

AVX512_INLINE __m128 f16x4(uint16_t a, uint16_t b, uint16_t c, uint16_t d) {
    const uint64_t v = (uint64_t)a | (uint64_t)b << 16 | (uint64_t)c << 32 | (uint64_t)d << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)v));
}

/* s32 lanes whose sum is sum(w_int * x) for one block (see quant_avx2.c). */
AVX512_INLINE __m256i x_isum(__m256i qw, __m256i aw, const int8_t *yq, const int kind) {
    const __m256i y = load256(yq), z = _mm256_setzero_si256();
    if (kind == K_Q8_0) return _mm256_dpbusd_epi32(z, aw, _mm256_sign_epi8(y, qw));
    const __m256i p = _mm256_dpbusd_epi32(z, qw, y);
    if (kind == K_Q4_0) return _mm256_sub_epi32(p, _mm256_dpbusd_epi32(z, _mm256_set1_epi8(8), y));
    if (kind == K_Q5_0) return _mm256_sub_epi32(p, _mm256_dpbusd_epi32(z, _mm256_set1_epi8(16), y));
    return p;
}

/* Four blocks of one column: hadd-folded, one convert + one FMA (see quant_avx2.c). */
AVX512_INLINE void x_group(const __m256i qw[4], const __m256i aw[4], __m128 dw4, __m128 m4, const char *y,
                           int64_t i, const int kind, __m256 *acc, __m128 *macc) {
    const __m256i h01 = _mm256_hadd_epi32(x_isum(qw[0], aw[0], xy_qs(y, i, kind), kind),
                                          x_isum(qw[1], aw[1], xy_qs(y, i + 1, kind), kind));
    const __m256i h23 = _mm256_hadd_epi32(x_isum(qw[2], aw[2], xy_qs(y, i + 2, kind), kind),
                                          x_isum(qw[3], aw[3], xy_qs(y, i + 3, kind), kind));
    const __m128 dy4 = f16x4(xy_d(y, i, kind), xy_d(y, i + 1, kind), xy_d(y, i + 2, kind), xy_d(y, i + 3, kind));
    const __m128 s4 = _mm_mul_ps(dw4, dy4);
    const __m256 s8 = _mm256_insertf128_ps(_mm256_castps128_ps256(s4), s4, 1);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_hadd_epi32(h01, h23)), s8, *acc);
    if (HAS_M(kind))
        *macc = _mm_fmadd_ps(m4, f16x4(xy_s(y, i), xy_s(y, i + 1), xy_s(y, i + 2), xy_s(y, i + 3)), *macc);
}

AVX512_INLINE void x_cols(int64_t nb, float *s, size_t bs, const void *w, const char *x, size_t bx,
                          const int nc, const int kind) {
    __m256 acc[4];
    __m128 macc[4];
    UNROLL for (int c = 0; c < nc; c++) {
        acc[c] = _mm256_setzero_ps();
        macc[c] = _mm_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 3 < nb; i += 4) {
        __m256i qw[4], aw[4];
        UNROLL for (int k = 0; k < 4; k++) {
            qw[k] = xw_bytes(w, i + k, kind);
            aw[k] = kind == K_Q8_0 ? _mm256_abs_epi8(qw[k]) : qw[k];
        }
        const __m128 dw4 = f16x4(xw_d(w, i, kind), xw_d(w, i + 1, kind), xw_d(w, i + 2, kind), xw_d(w, i + 3, kind));
        const __m128 m4 = HAS_M(kind) ? f16x4(xw_m(w, i, kind), xw_m(w, i + 1, kind), xw_m(w, i + 2, kind),
                                              xw_m(w, i + 3, kind))
                                      : _mm_setzero_ps();
        UNROLL for (int c = 0; c < nc; c++)
            x_group(qw, aw, dw4, m4, x + (size_t)c * bx, i, kind, &acc[c], &macc[c]);
    }
    for (; i < nb; i++) {
        const __m256i qw = xw_bytes(w, i, kind), aw = kind == K_Q8_0 ? _mm256_abs_epi8(qw) : qw;
        const float dw = h2f(xw_d(w, i, kind));
        UNROLL for (int c = 0; c < nc; c++) {
            const char *y = x + (size_t)c * bx;
            const __m256 p = _mm256_cvtepi32_ps(x_isum(qw, aw, xy_qs(y, i, kind), kind));
            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * h2f(xy_d(y, i, kind))), acc[c]);
            if (HAS_M(kind))
                macc[c] = _mm_fmadd_ps(_mm_set_ss(h2f(xw_m(w, i, kind))), _mm_set_ss(h2f(xy_s(y, i))), macc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) {
        float r = hsum8(acc[c]);
        if (HAS_M(kind)) r += hsum4(macc[c]);
        s[(size_t)c * bs] = r;
    }
}

#define X_VEC_DOT(name)                                                                  \
    static AVX512 void vec_dot_##name(int64_t n, float *s, size_t bs, const void *w,     \
                                      const void *vx, size_t bx, int nrc) {              \
        const char *x = vx;                                                              \
        DISPATCH_NC(CALL_##name);                                                        \
    }
#define CALL_q8_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q8_0)
#define CALL_q4_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q4_0)
#define CALL_q5_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q5_0)
#define CALL_q4_1(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q4_1)
#define CALL_q5_1(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q5_1)
X_VEC_DOT(q8_0)
X_VEC_DOT(q4_0)
X_VEC_DOT(q5_0)
X_VEC_DOT(q4_1)
X_VEC_DOT(q5_1)

/* ==== Q4_K against Q8_K ====================================================== */

AVX512_INLINE __m256i k4_mins16(uint64_t mn) {
    const __m128i m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m, m)),
                                   _mm_unpackhi_epi16(m, m), 1);
}

#define K4_SCALE(scales, j) _mm256_shuffle_epi8((scales), _mm256_set1_epi16((short)(0x0100 + 0x0202 * (j))))

/* As the AVX2 kernel, with vpdpwssd doing "times the sub-block scale, add"
 * in one instruction. */
AVX512_INLINE void q4_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q4_K *w, const char *x,
                             size_t bx, const int nc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        uint64_t sc, mn;
        elpis_k4_scales_packed(w[i].scales, &sc, &mn);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        __m256i sumi[4];
        UNROLL for (int c = 0; c < nc; c++) sumi[c] = _mm256_setzero_si256();
        UNROLL for (int ch = 0; ch < 4; ch++) {
            const __m256i q = load256(w[i].qs + 32 * ch);
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i s0 = K4_SCALE(scales, 2 * ch), s1 = K4_SCALE(scales, 2 * ch + 1);
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 64 * ch;
                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(lo, load256(y)), s0);
                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(hi, load256(y + 32)), s1);
            }
        }
        const __m256i mins = k4_mins16(mn);
        const float d = h2f(w[i].d), dmin = h2f(w[i].dmin);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            const __m256i pm = _mm256_madd_epi16(load256(y->bsums), mins);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[c]), _mm256_set1_ps(d * y->d), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * y->d), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum8(acc[c]);
}

static AVX512 void vec_dot_q4_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q4_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Q5_K against Q8_K ====================================================== */
/* Q4_K plus the fifth bits: bit 2ch / 2ch+1 of qh[l] tested into a byte mask
 * and added as 16 under that mask. */

AVX512_INLINE void q5_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q5_K *w, const char *x,
                             size_t bx, const int nc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), sixteen = _mm256_set1_epi8(16);
    __m256 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        uint64_t sc, mn;
        elpis_k4_scales_packed(w[i].scales, &sc, &mn);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        const __m256i hb = load256(w[i].qh);
        __m256i sumi[4];
        UNROLL for (int c = 0; c < nc; c++) sumi[c] = _mm256_setzero_si256();
        UNROLL for (int ch = 0; ch < 4; ch++) {
            const __m256i q = load256(w[i].qs + 32 * ch);
            const __m256i l4 = _mm256_and_si256(q, m4), h4 = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i lo = _mm256_mask_add_epi8(l4, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(1 << (2 * ch)))), l4, sixteen);
            const __m256i hi = _mm256_mask_add_epi8(h4, _mm256_test_epi8_mask(hb, _mm256_set1_epi8((char)(2 << (2 * ch)))), h4, sixteen);
            const __m256i s0 = K4_SCALE(scales, 2 * ch), s1 = K4_SCALE(scales, 2 * ch + 1);
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 64 * ch;
                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(lo, load256(y)), s0);
                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(hi, load256(y + 32)), s1);
            }
        }
        const __m256i mins = k4_mins16(mn);
        const float d = h2f(w[i].d), dmin = h2f(w[i].dmin);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            const __m256i pm = _mm256_madd_epi16(load256(y->bsums), mins);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[c]), _mm256_set1_ps(d * y->d), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * y->d), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum8(acc[c]);
}

static AVX512 void vec_dot_q5_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q5_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
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
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
        const __m512i sc512 = _mm512_zextsi256_si512(sc16);
        __m512i sumi[4];
        UNROLL for (int c = 0; c < nc; c++) sumi[c] = _mm512_setzero_si512();
        UNROLL for (int h = 0; h < 2; h++) {
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
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 128 * h;
                sumi[c] = _mm512_dpwssd_epi32(sumi[c], _mm512_maddubs_epi16(q01, load512(y)), s01);
                sumi[c] = _mm512_dpwssd_epi32(sumi[c], _mm512_maddubs_epi16(q23, load512(y + 64)), s23);
            }
        }
        const float d = h2f(w[i].d);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            /* the -32 offset, exact in integers: 32 * sum_k scale[k] * bsums[k] */
            const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(load256(y->bsums), sc16), 5);
            const __m512i tot = _mm512_sub_epi32(sumi[c], _mm512_zextsi256_si512(off));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(d * y->d), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum16(acc[c]);
}

static AVX512 void vec_dot_q6_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q6_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Packed 8-row groups: Q8_0x8, Q4_0x8 against Q8_S ======================== */
/* pack.c has the layout and the reference these match bit for bit. Per
 * block: the weight registers (w[k] = elements 4k..4k+3 of each row) are
 * loaded once and used for every column of the tile; per column, 8 vpdpbusd
 * against 4 broadcast activation bytes give each row's block sum in its own
 * lane. The sum starts at the activation's offset term (exact integers, any
 * order). Two chains per column (even / odd k) keep enough vpdpbusd in
 * flight at 4 columns.
 * Two adjacent groups (16 rows) go through zmm registers: vpdpbusd on zmm
 * measured 1.33x the throughput of ymm here (bench_kernels), even counting
 * the insert that joins the two groups' 32-byte halves. Every lane does the
 * same operations whatever it is paired with, so results do not depend on
 * the pairing. */

AVX512_INLINE int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Chunk m of a packed block -> the weights of k = 2m (low nibbles), 2m+1 (high). */
AVX512_INLINE void q4_split(__m256i v, __m256i *lo, __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    *lo = _mm256_and_si256(v, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
}

AVX512_INLINE void p8_weights(const void *g, int64_t b, const int kind, __m256i w[8]) {
    if (kind == K_Q8_0) {
        const elpis_block_q8_0x8 *p = (const elpis_block_q8_0x8 *)g + b;
        UNROLL for (int k = 0; k < 8; k++) w[k] = load256(p->qs + 32 * k);
        return;
    }
    const elpis_block_q4_0x8 *p = (const elpis_block_q4_0x8 *)g + b;
    UNROLL for (int m = 0; m < 4; m++) q4_split(load256(p->qs + 32 * m), &w[2 * m], &w[2 * m + 1]);
}

AVX512_INLINE const uint16_t *p8_d(const void *g, int64_t b, const int kind) {
    return kind == K_Q8_0 ? ((const elpis_block_q8_0x8 *)g)[b].d : ((const elpis_block_q4_0x8 *)g)[b].d;
}
AVX512_INLINE __m256 p8_scales(const void *g, int64_t b, const int kind) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p8_d(g, b, kind)));
}

/* The starting value of a column's block sum: -offset * sum(qs). */
AVX512_INLINE int32_t p8_offset(const elpis_block_q8_s *y, const int kind) {
    return kind == K_Q8_0 ? y->ms : y->ms / 16;   /* ms = -128 * sum: exact */
}

/* The 16 row results of nc columns; a lone group (`half`) keeps 8. */
AVX512_INLINE void p16_store(float *s, size_t bs, const __m512 acc[4], const int nc, bool half) {
    UNROLL for (int c = 0; c < nc; c++) {
        if (half) _mm256_storeu_ps(s + (size_t)c * bs, _mm512_castps512_ps256(acc[c]));
        else _mm512_storeu_ps(s + (size_t)c * bs, acc[c]);
    }
}

/* Two adjacent groups (16 rows, zmm) x nc columns; g1 = g0 + one group.
 * A lone last group passes g1 = g0 and `half`: the upper 8 lanes repeat
 * the lower ones and are not stored (one spare group's work per call, and
 * no second copy of this loop for ymm). */
AVX512_INLINE void p16_cols(int64_t nb, float *s, size_t bs, const void *g0, const void *g1, bool half,
                            const char *x, size_t bx, const int nc, const int kind) {
    __m512 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i w0[8], w1[8];
        __m512i w[8];
        p8_weights(g0, b, kind, w0);
        p8_weights(g1, b, kind, w1);
        UNROLL for (int k = 0; k < 8; k++) w[k] = join256(w0[k], w1[k]);
        const __m512 dw = _mm512_insertf32x8(_mm512_castps256_ps512(p8_scales(g0, b, kind)), p8_scales(g1, b, kind), 1);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_s *y = (const elpis_block_q8_s *)(x + (size_t)c * bx) + b;
            __m512i e = _mm512_set1_epi32(p8_offset(y, kind)), o = _mm512_setzero_si512();
            UNROLL for (int k = 0; k < 8; k += 2) {
                e = _mm512_dpbusd_epi32(e, w[k], _mm512_set1_epi32(load4(y->qs + 4 * k)));
                o = _mm512_dpbusd_epi32(o, w[k + 1], _mm512_set1_epi32(load4(y->qs + 4 * k + 4)));
            }
            const __m512 isum = _mm512_cvtepi32_ps(_mm512_add_epi32(e, o));
            acc[c] = _mm512_fmadd_ps(isum, _mm512_mul_ps(dw, _mm512_set1_ps(y->d)), acc[c]);
        }
    }
    p16_store(s, bs, acc, nc, half);
}

/* Q4_Kx8 x Q8_KS, two adjacent groups (or one, `half`) x nc columns. Per
 * sub-block j the Q4_0x8 steps (offset 0) give each row's exact sub-block
 * sum; vpmulld by the row's sub-block scale and an add make the integer
 * super-block sum. The mins: vpdpwssd of each row's (mn[2i], mn[2i+1])
 * int16 pair against the activation's (bsub[2i], bsub[2i+1]). Then, as the
 * reference: acc += iacc * (d*dx); acc -= imin * (dmin*dx), both fused. */
AVX512_INLINE __m512 k4p_join_ph(const uint16_t *a, const uint16_t *b) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)a))),
                              _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b)), 1);
}

AVX512_INLINE void k4p_cols(int64_t nb, float *s, size_t bs, const elpis_block_q4_Kx8 *g0,
                            const elpis_block_q4_Kx8 *g1, bool half, const char *x, size_t bx, const int nc) {
    __m512 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const elpis_block_q4_Kx8 *p0 = g0 + b, *p1 = g1 + b;
        __m512i iacc[4];
        UNROLL for (int c = 0; c < nc; c++) iacc[c] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m256i w0[8], w1[8];
            __m512i w[8];
            UNROLL for (int m = 0; m < 4; m++) {
                q4_split(load256(p0->qs[j] + 32 * m), &w0[2 * m], &w0[2 * m + 1]);
                q4_split(load256(p1->qs[j] + 32 * m), &w1[2 * m], &w1[2 * m + 1]);
            }
            UNROLL for (int k = 0; k < 8; k++) w[k] = join256(w0[k], w1[k]);
            const __m512i sc = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)p0->sc[j]),
                                                                        _mm_loadl_epi64((const __m128i *)p1->sc[j])));
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *yq = ((const elpis_block_q8_ks *)(x + (size_t)c * bx) + b)->qs + 32 * j;
                __m512i e = _mm512_setzero_si512(), o = _mm512_setzero_si512();
                UNROLL for (int k = 0; k < 8; k += 2) {
                    e = _mm512_dpbusd_epi32(e, w[k], _mm512_set1_epi32(load4(yq + 4 * k)));
                    o = _mm512_dpbusd_epi32(o, w[k + 1], _mm512_set1_epi32(load4(yq + 4 * k + 4)));
                }
                iacc[c] = _mm512_add_epi32(iacc[c], _mm512_mullo_epi32(_mm512_add_epi32(e, o), sc));
            }
        }
        __m512i mn[4];
        UNROLL for (int i = 0; i < 4; i++)
            mn[i] = join256(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p0->mn[i])),
                            _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p1->mn[i])));
        const __m512 dw = k4p_join_ph(p0->d, p1->d), dm = k4p_join_ph(p0->dmin, p1->dmin);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_ks *y = (const elpis_block_q8_ks *)(x + (size_t)c * bx) + b;
            __m512i imin = _mm512_setzero_si512();
            UNROLL for (int i = 0; i < 4; i++) {
                int32_t pair;
                memcpy(&pair, &y->bsub[2 * i], 4);
                imin = _mm512_dpwssd_epi32(imin, mn[i], _mm512_set1_epi32(pair));
            }
            const __m512 yd = _mm512_set1_ps(y->d);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[c]), _mm512_mul_ps(dw, yd), acc[c]);
            acc[c] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin), _mm512_mul_ps(dm, yd), acc[c]);
        }
    }
    p16_store(s, bs, acc, nc, half);
}

/* All columns of one pair (or lone group), in tiles of 4. */
AVX512_INLINE void p16_tiles(int64_t nb, float *s, size_t bs, const char *g0, const char *g1, bool half,
                             const char *x, size_t bx, int nrc, const int kind) {
#define CALL(nc)                                                                                          \
    do {                                                                                                  \
        if (kind == K_Q4_K)                                                                               \
            k4p_cols(nb, s, bs, (const elpis_block_q4_Kx8 *)g0, (const elpis_block_q4_Kx8 *)g1, half, x, bx, nc); \
        else                                                                                              \
            p16_cols(nb, s, bs, g0, g1, half, x, bx, nc, kind);                                           \
    } while (0)
    DISPATCH_NC(CALL);
#undef CALL
}

AVX512_INLINE void p8_gemm(int64_t n, float *s, size_t bs, const char *groups, int64_t ng, const char *x,
                           size_t bx, int nrc, const int kind) {
    const int64_t nb = kind == K_Q4_K ? n / ELPIS_QK_K : n / ELPIS_QK;
    const size_t gbytes = (size_t)nb * (kind == K_Q8_0   ? sizeof(elpis_block_q8_0x8)
                                        : kind == K_Q4_0 ? sizeof(elpis_block_q4_0x8)
                                                         : sizeof(elpis_block_q4_Kx8));
    /* One column (decode) is bound by memory: one group at a time reads the
     * weights as a single forward stream; pairs (two streams 8 rows apart)
     * measured 0.7-0.9x from DRAM (bench_kernels 32000 1 2048). */
    const int step = nrc == 1 ? 1 : 2;
    for (int64_t i = 0; i < ng; i += step) {
        const char *g = groups + (size_t)i * gbytes;
        const bool half = step == 1 || i + 1 == ng;
        p16_tiles(nb, s + 8 * i, bs, g, half ? g : g + gbytes, half, x, bx, nrc, kind);
    }
}

static AVX512 void gemm8_q8_0(int64_t n, float *s, size_t bs, const void *g, int64_t ng, const void *x, size_t bx, int nrc) {
    p8_gemm(n, s, bs, g, ng, x, bx, nrc, K_Q8_0);
}
static AVX512 void gemm8_q4_0(int64_t n, float *s, size_t bs, const void *g, int64_t ng, const void *x, size_t bx, int nrc) {
    p8_gemm(n, s, bs, g, ng, x, bx, nrc, K_Q4_0);
}
static AVX512 void gemm8_q4_K(int64_t n, float *s, size_t bs, const void *g, int64_t ng, const void *x, size_t bx, int nrc) {
    p8_gemm(n, s, bs, g, ng, x, bx, nrc, K_Q4_K);
}

/* ==== Table ======================================================================= */

bool elpis_quant__fill_avx512(elpis_kernels *k) {
    k->name = "avx512";
    k->max_nrc = 4;
    k->vec_dot[ELPIS_Q8_0] = vec_dot_q8_0;
    k->vec_dot[ELPIS_Q4_0] = vec_dot_q4_0;
    k->vec_dot[ELPIS_Q5_0] = vec_dot_q5_0;
    k->vec_dot[ELPIS_Q4_1] = vec_dot_q4_1;
    k->vec_dot[ELPIS_Q5_1] = vec_dot_q5_1;
    k->vec_dot[ELPIS_Q4_K] = vec_dot_q4_K;
    k->vec_dot[ELPIS_Q5_K] = vec_dot_q5_K;
    k->vec_dot[ELPIS_Q6_K] = vec_dot_q6_K;
    k->gemm8[ELPIS_Q8_0] = gemm8_q8_0;
    k->gemm8[ELPIS_Q4_0] = gemm8_q4_0;
    k->gemm8[ELPIS_Q4_K] = gemm8_q4_K;
    k->pack8 = true;
    return true;
}

#else /* not x86-64 */

bool elpis_quant__fill_avx512(elpis_kernels *k) {
    (void)k;
    return false;
}

#endif
