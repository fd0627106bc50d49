/* test_server_agent.c -- the pure parts of the server's agent loop
 * (src/server/agent.c): the streaming reasoning split as SSE deltas (the
 * text cut at every byte position), tool-call parsing and stripping, the
 * non-stream message and the stream's finish chunk, compaction (system
 * prompt kept, one summary message, the last 4 kept), the memories message
 * and the storage decision. No server runs: a zeroed srv_req with a wire
 * is all these functions touch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/server/server_internal.h"

#include <jansson.h>

static srv_req *new_req(bool parse_reasoning, bool tools) {
    srv_req *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->wire = (srv_wire){ SRV_CHAT, "chatcmpl-test", "m", 1, false, NULL };
    r->agent.on = r->agent.out = true;
    r->agent.parse_reasoning = parse_reasoning;
    r->agent.tools = tools;
    return r;
}

static void free_req(srv_req *r) {
    srv_agent_free(r);
    elpis_buf_free(&r->out);
    elpis_buf_free(&r->text);
    free(r);
}

/* Every `data: {...}` event of r->out, decoded. */
static json_t *events(srv_req *r) {
    json_t *arr = json_array();
    char *s = strndup(r->out.data ? r->out.data : "", r->out.len);
    for (char *p = s; (p = strstr(p, "data: "));) {
        p += 6;
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        *end = 0;
        if (strcmp(p, "[DONE]")) {
            json_t *o = json_loads(p, 0, NULL);
            assert_non_null(o);
            json_array_append_new(arr, o);
        }
        p = end + 2;
    }
    free(s);
    return arr;
}

/* Concatenate delta.<field> over all events. */
static char *joined(json_t *ev, const char *field) {
    elpis_buf b = { 0 };
    size_t i;
    json_t *o;
    json_array_foreach(ev, i, o) {
        json_t *d = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
        json_t *v = json_object_get(d, field);
        if (json_is_string(v)) elpis_buf_append(&b, json_string_value(v), json_string_length(v));
    }
    char *s = strndup(b.data ? b.data : "", b.len);
    elpis_buf_free(&b);
    return s;
}

/* ---- streaming reasoning ----------------------------------------------------------------------- */

static void stream_split_at(const char *text, size_t cut, const char *want_answer, const char *want_thought) {
    srv_req *r = new_req(true, false);
    size_t n = strlen(text);
    srv_agent_stream_text(r, text, cut);
    srv_agent_stream_text(r, text + cut, n - cut);
    srv_agent_stream_finish(r, "stop");
    json_t *ev = events(r);
    char *answer = joined(ev, "content"), *thought = joined(ev, "reasoning_content");
    assert_string_equal(answer, want_answer);
    assert_string_equal(thought, want_thought);
    free(answer);
    free(thought);
    json_decref(ev);
    free_req(r);
}

static void test_stream_reasoning_every_cut(void **state) {
    (void)state;
    const char *text = "Hi <Reasoning>deep </reasoning>there<THINKING>more</thinking>!";
    for (size_t cut = 0; cut <= strlen(text); cut++) stream_split_at(text, cut, "Hi there!", "deep more");
}

static void test_stream_reasoning_bytewise(void **state) {
    (void)state;
    const char *text = "<thinking>a<b</thinking>answer <x>";
    srv_req *r = new_req(true, false);
    for (size_t i = 0; text[i]; i++) srv_agent_stream_text(r, text + i, 1);
    srv_agent_stream_finish(r, "stop");
    json_t *ev = events(r);
    char *answer = joined(ev, "content"), *thought = joined(ev, "reasoning_content");
    assert_string_equal(answer, "answer <x>");
    assert_string_equal(thought, "a<b");
    free(answer);
    free(thought);
    json_decref(ev);
    free_req(r);
}

static void test_stream_reasoning_none_is_raw(void **state) {
    (void)state;
    srv_req *r = new_req(false, false);
    srv_agent_stream_text(r, "<reasoning>x</reasoning>y", 25);
    json_t *ev = events(r);
    char *answer = joined(ev, "content"), *thought = joined(ev, "reasoning_content");
    assert_string_equal(answer, "<reasoning>x</reasoning>y");
    assert_string_equal(thought, "");
    free(answer);
    free(thought);
    json_decref(ev);
    free_req(r);
}

