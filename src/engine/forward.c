/* forward.c -- contexts, the KV cache and the transformer forward pass.
 *
 * DESIGN
 * ------
 * One forward call runs a batch of tokens from any number of sequences
 * through every layer at once (prefill chunks and decode steps alike), so each
 * weight matrix is read once per call whatever the batch size. For each layer:
 *
 *   xn = rmsnorm(x) * attn_norm
 *   q, k, v = xn @ Wq, Wk, Wv (+ biases)      -- one matmul each, all tokens
 *   [qwen3] per-head rmsnorm of q and k
 *   rope(q, k) at each token's position
 *   store k, v in the token's sequence slot of the KV cache
 *   attention of each token over its own sequence, positions 0..pos
 *   x += attn @ Wo
 *   x += down(silu(xn @ Wgate) * (xn @ Wup))  with xn = rmsnorm(x) * ffn_norm
 *   x += steering[seq][layer]                 -- per sequence, if set
 *   capture[layer] += x                       -- if layer capture is on
 *
 * then the output norm and the vocabulary projection for the rows that asked
 * for logits.
 *
 * Matmuls follow llama.cpp: the activations are converted once into the
 * weight type's vec_dot_type, then each output is an integer dot product.
 * The exact path (--exact) instead dequantizes each weight row to F32 and
 * accumulates in double: it is the reference the fast kernels are tested
 * against.
 *
 * KV cache: per layer, one slot of n_ctx positions for each sequence,
 *   k_cache[layer][seq][pos][n_head_kv * head_dim]  (F16 or F32)
 * so a sequence's keys are contiguous and a slot is freed by resetting its
 * length. Invariant: seq_len[s] positions of slot s hold valid K/V.
 *
 * Work is split over the pool by output rows (matmuls) or by (token, head)
 * pairs (attention). Nothing here allocates after elpis_ctx_new.
 */
#include "elpis/model.h"

#include "elpis/pool.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct elpis_ctx {
    const elpis_model *m;
    elpis_ctx_params p;
    const elpis_kernels *kern;
    elpis_pool *pool;
    int n_threads;
    uint64_t bytes;

    /* KV cache */
    void *k_cache, *v_cache;
    size_t kv_elsize, kv_dim;
    int32_t *seq_len;          /* [n_seq] */
    float **steer;             /* [n_seq] -> [n_layer][n_embd] or NULL */

    /* per-call scratch, n_batch rows each */
    float *x, *xn, *q, *k, *v, *att, *ff_gate, *ff_up;
    void  *act_q;              /* activations converted for a matmul */
    size_t act_q_cap;
    float *att_scores;         /* [n_threads][n_ctx] */
    bool att_simd;             /* AVX2+F16C attention loops (not for exact/portable) */
    float *deq_rows;           /* [n_threads][max_in] (exact path) */
    size_t max_in;             /* widest matmul input */
    float *rope_inv_freq;      /* [n_rot/2] */

    /* outputs */
    int32_t n_out;
    int32_t *out_rows;         /* [n_outputs] batch rows that produced outputs */
    float *hidden;             /* [n_outputs][n_embd] */
    float *capture;            /* caller's [n_layer][n_embd] sums, or NULL */
    float *logits;             /* [n_outputs][n_vocab] */

    elpis_abort_fn abort;      /* asked between layers, or NULL */
    void *abort_ud;
};

/* ---- small math ------------------------------------------------------------- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* ---- activations prepared for a matmul -------------------------------------- */

typedef struct act {
    const float *x;            /* [B][n] floats */
    int32_t B, n;
    elpis_dtype type;          /* vec_dot_type the rows were converted to, or -1 */
    size_t stride;             /* bytes per converted row */
} act;

typedef struct quant_job { elpis_ctx *c; act *a; } quant_job;

static void quant_rows(void *arg, int64_t b0, int64_t b1, int tid) {
    (void)tid;
    quant_job *j = arg;
    elpis_quantize_fn fn = j->c->kern->quantize[j->a->type];
    for (int64_t b = b0; b < b1; b++)
        fn(j->a->x + b * j->a->n, (char *)j->c->act_q + b * j->a->stride, j->a->n);
}

