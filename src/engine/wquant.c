/* wquant.c -- reference weight quantizers (see wquant.h).
 *
 * Each function is the inverse of the dequantization formula in
 * shared/docs/engine-facts.md §2 for the same type: choose the scale (and min)
 * from the block's range, round each weight to the nearest level, pack the
 * bits in the order the dequantizer reads them. test_wquant checks the
 * round trip through elpis_dequantize_row for every type.
 */
#include "elpis/wquant.h"

#include <math.h>
#include <string.h>

static uint16_t h(float f) { return elpis_f32_to_f16(f); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static float absmax(const float *x, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

static void minmax(const float *x, int n, float *lo, float *hi) {
    *lo = *hi = x[0];
    for (int i = 1; i < n; i++) { if (x[i] < *lo) *lo = x[i]; if (x[i] > *hi) *hi = x[i]; }
}

/* ---- 32-element blocks ----------------------------------------------------- */

/* Symmetric 4 or 5 bits (Q4_0: -8..7, Q5_0: -16..15), low halves first. */
static void q_sym(const float *x, uint8_t *blk, int bits) {
    const int off = 1 << (bits - 1);
    float d = absmax(x, 32) / (float)(off - 1 > 0 ? off - 1 : 1);
    d = elpis_f16_to_f32(h(d));
    float id = d ? 1.0f / d : 0;
    uint8_t q[32];
    for (int i = 0; i < 32; i++) q[i] = (uint8_t)clampi((int)lrintf(x[i] * id) + off, 0, 2 * off - 1);
    uint16_t dh = h(d);
    memcpy(blk, &dh, 2);
    uint8_t *qs = blk + 2;
    if (bits == 5) {
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            qh |= (uint32_t)((q[j] >> 4) & 1) << j;
            qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
        }
        memcpy(blk + 2, &qh, 4);
        qs = blk + 6;
    }
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
}

/* Asymmetric 4 or 5 bits with min (Q4_1, Q5_1). */
static void q_asym(const float *x, uint8_t *blk, int bits) {
    const int levels = (1 << bits) - 1;
    float lo, hi;
    minmax(x, 32, &lo, &hi);
    float d = (hi - lo) / levels;
    uint16_t dh = h(d), mh = h(lo);
    d = elpis_f16_to_f32(dh);
    lo = elpis_f16_to_f32(mh);
    float id = d ? 1.0f / d : 0;
    uint8_t q[32];
    for (int i = 0; i < 32; i++) q[i] = (uint8_t)clampi((int)lrintf((x[i] - lo) * id), 0, levels);
    memcpy(blk, &dh, 2);
    memcpy(blk + 2, &mh, 2);
    uint8_t *qs = blk + 4;
    if (bits == 5) {
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            qh |= (uint32_t)((q[j] >> 4) & 1) << j;
            qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
        }
        memcpy(blk + 4, &qh, 4);
        qs = blk + 8;
    }
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
}

static void q8_0(const float *x, uint8_t *blk) {
    float d = absmax(x, 32) / 127.0f;
    uint16_t dh = h(d);
    d = elpis_f16_to_f32(dh);
    float id = d ? 1.0f / d : 0;
    memcpy(blk, &dh, 2);
    for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)(int8_t)clampi((int)lrintf(x[i] * id), -127, 127);
}

/* ---- 256-element K-quant super-blocks ----------------------------------------- */

/* Pack 8 six-bit scales and mins the way get_scale_min_k4 unpacks them. */
static void pack_scale_min_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t q[12]) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