/* ---- tool calls -------------------------------------------------------------------------------- */

static void test_tool_calls_blocks(void **state) {
    (void)state;
    const char *text = "First.\n```tool_call\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n```\nMiddle."
                       "```tool_call\nnot json\n```"
                       "```TOOL_CALL\n{\"name\": \"b\", \"arguments\": \"{\\\"y\\\": 2}\"}\n```End.";
    elpis_tool_calls c = { 0 };
    elpis_buf stripped = { 0 };
    assert_int_equal(srv_parse_tool_calls(text, &c, &stripped, NULL), ELPIS_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].name, "a");
    assert_string_equal(c.v[0].arguments, "{\"x\":1}");
    assert_string_equal(c.v[1].name, "b");
    assert_string_equal(c.v[1].arguments, "{\"y\": 2}");
    assert_int_equal(strlen(c.v[0].id), 17);
    assert_memory_equal(c.v[0].id, "call_", 5);
    assert_string_not_equal(c.v[0].id, c.v[1].id);
    assert_string_equal(stripped.data, "First.\n\nMiddle.End.");
    elpis_tool_calls_free(&c);
    elpis_buf_free(&stripped);
}

static void test_tool_calls_bare(void **state) {
    (void)state;
    elpis_tool_calls c = { 0 };
    elpis_buf stripped = { 0 };
    assert_int_equal(srv_parse_tool_calls("  {\"name\":\"ls\",\"arguments\":{\"p\":\".\"}} then text", &c, &stripped, NULL), ELPIS_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].name, "ls");
    assert_string_equal(stripped.data, " then text");
    elpis_tool_calls_free(&c);
    elpis_buf_free(&stripped);
    /* an object without a name, or one that is not first, is no call */
    assert_int_equal(srv_parse_tool_calls("{\"x\":1}", &c, NULL, NULL), ELPIS_OK);
    assert_int_equal(srv_parse_tool_calls("text {\"name\":\"ls\"}", &c, NULL, NULL), ELPIS_OK);
    assert_int_equal(c.n, 0);
}

static void test_final_body_message(void **state) {
    (void)state;
    srv_req *r = new_req(true, true);
    const char *t = "<reasoning>plan</reasoning> Sure.\n```tool_call\n{\"name\":\"f\",\"arguments\":{\"k\":\"v\"}}\n```";
    elpis_buf_puts(&r->text, t);
    elpis_req_status st = { 0 };
    elpis_buf b = { 0 };
    assert_int_equal(srv_agent_final_body(r, &b, "stop", &st), ELPIS_OK);
    json_t *o = json_loadb(b.data, b.len, 0, NULL);
    assert_non_null(o);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0), *msg = json_object_get(ch, "message");
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "Sure.");
    assert_string_equal(json_string_value(json_object_get(msg, "reasoning_content")), "plan");
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(call, "type")), "function");
    assert_string_equal(json_string_value(json_object_get(json_object_get(call, "function"), "name")), "f");
    assert_string_equal(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")), "{\"k\":\"v\"}");
    assert_int_equal(json_string_length(json_object_get(call, "id")), 17);
    json_decref(o);
    elpis_buf_free(&b);
    free_req(r);
}

static void test_final_body_without_tools_keeps_blocks(void **state) {
    (void)state;
    srv_req *r = new_req(true, false);
    elpis_buf_puts(&r->text, "```tool_call\n{\"name\":\"f\"}\n```");
    elpis_req_status st = { 0 };
    elpis_buf b = { 0 };
    assert_int_equal(srv_agent_final_body(r, &b, "stop", &st), ELPIS_OK);
    assert_non_null(strstr(b.data, "\"finish_reason\":\"stop\""));
    assert_null(strstr(b.data, "tool_calls"));
    assert_null(strstr(b.data, "reasoning_content"));
    elpis_buf_free(&b);
    free_req(r);
}

