/* server.c -- the MCP server object, the reader loop and method dispatch.
 *
 * The reader (elpis_mcp_serve's thread) polls the input and a self-pipe,
 * splits lines (line.c), classifies each (rpc.c) and dispatches requests
 * through the method table below. Every handler here answers before it
 * returns, except tools/call of a generating tool, which leaves the answer
 * to its job (gen.c). So a slow generation never delays a ping, a stream
 * read or a notifications/cancelled behind it.
 *
 * Protocol state (initialize seen, negotiated version) belongs to the reader
 * alone and needs no lock.
 *
 * Shutdown (end of input, elpis_mcp_stop): cancel every job, stop the
 * completion thread, let the writer flush, return. Requests the scheduler
 * still holds finish as cancelled on their own.
 */
#include "mcp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MCP_READ_CHUNK (64 * 1024)
#define MCP_OUT_HIGH_WATER (16u << 20)   /* queued output bytes before the reader waits */

static const char *const g_versions[] = { "2025-11-25", "2025-06-18" };   /* newest first */

void elpis_mcp_config_default(elpis_mcp_config *c) {
    *c = (elpis_mcp_config){ .max_line = 4u << 20, .max_streams = 100, .stream_ttl_s = 600,
                             .progress_interval_ms = 25, .default_max_tokens = 2048, .temperature = 0.7, .top_p = 0.9 };
}

/* ---- sending ------------------------------------------------------------------------- */

static void send_msg(elpis_mcp *m, json_t *msg) { mcp_writer_send(&m->writer, msg, MCP_SEND_WAIT); }

static void reply(elpis_mcp *m, const mcp_msg *req, json_t *result) {
    if (!result) send_msg(m, mcp_error(req->id, MCP_INTERNAL_ERROR, "out of memory", NULL));
    else send_msg(m, mcp_result(req->id, result));
}

static void reply_error(elpis_mcp *m, const mcp_msg *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(elpis_mcp *m, const mcp_msg *req, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    elpis_log(ELPIS_LOG_DEBUG, "mcp event=error code=%d method=%s message=\"%s\"", code, req->method ? req->method : "-", msg);
    send_msg(m, mcp_error(req->id, code, msg, NULL));
}

/* ---- lifecycle methods ------------------------------------------------------------------ */

static const char *negotiate(const char *asked) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(g_versions); i++)
        if (!strcmp(asked, g_versions[i])) return g_versions[i];
    return g_versions[0];
}

static void m_initialize(elpis_mcp *m, const mcp_msg *req) {
    const json_t *p = req->params;
    const char *asked = json_string_value(json_object_get(p, "protocolVersion"));
    const json_t *caps = json_object_get(p, "capabilities"), *info = json_object_get(p, "clientInfo");
    if (m->initialized) { reply_error(m, req, MCP_INVALID_REQUEST, "Invalid Request: initialize was already called"); return; }
    if (!asked) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.protocolVersion must be a string"); return; }
    if (caps && !json_is_object(caps)) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.capabilities must be an object"); return; }
    if (info && !json_is_object(info)) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.clientInfo must be an object"); return; }
    snprintf(m->version, sizeof m->version, "%s", negotiate(asked));
    m->initialized = true;
    elpis_log(ELPIS_LOG_INFO, "mcp event=initialize client=\"%.80s\" client_version=\"%.40s\" asked=%.20s version=%s",
              json_string_value(json_object_get(info, "name")) ? json_string_value(json_object_get(info, "name")) : "?",
              json_string_value(json_object_get(info, "version")) ? json_string_value(json_object_get(info, "version")) : "?",
              asked, m->version);
    reply(m, req,
          json_pack("{s:s, s:{s:{s:b}, s:{s:b, s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", m->version,
                    "capabilities", "tools", "listChanged", 0, "resources", "subscribe", 0, "listChanged", 0,
                    "serverInfo", "name", "elpis", "title", "Elpis", "version",
                    m->cfg.server_version ? m->cfg.server_version : "0.0.0", "instructions",
                    "Local LLM inference with an emotional state. Call generate for a reply (send a progressToken "
                    "to get the text as it is produced), or generate_stream_start and poll generate_stream_read. "
                    "The emotional state (get_emotion, emotion://state) modulates sampling."));
}

