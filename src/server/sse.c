/* sse.c -- the OpenAI wire format, byte for byte.
 *
 * Streaming (server-anchors.md §4): every event is `data: <one-line JSON>\n\n`;
 * the first chat event carries delta {"role":"assistant","content":""}; text
 * follows as delta {"content":..}; the last choice event has an empty delta
 * and finish_reason; with stream_options.include_usage every chunk carries
 * "usage":null and one extra chunk with "choices":[] carries the counts; the
 * stream ends with `data: [DONE]\n\n`. The finish chunk (and the usage
 * chunk, when there is one) and the non-stream body carry the server's
 * emotion echo, a top-level "elpis" object (w->elpis, see psyche_api.c);
 * OpenAI clients ignore unknown top-level fields. Errors after the 200 status go out as
 * `data: {"error":{...}}`. Comments (`: ping`) keep idle connections alive.
 * Chat requests may split the text (agent.c): thoughts go out as
 * delta.reasoning_content, and the finish chunk may carry delta.tool_calls;
 * the non-stream message then has reasoning_content / tool_calls (llama-server's
 * field names) and a null content when only tool calls are left.
 *
 * The events are written by hand rather than through jansson: they are
 * produced once per token, their shape is fixed, and the only variable parts
 * are strings that srv_json_str escapes. Non-stream bodies use the same
 * writer so both paths agree on field order and spelling.
 */
#include "server_internal.h"

#include <stdio.h>
#include <string.h>

#define TRY(x) do { if ((x) != ELPIS_OK) return ELPIS_ENOMEM; } while (0)

