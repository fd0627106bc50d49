/* api.c -- request bodies: JSON in, validated parameters and tokens out.
 *
 * Rules (OpenAI-compatible, server-anchors.md §4):
 *   - The body must be a JSON object; a parse error is a 400 whose message
 *     gives jansson's line and column.
 *   - Unknown fields are ignored. A known field with a wrong type or a value
 *     outside its range is a 400 whose `param` names the field.
 *   - Chat: `messages` (role + content string or text parts), or the shorthand
 *     `prompt` string as one user message. Tool results (role "tool") become
 *     "[Tool result for NAME]:\n..." user messages and assistant tool_calls
 *     ```tool_call blocks (spec §6; no template here has a tool role).
 *     agent.c adds the system prompt, tools, memories and compaction, then
 *     renders with the model's chat template (add_generation_prompt);
 *     tokenized with add_special and parse_special (the template's own
 *     markers must become control tokens).
 *   - Text completions: `prompt` string (or an array of one string),
 *     tokenized with BOS and without parse_special, so user text cannot
 *     inject control tokens.
 *   - max_tokens is capped by what the context leaves after the prompt.
 * Everything allocated here lives in the request's arena, except the token
 * vector (malloc'd by elpis_tokens, freed with the request) and the jansson
 * tree, which is released before returning.
 */
#include "server_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_STOP 16

static bool fail(srv_api_error *e, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(srv_api_error *e, const char *param, const char *code, const char *fmt, ...) {
    e->status = MHD_HTTP_BAD_REQUEST;
    e->type = "invalid_request_error";
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

/* Parse r->body into an object. */
static json_t *load_object(srv_req *r, srv_api_error *e) {
    json_error_t je;
    json_t *root = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &je);
    if (!root) {
        fail(e, NULL, "invalid_json", "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(e, NULL, "invalid_json", "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

json_t *srv_body_json(srv_req *r, srv_api_error *e) { return load_object(r, e); }

/* ---- typed field readers: absent -> true and *out untouched --------------------- */

static bool get_number(json_t *o, const char *key, double min, double max, double *out, srv_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return fail(e, key, "invalid_type", "%s must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max) return fail(e, key, "invalid_value", "%s: %g is out of range %g..%g", key, d, min, max);
    *out = d;
    return true;
}

static bool get_int(json_t *o, const char *key, long long min, long long max, long long *out, srv_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    long long i;
    if (json_is_integer(v)) i = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
        i = (long long)json_real_value(v);   /* 5.0 is 5, as JavaScript clients send it */
    else return fail(e, key, "invalid_type", "%s must be an integer", key);
    if (i < min || i > max) return fail(e, key, "invalid_value", "%s: %lld is out of range %lld..%lld", key, i, min, max);
    *out = i;
    return true;
}

static bool get_bool(json_t *o, const char *key, bool *out, srv_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return fail(e, key, "invalid_type", "%s must be true or false", key);
    *out = json_is_true(v);
    return true;
}

static bool get_float(json_t *o, const char *key, double min, double max, float *out, srv_api_error *e) {
    double d = *out;
    if (!get_number(o, key, min, max, &d, e)) return false;
    *out = (float)d;
    return true;
}

/* ---- common fields ------------------------------------------------------------------ */

static bool parse_sampling(json_t *o, elpis_sampler_params *sp, srv_api_error *e) {
    long long i;
    *sp = elpis_sampler_defaults();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sp->seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;   /* no seed: vary */
    if (!get_float(o, "temperature", 0, 100, &sp->temperature, e) || !get_float(o, "top_p", 0, 1, &sp->top_p, e) ||
        !get_float(o, "min_p", 0, 1, &sp->min_p, e) || !get_float(o, "presence_penalty", -100, 100, &sp->presence_penalty, e) ||
        !get_float(o, "frequency_penalty", -100, 100, &sp->frequency_penalty, e))
        return false;
    json_t *rp = json_object_get(o, "repeat_penalty");
    if (rp && json_is_number(rp) && json_number_value(rp) <= 0)
        return fail(e, "repeat_penalty", "invalid_value", "repeat_penalty: %g is out of range (0, 100]", json_number_value(rp));
    if (!get_float(o, "repeat_penalty", 1e-9, 100, &sp->repeat_penalty, e)) return false;
    i = sp->top_k;
    if (!get_int(o, "top_k", 0, 1 << 30, &i, e)) return false;
    sp->top_k = (int32_t)i;
    i = sp->repeat_last_n;
    if (!get_int(o, "repeat_last_n", 0, ELPIS_SAMPLER_MAX_LAST_N, &i, e)) return false;
    sp->repeat_last_n = (int32_t)i;
    i = 0;
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!get_int(o, "seed", INT64_MIN, INT64_MAX, &i, e)) return false;
        sp->seed = (uint64_t)i;
    }
    elpis_error err = { 0 };
    if (elpis_sampler_validate(sp, &err) != ELPIS_OK) return fail(e, NULL, "invalid_value", "%s", err.msg);
    return true;
}

static bool parse_stop(srv_req *r, json_t *o, srv_api_error *e) {
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return true;
    size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (!json_is_string(v) && !json_is_array(v)) return fail(e, "stop", "invalid_type", "stop must be a string or an array of strings");
    if (n > MAX_STOP) return fail(e, "stop", "invalid_value", "stop: %zu strings, at most %d", n, MAX_STOP);
    r->gen.stop = elpis_arena_alloc(&r->arena, (n + 1) * sizeof(char *), 0);
    if (!r->gen.stop) return fail(e, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_string(v) ? v : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 256)
            return fail(e, "stop", "invalid_value", "stop[%zu] must be a non-empty string of at most 256 bytes", i);
        r->gen.stop[r->gen.n_stop++] = elpis_arena_strndup(&r->arena, json_string_value(s), json_string_length(s));
    }
    return true;
}

/* Present and not null: the request chose this value itself. */
static bool given(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v);
}

static bool parse_common(srv_req *r, json_t *o, srv_api_error *e) {
    srv_gen *g = &r->gen;
    long long i = 0;
    if (!parse_sampling(o, &g->sp, e)) return false;
    /* emotional modulation (psyche_api.c) replaces only what was not given */
    g->t_set = given(o, "temperature");
    g->p_set = given(o, "top_p");
    g->modulate = true;
    if (!get_bool(o, "emotional_modulation", &g->modulate, e)) return false;
    if (!get_int(o, "max_completion_tokens", 1, 1 << 30, &i, e) || !get_int(o, "max_tokens", 1, 1 << 30, &i, e)) return false;
    g->max_tokens = (int32_t)i;
    i = 1;
    if (!get_int(o, "n", 1, 1 << 20, &i, e)) return false;
    if (i != 1) return fail(e, "n", "invalid_value", "n: only 1 choice is supported, got %lld", i);
    if (!get_bool(o, "stream", &g->stream, e) || !get_bool(o, "ignore_eos", &g->ignore_eos, e)) return false;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return fail(e, "stream_options", "invalid_type", "stream_options must be an object");
        if (!get_bool(so, "include_usage", &g->include_usage, e)) {
            e->param = "stream_options.include_usage";
            return false;
        }
    }
    return parse_stop(r, o, e);
}

