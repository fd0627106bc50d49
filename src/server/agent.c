/* agent.c -- the agent loop of issue 8, in `elpis serve`, so any OpenAI
 * client gets it (spec §5.1-5.4, §6).
 *
 * AROUND THE MODEL (a chat request on the local engine; with --upstream the
 * request goes out as the client sent it and only steps 4 and 5 apply, to
 * the text the upstream streams back)
 *   1. The system prompt: the client's first system message, else
 *      server.system_prompt. With OpenAI `tools`, the spec's tool section
 *      (```tool_call format, "### Available Tools") is appended to it.
 *   2. Memories: with a memory store, server.memory_context = 1 and no
 *      "elpis_memory": false, the last user message is searched (hybrid,
 *      n = 3, re-ranked by the current mood) on the psyche worker, never on
 *      the MHD thread (an embedding and SQLite may stall on the disk): the
 *      request waits suspended (phase WORK) and carries on in recall_then.
 *      The hits go in as one system message "[Relevant memories]\n1. [type]
 *      text" right before the last user message. A failed search is logged
 *      and the chat goes on without memories.
 *   3. Compaction: when the rendered prompt plus a reserve (max_tokens, at
 *      most half the context; else a fifth) does not fit the context, the
 *      oldest messages after the system prompt are replaced by one
 *      "[Previous conversation summary]" system message, keeping at least
 *      the last 4. The system prompt is never dropped (the original's BUG).
 *      The summary is EXTRACTIVE ("role: first 200 chars" per message,
 *      bounded): an abstractive summary would need a second generation in
 *      front of this request, on the same single inference thread, and
 *      would cost more time than the request itself on a small context.
 *      The dropped messages are staged into memory through the §5.3 filter
 *      (tags compacted, role, type) on the worker. Each request carries the
 *      full history, so the same messages are dropped again and again; the
 *      worker remembers what it staged (a hash ring, this process only) so
 *      each is stored once.
 * OUT OF THE MODEL
 *   4. Reasoning ("reasoning_format": "parsed", the default; "none" sends
 *      the raw text): <reasoning>, <thinking> (and <think>) blocks go to
 *      message.reasoning_content joined by "\n\n", the content keeps the
 *      rest, trimmed. Streams split on the fly with the client's splitter
 *      (elpis_reason: tags split across tokens are held back, at most 12
 *      bytes) into delta.reasoning_content / delta.content.
 *   5. Tool calls (only when the request had tools): ```tool_call blocks of
 *      the answer (never of the thoughts), else a bare leading {"name":..}
 *      object, become OpenAI tool_calls with finish_reason "tool_calls".
 *      Non-stream content loses the blocks; a stream has sent them as text
 *      already and adds delta.tool_calls to its finish chunk (clients that
 *      prefer tool_calls, as `elpis chat` does, run each call once).
 *   6. Auto-storage: when the reply completed (not failed, not cancelled),
 *      the exchange is scored (§5.2) on the worker and stored as episodic
 *      ("User: ..\n\nAssistant: ..", tags auto-stored, important, the mood)
 *      when the score is >= 0.6 or the user asked to remember: the
 *      original's threshold made "remember X" alone (0.4) store nothing.
 *      The job is queued when the final status is seen, before the answer
 *      is written, so a search sent after the answer finds the memory.
 * The echo object gets "memories" (how many were injected) and "compacted"
 * (how many messages the summary replaced).
 */
#include "server_internal.h"

#include "elpis/psyche.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECALL_N 3
#define KEEP_LAST 4
#define SUMMARY_LINE_CHARS 200
#define MEMORY_LONG_CHARS 200     /* longer contents show their summary */
#define MEMORY_CUT_CHARS 300
#define STAGED_RING 1024

static const char SUMMARY_HEAD[] = "[Previous conversation summary]\n";
static const char MEMORIES_HEAD[] = "[Relevant memories]";

/* ---- pure steps ------------------------------------------------------------------------- */