/* Convert a's rows to `type` unless they already are (Q, K and V share them). */
static void act_prepare(elpis_ctx *c, act *a, elpis_dtype type) {
    if ((int)a->type == (int)type) return;
    a->type = type;
    a->stride = elpis_row_bytes(type, a->n);
    quant_job j = { c, a };
    if (a->B >= 4) elpis_pool_for(c->pool, a->B, quant_rows, &j);
    else quant_rows(&j, 0, a->B, 0);
}

static act act_of(const float *x, int32_t B, int32_t n) { return (act){ x, B, n, (elpis_dtype)-1, 0 }; }

/* ---- matmul: y[b][o] = sum_i W[o][i] * x[b][i] ---------------------------------- */

typedef struct mm_job {
    elpis_ctx *c;
    const elpis_weight *w;
    const act *a;
    float *y;
    const float *bias;
} mm_job;

#define MM_ROW_TILE 4

static void mm_fast_rows(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    mm_job *j = arg;
    const elpis_weight *w = j->w;
    elpis_vec_dot_fn dot = j->c->kern->vec_dot[w->type];
    const int max_nrc = j->c->kern->max_nrc > 0 ? j->c->kern->max_nrc : 1;
    const char *xq = j->c->act_q;
    /* Tile: a group of MM_ROW_TILE weight rows against max_nrc activation
     * rows at a time, so those activation rows stay in L1 across the group
     * instead of streaming the whole activation matrix from L2 once per weight
     * row. Each output is still one vec_dot call: tiling changes no bits. */
    for (int64_t t0 = r0; t0 < r1; t0 += MM_ROW_TILE) {
        int64_t t1 = ELPIS_MIN(t0 + MM_ROW_TILE, r1);
        for (int b = 0; b < j->a->B; b += max_nrc) {
            int nrc = ELPIS_MIN(max_nrc, j->a->B - b);
            const char *x = xq + b * j->a->stride;
            for (int64_t r = t0; r < t1; r++)
                dot(w->n_in, j->y + (int64_t)b * w->n_out + r, (size_t)w->n_out,
                    (const char *)w->data + r * w->row_bytes, x, j->a->stride, nrc);
        }
    }
}

/* Packed weights: items are groups of 8 rows; one gemm8 call covers this
 * thread's groups and every activation row (the kernel tiles both). */
static void mm_packed_groups(void *arg, int64_t g0, int64_t g1, int tid) {
    (void)tid;
    mm_job *j = arg;
    const elpis_weight *w = j->w;
    const size_t group = elpis_pack8_bytes(w->type, w->n_in);
    if (g1 > g0)
        j->c->kern->gemm8[w->type](w->n_in, j->y + g0 * 8, (size_t)w->n_out, (const char *)w->data + g0 * group,
                                   g1 - g0, j->c->act_q, j->a->stride, j->a->B);
}

/* Row r of w as floats (either layout). */
static void weight_row(const elpis_weight *w, int64_t r, float *out) {
    if (w->packed)
        elpis_unpack8_row(w->type, (const char *)w->data + (r / 8) * elpis_pack8_bytes(w->type, w->n_in), w->n_in, (int)(r % 8), out);
    else elpis_dequantize_row(w->type, (const char *)w->data + r * w->row_bytes, out, w->n_in);
}

static void mm_exact_rows(void *arg, int64_t r0, int64_t r1, int tid) {
    mm_job *j = arg;
    const elpis_weight *w = j->w;
    float *deq = j->c->deq_rows + (size_t)tid * j->c->max_in;
    for (int64_t r = r0; r < r1; r++) {
        weight_row(w, r, deq);
        for (int b = 0; b < j->a->B; b++) {
            const float *x = j->a->x + (int64_t)b * w->n_in;
            double s = 0;
            for (int64_t i = 0; i < w->n_in; i++) s += (double)deq[i] * x[i];
            j->y[(int64_t)b * w->n_out + r] = (float)s;
        }
    }
}

static void matmul(elpis_ctx *c, const elpis_weight *w, act *a, float *y, const float *bias) {
    mm_job j = { c, w, a, y, bias };
    if (c->p.exact) {
        elpis_pool_for(c->pool, w->n_out, mm_exact_rows, &j);
    } else if (w->packed) {
        act_prepare(c, a, elpis_pack8_act(w->type));
        elpis_pool_for(c->pool, w->n_out / 8, mm_packed_groups, &j);
    } else {
        act_prepare(c, a, elpis_type_info_of(w->type)->vec_dot_type);
        elpis_pool_for(c->pool, w->n_out, mm_fast_rows, &j);
    }
    if (bias)
        for (int b = 0; b < a->B; b++)
            for (int64_t o = 0; o < w->n_out; o++) y[(int64_t)b * w->n_out + o] += bias[o];
}

