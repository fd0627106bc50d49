/* sched.c -- the scheduler thread (see sched.h for the invariants).
 *
 * DESIGN
 * ------
 * The thread loops over one step:
 *
 *   take new requests from the inbox            (short lock on s->mu)
 *   drop cancelled requests: queued ones leave the queue, running ones free
 *     their slot and KV cells                   (before building the batch)
 *   admit queued requests into free slots, reusing the longest cached prefix
 *   build one batch: 1 token for each decoding slot with room for output,
 *     then up to prefill_chunk prompt tokens for each prefilling slot
 *   elpis_forward(batch)                        (no lock held; abandoned
 *                                                after a layer if a running
 *                                                request was cancelled)
 *   sample each slot with its own sampler, detokenize, match stop strings,
 *     append text to the request's buffer, finish what is finished
 *
 * and sleeps on s->cv only when no slot can make progress. Anything that
 * changes what the loop would do (submit, cancel, a reader freeing room)
 * sets s->wake and signals s->cv.
 *
 * Slots: slot i is sequence i of the context. When a request finishes
 * normally its slot keeps its KV cells and the token list they hold, so the
 * next request of the same session (or with the same prefix) reuses them:
 * prefix caching. A cancelled or failed request's cells are dropped.
 * Cells depend on the steering vector they were computed with, so a prefix
 * is reused only by a request with exactly the same steering (or none when
 * they had none): emotion-steered streams must match their own single-stream
 * output whatever ran in the slot before.
 */
#include "sched_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const double elpis_lat_bucket_ms[ELPIS_LAT_BUCKETS] = { 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 };

elpis_sched_params elpis_sched_default_params(void) {
    return (elpis_sched_params){ .n_parallel = 4, .n_queue = 16, .n_ctx = 0, .n_batch = 512, .prefill_chunk = 256,
                                 .n_threads = 0, .out_capacity = 64 * 1024, .stall_ms = 30000, .kv_type = ELPIS_F16 };
}

