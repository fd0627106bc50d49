/* sched.h -- the scheduler: one thread that owns all inference state.
 *
 * INVARIANTS
 * ----------
 * - The scheduler thread is the only thread that touches the model context
 *   (KV cache, scratch, logits) and the samplers. Other threads talk to it
 *   through requests: they submit, cancel, and read output. There is no lock
 *   around inference; the only locks are a short one on the inbox and one per
 *   request's output buffer, never held while computing.
 * - Every live sequence advances in one batched forward call per step
 *   (continuous batching). A prompt is prefilled in chunks of `prefill_chunk`
 *   tokens interleaved with other sequences' decode steps.
 * - Cancellation is an atomic flag per request, checked before every step
 *   (and so between prefill chunks). A cancelled queued request leaves the
 *   queue at the next tick; a cancelled running request frees its slot and KV
 *   cells before the next batch is built. Latency: at most one step.
 * - A request's output is a bounded text buffer. When a reader falls behind
 *   and the buffer is full, that sequence pauses (back-pressure) instead of
 *   blocking the scheduler; after `stall_ms` it is cancelled (reason STALL).
 * - Requests are reference counted: the submitter holds one reference and the
 *   scheduler one while the request is queued or running. Whoever drops the
 *   last frees it, so the front end may read a finished request at leisure
 *   and the scheduler never frees memory a reader may still use.
 *
 * LIFE OF A REQUEST
 * -----------------
 *   elpis_request_new()  -> elpis_sched_submit()       QUEUED
 *   scheduler admits it to a slot (reusing a cached prefix) PREFILL
 *   prompt fully evaluated, tokens sampled               DECODE
 *   EOG / stop string / max_tokens / context full        DONE
 *   cancel flag seen                                     CANCELLED
 *   engine error                                         FAILED
 *   front end: elpis_request_read() until finished, then elpis_request_unref().
 */
#ifndef ELPIS_SCHED_H
#define ELPIS_SCHED_H

#include "elpis/base.h"
#include "elpis/model.h"
#include "elpis/sampler.h"

typedef struct elpis_sched elpis_sched;
typedef struct elpis_request elpis_request;

typedef struct elpis_sched_params {
    int32_t n_parallel;     /* slots: sequences generating at once (>= 1) */
    int32_t n_queue;        /* requests waiting for a slot beyond n_parallel */
    int32_t n_ctx;          /* positions per slot (0: model's, capped at 4096) */
    int32_t n_batch;        /* max tokens in one forward call */
    int32_t prefill_chunk;  /* max prompt tokens of one sequence per step */
    int32_t n_threads;      /* worker threads of the engine (0: CPUs) */
    size_t  out_capacity;   /* bytes buffered per request before back-pressure */
    double  stall_ms;       /* reader stalled this long -> cancel (0: never) */
    elpis_dtype kv_type;    /* ELPIS_F16 (default) or ELPIS_F32 */
} elpis_sched_params;

elpis_sched_params elpis_sched_default_params(void);

typedef enum elpis_req_state {
    ELPIS_REQ_QUEUED, ELPIS_REQ_PREFILL, ELPIS_REQ_DECODE,
    ELPIS_REQ_DONE, ELPIS_REQ_CANCELLED, ELPIS_REQ_FAILED,
} elpis_req_state;

typedef enum elpis_finish {
    ELPIS_FINISH_NONE,      /* still running */
    ELPIS_FINISH_STOP,      /* end-of-generation token or a stop string */
    ELPIS_FINISH_LENGTH,    /* max_tokens reached or the context is full */
    ELPIS_FINISH_CANCELLED,
    ELPIS_FINISH_ERROR,
} elpis_finish;

typedef enum elpis_cancel_reason {
    ELPIS_CANCEL_NONE = 0,
    ELPIS_CANCEL_CLIENT,     /* client disconnected ("client_disconnect") */
    ELPIS_CANCEL_SUPERSEDED, /* same session started a new request ("registry_new_stream") */
    ELPIS_CANCEL_SHUTDOWN,   /* server shutting down ("shutdown") */
    ELPIS_CANCEL_STALL,      /* reader stopped reading ("stall") */
    ELPIS_CANCEL_USER,       /* explicit cancel call, e.g. MCP ("user") */
    ELPIS_CANCEL_DREAM,      /* a dream gave way to a user request ("dream_interrupted") */
    ELPIS_CANCEL_REASON_COUNT
} elpis_cancel_reason;

const char *elpis_cancel_reason_name(elpis_cancel_reason r);
const char *elpis_finish_name(elpis_finish f);   /* "stop", "length", "cancelled", "error" */

typedef struct elpis_req_params {
    const int32_t *prompt;        /* copied */
    size_t n_prompt;
    elpis_sampler_params sampling;
    int32_t max_tokens;           /* <= 0: until EOG or the context is full */
    const char *const *stop;      /* stop strings, copied; the match is not output */
    size_t n_stop;
    const char *session;          /* prefix-cache affinity key, copied; may be NULL */
    const float *steering;        /* n_layer * n_embd floats, copied; NULL: none */
    bool ignore_eos;
} elpis_req_params;

