/* upstream.c -- `elpis serve --upstream URL`: generation on an
 * OpenAI-compatible engine instead of the local scheduler.
 *
 * DESIGN
 * ------
 * The HTTP side (stream.c) consumes elpis_request objects: a non-blocking
 * read, a notify callback, an idempotent cancel flag, a final state. An
 * upstream request IS an elpis_request (its struct from sched_internal.h,
 * allocated here with a few fields after it), so sessions, supersede,
 * metrics and logs work unchanged. Only the writer differs: instead of the
 * scheduler thread, ONE upstream I/O thread drives every transfer with the
 * libcurl multi interface and writes the text of the upstream's SSE
 * (`data:` lines, parsed with jansson) into the request's output buffer with
 * req_emit/req_update/req_notify, exactly as the scheduler does.
 *
 * INVARIANTS
 * ----------
 * - No thread blocks on the upstream: the MHD thread only queues a transfer
 *   (short mutex, curl_multi_wakeup); all network waits are curl_multi_poll
 *   on the I/O thread.
 * - Cancellation: elpis_request_cancel only sets the request's flag (an
 *   upstream request has no scheduler to wake), so while transfers run the
 *   I/O thread polls at POLL_MS and removes the easy handle of a cancelled
 *   request at once: the connection closes and the upstream sees a client
 *   disconnect. Latency: at most POLL_MS plus one loop turn.
 * - A request is final exactly once (finish_xfer), after all its text is in
 *   its buffer; the failure fields of up_req are written before the final
 *   state is published under the request's mutex, so a reader that saw the
 *   final state sees them.
 * - Back-pressure: parsed text waits in the transfer's `pend` until the
 *   reader makes room; past PEND_MAX the transfer is paused (curl).
 * - Retries: only before the first byte of a 2xx answer (connection refused,
 *   DNS failure, 503), at most MAX_TRIES with doubling backoff; after that the
 *   client may have seen output, so nothing is replayed.
 * - The upstream key is only ever put in a request header, never logged.
 *
 * SEVERAL UPSTREAMS (--upstream URL1,URL2,...)
 * --------------------------------------------
 * Each try picks a target (I/O thread only, so no lock): the session's
 * previous target while it is healthy (affinity: its prompt cache there stays
 * warm), otherwise the least busy healthy one. Health is passive: a try that
 * cannot connect marks its target down for a backoff (0.5 s doubling to
 * 10 s); a 2xx answer marks it up. When the backoff ends the target is tried
 * again by real traffic; a failed try is retried on another target, so a dead
 * upstream costs a request one extra backoff at most. When all are down the
 * one that comes back soonest is tried.
 */
#include "server_internal.h"

#include "../sched/sched_internal.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 10             /* cancel/idle check period while transfers run */
#define PEND_MAX (256 * 1024)  /* parsed text held per transfer before pausing it */
#define EBODY_MAX (16 * 1024)  /* bytes of an error body kept */
#define MAX_TRIES 3
#define BACKOFF_MS 100.0
#define OUT_CAP (64 * 1024)
#define MAX_TARGETS 16
#define AFFINITY_SLOTS 1024    /* session -> target; a collision only loses the hint */
#define DOWN_MIN_MS 500.0
#define DOWN_MAX_MS 10000.0

/* An elpis_request with what the upstream needs; freed by elpis_request_unref
 * (free of the same pointer: `q` is first). Only fixed-size fields here. */
typedef struct up_req {
    struct elpis_request q;
    bool chat;
    unsigned fail_status;      /* failed before any output: the HTTP status to answer; 0: none */
    char fail_type[40], fail_code[40];
    char trace[24];
    char session[130];
    size_t body_len;
    char body[];               /* the JSON sent upstream (immutable) */
} up_req;

