/* request.c -- requests: creation, reference counting, cancellation, and the
 * output buffer between the scheduler (writer) and a front end (reader).
 *
 * A request's fields fall in three groups:
 *   - immutable after elpis_request_new (prompt, sampling, stop strings, ...);
 *   - shared and guarded by r->mu: the output text buffer and the status;
 *   - private to the scheduler thread (slot, detokenizer, hold buffer): see
 *     sched_internal.h; nobody else reads them.
 * The cancel flag is an atomic outside all of these, so cancelling never waits.
 */
#include "sched_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *elpis_cancel_reason_name(elpis_cancel_reason r) {
    switch (r) {
    case ELPIS_CANCEL_NONE: return "none";
    case ELPIS_CANCEL_CLIENT: return "client_disconnect";
    case ELPIS_CANCEL_SUPERSEDED: return "registry_new_stream";
    case ELPIS_CANCEL_SHUTDOWN: return "shutdown";
    case ELPIS_CANCEL_STALL: return "stall";
    case ELPIS_CANCEL_USER: return "user";
    case ELPIS_CANCEL_DREAM: return "dream_interrupted";
    case ELPIS_CANCEL_REASON_COUNT: break;
    }
    return "unknown";
}

const char *elpis_finish_name(elpis_finish f) {
    switch (f) {
    case ELPIS_FINISH_NONE: return "none";
    case ELPIS_FINISH_STOP: return "stop";
    case ELPIS_FINISH_LENGTH: return "length";
    case ELPIS_FINISH_CANCELLED: return "cancelled";
    case ELPIS_FINISH_ERROR: return "error";
    }
    return "unknown";
}

bool elpis_req_state_final(elpis_req_state s) {
    return s == ELPIS_REQ_DONE || s == ELPIS_REQ_CANCELLED || s == ELPIS_REQ_FAILED;
}

static elpis_status copy_params(elpis_request *r, const elpis_sched *s, const elpis_req_params *p, elpis_error *err) {
    const elpis_model *m = s->m;
    if (!(r->prompt = malloc(p->n_prompt * sizeof *r->prompt))) return elpis_fail(err, ELPIS_ENOMEM, "request prompt");
    memcpy(r->prompt, p->prompt, p->n_prompt * sizeof *r->prompt);
    r->n_prompt = (int32_t)p->n_prompt;
    if (p->n_stop > 0 && !(r->stop = calloc(p->n_stop, sizeof *r->stop))) return elpis_fail(err, ELPIS_ENOMEM, "stop strings");
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!p->stop[i] || !p->stop[i][0]) return elpis_fail(err, ELPIS_EINVAL, "stop[%zu] is empty", i);
        if (!(r->stop[i] = strdup(p->stop[i]))) return elpis_fail(err, ELPIS_ENOMEM, "stop strings");
        r->n_stop++;
        size_t n = strlen(p->stop[i]);
        if (n > r->max_stop_len) r->max_stop_len = n;
    }
    if (p->session && !(r->session = strdup(p->session))) return elpis_fail(err, ELPIS_ENOMEM, "session");
    if (p->steering) {
        size_t n = (size_t)m->hp.n_layer * m->hp.n_embd;
        if (!(r->steering = malloc(n * sizeof(float)))) return elpis_fail(err, ELPIS_ENOMEM, "steering vector");
        memcpy(r->steering, p->steering, n * sizeof(float));
    }
    return ELPIS_OK;
}

static elpis_status validate(const elpis_sched *s, const elpis_req_params *p, elpis_error *err) {
    if (!p->prompt || p->n_prompt == 0) return elpis_fail(err, ELPIS_EINVAL, "the prompt is empty");
    if (p->n_prompt >= (size_t)s->p.n_ctx)
        return elpis_fail(err, ELPIS_ERANGE, "prompt of %zu tokens does not fit the context of %d", p->n_prompt, s->p.n_ctx);
    for (size_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= s->m->hp.n_vocab)
            return elpis_fail(err, ELPIS_EINVAL, "prompt token %zu (%d) is outside the vocabulary", i, p->prompt[i]);
    if (p->n_stop > 64) return elpis_fail(err, ELPIS_EINVAL, "stop: %zu strings, at most 64", p->n_stop);
    for (size_t i = 0; i < p->n_stop; i++)
        if (p->stop[i] && strlen(p->stop[i]) > 256) return elpis_fail(err, ELPIS_EINVAL, "stop[%zu] is longer than 256 bytes", i);
    return elpis_sampler_validate(&p->sampling, err);
}

