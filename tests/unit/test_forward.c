/* test_forward.c -- properties of the forward pass and the KV cache on the
 * real stories260K model:
 *   - batch invariance: a sequence's logits are bit-identical whether it runs
 *     alone or batched with 1, 3 or 7 other sequences;
 *   - prefill in chunks gives the same bits as prefill in one batch;
 *   - truncating a sequence and re-feeding gives the same bits;
 *   - malformed batches fail with a message and change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/model.h"
#include "elpis/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEQ 8
#define STEPS 12

static elpis_model *g_model;

static int setup(void **state) {
    (void)state;
    char path[1024];
    const char *shared = getenv("ELPIS_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    elpis_error err = { 0 };
    if (elpis_model_load(&g_model, path, &err) != ELPIS_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    elpis_model_free(g_model);
    return 0;
}

static elpis_ctx *new_ctx(int n_seq, int n_batch) {
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = 128;
    p.n_seq = n_seq;
    p.n_batch = n_batch;
    p.n_outputs = n_batch;
    p.n_threads = 2;
    elpis_ctx *c = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_ctx_new(&c, g_model, &p, &err), ELPIS_OK);
    return c;
}

static void tokenize(const char *text, elpis_tokens *out) {
    elpis_error err = { 0 };
    assert_int_equal(elpis_tokenize(g_model->vocab, text, strlen(text), true, false, out, &err), ELPIS_OK);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

/* Greedy-decode n_seq prompts together; record sequence 0's logits per step. */
static void run_together(int n_seq, float *logits0 /* [STEPS][V] */) {
    static const char *prompts[MAX_SEQ] = {
        "Once upon a time", "The cat sat", "Lily liked to play", "One day, a big dog",
        "Tom and Sue went", "The sun was", "A little bird", "There was a boy",
    };
    const int V = g_model->hp.n_vocab;
    elpis_ctx *c = new_ctx(n_seq, 64);
    elpis_tokens toks[MAX_SEQ] = { 0 };
    int32_t tok[64], pos[64], seq[64];
    bool want[64];
    int n = 0;
    for (int s = 0; s < n_seq; s++) {
        tokenize(prompts[s], &toks[s]);
        for (size_t i = 0; i < toks[s].n; i++) {
            tok[n] = toks[s].ids[i]; pos[n] = (int32_t)i; seq[n] = s; want[n] = i + 1 == toks[s].n; n++;
        }
    }
    int32_t next[MAX_SEQ];
    for (int step = 0; step < STEPS; step++) {
        elpis_error err = { 0 };
        elpis_batch b = { .n = n, .token = tok, .pos = pos, .seq = seq, .logits = want };
        if (elpis_forward(c, &b, &err) != ELPIS_OK) fail_msg("forward: %s", err.msg);
        assert_int_equal(elpis_ctx_n_outputs(c), n_seq);
        memcpy(logits0 + (size_t)step * V, elpis_ctx_logits(c, 0), (size_t)V * sizeof(float));
        for (int s = 0; s < n_seq; s++) next[s] = argmax(elpis_ctx_logits(c, s), V);
        n = 0;
        for (int s = 0; s < n_seq; s++) {
            tok[n] = next[s]; pos[n] = elpis_kv_seq_len(c, s); seq[n] = s; want[n] = true; n++;
        }
    }
    for (int s = 0; s < n_seq; s++) elpis_tokens_free(&toks[s]);
    elpis_ctx_free(c);
}

static void test_batch_invariance(void **state) {
    (void)state;
    const int V = g_model->hp.n_vocab;
    float *alone = malloc((size_t)STEPS * V * sizeof(float)), *with = malloc((size_t)STEPS * V * sizeof(float));
    assert_non_null(alone);
    assert_non_null(with);
    run_together(1, alone);
    const int others[] = { 2, 4, 8 };
    for (size_t k = 0; k < ELPIS_ARRAY_LEN(others); k++) {
        run_together(others[k], with);
        for (int step = 0; step < STEPS; step++)
            if (memcmp(alone + (size_t)step * V, with + (size_t)step * V, (size_t)V * sizeof(float)) != 0)
                fail_msg("logits of sequence 0 differ at step %d when batched with %d others", step, others[k] - 1);
    }
    free(alone);
    free(with);
}

/* Feed ids [0, n) to seq 0 of c in chunks of `chunk`; copy last logits. */
static void feed(elpis_ctx *c, const int32_t *ids, int from, int n, int chunk, float *last) {
    int32_t pos[64], seq[64] = { 0 };
    for (int i = from; i < n; i += chunk) {
        int m = ELPIS_MIN(chunk, n - i);
        for (int k = 0; k < m; k++) pos[k] = i + k;
        elpis_error err = { 0 };
        elpis_batch b = { .n = m, .token = ids + i, .pos = pos, .seq = seq, .logits = NULL };
        if (elpis_forward(c, &b, &err) != ELPIS_OK) fail_msg("forward: %s", err.msg);
    }
    memcpy(last, elpis_ctx_logits(c, 0), (size_t)g_model->hp.n_vocab * sizeof(float));
}

