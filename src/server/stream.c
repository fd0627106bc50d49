/* stream.c -- completion requests on the HTTP side: submit, wait, stream.
 *
 * LIFE OF A COMPLETION REQUEST (all on the MHD thread unless noted)
 * ----------------------------------------------------------------
 *   srv_gen_start    parse + tokenize (api.c, agent.c; a chat request that
 *                    recalls memories first waits for the psyche worker,
 *                    phase WORK, then carries on in srv_gen_launch),
 *                    emotional modulation and
 *                    steering (psyche_api.c), elpis_request_new, take a
 *                    slot (the notify handle), log stream_start, claim the
 *                    session (registry.c). Then either
 *                      WAIT_PREV: suspend until the session's previous
 *                                 request ended or the wait timed out, or
 *                      submit -> RUN.
 *   RUN, stream      queue a callback response; stream_read() copies SSE
 *                    events out of r->out, refilling it from
 *                    elpis_request_read(); with nothing to send it suspends
 *                    the connection and returns 0.
 *   RUN, non-stream  the access handler collects text and suspends until the
 *                    request is final, then queues one JSON body.
 *   srv_notify       (scheduler thread) resumes the suspended connection.
 *   watcher          (watcher.c) resumes for pings, deadlines, hang-ups.
 *   srv_gen_completed (MHD's completion callback) is the single cleanup
 *                    point for every exit path: cancels a request that is not
 *                    final (client gone), detaches the session, frees the slot,
 *                    logs stream_end, queues the response analysis of the
 *                    text (partial when cancelled). The srv_req itself is
 *                    freed by http.c.
 *
 * Waiting never blocks the MHD thread: every wait is a suspended connection.
 */
#include "server_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define SPIN_LIMIT 256    /* notify storms: after this, suspend anyway (the watcher re-wakes) */
#define READ_CHUNK 8192   /* text bytes taken from the request per event */

/* ---- wake-ups ------------------------------------------------------------------------ */

