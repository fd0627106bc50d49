/* test_mcp_server.c -- the MCP server in-process: elpis_mcp_serve on a thread,
 * talking through two pipes, with and without the stories260K model. Run
 * under TSan too (make test-tsan matches "server"): the reader, completion,
 * writer and scheduler threads all run here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../../src/mcp/mcp_internal.h"

#include "elpis/memory.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static elpis_model *g_model;

static int setup(void **state) {
    (void)state;
    char path[1024];
    const char *shared = getenv("ELPIS_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    elpis_error err = { 0 };
    if (elpis_model_load(&g_model, path, &err) != ELPIS_OK) { fprintf(stderr, "load: %s\n", err.msg); return -1; }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    elpis_model_free(g_model);
    return 0;
}

/* ---- a server on a thread, and a line-reading client --------------------------------- */

typedef struct harness {
    elpis_sched *sched;
    elpis_emotion *emo;
    elpis_mcp *m;
    int in[2], out[2];        /* in: test -> server; out: server -> test */
    pthread_t thread;
    elpis_status rc;
    char buf[1 << 16];
    size_t len;
} harness;

static void *serve_main(void *arg) {
    harness *h = arg;
    elpis_error err = { 0 };
    h->rc = elpis_mcp_serve(h->m, h->in[0], h->out[1], &err);
    return NULL;
}

/* store: when not NULL, the memory tools are added (before serving). */
static harness *h_start_with(bool model, int parallel, elpis_memory_store *store) {
    harness *h = calloc(1, sizeof *h);
    elpis_error err = { 0 };
    assert_non_null(h);
    if (model) {
        elpis_sched_params p = elpis_sched_default_params();
        p.n_parallel = parallel;
        p.n_ctx = 1024;
        p.n_threads = 1;
        p.stall_ms = 0;
        if (elpis_sched_new(&h->sched, g_model, &p, &err) != ELPIS_OK) fail_msg("sched: %s", err.msg);
    }
    elpis_emotion_config ec;
    elpis_emotion_config_default(&ec);
    if (elpis_emotion_new(&h->emo, &ec, NULL, elpis_emotion_now(), &err) != ELPIS_OK) fail_msg("emotion: %s", err.msg);
    elpis_mcp_config cfg;
    elpis_mcp_config_default(&cfg);
    cfg.progress_interval_ms = 0;
    if (elpis_mcp_new(&h->m, &cfg, h->sched, h->emo, &err) != ELPIS_OK) fail_msg("mcp: %s", err.msg);
    if (store && elpis_mcp_set_memory(h->m, store, &err) != ELPIS_OK) fail_msg("memory tools: %s", err.msg);
    assert_int_equal(pipe(h->in), 0);
    assert_int_equal(pipe(h->out), 0);
    assert_int_equal(pthread_create(&h->thread, NULL, serve_main, h), 0);
    return h;
}

static harness *h_start(bool model, int parallel) { return h_start_with(model, parallel, NULL); }

/* End of input; the server must return OK and free everything. */
static void h_stop(harness *h) {
    close(h->in[1]);
    pthread_join(h->thread, NULL);
    assert_int_equal(h->rc, ELPIS_OK);
    elpis_sched_free(h->sched);   /* before the server: no more callbacks */
    elpis_mcp_free(h->m);
    elpis_emotion_free(h->emo);
    close(h->in[0]);
    close(h->out[0]);
    close(h->out[1]);
    free(h);
}

static void h_send(harness *h, const char *line) {
    size_t n = strlen(line);
    assert_int_equal(write(h->in[1], line, n), (ssize_t)n);
    assert_int_equal(write(h->in[1], "\n", 1), 1);
}

