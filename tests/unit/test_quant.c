/* test_quant.c -- tensor types, (de)quantization and dot kernels.
 *
 * What is checked, and against what:
 * - Dequantization against values written down from the block layouts in
 *   engine-facts §2 (blocks are packed here by hand, so a wrong nibble order,
 *   a wrong Q5 high-bit position or a wrong scale unpacking shows up).
 * - Activation quantizers against hand-computed blocks (rounding rules,
 *   signed-max rule of Q8_K, bsums, Q8_1's s) and round-trip error bounds;
 *   the SIMD quantizers must give the portable bytes exactly.
 * - Every vec_dot of every kernel path (portable, avx2, avx512; a path the
 *   CPU lacks is skipped) against a double-precision dot of the dequantized
 *   weight row and the dequantized activation row, with a tolerance relative
 *   to the magnitude of the terms.
 * - Batch invariance: nrc>1 gives, per column, the nrc==1 bits.
 * - ELPIS_KERNELS forces a path (checked in forked children, before anything
 *   in this process has initialised the tables).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "elpis/quant.h"

static const char *const k_paths[] = { "portable", "avx2", "avx512" };
#define N_PATHS 3

/* ==== Random data ============================================================ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float frand(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }   /* [-1, 1) */

/* Roughly bell-shaped activations with an occasional outlier, like a hidden state. */
static void rand_acts(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = (frand() + frand() + frand()) * 0.7f;
        if (rnd() % 97 == 0) x[i] *= 12.0f;
    }
}

/* A valid, normal f16 scale of magnitude in [lo, 2*lo), random sign if `signed_`. */
static uint16_t rand_scale(float lo, int signed_) {
    float v = lo * (1.0f + (float)(rnd() % 1000) / 1000.0f);
    if (signed_ && (rnd() & 1)) v = -v;
    return elpis_f32_to_f16(v);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* A random weight row of type t: random bytes, then every scale field made a
 * sane f16 (random bytes there could be NaN/inf). */
static void rand_weights(elpis_dtype t, void *row, int64_t n) {
    const size_t bytes = elpis_row_bytes(t, n);
    uint8_t *p = row;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    const int64_t nb = n / elpis_type_info_of(t)->blck;
    for (int64_t i = 0; i < nb; i++) {
        switch (t) {
        case ELPIS_Q4_0: ((elpis_block_q4_0 *)row)[i].d = rand_scale(0.01f, 1); break;
        case ELPIS_Q4_1:
            ((elpis_block_q4_1 *)row)[i].d = rand_scale(0.01f, 0);
            ((elpis_block_q4_1 *)row)[i].m = rand_scale(0.05f, 1);
            break;
        case ELPIS_Q5_0: ((elpis_block_q5_0 *)row)[i].d = rand_scale(0.005f, 1); break;
        case ELPIS_Q5_1:
            ((elpis_block_q5_1 *)row)[i].d = rand_scale(0.005f, 0);
            ((elpis_block_q5_1 *)row)[i].m = rand_scale(0.05f, 1);
            break;
        case ELPIS_Q8_0: ((elpis_block_q8_0 *)row)[i].d = rand_scale(0.001f, 1); break;
        case ELPIS_Q4_K:
            ((elpis_block_q4_K *)row)[i].d = rand_scale(0.0005f, 0);
            ((elpis_block_q4_K *)row)[i].dmin = rand_scale(0.0005f, 0);
            break;
        case ELPIS_Q5_K:
            ((elpis_block_q5_K *)row)[i].d = rand_scale(0.0003f, 0);
            ((elpis_block_q5_K *)row)[i].dmin = rand_scale(0.0005f, 0);
            break;
        case ELPIS_Q6_K: ((elpis_block_q6_K *)row)[i].d = rand_scale(0.0001f, 1); break;
        case ELPIS_F16: ((uint16_t *)row)[i] = elpis_f32_to_f16(frand()); break;
        case ELPIS_BF16: ((uint16_t *)row)[i] = elpis_f32_to_bf16(frand()); break;
        case ELPIS_F32: ((float *)row)[i] = frand(); break;
        default: fail_msg("no generator for type %d", (int)t);
        }
    }
}

/* The row with every quant bit zeroed: dequantizes to each element's offset
 * term (-8d, m, -dmin*m, -32*d*sc, ...), which the kernels compute apart
 * from the main term, so its size belongs in the tolerance. */
static void zero_quants(elpis_dtype t, void *row, int64_t n) {
    const int64_t nb = n / elpis_type_info_of(t)->blck;
    for (int64_t i = 0; i < nb; i++) {
        switch (t) {
        case ELPIS_Q4_0: memset(((elpis_block_q4_0 *)row)[i].qs, 0, 16); break;
        case ELPIS_Q4_1: memset(((elpis_block_q4_1 *)row)[i].qs, 0, 16); break;
        case ELPIS_Q5_0: memset(((elpis_block_q5_0 *)row)[i].qs, 0, 16); memset(((elpis_block_q5_0 *)row)[i].qh, 0, 4); break;
        case ELPIS_Q5_1: memset(((elpis_block_q5_1 *)row)[i].qs, 0, 16); memset(((elpis_block_q5_1 *)row)[i].qh, 0, 4); break;
        case ELPIS_Q4_K: memset(((elpis_block_q4_K *)row)[i].qs, 0, 128); break;
        case ELPIS_Q5_K: memset(((elpis_block_q5_K *)row)[i].qs, 0, 128); memset(((elpis_block_q5_K *)row)[i].qh, 0, 32); break;
        case ELPIS_Q6_K: memset(((elpis_block_q6_K *)row)[i].ql, 0, 128); memset(((elpis_block_q6_K *)row)[i].qh, 0, 64); break;
        default: return;   /* no offset term */
        }
    }
}

/* ==== Kernel selection (must run first: nothing initialised yet) ============= */

/* In a child: force ELPIS_KERNELS=want and report whether the chosen path is
 * `want` when the CPU has it, else the best path (avx512 > avx2 > portable). */
static int child_check(const char *want) {
    setenv("ELPIS_KERNELS", want, 1);
    const elpis_kernels *k = elpis_kernels_get();
    const elpis_kernels *forced = elpis_kernels_by_name(want);
    const char *best = elpis_kernels_by_name("avx512") ? "avx512" : elpis_kernels_by_name("avx2") ? "avx2" : "portable";
    const char *expect = forced ? want : best;
    return (k && strcmp(k->name, expect) == 0 && elpis_kernels_get() == k) ? 0 : 1;
}

static void test_env_forces_path(void **state) {
    (void)state;
    const char *wants[] = { "portable", "avx2", "avx512", "no-such-path" };
    for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) _exit(child_check(wants[i]));
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) != 0) fail_msg("ELPIS_KERNELS=%s picked the wrong path", wants[i]);
    }
}

