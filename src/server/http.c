/* http.c -- libmicrohttpd glue: the daemon, routing, plain responses.
 *
 * The daemon runs one internal epoll thread with suspend/resume enabled.
 * MHD calls the access handler at least twice per request: once with the
 * headers (we route, authenticate and check Content-Length there, so a bad
 * request is refused before its body is read), then with body pieces, then
 * once with an empty piece when the body is complete (we answer, or start a
 * completion). A suspended completion request is called again after resume
 * (stream.c). The completion callback is the one place where a request's
 * memory is released, whatever happened to it.
 *
 * Routes are a table; a known path with the wrong method is 405 with Allow.
 * A prefix route ("/v1/memories/" + one more segment) hands the rest of the
 * path to its handler in r->path_arg; exact paths win over prefixes, so
 * /v1/memories/stats is never taken for an id.
 * /health is answered from atomics only and never waits: it must stay fast
 * under any load (llama.cpp #27505).
 */
#include "server_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum MHD_Result (*srv_handler)(srv_req *r);

struct srv_route {
    const char *path, *method;
    bool open;   /* no API key needed */
    srv_handler fn;
    bool prefix; /* path is a prefix followed by one segment (r->path_arg) */
};

/* ---- responses -------------------------------------------------------------------- */

void srv_count_status(elpis_server *s, unsigned status) {
    static const unsigned codes[SRV_CODE_OTHER] = { 200, 201, 400, 401, 404, 405, 409, 413, 429, 500, 503 };
    int i = 0;
    while (i < SRV_CODE_OTHER && codes[i] != status) i++;
    atomic_fetch_add(&s->http_codes[i], 1);
}

enum MHD_Result srv_respond(srv_req *r, unsigned status, const char *ctype, const char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Trace-Id", r->trace);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && r->route) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->route->method);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    srv_count_status(r->srv, status);
    r->phase = SRV_PH_DONE;
    return ret;
}

enum MHD_Result srv_respond_error(srv_req *r, unsigned status, const char *type, const char *param, const char *code,
                                  const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    elpis_buf b = { 0 };
    if (srv_error_body(&b, type, param, code, msg) != ELPIS_OK) { elpis_buf_free(&b); return MHD_NO; }
    enum MHD_Result ret = srv_respond(r, status, "application/json", b.data, b.len);
    elpis_buf_free(&b);
    return ret;
}

enum MHD_Result srv_respond_api_error(srv_req *r, const srv_api_error *e) {
    return srv_respond_error(r, e->status ? e->status : MHD_HTTP_BAD_REQUEST, e->type ? e->type : "invalid_request_error",
                             e->param, e->code, "%s", e->msg);
}

static enum MHD_Result respond_buf(srv_req *r, unsigned status, const char *ctype, elpis_buf *b) {
    enum MHD_Result ret = b->data ? srv_respond(r, status, ctype, b->data, b->len)
                                  : srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    elpis_buf_free(b);
    return ret;
}

/* ---- handlers ------------------------------------------------------------------------- */

static enum MHD_Result h_health(srv_req *r) {
    elpis_sched_stats st;
    elpis_sched_get_stats(r->srv->sched, &st);   /* atomics only */
    bool draining = atomic_load(&r->srv->draining);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"running\":%d,\"queued\":%d,\"slots\":%d}",
                     draining ? "draining" : "ok", st.n_running, st.n_queued, st.n_parallel);
    return srv_respond(r, draining ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, "application/json", body, (size_t)n);
}

static enum MHD_Result h_metrics(srv_req *r) {
    elpis_buf b = { 0 };
    if (srv_metrics_render(r->srv, &b) != ELPIS_OK) elpis_buf_free(&b);
    return respond_buf(r, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &b);
}

static enum MHD_Result h_models(srv_req *r) {
    const elpis_server *s = r->srv;
    const elpis_hparams *hp = &s->model->hp;
    elpis_buf b = { 0 };
    elpis_buf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    srv_json_str(&b, s->model_id, strlen(s->model_id));
    elpis_buf_printf(&b,
                     ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"elpis\",\"meta\":{\"n_vocab\":%d,"
                     "\"n_ctx_train\":%d,\"n_ctx\":%d,\"n_embd\":%d,\"n_layer\":%d,\"size\":%llu}}]}",
                     s->started, hp->n_vocab, hp->n_ctx_train, elpis_sched_params_of(s->sched)->n_ctx, hp->n_embd,
                     hp->n_layer, (unsigned long long)s->model->weight_bytes);
    return respond_buf(r, MHD_HTTP_OK, "application/json", &b);
}

