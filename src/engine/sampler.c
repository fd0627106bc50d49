/* sampler.c -- the token sampler: penalties, top-k, temperature, top-p, min-p.
 *
 * DESIGN
 * ------
 * Every call to elpis_sampler_sample() copies the logits into the sampler's
 * candidate arrays (v[i] = value, id[i] = token; a structure of two arrays so
 * that the values can go straight through elpis_softmax), then narrows the
 * candidate set step by step. Each step moves the candidates it keeps to the
 * front, c[0..n), in no particular order, and returns the new n. Nothing is
 * ever fully sorted, because a full sort of a 150k-256k vocabulary per token
 * costs more than the rest of sampling together:
 *
 *   - penalties: O(window), touching only tokens in the history window;
 *   - top-k:     a bounded heap of the k best, O(n log k), and O(n) in practice
 *                since most candidates lose to the heap's root at once;
 *   - top-p:     llama2.c's O(n) pre-filter (drops tokens too unlikely to
 *                matter), then quickselect for the smallest prefix (in
 *                best-first order) whose mass reaches top_p: expected O(n),
 *                never worse than O(n log n) thanks to a heapsort fallback;
 *   - min-p:     one O(n) pass;
 *   - the draw:  one O(n) pass over the kept candidates.
 *
 * "Best first" is a strict total order: larger value first, lower token id
 * first among equal values. Ties are therefore broken the same way everywhere
 * (greedy, top-k = 1, the nucleus), and the quickselect never meets equal keys.
 *
 * INVARIANTS
 *   - sample() allocates nothing and writes only the sampler: the caller's
 *     logits are read once, into v[].
 *   - The PRNG (xoshiro256**, seeded through splitmix64) lives in the sampler,
 *     and is advanced exactly once per non-greedy sample, so a sequence of
 *     samples depends only on the seed and the inputs.
 *   - count[t] is the number of occurrences of t in ring[0..ring_len); the top
 *     bit is free (window <= 2^20) and is used as a "done" mark while applying
 *     penalties, then cleared before returning.
 *   - Every step keeps at least one candidate, and the best one.
 */
#include "elpis/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PENALIZED 0x80000000u /* mark bit in count[] during apply_penalties */

struct elpis_sampler {
    elpis_sampler_params p;
    int32_t  n_vocab;
    float   *v;          /* [n_vocab] candidate values: logits, then probabilities */
    int32_t *id;         /* [n_vocab] candidate token ids */
    uint32_t *count;     /* [n_vocab] occurrences in the window (see invariants) */
    int32_t *ring;       /* [repeat_last_n] the window of accepted tokens */
    int32_t  ring_len;   /* tokens in the window */
    int32_t  ring_head;  /* next slot to write; the oldest token once full */
    uint64_t rng[4];     /* xoshiro256** state */
};

/* The candidate arrays, as the narrowing steps see them. */
typedef struct cands {
    float   *v;
    int32_t *id;
} cands;

/* ---- parameters ---------------------------------------------------------------- */

elpis_sampler_params elpis_sampler_defaults(void) {
    return (elpis_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = ELPIS_SAMPLER_DEFAULT_SEED,
    };
}

static elpis_status bad_float(elpis_error *err, const char *field, float v, const char *range) {
    return elpis_fail(err, ELPIS_EINVAL, "sampler: %s = %g is outside the allowed range %s", field, (double)v, range);
}