/* ==== Type table ============================================================ */

static void test_type_table(void **state) {
    (void)state;
    static const struct { elpis_dtype t; int blck; size_t bytes; elpis_dtype vdt; bool weight; } want[] = {
        { ELPIS_F32, 1, 4, ELPIS_F32, true },        { ELPIS_F16, 1, 2, ELPIS_F16, true },
        { ELPIS_BF16, 1, 2, ELPIS_BF16, true },      { ELPIS_Q4_0, 32, 18, ELPIS_Q8_0, true },
        { ELPIS_Q4_1, 32, 20, ELPIS_Q8_1, true },    { ELPIS_Q5_0, 32, 22, ELPIS_Q8_0, true },
        { ELPIS_Q5_1, 32, 24, ELPIS_Q8_1, true },    { ELPIS_Q8_0, 32, 34, ELPIS_Q8_0, true },
        { ELPIS_Q8_1, 32, 36, ELPIS_Q8_1, false },   { ELPIS_Q2_K, 256, 84, ELPIS_Q8_K, false },
        { ELPIS_Q3_K, 256, 110, ELPIS_Q8_K, false }, { ELPIS_Q4_K, 256, 144, ELPIS_Q8_K, true },
        { ELPIS_Q5_K, 256, 176, ELPIS_Q8_K, true },  { ELPIS_Q6_K, 256, 210, ELPIS_Q8_K, true },
        { ELPIS_Q8_K, 256, 292, ELPIS_Q8_K, false },
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const elpis_type_info *ti = elpis_type_info_of(want[i].t);
        assert_non_null(ti);
        assert_int_equal(ti->blck, want[i].blck);
        assert_int_equal(ti->bytes, want[i].bytes);
        assert_int_equal(ti->vec_dot_type, want[i].vdt);
        assert_int_equal(ti->weight, want[i].weight);
    }
    assert_string_equal(elpis_type_info_of(ELPIS_Q4_K)->name, "q4_K");
    assert_null(elpis_type_info_of(4));      /* removed Q4_2 */
    assert_null(elpis_type_info_of(20));     /* IQ4_NL: not supported */
    assert_null(elpis_type_info_of(ELPIS_DTYPE_MAX));
    assert_null(elpis_type_info_of(0xFFFFFFFFu));
    assert_int_equal(elpis_row_bytes(ELPIS_Q4_K, 4096), 16 * 144);
    assert_int_equal(elpis_row_bytes(ELPIS_Q8_0, 64), 68);
    assert_int_equal(elpis_row_bytes(ELPIS_F16, 3), 6);
}

/* Every path has a vec_dot for every weight type, and a quantizer for every
 * vec_dot_type. */
static void test_tables_complete(void **state) {
    (void)state;
    for (int p = 0; p < N_PATHS; p++) {
        const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
        if (!k) continue;
        assert_string_equal(k->name, k_paths[p]);
        assert_true(k->max_nrc >= 1);
        for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
            const elpis_type_info *ti = elpis_type_info_of(t);
            if (!ti || !ti->weight) continue;
            if (!k->vec_dot[t]) fail_msg("%s: no vec_dot for %s", k->name, ti->name);
            if (!k->quantize[ti->vec_dot_type]) fail_msg("%s: no quantizer for %s", k->name, ti->name);
        }
    }
    assert_non_null(elpis_kernels_by_name("portable"));
    assert_null(elpis_kernels_by_name("sse9"));
    assert_null(elpis_kernels_by_name(NULL));
    assert_non_null(elpis_kernels_get());
}

/* ==== Dequantization of hand-packed blocks ==================================== */

#define F16_ONE 0x3C00   /* 1.0 */
#define F16_HALF 0x3800  /* 0.5 */
#define F16_TWO 0x4000   /* 2.0 */

static void test_dequant_q4_0_nibble_order(void **state) {
    (void)state;
    elpis_block_q4_0 b = { .d = F16_TWO };
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    elpis_dequantize_row(ELPIS_Q4_0, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 2.0f * (float)(j - 8));          /* low nibbles: elements 0..15 */
        assert_true(y[j + 16] == 2.0f * (float)(7 - j));     /* high nibbles: 16..31 */
    }
    assert_true(y[0] == -16.0f && y[1] == -14.0f && y[16] == 14.0f && y[31] == -16.0f);
}

static void test_dequant_q4_1(void **state) {
    (void)state;
    elpis_block_q4_1 b = { .d = F16_HALF, .m = 0xBC00 /* -1.0 */ };
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    elpis_dequantize_row(ELPIS_Q4_1, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 0.5f * (float)j - 1.0f);
        assert_true(y[j + 16] == 0.5f * (float)(15 - j) - 1.0f);
    }
}

/* qh bit j is element j's 5th bit; bit 16+j is element 16+j's (the j+12 shift). */
static void test_dequant_q5_high_bits(void **state) {
    (void)state;
    const uint32_t qh = (1u << 3) | (1u << 15) | (1u << 20) | (1u << 31);
    elpis_block_q5_0 b0 = { .d = F16_ONE };
    elpis_block_q5_1 b1 = { .d = F16_ONE, .m = F16_HALF };
    for (int k = 0; k < 4; k++) b0.qh[k] = b1.qh[k] = (uint8_t)(qh >> (8 * k));
    for (int j = 0; j < 16; j++) b0.qs[j] = b1.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y0[32], y1[32];
    elpis_dequantize_row(ELPIS_Q5_0, &b0, y0, 32);
    elpis_dequantize_row(ELPIS_Q5_1, &b1, y1, 32);
    for (int e = 0; e < 32; e++) {
        const int nib = e < 16 ? e : 15 - (e - 16);
        const int hi = (e == 3 || e == 15 || e == 20 || e == 31) ? 16 : 0;
        assert_true(y0[e] == (float)(nib + hi - 16));
        assert_true(y1[e] == (float)(nib + hi) + 0.5f);
    }
    /* spot values: element 20 = j 4 of the high half, bit 20 set */
    assert_true(y0[20] == 11.0f - 16.0f + 16.0f);
    assert_true(y0[4] == 4.0f - 16.0f);
}

