/* quant_avx2.c -- AVX2 + FMA + F16C dot kernels and activation quantizers.
 *
 * DESIGN
 * - Built for generic x86-64: every function carries a target attribute, so
 *   the file compiles without -march flags and is only CALLED after quant.c
 *   has checked CPUID. On other targets it compiles to a stub.
 * - Integer part as in ggml's AVX2 kernels (engine-facts §2): u8 x s8
 *   products through _mm256_maddubs_epi16 (pairs -> s16), then
 *   _mm256_madd_epi16 (-> s32). Q8_0 weights are signed: sign trick,
 *   |w| x sign(x, w). Q4/Q5 weights stay unsigned (0..15 / 0..31): Q4_0/Q5_0
 *   subtract their offset as 8*sum(x) / 16*sum(x) (one more maddubs, cheaper
 *   than the sign trick here), Q4_1/Q5_1 add m*s from the Q8_1 block.
 * - 32-weight blocks go four at a time: two hadd levels fold the four s32
 *   vectors into one, so a single convert + FMA applies four block scales
 *   (per-block float work was the bottleneck, not the integer dot).
 * - K-quants: weights unsigned (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63); the s16
 *   pair sums are multiplied by the sub-block scales with madd. The Q4_K/Q5_K
 *   min and the Q6_K "-32" come from the activation's bsums, once per
 *   super-block.
 * - Multi-column: a kernel body is an always_inline function of a constant
 *   column count nc (1..4). The weight block is decoded once and used for
 *   every column; each column owns its accumulators. UNROLL keeps them in
 *   registers.
 *
 * INVARIANTS
 * - Batch invariance: column c's result is produced by exactly the same
 *   sequence of IEEE operations whatever nc is (the per-column code does not
 *   depend on nc, and intrinsics are never re-associated without
 *   -ffast-math), so nrc>1 gives the nrc==1 bits. Integer steps are exact.
 * - Quantizers give the same bytes as the portable ones in quant.c (same
 *   division, same rounding rule), so portable and SIMD paths differ only in
 *   float summation order.
 * - No overflow: activations are in [-127, 127] (both activation quantizers
 *   guarantee it), so maddubs pairs are <= 2*63*127 < 2^15 and the Q4_0/Q5_0
 *   differences |2*15*127| + |2*16*127| fit too.
 */
#include "elpis/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
/* The column / sub-block loops have constant trip counts after inlining;
 * unrolling them keeps the accumulators in registers (GCC -O2 would not). */
#define UNROLL _Pragma("GCC unroll 8")

/* ==== Helpers =============================================================== */

AVX2_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

