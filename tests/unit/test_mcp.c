/* test_mcp.c -- the MCP server's pure pieces: the line splitter, JSON-RPC
 * classification, UTF-8 repair, the schema checker, the tool table and the
 * tool-call parser. No threads, no model (test_mcp_server.c has those).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../src/mcp/mcp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- line splitter ----------------------------------------------------------- */

typedef struct line_log {
    char lines[16][64];
    int n, overlong;
} line_log;

static void log_line(void *arg, const char *p, size_t n) {
    line_log *l = arg;
    assert_true(l->n < 16);
    assert_true(n < 64);
    memcpy(l->lines[l->n], p, n);
    l->lines[l->n++][n] = 0;
}

static void log_overlong(void *arg, size_t max) {
    line_log *l = arg;
    assert_int_equal(max, 8);
    l->overlong++;
}

static void feed(mcp_lines *ls, line_log *log, const char *s) {
    assert_int_equal(mcp_lines_feed(ls, s, strlen(s), log_line, log_overlong, log), ELPIS_OK);
}

static void test_lines_split_and_join(void **state) {
    (void)state;
    mcp_lines ls;
    line_log log = { 0 };
    mcp_lines_init(&ls, 8);
    feed(&ls, &log, "ab\ncd");          /* one whole line, one partial */
    feed(&ls, &log, "e\r\n\nfgh");      /* CRLF stripped; an empty line is still a line */
    assert_int_equal(log.n, 3);
    assert_string_equal(log.lines[0], "ab");
    assert_string_equal(log.lines[1], "cde");
    assert_string_equal(log.lines[2], "");
    mcp_lines_finish(&ls, log_line, &log);   /* EOF delivers the unterminated tail */
    assert_int_equal(log.n, 4);
    assert_string_equal(log.lines[3], "fgh");
    assert_int_equal(log.overlong, 0);
    mcp_lines_free(&ls);
}

static void test_lines_overlong(void **state) {
    (void)state;
    mcp_lines ls;
    line_log log = { 0 };
    mcp_lines_init(&ls, 8);
    feed(&ls, &log, "12345678\n");      /* exactly max: fine */
    feed(&ls, &log, "12345");
    feed(&ls, &log, "6789");            /* passes max without a newline: reported at once */
    assert_int_equal(log.overlong, 1);
    feed(&ls, &log, "still the same line");
    feed(&ls, &log, "...\nok\n");       /* the rest is dropped up to the newline */
    feed(&ls, &log, "123456789012\nx\n"); /* overlong inside one chunk */
    assert_int_equal(log.overlong, 2);
    assert_int_equal(log.n, 3);
    assert_string_equal(log.lines[0], "12345678");
    assert_string_equal(log.lines[1], "ok");
    assert_string_equal(log.lines[2], "x");
    feed(&ls, &log, "1234567890");      /* overlong at EOF: nothing delivered */
    mcp_lines_finish(&ls, log_line, &log);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.overlong, 3);
    mcp_lines_free(&ls);
}

/* ---- JSON-RPC classification ------------------------------------------------------ */

static void expect_msg(const char *line, mcp_msg_kind kind, int code, const char *id_json) {
    mcp_msg m;
    mcp_msg_parse(line, strlen(line), &m);
    if (m.kind != kind) fail_msg("%s: kind %d, want %d (%s)", line, m.kind, kind, m.err_msg);
    if (kind == MCP_MSG_INVALID) assert_int_equal(m.err_code, code);
    if (id_json) {
        char *got = m.id ? json_dumps(m.id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        if (!got || strcmp(got, id_json)) fail_msg("%s: id %s, want %s", line, got ? got : "(none)", id_json);
        free(got);
    } else {
        assert_null(m.id);
    }
    mcp_msg_clear(&m);
}

static void test_classify(void **state) {
    (void)state;
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", MCP_MSG_REQUEST, 0, "1");
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"x\",\"params\":{}}", MCP_MSG_REQUEST, 0, "\"a\"");
    expect_msg("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", MCP_MSG_NOTIFICATION, 0, NULL);
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}", MCP_MSG_RESPONSE, 0, "3");
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\"", MCP_MSG_INVALID, MCP_PARSE_ERROR, NULL);
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":1e999,\"method\":\"ping\"}", MCP_MSG_INVALID, MCP_PARSE_ERROR, NULL);
    expect_msg("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", MCP_MSG_INVALID, MCP_INVALID_REQUEST, NULL);
    expect_msg("42", MCP_MSG_INVALID, MCP_INVALID_REQUEST, NULL);
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, NULL);
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, NULL);
    expect_msg("{\"jsonrpc\":\"1.0\",\"id\":5,\"method\":\"ping\"}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, "5");
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":7}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, "5");
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"x\",\"params\":1}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, "5");
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":5}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, "5");
    expect_msg("{\"foo\":\"boo\"}", MCP_MSG_INVALID, MCP_INVALID_REQUEST, NULL);
    expect_msg("{\"jsonrpc\":\"2.0\",\"id\":\"\xff\",\"method\":\"ping\"}", MCP_MSG_INVALID, MCP_PARSE_ERROR, NULL);
}

