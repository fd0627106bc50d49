/* sampler.h -- choose the next token from a row of logits.
 *
 * The chain, in this fixed order (like llama.cpp's common chain, with
 * temperature before the truncations as in llama2.c):
 *
 *   penalties -> [temperature <= 0: argmax, done] -> top-k -> temperature
 *   -> softmax -> top-p -> min-p -> draw with the sampler's own PRNG
 *
 * One sampler per sequence. It owns all its scratch (allocated once by
 * elpis_sampler_new, sized for the vocabulary), its token history and its
 * random state: sample() allocates nothing and touches no global state, so
 * samplers of different sequences may be used from different threads. The same
 * seed and the same sequence of logits and accepted tokens give the same tokens.
 */
#ifndef ELPIS_SAMPLER_H
#define ELPIS_SAMPLER_H

#include "elpis/base.h"

typedef struct elpis_sampler_params {
    float    temperature;       /* [0, 100]; 0 = greedy (argmax, lowest id on ties) */
    int32_t  top_k;             /* >= 0; 0 = off */
    float    top_p;             /* [0, 1]; 1 = off; keeps the smallest set with mass >= top_p */
    float    min_p;             /* [0, 1]; 0 = off; drops p < min_p * p_max */
    float    repeat_penalty;    /* (0, 100]; 1 = off; logit>0: /=, logit<=0: *= */
    int32_t  repeat_last_n;     /* [0, ELPIS_SAMPLER_MAX_LAST_N]; window of accepted tokens; 0 = no penalties */
    float    presence_penalty;  /* [-100, 100]; subtracted once from a token seen in the window */
    float    frequency_penalty; /* [-100, 100]; subtracted once per occurrence in the window */
    uint64_t seed;              /* PRNG seed; any value */
} elpis_sampler_params;

#define ELPIS_SAMPLER_MAX_LAST_N (1 << 20)
#define ELPIS_SAMPLER_DEFAULT_SEED 0xE1915u

typedef struct elpis_sampler elpis_sampler;

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off),
 * repeat_last_n 64, presence/frequency 0, seed ELPIS_SAMPLER_DEFAULT_SEED. */
elpis_sampler_params elpis_sampler_defaults(void);

/* ELPIS_EINVAL naming the first bad field, its value and the allowed range. */
elpis_status elpis_sampler_validate(const elpis_sampler_params *p, elpis_error *err);

/* A sampler for vocabularies of n_vocab tokens (any size up to INT32_MAX;
 * about 12 bytes per token of scratch). Returns NULL on OOM, or if p is NULL,
 * fails elpis_sampler_validate(), or n_vocab <= 0: validate first to get a
 * message. The parameters are copied. */
elpis_sampler *elpis_sampler_new(const elpis_sampler_params *p, int32_t n_vocab);
void elpis_sampler_free(elpis_sampler *s); /* NULL is fine */

/* Forget the token history and restart the PRNG from the seed: what follows
 * is what a fresh sampler would produce. */
void elpis_sampler_reset(elpis_sampler *s);

/* Record a token that became part of the sequence (prompt or generated) in
 * the penalty window. Ids outside [0, n_vocab) are ignored. */
void elpis_sampler_accept(elpis_sampler *s, int32_t token);

/* The next token for `logits` (n_vocab floats, read only). Does not call
 * accept(): the caller does, once the token is kept. NaN logits count as
 * -inf. Never fails; O(n_vocab) expected time for every setting. */
int32_t elpis_sampler_sample(elpis_sampler *s, const float *logits);

/* In place x[i] = exp(x[i] - max) / sum. NaN entries become 0; if any entry is
 * +inf the mass is shared by the +inf entries; if all are -inf (or NaN), the
 * result is uniform. n == 0 does nothing. */
void elpis_softmax(float *x, size_t n);

/* Index of the largest value, the lowest index on ties; NaN never wins unless
 * every value is NaN (then 0). -1 if n == 0. */
int32_t elpis_argmax(const float *x, size_t n);

#endif
