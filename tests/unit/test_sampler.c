/* test_sampler.c -- the sampler chain, its statistics and its limits.
 *
 * Every random draw here comes from a fixed seed, so the statistical tests are
 * deterministic: a chi-square statistic is compared with the 0.1% critical
 * value once, and the result never changes from run to run. Truncation tests
 * (top-k, top-p, min-p) compare sampled tokens with a reference computed the
 * slow way: a full qsort of the vocabulary in best-first order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "elpis/sampler.h"

/* ---- helpers -------------------------------------------------------------------- */

static uint64_t test_rng = 1;

static double uniform(void) { /* test-side LCG, independent of the sampler's PRNG */
    test_rng = test_rng * 6364136223846793005u + 1442695040888963407u;
    return (double)(test_rng >> 11) * 0x1.0p-53;
}

static float gauss(void) { /* Irwin-Hall approximation: good enough for logits */
    double s = 0;
    for (int i = 0; i < 12; i++) s += uniform();
    return (float)(s - 6.0);
}

static elpis_sampler_params plain(float temp) { /* temperature only, no truncation */
    elpis_sampler_params p = elpis_sampler_defaults();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static elpis_sampler *new_sampler(const elpis_sampler_params *p, int32_t n) {
    elpis_sampler *s = elpis_sampler_new(p, n);
    assert_non_null(s);
    return s;
}

/* Count `draws` samples of the same logits into hist[n]. */
static void histogram(elpis_sampler *s, const float *logits, int32_t n, int draws, long *hist) {
    memset(hist, 0, sizeof *hist * (size_t)n);
    for (int i = 0; i < draws; i++) {
        int32_t t = elpis_sampler_sample(s, logits);
        assert_true(t >= 0 && t < n);
        hist[t]++;
    }
}

/* Reference: ids sorted best first (value desc, id asc). */
static const float *sort_vals;
static int by_value_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_vals[i] != sort_vals[j]) return sort_vals[i] > sort_vals[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static int32_t *sorted_ids(const float *vals, int32_t n) {
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    assert_non_null(ids);
    for (int32_t i = 0; i < n; i++) ids[i] = i;
    sort_vals = vals;
    qsort(ids, (size_t)n, sizeof *ids, by_value_desc);
    return ids;
}

/* Reference probabilities softmax(logits / T) in double. */
static double *ref_probs(const float *logits, int32_t n, double temp) {
    double *p = malloc(sizeof *p * (size_t)n), max = -INFINITY, sum = 0;
    assert_non_null(p);
    for (int32_t i = 0; i < n; i++) max = fmax(max, logits[i] / temp);
    for (int32_t i = 0; i < n; i++) sum += p[i] = exp(logits[i] / temp - max);
    for (int32_t i = 0; i < n; i++) p[i] /= sum;
    return p;
}

/* in[i] = token i belongs to the reference nucleus for top_p (T = 1). One
 * token past the boundary is also allowed when the boundary is within float
 * rounding of top_p, so the test does not depend on summation order. */
static bool *ref_nucleus(const float *logits, int32_t n, double top_p) {
    double *p = ref_probs(logits, n, 1.0);
    float *pf = malloc(sizeof *pf * (size_t)n);
    bool *in = calloc((size_t)n, sizeof *in);
    assert_non_null(pf);
    assert_non_null(in);
    for (int32_t i = 0; i < n; i++) pf[i] = (float)p[i];
    int32_t *ids = sorted_ids(pf, n);
    double cum = 0;
    for (int32_t r = 0; r < n; r++) {
        in[ids[r]] = true;
        cum += p[ids[r]];
        if (cum >= top_p + 1e-6) break;
    }
    free(ids);
    free(pf);
    free(p);
    return in;
}

/* Pearson chi-square of observed counts against probabilities. */
static double chi_square(const long *hist, const double *p, int32_t n, long draws) {
    double x2 = 0;
    for (int32_t i = 0; i < n; i++) {
        double e = p[i] * (double)draws;
        x2 += (hist[i] - e) * (hist[i] - e) / e;
    }
    return x2;
}

/* ---- parameters ------------------------------------------------------------------- */

static void test_defaults(void **state) {
    (void)state;
    elpis_sampler_params p = elpis_sampler_defaults();
    assert_float_equal(p.temperature, 0.8f, 0);
    assert_int_equal(p.top_k, 40);
    assert_float_equal(p.top_p, 0.95f, 0);
    assert_float_equal(p.min_p, 0.05f, 0);
    assert_float_equal(p.repeat_penalty, 1.0f, 0);
    assert_int_equal(p.repeat_last_n, 64);
    assert_float_equal(p.presence_penalty, 0.0f, 0);
    assert_float_equal(p.frequency_penalty, 0.0f, 0);
    assert_true(p.seed == ELPIS_SAMPLER_DEFAULT_SEED);
    assert_int_equal(elpis_sampler_validate(&p, NULL), ELPIS_OK);
}

static void expect_invalid(elpis_sampler_params p, const char *field, const char *range) {
    elpis_error err = { 0 };
    assert_int_equal(elpis_sampler_validate(&p, &err), ELPIS_EINVAL);
    if (!strstr(err.msg, field) || !strstr(err.msg, range)) fail_msg("message lacks %s/%s: %s", field, range, err.msg);
    assert_null(elpis_sampler_new(&p, 100)); /* new() refuses what validate() refuses */
}

static void test_validate(void **state) {
    (void)state;
    elpis_sampler_params d = elpis_sampler_defaults(), p;
    p = d; p.top_p = 1.5f;            expect_invalid(p, "top_p", "[0, 1]");
    p = d; p.top_p = NAN;             expect_invalid(p, "top_p", "[0, 1]");
    p = d; p.temperature = -0.5f;     expect_invalid(p, "temperature", "[0, 100]");
    p = d; p.temperature = NAN;       expect_invalid(p, "temperature", "[0, 100]");
    p = d; p.top_k = -1;              expect_invalid(p, "top_k", "[0, ");
    p = d; p.min_p = 1.01f;           expect_invalid(p, "min_p", "[0, 1]");
    p = d; p.repeat_penalty = 0.0f;   expect_invalid(p, "repeat_penalty", "(0, 100]");
    p = d; p.repeat_last_n = -1;      expect_invalid(p, "repeat_last_n", "[0, ");
    p = d; p.presence_penalty = 1e9f; expect_invalid(p, "presence_penalty", "[-100, 100]");
    p = d; p.frequency_penalty = -INFINITY; expect_invalid(p, "frequency_penalty", "[-100, 100]");
    assert_int_equal(elpis_sampler_validate(NULL, NULL), ELPIS_EINVAL);
    assert_null(elpis_sampler_new(&d, 0));
    assert_null(elpis_sampler_new(NULL, 10));
    elpis_sampler_free(NULL);
    /* The edges are allowed. */
    p = d; p.temperature = 0; p.top_p = 0; p.min_p = 1; p.top_k = 0; p.repeat_last_n = 0;
    assert_int_equal(elpis_sampler_validate(&p, NULL), ELPIS_OK);
}

/* ---- softmax and argmax ----------------------------------------------------------- */

static void test_softmax_argmax(void **state) {
    (void)state;
    float x[] = { 1000.0f, 1001.0f, 999.0f }; /* no overflow: max is subtracted */
    elpis_softmax(x, 3);
    double e = exp(1.0) + 1 + exp(-1.0);
    assert_float_equal(x[0], 1 / e, 1e-6);
    assert_float_equal(x[1], exp(1.0) / e, 1e-6);
    assert_float_equal(x[2], exp(-1.0) / e, 1e-6);

    float inf[] = { 1.0f, INFINITY, NAN, INFINITY };
    elpis_softmax(inf, 4);
    assert_float_equal(inf[0], 0, 0);
    assert_float_equal(inf[1], 0.5f, 0);
    assert_float_equal(inf[2], 0, 0);
    float neg[] = { -INFINITY, -INFINITY };
    elpis_softmax(neg, 2);
    assert_float_equal(neg[0], 0.5f, 0);
    float nan1[] = { NAN, 0.0f };
    elpis_softmax(nan1, 2);
    assert_float_equal(nan1[0], 0, 0);
    assert_float_equal(nan1[1], 1, 0);
    elpis_softmax(NULL, 0);

    const float a[] = { 1, 3, 2, 3 };
    assert_int_equal(elpis_argmax(a, 4), 1); /* lowest index on ties */
    const float b[] = { NAN, -INFINITY, NAN };
    assert_int_equal(elpis_argmax(b, 3), 1);
    const float c[] = { NAN, NAN };
    assert_int_equal(elpis_argmax(c, 2), 0);
    assert_int_equal(elpis_argmax(a, 0), -1);
}

/* ---- greedy ------------------------------------------------------------------------ */

static void test_greedy(void **state) {
    (void)state;
    enum { N = 5000 };
    float *l = malloc(sizeof *l * N);
    assert_non_null(l);
    elpis_sampler_params p = elpis_sampler_defaults();
    p.temperature = 0;
    elpis_sampler *s = new_sampler(&p, N);
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) l[i] = gauss() * 3;
        assert_int_equal(elpis_sampler_sample(s, l), elpis_argmax(l, N));
    }
    for (int i = 0; i < N; i++) l[i] = 0;
    l[77] = l[4000] = l[123] = 5.0f; /* ties: the lowest id */
    assert_int_equal(elpis_sampler_sample(s, l), 77);
    l[10] = NAN; /* NaN is never the answer */
    assert_int_equal(elpis_sampler_sample(s, l), 77);
    elpis_sampler_free(s);
    free(l);
}