typedef struct up_xfer {
    struct up_xfer *next;
    up_req *q;                 /* a reference */
    int target;                /* of the current try; -1: none */
    CURL *easy;                /* NULL between tries */
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    elpis_buf line, pend, ebody;
    long code;
    int tries;
    double t_data, t_retry;    /* last byte received; when to try again (0: running) */
    double t_full;             /* since when the reader left no room (0: it has room) */
    bool head, first, paused, ended, length, failed_mid;
    int32_t n_gen, up_prompt, up_gen;
    char mid_error[200];
} up_xfer;

typedef struct up_target {   /* I/O thread only, except the URLs (immutable) */
    char *url_chat, *url_text;
    int busy;                  /* transfers on it now */
    bool down;
    double down_until, down_ms;
} up_target;

typedef struct up_affinity { char session[130]; int target; } up_affinity;

struct srv_upstream {
    elpis_server *srv;
    up_target targets[MAX_TARGETS];
    int n_targets;
    unsigned rr;               /* tie-break among equally busy targets */
    up_affinity *affinity;     /* [AFFINITY_SLOTS] */
    char *auth;                /* "Authorization: Bearer KEY" or NULL */
    CURLM *multi;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;        /* inbox, stop */
    up_xfer *inbox;
    bool stop;
    atomic_bool draining;
    atomic_int n_live;
    int cap;
    up_xfer *active;           /* I/O thread only */
};

/* ---- requests (MHD thread) ---------------------------------------------------------- */

static up_req *as_up(elpis_request *q) { return (up_req *)q; }

static char *make_body(srv_req *r, size_t *len, srv_api_error *e) {
    const elpis_server_config *c = r->srv->cfg;
    json_t *j = srv_body_json(r, e);
    if (!j) return NULL;
    if (c->upstream_model) json_object_set_new(j, "model", json_string(c->upstream_model));
    json_object_set_new(j, "stream", json_true());
    json_object_set_new(j, "stream_options", json_pack("{s:b}", "include_usage", 1));
    /* the emotionally modulated values computed here replace the client's */
    json_object_set_new(j, "temperature", json_real(r->gen.sp.temperature));
    json_object_set_new(j, "top_p", json_real(r->gen.sp.top_p));
    json_object_del(j, "emotional_modulation");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s) *len = strlen(s);
    return s;
}

elpis_request *srv_up_request_new(srv_req *r, srv_api_error *e) {
    size_t len = 0;
    char *body = make_body(r, &len, e);
    if (!body) {
        if (!e->status) { e->status = 500; e->type = "server_error"; snprintf(e->msg, sizeof e->msg, "out of memory"); }
        return NULL;
    }
    up_req *u = calloc(1, sizeof *u + len + 1);
    char *out = malloc(OUT_CAP);
    if (!u || !out) {
        free(u); free(out); free(body);
        e->status = 500; e->type = "server_error";
        snprintf(e->msg, sizeof e->msg, "out of memory");
        return NULL;
    }
    elpis_request *q = &u->q;
    atomic_init(&q->refs, 1);
    atomic_init(&q->cancel, ELPIS_CANCEL_NONE);
    atomic_init(&q->want_room, false);
    atomic_init(&q->t_cancel, 0.0);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->slot = -1;
    q->out = out;
    q->out_cap = OUT_CAP;
    q->status.state = ELPIS_REQ_QUEUED;
    q->status.n_prompt = (int32_t)r->gen.prompt.n;   /* local estimate until the upstream's usage */
    u->chat = r->gen.kind == SRV_CHAT;
    snprintf(u->trace, sizeof u->trace, "%s", r->trace);
    snprintf(u->session, sizeof u->session, "%s", r->session ? r->session : "");
    memcpy(u->body, body, len + 1);
    u->body_len = len;
    free(body);
    free(r->gen.steering);   /* steering needs the local engine; the echo says steered=false only locally */
    r->gen.steering = NULL;
    return q;
}

bool srv_up_failure(elpis_request *q, unsigned *status, const char **type, const char **code) {
    up_req *u = as_up(q);
    if (!u->fail_status) return false;
    *status = u->fail_status;
    *type = u->fail_type;
    *code = u->fail_code[0] ? u->fail_code : NULL;
    return true;
}

