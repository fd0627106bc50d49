/* test_oracle.c -- the forward pass against llama.cpp and exact math.
 *
 * For every model in shared/testdata/oracle and both of its references, the
 * protocol of that folder's README:
 *   1. evaluate tokens + steps[0..6].token teacher-forced, logits everywhere;
 *   2. exact path vs X.exact.jsonl: every listed [id, p] with p >= 0.01 within
 *      0.002;
 *   3. fast path vs X.oracle.jsonl and X.exact.jsonl: within the type's
 *      tolerance (0.003 F32/F16, 0.015 BF16, 0.12 quantized), and the most
 *      likely token agrees unless the reference's top two are within that
 *      tolerance of each other.
 * The kernel path under test is whatever elpis_kernels_get() picks; ctest runs
 * this file once per path with ELPIS_KERNELS forced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct oracle_case {
    const char *model;
    double fast_tol;
} oracle_case;

static const oracle_case cases[] = {
    { "tiny-llama-f32", 0.003 },  { "tiny-llama-f16", 0.003 },   { "tiny-llama3-q8_0", 0.12 },
    { "tiny-qwen2-q4_0", 0.12 },  { "tiny-llama-q4_k_m", 0.12 },
};

static const char *shared_dir(void) {
    const char *s = getenv("ELPIS_SHARED");
    return s ? s : "../shared";
}

/* Probabilities (double) of every vocab entry at one output row. */
static void softmax_row(const float *logits, int n, double *out) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += out[i] = exp((double)logits[i] - mx);
    for (int i = 0; i < n; i++) out[i] /= sum;
}

typedef struct run {
    elpis_model *m;
    int n_rows;         /* positions evaluated */
    double *probs;      /* [n_rows][n_vocab] */
} run;

/* Evaluate ids teacher-forced on a fresh context, keep all probabilities. */
static void eval_ids(run *r, const int32_t *ids, int n, bool exact) {
    elpis_error err = { 0 };
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = n;
    p.n_batch = n;
    p.n_outputs = n;
    p.n_threads = 2;
    p.exact = exact;
    elpis_ctx *ctx = NULL;
    assert_int_equal(elpis_ctx_new(&ctx, r->m, &p, &err), ELPIS_OK);
    int32_t pos[64], seq[64] = { 0 };
    bool want[64];
    for (int i = 0; i < n; i++) { pos[i] = i; want[i] = true; }
    elpis_batch b = { .n = n, .token = ids, .pos = pos, .seq = seq, .logits = want };
    if (elpis_forward(ctx, &b, &err) != ELPIS_OK) fail_msg("forward: %s", err.msg);
    const int V = r->m->hp.n_vocab;
    r->n_rows = n;
    r->probs = realloc(r->probs, (size_t)n * V * sizeof(double));
    assert_non_null(r->probs);
    for (int i = 0; i < n; i++) softmax_row(elpis_ctx_logits(ctx, i), V, r->probs + (size_t)i * V);
    elpis_ctx_free(ctx);
}

typedef struct cmp_stats { double max_dp; int steps, top_agree, top_checked; } cmp_stats;

/* Compare one reference line's steps with the run. min_p: only listed entries
 * with p >= min_p are checked (0 = all). */
static void compare_steps(const char *what, const run *r, json_t *steps, int first_row, double tol, double min_p,
                          bool check_top, cmp_stats *st) {
    const int V = r->m->hp.n_vocab;
    size_t j;
    json_t *step;
    json_array_foreach(steps, j, step) {
        const double *pr = r->probs + (size_t)(first_row + (int)j) * V;
        json_t *top = json_object_get(step, "top");
        size_t k;
        json_t *pair;
        json_array_foreach(top, k, pair) {
            int id = (int)json_integer_value(json_array_get(pair, 0));
            double p = json_number_value(json_array_get(pair, 1));
            if (p < min_p) continue;
            double dp = fabs(pr[id] - p);
            if (dp > st->max_dp) st->max_dp = dp;
            if (dp > tol) fail_msg("%s step %zu: token %d p=%.6f, reference %.6f (|dp| %.4f > %.4f)", what, j, id, pr[id], p, dp, tol);
        }
        st->steps++;
        if (!check_top) continue;
        double p0 = json_number_value(json_array_get(json_array_get(top, 0), 1));
        double p1 = json_array_size(top) > 1 ? json_number_value(json_array_get(json_array_get(top, 1), 1)) : 0;
        int ref_top = (int)json_integer_value(json_array_get(json_array_get(top, 0), 0));
        int ours = 0;
        for (int i = 1; i < V; i++) if (pr[i] > pr[ours]) ours = i;
        if (p0 - p1 > tol) {
            st->top_checked++;
            if (ours != ref_top) fail_msg("%s step %zu: top token %d, reference %d (p %.4f vs next %.4f)", what, j, ours, ref_top, p0, p1);
        }
        st->top_agree += ours == ref_top;
    }
}

