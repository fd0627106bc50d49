/* gen.c -- generation jobs: generate, function_call and the streams, and the
 * completion thread that finishes them.
 *
 * DESIGN
 * ------
 * A generating tool renders the messages with the model's chat template,
 * tokenizes them, picks the sampling values (emotion-modulated unless a
 * temperature is given), and creates an elpis_request. The job (one per
 * call or stream) is linked into m->jobs and the request submitted, both
 * under jobs_mu, so the completion thread can never miss a request that
 * finishes at once.
 *
 * The scheduler calls on_notify() for every new piece of output and every
 * state change. It only raises ev_dirty and signals ev_cv (many notifies
 * coalesce into one wake-up). The completion thread then walks the jobs
 * under jobs_mu and, for each, moves the request's new text into the job
 * ("pump"): the request's bounded buffer is always drained, so a stream
 * nobody reads never stalls the scheduler. Then:
 *   generate / function_call: send notifications/progress with the new text
 *     (when the call has a progressToken; at most one per progress_interval;
 *     the response carries the full text); once final, unlink the job and,
 *     unless the client cancelled it, answer the call;
 *   streams: run the response analysis once when final; drop streams that
 *     have not been read for stream_ttl_s.
 * It also wakes every second on its own for the TTL sweep.
 *
 * Stream reads and cancels run on the reader thread, under jobs_mu, and pump
 * the request themselves, so a read always sees the latest text.
 *
 * The notify callback's argument is the server, not the job: a job may be
 * freed while the scheduler still holds its request and calls back, but the
 * server outlives the scheduler (see elpis_mcp_free).
 */
#include "mcp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- the notify callback (scheduler thread: must not block) --------------------- */

static void on_notify(void *arg) {
    elpis_mcp *m = arg;
    pthread_mutex_lock(&m->ev_mu);
    m->ev_dirty = true;
    pthread_cond_signal(&m->ev_cv);
    pthread_mutex_unlock(&m->ev_mu);
}

/* ---- jobs --------------------------------------------------------------------------- */

static void job_free(mcp_job *j) {
    if (!j) return;
    elpis_request_unref(j->req);
    json_decref(j->id);
    json_decref(j->progress_token);
    elpis_buf_free(&j->text);
    free(j);
}

/* Move everything the request has produced into j->text; note its status. */
static void job_pump(mcp_job *j) {
    char buf[4096];
    size_t n;
    elpis_req_status st;
    if (j->final) return;
    while ((n = elpis_request_read(j->req, buf, sizeof buf, &st)) > 0)
        if (elpis_buf_append(&j->text, buf, n) != ELPIS_OK) elpis_log(ELPIS_LOG_ERROR, "mcp event=text_dropped bytes=%zu", n);
    j->st = st;
    j->final = elpis_req_state_final(st.state);
}

static void job_unlink(elpis_mcp *m, mcp_job *j) {
    for (mcp_job **pp = &m->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            j->next = NULL;
            if (j->kind == MCP_JOB_STREAM) m->n_streams--;
            return;
        }
}

static mcp_job *find_stream(elpis_mcp *m, const char *id) {
    for (mcp_job *j = m->jobs; j; j = j->next)
        if (j->kind == MCP_JOB_STREAM && !strcmp(j->stream_id, id)) return j;
    return NULL;
}

static mcp_job *find_call(elpis_mcp *m, const json_t *id) {
    for (mcp_job *j = m->jobs; j; j = j->next)
        if (j->kind != MCP_JOB_STREAM && json_equal(j->id, id)) return j;
    return NULL;
}

bool mcp_jobs_id_busy(elpis_mcp *m, const json_t *id) {
    pthread_mutex_lock(&m->jobs_mu);
    bool busy = find_call(m, id) != NULL;
    pthread_mutex_unlock(&m->jobs_mu);
    return busy;
}