/* ---- prompts ------------------------------------------------------------------------- */

/* Content as a string: a string, null (""), or an array of {type:"text",text}. */
/* A field name with an index, kept in the request's arena (it outlives the parse). */
static const char *indexed(srv_req *r, const char *fmt, size_t idx) {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, fmt, idx);
    const char *s = elpis_arena_strndup(&r->arena, tmp, (size_t)n);
    return s ? s : "messages";
}

static const char *message_text(srv_req *r, json_t *c, size_t idx, srv_api_error *e) {
    const char *param = indexed(r, "messages[%zu].content", idx);
    if (!c || json_is_null(c)) return "";
    if (json_is_string(c)) {   /* copied: the tree is released before the prompt is rendered (agent.c) */
        char *s = elpis_arena_strndup(&r->arena, json_string_value(c), json_string_length(c));
        return s ? s : (fail(e, NULL, NULL, "out of memory"), NULL);
    }
    if (!json_is_array(c)) return fail(e, param, "invalid_type", "%s must be a string or an array of text parts", param), NULL;
    elpis_buf b = { 0 };
    for (size_t k = 0; k < json_array_size(c); k++) {
        json_t *part = json_array_get(c, k), *t = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(t)) {
            elpis_buf_free(&b);
            return fail(e, param, "invalid_type", "%s[%zu] must be {\"type\":\"text\",\"text\":...}", param, k), NULL;
        }
        elpis_buf_append(&b, json_string_value(t), json_string_length(t));
    }
    char *s = elpis_arena_strndup(&r->arena, b.data ? b.data : "", b.len);
    elpis_buf_free(&b);
    return s;
}

/* An assistant message's tool_calls written back as the ```tool_call blocks
 * the model was taught (spec §5.4), after its text: the model sees its own
 * calls in the format it produces them. */
