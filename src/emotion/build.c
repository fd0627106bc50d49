/* build.c -- `elpis vectors build`: a steering direction per layer from the
 * mean difference of hidden states over two prompt sets (llama.cpp
 * cvector-generator's "mean" method, engine-facts §8).
 *
 * For each prompt: run it alone through sequence 0 of a fresh KV cache with
 * the engine's layer capture on, which sums the residual stream after every
 * block over the prompt's tokens; divide by the token count. Each set's mean
 * is the average of its prompts' means (every prompt weighs the same,
 * however long). Then elpis_cvec_mean_diff: pos - neg per block, unit L2,
 * block il's vector stored as direction.(il+1).
 *
 * Needs elpis_ctx_capture_layers (ELPIS_HAVE_LAYER_CAPTURE in model.h);
 * without it the function reports ELPIS_EUNSUPPORTED and everything else in
 * the emotion module still builds.
 */
#include "elpis/emotion.h"

#include <stdlib.h>
#include <string.h>

#ifndef ELPIS_HAVE_LAYER_CAPTURE

elpis_status elpis_cvec_build(const elpis_model *m, const elpis_cvec_build_params *p, float *out, elpis_error *err) {
    (void)m; (void)p; (void)out;
    return elpis_fail(err, ELPIS_EUNSUPPORTED, "vectors build: this engine has no per-layer capture "
                                               "(elpis_ctx_capture_layers)");
}

#else

#define BUILD_MAX_BATCH 256

typedef struct prompt_set {
    elpis_tokens *toks;
    size_t n;
} prompt_set;

static void set_free(prompt_set *s) {
    for (size_t i = 0; s->toks && i < s->n; i++) elpis_tokens_free(&s->toks[i]);
    free(s->toks);
}

/* Tokenise every prompt of a set; *max_len grows to the longest. */
static elpis_status tokenize_set(const elpis_model *m, const char *const *prompts, size_t n, const char *what,
                                 prompt_set *out, size_t *max_len, elpis_error *err) {
    if (n == 0) return elpis_fail(err, ELPIS_EINVAL, "vectors build: no %s prompts", what);
    if (!(out->toks = calloc(n, sizeof *out->toks))) return elpis_fail(err, ELPIS_ENOMEM, "vectors build: prompts");
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        elpis_status st = elpis_tokenize(m->vocab, prompts[i], strlen(prompts[i]), true, false, &out->toks[i], err);
        if (st != ELPIS_OK) return st;
        if (out->toks[i].n == 0)
            return elpis_fail(err, ELPIS_EINVAL, "vectors build: %s prompt %zu has no tokens", what, i + 1);
        if (out->toks[i].n > *max_len) *max_len = out->toks[i].n;
    }
    return ELPIS_OK;
}

/* Run one prompt and add its per-block mean residual into acc[n_layer*n_embd]. */
static elpis_status run_prompt(elpis_ctx *c, const elpis_model *m, const elpis_tokens *t, float *sum, double *acc,
                               int32_t *pos, int32_t *seq, elpis_error *err) {
    const size_t n = (size_t)m->hp.n_layer * m->hp.n_embd;
    const int32_t n_batch = elpis_ctx_params_of(c)->n_batch;
    elpis_kv_seq_truncate(c, 0, 0);
    memset(sum, 0, n * sizeof *sum);
    elpis_ctx_capture_layers(c, sum);
    elpis_status st = ELPIS_OK;
    for (size_t i0 = 0; i0 < t->n && st == ELPIS_OK; i0 += (size_t)n_batch) {
        int32_t nb = (int32_t)ELPIS_MIN((size_t)n_batch, t->n - i0);
        for (int32_t i = 0; i < nb; i++) { pos[i] = (int32_t)(i0 + (size_t)i); seq[i] = 0; }
        elpis_batch b = { .n = nb, .token = t->ids + i0, .pos = pos, .seq = seq, .logits = NULL };
        st = elpis_forward(c, &b, err);
    }
    elpis_ctx_capture_layers(c, NULL);
    if (st != ELPIS_OK) return st;
    for (size_t i = 0; i < n; i++) acc[i] += (double)sum[i] / (double)t->n;
    return ELPIS_OK;
}

static elpis_status run_set(elpis_ctx *c, const elpis_model *m, const prompt_set *s, float *sum, double *acc,
                            float *mean, int32_t *pos, int32_t *seq, elpis_error *err) {
    const size_t n = (size_t)m->hp.n_layer * m->hp.n_embd;
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < s->n; i++) {
        elpis_status st = run_prompt(c, m, &s->toks[i], sum, acc, pos, seq, err);
        if (st != ELPIS_OK) return st;
    }
    for (size_t i = 0; i < n; i++) mean[i] = (float)(acc[i] / (double)s->n);
    return ELPIS_OK;
}

elpis_status elpis_cvec_build(const elpis_model *m, const elpis_cvec_build_params *p, float *out, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    prompt_set pos_set = { 0 }, neg_set = { 0 };
    elpis_ctx *c = NULL;
    float *sum = NULL, *pos_mean = NULL, *neg_mean = NULL;
    double *acc = NULL;
    int32_t *pos = NULL, *seq = NULL;
    size_t max_len = 0;
    const size_t n = (size_t)m->hp.n_layer * m->hp.n_embd;

    if (m->hp.n_layer < 2)
        return elpis_fail(err, ELPIS_EINVAL, "vectors build: a model of %d layers cannot be steered", m->hp.n_layer);
    if ((st = tokenize_set(m, p->positive, p->n_positive, "positive", &pos_set, &max_len, err)) != ELPIS_OK ||
        (st = tokenize_set(m, p->negative, p->n_negative, "negative", &neg_set, &max_len, err)) != ELPIS_OK)
        goto done;
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = (int32_t)max_len;
    cp.n_batch = (int32_t)ELPIS_MIN(max_len, (size_t)BUILD_MAX_BATCH);
    cp.n_threads = p->n_threads;
    if (max_len > (size_t)(m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : INT32_MAX)) {
        st = elpis_fail(err, ELPIS_ERANGE, "vectors build: a prompt of %zu tokens exceeds the model's context (%d)",
                        max_len, m->hp.n_ctx_train);
        goto done;
    }
    if ((st = elpis_ctx_new(&c, m, &cp, err)) != ELPIS_OK) goto done;
    sum = malloc(n * sizeof *sum);
    pos_mean = malloc(n * sizeof *pos_mean);
    neg_mean = malloc(n * sizeof *neg_mean);
    acc = malloc(n * sizeof *acc);
    pos = malloc((size_t)cp.n_batch * sizeof *pos);
    seq = malloc((size_t)cp.n_batch * sizeof *seq);
    if (!sum || !pos_mean || !neg_mean || !acc || !pos || !seq) {
        st = elpis_fail(err, ELPIS_ENOMEM, "vectors build: %zu floats", n);
        goto done;
    }
    if ((st = run_set(c, m, &pos_set, sum, acc, pos_mean, pos, seq, err)) != ELPIS_OK ||
        (st = run_set(c, m, &neg_set, sum, acc, neg_mean, pos, seq, err)) != ELPIS_OK)
        goto done;
    elpis_cvec_mean_diff(pos_mean, neg_mean, m->hp.n_layer, m->hp.n_embd, out);
done:
    set_free(&pos_set);
    set_free(&neg_set);
    elpis_ctx_free(c);
    free(sum); free(pos_mean); free(neg_mean); free(acc); free(pos); free(seq);
    return st;
}

#endif