elpis_status srv_up_submit(srv_upstream *u, elpis_request *q, elpis_error *err) {
    if (atomic_load(&u->draining)) return elpis_fail(err, ELPIS_ECANCELLED, "the server is shutting down");
    int live = atomic_load(&u->n_live);
    do {
        if (live >= u->cap) return elpis_fail(err, ELPIS_ERANGE, "all %d upstream places are taken", u->cap);
    } while (!atomic_compare_exchange_weak(&u->n_live, &live, live + 1));
    up_xfer *x = calloc(1, sizeof *x);
    if (!x) { atomic_fetch_sub(&u->n_live, 1); return elpis_fail(err, ELPIS_ENOMEM, "upstream transfer"); }
    elpis_request_ref(q);
    x->q = as_up(q);
    x->target = -1;
    pthread_mutex_lock(&q->mu);
    q->status.t_submit_ms = elpis_now_ms();
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_lock(&u->mu);
    x->next = u->inbox;
    u->inbox = x;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    return ELPIS_OK;
}

/* ---- final states (I/O thread) ---------------------------------------------------------- */

typedef struct up_final {
    elpis_req_state state;
    elpis_finish finish;
    elpis_cancel_reason why;
    const char *error;
    int32_t n_prompt, n_gen;
    double t_cancel;
} up_final;

static void set_final(elpis_req_status *st, void *arg) {
    const up_final *f = arg;
    st->state = f->state;
    st->finish = f->finish;
    st->cancel_reason = f->why;
    st->t_end_ms = elpis_now_ms();
    st->t_cancel_ms = f->t_cancel;
    if (f->n_prompt > 0) st->n_prompt = f->n_prompt;
    if (f->n_gen > 0) st->n_generated = f->n_gen;
    if (f->error) snprintf(st->error, sizeof st->error, "%s", f->error);
}

static void detach_easy(srv_upstream *u, up_xfer *x) {
    if (!x->easy) return;
    if (x->target >= 0) u->targets[x->target].busy--;
    curl_multi_remove_handle(u->multi, x->easy);   /* closes the connection: the upstream sees the hang-up */
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->hdrs);
    x->easy = NULL;
    x->hdrs = NULL;
}

static void free_xfer(up_xfer *x) {
    elpis_buf_free(&x->line);
    elpis_buf_free(&x->pend);
    elpis_buf_free(&x->ebody);
    elpis_request_unref(&x->q->q);
    free(x);
}

/* The request leaves the upstream: publish its final state, drop our reference. */
static void finish_xfer(srv_upstream *u, up_xfer *x, up_final f) {
    detach_easy(u, x);
    f.t_cancel = atomic_load(&x->q->q.t_cancel);
    f.n_prompt = x->up_prompt;
    f.n_gen = x->up_gen > 0 ? x->up_gen : x->n_gen;
    req_update(&x->q->q, set_final, &f);
    req_notify(&x->q->q);
    atomic_fetch_sub(&u->n_live, 1);
    free_xfer(x);
}

static void finish_cancelled(srv_upstream *u, up_xfer *x, elpis_cancel_reason why) {
    finish_xfer(u, x, (up_final){ .state = ELPIS_REQ_CANCELLED, .finish = ELPIS_FINISH_CANCELLED, .why = why });
}

/* Failure: before any output the client gets `status`; after, an error event. */
static void finish_failed(srv_upstream *u, up_xfer *x, unsigned status, const char *type, const char *code, const char *msg) {
    up_req *q = x->q;
    if (!x->first) {
        q->fail_status = status;
        snprintf(q->fail_type, sizeof q->fail_type, "%s", type);
        snprintf(q->fail_code, sizeof q->fail_code, "%s", code ? code : "");
    }
    srv_evlog(&u->srv->log, "upstream_failed trace=%s status=%u after_output=%s error=\"%.200s\"", q->trace, status,
              x->first ? "yes" : "no", msg);
    finish_xfer(u, x, (up_final){ .state = ELPIS_REQ_FAILED, .finish = ELPIS_FINISH_ERROR, .error = msg });
}