/* The next message, or NULL when none arrives within timeout_ms. */
static json_t *h_recv(harness *h, int timeout_ms) {
    for (;;) {
        char *nl = memchr(h->buf, '\n', h->len);
        if (nl) {
            size_t n = (size_t)(nl - h->buf);
            json_error_t e;
            json_t *j = json_loadb(h->buf, n, 0, &e);
            if (!j) fail_msg("server wrote a non-JSON line: %.*s", (int)n, h->buf);
            memmove(h->buf, nl + 1, h->len - n - 1);
            h->len -= n + 1;
            return j;
        }
        struct pollfd pf = { .fd = h->out[0], .events = POLLIN };
        if (poll(&pf, 1, timeout_ms) <= 0) return NULL;
        ssize_t k = read(h->out[0], h->buf + h->len, sizeof h->buf - h->len);
        assert_true(k > 0);
        h->len += (size_t)k;
    }
}

/* The reply to request `id`, skipping notifications (counted in *notes). */
static json_t *h_reply(harness *h, json_int_t id, int *notes) {
    for (;;) {
        json_t *j = h_recv(h, 20000);
        if (!j) fail_msg("no reply to id %lld", (long long)id);
        if (json_object_get(j, "method")) {
            if (getenv("MCP_TEST_DEBUG")) { char *d = json_dumps(j, JSON_COMPACT); fprintf(stderr, "note: %.200s\n", d); free(d); }
            if (notes) (*notes)++;
            json_decref(j);
            continue;
        }
        json_t *jid = json_object_get(j, "id");
        if (!json_is_integer(jid) || json_integer_value(jid) != id) {
            char *s = json_dumps(j, JSON_COMPACT);
            fail_msg("reply for another id, want %lld: %.300s", (long long)id, s);
        }
        return j;
    }
}

static json_t *h_call(harness *h, json_int_t id, const char *method, const char *params) {
    char line[4096];
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\"%s%s}", (long long)id, method,
             params ? ",\"params\":" : "", params ? params : "");
    h_send(h, line);
    return h_reply(h, id, NULL);
}

static int error_code(const json_t *r) { return (int)json_integer_value(json_object_get(json_object_get(r, "error"), "code")); }
static const json_t *result(const json_t *r) { return json_object_get(r, "result"); }
static const json_t *structured(const json_t *r) { return json_object_get(result(r), "structuredContent"); }

static void h_init(harness *h) {
    json_t *r = h_call(h, 0, "initialize",
                       "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}");
    assert_string_equal(json_string_value(json_object_get(result(r), "protocolVersion")), "2025-06-18");
    json_decref(r);
    h_send(h, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_protocol_without_model(void **state) {
    (void)state;
    harness *h = h_start(false, 1);
    json_t *r = h_call(h, 1, "server/discover", "{}");
    assert_int_equal(error_code(r), MCP_METHOD_NOT_FOUND);
    json_decref(r);
    r = h_call(h, 2, "tools/list", NULL);
    assert_int_equal(error_code(r), MCP_INVALID_REQUEST);   /* before initialize */
    json_decref(r);
    h_init(h);
    r = h_call(h, 3, "tools/list", NULL);
    assert_int_equal(json_array_size(json_object_get(result(r), "tools")), 9);
    json_decref(r);
    r = h_call(h, 4, "tools/call", "{\"name\":\"get_emotion\"}");
    assert_string_equal(json_string_value(json_object_get(structured(r), "quadrant")), "excited");
    json_decref(r);
    r = h_call(h, 5, "tools/call", "{\"name\":\"generate\",\"arguments\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}");
    assert_true(json_is_true(json_object_get(result(r), "isError")));
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(json_object_get(result(r), "content"), 0), "text")),
                           "no model is loaded"));
    json_decref(r);
    r = h_call(h, 6, "tools/call", "{\"name\":\"nope\"}");
    assert_int_equal(error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = h_call(h, 7, "resources/read", "{\"uri\":\"emotion://nope\"}");
    assert_int_equal(error_code(r), MCP_RESOURCE_NOT_FOUND);
    json_decref(r);
    /* notifications and responses get no reply: the next message is the ping's */
    h_send(h, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/whatever\"}");
    h_send(h, "{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{}}");
    h_send(h, "   ");
    r = h_call(h, 8, "ping", NULL);
    assert_non_null(result(r));
    json_decref(r);
    h_stop(h);
}