void sched_wake(elpis_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void hist_add(elpis_histogram *h, double ms) {
    int b = 0;
    while (b < ELPIS_LAT_BUCKETS && ms > elpis_lat_bucket_ms[b]) b++;
    h->count[b]++;
    h->n++;
    h->sum += ms;
}

/* ---- finishing -------------------------------------------------------------- */

typedef struct final_info {
    elpis_req_state state;
    elpis_finish finish;
    elpis_cancel_reason reason;
    const char *error;
    double t_cancel;
} final_info;

static void set_final(elpis_req_status *st, void *arg) {
    const final_info *f = arg;
    st->state = f->state;
    st->finish = f->finish;
    st->cancel_reason = f->reason;
    st->t_end_ms = elpis_now_ms();   /* after the slot and KV cells were released */
    st->t_cancel_ms = f->t_cancel;
    if (f->error) snprintf(st->error, sizeof st->error, "%s", f->error);
}

/* The request leaves the scheduler: publish its final state, drop our reference. */
static void finish_req(elpis_sched *s, elpis_request *r, final_info f) {
    f.t_cancel = atomic_load(&r->t_cancel);
    req_update(r, set_final, &f);
    if (f.state == ELPIS_REQ_CANCELLED) atomic_fetch_add(&s->st_cancelled[f.reason], 1);
    else if (f.state == ELPIS_REQ_FAILED) atomic_fetch_add(&s->st_failed, 1);
    else atomic_fetch_add(&s->st_done, 1);
    atomic_fetch_sub(&s->n_live, 1);
    req_notify(r);
    elpis_request_unref(r);
}

static void update_kv_stats(elpis_sched *s) {
    int64_t used = 0, cached = 0;
    int running = 0;
    for (int i = 0; i < s->p.n_parallel; i++) {
        if (s->slots[i].req) { used += s->slots[i].n_cache; running++; }
        else cached += s->slots[i].n_cache;
    }
    atomic_store(&s->st_kv_used, used);
    atomic_store(&s->st_kv_cached, cached);
    atomic_store(&s->st_running, running);
}

/* Free slot i. Normal ends keep the cells for prefix reuse. */
static void release_slot(elpis_sched *s, int i, final_info f) {
    sched_slot *sl = &s->slots[i];
    elpis_request *r = sl->req;
    if (f.state != ELPIS_REQ_DONE) {
        elpis_kv_seq_truncate(s->ctx, i, 0);
        sl->n_cache = 0;
    }
    elpis_ctx_set_steering(s->ctx, i, NULL, NULL);
    sl->req = NULL;
    sl->pending = -1;
    sl->last_used = elpis_now_ms();
    r->slot = -1;
    finish_req(s, r, f);
    update_kv_stats(s);
}

static final_info cancelled_info(elpis_request *r) {
    return (final_info){ ELPIS_REQ_CANCELLED, ELPIS_FINISH_CANCELLED, (elpis_cancel_reason)atomic_load(&r->cancel), NULL, 0 };
}

static void flush_text(elpis_sched *s, elpis_request *r);

/* ---- queue ------------------------------------------------------------------- */

static void queue_push(elpis_sched *s, elpis_request *r) {
    r->next = NULL;
    if (s->queue_tail) s->queue_tail->next = r;
    else s->queue_head = r;
    s->queue_tail = r;
}

static elpis_request *queue_pop(elpis_sched *s) {
    elpis_request *r = s->queue_head;
    if (r && !(s->queue_head = r->next)) s->queue_tail = NULL;
    return r;
}

static int queue_len(const elpis_sched *s) {
    int n = 0;
    for (elpis_request *r = s->queue_head; r; r = r->next) n++;
    return n;
}

/* Remove cancelled requests from the queue; end them. */
static void reap_queue(elpis_sched *s, bool drain) {
    elpis_request *keep_head = NULL, *keep_tail = NULL, *r;
    while ((r = queue_pop(s))) {
        if (atomic_load(&r->cancel)) finish_req(s, r, cancelled_info(r));
        else if (drain) finish_req(s, r, (final_info){ ELPIS_REQ_DONE, ELPIS_FINISH_LENGTH, ELPIS_CANCEL_NONE, NULL, 0 });
        else {
            r->next = NULL;
            if (keep_tail) keep_tail->next = r;
            else keep_head = r;
            keep_tail = r;
        }
    }
    s->queue_head = keep_head;
    s->queue_tail = keep_tail;
    atomic_store(&s->st_queued, queue_len(s));
}

static void reap_slots(elpis_sched *s, bool drain) {
    for (int i = 0; i < s->p.n_parallel; i++) {
        elpis_request *r = s->slots[i].req;
        if (!r) continue;
        if (atomic_load(&r->cancel)) release_slot(s, i, cancelled_info(r));
        else if (drain) {
            flush_text(s, r);
            release_slot(s, i, (final_info){ ELPIS_REQ_DONE, ELPIS_FINISH_LENGTH, ELPIS_CANCEL_NONE, NULL, 0 });
        } else if (s->p.stall_ms > 0 && r->t_paused > 0 && elpis_now_ms() - r->t_paused > s->p.stall_ms) {
            elpis_request_cancel(r, ELPIS_CANCEL_STALL);
            release_slot(s, i, cancelled_info(r));
        }
    }
}

/* ---- admission with prefix reuse ------------------------------------------------ */

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = 0, m = na < nb ? na : nb;
    while (n < m && a[n] == b[n]) n++;
    return n;
}

static size_t steer_floats(const elpis_sched *s) { return (size_t)s->m->hp.n_layer * (size_t)s->m->hp.n_embd; }

/* Tokens of r's prompt whose cells slot sl can reuse: none when the cells
 * were computed under other steering. */
static int32_t reusable(const elpis_sched *s, const sched_slot *sl, const elpis_request *r) {
    bool same = sl->steered == (r->steering != NULL) &&
                (!r->steering || (sl->steer && !memcmp(sl->steer, r->steering, steer_floats(s) * sizeof(float))));
    return same ? common_prefix(sl->cache, sl->n_cache, r->prompt, r->n_prompt) : 0;
}

/* Remember r's steering as the one of slot sl's cells. Out of memory leaves
 * steered with no copy, which reusable() never matches: only reuse is lost. */