/* ---- the SSE parser (I/O thread, inside curl's write callback) ------------------------------- */

static void on_event(up_xfer *x, const char *data) {
    json_error_t je;
    json_t *j = json_loads(data, 0, &je);
    if (!j) return;   /* not JSON: ignore, as OpenAI clients do */
    json_t *err = json_object_get(j, "error");
    if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        snprintf(x->mid_error, sizeof x->mid_error, "upstream: %s", m ? m : "error event");
        x->failed_mid = true;
    }
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    json_t *t = x->q->chat ? json_object_get(json_object_get(ch, "delta"), "content") : json_object_get(ch, "text");
    if (json_is_string(t) && json_string_length(t) > 0) {
        elpis_buf_append(&x->pend, json_string_value(t), json_string_length(t));
        x->n_gen++;
    }
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    if (fin && !strcmp(fin, "length")) x->length = true;
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        x->up_prompt = (int32_t)json_integer_value(json_object_get(usage, "prompt_tokens"));
        x->up_gen = (int32_t)json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_decref(j);
}

static void on_line(up_xfer *x, char *s, size_t n) {
    if (n && s[n - 1] == '\r') s[--n] = 0;
    if (n < 5 || strncmp(s, "data:", 5)) return;   /* comments (": ping"), event names, blanks */
    s += 5;
    if (*s == ' ') s++;
    if (!strcmp(s, "[DONE]")) return;
    on_event(x, s);
}

static size_t on_data(char *p, size_t size, size_t nm, void *arg) {
    up_xfer *x = arg;
    size_t n = size * nm;
    if (x->pend.len > PEND_MAX) { x->paused = true; return CURL_WRITEFUNC_PAUSE; }
    x->t_data = elpis_now_ms();
    if (!x->code) curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->code);
    if (x->code >= 300) {   /* an error body: keep the start for the message */
        if (x->ebody.len < EBODY_MAX) elpis_buf_append(&x->ebody, p, ELPIS_MIN(n, EBODY_MAX - x->ebody.len));
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') { elpis_buf_append(&x->line, p + i, 1); continue; }
        elpis_buf_append(&x->line, "", 1);   /* NUL-terminate */
        on_line(x, x->line.data, x->line.len - 1);
        x->line.len = 0;
    }
    return n;
}

/* ---- transfers (I/O thread) ------------------------------------------------------------------- */

/* ---- targets (I/O thread) ------------------------------------------------------------------ */

static bool healthy(const up_target *t, double now) { return !t->down || now >= t->down_until; }

