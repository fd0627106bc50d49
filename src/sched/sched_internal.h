/* sched_internal.h -- structures shared by sched.c and request.c only. */
#ifndef ELPIS_SCHED_INTERNAL_H
#define ELPIS_SCHED_INTERNAL_H

#include "elpis/sched.h"
#include "elpis/tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>

struct elpis_request {
    atomic_int refs;
    atomic_int cancel;                 /* elpis_cancel_reason; first writer wins */
    _Atomic(elpis_sched *) sched;      /* set at submit, for wake-ups */
    atomic_bool want_room;             /* scheduler paused us for output room */
    _Atomic double t_cancel;           /* elpis_now_ms() of the first cancel, 0 if none */

    /* immutable after elpis_request_new */
    int32_t *prompt;
    int32_t n_prompt;
    int32_t max_tokens;
    char **stop;
    size_t n_stop, max_stop_len;
    char *session;
    float *steering;
    bool ignore_eos;
    elpis_request_notify_fn notify;
    void *notify_arg;

    /* shared, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;                 /* broadcast when the state becomes final */
    char *out;                         /* unread text: out[out_start .. out_start+out_len) */
    size_t out_cap, out_start, out_len;
    elpis_req_status status;

    /* scheduler thread only */
    elpis_request *next;               /* inbox / queue link */
    int slot;                          /* -1 while queued */
    elpis_sampler *smp;
    elpis_detok dt;
    char *hold;                        /* text held back: could start a stop string */
    size_t hold_len, hold_cap;
    double t_last_token, t_paused;
};

struct elpis_sched;

/* request.c, writer side (scheduler thread) */
size_t req_out_room(elpis_request *r);
void   req_emit(elpis_request *r, const char *text, size_t n);
void   req_update(elpis_request *r, void (*fn)(elpis_req_status *st, void *arg), void *arg);
void   req_notify(elpis_request *r);

/* sched.c */
void sched_wake(struct elpis_sched *s);

typedef struct sched_slot {
    elpis_request *req;                /* NULL: free */
    int32_t *cache;                    /* tokens whose K/V are in this slot, [n_ctx] */
    int32_t n_cache;
    char *session;                     /* session of the last request served */
    float *steer;                      /* steering the cached cells were computed with, [n_layer*n_embd] */
    bool steered;                      /* false: they were computed without steering */
    double last_used;
    int32_t n_fed;                     /* prompt tokens evaluated so far */
    int32_t pending;                   /* sampled token still to be fed, or -1 */
} sched_slot;

struct elpis_sched {
    const elpis_model *m;
    elpis_sched_params p;
    elpis_ctx *ctx;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;                /* guards inbox, stop, wake */
    pthread_cond_t cv;
    elpis_request *inbox_head, *inbox_tail;
    bool stop;
    bool wake;                         /* something happened since the last look */
    atomic_bool draining;
    atomic_int n_live;                 /* submitted and not yet final */

    /* scheduler thread only */
    elpis_request *queue_head, *queue_tail;
    sched_slot *slots;
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    int *b_out_slot;                   /* output row -> slot */
    int b_n_decode;                    /* rows [0, b_n_decode) are decode rows (one per slot) */
    char *piece;                       /* detokenizer scratch */
    size_t piece_cap;

    /* observation */
    atomic_int st_running, st_queued;
    atomic_llong st_kv_used, st_kv_cached, st_prompt, st_cached, st_generated, st_steps, st_done, st_failed;
    atomic_llong st_abandoned;     /* steps elpis_forward abandoned for a cancel */
    atomic_llong st_cancelled[ELPIS_CANCEL_REASON_COUNT];
    pthread_mutex_t hist_mu;
    elpis_histogram ttft, itl;
};

#endif