bool mcp_jobs_cancel_call(elpis_mcp *m, const json_t *id) {
    pthread_mutex_lock(&m->jobs_mu);
    mcp_job *j = find_call(m, id);
    if (j && !j->client_cancelled) {
        j->client_cancelled = true;
        elpis_request_cancel(j->req, ELPIS_CANCEL_USER);
    }
    pthread_mutex_unlock(&m->jobs_mu);
    return j != NULL;
}

/* ---- building a request ------------------------------------------------------------------ */

typedef struct gen_args {
    const json_t *messages, *tools;
    int32_t max_tokens;
    bool t_set, modulate, ignore_eos;
    double t;
} gen_args;

static gen_args read_args(const elpis_mcp *m, const json_t *a) {
    const json_t *t = json_object_get(a, "temperature"), *mt = json_object_get(a, "max_tokens");
    const json_t *mod = json_object_get(a, "emotional_modulation");
    return (gen_args){
        .messages = json_object_get(a, "messages"),
        .tools = json_object_get(a, "tools"),
        .max_tokens = mt ? (int32_t)json_number_value(mt) : m->cfg.default_max_tokens,
        .t_set = t != NULL,
        .t = t ? json_number_value(t) : 0,
        .modulate = mod ? json_is_true(mod) : true,
        .ignore_eos = json_is_true(json_object_get(a, "ignore_eos")),
    };
}

/* messages (+ the function-calling system text) -> chat prompt -> tokens */
static elpis_status render_prompt(elpis_mcp *m, const gen_args *g, elpis_tokens *toks, elpis_error *err) {
    size_t n = json_array_size(g->messages), k = 0;
    elpis_chat_msg *msgs = calloc(n + 1, sizeof *msgs);
    elpis_buf sys = { 0 }, text = { 0 };
    elpis_status st = ELPIS_OK;
    if (!msgs) return elpis_fail(err, ELPIS_ENOMEM, "messages");
    size_t first = 0;
    if (g->tools) {
        /* the function list goes into the system message (merged with the caller's, if any) */
        const json_t *m0 = json_array_get(g->messages, 0);
        if ((st = mcp_toolcall_prompt(g->tools, &sys, err)) != ELPIS_OK) goto fail;
        if (!strcmp(json_string_value(json_object_get(m0, "role")), "system")) {
            if (elpis_buf_printf(&sys, "\n%s", json_string_value(json_object_get(m0, "content"))) != ELPIS_OK) {
                st = elpis_fail(err, ELPIS_ENOMEM, "messages");
                goto fail;
            }
            first = 1;
        }
        msgs[k++] = (elpis_chat_msg){ "system", sys.data };
    }
    for (size_t i = first; i < n; i++) {
        const json_t *mi = json_array_get(g->messages, i);
        msgs[k++] = (elpis_chat_msg){ json_string_value(json_object_get(mi, "role")),
                                      json_string_value(json_object_get(mi, "content")) };
    }
    if ((st = elpis_chat_apply(m->chat_family, msgs, k, true, &text, err)) != ELPIS_OK) goto fail;
    st = elpis_tokenize(m->model->vocab, text.data, text.len, true, true, toks, err);
fail:
    free(msgs);
    elpis_buf_free(&sys);
    elpis_buf_free(&text);
    return st;
}

static uint64_t random_seed(void) {
    uint64_t s;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = (uint64_t)time(NULL) ^ (uint64_t)elpis_now_ms();
    return s;
}