static void test_stream_finish_tool_calls(void **state) {
    (void)state;
    srv_req *r = new_req(true, true);
    const char *t = "<thinking>```tool_call\n{\"name\":\"no\"}\n```</thinking>```tool_call\n{\"name\":\"yes\"}\n```";
    elpis_buf_puts(&r->text, t);   /* what produce() keeps */
    srv_agent_stream_text(r, t, strlen(t));
    srv_agent_stream_finish(r, "stop");
    json_t *ev = events(r), *last = json_array_get(ev, json_array_size(ev) - 1);
    json_t *ch = json_array_get(json_object_get(last, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    json_t *calls = json_object_get(json_object_get(ch, "delta"), "tool_calls");
    assert_int_equal(json_array_size(calls), 1);   /* the call inside the thought is no call */
    json_t *c = json_array_get(calls, 0);
    assert_int_equal(json_integer_value(json_object_get(c, "index")), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "function"), "name")), "yes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "function"), "arguments")), "{}");
    json_decref(ev);
    free_req(r);
}

/* ---- compaction --------------------------------------------------------------------------------- */

typedef struct budget { size_t max_chars; int calls; } budget;

static bool fits_chars(void *ud, const elpis_chat_msg *m, size_t n) {
    budget *b = ud;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += strlen(m[i].content) + 10;
    b->calls++;
    return total <= b->max_chars;
}

static elpis_chat_msg *history(elpis_arena *a, size_t n_turns, bool system) {
    elpis_chat_msg *m = elpis_arena_alloc(a, (n_turns + 1) * sizeof *m, 0);
    size_t k = 0;
    if (system) m[k++] = (elpis_chat_msg){ "system", "You are Psyche." };
    for (size_t i = 0; i < n_turns; i++) {
        char buf[160];
        snprintf(buf, sizeof buf, "message %02zu: %s", i, "a fairly long line of conversation that takes up room in the context");
        m[k++] = (elpis_chat_msg){ i % 2 ? "assistant" : "user", elpis_arena_strndup(a, buf, strlen(buf)) };
    }
    return m;
}

static void test_compact_fits_untouched(void **state) {
    (void)state;
    elpis_arena a;
    elpis_arena_init(&a, 4096);
    elpis_chat_msg *m = history(&a, 6, true);
    budget b = { 100000, 0 };
    srv_compaction out;
    assert_int_equal(srv_compact(&a, m, 7, 4, 2000, fits_chars, &b, &out), ELPIS_OK);
    assert_ptr_equal(out.msgs, m);
    assert_int_equal(out.n, 7);
    assert_int_equal(out.n_dropped, 0);
    assert_true(out.fit);
    elpis_arena_free(&a);
}

static void test_compact_summary(void **state) {
    (void)state;
    elpis_arena a;
    elpis_arena_init(&a, 4096);
    elpis_chat_msg *m = history(&a, 20, true);
    budget b = { 1400, 0 };
    srv_compaction out;
    assert_int_equal(srv_compact(&a, m, 21, 4, 600, fits_chars, &b, &out), ELPIS_OK);
    assert_true(out.fit);
    assert_true(out.n_dropped > 0);
    assert_int_equal(out.first_dropped, 1);
    assert_ptr_equal(out.dropped, m + 1);
    assert_int_equal(out.n, 21 - out.n_dropped + 1);
    assert_string_equal(out.msgs[0].content, "You are Psyche.");   /* the system prompt stays */
    assert_string_equal(out.msgs[1].role, "system");
    assert_memory_equal(out.msgs[1].content, "[Previous conversation summary]\n", 32);
    assert_true(strlen(out.msgs[1].content) <= 600);
    /* the newest dropped message is in the summary, with its role */
    char want[64];
    snprintf(want, sizeof want, "%s: message %02zu", m[out.n_dropped].role, out.n_dropped - 1);
    assert_non_null(strstr(out.msgs[1].content, want));
    for (size_t i = 0; i < 4; i++) assert_ptr_equal(out.msgs[out.n - 1 - i].content, m[20 - i].content);
    assert_true(b.calls <= 7);   /* bisection: 1 + log2(16) + the final check, not one render per message */
    assert_true(fits_chars(&b, out.msgs, out.n));
    elpis_arena_free(&a);
}