static up_affinity *affinity_of(srv_upstream *u, const char *session) {
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (const char *p = session; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    return &u->affinity[h % AFFINITY_SLOTS];
}

static int pick_target(srv_upstream *u, const up_req *q, double now) {
    up_affinity *a = q->session[0] ? affinity_of(u, q->session) : NULL;
    if (a && !strcmp(a->session, q->session) && healthy(&u->targets[a->target], now)) return a->target;
    int best = -1;
    u->rr++;
    for (int k = 0; k < u->n_targets; k++) {
        int i = (int)((u->rr + (unsigned)k) % (unsigned)u->n_targets);
        const up_target *t = &u->targets[i];
        if (!healthy(t, now)) continue;
        if (best < 0 || t->busy < u->targets[best].busy) best = i;
    }
    if (best < 0) {   /* all down: the one back soonest */
        best = 0;
        for (int i = 1; i < u->n_targets; i++)
            if (u->targets[i].down_until < u->targets[best].down_until) best = i;
    }
    if (a) {
        snprintf(a->session, sizeof a->session, "%s", q->session);
        a->target = best;
    }
    return best;
}

static void mark_down(srv_upstream *u, int i) {
    if (i < 0) return;
    up_target *t = &u->targets[i];
    t->down_ms = t->down ? ELPIS_MIN(t->down_ms * 2, DOWN_MAX_MS) : DOWN_MIN_MS;
    t->down_until = elpis_now_ms() + t->down_ms;
    if (!t->down) srv_evlog(&u->srv->log, "upstream_down target=%d", i);
    t->down = true;
}

static void mark_up(srv_upstream *u, int i) {
    if (i < 0 || !u->targets[i].down) return;
    u->targets[i].down = false;
    srv_evlog(&u->srv->log, "upstream_up target=%d", i);
}

static bool start_easy(srv_upstream *u, up_xfer *x) {
    up_req *q = x->q;
    const elpis_server_config *c = u->srv->cfg;
    char hdr[200];
    x->target = -1;
    if (!(x->easy = curl_easy_init())) return false;
    x->target = pick_target(u, q, elpis_now_ms());
    u->targets[x->target].busy++;
    up_target *t = &u->targets[x->target];
    x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/json");
    x->hdrs = curl_slist_append(x->hdrs, "Accept: text/event-stream");
    if (u->auth) x->hdrs = curl_slist_append(x->hdrs, u->auth);
    if (q->session[0]) {   /* the upstream's own prefix cache and session handling */
        snprintf(hdr, sizeof hdr, "X-Session-Id: %s", q->session);
        x->hdrs = curl_slist_append(x->hdrs, hdr);
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, q->chat ? t->url_chat : t->url_text);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (const char *)q->body);   /* a cast: curl's type check cannot size a flexible array */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)q->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->upstream_connect_timeout_s * 1000.0));
    x->errbuf[0] = 0;
    x->code = 0;
    x->line.len = x->ebody.len = 0;
    x->t_data = elpis_now_ms();
    x->t_retry = 0;
    x->tries++;
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK) { detach_easy(u, x); return false; }
    return true;
}

/* Before any output, a failed try may be repeated after a backoff. */
static bool maybe_retry(srv_upstream *u, up_xfer *x, const char *why) {
    if (x->head || x->tries >= MAX_TRIES || atomic_load(&u->draining)) return false;
    detach_easy(u, x);
    x->t_retry = elpis_now_ms() + BACKOFF_MS * (double)(1 << (x->tries - 1));
    srv_evlog(&u->srv->log, "upstream_retry trace=%s try=%d error=\"%.200s\"", x->q->trace, x->tries, why);
    return true;
}

/* The upstream's error message from its body (OpenAI envelope or text). */
static void error_message(up_xfer *x, char *msg, size_t cap, char *type, size_t tcap) {
    elpis_buf_append(&x->ebody, "", 1);
    json_error_t je;
    json_t *j = json_loads(x->ebody.data, 0, &je);
    json_t *e = json_object_get(j, "error");
    const char *m = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "message"));
    const char *t = json_string_value(json_object_get(e, "type"));
    snprintf(msg, cap, "upstream HTTP %ld: %.300s", x->code, m ? m : x->ebody.data);
    snprintf(type, tcap, "%s", t ? t : "upstream_error");
    json_decref(j);
}

static bool text_pending(const up_xfer *x) { return x->pend.len > 0; }

/* A finished transfer (curl's DONE message). Returns false when x was
 * freed; true when it stays (a retry is pending, or it ended and its text
 * still waits for room: x->ended). */