/* ---- rope --------------------------------------------------------------------- */

/* Rotate the first n_rot channels of one head vector at position pos.
 * NORM pairs (2i, 2i+1); NEOX pairs (i, i + n_rot/2). */
static void rope_head(const elpis_ctx *c, float *h, int32_t pos) {
    const elpis_hparams *hp = &c->m->hp;
    const int half = hp->n_rot / 2;
    const int stride = hp->rope_type == ELPIS_ROPE_NEOX ? half : 1;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * c->rope_inv_freq[i];
        float cs = cosf(theta), sn = sinf(theta);
        int i0 = hp->rope_type == ELPIS_ROPE_NEOX ? i : 2 * i;
        float x0 = h[i0], x1 = h[i0 + stride];
        h[i0] = x0 * cs - x1 * sn;
        h[i0 + stride] = x0 * sn + x1 * cs;
    }
}

static void init_rope(elpis_ctx *c) {
    const elpis_hparams *hp = &c->m->hp;
    for (int i = 0; i < hp->n_rot / 2; i++) {
        double f = pow((double)hp->rope_base, -2.0 * i / hp->n_rot) * hp->rope_freq_scale;
        if (c->m->rope_freqs) f /= c->m->rope_freqs[i];
        c->rope_inv_freq[i] = (float)f;
    }
}

/* ---- KV cache ------------------------------------------------------------------ */

static void *kv_at(const elpis_ctx *c, void *cache, int layer, int32_t seq, int32_t pos) {
    size_t idx = (((size_t)layer * c->p.n_seq + (size_t)seq) * c->p.n_ctx + (size_t)pos) * c->kv_dim;
    return (char *)cache + idx * c->kv_elsize;
}

static void kv_store(elpis_ctx *c, void *dst, const float *src) {
    if (c->kv_elsize == 4) { memcpy(dst, src, c->kv_dim * 4); return; }
    uint16_t *d = dst;
    for (size_t i = 0; i < c->kv_dim; i++) d[i] = elpis_f32_to_f16(src[i]);
}

/* F16 -> F32 by table: the KV cache is read once per position per token, and
 * a software conversion per element would dominate attention. */
static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void) {
    for (uint32_t i = 0; i < 65536; i++) f16_table[i] = elpis_f16_to_f32((uint16_t)i);
}

/* ---- attention ----------------------------------------------------------------- */

typedef struct att_job {
    elpis_ctx *c;
    const elpis_batch *b;
    int layer;
} att_job;

/* scores[t] = q . K[t] * scale for t in [0, n): K rows `stride` bytes apart. */
static float att_scores(const elpis_ctx *c, const char *k, size_t stride, const float *q, int hd, int32_t n,
                        float scale, float *scores) {
    float mx = -INFINITY;
    for (int32_t t = 0; t < n; t++, k += stride) {
        float s = 0;
        if (c->kv_elsize == 2) {
            const uint16_t *kh = (const uint16_t *)k;
            for (int i = 0; i < hd; i++) s += f16_table[kh[i]] * q[i];
        } else if (c->p.exact) {
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)((const float *)k)[i] * q[i];
            s = (float)d;
        } else {
            for (int i = 0; i < hd; i++) s += ((const float *)k)[i] * q[i];
        }
        scores[t] = s * scale;
        if (scores[t] > mx) mx = scores[t];
    }
    return mx;
}

/* out = sum_t w[t] * V[t] */
static void att_values(const elpis_ctx *c, const char *v, size_t stride, const float *w, int hd, int32_t n, float *out) {
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int32_t t = 0; t < n; t++, v += stride) {
        if (c->kv_elsize == 2) {
            const uint16_t *vh = (const uint16_t *)v;
            for (int i = 0; i < hd; i++) out[i] += w[t] * f16_table[vh[i]];
        } else {
            for (int i = 0; i < hd; i++) out[i] += w[t] * ((const float *)v)[i];
        }
    }
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define ATT_SIMD __attribute__((target("avx2,fma,f16c")))

