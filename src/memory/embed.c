/* embed.c -- sentence embeddings from a loaded model.
 *
 * DESIGN
 * ------
 * embedding(text) = L2-normalise( mean over tokens t of hidden(t) ), where
 * hidden(t) is the final normed hidden state (elpis_ctx_hidden) of token t.
 *
 *   - Tokenised with add_special (BOS) and parse_special off: memory text is
 *     user data and must not inject control tokens.
 *   - A leading BOS is fed (the model expects it) but not averaged: its
 *     state is identical for every text and would only pull all vectors
 *     towards one common direction.
 *   - Every row of a batch requests an output, so the engine computes logits
 *     we throw away; for the small models used here that is cheap, and the
 *     engine may grow a hidden-only path later without changing this file.
 *   - Text longer than the context is embedded in consecutive windows of
 *     n_ctx tokens (the cache cleared between windows) and all token states
 *     are averaged together, so long memories are not silently truncated.
 *   - Centering: mean-pooled states of a language model share one dominant
 *     direction (with stories260K every pair of unrelated sentences scored a
 *     cosine of 0.7-0.95, so the 0.85 consolidation threshold merged
 *     unrelated memories and vector ranking was mostly noise). At creation
 *     the embedder embeds a fixed, built-in set of varied sentences and from
 *     then on subtracts their mean before normalising ("all-but-the-top"
 *     style post-processing, first component only). After centering,
 *     paraphrases score ~0.6-0.7 and unrelated sentences ~-0.3..0.3. The
 *     set is fixed, so a given model always yields the same vectors.
 *
 * The embedder owns its elpis_ctx (one KV slot, sized for one window), so it
 * never touches the scheduler's context; it must be used by one thread at a
 * time (the memory store calls it under its own mutex).
 */
#include "elpis/memory.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_MAX_CTX 512
#define EMBED_BATCH 128

struct elpis_embedder {
    const elpis_model *m;
    elpis_ctx *ctx;
    int32_t n_ctx, n_batch, dim;
    int32_t *pos, *seq;      /* [n_batch] scratch */
    bool *want;              /* [n_batch], all true */
    double *acc;             /* [dim] running sum */
    float *center;           /* [dim] subtracted before normalising */
};

/* Calibration text for the centering vector: everyday statements of many
 * kinds (stories, chores, work, feelings, facts). Never change it casually:
 * it defines the vectors already stored in people's databases. */
static const char *const CALIBRATION[] = {
    "Once upon a time there was a little girl who lived near the woods.",
    "He walked to the shop to buy bread and milk.",
    "The weather today is cold, grey and rainy.",
    "I like to read a book before I go to sleep.",
    "The meeting has been moved to Monday morning.",
    "She painted a picture of a tall green tree.",
    "We fixed the bug in the login code last night.",
    "The cat slept all afternoon on the warm rug.",
    "My brother plays football with his friends every weekend.",
    "The train was late again because of the snow.",
    "They built a big sand castle on the beach.",
    "Please send me the report by Friday.",
    "A small bird sang a happy song in the garden.",
    "I am feeling tired after such a long day.",
    "Mom made hot soup for dinner.",
    "The server crashed because the disk was full.",
    "Water boils at one hundred degrees Celsius.",
    "The children laughed and ran around the playground.",
    "Remember to call the dentist about the appointment.",
    "The old man told the boy a story about the sea.",
    "Our team won the game in the last minute.",
    "The recipe needs two eggs, flour and sugar.",
    "It was dark, and the dog was scared of the thunder.",
    "You can change the setting in the configuration file.",
    "The flowers in the park were red, yellow and blue.",
    "She was angry that nobody listened to her idea.",
    "The library closes at eight in the evening.",
    "Paris is the capital city of France.",
    "He lost his keys and looked for them everywhere.",
    "The baby smiled when she saw her mother.",
    "We should water the plants twice a week.",
    "The little fish swam away from the big shark.",
};

static elpis_status embed_raw(elpis_embedder *e, const char *text, size_t len, float *out, elpis_error *err);

/* center = mean of the uncentered embeddings of CALIBRATION. */
static elpis_status calibrate(elpis_embedder *e, elpis_error *err) {
    float *v = malloc((size_t)e->dim * sizeof *v);
    double *sum = calloc((size_t)e->dim, sizeof *sum);
    elpis_status st = ELPIS_OK;
    if (!v || !sum) {
        st = elpis_fail(err, ELPIS_ENOMEM, "embedder: out of memory");
        goto done;
    }
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(CALIBRATION); i++) {
        if ((st = embed_raw(e, CALIBRATION[i], strlen(CALIBRATION[i]), v, err)) != ELPIS_OK) goto done;
        for (int32_t d = 0; d < e->dim; d++) sum[d] += v[d];
    }
    for (int32_t d = 0; d < e->dim; d++) e->center[d] = (float)(sum[d] / (double)ELPIS_ARRAY_LEN(CALIBRATION));
done:
    free(v);
    free(sum);
    return st;
}