/* Written as !(lo <= x && x <= hi) so that NaN is rejected too. */
elpis_status elpis_sampler_validate(const elpis_sampler_params *p, elpis_error *err) {
    if (!p) return elpis_fail(err, ELPIS_EINVAL, "sampler: parameters are NULL");
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return bad_float(err, "temperature", p->temperature, "[0, 100] (0 = greedy)");
    if (p->top_k < 0)
        return elpis_fail(err, ELPIS_EINVAL, "sampler: top_k = %d is outside the allowed range [0, %d] (0 = off)",
                          (int)p->top_k, (int)INT32_MAX);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f)) return bad_float(err, "top_p", p->top_p, "[0, 1] (1 = off)");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return bad_float(err, "min_p", p->min_p, "[0, 1] (0 = off)");
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 100.0f))
        return bad_float(err, "repeat_penalty", p->repeat_penalty, "(0, 100] (1 = off)");
    if (p->repeat_last_n < 0 || p->repeat_last_n > ELPIS_SAMPLER_MAX_LAST_N)
        return elpis_fail(err, ELPIS_EINVAL, "sampler: repeat_last_n = %d is outside the allowed range [0, %d]",
                          (int)p->repeat_last_n, ELPIS_SAMPLER_MAX_LAST_N);
    if (!(p->presence_penalty >= -100.0f && p->presence_penalty <= 100.0f))
        return bad_float(err, "presence_penalty", p->presence_penalty, "[-100, 100] (0 = off)");
    if (!(p->frequency_penalty >= -100.0f && p->frequency_penalty <= 100.0f))
        return bad_float(err, "frequency_penalty", p->frequency_penalty, "[-100, 100] (0 = off)");
    return ELPIS_OK;
}

/* ---- PRNG: xoshiro256**, seeded by splitmix64 ------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static void rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed); /* never all zero */
}

/* ---- lifetime and history ------------------------------------------------------- */

elpis_sampler *elpis_sampler_new(const elpis_sampler_params *p, int32_t n_vocab) {
    if (n_vocab <= 0 || elpis_sampler_validate(p, NULL) != ELPIS_OK) return NULL;
    elpis_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->v = calloc((size_t)n_vocab, sizeof *s->v);
    s->id = calloc((size_t)n_vocab, sizeof *s->id);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    if (p->repeat_last_n > 0) s->ring = calloc((size_t)p->repeat_last_n, sizeof *s->ring);
    if (!s->v || !s->id || !s->count || (p->repeat_last_n > 0 && !s->ring)) goto fail;
    elpis_sampler_reset(s);
    return s;
fail:
    elpis_sampler_free(s);
    return NULL;
}

void elpis_sampler_free(elpis_sampler *s) {
    if (!s) return;
    free(s->v);
    free(s->id);
    free(s->count);
    free(s->ring);
    free(s);
}

void elpis_sampler_reset(elpis_sampler *s) {
    for (int32_t i = 0; i < s->ring_len; i++) s->count[s->ring[i]] = 0; /* O(window), not O(vocab) */
    s->ring_len = 0;
    s->ring_head = 0;
    rng_seed(s->rng, s->p.seed);
}

void elpis_sampler_accept(elpis_sampler *s, int32_t token) {
    int32_t cap = s->p.repeat_last_n;
    if (cap == 0 || token < 0 || token >= s->n_vocab) return;
    if (s->ring_len == cap) s->count[s->ring[s->ring_head]]--; /* evict the oldest */
    else s->ring_len++;
    s->ring[s->ring_head] = token;
    s->count[token]++;
    s->ring_head = (s->ring_head + 1) % cap;
}

/* ---- softmax and argmax ---------------------------------------------------------- */

void elpis_softmax(float *x, size_t n) {
    if (n == 0) return;
    float max = -INFINITY;
    size_t n_inf = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] > max) max = x[i]; /* NaN never compares greater */
        n_inf += x[i] == INFINITY;
    }
    if (max == INFINITY) { /* the limit: the +inf entries share the mass */
        for (size_t i = 0; i < n; i++) x[i] = x[i] == INFINITY ? 1.0f / (float)n_inf : 0.0f;
        return;
    }
    if (max == -INFINITY) { /* nothing to prefer */
        for (size_t i = 0; i < n; i++) x[i] = 1.0f / (float)n;
        return;
    }
    double sum = 0.0; /* double: the sum of 256k terms must not lose the small ones */
    for (size_t i = 0; i < n; i++) {
        x[i] = isnan(x[i]) ? 0.0f : expf(x[i] - max);
        sum += x[i];
    }
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] / sum);
}