ATT_SIMD static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Same contract as att_scores/att_values for F16 and F32 caches, hd % 8 == 0. */
ATT_SIMD static float att_scores_avx2(const elpis_ctx *c, const char *k, size_t stride, const float *q, int hd,
                                      int32_t n, float scale, float *scores) {
    float mx = -INFINITY;
    for (int32_t t = 0; t < n; t++, k += stride) {
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < hd; i += 8) {
            __m256 kv = c->kv_elsize == 2 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)k + i)))
                                          : _mm256_loadu_ps((const float *)k + i);
            acc = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + i), acc);
        }
        scores[t] = hsum8(acc) * scale;
        if (scores[t] > mx) mx = scores[t];
    }
    return mx;
}

ATT_SIMD static void att_values_avx2(const elpis_ctx *c, const char *v, size_t stride, const float *w, int hd,
                                     int32_t n, float *out) {
    for (int i = 0; i < hd; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        const char *vp = v;
        for (int32_t t = 0; t < n; t++, vp += stride) {
            __m256 vv = c->kv_elsize == 2 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)vp + i)))
                                          : _mm256_loadu_ps((const float *)vp + i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(w[t]), vv, acc);
        }
        _mm256_storeu_ps(out + i, acc);
    }
}

static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));   /* CPUID.1:ECX.F16C */
}

static bool att_simd_ok(const elpis_ctx *c) {
    __builtin_cpu_init();
    return !c->p.exact && c->m->hp.head_dim % 8 == 0 && strcmp(c->kern->name, "portable") != 0 &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}
#else
static bool att_simd_ok(const elpis_ctx *c) { (void)c; return false; }
#endif

/* One (token, head): softmax(q.K / sqrt(d)) @ V over the token's sequence. */
static void attend_one(elpis_ctx *c, const elpis_batch *b, int layer, int i, int h, float *scores) {
    const elpis_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, kvh = h / (hp->n_head / hp->n_head_kv);
    const int32_t seq = b->seq[i], n = b->pos[i] + 1;
    const size_t stride = c->kv_dim * c->kv_elsize, head_off = (size_t)kvh * hd * c->kv_elsize;
    const float *q = c->q + ((size_t)i * hp->n_head + h) * hd;
    float *out = c->att + ((size_t)i * hp->n_head + h) * hd;
    const char *k = (const char *)kv_at(c, c->k_cache, layer, seq, 0) + head_off;
    const char *v = (const char *)kv_at(c, c->v_cache, layer, seq, 0) + head_off;
    const float scale = 1.0f / sqrtf((float)hd);
#if defined(__x86_64__)
    float mx = c->att_simd ? att_scores_avx2(c, k, stride, q, hd, n, scale, scores) : att_scores(c, k, stride, q, hd, n, scale, scores);
#else
    float mx = att_scores(c, k, stride, q, hd, n, scale, scores);
#endif
    double sum = 0;
    for (int32_t t = 0; t < n; t++) { scores[t] = expf(scores[t] - mx); sum += scores[t]; }
    const float inv = (float)(1.0 / sum);
    for (int32_t t = 0; t < n; t++) scores[t] *= inv;
#if defined(__x86_64__)
    if (c->att_simd) { att_values_avx2(c, v, stride, scores, hd, n, out); return; }
#endif
    att_values(c, v, stride, scores, hd, n, out);
}

static void attend_rows(void *arg, int64_t w0, int64_t w1, int tid) {
    att_job *j = arg;
    const int n_head = j->c->m->hp.n_head;
    float *scores = j->c->att_scores + (size_t)tid * j->c->p.n_ctx;
    for (int64_t w = w0; w < w1; w++) attend_one(j->c, j->b, j->layer, (int)(w / n_head), (int)(w % n_head), scores);
}

/* ---- one layer -------------------------------------------------------------------- */

