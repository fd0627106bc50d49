/* test_wquant.c -- every weight quantizer round-trips through the engine's
 * dequantizer within the error its bit width allows. This pins the bit
 * layouts of wquant.c to those of quant.c (written independently from the
 * same facts), so a packing mistake on either side fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/wquant.h"

#include <math.h>
#include <stdlib.h>

static void roundtrip(elpis_dtype t, double rel_tol) {
    enum { N = 1024 };
    float x[N], y[N];
    unsigned s = 42;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1.0f + (i % 97) / 20.0f);
    }
    void *q = malloc(elpis_row_bytes(t, N));
    assert_non_null(q);
    elpis_wquant_row(t, x, q, N);
    elpis_dequantize_row(t, q, y, N);
    double err = 0, ref = 0;
    for (int i = 0; i < N; i++) { err += (x[i] - y[i]) * (x[i] - y[i]); ref += x[i] * x[i]; }
    double rel = sqrt(err / ref);
    if (rel > rel_tol) fail_msg("%s: relative RMS error %.4f > %.4f", elpis_type_info_of(t)->name, rel, rel_tol);
    free(q);
}

static void test_roundtrip(void **state) {
    (void)state;
    roundtrip(ELPIS_F32, 0);
    roundtrip(ELPIS_F16, 0.001);
    roundtrip(ELPIS_BF16, 0.005);
    roundtrip(ELPIS_Q8_0, 0.01);
    roundtrip(ELPIS_Q5_0, 0.06);
    roundtrip(ELPIS_Q5_1, 0.05);
    roundtrip(ELPIS_Q4_0, 0.12);
    roundtrip(ELPIS_Q4_1, 0.10);
    roundtrip(ELPIS_Q6_K, 0.04);
    roundtrip(ELPIS_Q5_K, 0.07);
    roundtrip(ELPIS_Q4_K, 0.14);
}

int main(void) {
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_roundtrip) };
    return cmocka_run_group_tests_name("wquant", tests, NULL, NULL);
}