/* A new job with a created (not yet submitted) request; NULL and out->error on failure. */
static mcp_job *job_new(const mcp_call *c, mcp_job_kind kind, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    gen_args g = read_args(m, c->args);
    elpis_tokens toks = { 0 };
    elpis_error err = { 0 };
    mcp_job *j = NULL;
    if (!m->sched) { mcp_out_error(out, "no model is loaded"); return NULL; }
    if (!(j = calloc(1, sizeof *j))) { mcp_out_error(out, "out of memory"); return NULL; }
    j->kind = kind;
    j->max_tokens = g.max_tokens;
    mcp_emo_sampling(m->emo, &m->cfg, g.t_set, g.t, g.modulate, &j->temperature, &j->top_p);
    if (render_prompt(m, &g, &toks, &err) != ELPIS_OK) goto fail;
    elpis_sampler_params sp = elpis_sampler_defaults();
    sp.temperature = (float)j->temperature;
    sp.top_p = (float)j->top_p;
    sp.seed = random_seed();
    bool oom = false;   /* steering follows emotional_modulation, as in the HTTP server */
    float *steer = g.modulate ? mcp_emo_steering(m->emo, m->vectors, &oom) : NULL;
    if (oom) { elpis_fail(&err, ELPIS_ENOMEM, "out of memory (steering vector)"); goto fail; }
    elpis_req_params rp = { .prompt = toks.ids, .n_prompt = toks.n, .sampling = sp, .max_tokens = g.max_tokens,
                            .ignore_eos = g.ignore_eos, .steering = steer };
    j->req = elpis_request_new(m->sched, &rp, &err);
    free(steer);   /* the request keeps its own copy */
    if (!j->req) goto fail;
    elpis_request_set_notify(j->req, on_notify, m);
    if (kind != MCP_JOB_STREAM) {
        j->id = json_deep_copy(c->id);
        j->progress_token = c->progress_token ? json_deep_copy(c->progress_token) : NULL;
    }
    j->last_access_ms = elpis_now_ms();
    elpis_tokens_free(&toks);
    return j;
fail:
    mcp_out_error(out, "%s", err.msg);
    elpis_tokens_free(&toks);
    job_free(j);
    return NULL;
}

/* Link and submit under jobs_mu (see DESIGN); frees the job on failure. */
static bool job_submit(elpis_mcp *m, mcp_job *j, mcp_tool_out *out) {
    elpis_error err = { 0 };
    j->next = m->jobs;
    m->jobs = j;
    if (j->kind == MCP_JOB_STREAM) m->n_streams++;
    elpis_status st = elpis_sched_submit(m->sched, j->req, &err);
    if (st == ELPIS_OK) return true;
    job_unlink(m, j);
    job_free(j);
    if (st == ELPIS_ERANGE) mcp_out_error(out, "the server is busy (every slot and queue place is taken); try again later");
    else mcp_out_error(out, "cannot start the generation: %s", err.msg);
    return false;
}

/* ---- answering ------------------------------------------------------------------------------ */

static const char *finish_of(const mcp_job *j) { return j->st.finish == ELPIS_FINISH_LENGTH ? "length" : "stop"; }

/* Why a final job produced no normal result; NULL when it did. */
static const char *job_failure(const mcp_job *j, char *buf, size_t cap) {
    if (j->st.state == ELPIS_REQ_FAILED) snprintf(buf, cap, "generation failed: %s", j->st.error);
    else if (j->st.state == ELPIS_REQ_CANCELLED)
        snprintf(buf, cap, "generation was cancelled (%s)", elpis_cancel_reason_name(j->st.cancel_reason));
    else return NULL;
    return buf;
}

static json_t *generate_result(elpis_mcp *m, mcp_job *j) {
    json_t *r = json_pack("{s:o, s:o, s:{s:f, s:f}, s:s, s:{s:i, s:i}}", "content", mcp_text(j->text.data, j->text.len),
                          "emotional_state", mcp_emo_state(m->emo), "modulated_params", "temperature", j->temperature,
                          "top_p", j->top_p, "finish_reason", finish_of(j), "usage", "prompt_tokens", j->st.n_prompt,
                          "completion_tokens", j->st.n_generated);
    if (j->text.len > 0) mcp_emo_after_response(m->emo, j->text.data);   /* as the original: after the result */
    return r;
}

