/* kernels.c -- matmul kernel micro-benchmark (not a test).
 *
 *   build/bench_kernels [ROWS] [COLS] [N_IN] [REPS]     (default 2048 128 2048 20)
 *
 * One thread, random Q8_0, Q4_0 and Q4_K weights: ROWS x N_IN against COLS
 * activation columns, computed two ways,
 *   - vec_dot: one weight row at a time against max_nrc columns (the
 *     unpacked path of forward.c), and
 *   - gemm8: packed 8-row groups against all columns (the packed path),
 * and for COLS = 1 (decode). Prints the MINIMUM time over REPS runs (the
 * least disturbed run on a shared machine) and multiply-accumulates per
 * second. Kernels: elpis_kernels_get() (ELPIS_KERNELS forces a path).
 */
#include "elpis/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Random quants, sane scales. */
static void fill_weights(elpis_dtype t, uint8_t *w, int64_t rows, int64_t n) {
    const size_t rb = elpis_row_bytes(t, n), bb = elpis_type_info_of(t)->bytes;
    for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)rnd();
    for (size_t off = 0; off < rb * (size_t)rows; off += bb) {
        const uint16_t d[2] = { elpis_f32_to_f16(0.001f * (1 + rnd() % 100)), elpis_f32_to_f16(0.001f * (1 + rnd() % 100)) };
        memcpy(w + off, d, t == ELPIS_Q4_K ? 4 : 2);   /* d (and Q4_K's dmin) lead every block */
    }
}

typedef struct run {
    elpis_dtype t;
    int64_t rows, cols, n;
    const uint8_t *w, *packed, *xq, *xs;
    size_t xq_stride, xs_stride;
    float *y;
} run;

static void run_vec_dot(const run *r, const elpis_kernels *k) {
    const size_t rb = elpis_row_bytes(r->t, r->n);
    const int nrc_max = k->max_nrc > 0 ? k->max_nrc : 1;
    for (int64_t t0 = 0; t0 < r->rows; t0 += 4)
        for (int64_t b = 0; b < r->cols; b += nrc_max) {
            const int nrc = (int)(r->cols - b < nrc_max ? r->cols - b : nrc_max);
            for (int64_t row = t0; row < t0 + 4 && row < r->rows; row++)
                k->vec_dot[r->t](r->n, r->y + b * r->rows + row, (size_t)r->rows, r->w + row * rb,
                                 r->xq + b * r->xq_stride, r->xq_stride, nrc);
        }
}

static void run_gemm8(const run *r, const elpis_kernels *k) {
    k->gemm8[r->t](r->n, r->y, (size_t)r->rows, r->packed, r->rows / 8, r->xs, r->xs_stride, (int)r->cols);
}

static double best_of(int reps, void (*fn)(const run *, const elpis_kernels *), const run *r, const elpis_kernels *k) {
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        const double t0 = now_s();
        fn(r, k);
        const double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

static int bench_type(elpis_dtype t, int64_t rows, int64_t cols, int64_t n, int reps) {
    const elpis_kernels *k = elpis_kernels_get();
    const size_t rb = elpis_row_bytes(t, n);
    run r = { .t = t, .rows = rows, .cols = cols, .n = n };
    const elpis_dtype vdt = elpis_type_info_of(t)->vec_dot_type, act = elpis_pack8_act(t);
    const size_t gb = elpis_pack8_bytes(t, n);
    r.xq_stride = elpis_row_bytes(vdt, n);
    r.xs_stride = elpis_row_bytes(act, n);
    uint8_t *w = malloc(rb * rows), *p = malloc(gb * (rows / 8)), *xq = malloc(r.xq_stride * cols), *xs = malloc(r.xs_stride * cols);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * rows * cols);
    if (!w || !p || !xq || !xs || !x || !y) { fprintf(stderr, "out of memory\n"); return 1; }
    fill_weights(t, w, rows, n);
    for (int64_t g = 0; g < rows / 8; g++) elpis_pack8(t, w + g * 8 * rb, rb, n, p + g * gb);
    for (int64_t c = 0; c < cols; c++) {
        for (int64_t i = 0; i < n; i++) x[i] = (float)(int)(rnd() % 2001 - 1000) / 1000.0f;
        k->quantize[vdt](x, xq + c * r.xq_stride, n);
        k->quantize[act](x, xs + c * r.xs_stride, n);
    }
    r.w = w; r.packed = p; r.xq = xq; r.xs = xs; r.y = y;
    const double macs = (double)rows * cols * n;
    const double tv = best_of(reps, run_vec_dot, &r, k), tg = best_of(reps, run_gemm8, &r, k);
    printf("%-5s %-7s rows=%lld cols=%lld n=%lld  vec_dot %8.3f ms %6.1f GMAC/s   gemm8 %8.3f ms %6.1f GMAC/s   x%.2f\n",
           elpis_type_info_of(t)->name, k->name, (long long)rows, (long long)cols, (long long)n, tv * 1e3,
           macs / tv * 1e-9, tg * 1e3, macs / tg * 1e-9, tv / tg);
    free(w); free(p); free(xq); free(xs); free(x); free(y);
    return 0;
}

int main(int argc, char **argv) {
    const int64_t rows = argc > 1 ? atoll(argv[1]) : 2048, cols = argc > 2 ? atoll(argv[2]) : 128;
    const int64_t n = argc > 3 ? atoll(argv[3]) : 2048;
    const int reps = argc > 4 ? atoi(argv[4]) : 20;
    if (rows <= 0 || rows % 8 || cols <= 0 || n <= 0 || n % 32 || reps <= 0) {
        fprintf(stderr, "usage: bench_kernels [ROWS (multiple of 8)] [COLS] [N_IN (multiple of 32)] [REPS]\n");
        return 2;
    }
    static const elpis_dtype types[] = { ELPIS_Q8_0, ELPIS_Q4_0, ELPIS_Q4_K };
    int rc = 0;
    for (int i = 0; i < 3; i++)
        if (n % elpis_type_info_of(types[i])->blck == 0) rc |= bench_type(types[i], rows, cols, n, reps);
    for (int i = 0; i < 3 && cols > 1; i++)
        if (n % elpis_type_info_of(types[i])->blck == 0) rc |= bench_type(types[i], rows, 1, n, reps);
    return rc;
}