static void m_ping(elpis_mcp *m, const mcp_msg *req) { reply(m, req, json_object()); }

/* ---- tools ------------------------------------------------------------------------------------ */

static void m_tools_list(elpis_mcp *m, const mcp_msg *req) { reply(m, req, json_deep_copy(m->tools_list)); }

static size_t find_tool(const elpis_mcp *m, const char *name) {
    for (size_t i = 0; i < m->n_tools; i++)
        if (!strcmp(m->tools[i].name, name)) return i;
    return m->n_tools;
}

/* _meta.progressToken: a string or a number; *bad when present with another type. */
static const json_t *progress_token(const json_t *params, bool *bad) {
    const json_t *tok = json_object_get(json_object_get(params, "_meta"), "progressToken");
    *bad = tok && !json_is_string(tok) && !json_is_number(tok);
    return *bad ? NULL : tok;
}

/* Check the arguments against the tool's input schema, run it, answer
 * (unless a job answers later). */
static void run_tool(elpis_mcp *m, const mcp_msg *req, const char *name, const json_t *schema, mcp_tool_fn fn,
                     const json_t *args, const json_t *tok) {
    mcp_tool_out out = { 0 };
    char msg[ELPIS_ERROR_MAX];
    if (!mcp_schema_check(schema, args, "arguments", msg, sizeof msg)) {
        /* SEP-1303: input validation failures are tool errors the model can fix */
        reply(m, req, mcp_tool_error(msg));
        return;
    }
    mcp_call call = { .srv = m, .name = name, .args = args, .id = req->id, .progress_token = tok };
    fn(&call, &out);
    if (out.deferred) return;
    if (out.structured) reply(m, req, mcp_tool_result(out.structured));
    else {
        elpis_log(ELPIS_LOG_INFO, "mcp event=tool_error tool=%s message=\"%s\"", name, out.error);
        reply(m, req, mcp_tool_error(out.error));
    }
}

static void m_tools_call(elpis_mcp *m, const mcp_msg *req) {
    const json_t *p = req->params;
    const char *name = json_string_value(json_object_get(p, "name"));
    json_t *args = json_object_get(p, "arguments");
    bool bad_token;
    const json_t *tok = progress_token(p, &bad_token);
    if (!name) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.name must be a string"); return; }
    size_t ti = find_tool(m, name);
    const json_t *mem_schema = ti == m->n_tools ? mcp_mem_schema(m, name) : NULL;
    if (ti == m->n_tools && !mem_schema) { reply_error(m, req, MCP_INVALID_PARAMS, "Unknown tool: %s", name); return; }
    if (args && !json_is_object(args)) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.arguments must be an object"); return; }
    if (bad_token) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params._meta.progressToken must be a string or a number"); return; }
    if (mcp_jobs_id_busy(m, req->id)) { reply_error(m, req, MCP_INVALID_REQUEST, "Invalid Request: the id is already used by a running call"); return; }
    elpis_log(ELPIS_LOG_DEBUG, "mcp event=tool_call tool=%s", name);
    json_t *empty = args ? NULL : json_object();
    if (mem_schema) run_tool(m, req, name, mem_schema, mcp_tool_memory, args ? args : empty, tok);
    else run_tool(m, req, name, m->tool_input[ti], m->tools[ti].fn, args ? args : empty, tok);
    json_decref(empty);
}

/* ---- resources ----------------------------------------------------------------------------------- */

static void m_resources_list(elpis_mcp *m, const mcp_msg *req) {
    reply(m, req,
          json_pack("{s:[{s:s, s:s, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s, s:s}]}", "resources", "uri", "emotion://state",
                    "name", "emotion_state", "title", "Emotional state", "description",
                    "The current emotional state (the same dict as get_emotion)", "mimeType", "application/json",
                    "uri", "emotion://events", "name", "emotion_events", "title", "Emotional events", "description",
                    "The named events and their valence/arousal deltas at intensity 1: {name: [dv, da]}", "mimeType",
                    "application/json"));
}