static void test_top_k1_is_greedy(void **state) {
    (void)state;
    enum { N = 3000 };
    float l[N];
    const float temps[] = { 0.05f, 0.7f, 1.0f, 5.0f, 100.0f };
    for (size_t t = 0; t < ELPIS_ARRAY_LEN(temps); t++) {
        elpis_sampler_params p = plain(temps[t]);
        p.top_k = 1;
        elpis_sampler *s = new_sampler(&p, N);
        for (int round = 0; round < 10; round++) {
            for (int i = 0; i < N; i++) l[i] = gauss();
            if (round & 1) l[2500] = l[1200] = 9.0f; /* a tie at the top */
            assert_int_equal(elpis_sampler_sample(s, l), elpis_argmax(l, N));
        }
        elpis_sampler_free(s);
    }
}

/* ---- reproducibility -------------------------------------------------------------- */

static void run_sequence(uint64_t seed, int32_t *out, int steps) {
    enum { N = 2000 };
    float l[N];
    elpis_sampler_params p = elpis_sampler_defaults();
    p.seed = seed;
    p.temperature = 1.2f;
    p.top_k = 200;
    p.repeat_penalty = 1.1f;
    elpis_sampler *s = new_sampler(&p, N);
    test_rng = 42; /* same logits sequence for every seed */
    for (int k = 0; k < steps; k++) {
        for (int i = 0; i < N; i++) l[i] = gauss();
        out[k] = elpis_sampler_sample(s, l);
        elpis_sampler_accept(s, out[k]);
    }
    elpis_sampler_free(s);
}