static void attention_block(elpis_ctx *c, const elpis_batch *b, int il) {
    const elpis_hparams *hp = &c->m->hp;
    const elpis_layer *L = &c->m->layers[il];
    const int n = b->n, E = hp->n_embd, hd = hp->head_dim;
    for (int i = 0; i < n; i++) rmsnorm(c->xn + (size_t)i * E, c->x + (size_t)i * E, L->attn_norm, E, hp->rms_eps);

    act a = act_of(c->xn, n, E);
    matmul(c, &L->wq, &a, c->q, L->bq);
    matmul(c, &L->wk, &a, c->k, L->bk);
    matmul(c, &L->wv, &a, c->v, L->bv);

    for (int i = 0; i < n; i++) {
        for (int h = 0; h < hp->n_head; h++) {
            float *qh = c->q + ((size_t)i * hp->n_head + h) * hd;
            if (L->q_norm) rmsnorm(qh, qh, L->q_norm, hd, hp->rms_eps);
            rope_head(c, qh, b->pos[i]);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            float *kh = c->k + ((size_t)i * hp->n_head_kv + h) * hd;
            if (L->k_norm) rmsnorm(kh, kh, L->k_norm, hd, hp->rms_eps);
            rope_head(c, kh, b->pos[i]);
        }
        kv_store(c, kv_at(c, c->k_cache, il, b->seq[i], b->pos[i]), c->k + (size_t)i * c->kv_dim);
        kv_store(c, kv_at(c, c->v_cache, il, b->seq[i], b->pos[i]), c->v + (size_t)i * c->kv_dim);
    }

    att_job j = { c, b, il };
    elpis_pool_for(c->pool, (int64_t)n * hp->n_head, attend_rows, &j);

    act ao = act_of(c->att, n, hp->n_head * hd);
    matmul(c, &L->wo, &ao, c->xn, L->bo);   /* xn is free again: reuse it for the projection */
    for (size_t i = 0; i < (size_t)n * E; i++) c->x[i] += c->xn[i];
}

static void ffn_block(elpis_ctx *c, int n, int il) {
    const elpis_hparams *hp = &c->m->hp;
    const elpis_layer *L = &c->m->layers[il];
    const int E = hp->n_embd, F = hp->n_ff;
    for (int i = 0; i < n; i++) rmsnorm(c->xn + (size_t)i * E, c->x + (size_t)i * E, L->ffn_norm, E, hp->rms_eps);

    act a = act_of(c->xn, n, E);
    matmul(c, &L->w_gate, &a, c->ff_gate, NULL);
    matmul(c, &L->w_up, &a, c->ff_up, NULL);
    for (size_t i = 0; i < (size_t)n * F; i++) c->ff_gate[i] = silu(c->ff_gate[i]) * c->ff_up[i];

    act h = act_of(c->ff_gate, n, F);
    matmul(c, &L->w_down, &h, c->xn, NULL);
    for (size_t i = 0; i < (size_t)n * E; i++) c->x[i] += c->xn[i];
}

static void steer(elpis_ctx *c, const elpis_batch *b, int il) {
    const int E = c->m->hp.n_embd;
    if (il == 0) return;  /* as llama.cpp: there is never a vector after block 0 */
    for (int i = 0; i < b->n; i++) {
        const float *v = c->steer[b->seq[i]];
        if (!v) continue;
        v += (size_t)il * E;
        float *x = c->x + (size_t)i * E;
        for (int e = 0; e < E; e++) x[e] += v[e];
    }
}

/* Layer capture: add every token's residual stream after block il (after
 * steering: llama.cpp's "l_out") into the caller's per-layer sums. */
static void capture(elpis_ctx *c, int n, int il) {
    const size_t E = (size_t)c->m->hp.n_embd;
    float *dst = c->capture + (size_t)il * E;
    for (int i = 0; i < n; i++) {
        const float *x = c->x + (size_t)i * E;
        for (size_t e = 0; e < E; e++) dst[e] += x[e];
    }
}

/* ---- the forward pass --------------------------------------------------------------- */

static elpis_status check_batch(elpis_ctx *c, const elpis_batch *b, elpis_error *err) {
    if (b->n <= 0 || b->n > c->p.n_batch)
        return elpis_fail(err, ELPIS_EINVAL, "batch of %d tokens is outside 1..%d", b->n, c->p.n_batch);
    int32_t n_out = 0;
    for (int i = 0; i < b->n; i++) {
        int32_t s = b->seq[i], t = b->token[i];
        if (s < 0 || s >= c->p.n_seq) return elpis_fail(err, ELPIS_EINVAL, "batch row %d: sequence %d is outside 0..%d", i, s, c->p.n_seq - 1);
        if (t < 0 || t >= c->m->hp.n_vocab) return elpis_fail(err, ELPIS_EINVAL, "batch row %d: token %d is outside the vocabulary (%d)", i, t, c->m->hp.n_vocab);
        if (b->pos[i] >= c->p.n_ctx) return elpis_fail(err, ELPIS_ERANGE, "sequence %d: context of %d positions is full", s, c->p.n_ctx);
        if (!b->logits ? i == b->n - 1 : b->logits[i]) n_out++;
    }
    if (n_out > c->p.n_outputs) return elpis_fail(err, ELPIS_EINVAL, "batch asks for %d logits rows, the context allows %d", n_out, c->p.n_outputs);
    /* positions continue each sequence's cache, in order (seq_len is a scratch copy here) */
    for (int i = 0; i < b->n; i++) {
        int32_t s = b->seq[i];
        if (b->pos[i] != c->seq_len[s]) {
            for (int k = 0; k < i; k++) c->seq_len[b->seq[k]]--;  /* undo */
            return elpis_fail(err, ELPIS_EINVAL, "batch row %d: sequence %d expects position %d, got %d", i, s, c->seq_len[s], b->pos[i]);
        }
        c->seq_len[s]++;
    }
    return ELPIS_OK;
}