static void note_steering(const elpis_sched *s, sched_slot *sl, const elpis_request *r) {
    sl->steered = r->steering != NULL;
    if (!r->steering) return;
    if (!sl->steer && !(sl->steer = malloc(steer_floats(s) * sizeof(float)))) return;
    memcpy(sl->steer, r->steering, steer_floats(s) * sizeof(float));
}

/* Best free slot for r: same session first, then the longest common prefix,
 * then the least recently used. -1 if none is free. */
static int pick_slot(elpis_sched *s, const elpis_request *r) {
    int best = -1;
    int32_t best_common = -1;
    for (int i = 0; i < s->p.n_parallel; i++) {
        sched_slot *sl = &s->slots[i];
        if (sl->req) continue;
        if (r->session && sl->session && !strcmp(r->session, sl->session)) return i;
        int32_t c = reusable(s, sl, r);
        if (c > best_common || (c == best_common && sl->last_used < s->slots[best].last_used)) {
            best = i;
            best_common = c;
        }
    }
    return best;
}

typedef struct admit_info { int32_t cached; } admit_info;

static void set_admitted(elpis_req_status *st, void *arg) {
    st->state = ELPIS_REQ_PREFILL;
    st->n_cached = ((admit_info *)arg)->cached;
}

static void admit(elpis_sched *s) {
    while (s->queue_head) {
        int i = pick_slot(s, s->queue_head);
        if (i < 0) break;
        elpis_request *r = queue_pop(s);
        sched_slot *sl = &s->slots[i];
        int32_t keep = reusable(s, sl, r);
        note_steering(s, sl, r);
        if (keep >= r->n_prompt) keep = r->n_prompt - 1;   /* the last prompt token must run for logits */
        elpis_kv_seq_truncate(s->ctx, i, keep);
        sl->n_cache = keep;
        sl->n_fed = keep;
        sl->pending = -1;
        sl->req = r;
        free(sl->session);
        sl->session = r->session ? strdup(r->session) : NULL;
        r->slot = i;
        elpis_ctx_set_steering(s->ctx, i, r->steering, NULL);
        atomic_fetch_add(&s->st_cached, keep);
        atomic_fetch_add(&s->st_prompt, r->n_prompt);
        admit_info ai = { keep };
        req_update(r, set_admitted, &ai);
        req_notify(r);
    }
    atomic_store(&s->st_queued, queue_len(s));
    update_kv_stats(s);
}

/* ---- building a batch -------------------------------------------------------------- */

/* Room for one more token's text plus what the stop-string hold may release. */
static bool has_output_room(elpis_sched *s, elpis_request *r) {
    if (req_out_room(r) >= s->piece_cap + r->hold_cap) { r->t_paused = 0; return true; }
    atomic_store(&r->want_room, true);
    if (req_out_room(r) >= s->piece_cap + r->hold_cap) {  /* the reader freed room meanwhile */
        atomic_store(&r->want_room, false);
        r->t_paused = 0;
        return true;
    }
    if (r->t_paused == 0) r->t_paused = elpis_now_ms();
    return false;
}

static int add_row(elpis_sched *s, int n, int slot, int32_t tok, bool logits) {
    sched_slot *sl = &s->slots[slot];
    s->b_tok[n] = tok;
    s->b_pos[n] = sl->n_cache;
    s->b_seq[n] = slot;
    s->b_logits[n] = logits;
    sl->cache[sl->n_cache++] = tok;
    return n + 1;
}

/* Returns the number of rows; b_out_slot[0..n_out) lists the slot of each
 * logits row, in row order. */