static void test_dequant_q8_0(void **state) {
    (void)state;
    elpis_block_q8_0 b = { .d = F16_HALF };
    for (int j = 0; j < 32; j++) b.qs[j] = (int8_t)(j * 8 - 128);
    float y[32];
    elpis_dequantize_row(ELPIS_Q8_0, &b, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == 0.5f * (float)(j * 8 - 128));
}

/* Pack 8 six-bit scales and mins as get_scale_min_k4 reads them. */
static void pack_k4_scales(const uint8_t sc[8], const uint8_t mn[8], uint8_t q[12]) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        q[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

static void test_k4_scales_roundtrip(void **state) {
    (void)state;
    for (int it = 0; it < 2000; it++) {
        uint8_t sc[8], mn[8], q[12], sc2[8], mn2[8];
        for (int j = 0; j < 8; j++) { sc[j] = rnd() & 63; mn[j] = rnd() & 63; }
        pack_k4_scales(sc, mn, q);
        elpis_k4_scales(q, sc2, mn2);
        assert_memory_equal(sc, sc2, 8);
        assert_memory_equal(mn, mn2, 8);
        uint64_t psc, pmn;
        elpis_k4_scales_packed(q, &psc, &pmn);
        for (int j = 0; j < 8; j++) {
            assert_int_equal((psc >> (8 * j)) & 0xFF, sc[j]);
            assert_int_equal((pmn >> (8 * j)) & 0xFF, mn[j]);
        }
    }
    /* One hand example: j>=4 takes its top 2 bits from the top of q[j-4] / q[j]. */
    const uint8_t q[12] = { 0xC1, 0, 0, 0, 0x40, 0, 0, 0, 0x5A, 0, 0, 0 };
    uint8_t sc[8], mn[8];
    elpis_k4_scales(q, sc, mn);
    assert_int_equal(sc[0], 1);
    assert_int_equal(mn[0], 0);
    assert_int_equal(sc[4], 0xA | 3 << 4);     /* q[8]&15 | (q[0]>>6)<<4 */
    assert_int_equal(mn[4], 0x5 | 1 << 4);     /* q[8]>>4 | (q[4]>>6)<<4 */
}

static void test_dequant_q4_K_q5_K(void **state) {
    (void)state;
    const uint8_t sc[8] = { 1, 2, 63, 4, 17, 33, 48, 60 }, mn[8] = { 0, 5, 63, 9, 16, 40, 1, 62 };
    elpis_block_q4_K b4 = { .d = F16_ONE, .dmin = F16_HALF };
    elpis_block_q5_K b5 = { .d = F16_ONE, .dmin = F16_HALF };
    pack_k4_scales(sc, mn, b4.scales);
    pack_k4_scales(sc, mn, b5.scales);
    for (int i = 0; i < 128; i++) b4.qs[i] = b5.qs[i] = (uint8_t)((i & 15) | (15 - (i & 15)) << 4);
    for (int l = 0; l < 32; l++) b5.qh[l] = (uint8_t)(l * 37 + 11);
    float y4[256], y5[256];
    elpis_dequantize_row(ELPIS_Q4_K, &b4, y4, 256);
    elpis_dequantize_row(ELPIS_Q5_K, &b5, y5, 256);
    for (int e = 0; e < 256; e++) {
        const int c = e / 64, l = e % 32, upper = (e % 64) >= 32, j = 2 * c + upper;  /* sub-block j */
        const int nib = upper ? 15 - (l & 15) : (l & 15);
        const int hbit = ((b5.qh[l] >> j) & 1) << 4;             /* bit 2c / 2c+1 of qh[l] */
        assert_true(y4[e] == (float)(sc[j] * nib) - 0.5f * (float)mn[j]);
        assert_true(y5[e] == (float)(sc[j] * (nib + hbit)) - 0.5f * (float)mn[j]);
    }
    assert_true(y4[64 * 1 + 0] == 63.0f * 0 - 31.5f);           /* sub-block 2: sc 63, mn 63 */
    assert_true(y4[64 * 3 + 32 + 1] == 60.0f * 14 - 31.0f);     /* sub-block 7 */
}

/* Pack 256 six-bit values v[] into a Q6_K block the way engine-facts §2 reads them. */
static void pack_q6_K(const uint8_t v[256], elpis_block_q6_K *b) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = v + 128 * h;
            b->ql[64 * h + l] = (uint8_t)((q[l] & 15) | (q[l + 64] & 15) << 4);
            b->ql[64 * h + 32 + l] = (uint8_t)((q[l + 32] & 15) | (q[l + 96] & 15) << 4);
            b->qh[32 * h + l] = (uint8_t)((q[l] >> 4) | (q[l + 32] >> 4) << 2 | (q[l + 64] >> 4) << 4 | (q[l + 96] >> 4) << 6);
        }
}

static void test_dequant_q6_K(void **state) {
    (void)state;
    uint8_t v[256];
    for (int e = 0; e < 256; e++) v[e] = (uint8_t)((e * 7 + 3) % 64);
    elpis_block_q6_K b = { .d = F16_HALF };
    pack_q6_K(v, &b);
    for (int k = 0; k < 16; k++) b.scales[k] = (int8_t)(k * 9 - 70);
    float y[256];
    elpis_dequantize_row(ELPIS_Q6_K, &b, y, 256);
    for (int e = 0; e < 256; e++) assert_true(y[e] == 0.5f * (float)b.scales[e / 16] * (float)(v[e] - 32));
    /* hand spot check: e=100 -> v=(703%64)=63, scale[6]=-16: 0.5*-16*31 */
    assert_true(y[100] == -248.0f);
}

static void test_dequant_float_types(void **state) {
    (void)state;
    /* every f16 bit pattern, against base's converter */
    static uint16_t all[65536];
    static float got[65536];
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    elpis_dequantize_row(ELPIS_F16, all, got, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        const float want = elpis_f16_to_f32((uint16_t)i);
        if (isnan(want)) assert_true(isnan(got[i]));
        else if (memcmp(&want, &got[i], 4) != 0) fail_msg("f16 %#x: %g != %g", i, got[i], want);
    }
    const uint16_t h[4] = { 0x3C00, 0xC000, 0x0001, 0x7BFF };   /* 1, -2, smallest subnormal, 65504 */
    const uint16_t bf[3] = { 0x3F80, 0xC040, 0x0000 };           /* 1, -3, 0 */
    const float f[2] = { 1.5f, -0.25f };
    float y[4];
    elpis_dequantize_row(ELPIS_F16, h, y, 4);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[2] == ldexpf(1.0f, -24) && y[3] == 65504.0f);
    elpis_dequantize_row(ELPIS_BF16, bf, y, 3);
    assert_true(y[0] == 1.0f && y[1] == -3.0f && y[2] == 0.0f);
    elpis_dequantize_row(ELPIS_F32, f, y, 2);
    assert_true(y[0] == 1.5f && y[1] == -0.25f);
    /* known-but-unsupported types must not produce plausible numbers */
    static float big[256];
    static uint8_t blk[110];
    elpis_dequantize_row(ELPIS_Q3_K, blk, big, 256);
    for (int i = 0; i < 256; i++) assert_true(isnan(big[i]));
}