void srv_wake_locked(srv_req *r) {
    r->notified = true;
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

void srv_notify(void *arg) {
    srv_slot *sl = arg;
    elpis_server *s = sl->srv;
    pthread_mutex_lock(&s->lock);
    srv_req *r = sl->r;
    if (r) {
        srv_wake_locked(r);
        srv_session *e = r->sess;   /* the next request of the session may be waiting for this one */
        if (e && e->active_owner == r && e->waiter) srv_wake_locked(e->waiter);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Suspend r's connection (lock held) unless something happened since
 * r->notified was cleared; `force` suspends anyway (the watcher resumes a
 * suspended request whose notified flag is set). Never while stopping. */
static bool suspend_locked(srv_req *r, bool force) {
    if ((r->notified && !force) || r->hup || r->srv->stopping) return false;
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    r->idle_since_ms = elpis_now_ms();
    return true;
}

/* ---- setup ------------------------------------------------------------------------------ */

static bool read_session(srv_req *r, srv_api_error *e) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Session-Id");
    if (!h || !*h) return true;
    size_t n = strlen(h);
    bool ok = n <= 128;
    for (size_t i = 0; ok && i < n; i++) ok = isalnum((unsigned char)h[i]) || strchr("-_.:@", h[i]);
    if (!ok) {
        e->status = MHD_HTTP_BAD_REQUEST;
        e->type = "invalid_request_error";
        e->param = "X-Session-Id";
        e->code = "invalid_value";
        snprintf(e->msg, sizeof e->msg, "X-Session-Id must be 1..128 characters of [A-Za-z0-9-_.:@]");
        return false;
    }
    r->session = elpis_arena_strndup(&r->arena, h, n);
    return r->session != NULL;
}

static bool make_request(srv_req *r, srv_api_error *e) {
    if (r->srv->up) return (r->req = srv_up_request_new(r, e)) != NULL;   /* --upstream: upstream.c writes it */
    elpis_req_params p = {
        .prompt = r->gen.prompt.ids, .n_prompt = r->gen.prompt.n, .sampling = r->gen.sp,
        .max_tokens = r->gen.max_tokens, .stop = r->gen.stop, .n_stop = r->gen.n_stop,
        .session = r->session, .ignore_eos = r->gen.ignore_eos, .steering = r->gen.steering,
    };
    elpis_error err = { 0 };
    r->req = elpis_request_new(r->srv->sched, &p, &err);
    free(r->gen.steering);   /* the request keeps its own copy */
    r->gen.steering = NULL;
    if (r->req) return true;
    e->status = err.code == ELPIS_ENOMEM ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_BAD_REQUEST;
    e->type = err.code == ELPIS_ENOMEM ? "server_error" : "invalid_request_error";
    e->param = NULL;
    e->code = err.code == ELPIS_ERANGE ? "context_length_exceeded" : "invalid_value";
    snprintf(e->msg, sizeof e->msg, "%.380s", err.msg);
    return false;
}

static void setup_wire(srv_req *r, srv_kind kind) {
    snprintf(r->id, sizeof r->id, "%s%s", kind == SRV_CHAT ? "chatcmpl-" : "cmpl-", r->trace);
    r->wire = (srv_wire){ kind, r->id, r->srv->model_id, r->created, r->gen.stream && r->gen.include_usage, r->gen.echo };
}

/* ---- responses ------------------------------------------------------------------------------ */

static enum MHD_Result respond_buf(srv_req *r, unsigned status, const char *ctype, elpis_buf *b, bool no_retry) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(b->len, b->data ? b->data : (char *)"", MHD_RESPMEM_MUST_COPY);
    elpis_buf_free(b);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Trace-Id", r->trace);
    if (!strcmp(ctype, "text/event-stream")) MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (no_retry) MHD_add_response_header(resp, "x-should-retry", "false");   /* openai SDKs honour it */
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    srv_count_status(r->srv, status);
    r->phase = SRV_PH_DONE;
    return ret;
}

/* A request that ended before running: stream clients get an SSE error
 * event (they asked for a stream), others an error body. */
static enum MHD_Result respond_cancelled(srv_req *r, unsigned status, const char *code, const char *msg) {
    elpis_buf b = { 0 };
    if (r->gen.stream) {
        srv_sse_role(&b, &r->wire);
        srv_sse_error(&b, "request_cancelled", code, msg);
        srv_sse_done(&b);
        return respond_buf(r, MHD_HTTP_OK, "text/event-stream", &b, true);
    }
    srv_error_body(&b, "request_cancelled", NULL, code, msg);
    return respond_buf(r, status, "application/json", &b, true);
}

static enum MHD_Result respond_unavailable(srv_req *r, elpis_status why, const char *msg) {
    struct MHD_Response *resp;
    elpis_buf b = { 0 };
    srv_error_body(&b, "unavailable_error", NULL, why == ELPIS_ERANGE ? "queue_full" : "shutting_down", msg);
    resp = MHD_create_response_from_buffer(b.len, b.data ? b.data : (char *)"", MHD_RESPMEM_MUST_COPY);
    elpis_buf_free(&b);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, "X-Trace-Id", r->trace);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_SERVICE_UNAVAILABLE, resp);
    MHD_destroy_response(resp);
    srv_count_status(r->srv, MHD_HTTP_SERVICE_UNAVAILABLE);
    r->phase = SRV_PH_DONE;
    return ret;
}

/* ---- the final status --------------------------------------------------------------------------- */

/* Seen final once: hand the session on before anything else is written, so
 * `prev_stream_finished_cleanly` precedes this request's `stream_end`. */
static void on_final(srv_req *r) {
    if (r->final_seen) return;
    r->final_seen = true;
    pthread_mutex_lock(&r->srv->lock);
    srv_session_on_final(r->srv, r);
    pthread_mutex_unlock(&r->srv->lock);
    srv_agent_final(r);   /* auto-storage, queued before the answer goes out */
    if (r->hooks && r->hooks->on_final) r->hooks->on_final(r);
}

static const char *finish_reason(const elpis_req_status *st) {
    if (st->state == ELPIS_REQ_CANCELLED) return "length";   /* shutdown: the drain's termination */
    return st->finish == ELPIS_FINISH_LENGTH ? "length" : "stop";
}

static void superseded_msg(srv_req *r, char *buf, size_t cap) {
    snprintf(buf, cap, "a newer request in session %s replaced this one", r->session ? r->session : "-");
}