static bool on_done(srv_upstream *u, up_xfer *x, CURLcode rc) {
    char msg[400], type[40];
    if (!x->code) curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->code);
    if (rc == CURLE_OK && x->code >= 200 && x->code < 300) {
        detach_easy(u, x);
        x->ended = true;   /* final once the text is flushed */
        return true;
    }
    if (rc == CURLE_OK) {
        error_message(x, msg, sizeof msg, type, sizeof type);
        if (x->code == 503 && maybe_retry(u, x, msg)) return true;
        finish_failed(u, x, (unsigned)x->code, type, "upstream_error", msg);
        return false;
    }
    snprintf(msg, sizeof msg, "upstream: %s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    bool refused = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY;
    if (refused || (rc == CURLE_OPERATION_TIMEDOUT && !x->code)) mark_down(u, x->target);   /* could not connect */
    if (refused && maybe_retry(u, x, msg)) return true;
    if (x->head) {   /* the stream broke after the answer began: flush what came, then an error event */
        detach_easy(u, x);
        snprintf(x->mid_error, sizeof x->mid_error, "%.199s", msg);
        x->failed_mid = x->ended = true;
        return true;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) finish_failed(u, x, 504, "timeout_error", "upstream_timeout", msg);
    else finish_failed(u, x, 502, "upstream_error", refused ? "upstream_unreachable" : "upstream_failed", msg);
    return false;
}

static void set_head(elpis_req_status *st, void *arg) {
    (void)arg;
    if (st->state == ELPIS_REQ_QUEUED) st->state = ELPIS_REQ_PREFILL;
}

typedef struct emit_info { int32_t n_gen; } emit_info;

static void set_token(elpis_req_status *st, void *arg) {
    const emit_info *e = arg;
    if (st->t_first_token_ms == 0) st->t_first_token_ms = elpis_now_ms();
    st->state = ELPIS_REQ_DECODE;
    st->n_generated = e->n_gen;
}

/* Move parsed text into the request's buffer as room allows; notify the reader. */
static void flush(srv_upstream *u, up_xfer *x) {
    bool changed = false;
    if (!x->head && x->code >= 200 && x->code < 300) {
        x->head = true;
        mark_up(u, x->target);
        req_update(&x->q->q, set_head, NULL);
        changed = true;
    }
    if (!x->pend.len) x->t_full = 0;
    if (x->pend.len) {
        size_t room = req_out_room(&x->q->q);
        if (room == 0 && x->t_full == 0) x->t_full = elpis_now_ms();
        if (room > 0) x->t_full = 0;
        size_t n = ELPIS_MIN(room, x->pend.len);
        while (n > 0 && n < x->pend.len && ((unsigned char)x->pend.data[n] & 0xC0) == 0x80) n--;   /* whole characters */
        if (n > 0) {
            req_emit(&x->q->q, x->pend.data, n);
            memmove(x->pend.data, x->pend.data + n, x->pend.len - n);
            x->pend.len -= n;
            x->first = true;
            emit_info e = { x->n_gen };
            req_update(&x->q->q, set_token, &e);
            changed = true;
        }
    }
    if (x->paused && x->easy && x->pend.len < PEND_MAX / 2) {
        x->paused = false;
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
    }
    if (changed) req_notify(&x->q->q);
}

/* Per loop turn: cancel, drain, idle timeout, retries, flush, completion.
 * Returns true when x left the active list. */
static bool tend(srv_upstream *u, up_xfer *x, double now) {
    elpis_cancel_reason why = (elpis_cancel_reason)atomic_load(&x->q->q.cancel);
    const elpis_server_config *c = u->srv->cfg;
    if (why != ELPIS_CANCEL_NONE) {
        srv_evlog(&u->srv->log, "upstream_abort trace=%s reason=%s", x->q->trace, elpis_cancel_reason_name(why));
        finish_cancelled(u, x, why);
        return true;
    }
    if (atomic_load(&u->draining) && !x->ended) {   /* the SIGTERM drain: end like the scheduler does */
        detach_easy(u, x);
        x->ended = x->length = true;
    }
    if (!x->easy && !x->ended && x->t_retry > 0) {
        if (now >= x->t_retry && !start_easy(u, x)) {
            finish_failed(u, x, 500, "server_error", NULL, "upstream: cannot start a transfer");
            return true;
        }
        return false;
    }
    flush(u, x);
    if (x->ended && (!text_pending(x) || atomic_load(&u->draining))) {
        if (x->failed_mid) finish_failed(u, x, 502, "upstream_error", "upstream_failed", x->mid_error);
        else finish_xfer(u, x, (up_final){ .state = ELPIS_REQ_DONE, .finish = x->length ? ELPIS_FINISH_LENGTH : ELPIS_FINISH_STOP });
        return true;
    }
    if (x->t_full > 0 && c->stall_timeout_s > 0 && now - x->t_full > c->stall_timeout_s * 1000.0) {
        srv_evlog(&u->srv->log, "upstream_abort trace=%s reason=stall", x->q->trace);   /* as the scheduler does */
        finish_cancelled(u, x, ELPIS_CANCEL_STALL);
        return true;
    }
    if (x->easy && !x->paused && c->upstream_idle_timeout_s > 0 && now - x->t_data > c->upstream_idle_timeout_s * 1000.0) {
        char msg[120];
        snprintf(msg, sizeof msg, "upstream: no data for %g s", c->upstream_idle_timeout_s);
        finish_failed(u, x, 504, "timeout_error", "upstream_timeout", msg);
        return true;
    }
    return false;
}

