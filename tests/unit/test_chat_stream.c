/* test_chat_stream.c -- the chat client's parsers: server-sent events, the
 * chat-completion chunk decoder (content, OpenAI tool_calls by index,
 * errors, the emotion echo), ```tool_call blocks in reply text, and the
 * reasoning splitter (tags split across chunks, case, unclosed blocks).
 *
 * Every stream test is also run with the input fed one byte at a time and
 * split at every position, since the network may cut anywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elpis/chat_client.h"

/* ---- SSE ------------------------------------------------------------------------------------------ */

typedef struct events {
    char *v[16];
    int n;
} events;

static elpis_status collect(void *ud, const char *data, size_t len, elpis_error *err) {
    (void)err;
    events *e = ud;
    assert_true(e->n < 16);
    assert_int_equal(strlen(data), len);
    e->v[e->n++] = strdup(data);
    return ELPIS_OK;
}

static void events_free(events *e) {
    for (int i = 0; i < e->n; i++) free(e->v[i]);
    e->n = 0;
}

/* Feed `s` split at `cut` (and byte by byte when cut < 0); expect `want`. */
static void sse_case(const char *s, long cut, const char *const *want, int n_want) {
    elpis_sse p;
    events e = { 0 };
    elpis_sse_init(&p);
    size_t n = strlen(s);
    if (cut < 0) {
        for (size_t i = 0; i < n; i++) assert_int_equal(elpis_sse_feed(&p, s + i, 1, collect, &e, NULL), ELPIS_OK);
    } else {
        assert_int_equal(elpis_sse_feed(&p, s, (size_t)cut, collect, &e, NULL), ELPIS_OK);
        assert_int_equal(elpis_sse_feed(&p, s + cut, n - (size_t)cut, collect, &e, NULL), ELPIS_OK);
    }
    assert_int_equal(e.n, n_want);
    for (int i = 0; i < n_want; i++) assert_string_equal(e.v[i], want[i]);
    events_free(&e);
    elpis_sse_free(&p);
}

static void sse_all_splits(const char *s, const char *const *want, int n_want) {
    sse_case(s, -1, want, n_want);
    for (size_t cut = 0; cut <= strlen(s); cut++) sse_case(s, (long)cut, want, n_want);
}

static void test_sse_basic(void **state) {
    (void)state;
    const char *const w[] = { "{\"a\":1}", "[DONE]" };
    sse_all_splits("data: {\"a\":1}\n\ndata: [DONE]\n\n", w, 2);
}

static void test_sse_line_ends_comments_fields(void **state) {
    (void)state;
    /* CRLF and bare CR line ends, comments (pings), other fields, no space after the colon */
    const char *const w[] = { "one", "two\nthree", "" };
    sse_all_splits(": ping\r\n\r\nevent: x\r\ndata:one\r\n\r\nid: 7\rdata: two\rdata: three\r\rdata\n\n", w, 3);
}

static void test_sse_incomplete_event_not_dispatched(void **state) {
    (void)state;
    const char *const w[] = { "a" };
    sse_all_splits("data: a\n\ndata: b\n", w, 1);   /* "b" has no blank line yet */
}

static void test_sse_bounded(void **state) {
    (void)state;
    elpis_sse p;
    events e = { 0 };
    elpis_error err = { 0 };
    elpis_sse_init(&p);
    size_t n = ELPIS_SSE_MAX_EVENT + 10;
    char *big = malloc(n);
    memset(big, 'x', n);
    memcpy(big, "data: ", 6);
    assert_int_equal(elpis_sse_feed(&p, big, n, collect, &e, &err), ELPIS_EFORMAT);
    assert_non_null(strstr(err.msg, "exceeds"));
    free(big);
    elpis_sse_free(&p);
}

/* ---- chunk decoding ------------------------------------------------------------------------------------- */

static elpis_buf g_text;
static void on_text(void *ud, const char *t, size_t n) {
    (void)ud;
    elpis_buf_append(&g_text, t, n);
}

static const char STREAM[] =
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    ": ping\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\\n\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_A\",\"type\":\"function\","
    "\"function\":{\"name\":\"read_file\",\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"name\":\"list_directory\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"file_path\\\":\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"a.txt\\\"}\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],"
    "\"elpis\":{\"temperature\":0.5,\"emotion\":{\"valence\":0.25,\"arousal\":-0.5,\"quadrant\":\"calm\"}}}\n\n"
    "data: [DONE]\n\n";

