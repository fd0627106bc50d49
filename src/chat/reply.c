/* reply.c -- one streamed chat completion, decoded.
 *
 * Each SSE payload is either "[DONE]" or a JSON object:
 *   {"choices":[{"delta":{"role"?, "content"?, "tool_calls"?}, "finish_reason"}], "elpis"?}
 *   {"error":{"message",...}}   (after the 200 status, e.g. "superseded")
 * Content deltas are appended to r->content and passed to on_text at once;
 * delta.reasoning_content (`elpis serve` and llama-server parse the model's
 * thoughts out of the text) goes to on_reasoning and is not content.
 * OpenAI tool-call deltas arrive in pieces keyed by "index": the first piece
 * of a call carries id and function.name, later ones append to
 * function.arguments. They are merged into r->calls[index]; when the reply
 * finishes, calls still missing an id get one and empty arguments become
 * "{}". The server's emotion echo ("elpis":{"emotion":{valence, arousal,
 * quadrant}}, issue 6) is kept for the sidebar.
 */
#include "chat_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void elpis_reply_init(elpis_reply *r, elpis_text_fn on_text, void *ud) {
    memset(r, 0, sizeof *r);
    elpis_sse_init(&r->sse);
    r->on_text = on_text;
    r->ud = ud;
}

void elpis_reply_free(elpis_reply *r) {
    elpis_sse_free(&r->sse);
    elpis_buf_free(&r->content);
    elpis_tool_calls_free(&r->calls);
    memset(r, 0, sizeof *r);
}

/* The slot for tool call `index`, growing the list with empty calls. */
static elpis_tool_call *call_at(elpis_tool_calls *c, size_t index) {
    if (index > 64) return NULL;   /* no model makes more calls at once; refuse silly indexes */
    while (c->n <= index) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4;
            elpis_tool_call *v = realloc(c->v, cap * sizeof *v);
            if (!v) return NULL;
            c->v = v;
            c->cap = cap;
        }
        c->v[c->n++] = (elpis_tool_call){ 0 };
    }
    return &c->v[index];
}

static elpis_status merge_call(elpis_reply *r, json_t *d, size_t pos, elpis_error *err) {
    json_t *idx = json_object_get(d, "index"), *id = json_object_get(d, "id"), *fn = json_object_get(d, "function");
    size_t index = json_is_integer(idx) && json_integer_value(idx) >= 0 ? (size_t)json_integer_value(idx) : pos;
    elpis_tool_call *c = call_at(&r->calls, index);
    if (!c) return elpis_fail(err, ELPIS_EFORMAT, "tool_calls: bad index %zu", index);
    json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
    bool ok = true;
    if (json_is_string(id) && !c->id) ok = ok && (c->id = strdup(json_string_value(id))) != NULL;
    if (json_is_string(name)) ok = ok && chat__str_append(&c->name, json_string_value(name), json_string_length(name));
    if (json_is_string(args)) ok = ok && chat__str_append(&c->arguments, json_string_value(args), json_string_length(args));
    else if (json_is_object(args)) {   /* some servers send the object itself */
        char *s = json_dumps(args, JSON_COMPACT);
        ok = ok && s && chat__str_append(&c->arguments, s, strlen(s));
        free(s);
    }
    return ok ? ELPIS_OK : elpis_fail(err, ELPIS_ENOMEM, "tool_calls");
}

/* Give every call an id, a name and arguments once the reply is complete. */
static elpis_status finish_calls(elpis_reply *r, elpis_error *err) {
    for (size_t i = 0; i < r->calls.n; i++) {
        elpis_tool_call *c = &r->calls.v[i];
        char id[24];
        chat__call_id(id);
        if (!c->id && !(c->id = strdup(id))) return elpis_fail(err, ELPIS_ENOMEM, "tool_calls");
        if (!c->name && !(c->name = strdup(""))) return elpis_fail(err, ELPIS_ENOMEM, "tool_calls");
        if ((!c->arguments || !*c->arguments) && !chat__str_append(&c->arguments, "{}", 2))
            return elpis_fail(err, ELPIS_ENOMEM, "tool_calls");
    }
    return ELPIS_OK;
}

static elpis_status on_delta(elpis_reply *r, json_t *delta, elpis_error *err) {
    json_t *content = json_object_get(delta, "content"), *calls = json_object_get(delta, "tool_calls");
    json_t *thought = json_object_get(delta, "reasoning_content");
    if (json_is_string(thought) && json_string_length(thought) > 0 && r->on_reasoning)
        r->on_reasoning(r->ud, json_string_value(thought), json_string_length(thought));
    if (json_is_string(content) && json_string_length(content) > 0) {
        const char *t = json_string_value(content);
        size_t n = json_string_length(content);
        if (elpis_buf_append(&r->content, t, n) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "reply text");
        if (r->on_text) r->on_text(r->ud, t, n);
    }
    for (size_t i = 0; json_is_array(calls) && i < json_array_size(calls); i++) {
        elpis_status st = merge_call(r, json_array_get(calls, i), i, err);
        if (st != ELPIS_OK) return st;
    }
    return ELPIS_OK;
}

static void on_elpis(elpis_reply *r, json_t *ext) {
    json_t *emo = json_object_get(ext, "emotion");
    json_t *v = json_object_get(emo, "valence"), *a = json_object_get(emo, "arousal"), *q = json_object_get(emo, "quadrant");
    if (!json_is_number(v) || !json_is_number(a)) return;
    r->has_emotion = true;
    r->valence = json_number_value(v);
    r->arousal = json_number_value(a);
    snprintf(r->quadrant, sizeof r->quadrant, "%s", json_is_string(q) ? json_string_value(q) : "");
}

static void on_error(elpis_reply *r, json_t *e) {
    json_t *m = json_object_get(e, "message");
    const char *msg = json_is_string(m) ? json_string_value(m) : json_is_string(e) ? json_string_value(e) : "server error";
    snprintf(r->error, sizeof r->error, "%s", msg);
}

elpis_status elpis_reply_event(elpis_reply *r, const char *data, size_t len, elpis_error *err) {
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        r->done = true;
        return finish_calls(r, err);
    }
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return elpis_fail(err, ELPIS_EFORMAT, "event stream: an event is not a JSON object (%.60s)", data);
    }
    elpis_status st = ELPIS_OK;
    json_t *e = json_object_get(o, "error"), *choices = json_object_get(o, "choices"), *ext = json_object_get(o, "elpis");
    if (e) on_error(r, e);
    if (json_is_object(ext)) on_elpis(r, ext);
    for (size_t i = 0; st == ELPIS_OK && json_is_array(choices) && i < json_array_size(choices); i++) {
        json_t *c = json_array_get(choices, i), *fr = json_object_get(c, "finish_reason");
        json_t *delta = json_object_get(c, "delta");
        if (json_is_object(delta)) st = on_delta(r, delta, err);
        if (st == ELPIS_OK && json_is_string(fr)) {
            snprintf(r->finish, sizeof r->finish, "%s", json_string_value(fr));
            st = finish_calls(r, err);
        }
    }
    json_decref(o);
    return st;
}

static elpis_status event_cb(void *ud, const char *data, size_t len, elpis_error *err) {
    return elpis_reply_event(ud, data, len, err);
}

elpis_status elpis_reply_feed(elpis_reply *r, const char *bytes, size_t n, elpis_error *err) {
    return elpis_sse_feed(&r->sse, bytes, n, event_cb, r, err);
}