static void take_inbox(srv_upstream *u, bool *stop) {
    pthread_mutex_lock(&u->mu);
    up_xfer *in = u->inbox;
    u->inbox = NULL;
    *stop = u->stop;
    pthread_mutex_unlock(&u->mu);
    while (in) {
        up_xfer *x = in;
        in = in->next;
        if (!start_easy(u, x)) {
            x->next = NULL;
            finish_failed(u, x, 500, "server_error", NULL, "upstream: cannot start a transfer");
            continue;
        }
        x->next = u->active;
        u->active = x;
    }
}

static void read_done(srv_upstream *u) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        up_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = m->data.result;
        /* on_done may free x: unlink it first */
        up_xfer **pp = &u->active;
        while (*pp && *pp != x) pp = &(*pp)->next;
        if (!*pp) continue;
        *pp = x->next;
        if (on_done(u, x, rc)) { x->next = u->active; u->active = x; }
    }
}

static void *io_main(void *arg) {
    srv_upstream *u = arg;
    bool stop = false;
    while (!stop) {
        take_inbox(u, &stop);
        int running = 0;
        curl_multi_perform(u->multi, &running);
        read_done(u);
        double now = elpis_now_ms();
        for (up_xfer **pp = &u->active; *pp;) {
            up_xfer *x = *pp;
            *pp = x->next;   /* unlinked while tended; relinked if it stays */
            if (!tend(u, x, now)) { x->next = *pp; *pp = x; pp = &x->next; }
        }
        if (stop) break;
        int n = 0;
        curl_multi_poll(u->multi, NULL, 0, u->active ? POLL_MS : 1000, &n);
    }
    while (u->active) {   /* shutdown: everything left is cancelled */
        up_xfer *x = u->active;
        u->active = x->next;
        finish_cancelled(u, x, ELPIS_CANCEL_SHUTDOWN);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------------- */

/* For the log: the URL without user:password@ (a credential is never logged). */
static void redacted(const char *url, char *out, size_t cap) {
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    const char *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash)) snprintf(out, cap, "%.*s***@%s", (int)(host - url), url, at + 1);
    else snprintf(out, cap, "%s", url);
}

static char *endpoint(const char *base, const char *tail) {
    size_t n = strlen(base);
    while (n && base[n - 1] == '/') n--;
    bool v1 = n >= 3 && !strncmp(base + n - 3, "/v1", 3);
    char *s = malloc(n + strlen(tail) + 8);
    if (s) sprintf(s, "%.*s%s%s", (int)n, base, v1 ? "" : "/v1", tail);
    return s;
}