/* A user's completion wakes the server from any dream at once (dream.c). */
static enum MHD_Result h_chat(srv_req *r) { srv_dream_interrupt(r->srv); return srv_gen_start(r, SRV_CHAT); }
static enum MHD_Result h_text(srv_req *r) { srv_dream_interrupt(r->srv); return srv_gen_start(r, SRV_TEXT); }

/* --upstream: the local tokenizer is not the upstream's; its ids would mislead. */
static enum MHD_Result needs_local_engine(srv_req *r, const char *what) {
    return srv_respond_error(r, MHD_HTTP_NOT_IMPLEMENTED, "invalid_request_error", NULL, "needs_local_engine",
                             "%s needs the local engine; this server sends generation to --upstream", what);
}

static enum MHD_Result h_tokenize(srv_req *r) {
    elpis_buf b = { 0 };
    srv_api_error e = { 0 };
    if (r->srv->up) return needs_local_engine(r, "/tokenize");
    if (!srv_api_tokenize(r, &b, &e)) { elpis_buf_free(&b); return srv_respond_api_error(r, &e); }
    return respond_buf(r, MHD_HTTP_OK, "application/json", &b);
}

static enum MHD_Result h_detokenize(srv_req *r) {
    elpis_buf b = { 0 };
    srv_api_error e = { 0 };
    if (r->srv->up) return needs_local_engine(r, "/detokenize");
    if (!srv_api_detokenize(r, &b, &e)) { elpis_buf_free(&b); return srv_respond_api_error(r, &e); }
    return respond_buf(r, MHD_HTTP_OK, "application/json", &b);
}

static const srv_route ROUTES[] = {
    { "/health", "GET", true, h_health, false },
    { "/metrics", "GET", false, h_metrics, false },
    { "/v1/models", "GET", false, h_models, false },
    { "/v1/chat/completions", "POST", false, h_chat, false },
    { "/v1/completions", "POST", false, h_text, false },
    { "/tokenize", "POST", false, h_tokenize, false },
    { "/detokenize", "POST", false, h_detokenize, false },
    { "/v1/psyche/emotion", "GET", false, srv_h_emotion_get, false },
    { "/v1/psyche/emotion", "POST", false, srv_h_emotion_post, false },
    { "/v1/emotion", "GET", false, srv_h_emotion_full, false },
    { "/v1/psyche/dream", "POST", false, srv_h_dream, false },
    { "/v1/memories", "POST", false, srv_h_mem_store, false },
    { "/v1/memories", "GET", false, srv_h_mem_search, false },
    { "/v1/memories/stats", "GET", false, srv_h_mem_stats, false },
    { "/v1/memories/", "GET", false, srv_h_mem_get, true },
    { "/v1/memories/", "DELETE", false, srv_h_mem_delete, true },
    { "/v1/embeddings", "POST", false, srv_h_embeddings, false },
};

/* ---- per-request state ------------------------------------------------------------------------ */

static srv_req *req_new(elpis_server *s, struct MHD_Connection *conn) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    r->conn = conn;
    r->serial = atomic_fetch_add(&s->next_serial, 1);
    snprintf(r->trace, sizeof r->trace, "%016llx", (unsigned long long)(s->trace_base + r->serial));
    elpis_arena_init(&r->arena, 16 * 1024);
    r->t_start = elpis_now_ms();
    r->created = (long long)time(NULL);
    r->slot = -1;
    r->fd = -1;
    return r;
}

static void req_free(srv_req *r) {
    srv_agent_free(r);
    elpis_request_unref(r->req);
    elpis_tokens_free(&r->gen.prompt);
    free(r->gen.steering);
    elpis_buf_free(&r->body);
    elpis_buf_free(&r->out);
    elpis_buf_free(&r->text);
    elpis_arena_free(&r->arena);
    free(r);
}

static bool path_matches(const srv_route *rt, const char *url, bool prefix) {
    if (rt->prefix != prefix) return false;
    if (!prefix) return !strcmp(rt->path, url);
    size_t n = strlen(rt->path);
    return !strncmp(rt->path, url, n) && url[n] && !strchr(url + n, '/');
}

