/* agent.c -- one user turn: stream the reply, run its tool calls locally,
 * feed the results back, repeat (the Hermes flow, spec §8 "Flow" and the
 * [0116] ReAct loop of §5.6).
 *
 * DESIGN
 *   The conversation is an array of OpenAI messages kept here; each request
 *   sends all of it (plus the six tool definitions and any extra request
 *   fields), as the original client did. Per request:
 *     1. stream the reply; text goes through the reasoning splitter, so the
 *        front end gets answer text and thought text separately (a server
 *        that splits them itself sends delta.reasoning_content: thought text);
 *     2. tool calls come from OpenAI `tool_calls` if the server sent them,
 *        else from ```tool_call blocks in the answer text (never in thoughts);
 *     3. the assistant message is appended ONCE (the original appended it
 *        twice, spec §8 BUG), with its tool_calls;
 *     4. each call runs in the workspace (confirmation per elpis_ws), its
 *        envelope goes back as {"role":"tool", tool_call_id, name, content}
 *        (cut at result_max_chars), and its outcome is posted as an emotion
 *        event (success 0.3, failure 0.5, frustration 0.5 when it could not
 *        run at all);
 *     5. no calls -> the turn is over; else the next request, at most
 *        max_iterations (10) requests per turn.
 *   Thought text is shown, not stored: the history keeps the answer only.
 *
 * Interruption: the front end's poll callback returning non-zero aborts the
 * stream (the server cancels) or kills the running command. The partial
 * answer is kept in the history with "\n\n[interrupted]" appended, and the
 * turn ends with ELPIS_ECANCELLED.
 */
#include "chat_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INTERRUPTED_MARK "\n\n[interrupted]"

elpis_status elpis_agent_init(elpis_agent *a, elpis_client *c, elpis_ws *ws, elpis_error *err) {
    memset(a, 0, sizeof *a);
    a->client = c;
    a->ws = ws;
    a->messages = json_array();
    a->params = json_object();
    a->max_iterations = 10;
    a->emotion_route = true;
    if (!a->messages || !a->params) {
        elpis_agent_free(a);
        return elpis_fail(err, ELPIS_ENOMEM, "agent: out of memory");
    }
    return ELPIS_OK;
}

void elpis_agent_free(elpis_agent *a) {
    json_decref(a->messages);
    json_decref(a->params);
    free(a->system);
    memset(a, 0, sizeof *a);
}

void elpis_agent_clear(elpis_agent *a) {
    json_array_clear(a->messages);
    a->n_replies = a->n_tool_calls = 0;
    elpis_client_new_session(a->client);
}

/* ---- messages ------------------------------------------------------------------------------------- */

static void push(elpis_agent *a, json_t *msg) {
    if (msg) json_array_append_new(a->messages, msg);
}

static json_t *calls_json(const elpis_tool_calls *calls) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < calls->n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", calls->v[i].id, "type", "function",
                                             "function", "name", calls->v[i].name, "arguments", calls->v[i].arguments));
    return arr;
}

static void push_assistant(elpis_agent *a, const char *text, const elpis_tool_calls *calls) {
    json_t *m = json_pack("{s:s, s:s}", "role", "assistant", "content", text);
    if (m && calls && calls->n) json_object_set_new(m, "tool_calls", calls_json(calls));
    push(a, m);
}

/* The tool message's content: the envelope's JSON, cut at `max` bytes on a
 * UTF-8 boundary. */
static json_t *tool_message(const elpis_tool_call *c, json_t *env, size_t max) {
    char *text = json_dumps(env, JSON_COMPACT);
    if (!text) return NULL;
    size_t n = strlen(text);
    if (n > max) {
        while (max > 0 && ((unsigned char)text[max] & 0xC0) == 0x80) max--;
        n = max;
    }
    json_t *m = json_pack("{s:s, s:s, s:s, s:s%}", "role", "tool", "tool_call_id", c->id, "name", c->name, "content", text, n);
    if (m && n < strlen(text)) {
        elpis_buf b = { 0 };
        elpis_buf_printf(&b, "%.*s\n[... result truncated at %zu characters]", (int)n, text, n);
        json_object_set_new(m, "content", json_string(b.data ? b.data : ""));
        elpis_buf_free(&b);
    }
    free(text);
    return m;
}

/* ---- emotion ---------------------------------------------------------------------------------------- */