/* "URL1,URL2,...": one target each. */
static elpis_status parse_targets(srv_upstream *u, const char *list, elpis_error *err) {
    char one[1024];
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t')) { p++; n--; }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n >= sizeof one) return elpis_fail(err, ELPIS_EINVAL, "server.upstream: a URL is longer than %zu bytes", sizeof one - 1);
        snprintf(one, sizeof one, "%.*s", (int)n, p);
        if (strncmp(one, "http://", 7) && strncmp(one, "https://", 8))
            return elpis_fail(err, ELPIS_EINVAL, "server.upstream: \"%.200s\" is not an http:// or https:// URL", one);
        if (u->n_targets == MAX_TARGETS) return elpis_fail(err, ELPIS_EINVAL, "server.upstream: at most %d URLs", MAX_TARGETS);
        up_target *t = &u->targets[u->n_targets++];
        if (!(t->url_chat = endpoint(one, "/chat/completions")) || !(t->url_text = endpoint(one, "/completions")))
            return elpis_fail(err, ELPIS_ENOMEM, "upstream");
        if (!e) break;
        p = e + 1;
    }
    if (!u->n_targets) return elpis_fail(err, ELPIS_EINVAL, "server.upstream: no URL");
    return ELPIS_OK;
}

elpis_status srv_up_new(srv_upstream **out, elpis_server *s, elpis_error *err) {
    const elpis_server_config *c = s->cfg;
    elpis_status st = ELPIS_OK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return elpis_fail(err, ELPIS_EIO, "libcurl init failed");
    srv_upstream *u = calloc(1, sizeof *u);
    if (!u) { curl_global_cleanup(); return elpis_fail(err, ELPIS_ENOMEM, "upstream"); }
    u->srv = s;
    u->cap = c->parallel + c->queue;
    pthread_mutex_init(&u->mu, NULL);
    atomic_init(&u->draining, false);
    atomic_init(&u->n_live, 0);
    if ((st = parse_targets(u, c->upstream, err)) != ELPIS_OK) goto fail;
    if (c->upstream_key && c->upstream_key[0]) {
        u->auth = malloc(strlen(c->upstream_key) + 32);
        if (u->auth) sprintf(u->auth, "Authorization: Bearer %s", c->upstream_key);
    }
    u->affinity = calloc(AFFINITY_SLOTS, sizeof *u->affinity);
    if ((c->upstream_key && c->upstream_key[0] && !u->auth) || !u->affinity || !(u->multi = curl_multi_init())) {
        st = elpis_fail(err, ELPIS_ENOMEM, "upstream");
        goto fail;
    }
    if (pthread_create(&u->thread, NULL, io_main, u)) { st = elpis_fail(err, ELPIS_EIO, "upstream thread"); goto fail; }
    u->started = true;
    for (int i = 0; i < u->n_targets; i++) {
        char shown[300];
        redacted(u->targets[i].url_chat, shown, sizeof shown);
        srv_evlog(&s->log, "upstream target=%d url=%s model=%s key=%s connect_timeout=%g idle_timeout=%g", i, shown,
                  c->upstream_model ? c->upstream_model : "-", u->auth ? "set" : "none", c->upstream_connect_timeout_s,
                  c->upstream_idle_timeout_s);
    }
    *out = u;
    return ELPIS_OK;
fail:
    srv_up_free(u);
    return st;
}

void srv_up_drain(srv_upstream *u) {
    if (!u) return;
    atomic_store(&u->draining, true);
    curl_multi_wakeup(u->multi);
}

void srv_up_free(srv_upstream *u) {
    if (!u) return;
    if (u->started) {
        pthread_mutex_lock(&u->mu);
        u->stop = true;
        pthread_mutex_unlock(&u->mu);
        curl_multi_wakeup(u->multi);
        pthread_join(u->thread, NULL);
    }
    while (u->inbox) {   /* queued after the thread's last look */
        up_xfer *x = u->inbox;
        u->inbox = x->next;
        finish_cancelled(u, x, ELPIS_CANCEL_SHUTDOWN);
    }
    if (u->multi) curl_multi_cleanup(u->multi);
    pthread_mutex_destroy(&u->mu);
    for (int i = 0; i < u->n_targets; i++) {
        free(u->targets[i].url_chat);
        free(u->targets[i].url_text);
    }
    free(u->affinity);
    free(u->auth);
    free(u);
    curl_global_cleanup();
}
