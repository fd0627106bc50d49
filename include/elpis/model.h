/* model.h -- a loaded GGUF model and the contexts that run it.
 *
 * elpis_model is immutable after load: weights point into the read-only
 * mapping, small vectors (norms, biases) are converted to F32 once. Any number
 * of contexts may share one model.
 *
 * elpis_ctx owns everything a forward pass mutates: the KV cache (one slot of
 * n_ctx positions per sequence), scratch buffers sized once at creation, the
 * logits of the last pass, per-sequence steering vectors, and a worker pool.
 * A context must be used by one thread at a time (in the server: only the
 * scheduler thread); its forward pass allocates nothing.
 *
 * A batch holds tokens of any number of sequences. Within a sequence,
 * positions must continue exactly where its cache ends (pos == seq_len), in
 * order; elpis_forward checks this and fails cleanly otherwise. Every token
 * of a batch is computed with the same kernels in the same order whatever else
 * is in the batch, so a sequence's logits never depend on its neighbours
 * (batch invariance).
 */
#ifndef ELPIS_MODEL_H
#define ELPIS_MODEL_H

#include "elpis/base.h"
#include "elpis/gguf.h"
#include "elpis/quant.h"
#include "elpis/tokenizer.h"

typedef enum elpis_arch { ELPIS_ARCH_LLAMA, ELPIS_ARCH_QWEN2, ELPIS_ARCH_QWEN3 } elpis_arch;
typedef enum elpis_rope_type { ELPIS_ROPE_NORM, ELPIS_ROPE_NEOX } elpis_rope_type;

typedef struct elpis_hparams {
    elpis_arch arch;
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_ff;
    int32_t n_head, n_head_kv, head_dim, n_rot;
    float   rms_eps, rope_base, rope_freq_scale;
    elpis_rope_type rope_type;
} elpis_hparams;

/* A 2-D weight stored row-major as W[n_out][n_in] (GGUF shape {n_in, n_out}),
 * or, when `packed`, as n_out/8 groups of 8 rows (quant.h, "packed weights";
 * group g at data + g*elpis_pack8_bytes(type, n_in)). */
typedef struct elpis_weight {
    const void *data;
    elpis_dtype type;
    int64_t n_in, n_out;
    size_t row_bytes;
    bool packed;
} elpis_weight;

typedef struct elpis_layer {
    float *attn_norm, *ffn_norm;             /* [n_embd] */
    float *q_norm, *k_norm;                  /* [head_dim] (qwen3) or NULL */
    float *bq, *bk, *bv, *bo;                /* biases or NULL */
    elpis_weight wq, wk, wv, wo;
    elpis_weight w_gate, w_up, w_down;
} elpis_layer;

typedef struct elpis_model {
    gguf_file     *gguf;
    elpis_hparams  hp;
    elpis_vocab   *vocab;
    char          *name;            /* general.name or the file's base name */
    char          *chat_template;   /* tokenizer.chat_template or NULL */
    elpis_weight   tok_embd, output;/* output == tok_embd when tied */
    bool           tied_output;
    float         *output_norm, *output_bias;
    float         *rope_freqs;      /* [n_rot/2] or NULL */
    elpis_layer   *layers;
    uint64_t       weight_bytes;    /* bytes of all tensors */
} elpis_model;

elpis_status elpis_model_load(elpis_model **out, const char *path, elpis_error *err);
void elpis_model_free(elpis_model *m);
const char *elpis_arch_name(elpis_arch a);

/* ---- contexts ----------------------------------------------------------- */

typedef struct elpis_ctx_params {
    int32_t n_ctx;        /* positions per sequence (0: min(train ctx, 4096)) */
    int32_t n_seq;        /* sequences (KV slots), >= 1 */
    int32_t n_batch;      /* max tokens per forward call */
    int32_t n_outputs;    /* max logits rows per forward call (0: n_seq) */
    int32_t n_threads;    /* 0: CPUs in the affinity mask */
    bool    exact;        /* reference path: dequantized weights, F32 activations and KV */
    elpis_dtype kv_type;  /* ELPIS_F16 (default) or ELPIS_F32; forced to F32 when exact */
} elpis_ctx_params;

elpis_ctx_params elpis_ctx_default_params(void);

typedef struct elpis_ctx elpis_ctx;

elpis_status elpis_ctx_new(elpis_ctx **out, const elpis_model *m, const elpis_ctx_params *p, elpis_error *err);
void elpis_ctx_free(elpis_ctx *c);
const elpis_ctx_params *elpis_ctx_params_of(const elpis_ctx *c);
/* Bytes the context allocated (KV cache + scratch), for budgets and `info`. */
uint64_t elpis_ctx_bytes(const elpis_ctx *c);
uint64_t elpis_ctx_estimate_bytes(const elpis_model *m, const elpis_ctx_params *p);

typedef struct elpis_batch {
    int32_t n;
    const int32_t *token;   /* [n] */
    const int32_t *pos;     /* [n] */
    const int32_t *seq;     /* [n] sequence (KV slot) of each token */
    const bool    *logits;  /* [n] rows that need logits; NULL: only the last */
} elpis_batch;

/* Run the batch. On success logits of the flagged rows are available, in
 * batch order, through elpis_ctx_logits(c, 0..n_out-1). */
elpis_status elpis_forward(elpis_ctx *c, const elpis_batch *b, elpis_error *err);
int32_t      elpis_ctx_n_outputs(const elpis_ctx *c);

/* Abandoning a batch: when set, fn(ud) is asked after every layer; true
 * makes elpis_forward undo the batch (every sequence keeps the length it
 * had) and return ELPIS_ECANCELLED. Running the same rows again gives the
 * same bits. The scheduler uses it so a cancel waits for one layer, not a
 * whole step. fn runs on the calling thread; NULL clears it. */
typedef bool (*elpis_abort_fn)(void *ud);
void elpis_ctx_set_abort(elpis_ctx *c, elpis_abort_fn fn, void *ud);
const float *elpis_ctx_logits(const elpis_ctx *c, int32_t i);   /* [n_vocab] */
/* Final hidden state (after output norm) of output row i: [n_embd]. */
const float *elpis_ctx_hidden(const elpis_ctx *c, int32_t i);

/* KV cache per sequence. */
int32_t elpis_kv_seq_len(const elpis_ctx *c, int32_t seq);
/* Drop positions >= p0 of `seq` (p0 = 0 clears it). */
void    elpis_kv_seq_truncate(elpis_ctx *c, int32_t seq, int32_t p0);
int64_t elpis_kv_cells_used(const elpis_ctx *c);

/* Steering: add vec[il * n_embd ...] to the residual stream of sequence `seq`
 * after block il (row 0 is never used, as llama.cpp's control vectors).
 * `vec` holds n_layer * n_embd floats, is copied, and NULL clears it. */
elpis_status elpis_ctx_set_steering(elpis_ctx *c, int32_t seq, const float *vec, elpis_error *err);

/* Layer capture (`elpis vectors build`): while `sum` is set, every
 * elpis_forward ADDS the residual stream after block il -- after steering,
 * where llama.cpp's control-vector generator reads "l_out" -- of every token
 * of the batch into sum[il * n_embd ...], il = 0..n_layer-1. The caller zeroes
 * `sum`, counts the tokens it runs and divides. `sum` holds n_layer * n_embd
 * floats and must stay valid while set; NULL stops capturing. */
#define ELPIS_HAVE_LAYER_CAPTURE 1
void elpis_ctx_capture_layers(elpis_ctx *c, float *sum);

#endif