/* Q4_K / Q5_K: 8 sub-blocks of 32 with scale and min: w = d*sc*q - dmin*m. */
static void q_k45(const float *x, uint8_t *blk, int bits) {
    const int levels = (1 << bits) - 1;
    float sub_d[8], sub_m[8], max_d = 0, max_m = 0;
    for (int s = 0; s < 8; s++) {
        float lo, hi;
        minmax(x + 32 * s, 32, &lo, &hi);
        if (lo > 0) lo = 0;                       /* the min term only subtracts */
        sub_d[s] = (hi - lo) / levels;
        sub_m[s] = -lo;
        if (sub_d[s] > max_d) max_d = sub_d[s];
        if (sub_m[s] > max_m) max_m = sub_m[s];
    }
    float d = max_d / 63.0f, dmin = max_m / 63.0f;
    uint16_t dh = h(d), mh = h(dmin);
    d = elpis_f16_to_f32(dh);
    dmin = elpis_f16_to_f32(mh);
    uint8_t sc[8], mn[8];
    for (int s = 0; s < 8; s++) {
        sc[s] = (uint8_t)clampi(d ? (int)lrintf(sub_d[s] / d) : 0, 0, 63);
        mn[s] = (uint8_t)clampi(dmin ? (int)lrintf(sub_m[s] / dmin) : 0, 0, 63);
    }
    memcpy(blk, &dh, 2);
    memcpy(blk + 2, &mh, 2);
    pack_scale_min_k4(sc, mn, blk + 4);
    uint8_t *qh = blk + 16, *qs = blk + 16 + (bits == 5 ? 32 : 0);
    if (bits == 5) memset(qh, 0, 32);
    for (int c = 0; c < 4; c++) {                 /* 64-weight chunks: sub-blocks 2c (low nibble), 2c+1 (high) */
        for (int half = 0; half < 2; half++) {
            int s = 2 * c + half;
            float ds = d * sc[s], ms = dmin * mn[s];
            for (int l = 0; l < 32; l++) {
                int q = ds ? clampi((int)lrintf((x[32 * s + l] + ms) / ds), 0, levels) : 0;
                uint8_t *dst = &qs[32 * c + l];
                *dst = half ? (uint8_t)((*dst & 15) | ((q & 15) << 4)) : (uint8_t)(q & 15);
                if (bits == 5 && (q & 16)) qh[l] |= (uint8_t)(1 << s);
            }
        }
    }
}

/* Q6_K: 16 groups of 16 with int8 scales: w = d * sc * (q - 32). */
static void q6_k(const float *x, uint8_t *blk) {
    uint8_t *ql = blk, *qh = blk + 128;
    int8_t *scales = (int8_t *)(blk + 192);
    float gs[16], maxs = 0;
    for (int g = 0; g < 16; g++) {
        gs[g] = absmax(x + 16 * g, 16) / 31.0f;
        if (gs[g] > maxs) maxs = gs[g];
    }
    float d = maxs / 127.0f;
    uint16_t dh = h(d);
    d = elpis_f16_to_f32(dh);
    memcpy(blk + 208, &dh, 2);
    for (int g = 0; g < 16; g++) scales[g] = (int8_t)clampi(d ? (int)lrintf(gs[g] / d) : 0, -128, 127);
    uint8_t q[256];
    for (int i = 0; i < 256; i++) {
        float ds = d * scales[i / 16];
        q[i] = (uint8_t)clampi(ds ? (int)lrintf(x[i] / ds) + 32 : 32, 0, 63);
    }
    memset(ql, 0, 128);
    memset(qh, 0, 64);
    for (int half = 0; half < 2; half++) {       /* mirror of the dequantizer's loop */
        const uint8_t *qq = q + 128 * half;
        uint8_t *l_ = ql + 64 * half, *h_ = qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            l_[l] = (uint8_t)((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
            l_[l + 32] = (uint8_t)((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
            h_[l] = (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
        }
    }
}

bool elpis_wquant_supported(elpis_dtype t) {
    switch (t) {
    case ELPIS_F32: case ELPIS_F16: case ELPIS_BF16: case ELPIS_Q4_0: case ELPIS_Q4_1: case ELPIS_Q5_0:
    case ELPIS_Q5_1: case ELPIS_Q8_0: case ELPIS_Q4_K: case ELPIS_Q5_K: case ELPIS_Q6_K: return true;
    default: return false;
    }
}

void elpis_wquant_row(elpis_dtype t, const float *x, void *dst, int64_t n) {
    uint8_t *o = dst;
    const elpis_type_info *ti = elpis_type_info_of(t);
    for (int64_t b = 0; b < n / ti->blck; b++, x += ti->blck, o += ti->bytes) {
        switch (t) {
        case ELPIS_F32: memcpy(o, x, 4); break;
        case ELPIS_F16: { uint16_t v = h(x[0]); memcpy(o, &v, 2); break; }
        case ELPIS_BF16: { uint16_t v = elpis_f32_to_bf16(x[0]); memcpy(o, &v, 2); break; }
        case ELPIS_Q4_0: q_sym(x, o, 4); break;
        case ELPIS_Q5_0: q_sym(x, o, 5); break;
        case ELPIS_Q4_1: q_asym(x, o, 4); break;
        case ELPIS_Q5_1: q_asym(x, o, 5); break;
        case ELPIS_Q8_0: q8_0(x, o); break;
        case ELPIS_Q4_K: q_k45(x, o, 4); break;
        case ELPIS_Q5_K: q_k45(x, o, 5); break;
        case ELPIS_Q6_K: q6_k(x, o); break;
        default: memset(o, 0, ti->bytes); break;
        }
    }
}