elpis_status elpis_embedder_new(elpis_embedder **out, const elpis_model *m, int32_t n_threads, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    if (!out || !m) return elpis_fail(err, ELPIS_EINVAL, "embedder: no model");
    elpis_embedder *e = calloc(1, sizeof *e);
    if (!e) return elpis_fail(err, ELPIS_ENOMEM, "embedder: out of memory");
    e->m = m;
    e->dim = m->hp.n_embd;
    e->n_ctx = m->hp.n_ctx_train > 0 ? ELPIS_MIN(m->hp.n_ctx_train, EMBED_MAX_CTX) : EMBED_MAX_CTX;
    e->n_batch = ELPIS_MIN(e->n_ctx, EMBED_BATCH);
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = e->n_ctx;
    p.n_seq = 1;
    p.n_batch = e->n_batch;
    p.n_outputs = e->n_batch;
    p.n_threads = n_threads;
    if ((st = elpis_ctx_new(&e->ctx, m, &p, err)) != ELPIS_OK) goto fail;
    e->pos = malloc((size_t)e->n_batch * sizeof *e->pos);
    e->seq = calloc((size_t)e->n_batch, sizeof *e->seq);
    e->want = malloc((size_t)e->n_batch * sizeof *e->want);
    e->acc = malloc((size_t)e->dim * sizeof *e->acc);
    e->center = calloc((size_t)e->dim, sizeof *e->center);
    if (!e->pos || !e->seq || !e->want || !e->acc || !e->center) {
        st = elpis_fail(err, ELPIS_ENOMEM, "embedder: out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < e->n_batch; i++) e->want[i] = true;
    if ((st = calibrate(e, err)) != ELPIS_OK) goto fail;
    *out = e;
    return ELPIS_OK;
fail:
    elpis_embedder_free(e);
    return st;
}

void elpis_embedder_free(elpis_embedder *e) {
    if (!e) return;
    elpis_ctx_free(e->ctx);
    free(e->pos);
    free(e->seq);
    free(e->want);
    free(e->acc);
    free(e->center);
    free(e);
}

int32_t elpis_embedder_dim(const elpis_embedder *e) { return e ? e->dim : 0; }
const char *elpis_embedder_name(const elpis_embedder *e) { return e && e->m->name ? e->m->name : "unknown"; }

/* Feed tokens[0..n) as one window from position 0, adding the states of rows
 * not skipped to e->acc. Returns the number of states added via *added. */
static elpis_status run_window(elpis_embedder *e, const int32_t *tok, int32_t n, bool skip_first, size_t *added,
                               elpis_error *err) {
    elpis_kv_seq_truncate(e->ctx, 0, 0);
    for (int32_t start = 0; start < n; start += e->n_batch) {
        int32_t nb = ELPIS_MIN(e->n_batch, n - start);
        for (int32_t i = 0; i < nb; i++) e->pos[i] = start + i;
        elpis_batch b = { .n = nb, .token = tok + start, .pos = e->pos, .seq = e->seq, .logits = e->want };
        elpis_status st = elpis_forward(e->ctx, &b, err);
        if (st != ELPIS_OK) return st;
        for (int32_t i = 0; i < nb; i++) {
            if (skip_first && start + i == 0) continue;
            const float *h = elpis_ctx_hidden(e->ctx, i);
            for (int32_t d = 0; d < e->dim; d++) e->acc[d] += h[d];
            (*added)++;
        }
    }
    return ELPIS_OK;
}

/* unit(unit(mean of the token states) - e->center); the center is all zeros
 * while calibrating, so calibration averages plain unit means. */
static elpis_status embed_raw(elpis_embedder *e, const char *text, size_t len, float *out, elpis_error *err) {
    elpis_tokens toks = { 0 };
    elpis_status st;
    if (len == 0) return elpis_fail(err, ELPIS_EINVAL, "embed: empty text");
    if ((st = elpis_tokenize(e->m->vocab, text, len, true, false, &toks, err)) != ELPIS_OK) return st;
    int32_t bos = elpis_vocab_bos(e->m->vocab);
    bool lead_bos = toks.n > 1 && bos >= 0 && toks.ids[0] == bos;
    memset(e->acc, 0, (size_t)e->dim * sizeof *e->acc);
    size_t added = 0;
    for (size_t start = 0; start < toks.n; start += (size_t)e->n_ctx) {
        int32_t n = (int32_t)ELPIS_MIN((size_t)e->n_ctx, toks.n - start);
        st = run_window(e, toks.ids + start, n, lead_bos && start == 0, &added, err);
        if (st != ELPIS_OK) goto done;
    }
    /* normalise the mean (its scale differs between models and texts),
     * subtract the center (a mean of such unit vectors), normalise again */
    double norm = 0, norm2 = 0;
    for (int32_t d = 0; d < e->dim; d++) norm += e->acc[d] * e->acc[d];
    norm = sqrt(norm);
    for (int32_t d = 0; d < e->dim && norm > 0; d++) {
        e->acc[d] = e->acc[d] / norm - e->center[d];
        norm2 += e->acc[d] * e->acc[d];
    }
    norm2 = sqrt(norm2);
    if (added == 0 || !(norm > 0) || !(norm2 > 0) || !isfinite(norm2)) {
        st = elpis_fail(err, ELPIS_EFORMAT, "embed: the model produced a zero or non-finite state");
        goto done;
    }
    for (int32_t d = 0; d < e->dim; d++) out[d] = (float)(e->acc[d] / norm2);
done:
    elpis_kv_seq_truncate(e->ctx, 0, 0);
    elpis_tokens_free(&toks);
    return st;
}

elpis_status elpis_embed(elpis_embedder *e, const char *text, size_t len, float *out, elpis_error *err) {
    if (!e || !text || !out) return elpis_fail(err, ELPIS_EINVAL, "embed: bad arguments");
    return embed_raw(e, text, len, out, err);
}