static void test_parse_error_position(void **state) {
    (void)state;
    mcp_msg m;
    const char *line = "{\"a\": [1, 2,, 3]}";
    mcp_msg_parse(line, strlen(line), &m);
    assert_int_equal(m.kind, MCP_MSG_INVALID);
    assert_int_equal(m.err_code, MCP_PARSE_ERROR);
    assert_non_null(strstr(m.err_msg, "column"));
    assert_int_equal(json_integer_value(json_object_get(m.err_data, "line")), 1);
    assert_int_equal(json_integer_value(json_object_get(m.err_data, "column")), 13);
    mcp_msg_clear(&m);
}

static void test_builders_and_text(void **state) {
    (void)state;
    json_t *id = json_integer(7);
    json_t *r = mcp_result(id, json_object());
    char *s = mcp_dump(r);
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}");
    free(s);
    json_decref(r);
    json_t *e = mcp_error(NULL, -32600, "bad\nline", NULL);
    char *line = mcp_dump(e);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"bad\\nline\"}}");
    assert_null(strchr(line, '\n'));   /* never an embedded newline */
    free(line);
    json_decref(e);
    json_decref(id);
    /* invalid UTF-8 and NUL become U+FFFD; valid multi-byte text is kept */
    json_t *t = mcp_text("a\xff" "b\xc3\xa9\0c\xe2\x82", 9);
    assert_string_equal(json_string_value(t), "a\xef\xbf\xbd" "b\xc3\xa9\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(t);
    t = mcp_text("", 0);
    assert_string_equal(json_string_value(t), "");
    json_decref(t);
    t = mcp_text("\xed\xa0\x80", 3);   /* a UTF-16 surrogate is not UTF-8 */
    assert_string_equal(json_string_value(t), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(t);
}

/* ---- schema checker and the tool table ----------------------------------------------- */

static void expect_schema(const json_t *schema, const char *value, const char *want) {
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    char msg[256] = "";
    bool ok = mcp_schema_check(schema, v, "arguments", msg, sizeof msg);
    if (!want && !ok) fail_msg("%s: unexpected failure: %s", value, msg);
    if (want && (ok || !strstr(msg, want))) fail_msg("%s: got [%s], want [%s]", value, ok ? "ok" : msg, want);
    json_decref(v);
}

static void test_schema_check(void **state) {
    (void)state;
    json_t *s = mcp_json_sq("{'type':'object','properties':{'n':{'type':'integer','minimum':1,'maximum':9},"
                            "'xs':{'type':'array','minItems':1,'items':{'type':'object','properties':{"
                            "'k':{'type':'string','enum':['a','b']}},'required':['k']}},"
                            "'t':{'type':['string','null']}},'required':['xs']}");
    assert_non_null(s);
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}]}", NULL);
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}],\"n\":3.0,\"t\":null,\"extra\":1}", NULL);
    expect_schema(s, "{}", "arguments.xs: is required");
    expect_schema(s, "[]", "arguments: expected object, got array");
    expect_schema(s, "{\"xs\":[]}", "arguments.xs: needs at least 1");
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"},{}]}", "arguments.xs[1].k: is required");
    expect_schema(s, "{\"xs\":[{\"k\":\"c\"}]}", "arguments.xs[0].k: must be one of [\"a\",\"b\"]");
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}],\"n\":2.5}", "arguments.n: expected integer, got number");
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}],\"n\":0}", "arguments.n: 0 is below the minimum 1");
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}],\"n\":10}", "arguments.n: 10 is above the maximum 9");
    expect_schema(s, "{\"xs\":[{\"k\":\"a\"}],\"t\":5}", "arguments.t: has the wrong type");
    json_decref(s);
}