static void check_reply(const elpis_reply *r) {
    assert_string_equal(r->content.data, "Hello \xc3\xa9\n");
    assert_string_equal(g_text.data, "Hello \xc3\xa9\n");
    assert_true(r->done);
    assert_string_equal(r->finish, "tool_calls");
    assert_int_equal(r->calls.n, 2);
    assert_string_equal(r->calls.v[0].id, "call_A");
    assert_string_equal(r->calls.v[0].name, "read_file");
    assert_string_equal(r->calls.v[0].arguments, "{\"file_path\":\"a.txt\"}");
    assert_string_equal(r->calls.v[1].name, "list_directory");
    assert_string_equal(r->calls.v[1].arguments, "{}");               /* none given */
    assert_int_equal(strncmp(r->calls.v[1].id, "call_", 5), 0);        /* generated */
    assert_int_equal(strlen(r->calls.v[1].id), 17);
    assert_true(r->has_emotion);
    assert_true(r->valence == 0.25 && r->arousal == -0.5);
    assert_string_equal(r->quadrant, "calm");
    assert_string_equal(r->error, "");
}

static void test_reply_stream(void **state) {
    (void)state;
    size_t n = strlen(STREAM);
    for (size_t cut = 0; cut <= n; cut += 7) {
        elpis_reply r;
        g_text.len = 0;
        elpis_reply_init(&r, on_text, NULL);
        assert_int_equal(elpis_reply_feed(&r, STREAM, cut, NULL), ELPIS_OK);
        assert_int_equal(elpis_reply_feed(&r, STREAM + cut, n - cut, NULL), ELPIS_OK);
        check_reply(&r);
        elpis_reply_free(&r);
    }
    elpis_buf_free(&g_text);
}

static void test_reply_error_event_and_bad_json(void **state) {
    (void)state;
    elpis_reply r;
    elpis_error err = { 0 };
    elpis_reply_init(&r, NULL, NULL);
    const char *s = "data: {\"choices\":[{\"delta\":{\"content\":\"A\"}}]}\n\n"
                    "data: {\"error\":{\"message\":\"a newer request replaced this one\",\"code\":\"superseded\"}}\n\n"
                    "data: [DONE]\n\n";
    assert_int_equal(elpis_reply_feed(&r, s, strlen(s), &err), ELPIS_OK);
    assert_string_equal(r.error, "a newer request replaced this one");
    assert_string_equal(r.content.data, "A");
    assert_true(r.done);
    assert_string_equal(r.finish, "");
    assert_int_equal(elpis_reply_feed(&r, "data: {oops\n\n", 13, &err), ELPIS_EFORMAT);
    assert_int_equal(elpis_reply_feed(&r, "data: [1,2]\n\n", 13, &err), ELPIS_EFORMAT);
    elpis_reply_free(&r);
}

static void test_reply_silly_index_refused(void **state) {
    (void)state;
    elpis_reply r;
    elpis_reply_init(&r, NULL, NULL);
    const char *s = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":100000000,\"function\":{\"name\":\"x\"}}]}}]}\n\n";
    assert_int_equal(elpis_reply_feed(&r, s, strlen(s), NULL), ELPIS_EFORMAT);
    assert_int_equal(r.calls.n, 0);
    elpis_reply_free(&r);
}

/* ---- ```tool_call blocks -------------------------------------------------------------------------------- */