static void test_stop_without_eof(void **state) {
    (void)state;
    harness *h = h_start(false, 1);
    h_init(h);
    elpis_mcp_stop(h->m);   /* e.g. from a SIGTERM handler */
    pthread_join(h->thread, NULL);
    assert_int_equal(h->rc, ELPIS_OK);
    h->thread = pthread_self();
    /* h_stop would join again: tear down by hand */
    elpis_mcp_free(h->m);
    elpis_emotion_free(h->emo);
    for (int i = 0; i < 2; i++) { close(h->in[i]); close(h->out[i]); }
    free(h);
}

#define GEN(maxt, extra) \
    "{\"name\":\"generate\",\"arguments\":{\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]," \
    "\"max_tokens\":" #maxt ",\"temperature\":0" extra "}"

static void test_generate_and_progress(void **state) {
    (void)state;
    harness *h = h_start(true, 2);
    h_init(h);
    h_send(h, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":" GEN(600, ",\"ignore_eos\":true") ",\"_meta\":{\"progressToken\":\"t\"}}}");
    int notes = 0;
    json_t *r = h_reply(h, 1, &notes);
    assert_true(notes >= 1);
    const json_t *s = structured(r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "usage"), "completion_tokens")), 600);
    assert_string_equal(json_string_value(json_object_get(s, "finish_reason")), "length");
    assert_true(json_real_value(json_object_get(json_object_get(s, "modulated_params"), "temperature")) == 0.0);
    json_decref(r);
    h_stop(h);
}

static void test_cancel_sends_nothing(void **state) {
    (void)state;
    harness *h = h_start(true, 1);
    h_init(h);
    h_send(h, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":" GEN(900, ",\"ignore_eos\":true") ",\"_meta\":{\"progressToken\":5}}}");
    json_t *n = h_recv(h, 20000);   /* the first progress: it is running */
    assert_non_null(n);
    assert_string_equal(json_string_value(json_object_get(n, "method")), "notifications/progress");
    json_decref(n);
    h_send(h, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":5,\"reason\":\"t\"}}");
    json_t *r = h_call(h, 6, "ping", NULL);   /* skips progress already in flight */
    json_decref(r);
    for (json_t *j; (j = h_recv(h, 300));) {   /* nothing more: no progress, no response for 5 */
        char *s = json_dumps(j, JSON_COMPACT);
        fail_msg("unexpected message after cancel: %.200s", s);
    }
    elpis_sched_stats st;
    elpis_sched_get_stats(h->sched, &st);
    assert_int_equal(st.cancelled[ELPIS_CANCEL_USER], 1);
    assert_int_equal(st.n_running, 0);
    h_stop(h);
}

static void test_streams_and_eof_in_flight(void **state) {
    (void)state;
    harness *h = h_start(true, 2);
    h_init(h);
    char id[64] = "";
    for (int i = 0; i < 4; i++) {   /* four long streams; two generates */
        json_t *r = h_call(h, 10 + i, "tools/call",
                           "{\"name\":\"generate_stream_start\",\"arguments\":{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                           "\"max_tokens\":900,\"ignore_eos\":true}}");
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(structured(r), "stream_id")));
        json_decref(r);
    }
    char params[256];
    snprintf(params, sizeof params, "{\"name\":\"generate_stream_read\",\"arguments\":{\"stream_id\":\"%s\"}}", id);
    json_t *r = h_call(h, 20, "tools/call", params);
    assert_false(json_is_true(json_object_get(structured(r), "is_complete")));
    json_decref(r);
    snprintf(params, sizeof params, "{\"name\":\"generate_stream_cancel\",\"arguments\":{\"stream_id\":\"%s\"}}", id);
    r = h_call(h, 21, "tools/call", params);
    assert_string_equal(json_string_value(json_object_get(structured(r), "status")), "cancelled");
    json_decref(r);
    h_send(h, "{\"jsonrpc\":\"2.0\",\"id\":30,\"method\":\"tools/call\",\"params\":" GEN(900, ",\"ignore_eos\":true") "}");
    h_send(h, "{\"jsonrpc\":\"2.0\",\"id\":31,\"method\":\"tools/call\",\"params\":" GEN(900, ",\"ignore_eos\":true") "}");
    h_stop(h);   /* EOF with three streams and two calls running: all cancelled, all freed (LSan) */
}