static void test_tool_table(void **state) {
    (void)state;
    size_t n;
    const mcp_tool *t = mcp_tools(&n);
    assert_int_equal(n, 9);
    for (size_t i = 0; i < n; i++) {
        json_t *in = mcp_json_sq(t[i].input_schema), *out = mcp_json_sq(t[i].output_schema);
        if (!in || !out) fail_msg("%s: a schema does not parse", t[i].name);
        assert_string_equal(json_string_value(json_object_get(in, "type")), "object");
        assert_string_equal(json_string_value(json_object_get(out, "type")), "object");
        assert_true(strlen(t[i].description) > 20);
        assert_non_null(t[i].fn);
        json_decref(in);
        json_decref(out);
    }
    /* results mirror structuredContent as text; errors carry {"error": ...} */
    json_t *r = mcp_tool_result(json_pack("{s:i}", "a", 1));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "structuredContent"), "a")), 1);
    json_t *text = json_loads(json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text")), 0, NULL);
    assert_true(json_equal(text, json_object_get(r, "structuredContent")));
    json_decref(text);
    json_decref(r);
    r = mcp_tool_error("boom");
    assert_true(json_is_true(json_object_get(r, "isError")));
    assert_null(json_object_get(r, "structuredContent"));
    json_decref(r);
}

/* ---- tool-call parsing ------------------------------------------------------------------ */

static void test_toolcall_parse(void **state) {
    (void)state;
    char *content = NULL;
    json_t *c = mcp_toolcall_parse("Let me check.\n```tool_call\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\n"
                                   "and <tool_call>{\"name\":\"now\"}</tool_call> <tool_call>{bad json}</tool_call>",
                                   &content);
    assert_non_null(c);
    assert_int_equal(json_array_size(c), 2);
    json_t *f0 = json_object_get(json_array_get(c, 0), "function");
    assert_string_equal(json_string_value(json_object_get(f0, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(f0, "arguments")), "{\"city\":\"Paris\"}");
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 0), "type")), "function");
    assert_int_equal(strncmp(json_string_value(json_object_get(json_array_get(c, 0), "id")), "call_", 5), 0);
    json_t *f1 = json_object_get(json_array_get(c, 1), "function");
    assert_string_equal(json_string_value(json_object_get(f1, "arguments")), "{}");
    assert_string_equal(content, "Let me check.\n\nand");
    free(content);
    json_decref(c);

    /* fallback: the whole reply is a call; string arguments pass through */
    c = mcp_toolcall_parse("  {\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"} ", &content);
    assert_int_equal(json_array_size(c), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(c, 0), "function"), "arguments")), "{\"x\":1}");
    assert_string_equal(content, "");
    free(content);
    json_decref(c);

    /* no call */
    assert_null(mcp_toolcall_parse("Once upon a time there was a cat.", &content));
    assert_string_equal(content, "Once upon a time there was a cat.");
    free(content);
    assert_null(mcp_toolcall_parse("```tool_call\n{\"arguments\":{}}\n```", NULL));   /* no name */
    assert_null(mcp_toolcall_parse("", NULL));
}

static void test_toolcall_prompt(void **state) {
    (void)state;
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
                               "\"parameters\":{\"type\":\"object\"}}}]", 0, NULL);
    elpis_buf b = { 0 };
    assert_int_equal(mcp_toolcall_prompt(tools, &b, NULL), ELPIS_OK);
    assert_non_null(strstr(b.data, "```tool_call"));
    assert_non_null(strstr(b.data, "**get_weather**"));
    assert_non_null(strstr(b.data, "Parameters (JSON Schema): {\"type\":\"object\"}"));
    elpis_buf_free(&b);
    json_decref(tools);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_split_and_join),
        cmocka_unit_test(test_lines_overlong),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_parse_error_position),
        cmocka_unit_test(test_builders_and_text),
        cmocka_unit_test(test_schema_check),
        cmocka_unit_test(test_tool_table),
        cmocka_unit_test(test_toolcall_parse),
        cmocka_unit_test(test_toolcall_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