static int build_batch(elpis_sched *s, int *n_out) {
    int n = 0;
    *n_out = 0;
    for (int i = 0; i < s->p.n_parallel; i++) {          /* decode: one token each */
        sched_slot *sl = &s->slots[i];
        if (!sl->req || sl->pending < 0 || !has_output_room(s, sl->req)) continue;
        n = add_row(s, n, i, sl->pending, true);
        sl->pending = -1;
    }
    s->b_n_decode = n;
    for (int i = 0; i < s->p.n_parallel && n < s->p.n_batch; i++) {  /* prefill: a chunk each */
        sched_slot *sl = &s->slots[i];
        elpis_request *r = sl->req;
        if (!r || sl->n_fed >= r->n_prompt) continue;
        int32_t take = ELPIS_MIN(ELPIS_MIN(r->n_prompt - sl->n_fed, s->p.prefill_chunk), s->p.n_batch - n);
        for (int32_t k = 0; k < take; k++, sl->n_fed++)
            n = add_row(s, n, i, r->prompt[sl->n_fed], sl->n_fed + 1 == r->n_prompt);
    }
    /* elpis_forward returns logits rows in batch order */
    for (int row = 0; row < n; row++)
        if (s->b_logits[row]) s->b_out_slot[(*n_out)++] = s->b_seq[row];
    return n;
}

/* ---- after the forward pass: sampling and text ---------------------------------------- */

/* Longest suffix of h that is a proper prefix of some stop string. */
static size_t stop_prefix_len(const elpis_request *r, const char *h, size_t n) {
    size_t best = 0;
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = ELPIS_MIN(sl - 1, n); k > best; k--)
            if (!memcmp(h + n - k, r->stop[i], k)) { best = k; break; }
    }
    return best;
}

/* Append a piece to the hold buffer; release what cannot start a stop string.
 * Returns true when a stop string matched (text before it was released). */
static bool push_text(elpis_request *r, const char *piece, size_t n) {
    if (r->n_stop == 0) { req_emit(r, piece, n); return false; }
    memcpy(r->hold + r->hold_len, piece, n);
    r->hold_len += n;
    for (size_t i = 0; i < r->n_stop; i++) {
        const char *hit = memmem(r->hold, r->hold_len, r->stop[i], strlen(r->stop[i]));
        if (hit) {
            req_emit(r, r->hold, (size_t)(hit - r->hold));
            r->hold_len = 0;
            return true;
        }
    }
    size_t keep = stop_prefix_len(r, r->hold, r->hold_len);
    req_emit(r, r->hold, r->hold_len - keep);
    memmove(r->hold, r->hold + r->hold_len - keep, keep);
    r->hold_len = keep;
    return false;
}

static void flush_text(elpis_sched *s, elpis_request *r) {
    req_emit(r, r->hold, r->hold_len);
    r->hold_len = 0;
    req_emit(r, s->piece, elpis_detok_flush(&r->dt, s->piece, s->piece_cap));
}

typedef struct token_info { double now; } token_info;

static void set_token(elpis_req_status *st, void *arg) {
    st->state = ELPIS_REQ_DECODE;
    st->n_generated++;
    if (st->t_first_token_ms == 0) st->t_first_token_ms = ((token_info *)arg)->now;
}

static void record_latency(elpis_sched *s, elpis_request *r, double now) {
    pthread_mutex_lock(&s->hist_mu);
    if (r->t_last_token == 0) hist_add(&s->ttft, now - r->status.t_submit_ms);  /* t_submit is immutable once queued */
    else hist_add(&s->itl, now - r->t_last_token);
    pthread_mutex_unlock(&s->hist_mu);
    r->t_last_token = now;
}

/* One sampled token for slot i: emit it or finish the request. */
static void on_token(elpis_sched *s, int i, const float *logits) {
    sched_slot *sl = &s->slots[i];
    elpis_request *r = sl->req;
    int32_t tok = elpis_sampler_sample(r->smp, logits);
    final_info done = { ELPIS_REQ_DONE, ELPIS_FINISH_STOP, ELPIS_CANCEL_NONE, NULL, 0 };
    if (!r->ignore_eos && elpis_vocab_is_eog(s->m->vocab, tok)) {
        flush_text(s, r);
        release_slot(s, i, done);
        return;
    }
    double now = elpis_now_ms();
    elpis_sampler_accept(r->smp, tok);
    record_latency(s, r, now);
    atomic_fetch_add(&s->st_generated, 1);
    token_info ti = { now };
    req_update(r, set_token, &ti);
    size_t len = elpis_detok_push(&r->dt, tok, s->piece, s->piece_cap);
    bool stopped = push_text(r, s->piece, len);
    if (!stopped && r->max_tokens > 0 && r->status.n_generated >= r->max_tokens) done.finish = ELPIS_FINISH_LENGTH;
    else if (!stopped && sl->n_cache >= s->p.n_ctx) done.finish = ELPIS_FINISH_LENGTH;  /* no position left to feed it */
    else if (!stopped) {
        sl->pending = tok;
        req_notify(r);
        return;
    }
    if (!stopped) flush_text(s, r);
    release_slot(s, i, done);
}