/* The memory tools (issue 7) through tools/list and tools/call, on a store
 * without an embedder (keywords only). Without a store they do not exist. */
static void test_memory_tools(void **state) {
    (void)state;
    elpis_error err = { 0 };
    harness *h = h_start(false, 1);
    h_init(h);
    json_t *r = h_call(h, 1, "tools/call", "{\"name\":\"store_memory\",\"arguments\":{\"content\":\"x\"}}");
    assert_int_equal(error_code(r), MCP_INVALID_PARAMS);   /* no store: unknown tool */
    json_decref(r);
    h_stop(h);

    elpis_db *db = NULL;
    elpis_memory_store *store = NULL;
    if (elpis_db_open_file(&db, ":memory:", &err) != ELPIS_OK || elpis_memory_store_open(&store, db, NULL, NULL, &err) != ELPIS_OK)
        fail_msg("store: %s", err.msg);
    h = h_start_with(false, 1, store);
    h_init(h);
    r = h_call(h, 2, "tools/list", NULL);
    const json_t *tools = json_object_get(result(r), "tools");
    assert_int_equal(json_array_size(tools), 17);
    for (size_t i = 9; i < 17; i++) {
        const json_t *t = json_array_get(tools, i);
        assert_true(elpis_memory_is_tool(json_string_value(json_object_get(t, "name"))));
        assert_non_null(json_object_get(json_object_get(t, "outputSchema"), "properties"));
    }
    json_decref(r);
    r = h_call(h, 3, "tools/call", "{\"name\":\"store_memory\",\"arguments\":{\"content\":\"The cat sat on the mat\",\"tags\":[\"user\"]}}");
    char id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(structured(r), "id")));
    assert_int_equal(strlen(id), ELPIS_MEMORY_ID_LEN);
    assert_string_equal(json_string_value(json_object_get(structured(r), "status")), "stored");
    json_decref(r);
    r = h_call(h, 4, "tools/call", "{\"name\":\"store_memory\",\"arguments\":{}}");   /* schema: content required */
    assert_true(json_is_true(json_object_get(result(r), "isError")));
    json_decref(r);
    r = h_call(h, 5, "tools/call", "{\"name\":\"search_memories\",\"arguments\":{\"query\":\"cat\"}}");
    const json_t *hits = json_object_get(structured(r), "results");
    assert_int_equal(json_array_size(hits), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(hits, 0), "id")), id);
    json_decref(r);
    r = h_call(h, 6, "tools/call", "{\"name\":\"get_memory_stats\"}");
    assert_int_equal(json_integer_value(json_object_get(structured(r), "total_memories")), 1);
    json_decref(r);
    char params[256];
    snprintf(params, sizeof params, "{\"name\":\"delete_memory\",\"arguments\":{\"memory_id\":\"%s\"}}", id);
    r = h_call(h, 7, "tools/call", params);
    assert_true(json_is_true(json_object_get(structured(r), "deleted")));
    json_decref(r);
    r = h_call(h, 8, "tools/call", params);
    assert_true(json_is_false(json_object_get(structured(r), "deleted")));
    json_decref(r);
    h_stop(h);
    elpis_memory_store_close(store);
    elpis_db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_without_model),
        cmocka_unit_test(test_stop_without_eof),
        cmocka_unit_test(test_memory_tools),
        cmocka_unit_test(test_generate_and_progress),
        cmocka_unit_test(test_cancel_sends_nothing),
        cmocka_unit_test(test_streams_and_eof_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