static void m_resources_read(elpis_mcp *m, const mcp_msg *req) {
    const char *uri = json_string_value(json_object_get(req->params, "uri"));
    if (!uri) { reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params.uri must be a string"); return; }
    json_t *body = !strcmp(uri, "emotion://state") ? mcp_emo_state(m->emo)
                 : !strcmp(uri, "emotion://events") ? mcp_emo_events() : NULL;
    if (!body && strcmp(uri, "emotion://state") && strcmp(uri, "emotion://events")) {
        send_msg(m, mcp_error(req->id, MCP_RESOURCE_NOT_FOUND, "Resource not found", json_pack("{s:s}", "uri", uri)));
        return;
    }
    char *text = body ? json_dumps(body, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(body);
    reply(m, req, text ? json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", "application/json", "text", text) : NULL);
    free(text);
}

static void m_resource_templates(elpis_mcp *m, const mcp_msg *req) {
    reply(m, req, json_pack("{s:[]}", "resourceTemplates"));
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

typedef void (*method_fn)(elpis_mcp *m, const mcp_msg *req);

static const struct {
    const char *name;
    bool before_init;   /* allowed before initialize */
    method_fn fn;
} g_methods[] = {
    { "initialize", true, m_initialize },
    { "ping", true, m_ping },
    { "tools/list", false, m_tools_list },
    { "tools/call", false, m_tools_call },
    { "resources/list", false, m_resources_list },
    { "resources/read", false, m_resources_read },
    { "resources/templates/list", false, m_resource_templates },
};

static void handle_request(elpis_mcp *m, const mcp_msg *req) {
    size_t i = 0;
    while (i < ELPIS_ARRAY_LEN(g_methods) && strcmp(g_methods[i].name, req->method)) i++;
    if (i == ELPIS_ARRAY_LEN(g_methods)) {
        reply_error(m, req, MCP_METHOD_NOT_FOUND, "Method not found: %.200s", req->method);
        return;
    }
    if (!g_methods[i].before_init && !m->initialized) {
        reply_error(m, req, MCP_INVALID_REQUEST, "Invalid Request: %s before initialize", req->method);
        return;
    }
    if (req->params && !json_is_object(req->params)) {
        reply_error(m, req, MCP_INVALID_PARAMS, "Invalid params: params must be an object");
        return;
    }
    g_methods[i].fn(m, req);
}

/* Notifications are never answered, whatever is wrong with them. */
static void handle_notification(elpis_mcp *m, const mcp_msg *n) {
    if (!strcmp(n->method, "notifications/initialized")) {
        m->client_ready = true;
    } else if (!strcmp(n->method, "notifications/cancelled")) {
        const json_t *id = json_object_get(n->params, "requestId");
        const char *why = json_string_value(json_object_get(n->params, "reason"));
        bool found = id && mcp_jobs_cancel_call(m, id);
        elpis_log(ELPIS_LOG_INFO, "mcp event=cancel_request found=%d reason=\"%.100s\"", found, why ? why : "");
    } else {
        elpis_log(ELPIS_LOG_DEBUG, "mcp event=notification_ignored method=%.100s", n->method);
    }
}

static bool blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return false;
    return true;
}

void mcp_handle_line(elpis_mcp *m, const char *line, size_t len) {
    if (blank(line, len)) return;
    mcp_msg msg;
    mcp_msg_parse(line, len, &msg);
    switch (msg.kind) {
    case MCP_MSG_INVALID:
        elpis_log(ELPIS_LOG_DEBUG, "mcp event=bad_message code=%d message=\"%s\"", msg.err_code, msg.err_msg);
        send_msg(m, mcp_error(msg.id, msg.err_code, msg.err_msg, json_incref(msg.err_data)));
        break;
    case MCP_MSG_RESPONSE: elpis_log(ELPIS_LOG_DEBUG, "mcp event=response_ignored"); break;
    case MCP_MSG_NOTIFICATION: handle_notification(m, &msg); break;
    case MCP_MSG_REQUEST: handle_request(m, &msg); break;
    }
    mcp_msg_clear(&msg);
}

/* ---- the reader loop --------------------------------------------------------------------------------- */

static void on_line(void *arg, const char *line, size_t len) { mcp_handle_line(arg, line, len); }

static void on_overlong(void *arg, size_t max) {
    elpis_mcp *m = arg;
    char msg[128];
    snprintf(msg, sizeof msg, "Invalid Request: message longer than %zu bytes; discarded", max);
    elpis_log(ELPIS_LOG_WARN, "mcp event=line_too_long max=%zu", max);
    send_msg(m, mcp_error(NULL, MCP_INVALID_REQUEST, msg, NULL));
}

/* Read until end of input or a stop request. */
static elpis_status read_loop(elpis_mcp *m, int in_fd, elpis_error *err) {
    char *buf = malloc(MCP_READ_CHUNK);
    elpis_status st = ELPIS_OK;
    if (!buf) return elpis_fail(err, ELPIS_ENOMEM, "mcp: read buffer");
    for (;;) {
        struct pollfd fds[2] = { { .fd = in_fd, .events = POLLIN }, { .fd = m->wake[0], .events = POLLIN } };
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            st = elpis_fail(err, ELPIS_EIO, "mcp: poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents) { elpis_log(ELPIS_LOG_INFO, "mcp event=stop"); break; }
        if (!fds[0].revents) continue;
        ssize_t n = read(in_fd, buf, MCP_READ_CHUNK);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) { st = elpis_fail(err, ELPIS_EIO, "mcp: read: %s", strerror(errno)); break; }
        if (n == 0) {
            mcp_lines_finish(&m->lines, on_line, m);
            elpis_log(ELPIS_LOG_INFO, "mcp event=eof");
            break;
        }
        if (mcp_lines_feed(&m->lines, buf, (size_t)n, on_line, on_overlong, m) != ELPIS_OK) {
            st = elpis_fail(err, ELPIS_ENOMEM, "mcp: line buffer");
            break;
        }
    }
    free(buf);
    return st;
}

elpis_status elpis_mcp_serve(elpis_mcp *m, int in_fd, int out_fd, elpis_error *err) {
    if (m->served) return elpis_fail(err, ELPIS_EINVAL, "mcp: serve may be called once");
    m->served = true;
    elpis_status st = mcp_writer_start(&m->writer, out_fd, MCP_OUT_HIGH_WATER, err);
    if (st != ELPIS_OK) return st;
    if ((st = mcp_jobs_start(m, err)) == ELPIS_OK) st = read_loop(m, in_fd, err);
    mcp_jobs_stop(m);
    mcp_writer_stop(&m->writer);
    mcp_lines_free(&m->lines);
    return st;
}

void elpis_mcp_set_steering(elpis_mcp *m, const elpis_emotion_vectors *vectors) { m->vectors = vectors; }

void elpis_mcp_stop(elpis_mcp *m) {
    ssize_t r = write(m->wake[1], "x", 1);
    (void)r;   /* a full pipe already holds a wake-up */
}

/* ---- construction ---------------------------------------------------------------------------------- */

static elpis_status check_config(const elpis_mcp_config *c, elpis_error *err) {
    if (c->max_line < 1024 || c->max_line > (1u << 30))
        return elpis_fail(err, ELPIS_EINVAL, "max_line: %zu is out of range 1024..%u", c->max_line, 1u << 30);
    if (c->max_streams < 0 || c->max_streams > 100000)
        return elpis_fail(err, ELPIS_EINVAL, "max_streams: %d is out of range 0..100000", c->max_streams);
    if (!(c->stream_ttl_s > 0 && c->stream_ttl_s <= 7 * 86400.0))
        return elpis_fail(err, ELPIS_EINVAL, "stream_ttl: %g s is out of range (0, 604800]", c->stream_ttl_s);
    if (!(c->progress_interval_ms >= 0 && c->progress_interval_ms <= 60000))
        return elpis_fail(err, ELPIS_EINVAL, "progress_interval: %g ms is out of range 0..60000", c->progress_interval_ms);
    if (c->default_max_tokens < 1 || c->default_max_tokens > 32768)
        return elpis_fail(err, ELPIS_EINVAL, "max_tokens: %d is out of range 1..32768", c->default_max_tokens);
    return ELPIS_OK;
}

/* Parse the table's schemas and build the tools/list result once. */
static elpis_status build_tools(elpis_mcp *m, elpis_error *err) {
    m->tools = mcp_tools(&m->n_tools);
    if (!(m->tool_input = calloc(m->n_tools, sizeof *m->tool_input))) return elpis_fail(err, ELPIS_ENOMEM, "mcp: tools");
    json_t *list = json_array();
    m->tools_list = json_pack("{s:o}", "tools", list);
    if (!m->tools_list) return elpis_fail(err, ELPIS_ENOMEM, "mcp: tools");
    for (size_t i = 0; i < m->n_tools; i++) {
        const mcp_tool *t = &m->tools[i];
        json_t *in = mcp_json_sq(t->input_schema), *outs = mcp_json_sq(t->output_schema);
        m->tool_input[i] = json_incref(in);
        json_t *row = in && outs ? json_pack("{s:s, s:s, s:s, s:o, s:o}", "name", t->name, "title", t->title, "description",
                                            t->description, "inputSchema", in, "outputSchema", outs)
                                 : NULL;
        if (!row) {
            json_decref(in);
            json_decref(outs);
            return elpis_fail(err, ELPIS_EFORMAT, "mcp: the schema of tool %s does not parse", t->name);
        }
        json_array_append_new(list, row);
    }
    return ELPIS_OK;
}

elpis_status elpis_mcp_new(elpis_mcp **out, const elpis_mcp_config *cfg, elpis_sched *sched, elpis_emotion *emotion,
                           elpis_error *err) {
    elpis_status st;
    if (!emotion) return elpis_fail(err, ELPIS_EINVAL, "mcp: an emotion object is required");
    if ((st = check_config(cfg, err)) != ELPIS_OK) return st;
    elpis_mcp *m = calloc(1, sizeof *m);
    if (!m) return elpis_fail(err, ELPIS_ENOMEM, "mcp: server");
    m->cfg = *cfg;
    m->wake[0] = m->wake[1] = -1;
    pthread_mutex_init(&m->jobs_mu, NULL);
    pthread_mutex_init(&m->ev_mu, NULL);
    pthread_cond_init(&m->ev_cv, NULL);
    m->sched = sched;
    m->emo = emotion;
    m->model = sched ? elpis_sched_model(sched) : NULL;
    mcp_lines_init(&m->lines, cfg->max_line);
    if ((cfg->model_path && !(m->model_path = strdup(cfg->model_path))) ||
        (cfg->server_version && !(m->server_version = strdup(cfg->server_version)))) {
        st = elpis_fail(err, ELPIS_ENOMEM, "mcp: config");
        goto fail;
    }
    m->cfg.model_path = m->model_path;
    m->cfg.server_version = m->server_version;
    if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = elpis_fail(err, ELPIS_EIO, "mcp: pipe: %s", strerror(errno));
        goto fail;
    }
    if ((st = build_tools(m, err)) != ELPIS_OK) goto fail;
    if (m->model) {
        m->chat_family = elpis_chat_detect(m->model->chat_template);
        if (m->chat_family == ELPIS_CHAT_UNKNOWN) elpis_log(ELPIS_LOG_WARN, "mcp: chat template not recognised; using chatml");
    }
    *out = m;
    return ELPIS_OK;
fail:
    elpis_mcp_free(m);
    return st;
}

void elpis_mcp_free(elpis_mcp *m) {
    if (!m) return;
    mcp_jobs_stop(m);   /* a server that was never served may still be empty; harmless */
    for (size_t i = 0; m->tool_input && i < m->n_tools; i++) json_decref(m->tool_input[i]);
    free(m->tool_input);
    json_decref(m->tools_list);
    json_decref(m->mem_inputs);
    mcp_lines_free(&m->lines);
    if (m->wake[0] >= 0) close(m->wake[0]);
    if (m->wake[1] >= 0) close(m->wake[1]);
    pthread_cond_destroy(&m->ev_cv);
    pthread_mutex_destroy(&m->ev_mu);
    pthread_mutex_destroy(&m->jobs_mu);
    free(m->model_path);
    free(m->server_version);
    free(m);
}
