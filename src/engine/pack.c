/* pack.c -- 8-row packed weights: layout, packing, unpacking, and the
 * reference gemm8 kernels (quant.h, "packed weights", has the layout).
 *
 * DESIGN
 * - Packing is a property of the model load (model.c packs when the chosen
 *   kernel path asks for it, elpis_kernels.pack8); the layout itself is
 *   ISA-neutral and lives here, with the portable code that defines its
 *   meaning. quant_avx512.c has the fast gemm8; the tests check it against
 *   the reference here bit for bit.
 * - The reference does exactly what the SIMD kernel does, in its order: per
 *   block an exact integer sum with the offset removed, then
 *   acc = fma(isum, d_w * d_x, acc) per row. fmaf() is the fused operation
 *   the SIMD FMA performs, so the two agree to the bit.
 * - Q8_S (the activation side) is Q8_0's quantization with the scale kept
 *   as a float (the same f16-rounded value) and the block sum as the exact
 *   integer offset term -128 * sum(qs).
 *
 * INVARIANTS
 * - elpis_unpack8_row(pack8(rows), r) == dequantize(row r), exactly.
 * - Offsets: Q8_0 stores w + 128 (0..255 for every int8), Q4_0 the raw
 *   nibble (w + 8); |isum| < 2^24, so converting it to float is exact.
 */
#include "elpis/quant.h"

#include <math.h>
#include <string.h>

bool elpis_pack8_supported(elpis_dtype t) { return t == ELPIS_Q8_0 || t == ELPIS_Q4_0 || t == ELPIS_Q4_K; }

size_t elpis_pack8_bytes(elpis_dtype t, int64_t n) {
    if (t == ELPIS_Q4_K) return (size_t)(n / ELPIS_QK_K) * sizeof(elpis_block_q4_Kx8);
    return 8 * elpis_row_bytes(t, n);
}

elpis_dtype elpis_pack8_act(elpis_dtype t) { return t == ELPIS_Q4_K ? ELPIS_Q8_KS : ELPIS_Q8_S; }

/* ---- packing ------------------------------------------------------------------- */

/* Element e of a row lands at byte (e/4)*32 + r*4 + e%4: whole 4-byte
 * groups move, then the sign bit flips (w + 128 == w ^ 0x80 for int8). */
static void pack_q8_0(const char *rows, size_t row_bytes, int64_t nb, elpis_block_q8_0x8 *dst) {
    for (int64_t b = 0; b < nb; b++) {
        for (int r = 0; r < 8; r++) {
            const elpis_block_q8_0 *src = (const elpis_block_q8_0 *)(rows + r * row_bytes) + b;
            dst[b].d[r] = src->d;
            for (int k = 0; k < 8; k++) memcpy(dst[b].qs + k * 32 + r * 4, src->qs + 4 * k, 4);
        }
        for (int i = 0; i < 256; i += 8) {
            uint64_t v;
            memcpy(&v, dst[b].qs + i, 8);
            v ^= 0x8080808080808080ull;
            memcpy(dst[b].qs + i, &v, 8);
        }
    }
}

/* 32 nibbles of row r (element e = q[e], 0..15) into the Q4_0x8 qs layout:
 * chunk m holds elements 8m..8m+3 (low) and 8m+4..8m+7 (high). */
static void put_nibbles(uint8_t qs[128], int r, const uint8_t q[32]) {
    for (int m = 0; m < 4; m++)
        for (int t = 0; t < 4; t++) qs[m * 32 + r * 4 + t] = (uint8_t)(q[8 * m + t] | q[8 * m + 4 + t] << 4);
}

static int get_nibble(const uint8_t qs[128], int r, int e) {
    const uint8_t byte = qs[(e / 8) * 32 + r * 4 + e % 4];
    return (e / 4) % 2 ? byte >> 4 : byte & 0x0F;
}

/* Q4_0 keeps element j in the low nibble of qs[j], element j+16 in the high. */
static void pack_q4_0(const char *rows, size_t row_bytes, int64_t nb, elpis_block_q4_0x8 *dst) {
    for (int64_t b = 0; b < nb; b++)
        for (int r = 0; r < 8; r++) {
            const elpis_block_q4_0 *src = (const elpis_block_q4_0 *)(rows + r * row_bytes) + b;
            uint8_t q[32];
            for (int j = 0; j < 16; j++) {
                q[j] = src->qs[j] & 0x0F;
                q[j + 16] = src->qs[j] >> 4;
            }
            dst[b].d[r] = src->d;
            put_nibbles(dst[b].qs, r, q);
        }
}