static json_t *function_call_result(elpis_mcp *m, mcp_job *j) {
    char *content = NULL;
    json_t *text = mcp_text(j->text.data ? j->text.data : "", j->text.len);   /* valid UTF-8 for the parser */
    json_t *calls = text ? mcp_toolcall_parse(json_string_value(text), &content) : NULL;
    json_t *r = json_pack("{s:o, s:o, s:o, s:s}", "tool_calls", calls ? calls : json_null(), "emotional_state",
                          mcp_emo_state(m->emo), "content", mcp_text(content ? content : "", content ? strlen(content) : 0),
                          "finish_reason", finish_of(j));
    free(content);
    json_decref(text);
    return r;
}

/* The response to a finished generate/function_call job. */
static json_t *job_response(elpis_mcp *m, mcp_job *j) {
    char why[400];
    json_t *result;
    if (job_failure(j, why, sizeof why)) result = mcp_tool_error(why);
    else {
        json_t *s = j->kind == MCP_JOB_GENERATE ? generate_result(m, j) : function_call_result(m, j);
        result = s ? mcp_tool_result(s) : mcp_tool_error("out of memory building the result");
    }
    elpis_log(ELPIS_LOG_INFO, "mcp event=call_done kind=%s state=%d generated=%d ms=%.1f",
              j->kind == MCP_JOB_GENERATE ? "generate" : "function_call", (int)j->st.state, j->st.n_generated,
              j->st.t_end_ms - j->st.t_submit_ms);
    return mcp_result(j->id, result);
}

/* notifications/progress with the text not yet sent, at most one per
 * progress_interval. Nothing is sent once the job is final: the response
 * carries the whole text, and a progress notification written just before
 * its response races it in SDK clients, which then report it as an error
 * (typescript-sdk #2580), so there is no "last chunk" progress. */
static void job_progress(elpis_mcp *m, mcp_job *j) {
    if (!j->progress_token || j->client_cancelled || j->final || j->text.len <= j->progress_cursor) return;
    double now = elpis_now_ms();
    if (j->last_progress_ms > 0 && now - j->last_progress_ms < m->cfg.progress_interval_ms) return;
    int32_t progress = ELPIS_MAX(j->st.n_generated, j->progress_sent + 1);   /* strictly increasing */
    json_t *p = json_pack("{s:O, s:i, s:i, s:o}", "progressToken", j->progress_token, "progress", progress, "total",
                          j->max_tokens, "message",
                          mcp_text(j->text.data + j->progress_cursor, j->text.len - j->progress_cursor));
    if (!mcp_writer_send(&m->writer, mcp_notification("notifications/progress", p), MCP_SEND_OPTIONAL)) return;
    j->progress_cursor = j->text.len;
    j->progress_sent = progress;
    j->last_progress_ms = now;
}

static void stream_analyse(elpis_mcp *m, mcp_job *j) {
    if (j->analysed || !j->final) return;
    j->analysed = true;
    if (j->text.len > 0) mcp_emo_after_response(m->emo, j->text.data);
}

static bool stream_expired(const elpis_mcp *m, const mcp_job *j, double now) {
    return j->kind == MCP_JOB_STREAM && now - j->last_access_ms > m->cfg.stream_ttl_s * 1000.0;
}

/* Drop streams idle beyond the TTL. Caller holds jobs_mu. */
static void sweep_streams(elpis_mcp *m) {
    double now = elpis_now_ms();
    mcp_job **pp = &m->jobs;
    while (*pp) {
        mcp_job *j = *pp;
        if (!stream_expired(m, j, now)) { pp = &j->next; continue; }
        elpis_log(ELPIS_LOG_INFO, "mcp event=stream_expired stream_id=%s idle_s=%.0f", j->stream_id,
                  (now - j->last_access_ms) / 1000.0);
        elpis_request_cancel(j->req, ELPIS_CANCEL_CLIENT);
        *pp = j->next;
        m->n_streams--;
        job_free(j);
    }
}

/* ---- the completion thread ------------------------------------------------------------------------ */