AVX2_INLINE float hsum4(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE float hsum8(__m256 v) {
    return hsum4(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

AVX2_INLINE __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 16 bytes of nibbles -> 32 bytes 0..15 in element order (low nibbles are
 * elements 0..15, high nibbles 16..31). */
AVX2_INLINE __m256i nibbles32(const uint8_t *qs) {
    /* one 16-byte broadcast load; the upper lane is shifted right by 4 */
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i b = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* Run CALL(nc) for columns in groups of 4, then the remainder. */
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
/* One body for the five types, specialised by the constant `kind`:
 * - Q8_0 weights are signed: sign trick.
 * - Q4/Q5 weights stay unsigned (0..15 / 0..31): the _0 types subtract their
 *   offset as 8*sum(x) / 16*sum(x) (another maddubs), the _1 types add
 *   m * s, s = d_x * sum(q_x) being stored in the Q8_1 block. */

enum { K_Q8_0, K_Q4_0, K_Q5_0, K_Q4_1, K_Q5_1 };

/* 32 bits -> 32 bytes, byte k = 0x10 if bit k is set (the Q5 fifth bit of
 * element k: bit j for j < 16, and (qh >> (j+12)) & 0x10 = bit j+16). */
AVX2_INLINE __m256i q5_high(const uint8_t qh4[4]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

/* Weight block i as 32 bytes (signed for Q8_0, else unsigned). */
AVX2_INLINE __m256i xw_bytes(const void *w, int64_t i, const int kind) {
    switch (kind) {
    case K_Q4_0: return nibbles32(((const elpis_block_q4_0 *)w)[i].qs);
    case K_Q4_1: return nibbles32(((const elpis_block_q4_1 *)w)[i].qs);
    case K_Q5_0: {
        const elpis_block_q5_0 *b = (const elpis_block_q5_0 *)w + i;
        return _mm256_or_si256(nibbles32(b->qs), q5_high(b->qh));
    }
    case K_Q5_1: {
        const elpis_block_q5_1 *b = (const elpis_block_q5_1 *)w + i;
        return _mm256_or_si256(nibbles32(b->qs), q5_high(b->qh));
    }
    default: return load256(((const elpis_block_q8_0 *)w)[i].qs);
    }
}

AVX2_INLINE uint16_t xw_d(const void *w, int64_t i, const int kind) {
    switch (kind) {
    case K_Q4_0: return ((const elpis_block_q4_0 *)w)[i].d;
    case K_Q5_0: return ((const elpis_block_q5_0 *)w)[i].d;
    case K_Q4_1: return ((const elpis_block_q4_1 *)w)[i].d;
    case K_Q5_1: return ((const elpis_block_q5_1 *)w)[i].d;
    default: return ((const elpis_block_q8_0 *)w)[i].d;
    }
}

AVX2_INLINE uint16_t xw_m(const void *w, int64_t i, const int kind) {
    return kind == K_Q4_1 ? ((const elpis_block_q4_1 *)w)[i].m : ((const elpis_block_q5_1 *)w)[i].m;
}

/* Activation block i of a row starting at y (Q8_0, or Q8_1 for the _1 kinds). */
#define HAS_M(kind) ((kind) == K_Q4_1 || (kind) == K_Q5_1)
AVX2_INLINE const int8_t *xy_qs(const char *y, int64_t i, const int kind) {
    return HAS_M(kind) ? ((const elpis_block_q8_1 *)y)[i].qs : ((const elpis_block_q8_0 *)y)[i].qs;
}
AVX2_INLINE uint16_t xy_d(const char *y, int64_t i, const int kind) {
    return HAS_M(kind) ? ((const elpis_block_q8_1 *)y)[i].d : ((const elpis_block_q8_0 *)y)[i].d;
}
AVX2_INLINE uint16_t xy_s(const char *y, int64_t i) { return ((const elpis_block_q8_1 *)y)[i].s; }

/* Four f16 values -> four floats (one vcvtph2ps instead of four). */
AVX2_INLINE __m128 f16x4(uint16_t a, uint16_t b, uint16_t c, uint16_t d) {
    const uint64_t v = (uint64_t)a | (uint64_t)b << 16 | (uint64_t)c << 32 | (uint64_t)d << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)v));
}

/* s32 lanes whose sum is sum(w_int * x) for one block, w_int being the
 * weight's integer value without its scale (q-8, q-16, q, or q8). */
AVX2_INLINE __m256i x_isum(__m256i qw, __m256i aw, const int8_t *yq, const int kind) {
    const __m256i y = load256(yq), ones = _mm256_set1_epi16(1);
    __m256i p;
    if (kind == K_Q8_0) p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, qw));
    else p = _mm256_maddubs_epi16(qw, y);
    if (kind == K_Q4_0) p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));
    if (kind == K_Q5_0) p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(_mm256_set1_epi8(16), y));
    return _mm256_madd_epi16(p, ones);
}

/* Four blocks of one column. The four s32 vectors are folded by two hadd
 * levels into [b0 b1 b2 b3 | b0 b1 b2 b3] (low / high lane halves), so one
 * convert and one FMA apply the four block scales; the _1 kinds add
 * m*s for the four blocks into a 4-lane accumulator. */