/* Q4_K: sub-block 2c is the low nibbles of qs[32c..32c+31], 2c+1 the high. */
static void pack_q4_K(const char *rows, size_t row_bytes, int64_t nb, elpis_block_q4_Kx8 *dst) {
    for (int64_t b = 0; b < nb; b++)
        for (int r = 0; r < 8; r++) {
            const elpis_block_q4_K *src = (const elpis_block_q4_K *)(rows + r * row_bytes) + b;
            uint8_t sc[8], mn[8];
            elpis_k4_scales(src->scales, sc, mn);
            dst[b].d[r] = src->d;
            dst[b].dmin[r] = src->dmin;
            for (int j = 0; j < 8; j++) {
                uint8_t q[32];
                for (int l = 0; l < 32; l++) q[l] = j % 2 ? src->qs[32 * (j / 2) + l] >> 4 : src->qs[32 * (j / 2) + l] & 0x0F;
                put_nibbles(dst[b].qs[j], r, q);
                dst[b].sc[j][r] = sc[j];
                dst[b].mn[j / 2][r][j % 2] = mn[j];
            }
        }
}

void elpis_pack8(elpis_dtype t, const void *rows, size_t row_bytes, int64_t n, void *dst) {
    if (t == ELPIS_Q8_0) pack_q8_0(rows, row_bytes, n / ELPIS_QK, dst);
    else if (t == ELPIS_Q4_0) pack_q4_0(rows, row_bytes, n / ELPIS_QK, dst);
    else if (t == ELPIS_Q4_K) pack_q4_K(rows, row_bytes, n / ELPIS_QK_K, dst);
}

/* Weight e of row r in a packed block, without its offset. */
static int q8_0x8_w(const elpis_block_q8_0x8 *b, int r, int e) { return b->qs[(e / 4) * 32 + r * 4 + e % 4] - 128; }
static int q4_0x8_w(const elpis_block_q4_0x8 *b, int r, int e) { return get_nibble(b->qs, r, e) - 8; }

/* As deq_q4_K in quant.c, operation for operation: d*sc*q - dmin*mn. */
static void unpack_q4_K(const elpis_block_q4_Kx8 *g, int64_t nb, int r, float *dst) {
    for (int64_t b = 0; b < nb; b++) {
        const float d = elpis_f16_to_f32(g[b].d[r]), dmin = elpis_f16_to_f32(g[b].dmin[r]);
        for (int j = 0; j < 8; j++) {
            const float dj = d * g[b].sc[j][r], mj = dmin * g[b].mn[j / 2][r][j % 2];
            for (int l = 0; l < 32; l++) dst[b * ELPIS_QK_K + 32 * j + l] = dj * (float)get_nibble(g[b].qs[j], r, l) - mj;
        }
    }
}

void elpis_unpack8_row(elpis_dtype t, const void *group, int64_t n, int r, float *dst) {
    if (t == ELPIS_Q4_K) {
        unpack_q4_K(group, n / ELPIS_QK_K, r, dst);
        return;
    }
    for (int64_t b = 0; b < n / ELPIS_QK; b++)
        for (int e = 0; e < ELPIS_QK; e++) {
            float *y = dst + b * ELPIS_QK + e;
            if (t == ELPIS_Q8_0) {
                const elpis_block_q8_0x8 *g = (const elpis_block_q8_0x8 *)group + b;
                *y = (float)q8_0x8_w(g, r, e) * elpis_f16_to_f32(g->d[r]);
            } else if (t == ELPIS_Q4_0) {
                const elpis_block_q4_0x8 *g = (const elpis_block_q4_0x8 *)group + b;
                *y = (float)q4_0x8_w(g, r, e) * elpis_f16_to_f32(g->d[r]);
            }
        }
}

/* ---- the reference gemm8 and Q8_S ------------------------------------------------ */