static const char *with_calls(srv_req *r, const char *text, json_t *calls) {
    if (strcasestr(text, "```tool_call")) return text;   /* streamed replies keep the blocks in their content */
    elpis_buf b = { 0 };
    elpis_buf_puts(&b, text);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function"), *args = json_object_get(fn, "arguments");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name) continue;
        json_t *call = json_pack("{s:s}", "name", name);
        json_t *av = json_is_string(args) ? json_loads(json_string_value(args), 0, NULL) : json_incref(args);
        if (call && json_is_object(av)) json_object_set(call, "arguments", av);
        char *j = call ? json_dumps(call, JSON_COMPACT) : NULL;
        if (j) elpis_buf_printf(&b, "%s```tool_call\n%s\n```", b.len ? "\n\n" : "", j);
        free(j);
        json_decref(av);
        json_decref(call);
    }
    const char *s = elpis_arena_strndup(&r->arena, b.data ? b.data : "", b.len);
    elpis_buf_free(&b);
    return s;
}

/* The tool name for a tool message: its "name", else the name of the
 * earlier assistant call with its tool_call_id, else "tool". */
static const char *tool_name(json_t *msgs, size_t upto, json_t *mi) {
    const char *name = json_string_value(json_object_get(mi, "name"));
    const char *id = json_string_value(json_object_get(mi, "tool_call_id"));
    for (size_t i = upto; !name && id && i-- > 0;) {
        json_t *calls = json_object_get(json_array_get(msgs, i), "tool_calls"), *c;
        size_t k;
        json_array_foreach(calls, k, c) {
            const char *cid = json_string_value(json_object_get(c, "id"));
            if (cid && !strcmp(cid, id)) name = json_string_value(json_object_get(json_object_get(c, "function"), "name"));
        }
    }
    return name ? name : "tool";
}

/* One message into *m. Tool results become the spec's user message
 * "[Tool result for NAME]:\n..." (§6 step 4): no template here has a tool role. */
static bool one_message(srv_req *r, json_t *msgs, size_t i, elpis_chat_msg *m, srv_api_error *e) {
    json_t *mi = json_array_get(msgs, i), *role = json_object_get(mi, "role");
    if (!json_is_object(mi) || !json_is_string(role)) {
        const char *param = indexed(r, "messages[%zu].role", i);
        return fail(e, param, "invalid_value", "%s must be a string", param);
    }
    m->role = json_string_value(role);
    if (!(m->content = message_text(r, json_object_get(mi, "content"), i, e))) return false;
    json_t *calls = json_object_get(mi, "tool_calls");
    if (!strcmp(m->role, "assistant") && json_is_array(calls) && json_array_size(calls))
        m->content = with_calls(r, m->content, calls);
    if (!strcmp(m->role, "tool")) {
        elpis_buf b = { 0 };
        elpis_buf_printf(&b, "[Tool result for %s]:\n%s", tool_name(msgs, i, mi), m->content);
        m->role = "user";
        m->content = b.data ? elpis_arena_strndup(&r->arena, b.data, b.len) : NULL;
        elpis_buf_free(&b);
    }
    m->role = elpis_arena_strndup(&r->arena, m->role, strlen(m->role));
    return (m->role && m->content) || fail(e, NULL, NULL, "out of memory");
}

bool srv_chat_messages(srv_req *r, json_t *o, elpis_chat_msg **out, size_t *n_out, srv_api_error *e) {
    json_t *msgs = json_object_get(o, "messages"), *prompt = json_object_get(o, "prompt");
    elpis_chat_msg *m;
    size_t n;
    if (msgs && !json_is_null(msgs)) {
        if (!json_is_array(msgs) || json_array_size(msgs) == 0)
            return fail(e, "messages", "invalid_value", "messages must be a non-empty array");
        n = json_array_size(msgs);
        if (!(m = elpis_arena_alloc(&r->arena, n * sizeof *m, 0))) return fail(e, NULL, NULL, "out of memory");
        for (size_t i = 0; i < n; i++)
            if (!one_message(r, msgs, i, &m[i], e)) return false;
    } else if (json_is_string(prompt)) {
        n = 1;
        if (!(m = elpis_arena_alloc(&r->arena, sizeof *m, 0))) return fail(e, NULL, NULL, "out of memory");
        m[0] = (elpis_chat_msg){ "user", elpis_arena_strndup(&r->arena, json_string_value(prompt), json_string_length(prompt)) };
        if (!m[0].content) return fail(e, NULL, NULL, "out of memory");
    } else {
        return fail(e, "messages", "missing_field", "messages (or a prompt string) is required");
    }
    *out = m;
    *n_out = n;
    return true;
}