AVX2_INLINE void x_group(const __m256i qw[4], const __m256i aw[4], __m128 dw4, __m128 m4, const char *y,
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

/* nc columns. Groups of four blocks, then single blocks for the tail. */
AVX2_INLINE void x_cols(int64_t nb, float *s, size_t bs, const void *w, const char *x, size_t bx,
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
            aw[k] = kind == K_Q8_0 ? _mm256_sign_epi8(qw[k], qw[k]) : qw[k];
        }
        const __m128 dw4 = f16x4(xw_d(w, i, kind), xw_d(w, i + 1, kind), xw_d(w, i + 2, kind), xw_d(w, i + 3, kind));
        const __m128 m4 = HAS_M(kind) ? f16x4(xw_m(w, i, kind), xw_m(w, i + 1, kind), xw_m(w, i + 2, kind),
                                              xw_m(w, i + 3, kind))
                                      : _mm_setzero_ps();
        UNROLL for (int c = 0; c < nc; c++)
            x_group(qw, aw, dw4, m4, x + (size_t)c * bx, i, kind, &acc[c], &macc[c]);
    }
    for (; i < nb; i++) {
        const __m256i qw = xw_bytes(w, i, kind), aw = kind == K_Q8_0 ? _mm256_sign_epi8(qw, qw) : qw;
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

#define X_VEC_DOT(name, KIND)                                                            \
    static AVX2 void vec_dot_##name(int64_t n, float *s, size_t bs, const void *w,       \
                                    const void *vx, size_t bx, int nrc) {                \
        const char *x = vx;                                                              \
        DISPATCH_NC(CALL_##name);                                                        \
    }
#define CALL_q8_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q8_0)
#define CALL_q4_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q4_0)
#define CALL_q5_0(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q5_0)
#define CALL_q4_1(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q4_1)
#define CALL_q5_1(nc) x_cols(n / ELPIS_QK, s, bs, w, x, bx, nc, K_Q5_1)
X_VEC_DOT(q8_0, K_Q8_0)
X_VEC_DOT(q4_0, K_Q4_0)
X_VEC_DOT(q5_0, K_Q5_0)
X_VEC_DOT(q4_1, K_Q4_1)
X_VEC_DOT(q5_1, K_Q5_1)

/* ==== Q4_K against Q8_K ====================================================== */

/* mins m[0..7] (bytes of mn) as s16 lanes m0,m0,m1,m1,...,m7,m7: lane j
 * pairs with bsums[j], so one madd gives m[j] * (sum of sub-block j). */
AVX2_INLINE __m256i k4_mins16(uint64_t mn) {
    const __m128i m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m, m)),
                                   _mm_unpackhi_epi16(m, m), 1);
}

/* s16 lanes all equal to scale j, from the 8 scales in each 128-bit half. */
#define K4_SCALE(scales, j) _mm256_shuffle_epi8((scales), _mm256_set1_epi16((short)(0x0100 + 0x0202 * (j))))

AVX2_INLINE void q4_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q4_K *w, const char *x,
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
        UNROLL for (int ch = 0; ch < 4; ch++) {               /* 64 weights: sub-blocks 2ch, 2ch+1 */
            const __m256i q = load256(w[i].qs + 32 * ch);
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i s0 = K4_SCALE(scales, 2 * ch), s1 = K4_SCALE(scales, 2 * ch + 1);
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 64 * ch;
                const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(y)), s0);
                const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(y + 32)), s1);
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
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

static AVX2 void vec_dot_q4_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q4_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Q5_K against Q8_K ====================================================== */
/* Q4_K plus a fifth bit per weight: bit 2ch (low nibbles) or 2ch+1 (high
 * nibbles) of qh[l], moved to 0x10 with one 16-bit shift and a mask. */