/* The forward pass abandoned the batch (a cancel arrived mid-step): put
 * every slot back as build_batch found it, so the next step rebuilds the
 * same rows for the requests that are still running. */
static void unbuild_batch(elpis_sched *s, int n) {
    for (int row = n - 1; row >= 0; row--) {
        sched_slot *sl = &s->slots[s->b_seq[row]];
        sl->n_cache--;
        if (row < s->b_n_decode) sl->pending = s->b_tok[row];
        else sl->n_fed--;
    }
}

/* Asked by elpis_forward after every layer: has a running request been
 * cancelled? Then the step is abandoned and the next one frees its slot,
 * so cancel -> slot free waits for one layer, not a whole step. */
static bool cancel_pending(void *ud) {
    const elpis_sched *s = ud;
    for (int i = 0; i < s->p.n_parallel; i++) {
        const elpis_request *r = s->slots[i].req;
        if (r && atomic_load_explicit(&r->cancel, memory_order_relaxed)) return true;
    }
    return false;
}

static void fail_batch(elpis_sched *s, int n, const char *msg) {
    for (int row = 0; row < n; row++) {
        int i = s->b_seq[row];
        if (s->slots[i].req) release_slot(s, i, (final_info){ ELPIS_REQ_FAILED, ELPIS_FINISH_ERROR, ELPIS_CANCEL_NONE, msg, 0 });
    }
}

/* ---- the loop ------------------------------------------------------------------------------ */

static bool any_runnable(elpis_sched *s) {
    if (s->queue_head) {
        for (int i = 0; i < s->p.n_parallel; i++) if (!s->slots[i].req) return true;
    }
    for (int i = 0; i < s->p.n_parallel; i++) {
        sched_slot *sl = &s->slots[i];
        if (!sl->req) continue;
        if (sl->n_fed < sl->req->n_prompt) return true;
        if (sl->pending >= 0 && !sl->req->t_paused) return true;
    }
    return false;
}

static bool any_paused(elpis_sched *s) {
    for (int i = 0; i < s->p.n_parallel; i++)
        if (s->slots[i].req && s->slots[i].req->t_paused) return true;
    return false;
}

/* Take the inbox; sleep first if nothing can progress. Returns false to stop. */
static bool take_inbox(elpis_sched *s) {
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->wake && !any_runnable(s)) {
        if (any_paused(s)) {  /* wake up now and then to enforce stall_ms */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            break;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    s->wake = false;
    elpis_request *in = s->inbox_head;
    s->inbox_head = s->inbox_tail = NULL;
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        elpis_request *next = in->next;
        queue_push(s, in);
        in = next;
    }
    return !stop;
}

static void shutdown_all(elpis_sched *s) {
    elpis_request *r;
    for (int i = 0; i < s->p.n_parallel; i++)
        if ((r = s->slots[i].req)) {
            elpis_request_cancel(r, ELPIS_CANCEL_SHUTDOWN);
            release_slot(s, i, cancelled_info(r));
        }
    while ((r = queue_pop(s))) {
        elpis_request_cancel(r, ELPIS_CANCEL_SHUTDOWN);
        finish_req(s, r, cancelled_info(r));
    }
    atomic_store(&s->st_queued, 0);
}