int32_t elpis_argmax(const float *x, size_t n) {
    if (n == 0) return -1;
    size_t best = 0;
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) continue;
        if (!found || x[i] > x[best]) best = i; /* strict: the lowest index wins ties */
        found = true;
    }
    return (int32_t)best;
}

/* ---- candidate order and moves ----------------------------------------------------- */

/* Is candidate i strictly better than j? Larger value, then lower id. */
static inline bool before(cands c, size_t i, size_t j) {
    return c.v[i] > c.v[j] || (c.v[i] == c.v[j] && c.id[i] < c.id[j]);
}

static inline void swap(cands c, size_t i, size_t j) {
    float tv = c.v[i];
    int32_t ti = c.id[i];
    c.v[i] = c.v[j];
    c.id[i] = c.id[j];
    c.v[j] = tv;
    c.id[j] = ti;
}

/* Heap of c[0..n) with the WORST candidate at the root: the root is the one to
 * evict when a better candidate comes along. */
static void sift_down(cands c, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && before(c, worst, l)) worst = l;
        if (r < n && before(c, worst, r)) worst = r;
        if (worst == i) return;
        swap(c, i, worst);
        i = worst;
    }
}

/* Heapsort into best-first order, in place: the fallback that bounds the
 * quickselect's worst case. Repeatedly moving the worst to the end leaves the
 * best at the front. */
static void sort_best_first(cands c, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(c, n, i);
    for (size_t end = n; end > 1; end--) {
        swap(c, 0, end - 1);
        sift_down(c, end - 1, 0);
    }
}

static void move_best_to_front(cands c, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (before(c, i, best)) best = i;
    swap(c, 0, best);
}

/* ---- the narrowing steps --------------------------------------------------------- */

/* Keep the k best. Bounded heap: O(n log k). */
static size_t keep_top_k(cands c, size_t n, int32_t top_k) {
    size_t k = (size_t)top_k;
    if (top_k <= 0 || k >= n) return n;
    for (size_t i = k / 2; i-- > 0;) sift_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (before(c, i, 0)) { /* better than the worst kept one */
            swap(c, i, 0);
            sift_down(c, k, 0);
        }
    }
    return k;
}

/* Lomuto partition of c[lo..hi) around a median-of-three pivot. Afterwards
 * c[lo..q) are better than the pivot at q, c[q+1..hi) worse. *mass gets the
 * total value of c[lo..q). */
static size_t partition(cands c, size_t lo, size_t hi, double *mass) {
    size_t a = lo, b = lo + (hi - lo) / 2, z = hi - 1, m;
    if (before(c, a, b)) m = before(c, b, z) ? b : (before(c, a, z) ? z : a);
    else                 m = before(c, a, z) ? a : (before(c, b, z) ? z : b);
    swap(c, m, z);
    size_t q = lo;
    double s = 0.0;
    for (size_t i = lo; i < z; i++) {
        if (before(c, i, z)) {
            s += c.v[i];
            swap(c, i, q++);
        }
    }
    swap(c, q, z);
    *mass = s;
    return q;
}

/* Length of the shortest best-first prefix of c[0..n) with mass >= need
 * (at least 1, at most n), by sorting. */
static size_t sorted_prefix(cands c, size_t n, double need) {
    sort_best_first(c, n);
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += c.v[i];
        if (cum >= need) return i + 1;
    }
    return n;
}

/* llama2.c's pre-filter: a candidate with p < (1 - top_p) / (n - 1) cannot be
 * in the nucleus (if it were, the nucleus would need >= 2 tokens and the
 * tokens from the last one on, all below the cutoff, would have to carry more
 * than 1 - top_p). On a language model's peaked distribution this discards
 * almost everything in one cheap pass. If nothing passes, every p is below
 * the cutoff, so top_p < 1/n <= p_best: the nucleus is the best token alone. */