AVX2_INLINE __m256i bit_to_16(__m256i hb, const int b) {
    const __m256i v = b <= 4 ? _mm256_slli_epi16(hb, 4 - b) : _mm256_srli_epi16(hb, b - 4);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AVX2_INLINE void q5_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q5_K *w, const char *x,
                           size_t bx, const int nc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
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
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), bit_to_16(hb, 2 * ch));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), bit_to_16(hb, 2 * ch + 1));
            const __m256i s0 = K4_SCALE(scales, 2 * ch), s1 = K4_SCALE(scales, 2 * ch + 1);
            UNROLL for (int c = 0; c < nc; c++) {
                const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 64 * ch;
                const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(y)), s0);
                const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(y + 32)), s1);
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
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

static AVX2 void vec_dot_q5_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q5_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== Q6_K against Q8_K ====================================================== */

/* s16 lanes: 8 x scale[k], then 8 x scale[k+1] (a 32-weight group's two scales). */
AVX2_INLINE __m256i q6_scale_pair(__m128i sc8, int k) {
    const __m128i sel = _mm_add_epi8(_mm_set1_epi8((char)k), _mm_set_epi64x(0x0101010101010101LL, 0));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, sel));
}

AVX2_INLINE void q6_K_cols(int64_t nb, float *s, size_t bs, const elpis_block_q6_K *w, const char *x,
                           size_t bx, const int nc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[4];
    UNROLL for (int c = 0; c < nc; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i sumi[4];
        UNROLL for (int c = 0; c < nc; c++) sumi[c] = _mm256_setzero_si256();
        UNROLL for (int h = 0; h < 2; h++) {
            const __m256i l0 = load256(w[i].ql + 64 * h), l1 = load256(w[i].ql + 64 * h + 32);
            const __m256i hb = load256(w[i].qh + 32 * h);
            __m256i q[4];   /* 6-bit values 0..63 of weights 32g..32g+31 of this half */
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
            UNROLL for (int g = 0; g < 4; g++) {
                const __m256i scv = q6_scale_pair(sc8, 8 * h + 2 * g);
                UNROLL for (int c = 0; c < nc; c++) {
                    const int8_t *y = ((const elpis_block_q8_K *)(x + (size_t)c * bx) + i)->qs + 128 * h + 32 * g;
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[g], load256(y)), scv);
                    sumi[c] = _mm256_add_epi32(sumi[c], p);
                }
            }
        }
        /* The -32 offset: sum_k scale[k] * 32 * bsums[k], exact in integers. */
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        const float d = h2f(w[i].d);
        UNROLL for (int c = 0; c < nc; c++) {
            const elpis_block_q8_K *y = (const elpis_block_q8_K *)(x + (size_t)c * bx) + i;
            const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(load256(y->bsums), sc16), 5);
            const __m256i tot = _mm256_sub_epi32(sumi[c], off);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(d * y->d), acc[c]);
        }
    }
    UNROLL for (int c = 0; c < nc; c++) s[(size_t)c * bs] = hsum8(acc[c]);
}

static AVX2 void vec_dot_q6_K(int64_t n, float *s, size_t bs, const void *w, const void *vx, size_t bx, int nrc) {
    const char *x = vx;
#define CALL(nc) q6_K_cols(n / ELPIS_QK_K, s, bs, w, x, bx, nc)
    DISPATCH_NC(CALL);
#undef CALL
}

/* ==== F16 / BF16 / F32 ======================================================== */
/* One column at a time (nrc>1 = repeated calls): four 8-wide accumulators,
 * then an 8-wide step, then a scalar tail, in that fixed order. */

AVX2_INLINE __m256 ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
AVX2_INLINE __m256 ld_bf16(const uint16_t *p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
AVX2_INLINE __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }

#define FLOAT_DOT1(name, T, LOAD, SCALAR)                                               \
    static AVX2 float dot1_##name(int64_t n, const T *w, const T *x) {                  \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                     \
        int64_t i = 0;                                                                  \
        for (; i + 32 <= n; i += 32) {                                                  \
            a0 = _mm256_fmadd_ps(LOAD(w + i), LOAD(x + i), a0);                         \
            a1 = _mm256_fmadd_ps(LOAD(w + i + 8), LOAD(x + i + 8), a1);                 \
            a2 = _mm256_fmadd_ps(LOAD(w + i + 16), LOAD(x + i + 16), a2);               \
            a3 = _mm256_fmadd_ps(LOAD(w + i + 24), LOAD(x + i + 24), a3);               \
        }                                                                               \
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(LOAD(w + i), LOAD(x + i), a0);  \
        float sum = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
        for (; i < n; i++) sum += SCALAR(w[i]) * SCALAR(x[i]);                          \
        return sum;                                                                     \
    }                                                                                   \
    static AVX2 void vec_dot_##name(int64_t n, float *s, size_t bs, const void *w,      \
                                    const void *x, size_t bx, int nrc) {                \
        for (int c = 0; c < nrc; c++)                                                   \
            s[(size_t)c * bs] = dot1_##name(n, w, (const T *)((const char *)x + (size_t)c * bx)); \
    }

#define ID(v) (v)
FLOAT_DOT1(f16, uint16_t, ld_f16, h2f)
FLOAT_DOT1(bf16, uint16_t, ld_bf16, elpis_bf16_to_f32)
FLOAT_DOT1(f32, float, ld_f32, ID)
#undef ID

/* ==== Activation quantizers (bit-identical to quant.c) ======================== */

AVX2_INLINE __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

AVX2_INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* roundf(): truncate, then step away from zero when the dropped part is >= 0.5
 * (v - trunc(v) is exact, so this matches roundf bit for bit). */
AVX2_INLINE __m256i round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 big = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(big, one)));
}

/* Four vectors of 8 s32 (each in [-127,127]) -> 32 s8 in order. */
AVX2_INLINE void store_i8x32(int8_t *dst, __m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i v = _mm256_packs_epi16(ab, cd);
    const __m256i fix = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  /* undo per-lane packing */
    _mm256_storeu_si256((__m256i *)dst, _mm256_permutevar8x32_epi32(v, fix));
}

/* One 32-value block as Q8_0 does it: returns d, writes q = roundf(x/d). */
AVX2_INLINE float q8_block(const float *x, int8_t q[32]) {
    __m256 v[4];
    UNROLL for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    const __m256 am = _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                    _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
    const float d = hmax8(am) / 127.0f;
    if (d == 0.0f) {
        memset(q, 0, 32);
        return d;
    }
    const __m256 vd = _mm256_set1_ps(d);
    store_i8x32(q, round_away(_mm256_div_ps(v[0], vd)), round_away(_mm256_div_ps(v[1], vd)),
                round_away(_mm256_div_ps(v[2], vd)), round_away(_mm256_div_ps(v[3], vd)));
    return d;
}

static AVX2 void quantize_q8_0(const float *src, void *dst, int64_t n) {
    elpis_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) y[i].d = elpis_f32_to_f16(q8_block(src + i * ELPIS_QK, y[i].qs));
}

/* Q8_S (pack.c): Q8_0's block, the scale widened, plus -128 * the exact sum. */
static AVX2 void quantize_q8_s(const float *src, void *dst, int64_t n) {
    elpis_block_q8_s *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) {
        y[i].d = elpis_f16_to_f32(elpis_f32_to_f16(q8_block(src + i * ELPIS_QK, y[i].qs)));
        const __m256i q = _mm256_loadu_si256((const __m256i *)y[i].qs);
        const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);   /* pairs: |sum| <= 254 */
        const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        const __m128i h2 = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        y[i].ms = -128 * _mm_cvtsi128_si32(_mm_add_epi32(h2, _mm_shuffle_epi32(h2, 0xB1)));
    }
}

static AVX2 void quantize_q8_1(const float *src, void *dst, int64_t n) {
    elpis_block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) {
        const float d = q8_block(src + i * ELPIS_QK, y[i].qs);
        int sum = 0;
        for (int j = 0; j < ELPIS_QK; j++) sum += y[i].qs[j];
        y[i].d = elpis_f32_to_f16(d);
        y[i].s = elpis_f32_to_f16(d * (float)sum);
    }
}