/* ==== Activation quantizers ====================================================== */

static void test_quantize_q8_0_hand(void **state) {
    (void)state;
    float x[32] = { 0 };
    x[0] = 127.0f;   /* amax 127 -> d = 1 exactly: q = roundf(x) */
    x[1] = 2.5f;     /* ties go away from zero */
    x[2] = -2.5f;
    x[3] = 0.49f;
    x[4] = -126.5f;
    x[5] = 3.5f;
    elpis_block_q8_0 b;
    elpis_quantize_row(ELPIS_Q8_0, x, &b, 32);
    assert_int_equal(b.d, F16_ONE);
    assert_int_equal(b.qs[0], 127);
    assert_int_equal(b.qs[1], 3);
    assert_int_equal(b.qs[2], -3);
    assert_int_equal(b.qs[3], 0);
    assert_int_equal(b.qs[4], -127);
    assert_int_equal(b.qs[5], 4);
    for (int j = 6; j < 32; j++) assert_int_equal(b.qs[j], 0);
    /* An all-zero block quantizes to zeros with d = 0. */
    memset(x, 0, sizeof(x));
    elpis_quantize_row(ELPIS_Q8_0, x, &b, 32);
    assert_int_equal(b.d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(b.qs[j], 0);
}

static void test_quantize_q8_1_sum(void **state) {
    (void)state;
    float x[64];
    rand_acts(x, 64);
    elpis_block_q8_1 b[2];
    elpis_quantize_row(ELPIS_Q8_1, x, b, 64);
    for (int i = 0; i < 2; i++) {
        elpis_block_q8_0 ref;
        elpis_quantize_row(ELPIS_Q8_0, x + 32 * i, &ref, 32);
        assert_int_equal(b[i].d, ref.d);                 /* same d and q as Q8_0 */
        assert_memory_equal(b[i].qs, ref.qs, 32);
        const float d = elpis_f16_to_f32(b[i].d);
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += b[i].qs[j];
        const float s = elpis_f16_to_f32(b[i].s);
        assert_true(fabsf(s - d * (float)sum) <= fabsf(d * (float)sum) * 1e-3f + 1e-6f);
    }
}

static void test_quantize_q8_K_hand(void **state) {
    (void)state;
    float x[256] = { 0 };
    x[5] = -4.0f;            /* largest |x|, negative: iscale = -127/-4 = 31.75 */
    x[6] = 2.0f;             /* 63.5 -> 64 (half to even) */
    x[7] = -2.0f;            /* -63.5 -> -64 */
    x[8] = 4.0f / 31.75f * 2.5f;   /* ~2.5 */
    x[20] = 1.0f;            /* 31.75 -> 32 */
    x[255] = 0.5f;           /* 15.875 -> 16 */
    elpis_block_q8_K b;
    elpis_quantize_row(ELPIS_Q8_K, x, &b, 256);
    assert_true(b.d == 1.0f / 31.75f);
    assert_int_equal(b.qs[5], -127);
    assert_int_equal(b.qs[6], 64);
    assert_int_equal(b.qs[7], -64);
    assert_int_equal(b.qs[8], (int)lrintf(31.75f * x[8]));
    assert_int_equal(b.qs[20], 32);
    assert_int_equal(b.qs[255], 16);
    assert_int_equal(b.bsums[0], -127 + 64 - 64 + b.qs[8]);
    assert_int_equal(b.bsums[1], 32);
    assert_int_equal(b.bsums[15], 16);
    for (int k = 2; k < 15; k++) assert_int_equal(b.bsums[k], 0);

    /* Positive max: the sign flips (d < 0); first of equal magnitudes wins. */
    memset(x, 0, sizeof(x));
    x[0] = 4.0f;
    x[1] = -4.0f;
    x[2] = 2.0f;
    elpis_quantize_row(ELPIS_Q8_K, x, &b, 256);
    assert_true(b.d == -1.0f / 31.75f);
    assert_int_equal(b.qs[0], -127);
    assert_int_equal(b.qs[1], 127);
    assert_int_equal(b.qs[2], -64);
    assert_int_equal(b.bsums[0], -64);

    memset(x, 0, sizeof(x));
    elpis_quantize_row(ELPIS_Q8_K, x, &b, 256);
    assert_true(b.d == 0.0f);
    for (int k = 0; k < 16; k++) assert_int_equal(b.bsums[k], 0);
}

/* Round trip: |x - deq(q(x))| <= |d|/2 (+ the f16 rounding of d for Q8_0/Q8_1). */
static void test_quantize_roundtrip(void **state) {
    (void)state;
    const int64_t n = 1024;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    void *q = xmalloc(elpis_row_bytes(ELPIS_Q8_K, n) + elpis_row_bytes(ELPIS_F32, n));
    rand_acts(x, n);
    const elpis_dtype ts[] = { ELPIS_Q8_0, ELPIS_Q8_1, ELPIS_Q8_K, ELPIS_F16, ELPIS_BF16, ELPIS_F32 };
    for (size_t k = 0; k < sizeof(ts) / sizeof(ts[0]); k++) {
        elpis_quantize_row(ts[k], x, q, n);
        elpis_dequantize_row(ts[k], q, y, n);
        const int blck = elpis_type_info_of(ts[k])->blck;
        for (int64_t i0 = 0; i0 < n; i0 += (blck > 1 ? blck : 32)) {
            const int len = blck > 1 ? blck : 32;
            float amax = 0.0f;
            for (int j = 0; j < len; j++) amax = fmaxf(amax, fabsf(x[i0 + j]));
            for (int j = 0; j < len; j++) {
                const float xi = x[i0 + j], err = fabsf(xi - y[i0 + j]);
                float bound;
                switch (ts[k]) {
                case ELPIS_Q8_0: case ELPIS_Q8_1: bound = amax / 127.0f * 0.5f + amax * 1e-3f; break;
                case ELPIS_Q8_K: bound = amax / 127.0f * 0.5001f; break;
                case ELPIS_F16: bound = fabsf(xi) * 0x1p-11f + 0x1p-25f; break;
                case ELPIS_BF16: bound = fabsf(xi) * 0x1p-8f; break;
                default: bound = 0.0f; break;
                }
                if (err > bound) fail_msg("%s: x=%g back=%g err=%g > %g", elpis_type_info_of(ts[k])->name, xi, y[i0 + j], err, bound);
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

/* Every SIMD quantizer gives the portable bytes (ties included). */
static void test_quantize_paths_identical(void **state) {
    (void)state;
    const int64_t n = 2048 + 256;
    float *x = xmalloc(n * sizeof(float));
    const size_t cap = elpis_row_bytes(ELPIS_F32, n);
    uint8_t *a = xmalloc(cap), *b = xmalloc(cap);
    const elpis_kernels *ref = elpis_kernels_by_name("portable");
    for (int round = 0; round < 4; round++) {
        rand_acts(x, n);
        if (round == 1)   /* exact ties: 127 in every block makes d = 1, so x/d = k + 0.5 */
            for (int64_t i = 0; i < n; i++) x[i] = i % 32 == 0 ? 127.0f : (float)((int)(rnd() % 254) - 127) + 0.5f;
        if (round == 2) for (int64_t i = 0; i < 300; i++) x[i] = 0.0f;  /* zero blocks */
        if (round == 3) for (int64_t i = 0; i < n; i++) x[i] = ldexpf(frand(), -(int)(rnd() % 30)); /* f16 subnormals */
        for (int p = 1; p < N_PATHS; p++) {
            const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
            if (!k) continue;
            for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
                if (!ref->quantize[t]) continue;
                const size_t bytes = elpis_row_bytes(t, n);
                memset(a, 0xAA, cap);
                memset(b, 0x55, cap);
                ref->quantize[t](x, a, n);
                k->quantize[t](x, b, n);
                if (memcmp(a, b, bytes) != 0)
                    fail_msg("%s quantize %s differs from portable (round %d)", k->name, elpis_type_info_of(t)->name, round);
            }
        }
    }
    free(x);
    free(a);
    free(b);
}

/* ==== Dot kernels ================================================================== */

typedef struct {
    double ref;   /* double dot of the dequantized rows */
    double mag;   /* sum |x| * (|w| + |offset term|): the size errors scale with */
    double slack; /* absolute error the format itself allows (Q8_1's rounded s) */
} dot_ref;

/* Reference for weight row w (n elems) against activation row xq. */
static dot_ref reference_dot(elpis_dtype t, const void *w, const void *xq, int64_t n) {
    const elpis_type_info *ti = elpis_type_info_of(t);
    const size_t wbytes = elpis_row_bytes(t, n);
    float *wd = xmalloc(n * sizeof(float)), *wz = xmalloc(n * sizeof(float)), *xd = xmalloc(n * sizeof(float));
    void *wcopy = xmalloc(wbytes);
    elpis_dequantize_row(t, w, wd, n);
    memcpy(wcopy, w, wbytes);
    zero_quants(t, wcopy, n);
    if (t == ELPIS_F16 || t == ELPIS_BF16 || t == ELPIS_F32 || t == ELPIS_Q8_0) memset(wz, 0, n * sizeof(float));
    else elpis_dequantize_row(t, wcopy, wz, n);
    elpis_dequantize_row(ti->vec_dot_type, xq, xd, n);
    dot_ref r = { 0, 0, 0 };
    for (int64_t i = 0; i < n; i++) {
        r.ref += (double)wd[i] * (double)xd[i];
        r.mag += fabs((double)xd[i]) * (fabs((double)wd[i]) + fabs((double)wz[i]));
    }
    /* Q8_1 carries s = d*sum(q) rounded to f16, so the kernels' m*s term may
     * differ from m * sum(dequantized x) by 2^-11 relative. */
    if (ti->vec_dot_type == ELPIS_Q8_1) {
        for (int64_t b = 0; b < n / 32; b++) {
            const uint16_t m = t == ELPIS_Q4_1 ? ((const elpis_block_q4_1 *)w)[b].m : ((const elpis_block_q5_1 *)w)[b].m;
            r.slack += fabs((double)elpis_f16_to_f32(m) * elpis_f16_to_f32(((const elpis_block_q8_1 *)xq)[b].s)) * 0x1p-10;
        }
    }
    free(wd);
    free(wz);
    free(xd);
    free(wcopy);
    return r;
}

#define DOT_TOL 5e-7   /* relative to dot_ref.mag */

/* Row lengths worth testing for type t: every tail case of the pair/quad loops. */
static int test_lengths(elpis_dtype t, int64_t out[16]) {
    const int blck = elpis_type_info_of(t)->blck;
    int k = 0;
    if (blck == 1) {
        const int64_t ns[] = { 1, 7, 8, 15, 31, 33, 64, 100, 2048 + 13 };
        for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) out[k++] = ns[i];
    } else if (blck == 32) {
        for (int nb = 1; nb <= 9; nb++) out[k++] = 32 * nb;
        out[k++] = 2048;
    } else {
        for (int nb = 1; nb <= 3; nb++) out[k++] = 256 * nb;
        out[k++] = 2048;
    }
    return k;
}

static double g_worst[N_PATHS][ELPIS_DTYPE_MAX];   /* largest |err|/mag seen, for the log */

static void check_vec_dot_type(int p, const elpis_kernels *k, elpis_dtype t) {
    const elpis_type_info *ti = elpis_type_info_of(t);
    int64_t ns[16];
    const int nn = test_lengths(t, ns);
    for (int a = 0; a < nn; a++) {
        const int64_t n = ns[a];
        void *w = xmalloc(elpis_row_bytes(t, n));
        void *xq = xmalloc(elpis_row_bytes(ti->vec_dot_type, n));
        float *x = xmalloc(n * sizeof(float));
        for (int rep = 0; rep < 3; rep++) {
            rand_weights(t, w, n);
            rand_acts(x, n);
            elpis_quantize_row(ti->vec_dot_type, x, xq, n);   /* the reference quantizer */
            const dot_ref r = reference_dot(t, w, xq, n);
            float s = NAN;
            k->vec_dot[t](n, &s, 1, w, xq, 0, 1);
            const double err = fabs((double)s - r.ref);
            if (!(err <= DOT_TOL * r.mag + r.slack))
                fail_msg("%s vec_dot %s n=%lld: got %.9g want %.9g (err %.3g, mag %.3g)", k->name, ti->name,
                         (long long)n, s, r.ref, err, r.mag);
            if (r.mag > 0 && err / r.mag > g_worst[p][t]) g_worst[p][t] = err / r.mag;
        }
        free(w);
        free(xq);
        free(x);
    }
}

static void test_vec_dot_vs_reference(void **state) {
    (void)state;
    for (int p = 0; p < N_PATHS; p++) {
        const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
        if (!k) {
            print_message("  [ SKIP     ] path %s: not supported by this CPU\n", k_paths[p]);
            continue;
        }
        for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
            const elpis_type_info *ti = elpis_type_info_of(t);
            if (ti && ti->weight) check_vec_dot_type(p, k, (elpis_dtype)t);
        }
        if (getenv("ELPIS_TEST_VERBOSE"))
            for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++)
                if (g_worst[p][t] > 0) print_message("  %s %s worst err/mag %.2e\n", k->name, elpis_type_info_of(t)->name, g_worst[p][t]);
    }
}

/* A SIMD path against the portable one on the same data: both near the
 * reference, so they are near each other (sum order may differ). */
static void test_vec_dot_paths_agree(void **state) {
    (void)state;
    const elpis_kernels *ref = elpis_kernels_by_name("portable");
    const int64_t n = 4096;
    float *x = xmalloc(n * sizeof(float));
    void *w = xmalloc(elpis_row_bytes(ELPIS_F32, n)), *xq = xmalloc(elpis_row_bytes(ELPIS_F32, n));
    for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
        const elpis_type_info *ti = elpis_type_info_of(t);
        if (!ti || !ti->weight) continue;
        rand_weights(t, w, n);
        rand_acts(x, n);
        elpis_quantize_row(ti->vec_dot_type, x, xq, n);
        const dot_ref r = reference_dot(t, w, xq, n);
        float s0;
        ref->vec_dot[t](n, &s0, 1, w, xq, 0, 1);
        for (int p = 1; p < N_PATHS; p++) {
            const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
            if (!k) continue;
            float s1;
            k->vec_dot[t](n, &s1, 1, w, xq, 0, 1);
            if (!(fabs((double)s1 - s0) <= 2 * (DOT_TOL * r.mag + r.slack)))
                fail_msg("%s vs portable %s: %.9g vs %.9g", k->name, ti->name, s1, s0);
        }
    }
    free(x);
    free(w);
    free(xq);
}