static void test_compact_keeps_last_four(void **state) {
    (void)state;
    elpis_arena a;
    elpis_arena_init(&a, 4096);
    elpis_chat_msg *m = history(&a, 12, true);
    budget b = { 200, 0 };   /* too small even for the last 4: the sliding window, no summary */
    srv_compaction out;
    assert_int_equal(srv_compact(&a, m, 13, 4, 600, fits_chars, &b, &out), ELPIS_OK);
    assert_false(out.fit);
    assert_int_equal(out.n, 5);
    assert_int_equal(out.n_dropped, 8);
    assert_string_equal(out.msgs[0].content, "You are Psyche.");
    for (size_t i = 0; i < 4; i++) assert_ptr_equal(out.msgs[1 + i].content, m[9 + i].content);
    elpis_arena_free(&a);
}

static void test_compact_without_system(void **state) {
    (void)state;
    elpis_arena a;
    elpis_arena_init(&a, 4096);
    elpis_chat_msg *m = history(&a, 12, false);
    budget b = { 900, 0 };
    srv_compaction out;
    assert_int_equal(srv_compact(&a, m, 12, 4, 400, fits_chars, &b, &out), ELPIS_OK);
    assert_int_equal(out.first_dropped, 0);
    assert_memory_equal(out.msgs[0].content, "[Previous conversation summary]\n", 32);
    assert_ptr_equal(out.msgs[out.n - 1].content, m[11].content);
    elpis_arena_free(&a);
}

/* ---- memories and storage ------------------------------------------------------------------------ */

static void test_format_memories(void **state) {
    (void)state;
    assert_null(srv_format_memories(NULL));
    char long_text[400];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = 0;
    elpis_memory_hit hits[3] = { 0 };
    hits[0].mem.content = "Lily has a red ball";
    hits[0].mem.type = ELPIS_MEM_EPISODIC;
    hits[1].mem.content = long_text;   /* > 200 chars: its summary */
    hits[1].mem.summary = "the summary";
    hits[1].mem.type = ELPIS_MEM_SEMANTIC;
    hits[2].mem.content = long_text;   /* no summary: cut at 300 */
    hits[2].mem.type = ELPIS_MEM_EPISODIC;
    elpis_memory_results res = { hits, 3 };
    char *s = srv_format_memories(&res);
    assert_non_null(s);
    char want[600];
    snprintf(want, sizeof want, "[Relevant memories]\n1. [episodic] Lily has a red ball\n2. [semantic] the summary\n3. [episodic] %.300s...",
             long_text);
    assert_string_equal(s, want);
    free(s);
}

static void test_should_store(void **state) {
    (void)state;
    assert_true(srv_should_store("Please remember that my cat is Zork", "ok", 0, 0));   /* asked: stored */
    assert_false(srv_should_store("hello", "hi there", 0, 0));                          /* 0 */
    char big[1200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_false(srv_should_store("tell me", big, 0, 0));                                /* 0.35 */
    assert_true(srv_should_store("tell me", big, 0.9, 0));                               /* 0.35 + 0.25 */
    elpis_buf code = { 0 };
    elpis_buf_printf(&code, "%s```c\nx\n```\n```c\ny\n```", big);
    assert_true(srv_should_store("tell me", code.data, 0, 0));                           /* 0.35 + 0.35 */
    elpis_buf_free(&code);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_reasoning_every_cut),
        cmocka_unit_test(test_stream_reasoning_bytewise),
        cmocka_unit_test(test_stream_reasoning_none_is_raw),
        cmocka_unit_test(test_tool_calls_blocks),
        cmocka_unit_test(test_tool_calls_bare),
        cmocka_unit_test(test_final_body_message),
        cmocka_unit_test(test_final_body_without_tools_keeps_blocks),
        cmocka_unit_test(test_stream_finish_tool_calls),
        cmocka_unit_test(test_compact_fits_untouched),
        cmocka_unit_test(test_compact_summary),
        cmocka_unit_test(test_compact_keeps_last_four),
        cmocka_unit_test(test_compact_without_system),
        cmocka_unit_test(test_format_memories),
        cmocka_unit_test(test_should_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