static AVX2 void quantize_q8_K(const float *src, void *dst, int64_t n) {
    elpis_block_q8_K *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK_K; i++) {
        const float *x = src + i * ELPIS_QK_K;
        __m256 am = _mm256_setzero_ps();
        for (int k = 0; k < ELPIS_QK_K; k += 8) am = _mm256_max_ps(am, abs_ps(_mm256_loadu_ps(x + k)));
        const float amax = hmax8(am);
        memset(&y[i], 0, sizeof(y[i]));
        if (amax == 0.0f) continue;
        int j = 0;
        while (j < ELPIS_QK_K - 1 && __builtin_fabsf(x[j]) != amax) j++; /* first largest |x| sets the sign */
        const float iscale = -127.0f / x[j];
        const __m256 vi = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int k = 0; k < ELPIS_QK_K; k += 32) {
            __m256i q[4];
            UNROLL for (int u = 0; u < 4; u++)   /* cvtps2dq rounds half to even, as lrintf */
                q[u] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vi, _mm256_loadu_ps(x + k + 8 * u))), lim);
            store_i8x32(y[i].qs + k, q[0], q[1], q[2], q[3]);
        }
        for (int k = 0; k < ELPIS_QK_K; k++) y[i].bsums[k / 16] = (int16_t)(y[i].bsums[k / 16] + y[i].qs[k]);
        y[i].d = 1.0f / iscale;
    }
}

static AVX2 void quantize_f16(const float *src, void *dst, int64_t n) {
    uint16_t *y = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = elpis_f32_to_f16(src[i]);
}

/* bf16 round-to-nearest-even (u + 0x7fff + lsb) >> 16; NaN -> (u >> 16) | 64. */
AVX2_INLINE __m256i bf16_round(__m256 f) {
    const __m256i u = _mm256_castps_si256(f);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
    return _mm256_blendv_epi8(r, qnan, nan);
}

static AVX2 void quantize_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *y = dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i p = _mm256_packus_epi32(bf16_round(_mm256_loadu_ps(src + i)),
                                              bf16_round(_mm256_loadu_ps(src + i + 8)));
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0)));
    }
    for (; i < n; i++) y[i] = elpis_f32_to_bf16(src[i]);
}

/* ==== Table ======================================================================= */

bool elpis_quant__fill_avx2(elpis_kernels *k) {
    k->name = "avx2";
    k->max_nrc = 4;
    k->vec_dot[ELPIS_Q8_0] = vec_dot_q8_0;
    k->vec_dot[ELPIS_Q4_0] = vec_dot_q4_0;
    k->vec_dot[ELPIS_Q5_0] = vec_dot_q5_0;
    k->vec_dot[ELPIS_Q4_1] = vec_dot_q4_1;
    k->vec_dot[ELPIS_Q5_1] = vec_dot_q5_1;
    k->vec_dot[ELPIS_Q4_K] = vec_dot_q4_K;
    k->vec_dot[ELPIS_Q5_K] = vec_dot_q5_K;
    k->vec_dot[ELPIS_Q6_K] = vec_dot_q6_K;
    k->vec_dot[ELPIS_F16]  = vec_dot_f16;
    k->vec_dot[ELPIS_BF16] = vec_dot_bf16;
    k->vec_dot[ELPIS_F32]  = vec_dot_f32;
    k->quantize[ELPIS_Q8_0] = quantize_q8_0;
    k->quantize[ELPIS_Q8_S] = quantize_q8_s;
    k->quantize[ELPIS_Q8_1] = quantize_q8_1;
    k->quantize[ELPIS_Q8_K] = quantize_q8_K;
    k->quantize[ELPIS_F16]  = quantize_f16;
    k->quantize[ELPIS_BF16] = quantize_bf16;
    return true;
}

#else /* not x86-64 */

bool elpis_quant__fill_avx2(elpis_kernels *k) {
    (void)k;
    return false;
}

#endif