static void step(elpis_sched *s) {
    bool drain = atomic_load(&s->draining);
    reap_queue(s, drain);
    reap_slots(s, drain);
    admit(s);
    int n_out = 0, n = build_batch(s, &n_out);
    if (n == 0) return;
    elpis_error err = { 0 };
    elpis_batch b = { .n = n, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_logits };
    elpis_status st = elpis_forward(s->ctx, &b, &err);
    if (st == ELPIS_ECANCELLED) {
        unbuild_batch(s, n);
        atomic_fetch_add(&s->st_abandoned, 1);
        return;
    }
    if (st != ELPIS_OK) {
        elpis_log(ELPIS_LOG_ERROR, "scheduler: forward failed: %s", err.msg);
        fail_batch(s, n, err.msg);
        return;
    }
    atomic_fetch_add(&s->st_steps, 1);
    for (int k = 0; k < n_out; k++) on_token(s, s->b_out_slot[k], elpis_ctx_logits(s->ctx, k));
    update_kv_stats(s);
}

static void *sched_main(void *arg) {
    elpis_sched *s = arg;
    while (take_inbox(s)) step(s);
    shutdown_all(s);
    update_kv_stats(s);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------------ */

static elpis_status alloc_state(elpis_sched *s, elpis_error *err) {
    const int B = s->p.n_batch, P = s->p.n_parallel;
    s->slots = calloc((size_t)P, sizeof *s->slots);
    s->b_tok = calloc((size_t)B, sizeof *s->b_tok);
    s->b_pos = calloc((size_t)B, sizeof *s->b_pos);
    s->b_seq = calloc((size_t)B, sizeof *s->b_seq);
    s->b_logits = calloc((size_t)B, sizeof *s->b_logits);
    s->b_out_slot = calloc((size_t)P, sizeof *s->b_out_slot);
    s->piece_cap = elpis_detok_cap(s->m->vocab);
    s->piece = malloc(s->piece_cap);
    if (!s->slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_logits || !s->b_out_slot || !s->piece)
        return elpis_fail(err, ELPIS_ENOMEM, "scheduler state");
    for (int i = 0; i < P; i++) {
        s->slots[i].pending = -1;
        if (!(s->slots[i].cache = calloc((size_t)s->p.n_ctx, sizeof(int32_t)))) return elpis_fail(err, ELPIS_ENOMEM, "slot cache");
    }
    return ELPIS_OK;
}

static elpis_status check_params(elpis_sched_params *p, const elpis_model *m, elpis_error *err) {
    if (p->n_parallel < 1 || p->n_parallel > 256) return elpis_fail(err, ELPIS_EINVAL, "parallel: %d is out of range 1..256", p->n_parallel);
    if (p->n_queue < 0 || p->n_queue > 100000) return elpis_fail(err, ELPIS_EINVAL, "queue: %d is out of range 0..100000", p->n_queue);
    if (p->n_ctx <= 0) p->n_ctx = ELPIS_MIN(m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : 2048, 4096);
    if (p->n_ctx < 8 || p->n_ctx > (1 << 20)) return elpis_fail(err, ELPIS_EINVAL, "ctx: %d is out of range 8..%d", p->n_ctx, 1 << 20);
    if (p->prefill_chunk <= 0) p->prefill_chunk = 256;
    if (p->n_batch < p->n_parallel + 1) p->n_batch = p->n_parallel + p->prefill_chunk;
    if (p->out_capacity < 4096) p->out_capacity = 4096;
    return ELPIS_OK;
}

elpis_status elpis_sched_new(elpis_sched **out, const elpis_model *m, const elpis_sched_params *pin, elpis_error *err) {
    elpis_status st;
    elpis_sched *s = calloc(1, sizeof *s);
    if (!s) return elpis_fail(err, ELPIS_ENOMEM, "scheduler");
    s->m = m;
    s->p = *pin;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->hist_mu, NULL);
    if ((st = check_params(&s->p, m, err)) != ELPIS_OK) goto fail;
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = s->p.n_ctx;
    cp.n_seq = s->p.n_parallel;
    cp.n_batch = s->p.n_batch;
    cp.n_outputs = s->p.n_parallel;
    cp.n_threads = s->p.n_threads;
    cp.kv_type = s->p.kv_type;
    if ((st = elpis_ctx_new(&s->ctx, m, &cp, err)) != ELPIS_OK) goto fail;
    elpis_ctx_set_abort(s->ctx, cancel_pending, s);
    if ((st = alloc_state(s, err)) != ELPIS_OK) goto fail;
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) { st = elpis_fail(err, ELPIS_ENOMEM, "cannot start the scheduler thread"); goto fail; }
    s->thread_started = true;
    *out = s;
    return ELPIS_OK;