/* The events that end a stream, by final state. */
static void stream_final_events(srv_req *r) {
    const elpis_req_status *st = &r->st;
    char msg[300];
    bool normal = st->state == ELPIS_REQ_DONE ||
                  (st->state == ELPIS_REQ_CANCELLED && st->cancel_reason == ELPIS_CANCEL_SHUTDOWN);
    if (normal) {
        srv_agent_stream_finish(r, finish_reason(st));
        if (r->wire.include_usage) srv_sse_usage(&r->out, &r->wire, st->n_prompt, st->n_generated, st->n_cached);
        if (r->hooks && r->hooks->stream_tail) r->hooks->stream_tail(r, &r->out);
    } else if (st->state == ELPIS_REQ_CANCELLED && st->cancel_reason == ELPIS_CANCEL_SUPERSEDED) {
        superseded_msg(r, msg, sizeof msg);
        srv_sse_error(&r->out, "request_cancelled", "superseded", msg);
    } else if (st->state == ELPIS_REQ_CANCELLED) {
        snprintf(msg, sizeof msg, "the request was cancelled (%s)", elpis_cancel_reason_name(st->cancel_reason));
        srv_sse_error(&r->out, "request_cancelled", elpis_cancel_reason_name(st->cancel_reason), msg);
    } else {
        snprintf(msg, sizeof msg, "generation failed: %s", st->error);
        srv_sse_error(&r->out, "server_error", "generation_failed", msg);
    }
    srv_sse_done(&r->out);
    r->ended = true;
}

/* Append what the request has for us. false: nothing new. */
static bool produce(srv_req *r) {
    char text[READ_CHUNK];
    size_t n = elpis_request_read(r->req, text, sizeof text, &r->st);
    if (n > 0) {
        if (r->gen.keep_text) elpis_buf_append(&r->text, text, n);   /* response analysis, tool calls */
        srv_agent_stream_text(r, text, n);
        return true;
    }
    if (!elpis_req_state_final(r->st.state)) return false;
    on_final(r);
    stream_final_events(r);
    return true;
}

static size_t copy_out(srv_req *r, char *buf, size_t max) {
    size_t n = ELPIS_MIN(max, r->out.len - r->out_off);
    memcpy(buf, r->out.data + r->out_off, n);
    r->out_off += n;
    if (r->out_off == r->out.len) r->out.len = r->out_off = 0;
    return n;
}

/* MHD content reader of an SSE response. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_req *r = cls;
    elpis_server *s = r->srv;
    (void)pos;
    for (int spin = 0;; spin++) {
        if (r->out_off < r->out.len) return (ssize_t)copy_out(r, buf, max);
        if (r->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->lock);
        bool gone = r->hup || s->stopping, ping = r->ping_due;
        r->ping_due = false;
        r->notified = false;   /* cleared BEFORE looking: a later notify is not lost */
        pthread_mutex_unlock(&s->lock);
        if (gone) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (produce(r)) continue;
        if (ping) { srv_sse_ping(&r->out); continue; }
        pthread_mutex_lock(&s->lock);
        bool suspended = suspend_locked(r, spin >= SPIN_LIMIT);
        pthread_mutex_unlock(&s->lock);
        if (suspended) return 0;
    }
}

static enum MHD_Result start_stream(srv_req *r) {
    srv_sse_role(&r->out, &r->wire);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, r, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    MHD_add_response_header(resp, "X-Trace-Id", r->trace);
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    srv_count_status(r->srv, MHD_HTTP_OK);
    atomic_fetch_add(&r->srv->streams_started, 1);
    pthread_mutex_lock(&r->srv->lock);
    r->sse = true;
    pthread_mutex_unlock(&r->srv->lock);
    return ret;
}

/* ---- non-stream ------------------------------------------------------------------------------------- */