/* What a reader sees. Counts are totals so far. */
typedef struct elpis_req_status {
    elpis_req_state state;
    elpis_finish finish;
    elpis_cancel_reason cancel_reason;
    int32_t n_prompt, n_cached;   /* prompt tokens, of which reused from cache */
    int32_t n_generated;
    double  t_submit_ms, t_first_token_ms, t_end_ms;  /* elpis_now_ms() stamps; 0 if not yet */
    double  t_cancel_ms;          /* when elpis_request_cancel was first called; 0 if never */
    char    error[256];           /* FAILED: why */
} elpis_req_status;

/* ---- scheduler lifecycle ----------------------------------------------------- */

/* Create the context for n_parallel slots and start the scheduler thread.
 * The model must outlive the scheduler. */
elpis_status elpis_sched_new(elpis_sched **out, const elpis_model *m, const elpis_sched_params *p, elpis_error *err);
/* Cancel everything (reason SHUTDOWN), wait for the thread, free the context.
 * Requests still referenced by front ends stay readable (finished, CANCELLED). */
void elpis_sched_free(elpis_sched *s);
/* Stop admitting (submit fails with ELPIS_ECANCELLED) and end running requests
 * with finish LENGTH at their next step: the SIGTERM drain. Non-blocking. */
void elpis_sched_drain(elpis_sched *s);

/* ---- requests ----------------------------------------------------------------- */

/* A new request holding one reference (the caller's). NULL and err on bad
 * params (empty prompt, prompt longer than the context, invalid sampling). */
elpis_request *elpis_request_new(const elpis_sched *s, const elpis_req_params *p, elpis_error *err);
void elpis_request_ref(elpis_request *r);
void elpis_request_unref(elpis_request *r);

/* Queue the request. ELPIS_ERANGE when n_parallel + n_queue requests are
 * already queued or running (HTTP 503), ELPIS_ECANCELLED while draining. */
elpis_status elpis_sched_submit(elpis_sched *s, elpis_request *r, elpis_error *err);

/* Ask the scheduler to stop the request. Idempotent; the first reason wins.
 * Any thread, never blocks. */
void elpis_request_cancel(elpis_request *r, elpis_cancel_reason why);

/* Called by the scheduler thread (never under any scheduler lock) each time
 * the request has new output or changes state. Must not block: typically it
 * resumes a suspended connection or signals a condition variable. Set it
 * before submitting. */
typedef void (*elpis_request_notify_fn)(void *arg);
void elpis_request_set_notify(elpis_request *r, elpis_request_notify_fn fn, void *arg);

/* Non-blocking read: move up to cap bytes of new text (whole UTF-8 characters)
 * into buf, fill *st (may be NULL), return the byte count. When it returns 0
 * and st->state is DONE/CANCELLED/FAILED, the stream is over. */
size_t elpis_request_read(elpis_request *r, char *buf, size_t cap, elpis_req_status *st);
bool elpis_req_state_final(elpis_req_state s);

/* Block until the request is final or timeout_ms passes (timeout < 0: forever).
 * For tests, CLI use and the session registry's bounded wait; never called by
 * the scheduler. Returns true if final. */
bool elpis_request_wait(elpis_request *r, double timeout_ms);

/* ---- observation (any thread) ----------------------------------------------- */
typedef struct elpis_sched_stats {
    int32_t n_running, n_queued;
    int64_t kv_cells_used;       /* cells held by running requests */
    int64_t kv_cells_cached;     /* cells kept for prefix reuse (reclaimable) */
    int64_t tokens_prompt, tokens_cached, tokens_generated;
    int64_t steps;
    int64_t steps_abandoned;     /* stopped between layers by a cancel (rerun without it) */
    int64_t requests_done, requests_failed;
    int64_t cancelled[ELPIS_CANCEL_REASON_COUNT];
    int32_t n_parallel, n_ctx;
} elpis_sched_stats;
void elpis_sched_get_stats(const elpis_sched *s, elpis_sched_stats *st);
const elpis_model *elpis_sched_model(const elpis_sched *s);
const elpis_sched_params *elpis_sched_params_of(const elpis_sched *s);

/* Latency histograms filled by the scheduler: time to first token and
 * inter-token gaps, in ms, with fixed Prometheus-style bucket bounds. */
#define ELPIS_LAT_BUCKETS 14
extern const double elpis_lat_bucket_ms[ELPIS_LAT_BUCKETS];   /* upper bounds; +Inf implicit */
typedef struct elpis_histogram {
    uint64_t count[ELPIS_LAT_BUCKETS + 1];   /* cumulative is computed by the printer */
    uint64_t n;
    double sum;
} elpis_histogram;
void elpis_sched_get_latency(const elpis_sched *s, elpis_histogram *ttft, elpis_histogram *itl);

#endif