static void test_toolcall_blocks(void **state) {
    (void)state;
    elpis_tool_calls c = { 0 };
    const char *text =
        "Let me look.\n```tool_call\n{\"name\": \"list_directory\", \"arguments\": {\"dir_path\": \".\"}}\n```\n"
        "and ```TOOL_CALL {\"name\":\"read_file\",\"arguments\":\"{\\\"file_path\\\":\\\"a\\\"}\"}```\n"
        "```tool_call\nnot json\n```\n"                                   /* skipped */
        "```tool_call\n{\"arguments\": {}}\n```\n"                       /* no name: skipped */
        "```tool_call\n{\"name\": \"x\", \"arguments\": [1]}\n```\n"      /* arguments not an object: skipped */
        "```python\nprint(1)\n```\n"                                      /* another fence */
        "```tool_call\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}}";   /* cut short */
    assert_int_equal(elpis_tool_calls_from_text(text, &c, NULL), ELPIS_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].name, "list_directory");
    assert_string_equal(c.v[0].arguments, "{\"dir_path\":\".\"}");
    assert_string_equal(c.v[1].name, "read_file");
    assert_string_equal(c.v[1].arguments, "{\"file_path\":\"a\"}");
    assert_string_equal(c.v[2].name, "execute_bash");
    assert_string_equal(c.v[2].arguments, "{\"command\":\"ls\"}");
    assert_string_not_equal(c.v[0].id, c.v[1].id);
    elpis_tool_calls_free(&c);
    assert_int_equal(elpis_tool_calls_from_text("no calls here ``` at all", &c, NULL), ELPIS_OK);
    assert_int_equal(c.n, 0);
    assert_int_equal(elpis_tool_calls_from_text("```tool_call\n{\"name\":\"a\"}\n```", &c, NULL), ELPIS_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0].arguments, "{}");
    elpis_tool_calls_free(&c);
}

/* ---- reasoning -------------------------------------------------------------------------------------------- */

static elpis_buf g_ans, g_th;
static int g_runs;
static void on_split(void *ud, bool thought, const char *t, size_t n) {
    (void)ud;
    elpis_buf_append(thought ? &g_th : &g_ans, t, n);
    g_runs++;
}

/* Feed text in pieces of `step` bytes; compare answer and thought. */
static void reason_case(const char *text, size_t step, const char *ans, const char *th) {
    elpis_reason r;
    g_ans.len = g_th.len = 0;
    elpis_buf_puts(&g_ans, "");
    elpis_buf_puts(&g_th, "");
    elpis_reason_init(&r, on_split, NULL);
    for (size_t i = 0, n = strlen(text); i < n; i += step) elpis_reason_feed(&r, text + i, ELPIS_MIN(step, n - i));
    elpis_reason_flush(&r);
    elpis_reason_free(&r);
    assert_string_equal(g_ans.data, ans);
    assert_string_equal(g_th.data, th);
}

static void test_reasoning_stream(void **state) {
    (void)state;
    const char *t = "<reasoning>The user greets.</reasoning>Hello! <b>bold</b> a<b <THINKING>more</Thinking> end <thi";
    for (size_t step = 1; step <= strlen(t); step++)
        reason_case(t, step, "Hello! <b>bold</b> a<b  end <thi", "The user greets.more");
    /* closers of another kind end a thought (the original's regex), <think> too; unclosed stays thought */
    reason_case("<thinking>a</reasoning>b<think>c</think>d<reasoning>cut", 3, "bd", "accut");
    /* a closer outside a thought and an opener inside one are text */
    reason_case("x</reasoning>y<thinking>p<reasoning>q</thinking>z", 2, "x</reasoning>yz", "p<reasoning>q");
    /* nothing is held back longer than needed: a lone '<' at the very end comes out at flush */
    reason_case("a <", 1, "a <", "");
    elpis_buf_free(&g_ans);
    elpis_buf_free(&g_th);
}

static void test_reasoning_split_whole(void **state) {
    (void)state;
    elpis_buf a = { 0 }, t = { 0 };
    assert_int_equal(elpis_reason_split("  <reasoning> one </reasoning> Answer <thinking>two</thinking>\n", &a, &t), ELPIS_OK);
    assert_string_equal(a.data, "Answer");
    assert_string_equal(t.data, "one \n\ntwo");
    elpis_buf_free(&a);
    elpis_buf_free(&t);
    assert_int_equal(elpis_reason_split("plain", &a, NULL), ELPIS_OK);
    assert_string_equal(a.data, "plain");
    elpis_buf_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_basic),
        cmocka_unit_test(test_sse_line_ends_comments_fields),
        cmocka_unit_test(test_sse_incomplete_event_not_dispatched),
        cmocka_unit_test(test_sse_bounded),
        cmocka_unit_test(test_reply_stream),
        cmocka_unit_test(test_reply_error_event_and_bad_json),
        cmocka_unit_test(test_reply_silly_index_refused),
        cmocka_unit_test(test_toolcall_blocks),
        cmocka_unit_test(test_reasoning_stream),
        cmocka_unit_test(test_reasoning_split_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