/* nrc columns (strided activations and outputs) give the nrc==1 bits. */
static void check_nrc_invariance(const elpis_kernels *k, elpis_dtype t, int64_t n) {
    const elpis_type_info *ti = elpis_type_info_of(t);
    enum { MAXC = 9, BS = 3 };
    const size_t xrow = elpis_row_bytes(ti->vec_dot_type, n);
    const size_t bx = xrow + 40;          /* padded stride: rows are not packed */
    void *w = xmalloc(elpis_row_bytes(t, n));
    uint8_t *xs = xmalloc(bx * MAXC);
    float *x = xmalloc(n * sizeof(float));
    rand_weights(t, w, n);
    memset(xs, 0, bx * MAXC);
    for (int c = 0; c < MAXC; c++) {
        rand_acts(x, n);
        elpis_quantize_row(ti->vec_dot_type, x, xs + (size_t)c * bx, n);
    }
    float one[MAXC];
    for (int c = 0; c < MAXC; c++) k->vec_dot[t](n, &one[c], 1, w, xs + (size_t)c * bx, bx, 1);
    for (int nrc = 2; nrc <= MAXC; nrc++)
        for (int c0 = 0; c0 + nrc <= MAXC; c0 += nrc) {
            float s[MAXC * BS];
            for (int i = 0; i < MAXC * BS; i++) s[i] = NAN;
            k->vec_dot[t](n, s, BS, w, xs + (size_t)c0 * bx, bx, nrc);
            for (int c = 0; c < nrc; c++)
                if (memcmp(&s[c * BS], &one[c0 + c], sizeof(float)) != 0)
                    fail_msg("%s %s n=%lld nrc=%d col %d: %.9g != nrc=1 %.9g", k->name, ti->name, (long long)n,
                             nrc, c0 + c, s[c * BS], one[c0 + c]);
            for (int i = 0; i < nrc * BS; i++)           /* nothing written between the columns */
                if (i % BS) assert_true(isnan(s[i]));
        }
    free(w);
    free(xs);
    free(x);
}