static void report_emotion(const elpis_agent_ui *ui, json_t *o) {
    json_t *v = json_object_get(o, "valence"), *ar = json_object_get(o, "arousal"), *q = json_object_get(o, "quadrant");
    if (ui && ui->emotion && json_is_number(v) && json_is_number(ar))
        ui->emotion(ui->ud, json_number_value(v), json_number_value(ar), json_is_string(q) ? json_string_value(q) : "");
}

void elpis_agent_emotion_event(elpis_agent *a, const char *event, double intensity, const elpis_agent_ui *ui) {
    if (!a->emotion_route) return;
    json_t *body = json_pack("{s:s, s:f}", "event_type", event, "intensity", intensity), *out = NULL;
    long status = 0;
    if (body && elpis_client_request(a->client, "POST", "/v1/psyche/emotion", body, &status, &out, NULL) == ELPIS_OK) {
        if (status == 404 || status == 405) a->emotion_route = false;   /* this server has no emotion state */
        else if (status == 200) report_emotion(ui, out);
    }
    json_decref(out);
    json_decref(body);
}

/* ---- tools ------------------------------------------------------------------------------------------ */

typedef struct turn {
    elpis_agent *a;
    const elpis_agent_ui *ui;
    elpis_reason reason;
    elpis_buf answer;    /* the reply without its thoughts */
    bool interrupted;
} turn;

static int turn_poll(void *ud) {
    turn *t = ud;
    if (!t->interrupted && t->ui && t->ui->poll && t->ui->poll(t->ui->ud)) t->interrupted = true;
    return t->interrupted;
}

static void run_tools(turn *t, const elpis_tool_calls *calls) {
    elpis_agent *a = t->a;
    const elpis_agent_ui *ui = t->ui;
    a->ws->poll = turn_poll;
    a->ws->poll_ud = t;
    for (size_t i = 0; i < calls->n && !t->interrupted; i++) {
        const elpis_tool_call *c = &calls->v[i];
        elpis_tool_outcome o = ELPIS_TOOL_OK;
        if (ui && ui->tool) ui->tool(ui->ud, c, ELPIS_TOOL_RUNNING, o, NULL);
        json_t *env = elpis_ws_run(a->ws, c->name, c->arguments, c->id, &o);
        json_t *err = json_object_get(env, "error");
        a->n_tool_calls++;
        if (ui && ui->tool) ui->tool(ui->ud, c, ELPIS_TOOL_DONE, o, json_is_string(err) ? json_string_value(err) : NULL);
        push(a, env ? tool_message(c, env, a->ws->result_max_chars) : NULL);
        json_decref(env);
        if (o == ELPIS_TOOL_OK) elpis_agent_emotion_event(a, "success", 0.3, ui);
        else if (o == ELPIS_TOOL_FAILED) elpis_agent_emotion_event(a, "failure", 0.5, ui);
        else if (o == ELPIS_TOOL_ERROR) elpis_agent_emotion_event(a, "frustration", 0.5, ui);
    }
    a->ws->poll = NULL;
    a->ws->poll_ud = NULL;
}

void elpis_agent_run_tools(elpis_agent *a, const elpis_tool_calls *calls, const elpis_agent_ui *ui) {
    turn t = { .a = a, .ui = ui };
    if (a->ws) run_tools(&t, calls);
}

/* ---- one request --------------------------------------------------------------------------------------- */

static void on_split(void *ud, bool thought, const char *s, size_t n) {
    turn *t = ud;
    if (!thought) elpis_buf_append(&t->answer, s, n);
    if (t->ui && t->ui->text) t->ui->text(t->ui->ud, thought, s, n);
}

/* Raw text may still carry tags (a server that does not parse them): split here too. */
static void on_text(void *ud, const char *s, size_t n) {
    turn *t = ud;
    elpis_reason_feed(&t->reason, s, n);
}

/* Thoughts the server already split out. */
static void on_reasoning(void *ud, const char *s, size_t n) {
    turn *t = ud;
    if (t->ui && t->ui->text) t->ui->text(t->ui->ud, true, s, n);
}

/* Extra fields first, so they cannot replace the messages or turn streaming off. */
static json_t *build_request(elpis_agent *a) {
    json_t *req = json_deep_copy(a->params);
    if (!req) return NULL;
    if (json_object_set(req, "messages", a->messages) || json_object_set_new(req, "stream", json_true()) ||
        (a->ws && json_object_set_new(req, "tools", elpis_ws_tools_json()))) {
        json_decref(req);
        return NULL;
    }
    return req;
}