fail:
    elpis_sched_free(s);
    return st;
}

void elpis_sched_free(elpis_sched *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    /* requests submitted after the thread's last look at the inbox */
    for (elpis_request *r = s->inbox_head, *next; r; r = next) {
        next = r->next;
        elpis_request_cancel(r, ELPIS_CANCEL_SHUTDOWN);
        finish_req(s, r, cancelled_info(r));
    }
    if (s->slots)
        for (int i = 0; i < s->p.n_parallel; i++) { free(s->slots[i].cache); free(s->slots[i].session); free(s->slots[i].steer); }
    free(s->slots);
    free(s->b_tok); free(s->b_pos); free(s->b_seq); free(s->b_logits); free(s->b_out_slot); free(s->piece);
    elpis_ctx_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->hist_mu);
    free(s);
}

void elpis_sched_drain(elpis_sched *s) {
    atomic_store(&s->draining, true);
    sched_wake(s);
}

static void set_submitted(elpis_req_status *st, void *arg) {
    (void)arg;
    st->t_submit_ms = elpis_now_ms();
}

elpis_status elpis_sched_submit(elpis_sched *s, elpis_request *r, elpis_error *err) {
    if (atomic_load(&s->draining)) return elpis_fail(err, ELPIS_ECANCELLED, "the server is shutting down");
    int live = atomic_load(&s->n_live);
    do {
        if (live >= s->p.n_parallel + s->p.n_queue)
            return elpis_fail(err, ELPIS_ERANGE, "all %d slots and %d queue places are taken", s->p.n_parallel, s->p.n_queue);
    } while (!atomic_compare_exchange_weak(&s->n_live, &live, live + 1));
    req_update(r, set_submitted, NULL);
    elpis_request_ref(r);                /* the scheduler's reference */
    atomic_store(&r->sched, s);
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        atomic_store(&r->sched, NULL);
        atomic_fetch_sub(&s->n_live, 1);
        elpis_request_unref(r);
        return elpis_fail(err, ELPIS_ECANCELLED, "the scheduler has stopped");
    }
    r->next = NULL;
    if (s->inbox_tail) s->inbox_tail->next = r;
    else s->inbox_head = r;
    s->inbox_tail = r;
    s->wake = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return ELPIS_OK;
}

void elpis_sched_get_stats(const elpis_sched *s, elpis_sched_stats *st) {
    memset(st, 0, sizeof *st);
    elpis_sched *m = (elpis_sched *)s;   /* atomics: loads only */
    st->n_running = atomic_load(&m->st_running);
    st->n_queued = atomic_load(&m->st_queued);
    st->kv_cells_used = atomic_load(&m->st_kv_used);
    st->kv_cells_cached = atomic_load(&m->st_kv_cached);
    st->tokens_prompt = atomic_load(&m->st_prompt);
    st->tokens_cached = atomic_load(&m->st_cached);
    st->tokens_generated = atomic_load(&m->st_generated);
    st->steps = atomic_load(&m->st_steps);
    st->steps_abandoned = atomic_load(&m->st_abandoned);
    st->requests_done = atomic_load(&m->st_done);
    st->requests_failed = atomic_load(&m->st_failed);
    for (int i = 0; i < ELPIS_CANCEL_REASON_COUNT; i++) st->cancelled[i] = atomic_load(&m->st_cancelled[i]);
    st->n_parallel = s->p.n_parallel;
    st->n_ctx = s->p.n_ctx;
}

void elpis_sched_get_latency(const elpis_sched *s, elpis_histogram *ttft, elpis_histogram *itl) {
    elpis_sched *m = (elpis_sched *)s;
    pthread_mutex_lock(&m->hist_mu);
    if (ttft) *ttft = m->ttft;
    if (itl) *itl = m->itl;
    pthread_mutex_unlock(&m->hist_mu);
}

const elpis_model *elpis_sched_model(const elpis_sched *s) { return s->m; }
const elpis_sched_params *elpis_sched_params_of(const elpis_sched *s) { return &s->p; }