static bool text_prompt(json_t *o, elpis_buf *text, srv_api_error *e) {
    json_t *p = json_object_get(o, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
    if (!json_is_string(p)) return fail(e, "prompt", "invalid_value", "prompt must be a string (or an array of one string)");
    elpis_buf_append(text, json_string_value(p), json_string_length(p));
    return true;
}

bool srv_tokenize_prompt(srv_req *r, const elpis_buf *text, bool parse_special, srv_api_error *e) {
    elpis_error err = { 0 };
    const elpis_vocab *v = r->srv->model->vocab;
    if (elpis_tokenize(v, text->data ? text->data : "", text->len, true, parse_special, &r->gen.prompt, &err) != ELPIS_OK)
        return fail(e, "messages", NULL, "tokenizer: %s", err.msg);
    int32_t n_ctx = elpis_sched_params_of(r->srv->sched)->n_ctx;
    if (r->gen.prompt.n == 0) return fail(e, "prompt", "invalid_value", "the prompt is empty");
    if ((int64_t)r->gen.prompt.n >= n_ctx)
        return fail(e, r->gen.kind == SRV_CHAT ? "messages" : "prompt", "context_length_exceeded",
                    "the prompt has %zu tokens; the context holds %d (prompt plus at least one generated token)",
                    r->gen.prompt.n, n_ctx);
    int32_t room = n_ctx - (int32_t)r->gen.prompt.n;
    if (r->gen.max_tokens <= 0 || r->gen.max_tokens > room) r->gen.max_tokens = room;
    return true;
}

bool srv_parse_gen(srv_req *r, srv_kind kind, srv_api_error *e) {
    elpis_buf text = { 0 };
    bool ok = false;
    r->gen.kind = kind;
    json_t *o = load_object(r, e);
    if (!o) return false;
    if (!parse_common(r, o, e)) goto done;
    if (kind == SRV_CHAT) {   /* agent.c: messages, tools, memories, compaction */
        ok = srv_agent_parse(r, o, e) && (r->agent.recall || srv_agent_render(r, e));
        goto done;
    }
    if (!text_prompt(o, &text, e)) goto done;
    ok = srv_tokenize_prompt(r, &text, false, e);
done:
    /* params that point into the tree were copied into the arena; drop it */
    elpis_buf_free(&text);
    json_decref(o);
    return ok;
}

/* ---- /tokenize and /detokenize ------------------------------------------------------------ */

bool srv_api_tokenize(srv_req *r, elpis_buf *out, srv_api_error *e) {
    bool add_special = false, parse_special = true, ok = false;
    elpis_tokens t = { 0 };
    json_t *o = load_object(r, e), *c;
    if (!o) return false;
    if (!get_bool(o, "add_special", &add_special, e) || !get_bool(o, "parse_special", &parse_special, e)) goto done;
    if (!json_is_string(c = json_object_get(o, "content"))) { fail(e, "content", "invalid_value", "content must be a string"); goto done; }
    elpis_error err = { 0 };
    if (elpis_tokenize(r->srv->model->vocab, json_string_value(c), json_string_length(c), add_special, parse_special, &t, &err) !=
        ELPIS_OK) {
        fail(e, "content", NULL, "tokenizer: %s", err.msg);
        goto done;
    }
    elpis_buf_puts(out, "{\"tokens\":[");
    for (size_t i = 0; i < t.n; i++) elpis_buf_printf(out, "%s%d", i ? "," : "", t.ids[i]);
    ok = elpis_buf_puts(out, "]}") == ELPIS_OK;
    if (!ok) fail(e, NULL, NULL, "out of memory");
done:
    elpis_tokens_free(&t);
    json_decref(o);
    return ok;
}

bool srv_api_detokenize(srv_req *r, elpis_buf *out, srv_api_error *e) {
    bool ok = false;
    elpis_tokens t = { 0 };
    elpis_buf text = { 0 };
    json_t *o = load_object(r, e), *a;
    if (!o) return false;
    if (!json_is_array(a = json_object_get(o, "tokens"))) { fail(e, "tokens", "invalid_value", "tokens must be an array of integers"); goto done; }
    int32_t n_vocab = elpis_vocab_n_vocab(r->srv->model->vocab);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n_vocab) {
            fail(e, "tokens", "invalid_value", "tokens[%zu] is not a token id in 0..%d", i, n_vocab - 1);
            goto done;
        }
        elpis_tokens_push(&t, (int32_t)json_integer_value(v));
    }
    elpis_error err = { 0 };
    if (elpis_detokenize(r->srv->model->vocab, t.ids, t.n, true, false, &text, &err) != ELPIS_OK) {
        fail(e, "tokens", NULL, "%s", err.msg);
        goto done;
    }
    elpis_buf_puts(out, "{\"content\":");
    srv_json_str(out, text.data ? text.data : "", text.len);
    ok = elpis_buf_puts(out, "}") == ELPIS_OK;
    if (!ok) fail(e, NULL, NULL, "out of memory");
done:
    elpis_buf_free(&text);
    elpis_tokens_free(&t);
    json_decref(o);
    return ok;
}