/* The route for url + method into r->route; returns a route with that path
 * (any method) or NULL. Exact paths are tried before prefixes. */
static const srv_route *find_route(srv_req *r, const char *url, const char *method) {
    const srv_route *path_match = NULL;
    for (int prefix = 0; prefix < 2 && !path_match; prefix++)
        for (size_t i = 0; i < ELPIS_ARRAY_LEN(ROUTES); i++) {
            if (!path_matches(&ROUTES[i], url, prefix)) continue;
            path_match = &ROUTES[i];
            if (!strcmp(ROUTES[i].method, method)) r->route = &ROUTES[i];
        }
    if (r->route && r->route->prefix) {
        const char *rest = url + strlen(r->route->path);
        r->path_arg = elpis_arena_strndup(&r->arena, rest, strlen(rest));
    }
    return path_match;
}

/* First call: route, authenticate, check the announced size. */
static enum MHD_Result on_headers(srv_req *r, const char *url, const char *method) {
    elpis_server *s = r->srv;
    const srv_route *path_match = find_route(r, url, method);
    if (!path_match) return srv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found_error", NULL, "not_found", "no route for %s %s", method, url);
    if (!r->route) {
        r->route = path_match;
        return srv_respond_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", NULL, "method_not_allowed",
                                 "%s %s is not allowed; use %s", method, url, path_match->method);
    }
    if (!r->route->open && !srv_auth_ok(s->cfg, r->conn))
        return srv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "authentication_error", NULL, "invalid_api_key",
                                 "missing or invalid API key (Authorization: Bearer KEY or X-Api-Key: KEY)");
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg->body_limit)
        return srv_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL, "body_too_large",
                                 "the request body of %s bytes exceeds the limit of %llu bytes", cl,
                                 (unsigned long long)s->cfg->body_limit);
    r->phase = SRV_PH_BODY;
    return MHD_YES;
}

static void take_body(srv_req *r, const char *data, size_t n) {
    if (r->body_too_large) return;
    if (r->body.len + n > r->srv->cfg->body_limit || elpis_buf_append(&r->body, data, n) != ELPIS_OK) {
        r->body_too_large = true;   /* keep reading (and dropping) so we can answer 413 */
        elpis_buf_free(&r->body);
    }
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **con_cls) {
    elpis_server *s = cls;
    srv_req *r = *con_cls;
    (void)version;
    if (!r) {
        if (!(r = req_new(s, conn))) return MHD_NO;
        *con_cls = r;
        enum MHD_Result ret = on_headers(r, url, method);
        srv_dream_request_begin(r, url, method);
        return ret;
    }
    if (r->phase == SRV_PH_BODY) {
        if (*upload_size) {
            take_body(r, upload_data, *upload_size);
            *upload_size = 0;
            return MHD_YES;
        }
        if (r->body_too_large)
            return srv_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL, "body_too_large",
                                     "the request body exceeds the limit of %llu bytes", (unsigned long long)s->cfg->body_limit);
        return r->route->fn(r);
    }
    if (r->phase == SRV_PH_DONE) {
        *upload_size = 0;   /* answered early; drop the rest of the body */
        return MHD_YES;
    }
    if (r->phase == SRV_PH_WORK) return srv_work_resume(r);
    return srv_gen_resume(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    srv_req *r = *con_cls;
    (void)cls;
    (void)conn;
    if (!r) return;
    *con_cls = NULL;
    srv_gen_completed(r, toe);
    srv_work_detach(r);
    srv_dream_request_end(r);
    req_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    elpis_server *s = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    srv_evlog(&s->log, "mhd message=\"%s\"", msg);
}

elpis_status srv_http_start(elpis_server *s, elpis_error *err) {
    struct sockaddr_storage ss;
    socklen_t len;
    bool loopback;
    elpis_status st = srv_resolve_host(s->cfg->host, s->cfg->port, &ss, &len, &loopback, err);
    if (st != ELPIS_OK) return st;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, (uint16_t)s->cfg->port, NULL, NULL, on_access, s,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,   /* first, to catch option errors */
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned int)s->cfg->max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)600,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)128,
                              MHD_OPTION_END);
    if (!s->mhd) return elpis_fail(err, ELPIS_EIO, "cannot listen on %s:%d (address in use or not available)", s->cfg->host, s->cfg->port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : (uint16_t)s->cfg->port;
    return ELPIS_OK;
}