static enum MHD_Result respond_final(srv_req *r) {
    const elpis_req_status *st = &r->st;
    char msg[300];
    elpis_buf b = { 0 };
    bool normal = st->state == ELPIS_REQ_DONE ||
                  (st->state == ELPIS_REQ_CANCELLED && st->cancel_reason == ELPIS_CANCEL_SHUTDOWN);
    if (normal && r->hooks && r->hooks->respond) return r->hooks->respond(r);
    if (normal) {
        srv_agent_final_body(r, &b, finish_reason(st), st);
        return respond_buf(r, MHD_HTTP_OK, "application/json", &b, false);
    }
    if (st->state == ELPIS_REQ_CANCELLED) {
        if (st->cancel_reason == ELPIS_CANCEL_SUPERSEDED) superseded_msg(r, msg, sizeof msg);
        else snprintf(msg, sizeof msg, "the request was cancelled (%s)", elpis_cancel_reason_name(st->cancel_reason));
        const char *code = st->cancel_reason == ELPIS_CANCEL_SUPERSEDED ? "superseded" : elpis_cancel_reason_name(st->cancel_reason);
        srv_error_body(&b, "request_cancelled", NULL, code, msg);
        return respond_buf(r, MHD_HTTP_CONFLICT, "application/json", &b, true);
    }
    unsigned ust;
    const char *utype, *ucode;
    if (r->srv->up && srv_up_failure(r->req, &ust, &utype, &ucode)) {   /* 502, 504, the upstream's own status */
        srv_error_body(&b, utype, NULL, ucode, st->error);
        return respond_buf(r, ust, "application/json", &b, false);
    }
    snprintf(msg, sizeof msg, "generation failed: %s", st->error);
    srv_error_body(&b, "server_error", NULL, "generation_failed", msg);
    return respond_buf(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", &b, false);
}

/* Access handler, RUN without stream: gather text until final. */
static enum MHD_Result collect(srv_req *r) {
    elpis_server *s = r->srv;
    char text[READ_CHUNK];
    for (int spin = 0;; spin++) {
        pthread_mutex_lock(&s->lock);
        bool gone = r->hup || s->stopping;
        r->notified = false;
        pthread_mutex_unlock(&s->lock);
        if (gone) return MHD_NO;   /* close: the client left or the daemon stops */
        size_t n;
        while ((n = elpis_request_read(r->req, text, sizeof text, &r->st)) > 0) elpis_buf_append(&r->text, text, n);
        if (elpis_req_state_final(r->st.state)) {
            on_final(r);
            return respond_final(r);
        }
        pthread_mutex_lock(&s->lock);
        bool suspended = suspend_locked(r, spin >= SPIN_LIMIT);
        pthread_mutex_unlock(&s->lock);
        if (suspended) return MHD_YES;
    }
}

/* A stream's status line: at once for the local engine; with --upstream
 * only once the upstream answered, so a refused connection or an upstream
 * 4xx/5xx reaches the client as that status, not as a 200 with an error
 * event. Waits suspended, like collect(). */
static enum MHD_Result start_or_wait(srv_req *r) {
    elpis_server *s = r->srv;
    if (!s->up) return start_stream(r);
    for (int spin = 0;; spin++) {
        pthread_mutex_lock(&s->lock);
        bool gone = r->hup || s->stopping;
        r->notified = false;
        pthread_mutex_unlock(&s->lock);
        if (gone) return MHD_NO;
        srv_status_of(r->req, &r->st);
        if (r->st.state == ELPIS_REQ_FAILED) {
            on_final(r);
            return respond_final(r);
        }
        if (r->st.state != ELPIS_REQ_QUEUED) return start_stream(r);   /* answered, or cancelled: events say so */
        pthread_mutex_lock(&s->lock);
        bool suspended = suspend_locked(r, spin >= SPIN_LIMIT);
        pthread_mutex_unlock(&s->lock);
        if (suspended) return MHD_YES;
    }
}

/* ---- submit and wait ------------------------------------------------------------------------------------ */

/* Lock held. ELPIS_OK: submitted and now the session's active request. */
static elpis_status submit_locked(srv_req *r, elpis_error *err) {
    elpis_server *s = r->srv;
    elpis_status st = s->up ? srv_up_submit(s->up, r->req, err) : elpis_sched_submit(s->sched, r->req, err);
    if (st == ELPIS_OK) {
        srv_session_set_active(s, r);
        r->phase = SRV_PH_RUN;
        r->submitted = true;
    } else {
        srv_session_detach(s, r);
    }
    return st;
}

static enum MHD_Result after_submit(srv_req *r, elpis_status st, const elpis_error *err) {
    if (st != ELPIS_OK) return respond_unavailable(r, st, err->msg);
    return r->gen.stream ? start_or_wait(r) : collect(r);
}

/* Access handler, WAIT_PREV: run once the session's previous request ended. */
static enum MHD_Result wait_prev(srv_req *r) {
    elpis_server *s = r->srv;
    elpis_error err = { 0 };
    char msg[300];
    pthread_mutex_lock(&s->lock);
    r->notified = false;   /* everything below is checked under this same lock hold */
    if (r->hup) { pthread_mutex_unlock(&s->lock); return MHD_NO; }
    if (r->superseded) {
        pthread_mutex_unlock(&s->lock);
        superseded_msg(r, msg, sizeof msg);
        return respond_cancelled(r, MHD_HTTP_CONFLICT, "superseded", msg);
    }
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return respond_unavailable(r, ELPIS_ECANCELLED, "the server is shutting down");
    }
    if (!srv_session_ready(s, r, elpis_now_ms())) {
        suspend_locked(r, true);
        pthread_mutex_unlock(&s->lock);
        return MHD_YES;
    }
    elpis_status st = submit_locked(r, &err);
    pthread_mutex_unlock(&s->lock);
    return after_submit(r, st, &err);
}