/* One group, one column at a time: the SIMD kernels' operations, in their order. */
#define REF_GEMM8(name, blk_t, WEIGHT)                                                     \
    static void gemm8_##name(int64_t n, float *s, size_t bs, const void *groups, int64_t ng, \
                             const void *vx, size_t bx, int nrc) {                         \
        const int64_t nb = n / ELPIS_QK;                                                   \
        for (int64_t i = 0; i < ng; i++)                                                   \
            for (int c = 0; c < nrc; c++) {                                                \
                const elpis_block_q8_s *x = (const elpis_block_q8_s *)((const char *)vx + (size_t)c * bx); \
                float acc[8] = { 0 };                                                      \
                for (int64_t b = 0; b < nb; b++) {                                         \
                    const blk_t *g = (const blk_t *)groups + i * nb + b;                   \
                    for (int r = 0; r < 8; r++) {                                          \
                        int32_t isum = 0;                                                  \
                        for (int e = 0; e < ELPIS_QK; e++) isum += WEIGHT(g, r, e) * x[b].qs[e]; \
                        acc[r] = fmaf((float)isum, elpis_f16_to_f32(g->d[r]) * x[b].d, acc[r]); \
                    }                                                                      \
                }                                                                          \
                memcpy(s + (size_t)c * bs + 8 * i, acc, sizeof acc);                       \
            }                                                                              \
    }
REF_GEMM8(q8_0, elpis_block_q8_0x8, q8_0x8_w)
REF_GEMM8(q4_0, elpis_block_q4_0x8, q4_0x8_w)

/* Q4_K per super-block and row: iacc = sum_j sc_j * (exact sub-block sum),
 * imin = sum_j mn_j * bsub_j; acc += iacc * (d*dx), then -= imin * (dmin*dx),
 * each one fused multiply-add. */
static void gemm8_q4_K(int64_t n, float *s, size_t bs, const void *groups, int64_t ng, const void *vx, size_t bx, int nrc) {
    const int64_t nb = n / ELPIS_QK_K;
    for (int64_t i = 0; i < ng; i++)
        for (int c = 0; c < nrc; c++) {
            const elpis_block_q8_ks *x = (const elpis_block_q8_ks *)((const char *)vx + (size_t)c * bx);
            float acc[8] = { 0 };
            for (int64_t b = 0; b < nb; b++) {
                const elpis_block_q4_Kx8 *g = (const elpis_block_q4_Kx8 *)groups + i * nb + b;
                for (int r = 0; r < 8; r++) {
                    int32_t iacc = 0, imin = 0;
                    for (int j = 0; j < 8; j++) {
                        int32_t isum = 0;
                        for (int l = 0; l < 32; l++) isum += get_nibble(g->qs[j], r, l) * x[b].qs[32 * j + l];
                        iacc += isum * g->sc[j][r];
                        imin += g->mn[j / 2][r][j % 2] * x[b].bsub[j];
                    }
                    acc[r] = fmaf((float)iacc, elpis_f16_to_f32(g->d[r]) * x[b].d, acc[r]);
                    acc[r] = fmaf(-(float)imin, elpis_f16_to_f32(g->dmin[r]) * x[b].d, acc[r]);
                }
            }
            memcpy(s + (size_t)c * bs + 8 * i, acc, sizeof acc);
        }
}

void elpis_quant__quantize_q8_s(const float *src, void *dst, int64_t n) {
    elpis_block_q8_s *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK; i++) {
        elpis_block_q8_0 q;
        elpis_quantize_row(ELPIS_Q8_0, src + i * ELPIS_QK, &q, ELPIS_QK);
        int32_t sum = 0;
        for (int j = 0; j < ELPIS_QK; j++) sum += q.qs[j];
        y[i].d = elpis_f16_to_f32(q.d);
        y[i].ms = -128 * sum;
        memcpy(y[i].qs, q.qs, sizeof q.qs);
    }
}

/* Q8_KS: Q8_K, with the 16-value bsums added up in pairs. */
void elpis_quant__quantize_q8_ks(const float *src, void *dst, int64_t n) {
    elpis_block_q8_ks *y = dst;
    for (int64_t i = 0; i < n / ELPIS_QK_K; i++) {
        elpis_block_q8_K q;
        elpis_quantize_row(ELPIS_Q8_K, src + i * ELPIS_QK_K, &q, ELPIS_QK_K);
        y[i].d = q.d;
        for (int j = 0; j < 8; j++) y[i].bsub[j] = (int16_t)(q.bsums[2 * j] + q.bsums[2 * j + 1]);
        memcpy(y[i].qs, q.qs, sizeof q.qs);
    }
}

void elpis_quant__fill_pack_portable(elpis_kernels *k) {
    k->gemm8[ELPIS_Q8_0] = gemm8_q8_0;
    k->gemm8[ELPIS_Q4_0] = gemm8_q4_0;
    k->gemm8[ELPIS_Q4_K] = gemm8_q4_K;
    k->quantize[ELPIS_Q8_S] = elpis_quant__quantize_q8_s;
    k->quantize[ELPIS_Q8_KS] = elpis_quant__quantize_q8_ks;
}