static void test_reproducible(void **state) {
    (void)state;
    enum { STEPS = 300 };
    int32_t a[STEPS], b[STEPS], c[STEPS];
    run_sequence(1234, a, STEPS);
    run_sequence(1234, b, STEPS);
    run_sequence(1235, c, STEPS);
    assert_memory_equal(a, b, sizeof a);
    int differ = 0;
    for (int i = 0; i < STEPS; i++) differ += a[i] != c[i];
    assert_true(differ > STEPS / 2);
}

static void test_reset_replays(void **state) {
    (void)state;
    enum { N = 50, STEPS = 100 };
    float l[N];
    int32_t first[STEPS];
    for (int i = 0; i < N; i++) l[i] = gauss();
    elpis_sampler_params p = plain(1.0f);
    p.repeat_penalty = 1.3f;
    elpis_sampler *s = new_sampler(&p, N);
    for (int k = 0; k < STEPS; k++) elpis_sampler_accept(s, first[k] = elpis_sampler_sample(s, l));
    elpis_sampler_reset(s);
    for (int k = 0; k < STEPS; k++) {
        int32_t t = elpis_sampler_sample(s, l);
        assert_int_equal(t, first[k]);
        elpis_sampler_accept(s, t);
    }
    elpis_sampler_free(s);
}