/* One pass over the jobs; finished calls are answered after jobs_mu is released. */
static void completion_pass(elpis_mcp *m) {
    mcp_job *finished = NULL;
    pthread_mutex_lock(&m->jobs_mu);
    mcp_job **pp = &m->jobs;
    while (*pp) {
        mcp_job *j = *pp;
        job_pump(j);
        if (j->kind == MCP_JOB_STREAM) {
            stream_analyse(m, j);
            pp = &j->next;
            continue;
        }
        job_progress(m, j);
        if (!j->final) { pp = &j->next; continue; }
        *pp = j->next;   /* decided under jobs_mu: answer it (or stay silent if cancelled) */
        j->next = finished;
        finished = j;
    }
    sweep_streams(m);
    pthread_mutex_unlock(&m->jobs_mu);
    while (finished) {
        mcp_job *j = finished;
        finished = j->next;
        if (j->client_cancelled) elpis_log(ELPIS_LOG_INFO, "mcp event=call_cancelled generated=%d", j->st.n_generated);
        else mcp_writer_send(&m->writer, job_response(m, j), MCP_SEND_MUST);
        job_free(j);
    }
}

static void *completion_main(void *arg) {
    elpis_mcp *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->ev_mu);
        if (!m->ev_dirty && !m->ev_quit) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += 1;   /* the TTL sweep runs even when nothing happens */
            pthread_cond_timedwait(&m->ev_cv, &m->ev_mu, &dl);
        }
        bool quit = m->ev_quit;
        m->ev_dirty = false;
        pthread_mutex_unlock(&m->ev_mu);
        if (quit) break;
        completion_pass(m);
    }
    return NULL;
}

elpis_status mcp_jobs_start(elpis_mcp *m, elpis_error *err) {
    if (pthread_create(&m->done_thread, NULL, completion_main, m) != 0)
        return elpis_fail(err, ELPIS_ENOMEM, "mcp: cannot start the completion thread");
    m->done_started = true;
    return ELPIS_OK;
}

void mcp_jobs_stop(elpis_mcp *m) {
    pthread_mutex_lock(&m->jobs_mu);
    for (mcp_job *j = m->jobs; j; j = j->next) elpis_request_cancel(j->req, ELPIS_CANCEL_CLIENT);
    pthread_mutex_unlock(&m->jobs_mu);
    if (m->done_started) {
        pthread_mutex_lock(&m->ev_mu);
        m->ev_quit = true;
        pthread_cond_signal(&m->ev_cv);
        pthread_mutex_unlock(&m->ev_mu);
        pthread_join(m->done_thread, NULL);
        m->done_started = false;
    }
    pthread_mutex_lock(&m->jobs_mu);
    int n = 0;
    while (m->jobs) {
        mcp_job *j = m->jobs;
        m->jobs = j->next;
        job_free(j);
        n++;
    }
    m->n_streams = 0;
    pthread_mutex_unlock(&m->jobs_mu);
    if (n) elpis_log(ELPIS_LOG_INFO, "mcp event=shutdown cancelled_jobs=%d", n);
}

/* ---- tool handlers ------------------------------------------------------------------------------- */

static void start_call(const mcp_call *c, mcp_job_kind kind, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    mcp_job *j = job_new(c, kind, out);
    if (!j) return;
    pthread_mutex_lock(&m->jobs_mu);
    out->deferred = job_submit(m, j, out);
    pthread_mutex_unlock(&m->jobs_mu);
}

void mcp_tool_generate(const mcp_call *c, mcp_tool_out *out) { start_call(c, MCP_JOB_GENERATE, out); }
void mcp_tool_function_call(const mcp_call *c, mcp_tool_out *out) { start_call(c, MCP_JOB_FUNCTION_CALL, out); }

static void make_uuid(char out[40]) {
    unsigned char u[16] = { 0 };
    if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u) {
        uint64_t s = random_seed() ^ (uint64_t)elpis_now_ms() * 0x9E3779B97F4A7C15ull;
        memcpy(u, &s, 8);
        memcpy(u + 8, &s, 8);
    }
    u[6] = (unsigned char)((u[6] & 0x0F) | 0x40);   /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3F) | 0x80);   /* RFC 4122 variant */
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3],
             u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