static void test_vec_dot_nrc_invariance(void **state) {
    (void)state;
    for (int p = 0; p < N_PATHS; p++) {
        const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
        if (!k) continue;
        for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
            const elpis_type_info *ti = elpis_type_info_of(t);
            if (!ti || !ti->weight) continue;
            int64_t ns[16];
            const int nn = test_lengths((elpis_dtype)t, ns);
            for (int a = 0; a < nn; a++) check_nrc_invariance(k, (elpis_dtype)t, ns[a]);
        }
    }
}

/* Extreme values: weights at the ends of their range and activations at
 * +-127 must not overflow any s16/s32 step (a saturating maddubs would). */
static void test_vec_dot_extremes(void **state) {
    (void)state;
    const int64_t n = 2048;
    float *x = xmalloc(n * sizeof(float));
    void *w = xmalloc(elpis_row_bytes(ELPIS_F32, n)), *xq = xmalloc(elpis_row_bytes(ELPIS_F32, n));
    for (uint32_t t = 0; t < ELPIS_DTYPE_MAX; t++) {
        const elpis_type_info *ti = elpis_type_info_of(t);
        if (!ti || !ti->weight || ti->blck == 1) continue;
        for (int sign = -1; sign <= 1; sign += 2) {
            rand_weights((elpis_dtype)t, w, n);
            /* every quant bit set (max q), or all clear (min q) for the other sign */
            const size_t bytes = elpis_row_bytes((elpis_dtype)t, n);
            uint8_t *p = w;
            for (size_t i = 0; i < bytes; i++) p[i] = sign > 0 ? 0xFF : (t == ELPIS_Q8_0 ? 0x80 : 0x00);
            const int64_t nb = n / ti->blck;
            for (int64_t b = 0; b < nb; b++) {   /* sane scales; k-quant sub-scales at max */
                if (t == ELPIS_Q4_K) memset(((elpis_block_q4_K *)w)[b].scales, 0xFF, 12);
                if (t == ELPIS_Q5_K) memset(((elpis_block_q5_K *)w)[b].scales, 0xFF, 12);
                switch (t) {
                case ELPIS_Q4_0: ((elpis_block_q4_0 *)w)[b].d = F16_ONE; break;
                case ELPIS_Q4_1: ((elpis_block_q4_1 *)w)[b].d = F16_ONE; ((elpis_block_q4_1 *)w)[b].m = F16_HALF; break;
                case ELPIS_Q5_0: ((elpis_block_q5_0 *)w)[b].d = F16_ONE; break;
                case ELPIS_Q5_1: ((elpis_block_q5_1 *)w)[b].d = F16_ONE; ((elpis_block_q5_1 *)w)[b].m = F16_HALF; break;
                case ELPIS_Q8_0: ((elpis_block_q8_0 *)w)[b].d = F16_ONE; break;
                case ELPIS_Q4_K: ((elpis_block_q4_K *)w)[b].d = F16_ONE; ((elpis_block_q4_K *)w)[b].dmin = F16_HALF; break;
                case ELPIS_Q5_K: ((elpis_block_q5_K *)w)[b].d = F16_ONE; ((elpis_block_q5_K *)w)[b].dmin = F16_HALF; break;
                case ELPIS_Q6_K:
                    ((elpis_block_q6_K *)w)[b].d = F16_ONE;
                    for (int s = 0; s < 16; s++) ((elpis_block_q6_K *)w)[b].scales[s] = (int8_t)(sign > 0 ? 127 : -128);
                    break;
                default: break;
                }
            }
            for (int64_t i = 0; i < n; i++) x[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (float)sign;
            elpis_quantize_row(ti->vec_dot_type, x, xq, n);
            const dot_ref r = reference_dot((elpis_dtype)t, w, xq, n);
            for (int p2 = 0; p2 < N_PATHS; p2++) {
                const elpis_kernels *k = elpis_kernels_by_name(k_paths[p2]);
                if (!k) continue;
                float s;
                k->vec_dot[t](n, &s, 1, w, xq, 0, 1);
                if (!(fabs((double)s - r.ref) <= DOT_TOL * r.mag + r.slack))
                    fail_msg("%s %s extremes(sign %d): got %.9g want %.9g", k->name, ti->name, sign, s, r.ref);
            }
        }
    }
    free(x);
    free(w);
    free(xq);
}


/* ==== Packed 8-row groups (pack.c) ============================================= */

static const elpis_dtype k_packable[] = { ELPIS_Q8_0, ELPIS_Q4_0, ELPIS_Q4_K };

/* Activation value i of a converted row of type act (Q8_S or Q8_KS). */
static double act_value(elpis_dtype act, const void *row, int64_t i) {
    if (act == ELPIS_Q8_KS) {
        const elpis_block_q8_ks *b = (const elpis_block_q8_ks *)row + i / 256;
        return (double)b->qs[i % 256] * b->d;
    }
    const elpis_block_q8_s *b = (const elpis_block_q8_s *)row + i / 32;
    return (double)b->qs[i % 32] * b->d;
}

/* The documented layout, one element checked by hand per type. */
static void test_pack8_layout(void **state) {
    (void)state;
    const int64_t n = 64;
    elpis_block_q8_0 q8[8][2];
    memset(q8, 0, sizeof q8);
    q8[3][1].qs[6] = -5;            /* row 3, block 1, element 6 */
    q8[5][0].d = F16_TWO;
    elpis_block_q8_0x8 g8[2];
    elpis_pack8(ELPIS_Q8_0, q8, sizeof q8[0], n, g8);
    assert_int_equal(g8[1].qs[(6 / 4) * 32 + 3 * 4 + 6 % 4], 123);   /* -5 + 128 */
    assert_int_equal(g8[0].qs[0], 128);
    assert_int_equal(g8[0].d[5], F16_TWO);
    elpis_block_q4_0 q4[8][2];
    memset(q4, 0x88, sizeof q4);    /* every nibble 8 (weight 0) */
    q4[2][0].qs[5] = 0x83;          /* row 2: element 5 = 3, element 21 = 8 */
    q4[2][0].qs[6] = 0xF8;          /* element 22 = 15 */
    elpis_block_q4_0x8 g4[2];
    elpis_pack8(ELPIS_Q4_0, q4, sizeof q4[0], n, g4);
    /* element e of row r: chunk e/8, byte r*4 + e%4, high nibble when e/4 is odd */
    assert_int_equal(g4[0].qs[0 * 32 + 2 * 4 + 1] >> 4, 3);     /* element 5 */
    assert_int_equal(g4[0].qs[0 * 32 + 2 * 4 + 1] & 0x0F, 8);   /* element 1 */
    assert_int_equal(g4[0].qs[2 * 32 + 2 * 4 + 2] >> 4, 15);    /* element 22 */
    assert_int_equal(g4[0].qs[2 * 32 + 2 * 4 + 1] >> 4, 8);     /* element 21 */
}

/* pack then unpack = dequantize, exactly, for random rows (every int8 value
 * of Q8_0 included, -128 too). */
static void test_pack8_roundtrip(void **state) {
    (void)state;
    const int64_t n = 512;
    for (size_t ti = 0; ti < sizeof k_packable / sizeof k_packable[0]; ti++) {
        const elpis_dtype t = k_packable[ti];
        const size_t rb = elpis_row_bytes(t, n);
        uint8_t *rows = xmalloc(8 * rb), *g = xmalloc(elpis_pack8_bytes(t, n));
        float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
        for (int r = 0; r < 8; r++) rand_weights(t, rows + r * rb, n);
        elpis_pack8(t, rows, rb, n, g);
        for (int r = 0; r < 8; r++) {
            elpis_dequantize_row(t, rows + r * rb, a, n);
            elpis_unpack8_row(t, g, n, r, b);
            if (memcmp(a, b, n * sizeof(float)) != 0) fail_msg("%s: row %d differs after packing", elpis_type_info_of(t)->name, r);
        }
        free(rows);
        free(g);
        free(a);
        free(b);
    }
}

/* Every path's gemm8 gives the portable reference's bits for every column,
 * every nrc and every number of groups ng (the AVX-512 kernel pairs groups
 * into zmm and leaves an odd one to ymm): batch invariance. The reference
 * agrees with the double-precision dot of the dequantized rows. */
static void check_gemm8(elpis_dtype t, int64_t n) {
    enum { MAXC = 11, NG = 3, BS = 8 * NG + 1 };
    const elpis_dtype act = elpis_pack8_act(t);
    const size_t rb = elpis_row_bytes(t, n), bx = elpis_row_bytes(act, n) + 40, gb = elpis_pack8_bytes(t, n);
    uint8_t *rows = xmalloc(8 * NG * rb), *g = xmalloc(NG * gb), *xs = xmalloc(bx * MAXC);
    float *x = xmalloc(n * sizeof(float)), *wf = xmalloc(n * sizeof(float));
    for (int r = 0; r < 8 * NG; r++) rand_weights(t, rows + r * rb, n);
    for (int i = 0; i < NG; i++) elpis_pack8(t, rows + i * 8 * rb, rb, n, g + i * gb);
    for (int c = 0; c < MAXC; c++) {
        rand_acts(x, n);
        elpis_quantize_row(act, x, xs + (size_t)c * bx, n);
    }
    const elpis_kernels *ref = elpis_kernels_by_name("portable");
    static float want[MAXC][BS];
    ref->gemm8[t](n, &want[0][0], BS, g, NG, xs, bx, MAXC);
    for (int c = 0; c < MAXC; c++) {        /* the reference against double math */
        for (int r = 0; r < 8 * NG; r++) {
            elpis_dequantize_row(t, rows + r * rb, wf, n);
            double d = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                const double xv = act_value(act, xs + (size_t)c * bx, i);
                d += wf[i] * xv;
                mag += fabs(wf[i] * xv);
            }
            if (fabs(d - want[c][r]) > 1e-5 * mag + 1e-30)
                fail_msg("%s reference gemm8 n=%lld row %d col %d: %.9g vs %.9g", elpis_type_info_of(t)->name, (long long)n, r, c, want[c][r], d);
        }
    }
    for (int p = 0; p < N_PATHS; p++) {
        const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
        if (!k) continue;
        assert_non_null(k->gemm8[t]);
        for (int ng = 1; ng <= NG; ng++)
            for (int g0 = 0; g0 + ng <= NG; g0++)
                for (int nrc = 1; nrc <= MAXC; nrc++)
                    for (int c0 = 0; c0 + nrc <= MAXC; c0 += nrc) {
                        static float s[MAXC][BS];
                        for (int i = 0; i < MAXC * BS; i++) (&s[0][0])[i] = NAN;
                        k->gemm8[t](n, &s[0][0], BS, g + (size_t)g0 * gb, ng, xs + (size_t)c0 * bx, bx, nrc);
                        for (int c = 0; c < nrc; c++) {
                            if (memcmp(s[c], &want[c0 + c][8 * g0], 8 * ng * sizeof(float)) != 0)
                                fail_msg("%s gemm8 %s n=%lld groups %d+%d nrc=%d col %d differs from the reference", k->name,
                                         elpis_type_info_of(t)->name, (long long)n, g0, ng, nrc, c0 + c);
                            for (int i = 8 * ng; i < BS; i++) assert_true(isnan(s[c][i]));   /* nothing past the groups */
                        }
                    }
    }
    free(rows);
    free(g);
    free(xs);
    free(x);
    free(wf);
}