static void test_logits_untouched(void **state) {
    (void)state;
    enum { N = 1000 };
    float l[N], copy[N];
    for (int i = 0; i < N; i++) copy[i] = l[i] = gauss();
    elpis_sampler_params p = elpis_sampler_defaults();
    p.repeat_penalty = 1.5f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.5f;
    elpis_sampler *s = new_sampler(&p, N);
    for (int i = 0; i < 64; i++) elpis_sampler_accept(s, i * 7);
    for (int k = 0; k < 10; k++) elpis_sampler_sample(s, l);
    assert_memory_equal(l, copy, sizeof l);
    elpis_sampler_free(s);
}

/* ---- distribution ------------------------------------------------------------------- */

static void check_distribution(float temp) {
    enum { N = 8, DRAWS = 200000 };
    const float l[N] = { 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.2f, -0.3f };
    long hist[N];
    elpis_sampler_params p = plain(temp);
    p.seed = 99;
    elpis_sampler *s = new_sampler(&p, N);
    histogram(s, l, N, DRAWS, hist);
    double *ref = ref_probs(l, N, temp);
    double x2 = chi_square(hist, ref, N, DRAWS);
    /* 7 degrees of freedom: P(X2 > 24.32) = 0.001 for a correct sampler. */
    if (x2 > 24.32) fail_msg("T=%g: chi-square %.2f > 24.32", (double)temp, x2);
    free(ref);
    elpis_sampler_free(s);
}

static void test_distribution_matches_softmax(void **state) {
    (void)state;
    check_distribution(1.0f);
    check_distribution(0.7f);
    check_distribution(2.5f);
}

/* ---- truncation ----------------------------------------------------------------------- */

static void test_top_p_minimal_nucleus(void **state) {
    (void)state;
    enum { N = 5, DRAWS = 30000 };
    /* Probabilities 0.4 0.3 0.2 0.06 0.04 at shuffled ids. With top_p 0.85 the
     * nucleus is {0.4, 0.3, 0.2}: 0.7 < 0.85 <= 0.9. */
    const int32_t at[N] = { 3, 0, 4, 1, 2 };
    const double pr[N] = { 0.4, 0.3, 0.2, 0.06, 0.04 };
    float l[N];
    for (int r = 0; r < N; r++) l[at[r]] = logf((float)pr[r]);
    elpis_sampler_params p = plain(1.0f);
    p.top_p = 0.85f;
    elpis_sampler *s = new_sampler(&p, N);
    long hist[N];
    histogram(s, l, N, DRAWS, hist);
    assert_int_equal(hist[at[3]], 0);
    assert_int_equal(hist[at[4]], 0);
    const long obs[3] = { hist[at[0]], hist[at[1]], hist[at[2]] };
    const double want[3] = { 4 / 9.0, 3 / 9.0, 2 / 9.0 }; /* renormalised nucleus */
    double x2 = chi_square(obs, want, 3, DRAWS);
    if (x2 > 13.82) fail_msg("nucleus chi-square %.2f > 13.82 (2 dof, 0.1%%)", x2);
    elpis_sampler_free(s);

    p.top_p = 0.0f; /* degenerate: only the best token */
    s = new_sampler(&p, N);
    histogram(s, l, N, 1000, hist);
    assert_int_equal(hist[at[0]], 1000);
    elpis_sampler_free(s);
}

/* Sample many times and require every token to be in the reference nucleus. */
static void check_nucleus(const float *l, int32_t n, float top_p, int draws, uint64_t seed) {
    bool *in = ref_nucleus(l, n, top_p);
    elpis_sampler_params p = plain(1.0f);
    p.top_p = top_p;
    p.seed = seed;
    elpis_sampler *s = new_sampler(&p, n);
    for (int k = 0; k < draws; k++) {
        int32_t t = elpis_sampler_sample(s, l);
        if (t < 0 || t >= n || !in[t]) fail_msg("n=%d top_p=%g: token %d is outside the nucleus", n, (double)top_p, t);
    }
    elpis_sampler_free(s);
    free(in);
}