static void embed(elpis_ctx *c, const elpis_batch *b) {
    const elpis_weight *te = &c->m->tok_embd;
    for (int i = 0; i < b->n; i++)
        elpis_dequantize_row(te->type, (const char *)te->data + (size_t)b->token[i] * te->row_bytes,
                             c->x + (size_t)i * te->n_in, te->n_in);
}

static void output_head(elpis_ctx *c, const elpis_batch *b) {
    const elpis_model *m = c->m;
    const int E = m->hp.n_embd;
    c->n_out = 0;
    for (int i = 0; i < b->n; i++) {
        if (b->logits ? !b->logits[i] : i != b->n - 1) continue;
        rmsnorm(c->hidden + (size_t)c->n_out * E, c->x + (size_t)i * E, m->output_norm, E, m->hp.rms_eps);
        c->out_rows[c->n_out++] = i;
    }
    act a = act_of(c->hidden, c->n_out, E);
    matmul(c, &m->output, &a, c->logits, m->output_bias);
}

/* An abandoned batch leaves the sequences as they were: the K/V rows it
 * wrote lie past seq_len and the next batch at those positions overwrites
 * them. Layer capture sums are not undone (capture runs never abort). */
static elpis_status abandon(elpis_ctx *c, const elpis_batch *b, elpis_error *err) {
    for (int i = 0; i < b->n; i++) c->seq_len[b->seq[i]]--;
    return elpis_fail(err, ELPIS_ECANCELLED, "forward pass abandoned between layers");
}

elpis_status elpis_forward(elpis_ctx *c, const elpis_batch *b, elpis_error *err) {
    elpis_status st = check_batch(c, b, err);
    if (st != ELPIS_OK) return st;
    embed(c, b);
    for (int il = 0; il < c->m->hp.n_layer; il++) {
        attention_block(c, b, il);
        ffn_block(c, b->n, il);
        steer(c, b, il);
        if (c->capture) capture(c, b->n, il);
        if (c->abort && c->abort(c->abort_ud)) return abandon(c, b, err);
    }
    output_head(c, b);
    return ELPIS_OK;
}

void elpis_ctx_set_abort(elpis_ctx *c, elpis_abort_fn fn, void *ud) {
    c->abort = fn;
    c->abort_ud = ud;
}

/* ---- context lifecycle ----------------------------------------------------------------- */

elpis_ctx_params elpis_ctx_default_params(void) {
    return (elpis_ctx_params){ .n_ctx = 0, .n_seq = 1, .n_batch = 256, .n_outputs = 0, .n_threads = 0,
                               .exact = false, .kv_type = ELPIS_F16 };
}

static void resolve_params(const elpis_model *m, elpis_ctx_params *p) {
    if (p->n_ctx <= 0) p->n_ctx = ELPIS_MIN(m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : 2048, 4096);
    if (p->n_seq <= 0) p->n_seq = 1;
    if (p->n_batch <= 0) p->n_batch = 256;
    if (p->n_outputs <= 0) p->n_outputs = p->n_seq;
    if (p->n_outputs > p->n_batch) p->n_outputs = p->n_batch;
    if (p->exact) p->kv_type = ELPIS_F32;
    if (p->kv_type != ELPIS_F32) p->kv_type = ELPIS_F16;
}

/* Largest converted activation row: any vec_dot_type costs at most ~1.2 bytes
 * per element plus block headers; F32 costs 4. */
static size_t act_row_cap(int64_t n) { return (size_t)n * 4 + 64; }