static void test_gemm8_paths(void **state) {
    (void)state;
    static const int64_t ns[] = { 32, 64, 96, 2048 }, nk[] = { 256, 512, 2048 };
    for (size_t ti = 0; ti < sizeof k_packable / sizeof k_packable[0]; ti++) {
        const bool k = k_packable[ti] == ELPIS_Q4_K;
        for (size_t a = 0; a < (k ? 3 : 4); a++) check_gemm8(k_packable[ti], k ? nk[a] : ns[a]);
    }
}

/* Weights and activations at the ends of their ranges: no int32 step overflows. */
static void test_gemm8_extremes(void **state) {
    (void)state;
    const int64_t n = 5632;
    const size_t rb = elpis_row_bytes(ELPIS_Q8_0, n), bx = elpis_row_bytes(ELPIS_Q8_S, n);
    uint8_t *rows = xmalloc(8 * rb), *g = xmalloc(8 * rb), *xs = xmalloc(bx);
    float *x = xmalloc(n * sizeof(float));
    for (int r = 0; r < 8; r++) {
        elpis_block_q8_0 *b = (elpis_block_q8_0 *)(rows + r * rb);
        for (int64_t i = 0; i < n / 32; i++) {
            b[i].d = F16_ONE;
            memset(b[i].qs, r % 2 ? 0x80 : 0x7F, 32);   /* -128 or 127 */
        }
    }
    for (int64_t i = 0; i < n; i++) x[i] = -1.0f;       /* every activation -127 */
    elpis_quantize_row(ELPIS_Q8_S, x, xs, n);
    elpis_pack8(ELPIS_Q8_0, rows, rb, n, g);
    for (int p = 0; p < N_PATHS; p++) {
        const elpis_kernels *k = elpis_kernels_by_name(k_paths[p]);
        if (!k) continue;
        float s[8];
        k->gemm8[ELPIS_Q8_0](n, s, 8, g, 1, xs, bx, 1);
        const float d = ((const elpis_block_q8_s *)xs)->d;
        for (int r = 0; r < 8; r++) {
            const double want = (double)n * (r % 2 ? -128 : 127) * -127 * d;
            if (fabs(s[r] - want) > 1e-5 * fabs(want)) fail_msg("%s row %d: %.9g vs %.9g", k->name, r, s[r], want);
        }
    }
    free(rows);
    free(g);
    free(xs);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_forces_path),     /* first: before any table init */
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_tables_complete),
        cmocka_unit_test(test_dequant_q4_0_nibble_order),
        cmocka_unit_test(test_dequant_q4_1),
        cmocka_unit_test(test_dequant_q5_high_bits),
        cmocka_unit_test(test_dequant_q8_0),
        cmocka_unit_test(test_k4_scales_roundtrip),
        cmocka_unit_test(test_dequant_q4_K_q5_K),
        cmocka_unit_test(test_dequant_q6_K),
        cmocka_unit_test(test_dequant_float_types),
        cmocka_unit_test(test_quantize_q8_0_hand),
        cmocka_unit_test(test_quantize_q8_1_sum),
        cmocka_unit_test(test_quantize_q8_K_hand),
        cmocka_unit_test(test_quantize_roundtrip),
        cmocka_unit_test(test_quantize_paths_identical),
        cmocka_unit_test(test_vec_dot_vs_reference),
        cmocka_unit_test(test_vec_dot_paths_agree),
        cmocka_unit_test(test_vec_dot_nrc_invariance),
        cmocka_unit_test(test_vec_dot_extremes),
        cmocka_unit_test(test_pack8_layout),
        cmocka_unit_test(test_pack8_roundtrip),
        cmocka_unit_test(test_gemm8_paths),
        cmocka_unit_test(test_gemm8_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