static void test_top_p_large_vocab(void **state) {
    (void)state;
    enum { N = 200000 };
    float *l = malloc(sizeof *l * N);
    assert_non_null(l);
    test_rng = 7;
    for (int i = 0; i < N; i++) l[i] = gauss() * 2.5f; /* a nucleus of thousands */
    check_nucleus(l, N, 0.9f, 300, 1);
    for (int i = 0; i < N; i++) l[i] = gauss() * 8.0f; /* a peaked one */
    check_nucleus(l, N, 0.95f, 300, 2);
    for (int i = 0; i < N; i++) l[i] = (float)i / N * 10; /* sorted ascending */
    check_nucleus(l, N, 0.7f, 100, 3);
    for (int i = 0; i < N; i++) l[i] = (float)(N - i) / N * 10; /* sorted descending */
    check_nucleus(l, N, 0.7f, 100, 4);
    for (int i = 0; i < N; i++) l[i] = (float)(i % 7); /* many exact ties */
    check_nucleus(l, N, 0.5f, 100, 5);
    free(l);
}

static void test_top_p_flat(void **state) {
    (void)state;
    /* 1000 equal logits: ties go to the lowest ids, so top_p 0.5005 keeps
     * exactly ids 0..500 (500 * 0.001 < 0.5005 <= 501 * 0.001). */
    enum { N = 1000, DRAWS = 40000 };
    float l[N] = { 0 };
    elpis_sampler_params p = plain(1.0f);
    p.top_p = 0.5005f;
    elpis_sampler *s = new_sampler(&p, N);
    long hist[N];
    histogram(s, l, N, DRAWS, hist);
    for (int i = 501; i < N; i++) assert_int_equal(hist[i], 0);
    for (int i = 0; i <= 500; i++) assert_true(hist[i] > 0);
    elpis_sampler_free(s);
}

static void test_top_k_large_vocab(void **state) {
    (void)state;
    enum { N = 256000, K = 40 };
    float *l = malloc(sizeof *l * N);
    bool *in = calloc(N, sizeof *in);
    assert_non_null(l);
    assert_non_null(in);
    test_rng = 11;
    for (int i = 0; i < N; i++) l[i] = gauss();
    int32_t *ids = sorted_ids(l, N);
    for (int r = 0; r < K; r++) in[ids[r]] = true;
    elpis_sampler_params p = plain(3.0f); /* hot, so the tail would show up */
    p.top_k = K;
    elpis_sampler *s = new_sampler(&p, N);
    int seen = 0;
    bool *hit = calloc(N, sizeof *hit);
    assert_non_null(hit);
    for (int k = 0; k < 2000; k++) {
        int32_t t = elpis_sampler_sample(s, l);
        assert_true(in[t]);
        seen += !hit[t];
        hit[t] = true;
    }
    assert_true(seen > K / 2); /* and it does sample across the k */
    elpis_sampler_free(s);
    free(hit);
    free(ids);
    free(in);
    free(l);
}

static void test_min_p(void **state) {
    (void)state;
    enum { N = 5, DRAWS = 20000 };
    /* p_max 0.5, min_p 0.15: cut 0.075 keeps 0.5 0.3 0.1, drops 0.06 0.04. */
    const float pr[N] = { 0.06f, 0.5f, 0.04f, 0.3f, 0.1f };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = logf(pr[i]);
    elpis_sampler_params p = plain(1.0f);
    p.min_p = 0.15f;
    elpis_sampler *s = new_sampler(&p, N);
    long hist[N];
    histogram(s, l, N, DRAWS, hist);
    assert_int_equal(hist[0], 0);
    assert_int_equal(hist[2], 0);
    assert_true(hist[1] > 0 && hist[3] > 0 && hist[4] > 0);
    assert_true(hist[1] > hist[3] && hist[3] > hist[4]);
    elpis_sampler_free(s);

    p.min_p = 1.0f; /* only the best */
    s = new_sampler(&p, N);
    histogram(s, l, N, 500, hist);
    assert_int_equal(hist[1], 500);
    elpis_sampler_free(s);
}

/* ---- penalties ------------------------------------------------------------------------- */

static int32_t greedy_after(elpis_sampler_params p, const float *l, int32_t n, const int32_t *hist, int nh) {
    p.temperature = 0;
    elpis_sampler *s = new_sampler(&p, n);
    for (int i = 0; i < nh; i++) elpis_sampler_accept(s, hist[i]);
    int32_t t = elpis_sampler_sample(s, l);
    elpis_sampler_free(s);
    return t;
}