uint64_t elpis_ctx_estimate_bytes(const elpis_model *m, const elpis_ctx_params *pin) {
    elpis_ctx_params p = *pin;
    resolve_params(m, &p);
    const elpis_hparams *hp = &m->hp;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim, el = p.kv_type == ELPIS_F32 ? 4 : 2;
    uint64_t kv = 2 * (uint64_t)hp->n_layer * p.n_seq * p.n_ctx * kv_dim * el;
    uint64_t maxin = (uint64_t)ELPIS_MAX(ELPIS_MAX(hp->n_embd, hp->n_ff), hp->n_head * hp->head_dim);
    uint64_t rows = (uint64_t)p.n_batch * (2 * hp->n_embd + 2 * (uint64_t)hp->n_head * hp->head_dim + 2 * kv_dim + 2 * hp->n_ff) * 4;
    uint64_t act = (uint64_t)p.n_batch * act_row_cap((int64_t)maxin);
    int nt = p.n_threads > 0 ? p.n_threads : elpis_cpu_count();
    uint64_t per_thread = (uint64_t)nt * ((uint64_t)p.n_ctx + 2 * maxin) * 4;
    uint64_t out = (uint64_t)p.n_outputs * ((uint64_t)hp->n_vocab + hp->n_embd) * 4;
    return kv + rows + act + per_thread + out;
}

/* Allocate and touch every page now: the memory budget computed at startup is
 * then really committed, and RSS does not creep up as sequences first reach
 * deep positions. */
static void *ctx_alloc(elpis_ctx *c, size_t n) {
    c->bytes += n;
    void *p = malloc(n ? n : 1);
    if (p) memset(p, 0, n ? n : 1);
    return p;
}

elpis_status elpis_ctx_new(elpis_ctx **out, const elpis_model *m, const elpis_ctx_params *pin, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    elpis_ctx *c = calloc(1, sizeof *c);
    if (!c) return elpis_fail(err, ELPIS_ENOMEM, "context");
    c->m = m;
    c->p = *pin;
    resolve_params(m, &c->p);
    const elpis_hparams *hp = &m->hp;
    const elpis_ctx_params *p = &c->p;
    if (p->n_ctx > (1 << 24) || p->n_seq > 4096 || p->n_batch > (1 << 16)) {
        st = elpis_fail(err, ELPIS_EINVAL, "context: n_ctx %d, n_seq %d or n_batch %d out of range", p->n_ctx, p->n_seq, p->n_batch);
        goto fail;
    }
    if (!(c->kern = elpis_kernels_get())) { st = elpis_fail(err, ELPIS_EUNSUPPORTED, "no kernels for this CPU"); goto fail; }
    if ((st = elpis_pool_new(&c->pool, p->n_threads, err)) != ELPIS_OK) goto fail;
    c->n_threads = elpis_pool_size(c->pool);

    c->kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    c->kv_elsize = p->kv_type == ELPIS_F32 ? 4 : 2;
    size_t kv_bytes = (size_t)hp->n_layer * p->n_seq * p->n_ctx * c->kv_dim * c->kv_elsize;
    const size_t B = (size_t)p->n_batch, E = hp->n_embd, Q = (size_t)hp->n_head * hp->head_dim, F = hp->n_ff;
    const size_t maxin = ELPIS_MAX(ELPIS_MAX(E, F), Q);
    c->max_in = maxin;
    c->act_q_cap = B * act_row_cap((int64_t)maxin);
    c->k_cache = ctx_alloc(c, kv_bytes);
    c->v_cache = ctx_alloc(c, kv_bytes);
    c->seq_len = ctx_alloc(c, (size_t)p->n_seq * sizeof *c->seq_len);
    c->steer = ctx_alloc(c, (size_t)p->n_seq * sizeof *c->steer);
    c->x = ctx_alloc(c, B * E * 4);
    c->xn = ctx_alloc(c, B * E * 4);
    c->q = ctx_alloc(c, B * Q * 4);
    c->att = ctx_alloc(c, B * Q * 4);
    c->k = ctx_alloc(c, B * c->kv_dim * 4);
    c->v = ctx_alloc(c, B * c->kv_dim * 4);
    c->ff_gate = ctx_alloc(c, B * F * 4);
    c->ff_up = ctx_alloc(c, B * F * 4);
    c->act_q = ctx_alloc(c, c->act_q_cap);
    c->att_scores = ctx_alloc(c, (size_t)c->n_threads * p->n_ctx * 4);
    c->deq_rows = ctx_alloc(c, (size_t)c->n_threads * maxin * 4);
    c->rope_inv_freq = ctx_alloc(c, (size_t)(hp->n_rot / 2 + 1) * 4);
    c->out_rows = ctx_alloc(c, (size_t)p->n_outputs * sizeof *c->out_rows);
    c->hidden = ctx_alloc(c, (size_t)p->n_outputs * E * 4);
    c->logits = ctx_alloc(c, (size_t)p->n_outputs * hp->n_vocab * 4);
    if (!c->k_cache || !c->v_cache || !c->seq_len || !c->steer || !c->x || !c->xn || !c->q || !c->att || !c->k ||
        !c->v || !c->ff_gate || !c->ff_up || !c->act_q || !c->att_scores || !c->deq_rows || !c->rope_inv_freq ||
        !c->out_rows || !c->hidden || !c->logits) {
        st = elpis_fail(err, ELPIS_ENOMEM, "context: cannot allocate %.1f MiB (KV cache %.1f MiB)", c->bytes / 1048576.0,
                        2.0 * kv_bytes / 1048576.0);
        goto fail;
    }
    init_rope(c);
    pthread_once(&f16_once, f16_table_init);
    c->att_simd = att_simd_ok(c);
    *out = c;
    return ELPIS_OK;
fail:
    elpis_ctx_free(c);
    return st;
}