char *srv_format_memories(const elpis_memory_results *res) {
    if (!res || !res->n) return NULL;
    elpis_buf b = { 0 };
    elpis_status st = elpis_buf_puts(&b, MEMORIES_HEAD);
    for (size_t i = 0; st == ELPIS_OK && i < res->n; i++) {
        const elpis_memory *m = &res->hits[i].mem;
        const char *t = m->content ? m->content : "";
        if (elpis_utf8_chars(t) > MEMORY_LONG_CHARS && m->summary && *m->summary) t = m->summary;
        char *cut = elpis_utf8_prefix(t, MEMORY_CUT_CHARS);
        st = cut ? elpis_buf_printf(&b, "\n%zu. [%s] %s%s", i + 1, elpis_memory_type_name(m->type), cut,
                                    elpis_utf8_chars(t) > MEMORY_CUT_CHARS ? "..." : "")
                 : ELPIS_ENOMEM;
        free(cut);
    }
    if (st != ELPIS_OK) {
        elpis_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* "role: first 200 chars" of one message, newlines flattened. */
static elpis_status summary_line(elpis_buf *b, const elpis_chat_msg *m) {
    char *cut = elpis_utf8_prefix(m->content, SUMMARY_LINE_CHARS);
    if (!cut) return ELPIS_ENOMEM;
    for (char *p = cut; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    elpis_status st = elpis_buf_printf(b, "%s: %s%s\n", m->role, cut,
                                       elpis_utf8_chars(m->content) > SUMMARY_LINE_CHARS ? "..." : "");
    free(cut);
    return st;
}

/* The summary of d[0..n) in at most `max` bytes: the newest lines win. */
static const char *summary_of(elpis_arena *a, const elpis_chat_msg *d, size_t n, size_t max) {
    elpis_buf lines = { 0 }, out = { 0 };
    size_t first = n, used = sizeof SUMMARY_HEAD + 40;   /* head and the "omitted" note */
    const char *s = NULL;
    while (first > 0) {
        lines.len = 0;
        if (summary_line(&lines, &d[first - 1]) != ELPIS_OK) goto done;
        if (used + lines.len > max) break;
        used += lines.len;
        first--;
    }
    if (elpis_buf_puts(&out, SUMMARY_HEAD) != ELPIS_OK) goto done;
    if (first && elpis_buf_printf(&out, "(%zu earlier messages omitted)\n", first) != ELPIS_OK) goto done;
    for (size_t i = first; i < n; i++)
        if (summary_line(&out, &d[i]) != ELPIS_OK) goto done;
    while (out.len && out.data[out.len - 1] == '\n') out.len--;
    s = elpis_arena_strndup(a, out.data, out.len);
done:
    elpis_buf_free(&lines);
    elpis_buf_free(&out);
    return s;
}

/* m = the system prompt, the summary of the first `drop` messages (unless
 * `window`), the rest. Returns the count, 0 on OOM. */
static size_t assemble(elpis_arena *a, const elpis_chat_msg *in, size_t n, size_t sys, size_t drop, bool window,
                       size_t summary_max, elpis_chat_msg *m) {
    size_t c = 0;
    if (sys) m[c++] = in[0];
    if (!window) {
        const char *s = summary_of(a, in + sys, drop, summary_max);
        if (!s) return 0;
        m[c++] = (elpis_chat_msg){ "system", s };
    }
    for (size_t i = sys + drop; i < n; i++) m[c++] = in[i];
    return c;
}

/* Dropping more never makes the prompt longer (a message costs at least its
 * summary line), so the smallest drop that fits is found by bisection: a
 * handful of renders, not one per message, on the MHD thread. */
elpis_status srv_compact(elpis_arena *a, const elpis_chat_msg *in, size_t n, size_t keep, size_t summary_max,
                         srv_fits_fn fits, void *ud, srv_compaction *out) {
    *out = (srv_compaction){ (elpis_chat_msg *)in, n, 0, 0, true, in };
    size_t sys = n && !strcmp(in[0].role, "system") ? 1 : 0;
    if (fits(ud, in, n)) return ELPIS_OK;
    out->fit = false;
    if (n <= sys + keep) return ELPIS_OK;
    elpis_chat_msg *m = elpis_arena_alloc(a, (n + 1) * sizeof *m, 0);
    if (!m) return ELPIS_ENOMEM;
    size_t lo = 1, hi = n - sys - keep, best = 0;   /* smallest drop in [lo, hi] that fits, if any */
    while (lo <= hi) {
        size_t mid = lo + (hi - lo) / 2, c = assemble(a, in, n, sys, mid, false, summary_max, m);
        if (!c) return ELPIS_ENOMEM;
        if (fits(ud, m, c)) best = mid, hi = mid - 1;
        else lo = mid + 1;
    }
    bool window = !best;   /* nothing fits with a summary: the bare sliding window */
    size_t drop = window ? n - sys - keep : best, c = assemble(a, in, n, sys, drop, window, summary_max, m);
    if (!c) return ELPIS_ENOMEM;
    *out = (srv_compaction){ m, c, sys, drop, !window || fits(ud, m, c), in + sys };
    return ELPIS_OK;
}

elpis_status srv_parse_tool_calls(const char *text, elpis_tool_calls *calls, elpis_buf *stripped, elpis_error *err) {
    size_t before = calls->n, bare = 0;
    elpis_status st = elpis_tool_calls_from_text(text, calls, err);
    if (st == ELPIS_OK && calls->n == before) st = elpis_tool_call_bare(text, calls, &bare, err);   /* [0116] fallback */
    if (st == ELPIS_OK && stripped) st = elpis_tool_calls_strip(text, bare, stripped);
    if (st != ELPIS_OK) return elpis_fail(err, st, "tool calls: out of memory");
    return ELPIS_OK;
}

bool srv_should_store(const char *user, const char *answer, double valence, double arousal) {
    elpis_exchange_score sc = elpis_score_exchange(user, answer, NULL, 0, true, valence, arousal);
    return sc.total >= ELPIS_AUTO_STORE_THRESHOLD || sc.explicit_request > 0;
}

/* ---- the request (MHD thread) --------------------------------------------------------------- */

static bool reject(srv_api_error *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool reject(srv_api_error *e, const char *param, const char *fmt, ...) {
    e->status = MHD_HTTP_BAD_REQUEST;
    e->type = "invalid_request_error";
    e->param = param;
    e->code = "invalid_value";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

static bool oom(srv_api_error *e) {
    reject(e, NULL, "out of memory");
    e->status = 500;
    e->type = "server_error";
    e->code = NULL;
    return false;
}

/* "    - p: type (required) - desc" for each parameter. */
static void tool_params(elpis_buf *b, json_t *params) {
    json_t *props = json_object_get(params, "properties"), *req = json_object_get(params, "required"), *p, *x;
    const char *key;
    json_object_foreach(props, key, p) {
        bool required = false;
        size_t i;
        json_array_foreach(req, i, x) required = required || (json_is_string(x) && !strcmp(json_string_value(x), key));
        const char *type = json_string_value(json_object_get(p, "type")), *desc = json_string_value(json_object_get(p, "description"));
        elpis_buf_printf(b, "\n    - %s: %s%s%s%s", key, type ? type : "any", required ? " (required)" : "",
                         desc ? " - " : "", desc ? desc : "");
    }
}

/* The tool section of spec §5.4, appended to b. */
static bool tool_section(elpis_buf *b, json_t *tools, srv_api_error *e) {
    if (!json_is_array(tools)) return reject(e, "tools", "tools must be an array");
    elpis_buf_puts(b, "\n\n## Tools\n\nYou can call tools. To call one, write exactly this block and nothing after it:\n\n"
                      "```tool_call\n{\"name\": \"tool_name\", \"arguments\": {\"param1\": \"value1\"}}\n```\n\n"
                      "CRITICAL: after a tool_call block you MUST stop immediately and wait for the result. "
                      "Never fabricate tool output.\n\n### Available Tools");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function"), *name = json_object_get(fn, "name");
        if (!json_is_object(fn) || !json_is_string(name) || !json_string_length(name))
            return reject(e, "tools", "tools[%zu] must be {\"type\":\"function\",\"function\":{\"name\":...}}", i);
        const char *desc = json_string_value(json_object_get(fn, "description"));
        elpis_buf_printf(b, "\n\n**%s**", json_string_value(name));
        if (desc) elpis_buf_printf(b, "\n  %s", desc);
        tool_params(b, json_object_get(fn, "parameters"));
    }
    return true;
}

/* The system prompt (kept, or the configured one) with the tool section. */
static bool system_prompt(srv_req *r, json_t *tools, srv_api_error *e) {
    srv_agent *a = &r->agent;
    bool own = a->n_msgs && !strcmp(a->msgs[0].role, "system");
    const char *base = own ? a->msgs[0].content : r->srv->cfg->system_prompt;
    elpis_buf b = { 0 };
    elpis_buf_puts(&b, base ? base : "");
    if (a->tools && !tool_section(&b, tools, e)) goto fail;
    if (!b.len) {   /* no system prompt at all: the conversation stays as sent */
        elpis_buf_free(&b);
        return true;
    }
    const char *text = elpis_arena_strndup(&r->arena, b.data, b.len);
    elpis_chat_msg *m = own ? a->msgs : elpis_arena_alloc(&r->arena, (a->n_msgs + 1) * sizeof *m, 0);
    if (!text || !m) { oom(e); goto fail; }
    if (!own) {
        memcpy(m + 1, a->msgs, a->n_msgs * sizeof *m);
        a->msgs = m;
        a->n_msgs++;
    }
    m[0] = (elpis_chat_msg){ "system", text };
    elpis_buf_free(&b);
    return true;
fail:
    elpis_buf_free(&b);
    return false;
}

static size_t last_user(const srv_agent *a) {
    for (size_t i = a->n_msgs; i-- > 0;)   /* tool results are user messages too; they are no query */
        if (!strcmp(a->msgs[i].role, "user") && strncmp(a->msgs[i].content, "[Tool result for ", 17)) return i;
    return a->n_msgs;
}

static bool opt_bool(json_t *o, const char *key, bool *out, srv_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return reject(e, key, "%s must be true or false", key);
    *out = json_is_true(v);
    return true;
}

bool srv_agent_parse(srv_req *r, json_t *o, srv_api_error *e) {
    srv_agent *a = &r->agent;
    elpis_server *s = r->srv;
    json_t *rf = json_object_get(o, "reasoning_format"), *tools = json_object_get(o, "tools");
    bool memory = true;
    if (!srv_chat_messages(r, o, &a->msgs, &a->n_msgs, e) || !opt_bool(o, "elpis_memory", &memory, e)) return false;
    a->parse_reasoning = true;
    if (rf && !json_is_null(rf)) {
        const char *v = json_string_value(rf);
        if (!v || (strcmp(v, "parsed") && strcmp(v, "none")))
            return reject(e, "reasoning_format", "reasoning_format must be \"parsed\" or \"none\"");
        a->parse_reasoning = !strcmp(v, "parsed");
    }
    a->out = true;
    a->on = !s->up;
    a->tools = tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0);
    if (!a->on) return true;
    if (!system_prompt(r, tools, e)) return false;
    a->last_user = last_user(a);
    bool has_store = s->psyche && s->psyche->memory && memory && a->last_user < a->n_msgs;
    a->recall = has_store && s->cfg->memory_context && *a->msgs[a->last_user].content;
    a->store = has_store && s->cfg->auto_store;
    return true;
}

/* ---- rendering -------------------------------------------------------------------------------- */

typedef struct fit_ctx {
    srv_req *r;
    elpis_buf text;
    elpis_tokens toks;
    int32_t limit;                     /* prompt tokens allowed */
} fit_ctx;

static bool fits(void *ud, const elpis_chat_msg *m, size_t n) {
    fit_ctx *c = ud;
    elpis_error err = { 0 };
    c->text.len = 0;
    c->toks.n = 0;
    if (elpis_chat_apply(c->r->srv->chat_family, m, n, true, &c->text, &err) != ELPIS_OK) return true;   /* render says why */
    if (elpis_tokenize(c->r->srv->model->vocab, c->text.data ? c->text.data : "", c->text.len, true, true, &c->toks, &err) !=
        ELPIS_OK)
        return true;
    return (int64_t)c->toks.n <= c->limit;
}

/* m with the memories message inserted before the last user message. */
static elpis_chat_msg *with_memories(srv_req *r, size_t *n) {
    srv_agent *a = &r->agent;
    elpis_chat_msg *m = elpis_arena_alloc(&r->arena, (a->n_msgs + 1) * sizeof *m, 0);
    if (!m) return NULL;
    memcpy(m, a->msgs, a->last_user * sizeof *m);
    m[a->last_user] = (elpis_chat_msg){ "system", a->memories };
    memcpy(m + a->last_user + 1, a->msgs + a->last_user, (a->n_msgs - a->last_user) * sizeof *m);
    *n = a->n_msgs + 1;
    return m;
}

static void stage(srv_req *r, const elpis_chat_msg *d, size_t n);

/* The conversation (with the memories, if any) compacted to fit, into *out. */
static bool compact(srv_req *r, srv_compaction *out, srv_api_error *e) {
    srv_agent *a = &r->agent;
    int32_t n_ctx = elpis_sched_params_of(r->srv->sched)->n_ctx;
    int32_t reserve = r->gen.max_tokens > 0 ? ELPIS_MIN(r->gen.max_tokens, n_ctx / 2) : n_ctx / 5;
    fit_ctx c = { .r = r, .limit = n_ctx - ELPIS_MAX(reserve, 1) };
    elpis_chat_msg *m = a->msgs;
    size_t n = a->n_msgs;
    if (a->memories && !(m = with_memories(r, &n))) return oom(e);
    size_t keep = KEEP_LAST + (a->memories ? 1 : 0);   /* the memories sit among the last messages */
    size_t summary_max = (size_t)ELPIS_MAX(256, ELPIS_MIN(n_ctx, 2000));
    elpis_status st = srv_compact(&r->arena, m, n, keep, summary_max, fits, &c, out);
    elpis_buf_free(&c.text);
    elpis_tokens_free(&c.toks);
    return st == ELPIS_OK || oom(e);
}

bool srv_agent_render(srv_req *r, srv_api_error *e) {
    srv_agent *a = &r->agent;
    srv_compaction c = { a->msgs, a->n_msgs, 0, 0, true, a->msgs };
    elpis_buf text = { 0 };
    elpis_error err = { 0 };
    bool ok = false;
    if (a->on && !compact(r, &c, e)) return false;
    if (a->on && !c.fit && a->memories) {   /* memories are the first thing to give up, before an error */
        a->memories = NULL;
        a->n_memories = 0;
        if (!compact(r, &c, e)) return false;
    }
    if (elpis_chat_apply(r->srv->chat_family, c.msgs, c.n, true, &text, &err) != ELPIS_OK) {
        reject(e, "messages", "%s", err.msg);
        goto done;
    }
    if (!(ok = srv_tokenize_prompt(r, &text, true, e))) goto done;
    a->n_compacted = c.n_dropped;
    if (c.n_dropped && a->store) stage(r, c.dropped, c.n_dropped);
done:
    elpis_buf_free(&text);
    return ok;
}

/* The echo object gains "memories" and "compacted"; streams keep their text. */
void srv_agent_prepared(srv_req *r) {
    srv_agent *a = &r->agent;
    if (a->out) r->gen.keep_text = true;   /* tool calls and the auto-storage read the whole reply */
    if (!a->on) return;
    const char *echo = r->gen.echo;
    size_t len = echo ? strlen(echo) : 0;
    elpis_buf b = { 0 };
    if (len > 2 && echo[len - 1] == '}') elpis_buf_printf(&b, "%.*s,", (int)(len - 1), echo);
    else elpis_buf_puts(&b, "{");
    elpis_buf_printf(&b, "\"memories\":%d,\"compacted\":%zu}", a->n_memories, a->n_compacted);
    const char *s = b.data ? elpis_arena_strndup(&r->arena, b.data, b.len) : NULL;
    if (s) r->gen.echo = s;   /* on OOM the echo stays as it was */
    elpis_buf_free(&b);
}

/* ---- memory jobs (psyche worker) ----------------------------------------------------------------------- */

/* The mood now, from the emotion object itself (the worker is its writer). */
static void mood(elpis_server *s, double *v, double *a) {
    elpis_emotion_state *st = malloc(sizeof *st);
    *v = *a = 0;
    if (!st) return;
    elpis_emotion_snapshot(s->psyche->emotion, elpis_emotion_now(), st);
    *v = st->valence;
    *a = st->arousal;
    free(st);
}

/* Output: j->body = the memories message, j->status = how many hits. */
static void recall_run(elpis_server *s, srv_job *j) {
    elpis_memory_query q = { .query = j->text, .n_results = RECALL_N, .use_hybrid = true, .has_emotion = true,
                             .emotion_weight = -1 };
    elpis_memory_results res = { 0 };
    elpis_error err = { 0 };
    mood(s, &q.valence, &q.arousal);
    if (elpis_memory_search(s->psyche->memory, &q, &res, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_evlog(&s->log, "memory_recall_failed trace=%s error=\"%s\"", j->key, err.msg);
        return;
    }
    char *text = srv_format_memories(&res);
    if (text && elpis_buf_puts(&j->body, text) == ELPIS_OK) j->count = res.n;
    free(text);
    elpis_memory_results_free(&res);
}

static enum MHD_Result recall_then(srv_req *r, srv_job *j) {
    srv_agent *a = &r->agent;
    srv_api_error e = { 0 };
    if (j->body.len && (a->memories = elpis_arena_strndup(&r->arena, j->body.data, j->body.len)))
        a->n_memories = j->count;
    if (!srv_agent_render(r, &e)) return srv_respond_api_error(r, &e);
    return srv_gen_launch(r);
}

enum MHD_Result srv_agent_recall(srv_req *r) {
    srv_job *j = srv_job_new(recall_run);
    if (j) {
        j->then = recall_then;
        snprintf(j->key, sizeof j->key, "%s", r->trace);
        if (!(j->text = strdup(r->agent.msgs[r->agent.last_user].content))) {
            srv_job_free(j);
            j = NULL;
        }
    }
    return srv_work_submit(r, j);
}

/* Hashes of staged messages; touched by the worker thread only. */
static uint64_t staged[STAGED_RING];
static size_t staged_next;

static bool staged_before(const char *role, const char *content) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = role; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (const char *p = content; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h |= 1;   /* 0 marks an empty place */
    for (size_t i = 0; i < STAGED_RING; i++)
        if (staged[i] == h) return true;
    staged[staged_next++ % STAGED_RING] = h;
    return false;
}

/* One dropped message into in[*n], if the §5.3 filter keeps it. */
static bool stage_one(json_t *msg, double v, double a, elpis_memory_input *in, const char **tags, char **summary) {
    const char *role = json_string_value(json_object_get(msg, "role"));
    const char *content = json_string_value(json_object_get(msg, "content"));
    if (!role || !content) return false;
    if (!strncmp(content, MEMORIES_HEAD, sizeof MEMORIES_HEAD - 1) || !strncmp(content, SUMMARY_HEAD, sizeof SUMMARY_HEAD - 1))
        return false;   /* our own insertions */
    elpis_storage_decision d = elpis_storage_filter(role, content);
    if (!d.store || staged_before(role, content)) return false;
    tags[0] = "compacted";
    tags[1] = role;
    tags[2] = elpis_memory_type_name(d.type);
    *summary = elpis_utf8_prefix(content, 500);
    *in = (elpis_memory_input){ .content = content, .summary = *summary, .type = d.type, .tags = tags, .n_tags = 3,
                                .has_emotion = true, .valence = v, .arousal = a };
    return true;
}

static void stage_run(elpis_server *s, srv_job *j) {
    size_t n = json_array_size(j->args), k = 0;
    elpis_memory_input *in = calloc(n + 1, sizeof *in);
    const char **tags = calloc(3 * (n + 1), sizeof *tags);
    char **sums = calloc(n + 1, sizeof *sums);
    elpis_error err = { 0 };
    double v, a;
    if (!in || !tags || !sums) goto done;
    mood(s, &v, &a);
    for (size_t i = 0; i < n; i++)
        if (stage_one(json_array_get(j->args, i), v, a, &in[k], tags + 3 * k, &sums[k])) k++;
    if (k && elpis_memory_add_many(s->psyche->memory, in, k, NULL, NULL, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_evlog(&s->log, "memory_stage_failed trace=%s error=\"%s\"", j->key, err.msg);
    } else if (k) {
        srv_evlog(&s->log, "memory_staged trace=%s stored=%zu dropped=%zu", j->key, k, n);
    }
done:
    for (size_t i = 0; sums && i < k; i++) free(sums[i]);
    free(sums);
    free(tags);
    free(in);
}

static void stage(srv_req *r, const elpis_chat_msg *d, size_t n) {
    srv_job *j = srv_job_new(stage_run);
    if (!j || !(j->args = json_array())) {
        srv_job_free(j);
        return;
    }
    for (size_t i = 0; i < n; i++) json_array_append_new(j->args, json_pack("{s:s, s:s}", "role", d[i].role, "content", d[i].content));
    snprintf(j->key, sizeof j->key, "%s", r->trace);
    srv_work_post(r->srv, j);
}

/* "text..." with the dots only when it was cut. */
static void cut_into(elpis_buf *b, const char *s, size_t n_chars) {
    char *p = elpis_utf8_prefix(s, n_chars);
    elpis_buf_printf(b, "%s%s", p ? p : "", elpis_utf8_chars(s) > n_chars ? "..." : "");
    free(p);
}

static void store_run(elpis_server *s, srv_job *j) {
    const char *u = json_string_value(json_object_get(j->args, "user")), *ans = j->text;
    double v, a;
    mood(s, &v, &a);
    if (!u || !ans || !srv_should_store(u, ans, v, a)) return;
    elpis_buf content = { 0 };
    elpis_buf_puts(&content, "User: ");
    cut_into(&content, u, 300);
    elpis_buf_puts(&content, "\n\nAssistant: ");
    cut_into(&content, ans, 800);
    char *summary = elpis_utf8_prefix(ans, 150), id[ELPIS_MEMORY_ID_LEN + 1];
    static const char *const tags[] = { "auto-stored", "important" };
    elpis_memory_input in = { .content = content.data, .summary = summary && *summary ? summary : NULL, .tags = tags,
                              .n_tags = 2, .has_emotion = true, .valence = v, .arousal = a };
    elpis_error err = { 0 };
    if (!content.data) atomic_fetch_add(&s->psyche_failures, 1);
    else if (elpis_memory_add(s->psyche->memory, &in, id, NULL, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_evlog(&s->log, "memory_auto_store_failed trace=%s error=\"%s\"", j->key, err.msg);
    } else {
        srv_evlog(&s->log, "memory_auto_stored trace=%s id=%s", j->key, id);
    }
    free(summary);
    elpis_buf_free(&content);
}

/* ---- the reply ------------------------------------------------------------------------------------------ */

/* The answer part of the reply (thoughts removed when parsed), into *answer;
 * the thoughts into *thought (may be NULL). */
static elpis_status answer_of(srv_req *r, elpis_buf *answer, elpis_buf *thought) {
    elpis_buf raw = { 0 };   /* NUL-terminated copy: the splitter reads a C string */
    elpis_status st = elpis_buf_append(&raw, r->text.data ? r->text.data : "", r->text.len);
    if (st == ELPIS_OK && r->agent.parse_reasoning) st = elpis_reason_split(raw.data ? raw.data : "", answer, thought);
    else if (st == ELPIS_OK) st = elpis_buf_append(answer, raw.data ? raw.data : "", raw.len);
    elpis_buf_free(&raw);
    return st;
}

/* The OpenAI tool_calls array of `answer` (malloc'd JSON text) or NULL. */
static char *tool_calls_json(const char *answer, elpis_buf *stripped, bool with_index) {
    elpis_tool_calls calls = { 0 };
    char *out = NULL;
    if (srv_parse_tool_calls(answer, &calls, stripped, NULL) != ELPIS_OK || !calls.n) goto done;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < calls.n; i++) {
        json_t *c = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", calls.v[i].id, "type", "function", "function", "name",
                              calls.v[i].name, "arguments", calls.v[i].arguments);
        if (c && with_index) json_object_set_new(c, "index", json_integer((json_int_t)i));
        json_array_append_new(arr, c);
    }
    out = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
done:
    elpis_tool_calls_free(&calls);
    return out;
}

static void on_piece(void *ud, bool thought, const char *t, size_t n) {
    srv_req *r = ud;
    srv_sse_delta(&r->out, &r->wire, thought ? "reasoning_content" : "content", t, n);
}

void srv_agent_stream_text(srv_req *r, const char *t, size_t n) {
    srv_agent *a = &r->agent;
    if (!a->out || !a->parse_reasoning) {
        srv_sse_text(&r->out, &r->wire, t, n);
        return;
    }
    if (!a->split_init) {
        elpis_reason_init(&a->split, on_piece, r);
        a->split_init = true;
    }
    elpis_reason_feed(&a->split, t, n);
}

void srv_agent_stream_finish(srv_req *r, const char *finish) {
    srv_agent *a = &r->agent;
    if (a->split_init) elpis_reason_flush(&a->split);
    elpis_buf answer = { 0 }, delta = { 0 };
    char *calls = NULL;
    if (a->out && a->tools && answer_of(r, &answer, NULL) == ELPIS_OK)
        calls = tool_calls_json(answer.data ? answer.data : "", NULL, true);
    if (calls && elpis_buf_printf(&delta, "{\"tool_calls\":%s}", calls) == ELPIS_OK)
        srv_sse_finish_delta(&r->out, &r->wire, delta.data, "tool_calls");
    else
        srv_sse_finish(&r->out, &r->wire, finish);
    free(calls);
    elpis_buf_free(&answer);
    elpis_buf_free(&delta);
}

static void trim(elpis_buf *b) {
    size_t s = 0;
    while (s < b->len && isspace((unsigned char)b->data[s])) s++;
    while (b->len > s && isspace((unsigned char)b->data[b->len - 1])) b->len--;
    if (s) memmove(b->data, b->data + s, b->len - s);
    b->len -= s;
}

elpis_status srv_agent_final_body(srv_req *r, elpis_buf *b, const char *finish, const elpis_req_status *st) {
    srv_agent *a = &r->agent;
    if (!a->out)
        return srv_final_body(b, &r->wire, r->text.data ? r->text.data : "", r->text.len, NULL, finish, st->n_prompt,
                              st->n_generated, st->n_cached);
    elpis_buf answer = { 0 }, thought = { 0 }, stripped = { 0 };
    srv_extra x = { 0 };
    char *calls = NULL;
    elpis_status rc = answer_of(r, &answer, &thought);
    if (rc == ELPIS_OK && a->tools) calls = tool_calls_json(answer.data ? answer.data : "", &stripped, false);
    if (calls) {
        trim(&stripped);
        elpis_buf t = answer;
        answer = stripped;
        stripped = t;
        x.tool_calls = calls;
        finish = "tool_calls";
    }
    if (thought.len) x.reasoning = thought.data, x.n_reasoning = thought.len;
    if (rc == ELPIS_OK)
        rc = srv_final_body(b, &r->wire, answer.data ? answer.data : "", answer.len, &x, finish, st->n_prompt,
                            st->n_generated, st->n_cached);
    free(calls);
    elpis_buf_free(&answer);
    elpis_buf_free(&thought);
    elpis_buf_free(&stripped);
    return rc;
}

void srv_agent_final(srv_req *r) {
    srv_agent *a = &r->agent;
    if (!a->store || a->stored || r->st.state != ELPIS_REQ_DONE) return;
    a->stored = true;
    elpis_buf answer = { 0 };
    srv_job *j = NULL;
    if (answer_of(r, &answer, NULL) != ELPIS_OK || !(j = srv_job_new(store_run))) goto fail;
    /* the answer as bytes: model text need not be valid UTF-8, which jansson would refuse */
    j->args = json_pack("{s:s}", "user", a->msgs[a->last_user].content);
    j->text = strndup(answer.data ? answer.data : "", answer.len);
    if (!j->args || !j->text) goto fail;
    snprintf(j->key, sizeof j->key, "%s", r->trace);
    srv_work_post(r->srv, j);
    elpis_buf_free(&answer);
    return;
fail:
    srv_job_free(j);
    elpis_buf_free(&answer);
}

void srv_agent_free(srv_req *r) {
    if (r->agent.split_init) elpis_reason_free(&r->agent.split);
    r->agent.split_init = false;
}