static size_t drop_below_cutoff(cands c, size_t n, float top_p) {
    float cut = (1.0f - top_p) / (float)(n - 1);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (c.v[i] >= cut) swap(c, i, kept++);
    if (kept == 0) {
        move_best_to_front(c, n);
        kept = 1;
    }
    return kept;
}

/* Keep the nucleus: the fewest best candidates whose probability mass reaches
 * top_p (at least one). Quickselect on the best-first order:
 * c[0..lo) are in, c[hi..n) are out, and `need` is the mass still missing. */
static size_t keep_top_p(cands c, size_t n, float top_p) {
    if (top_p >= 1.0f || n <= 1) return n;
    if (!(top_p > 0.0f)) {
        move_best_to_front(c, n);
        return 1;
    }
    n = drop_below_cutoff(c, n, top_p);
    size_t lo = 0, hi = n;
    double need = top_p;
    int budget = 8; /* partitions allowed: ~2 log2(n) + 8 */
    for (size_t m = n; m > 1; m >>= 1) budget += 2;
    while (lo < hi) {
        if (budget-- == 0) return lo + sorted_prefix((cands){ c.v + lo, c.id + lo }, hi - lo, need);
        double mass;
        size_t q = partition(c, lo, hi, &mass);
        if (mass >= need) { /* the nucleus ends before the pivot */
            hi = q;
            continue;
        }
        need -= mass + c.v[q]; /* everything up to and including the pivot is in */
        lo = q + 1;
        if (need <= 0.0) return lo;
    }
    return lo; /* only after rounding: c[0..lo) already holds ~top_p */
}

/* Keep the candidates with p >= min_p * p_max. The best always stays. */
static size_t keep_min_p(cands c, size_t n, float min_p) {
    if (!(min_p > 0.0f) || n <= 1) return n;
    float pmax = 0.0f;
    for (size_t i = 0; i < n; i++) pmax = c.v[i] > pmax ? c.v[i] : pmax;
    float cut = min_p * pmax;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (c.v[i] >= cut) swap(c, i, kept++);
    return kept;
}

/* Draw from c[0..n) in proportion to the (unnormalised) values. */
static int32_t draw(uint64_t rng[4], cands c, size_t n) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += c.v[i];
    double r = rng_uniform(rng) * total;
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += c.v[i]; /* same order as `total`, so the last cum == total > r */
        if (r < cum) return c.id[i];
    }
    move_best_to_front(c, n); /* only if total == 0, which softmax rules out */
    return c.id[0];
}

/* Repeat penalty, then presence and frequency, once per distinct token in the
 * window. Before any narrowing, candidate t is token t. */
static void apply_penalties(elpis_sampler *s) {
    const elpis_sampler_params *p = &s->p;
    if (s->ring_len == 0 ||
        (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f))
        return;
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i];
        if (s->count[t] & PENALIZED) continue;
        float l = s->v[t];
        l = l > 0.0f ? l / p->repeat_penalty : l * p->repeat_penalty;
        l -= (float)s->count[t] * p->frequency_penalty + p->presence_penalty;
        s->v[t] = l;
        s->count[t] |= PENALIZED;
    }
    for (int32_t i = 0; i < s->ring_len; i++) s->count[s->ring[i]] &= ~PENALIZED;
}

int32_t elpis_sampler_sample(elpis_sampler *s, const float *logits) {
    cands c = { s->v, s->id };
    size_t n = (size_t)s->n_vocab;
    for (size_t i = 0; i < n; i++) {
        c.v[i] = isnan(logits[i]) ? -INFINITY : logits[i];
        c.id[i] = (int32_t)i;
    }
    apply_penalties(s);
    if (!(s->p.temperature > 0.0f)) return elpis_argmax(c.v, n); /* ids are still 0..n-1 */

    n = keep_top_k(c, n, s->p.top_k);
    for (size_t i = 0; i < n; i++) c.v[i] /= s->p.temperature;
    elpis_softmax(c.v, n);
    n = keep_top_p(c, n, s->p.top_p);
    n = keep_min_p(c, n, s->p.min_p);
    return draw(s->rng, c, n);
}