static void test_chunked_prefill_and_truncate(void **state) {
    (void)state;
    const int V = g_model->hp.n_vocab;
    elpis_tokens t = { 0 };
    tokenize("Once upon a time, there was a little girl named Lily. She loved to play outside.", &t);
    const int n = (int)t.n;
    assert_true(n > 12 && n < 64);
    float *whole = malloc((size_t)V * 4), *chunked = malloc((size_t)V * 4), *again = malloc((size_t)V * 4);
    elpis_ctx *c = new_ctx(1, 64);
    feed(c, t.ids, 0, n, 64, whole);
    assert_int_equal(elpis_kv_seq_len(c, 0), n);
    assert_int_equal(elpis_kv_cells_used(c), n);

    elpis_kv_seq_truncate(c, 0, 0);
    assert_int_equal(elpis_kv_seq_len(c, 0), 0);
    feed(c, t.ids, 0, n, 5, chunked);
    assert_memory_equal(whole, chunked, (size_t)V * 4);

    /* drop the tail, re-feed it: same bits (prefix reuse relies on this) */
    elpis_kv_seq_truncate(c, 0, n / 2);
    assert_int_equal(elpis_kv_seq_len(c, 0), n / 2);
    feed(c, t.ids, n / 2, n, 3, again);
    assert_memory_equal(whole, again, (size_t)V * 4);

    elpis_ctx_free(c);
    free(whole); free(chunked); free(again);
    elpis_tokens_free(&t);
}


/* The abort hook: asked after every layer; true abandons the batch with
 * ELPIS_ECANCELLED and the sequence lengths as before; running the batch
 * again (hook cleared) gives the bits of a run that was never abandoned. */
static int g_abort_after;   /* layers to let through */
static int g_abort_asked;
static bool abort_after(void *ud) {
    (void)ud;
    return ++g_abort_asked > g_abort_after;
}

static void test_abandon_between_layers(void **state) {
    (void)state;
    const int V = g_model->hp.n_vocab;
    elpis_tokens t = { 0 };
    tokenize("Once upon a time, there was a little girl named Lily.", &t);
    const int n = (int)t.n, half = n / 2;
    float *want = malloc((size_t)V * 4), *got = malloc((size_t)V * 4);
    elpis_ctx *c = new_ctx(1, 64);
    feed(c, t.ids, 0, n, 64, want);
    for (int layer = 0; layer < g_model->hp.n_layer; layer++) {
        elpis_kv_seq_truncate(c, 0, 0);
        feed(c, t.ids, 0, half, 64, got);               /* a prefix in the cache */
        int32_t pos[64], seq[64] = { 0 };
        for (int k = half; k < n; k++) pos[k - half] = k;
        elpis_batch b = { .n = n - half, .token = t.ids + half, .pos = pos, .seq = seq, .logits = NULL };
        elpis_error err = { 0 };
        g_abort_after = layer;
        g_abort_asked = 0;
        elpis_ctx_set_abort(c, abort_after, NULL);
        assert_int_equal(elpis_forward(c, &b, &err), ELPIS_ECANCELLED);
        assert_int_equal(g_abort_asked, layer + 1);      /* stopped right after that layer */
        assert_int_equal(elpis_kv_seq_len(c, 0), half);  /* the batch left no trace */
        elpis_ctx_set_abort(c, NULL, NULL);
        assert_int_equal(elpis_forward(c, &b, &err), ELPIS_OK);
        memcpy(got, elpis_ctx_logits(c, 0), (size_t)V * 4);
        assert_memory_equal(want, got, (size_t)V * 4);
    }
    elpis_ctx_free(c);
    free(want);
    free(got);
    elpis_tokens_free(&t);
}

static void expect_fail(elpis_ctx *c, elpis_batch *b, elpis_status code, const char *needle) {
    elpis_error err = { 0 };
    int32_t before = elpis_kv_seq_len(c, 0);
    assert_int_equal(elpis_forward(c, b, &err), code);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    assert_int_equal(elpis_kv_seq_len(c, 0), before);
}

static void test_bad_batches(void **state) {
    (void)state;
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = 4; p.n_seq = 2; p.n_batch = 4; p.n_threads = 1;
    elpis_ctx *c = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_ctx_new(&c, g_model, &p, &err), ELPIS_OK);
    int32_t tok[4] = { 1, 2, 3, 4 }, pos[4] = { 0, 1, 2, 3 }, seq[4] = { 0, 0, 0, 0 };
    elpis_batch b = { .n = 2, .token = tok, .pos = pos, .seq = seq };

    pos[0] = 1;                       /* gap: sequence 0 expects 0 */
    expect_fail(c, &b, ELPIS_EINVAL, "expects position 0");
    pos[0] = 0;
    seq[1] = 5;                       /* no such sequence */
    expect_fail(c, &b, ELPIS_EINVAL, "sequence 5");
    seq[1] = 0;
    tok[1] = 100000;                  /* outside the vocabulary */
    expect_fail(c, &b, ELPIS_EINVAL, "vocabulary");
    tok[1] = 2;
    b.n = 5;                          /* larger than n_batch */
    expect_fail(c, &b, ELPIS_EINVAL, "batch of 5");
    b.n = 4;
    assert_int_equal(elpis_forward(c, &b, &err), ELPIS_OK);   /* fills the context */
    int32_t t1 = 5, p1 = 4, s1 = 0;
    elpis_batch full = { .n = 1, .token = &t1, .pos = &p1, .seq = &s1 };
    expect_fail(c, &full, ELPIS_ERANGE, "full");
    elpis_ctx_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_chunked_prefill_and_truncate),
        cmocka_unit_test(test_abandon_between_layers),
        cmocka_unit_test(test_bad_batches),
    };
    return cmocka_run_group_tests_name("forward", tests, setup, teardown);
}