void elpis_ctx_free(elpis_ctx *c) {
    if (!c) return;
    elpis_pool_free(c->pool);
    if (c->steer)
        for (int s = 0; s < c->p.n_seq; s++) free(c->steer[s]);
    void *bufs[] = { c->k_cache, c->v_cache, c->seq_len, c->steer, c->x, c->xn, c->q, c->att, c->k, c->v,
                     c->ff_gate, c->ff_up, c->act_q, c->att_scores, c->deq_rows, c->rope_inv_freq,
                     c->out_rows, c->hidden, c->logits };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(bufs); i++) free(bufs[i]);
    free(c);
}

const elpis_ctx_params *elpis_ctx_params_of(const elpis_ctx *c) { return &c->p; }
uint64_t elpis_ctx_bytes(const elpis_ctx *c) { return c->bytes; }
int32_t elpis_ctx_n_outputs(const elpis_ctx *c) { return c->n_out; }

const float *elpis_ctx_logits(const elpis_ctx *c, int32_t i) {
    return i >= 0 && i < c->n_out ? c->logits + (size_t)i * c->m->hp.n_vocab : NULL;
}

const float *elpis_ctx_hidden(const elpis_ctx *c, int32_t i) {
    return i >= 0 && i < c->n_out ? c->hidden + (size_t)i * c->m->hp.n_embd : NULL;
}

int32_t elpis_kv_seq_len(const elpis_ctx *c, int32_t seq) {
    return seq >= 0 && seq < c->p.n_seq ? c->seq_len[seq] : 0;
}

void elpis_kv_seq_truncate(elpis_ctx *c, int32_t seq, int32_t p0) {
    if (seq < 0 || seq >= c->p.n_seq) return;
    if (p0 < 0) p0 = 0;
    if (p0 < c->seq_len[seq]) c->seq_len[seq] = p0;
}

int64_t elpis_kv_cells_used(const elpis_ctx *c) {
    int64_t n = 0;
    for (int s = 0; s < c->p.n_seq; s++) n += c->seq_len[s];
    return n;
}

elpis_status elpis_ctx_set_steering(elpis_ctx *c, int32_t seq, const float *vec, elpis_error *err) {
    if (seq < 0 || seq >= c->p.n_seq) return elpis_fail(err, ELPIS_EINVAL, "steering: sequence %d is outside 0..%d", seq, c->p.n_seq - 1);
    if (!vec) { free(c->steer[seq]); c->steer[seq] = NULL; return ELPIS_OK; }
    size_t n = (size_t)c->m->hp.n_layer * c->m->hp.n_embd;
    if (!c->steer[seq] && !(c->steer[seq] = malloc(n * sizeof(float))))
        return elpis_fail(err, ELPIS_ENOMEM, "steering vector");
    memcpy(c->steer[seq], vec, n * sizeof(float));
    return ELPIS_OK;
}

void elpis_ctx_capture_layers(elpis_ctx *c, float *sum) { c->capture = sum; }