/* Stream one reply into *r; t->answer holds its answer text. */
static elpis_status request_once(turn *t, elpis_reply *r, elpis_error *err) {
    const elpis_agent_ui *ui = t->ui;
    json_t *req = build_request(t->a);
    if (!req) return elpis_fail(err, ELPIS_ENOMEM, "request: out of memory");
    t->answer.len = 0;
    elpis_reason_init(&t->reason, on_split, t);
    elpis_reply_init(r, on_text, t);
    r->on_reasoning = on_reasoning;
    if (ui && ui->reply_begin) ui->reply_begin(ui->ud);
    elpis_status st = elpis_client_stream(t->a->client, "/v1/chat/completions", req, r, ui ? ui->poll_fd : -1, turn_poll, t, err);
    elpis_reason_flush(&t->reason);
    elpis_reason_free(&t->reason);
    if (r->has_emotion && ui && ui->emotion) ui->emotion(ui->ud, r->valence, r->arousal, r->quadrant);
    if (st == ELPIS_OK && r->error[0]) st = elpis_fail(err, ELPIS_EIO, "server: %s", r->error);
    else if (st == ELPIS_OK && !r->done && !r->finish[0]) st = elpis_fail(err, ELPIS_EIO, "the server ended the stream early");
    json_decref(req);
    return st;
}

/* A reply that ended early: keep what came, marked. */
static void keep_partial(turn *t, const char *mark) {
    elpis_buf b = { 0 };
    elpis_buf_printf(&b, "%s%s", t->answer.data ? t->answer.data : "", mark);
    push_assistant(t->a, b.data ? b.data : mark, NULL);
    elpis_buf_free(&b);
}

/* ELPIS_OK + *more: run the next request. */
static elpis_status step(turn *t, bool *more, elpis_error *err) {
    elpis_agent *a = t->a;
    const elpis_agent_ui *ui = t->ui;
    elpis_reply r;
    elpis_tool_calls text_calls = { 0 };
    *more = false;
    elpis_status st = request_once(t, &r, err);
    if (st != ELPIS_OK) {
        bool cancelled = st == ELPIS_ECANCELLED;
        if (cancelled || t->answer.len) keep_partial(t, cancelled ? INTERRUPTED_MARK : "\n\n[error]");
        if (ui && ui->reply_end) ui->reply_end(ui->ud, cancelled ? "[interrupted]" : err ? err->msg : "error");
        goto done;
    }
    a->n_replies++;
    const elpis_tool_calls *calls = &r.calls;
    if (calls->n == 0 && a->ws) {
        elpis_tool_calls_from_text(t->answer.data ? t->answer.data : "", &text_calls, NULL);
        calls = &text_calls;
    }
    push_assistant(a, t->answer.data ? t->answer.data : "", a->ws ? calls : NULL);
    if (ui && ui->reply_end) ui->reply_end(ui->ud, NULL);
    if (!a->ws || calls->n == 0) goto done;
    run_tools(t, calls);
    if (t->interrupted) st = elpis_fail(err, ELPIS_ECANCELLED, "interrupted");
    *more = !t->interrupted;
done:
    elpis_tool_calls_free(&text_calls);
    elpis_reply_free(&r);
    return st;
}

elpis_status elpis_agent_send(elpis_agent *a, const char *text, const elpis_agent_ui *ui, elpis_error *err) {
    turn t = { .a = a, .ui = ui };
    elpis_status st = ELPIS_OK;
    if (a->system && json_array_size(a->messages) == 0) push(a, json_pack("{s:s, s:s}", "role", "system", "content", a->system));
    size_t before = json_array_size(a->messages);
    push(a, json_pack("{s:s, s:s}", "role", "user", "content", text));
    bool more = true;
    for (int i = 0; more && st == ELPIS_OK; i++) {
        if (i == a->max_iterations) {
            st = elpis_fail(err, ELPIS_ERANGE, "stopped after %d requests in one turn", a->max_iterations);
            break;
        }
        st = step(&t, &more, err);
    }
    /* the first request failed outright (no reply at all): forget the user
     * message too, so a retry does not send two user messages in a row */
    if (st != ELPIS_OK && st != ELPIS_ECANCELLED && st != ELPIS_ERANGE && json_array_size(a->messages) == before + 1)
        json_array_remove(a->messages, before);
    elpis_buf_free(&t.answer);
    return st;
}