static json_t *load_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s (is ../shared present? set ELPIS_SHARED)", path);
    json_t *arr = json_array();
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) fail_msg("%s: %s", path, je.text);
        json_array_append_new(arr, o);
    }
    fclose(f);
    assert_true(json_array_size(arr) > 0);
    return arr;
}

/* The teacher-forced ids of one reference line: tokens + steps[0..n-2].token. */
static int forced_ids(json_t *line, int32_t *ids, int cap, int *n_prompt) {
    json_t *toks = json_object_get(line, "tokens"), *steps = json_object_get(line, "steps");
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(toks, i, v) { assert_true(n < cap); ids[n++] = (int32_t)json_integer_value(v); }
    *n_prompt = n;
    for (i = 0; i + 1 < json_array_size(steps); i++) {
        assert_true(n < cap);
        ids[n++] = (int32_t)json_integer_value(json_object_get(json_array_get(steps, i), "token"));
    }
    return n;
}

static void check_model(void **state) {
    const oracle_case *c = *state;
    char path[1024], exact_path[1024], oracle_path[1024];
    snprintf(path, sizeof path, "%s/testdata/oracle/%s.gguf", shared_dir(), c->model);
    snprintf(exact_path, sizeof exact_path, "%s/testdata/oracle/%s.exact.jsonl", shared_dir(), c->model);
    snprintf(oracle_path, sizeof oracle_path, "%s/testdata/oracle/%s.oracle.jsonl", shared_dir(), c->model);
    elpis_error err = { 0 };
    run r = { 0 };
    if (elpis_model_load(&r.m, path, &err) != ELPIS_OK) fail_msg("load: %s", err.msg);
    /* The fast path under test includes packed weights wherever the kernel
     * path packs (ELPIS_PACK=0 aside): make sure they are really in play. */
    const elpis_weight *wq = &r.m->layers[0].wq;
    const char *pack_env = getenv("ELPIS_PACK");
    const bool want_packed = elpis_kernels_get()->pack8 && elpis_pack8_supported(wq->type) && !(pack_env && !strcmp(pack_env, "0"));
    if (wq->packed != want_packed) fail_msg("%s: wq packed=%d, expected %d", c->model, wq->packed, want_packed);
    json_t *exact = load_lines(exact_path), *oracle = load_lines(oracle_path);
    assert_int_equal(json_array_size(exact), json_array_size(oracle));
    cmp_stats se = { 0 }, sf = { 0 }, so = { 0 };
    for (size_t li = 0; li < json_array_size(exact); li++) {
        int32_t ids[64];
        int n_prompt, n = forced_ids(json_array_get(exact, li), ids, 64, &n_prompt);
        json_t *esteps = json_object_get(json_array_get(exact, li), "steps");
        json_t *osteps = json_object_get(json_array_get(oracle, li), "steps");
        eval_ids(&r, ids, n, true);
        compare_steps("exact path vs exact math", &r, esteps, n_prompt - 1, 0.002, 0.01, false, &se);
        eval_ids(&r, ids, n, false);
        compare_steps("fast path vs exact math", &r, esteps, n_prompt - 1, c->fast_tol, 0, true, &sf);
        compare_steps("fast path vs llama.cpp", &r, osteps, n_prompt - 1, c->fast_tol, 0, true, &so);
    }
    print_message("%-18s kernels=%s exact max|dp| %.5f; fast max|dp| %.5f vs exact, %.5f vs llama.cpp; top agree %d/%d\n",
                  c->model, elpis_kernels_get()->name, se.max_dp, sf.max_dp, so.max_dp, so.top_agree, so.steps);
    json_decref(exact);
    json_decref(oracle);
    free(r.probs);
    elpis_model_free(r.m);
}

int main(void) {
    struct CMUnitTest tests[ELPIS_ARRAY_LEN(cases)];
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cases); i++) {
        tests[i] = (struct CMUnitTest){ cases[i].model, check_model, NULL, NULL, (void *)&cases[i] };
    }
    return _cmocka_run_group_tests("oracle", tests, ELPIS_ARRAY_LEN(cases), NULL, NULL);
}