elpis_status srv_json_str(elpis_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    TRY(elpis_buf_append(b, "\"", 1));
    size_t run = 0;   /* bytes copied verbatim since the last escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { run++; continue; }
        TRY(elpis_buf_append(b, s + i - run, run));
        run = 0;
        char esc[7] = { '\\', 0 };
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
        }
        TRY(elpis_buf_append(b, esc, strlen(esc)));
    }
    TRY(elpis_buf_append(b, s + n - run, run));
    return elpis_buf_append(b, "\"", 1);
}

static elpis_status json_cstr_or_null(elpis_buf *b, const char *s) {
    return s ? srv_json_str(b, s, strlen(s)) : elpis_buf_puts(b, "null");
}

/* `data: {"id":..,"object":..,"created":..,"model":..,"choices":[` */
static elpis_status chunk_open(elpis_buf *b, const srv_wire *w) {
    TRY(elpis_buf_puts(b, "data: {\"id\":"));
    TRY(srv_json_str(b, w->id, strlen(w->id)));
    TRY(elpis_buf_printf(b, ",\"object\":\"%s\",\"created\":%lld,\"model\":",
                         w->kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", w->created));
    TRY(srv_json_str(b, w->model, strlen(w->model)));
    return elpis_buf_puts(b, ",\"choices\":[");
}

/* `,"elpis":{...}` when the response has an echo */
static elpis_status echo(elpis_buf *b, const srv_wire *w) {
    if (!w->elpis) return ELPIS_OK;
    TRY(elpis_buf_puts(b, ",\"elpis\":"));
    return elpis_buf_puts(b, w->elpis);
}

/* `]` + usage:null when asked + the echo on the last chunk + `}\n\n` */
static elpis_status chunk_close_ex(elpis_buf *b, const srv_wire *w, bool last) {
    TRY(elpis_buf_puts(b, "]"));
    if (w->include_usage) TRY(elpis_buf_puts(b, ",\"usage\":null"));
    if (last) TRY(echo(b, w));
    return elpis_buf_puts(b, "}\n\n");
}

static elpis_status chunk_close(elpis_buf *b, const srv_wire *w) { return chunk_close_ex(b, w, false); }

/* One choice: chat -> delta (raw JSON object text), text -> "text" string. */
static elpis_status choice(elpis_buf *b, const srv_wire *w, const char *delta_json, const char *t, size_t n,
                           const char *finish) {
    TRY(elpis_buf_puts(b, "{\"index\":0,"));
    if (w->kind == SRV_CHAT) {
        TRY(elpis_buf_puts(b, "\"delta\":"));
        if (delta_json) TRY(elpis_buf_puts(b, delta_json));
        else {
            TRY(elpis_buf_puts(b, "{\"content\":"));
            TRY(srv_json_str(b, t, n));
            TRY(elpis_buf_puts(b, "}"));
        }
    } else {
        TRY(elpis_buf_puts(b, "\"text\":"));
        TRY(srv_json_str(b, t ? t : "", t ? n : 0));
    }
    TRY(elpis_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":"));
    TRY(json_cstr_or_null(b, finish));
    return elpis_buf_puts(b, "}");
}

elpis_status srv_sse_role(elpis_buf *b, const srv_wire *w) {
    if (w->kind != SRV_CHAT) return ELPIS_OK;   /* text completions have no role */
    TRY(chunk_open(b, w));
    TRY(choice(b, w, "{\"role\":\"assistant\",\"content\":\"\"}", NULL, 0, NULL));
    return chunk_close(b, w);
}

elpis_status srv_sse_text(elpis_buf *b, const srv_wire *w, const char *t, size_t n) {
    TRY(chunk_open(b, w));
    TRY(choice(b, w, NULL, t, n, NULL));
    return chunk_close(b, w);
}

elpis_status srv_sse_delta(elpis_buf *b, const srv_wire *w, const char *field, const char *t, size_t n) {
    elpis_buf d = { 0 };
    elpis_status st = elpis_buf_printf(&d, "{\"%s\":", field);
    if (st == ELPIS_OK) st = srv_json_str(&d, t, n);
    if (st == ELPIS_OK) st = elpis_buf_puts(&d, "}");
    if (st == ELPIS_OK) st = chunk_open(b, w);
    if (st == ELPIS_OK) st = choice(b, w, d.data, NULL, 0, NULL);
    if (st == ELPIS_OK) st = chunk_close(b, w);
    elpis_buf_free(&d);
    return st;
}

elpis_status srv_sse_finish_delta(elpis_buf *b, const srv_wire *w, const char *delta_json, const char *finish_reason) {
    TRY(chunk_open(b, w));
    TRY(choice(b, w, delta_json, "", 0, finish_reason));
    return chunk_close_ex(b, w, true);
}

elpis_status srv_sse_finish(elpis_buf *b, const srv_wire *w, const char *finish_reason) {
    return srv_sse_finish_delta(b, w, "{}", finish_reason);
}

static elpis_status usage_obj(elpis_buf *b, int32_t n_prompt, int32_t n_gen, int32_t n_cached) {
    return elpis_buf_printf(b,
                            "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                            "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
                            n_prompt, n_gen, n_prompt + n_gen, n_cached);
}

elpis_status srv_sse_usage(elpis_buf *b, const srv_wire *w, int32_t n_prompt, int32_t n_gen, int32_t n_cached) {
    TRY(chunk_open(b, w));
    TRY(elpis_buf_puts(b, "],\"usage\":"));
    TRY(usage_obj(b, n_prompt, n_gen, n_cached));
    TRY(echo(b, w));
    return elpis_buf_puts(b, "}\n\n");
}

elpis_status srv_error_body(elpis_buf *b, const char *type, const char *param, const char *code, const char *msg) {
    TRY(elpis_buf_puts(b, "{\"error\":{\"message\":"));
    TRY(json_cstr_or_null(b, msg ? msg : ""));
    TRY(elpis_buf_puts(b, ",\"type\":"));
    TRY(json_cstr_or_null(b, type));
    TRY(elpis_buf_puts(b, ",\"param\":"));
    TRY(json_cstr_or_null(b, param));
    TRY(elpis_buf_puts(b, ",\"code\":"));
    TRY(json_cstr_or_null(b, code));
    return elpis_buf_puts(b, "}}");
}

elpis_status srv_sse_error(elpis_buf *b, const char *type, const char *code, const char *msg) {
    TRY(elpis_buf_puts(b, "data: "));
    TRY(srv_error_body(b, type, NULL, code, msg));
    return elpis_buf_puts(b, "\n\n");
}

elpis_status srv_sse_done(elpis_buf *b) { return elpis_buf_puts(b, "data: [DONE]\n\n"); }
elpis_status srv_sse_ping(elpis_buf *b) { return elpis_buf_puts(b, ": ping\n\n"); }

/* The chat message: content (null when only tool calls), reasoning_content, tool_calls. */
static elpis_status message(elpis_buf *b, const char *text, size_t n, const srv_extra *x) {
    TRY(elpis_buf_puts(b, "\"message\":{\"role\":\"assistant\",\"content\":"));
    if (x && x->tool_calls && n == 0) TRY(elpis_buf_puts(b, "null"));
    else TRY(srv_json_str(b, text, n));
    if (x && x->reasoning) {
        TRY(elpis_buf_puts(b, ",\"reasoning_content\":"));
        TRY(srv_json_str(b, x->reasoning, x->n_reasoning));
    }
    if (x && x->tool_calls) {
        TRY(elpis_buf_puts(b, ",\"tool_calls\":"));
        TRY(elpis_buf_puts(b, x->tool_calls));
    }
    return elpis_buf_puts(b, "}");
}

elpis_status srv_final_body(elpis_buf *b, const srv_wire *w, const char *text, size_t n, const srv_extra *x,
                            const char *finish, int32_t n_prompt, int32_t n_gen, int32_t n_cached) {
    TRY(elpis_buf_puts(b, "{\"id\":"));
    TRY(srv_json_str(b, w->id, strlen(w->id)));
    TRY(elpis_buf_printf(b, ",\"object\":\"%s\",\"created\":%lld,\"model\":",
                         w->kind == SRV_CHAT ? "chat.completion" : "text_completion", w->created));
    TRY(srv_json_str(b, w->model, strlen(w->model)));
    TRY(elpis_buf_puts(b, ",\"choices\":[{\"index\":0,"));
    if (w->kind == SRV_CHAT) {
        TRY(message(b, text, n, x));
    } else {
        TRY(elpis_buf_puts(b, "\"text\":"));
        TRY(srv_json_str(b, text, n));
    }
    TRY(elpis_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":"));
    TRY(json_cstr_or_null(b, finish));
    TRY(elpis_buf_puts(b, "}],\"usage\":"));
    TRY(usage_obj(b, n_prompt, n_gen, n_cached));
    TRY(echo(b, w));
    return elpis_buf_puts(b, "}");
}