enum MHD_Result srv_gen_start(srv_req *r, srv_kind kind) {
    elpis_server *s = r->srv;
    srv_api_error e = { 0 };
    if (atomic_load(&s->draining))
        return respond_unavailable(r, ELPIS_ECANCELLED, "the server is shutting down");
    if (!read_session(r, &e) || !srv_parse_gen(r, kind, &e)) return srv_respond_api_error(r, &e);
    if (r->agent.recall) return srv_agent_recall(r);   /* the psyche worker searches first, then srv_gen_launch */
    return srv_gen_launch(r);
}

enum MHD_Result srv_gen_launch(srv_req *r) {
    srv_api_error e = { 0 };
    if (!srv_emo_prepare(r, &e)) return srv_respond_api_error(r, &e);
    srv_agent_prepared(r);
    return srv_gen_submit(r, r->gen.kind);
}

enum MHD_Result srv_gen_submit(srv_req *r, srv_kind kind) {
    elpis_server *s = r->srv;
    srv_api_error e = { 0 };
    elpis_error err = { 0 };
    setup_wire(r, kind);
    if (!make_request(r, &e)) return srv_respond_api_error(r, &e);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    pthread_mutex_lock(&s->lock);
    if (!srv_slot_acquire(s, r)) {
        pthread_mutex_unlock(&s->lock);
        return srv_respond_error(r, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limit_error", NULL, "too_many_requests",
                                 "too many requests in flight");
    }
    elpis_request_set_notify(r->req, srv_notify, &s->slots[r->slot]);
    r->fd = ci ? ci->connect_fd : -1;
    r->counted_live = true;
    s->n_live++;
    r->logged_start = true;
    srv_evlog(&s->log, "stream_start trace=%s session=%s", r->trace, r->session ? r->session : "-");
    bool may_run = true;
    if (r->session && !srv_session_claim(s, r, &may_run)) {
        pthread_mutex_unlock(&s->lock);
        return srv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL, NULL, "out of memory");
    }
    if (!may_run) {
        r->phase = SRV_PH_WAIT_PREV;
        pthread_mutex_unlock(&s->lock);
        return wait_prev(r);
    }
    elpis_status st = submit_locked(r, &err);
    pthread_mutex_unlock(&s->lock);
    return after_submit(r, st, &err);
}

enum MHD_Result srv_gen_resume(srv_req *r) {
    if (r->phase == SRV_PH_WAIT_PREV) return wait_prev(r);
    if (r->phase == SRV_PH_RUN && !r->gen.stream) return collect(r);
    if (r->phase == SRV_PH_RUN && !r->sse) return start_or_wait(r);   /* upstream: waiting for its answer */
    return MHD_YES;
}

/* ---- the end ------------------------------------------------------------------------------------------------ */

void srv_gen_completed(srv_req *r, enum MHD_RequestTerminationCode toe) {
    elpis_server *s = r->srv;
    (void)toe;   /* whatever the code, a pending request has lost its reader */
    pthread_mutex_lock(&s->lock);
    bool pending = r->slot >= 0 && srv_req_pending_locked(r, &r->st);
    bool final = r->req && elpis_req_state_final(r->st.state);
    if (pending) {
        elpis_cancel_reason why = s->stopping ? ELPIS_CANCEL_SHUTDOWN : ELPIS_CANCEL_CLIENT;
        elpis_request_cancel(r->req, why);
        if (!r->logged_cancel) {
            srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", r->trace, elpis_cancel_reason_name(why));
            if (why == ELPIS_CANCEL_CLIENT) atomic_fetch_add(&s->client_disconnects, 1);
        }
        r->logged_cancel = true;
    }
    srv_session_detach(s, r);
    srv_slot_release(s, r);
    if (r->counted_live) s->n_live--;
    r->counted_live = false;
    pthread_mutex_unlock(&s->lock);
    srv_emo_after(r);
    if (!r->logged_start) return;
    const char *finish = "cancelled";
    if (final && r->st.state == ELPIS_REQ_DONE) finish = elpis_finish_name(r->st.finish);
    else if (final && r->st.state == ELPIS_REQ_FAILED) finish = "error";
    else if (!r->submitted && !r->superseded && !r->hup) finish = "rejected";
    srv_evlog(&s->log, "stream_end trace=%s tokens=%d ms=%.0f finish=%s", r->trace, r->st.n_generated,
              elpis_now_ms() - r->t_start, finish);
}