elpis_request *elpis_request_new(const elpis_sched *s, const elpis_req_params *p, elpis_error *err) {
    if (validate(s, p, err) != ELPIS_OK) return NULL;
    elpis_request *r = calloc(1, sizeof *r);
    if (!r) { elpis_fail(err, ELPIS_ENOMEM, "request"); return NULL; }
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, ELPIS_CANCEL_NONE);
    atomic_init(&r->want_room, false);
    atomic_init(&r->t_cancel, 0.0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->slot = -1;
    r->max_tokens = p->max_tokens;
    r->ignore_eos = p->ignore_eos;
    r->status.state = ELPIS_REQ_QUEUED;
    r->status.n_prompt = (int32_t)p->n_prompt;
    r->out_cap = s->p.out_capacity;
    if (copy_params(r, s, p, err) != ELPIS_OK) goto fail;
    r->hold_cap = r->max_stop_len + elpis_detok_cap(s->m->vocab) + 8;
    if (!(r->out = malloc(r->out_cap)) || !(r->hold = malloc(r->hold_cap))) { elpis_fail(err, ELPIS_ENOMEM, "request buffers"); goto fail; }
    if (!(r->smp = elpis_sampler_new(&p->sampling, s->m->hp.n_vocab))) { elpis_fail(err, ELPIS_ENOMEM, "sampler"); goto fail; }
    elpis_detok_init(&r->dt, s->m->vocab, false);
    return r;
fail:
    elpis_request_unref(r);
    return NULL;
}

void elpis_request_ref(elpis_request *r) { atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed); }

void elpis_request_unref(elpis_request *r) {
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    elpis_sampler_free(r->smp);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->prompt);
    free(r->session);
    free(r->steering);
    free(r->out);
    free(r->hold);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void elpis_request_set_notify(elpis_request *r, elpis_request_notify_fn fn, void *arg) {
    r->notify = fn;
    r->notify_arg = arg;
}

void elpis_request_cancel(elpis_request *r, elpis_cancel_reason why) {
    int none = ELPIS_CANCEL_NONE;
    if (why == ELPIS_CANCEL_NONE) return;
    /* stamp first: the scheduler may release the slot as soon as it sees the flag */
    double zero = 0;
    atomic_compare_exchange_strong(&r->t_cancel, &zero, elpis_now_ms());
    if (!atomic_compare_exchange_strong(&r->cancel, &none, (int)why)) return;
    elpis_sched *s = atomic_load(&r->sched);
    if (s) sched_wake(s);
}

size_t elpis_request_read(elpis_request *r, char *buf, size_t cap, elpis_req_status *st) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->out_len < cap ? r->out_len : cap;
    /* never split a UTF-8 character across reads */
    while (n > 0 && n < r->out_len && ((unsigned char)r->out[r->out_start + n] & 0xC0) == 0x80) n--;
    memcpy(buf, r->out + r->out_start, n);
    r->out_start += n;
    r->out_len -= n;
    if (r->out_len == 0) r->out_start = 0;
    if (st) *st = r->status;
    pthread_mutex_unlock(&r->mu);
    /* the scheduler paused this sequence for lack of room: tell it there is some */
    if (n > 0 && atomic_exchange(&r->want_room, false)) {
        elpis_sched *s = atomic_load(&r->sched);
        if (s) sched_wake(s);
    }
    return n;
}

bool elpis_request_wait(elpis_request *r, double timeout_ms) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        long long ns = dl.tv_nsec + (long long)(timeout_ms * 1e6);
        dl.tv_sec += (time_t)(ns / 1000000000LL);
        dl.tv_nsec = (long)(ns % 1000000000LL);
    }
    pthread_mutex_lock(&r->mu);
    while (!elpis_req_state_final(r->status.state)) {
        if (timeout_ms < 0) pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0) break;
    }
    bool final = elpis_req_state_final(r->status.state);
    pthread_mutex_unlock(&r->mu);
    return final;
}

/* ---- writer side: scheduler thread only -------------------------------------- */

size_t req_out_room(elpis_request *r) {
    pthread_mutex_lock(&r->mu);
    size_t room = r->out_cap - r->out_len;
    pthread_mutex_unlock(&r->mu);
    return room;
}

void req_emit(elpis_request *r, const char *text, size_t n) {
    if (n == 0) return;
    pthread_mutex_lock(&r->mu);
    if (r->out_start + r->out_len + n > r->out_cap) {   /* compact to the front */
        memmove(r->out, r->out + r->out_start, r->out_len);
        r->out_start = 0;
    }
    if (n > r->out_cap - r->out_len) n = r->out_cap - r->out_len;  /* callers check room first */
    memcpy(r->out + r->out_start + r->out_len, text, n);
    r->out_len += n;
    pthread_mutex_unlock(&r->mu);
}

void req_update(elpis_request *r, void (*fn)(elpis_req_status *st, void *arg), void *arg) {
    pthread_mutex_lock(&r->mu);
    fn(&r->status, arg);
    if (elpis_req_state_final(r->status.state)) pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void req_notify(elpis_request *r) {
    if (r->notify) r->notify(r->notify_arg);
}