static void test_repeat_penalty(void **state) {
    (void)state;
    elpis_sampler_params p = elpis_sampler_defaults();
    const int32_t once[] = { 0 };
    /* Positive logit divided: 2.0 / 1.1 = 1.82 < 1.9. */
    const float pos[] = { 2.0f, 1.9f, -3.0f };
    assert_int_equal(greedy_after(p, pos, 3, once, 1), 0); /* penalty 1 = off */
    p.repeat_penalty = 1.1f;
    assert_int_equal(greedy_after(p, pos, 3, once, 1), 1);
    /* Negative logit multiplied: -1.0 * 1.1 = -1.1 < -1.05. */
    const float neg[] = { -1.0f, -1.05f, -3.0f };
    assert_int_equal(greedy_after(p, neg, 3, once, 1), 1);
    /* Applied once per distinct token, however often it occurs. */
    const int32_t thrice[] = { 0, 0, 0 };
    const float close[] = { 2.0f, 1.5f };
    assert_int_equal(greedy_after(p, close, 2, thrice, 3), 0); /* 1.82 > 1.5 */
    /* Outside the window, no penalty: last_n 2 forgets the first token. */
    p.repeat_last_n = 2;
    const int32_t old[] = { 0, 2, 2 };
    assert_int_equal(greedy_after(p, pos, 3, old, 3), 0);
    p.repeat_last_n = 0; /* no window at all */
    assert_int_equal(greedy_after(p, pos, 3, once, 1), 0);
    /* Ids outside the vocabulary are ignored by accept(). */
    p.repeat_last_n = 64;
    const int32_t junk[] = { -1, 3, 1000 };
    assert_int_equal(greedy_after(p, pos, 3, junk, 3), 0);
}

static void test_presence_frequency(void **state) {
    (void)state;
    const float l[] = { 2.0f, 1.5f, 0.0f };
    const int32_t once[] = { 0 }, thrice[] = { 0, 2, 0, 0 };
    elpis_sampler_params p = elpis_sampler_defaults();
    p.presence_penalty = 0.4f; /* 1.6 > 1.5 */
    assert_int_equal(greedy_after(p, l, 3, once, 1), 0);
    p.presence_penalty = 0.6f; /* 1.4 < 1.5 */
    assert_int_equal(greedy_after(p, l, 3, once, 1), 1);
    p.presence_penalty = 0;
    p.frequency_penalty = 0.2f; /* once: 1.8; three times: 1.4 */
    assert_int_equal(greedy_after(p, l, 3, once, 1), 0);
    assert_int_equal(greedy_after(p, l, 3, thrice, 4), 1);
    p.frequency_penalty = -1.0f; /* a negative penalty encourages repeats */
    const float l2[] = { 1.0f, 1.5f };
    assert_int_equal(greedy_after(p, l2, 2, once, 1), 0);
}

static void test_reset_clears_history(void **state) {
    (void)state;
    const float l[] = { 2.0f, 1.9f };
    elpis_sampler_params p = elpis_sampler_defaults();
    p.temperature = 0;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    elpis_sampler *s = new_sampler(&p, 2);
    for (int i = 0; i < 10; i++) elpis_sampler_accept(s, 0); /* wraps the ring */
    assert_int_equal(elpis_sampler_sample(s, l), 1);
    elpis_sampler_reset(s);
    assert_int_equal(elpis_sampler_sample(s, l), 0);
    for (int i = 0; i < 4; i++) elpis_sampler_accept(s, 1); /* the window now holds only 1s */
    assert_int_equal(elpis_sampler_sample(s, l), 0);
    elpis_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_softmax_argmax),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k1_is_greedy),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_reset_replays),
        cmocka_unit_test(test_logits_untouched),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_top_p_minimal_nucleus),
        cmocka_unit_test(test_top_p_large_vocab),
        cmocka_unit_test(test_top_p_flat),
        cmocka_unit_test(test_top_k_large_vocab),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_repeat_penalty),
        cmocka_unit_test(test_presence_frequency),
        cmocka_unit_test(test_reset_clears_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