void mcp_tool_stream_start(const mcp_call *c, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    pthread_mutex_lock(&m->jobs_mu);
    sweep_streams(m);   /* as the original: stale streams go before the cap is checked */
    bool full = m->n_streams >= m->cfg.max_streams;
    pthread_mutex_unlock(&m->jobs_mu);
    if (full) {
        mcp_out_error(out, "Maximum concurrent streams (%d) reached. Read or cancel an existing stream first.",
                      m->cfg.max_streams);
        return;
    }
    mcp_job *j = job_new(c, MCP_JOB_STREAM, out);
    if (!j) return;
    make_uuid(j->stream_id);
    char id[40];
    memcpy(id, j->stream_id, sizeof id);
    pthread_mutex_lock(&m->jobs_mu);
    bool ok = job_submit(m, j, out);   /* the reader is the only one adding streams: the cap holds */
    pthread_mutex_unlock(&m->jobs_mu);
    if (!ok) return;
    elpis_log(ELPIS_LOG_INFO, "mcp event=stream_start stream_id=%s", id);
    out->structured = json_pack("{s:s, s:s, s:o}", "stream_id", id, "status", "started", "emotional_state",
                                mcp_emo_state(m->emo));
    if (!out->structured) mcp_out_error(out, "out of memory");
}

/* The reply to a read; closes the stream when it is complete. Caller holds jobs_mu. */
static json_t *stream_reply(elpis_mcp *m, mcp_job *j) {
    size_t fresh = j->text.len - j->read_cursor;
    json_t *r = json_pack("{s:o, s:b, s:i}", "new_content", mcp_text(fresh ? j->text.data + j->read_cursor : "", fresh),
                          "is_complete", j->final,
                          "total_tokens", j->st.n_generated);
    j->read_cursor = j->text.len;
    if (!r || !j->final) return r;
    char why[400];
    if (job_failure(j, why, sizeof why)) json_object_set_new(r, "error", json_string(why));
    else json_object_set_new(r, "finish_reason", json_string(finish_of(j)));
    stream_analyse(m, j);
    json_object_set_new(r, "full_content", mcp_text(j->text.data, j->text.len));
    json_object_set_new(r, "emotional_state", mcp_emo_state(m->emo));
    return r;
}

void mcp_tool_stream_read(const mcp_call *c, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    const char *id = json_string_value(json_object_get(c->args, "stream_id"));
    pthread_mutex_lock(&m->jobs_mu);
    mcp_job *j = find_stream(m, id);
    bool found = j != NULL;
    if (j) {
        job_pump(j);
        j->last_access_ms = elpis_now_ms();
        out->structured = stream_reply(m, j);
        if (j->final) {   /* read to the end: the stream is closed */
            job_unlink(m, j);
            job_free(j);
        }
    }
    pthread_mutex_unlock(&m->jobs_mu);
    if (!found) mcp_out_error(out, "Unknown stream_id: %s", id);
    else if (!out->structured) mcp_out_error(out, "out of memory");
}

void mcp_tool_stream_cancel(const mcp_call *c, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    const char *id = json_string_value(json_object_get(c->args, "stream_id"));
    pthread_mutex_lock(&m->jobs_mu);
    mcp_job *j = find_stream(m, id);
    bool found = j != NULL;
    if (j) {
        elpis_request_cancel(j->req, ELPIS_CANCEL_USER);
        job_unlink(m, j);
        job_free(j);
    }
    pthread_mutex_unlock(&m->jobs_mu);
    if (!found) {
        mcp_out_error(out, "Unknown stream_id: %s", id);
        return;
    }
    elpis_log(ELPIS_LOG_INFO, "mcp event=stream_cancel stream_id=%s", id);
    if (!(out->structured = json_pack("{s:s, s:s}", "status", "cancelled", "stream_id", id))) mcp_out_error(out, "out of memory");
}
