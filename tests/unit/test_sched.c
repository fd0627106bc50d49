/* test_sched.c -- the scheduler's promises, on the real stories260K model.
 * Run under TSan too (make test-tsan): every request is driven from the test
 * thread while the scheduler thread computes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/sched.h"
#include "elpis/tokenizer.h"

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

static elpis_sched *new_sched(int parallel, int queue, void (*tweak)(elpis_sched_params *)) {
    elpis_sched_params p = elpis_sched_default_params();
    p.n_parallel = parallel;
    p.n_queue = queue;
    p.n_ctx = 512;
    p.n_threads = 2;
    if (tweak) tweak(&p);
    elpis_sched *s = NULL;
    elpis_error err = { 0 };
    if (elpis_sched_new(&s, g_model, &p, &err) != ELPIS_OK) fail_msg("sched_new: %s", err.msg);
    return s;
}

typedef struct req_opts {
    const char *prompt;
    int max_tokens;
    const char *stop;
    const char *session;
    bool ignore_eos;
    int repeat_prompt;  /* make a long prompt by repeating it */
    const float *steering;
} req_opts;

static elpis_request *make_req(elpis_sched *s, req_opts o) {
    elpis_tokens t = { 0 };
    elpis_error err = { 0 };
    for (int i = 0; i < (o.repeat_prompt ? o.repeat_prompt : 1); i++)
        assert_int_equal(elpis_tokenize(g_model->vocab, o.prompt, strlen(o.prompt), i == 0, false, &t, &err), ELPIS_OK);
    elpis_req_params p = { .prompt = t.ids, .n_prompt = t.n, .sampling = elpis_sampler_defaults(),
                           .max_tokens = o.max_tokens, .session = o.session, .ignore_eos = o.ignore_eos,
                           .steering = o.steering };
    p.sampling.temperature = 0;
    const char *stops[1] = { o.stop };
    if (o.stop) { p.stop = stops; p.n_stop = 1; }
    elpis_request *r = elpis_request_new(s, &p, &err);
    if (!r) fail_msg("request_new: %s", err.msg);
    elpis_tokens_free(&t);
    return r;
}

static elpis_request *submit(elpis_sched *s, req_opts o) {
    elpis_request *r = make_req(s, o);
    elpis_error err = { 0 };
    if (elpis_sched_submit(s, r, &err) != ELPIS_OK) fail_msg("submit: %s", err.msg);
    return r;
}

/* Read everything until the request is final; returns malloc'd text. */
static char *drain_text(elpis_request *r, elpis_req_status *st) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (int spins = 0; spins < 200000; spins++) {
        size_t n = elpis_request_read(r, buf + len, cap - 1 - len, st);
        len += n;
        if (n == 0 && elpis_req_state_final(st->state)) break;
        if (n == 0) usleep(200);
    }
    assert_true(elpis_req_state_final(st->state));
    buf[len] = 0;
    return buf;
}

static void wait_state(elpis_request *r, elpis_req_state want) {
    elpis_req_status st;
    char tmp[256];
    for (int i = 0; i < 20000; i++) {
        elpis_request_read(r, tmp, 0, &st);
        if (st.state == want || elpis_req_state_final(st.state)) break;
        usleep(100);
    }
    assert_int_equal(st.state, want);
}

static void expect_idle(elpis_sched *s) {
    elpis_sched_stats st;
    for (int i = 0; i < 2000; i++) {   /* the scheduler publishes stats right after releasing */
        elpis_sched_get_stats(s, &st);
        if (st.n_running == 0 && st.n_queued == 0 && st.kv_cells_used == 0) break;
        usleep(500);
    }
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_queued, 0);
    assert_int_equal(st.kv_cells_used, 0);
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_greedy_matches_reference(void **state) {
    (void)state;
    elpis_sched *s = new_sched(2, 4, NULL);
    elpis_request *r = submit(s, (req_opts){ .prompt = "Once upon a time", .max_tokens = 30 });
    elpis_req_status st;
    char *text = drain_text(r, &st);
    assert_int_equal(st.state, ELPIS_REQ_DONE);
    assert_int_equal(st.finish, ELPIS_FINISH_LENGTH);
    assert_int_equal(st.n_generated, 30);
    const char *want = ", there was a little girl named Lily. She loved to play outside in the park.";
    if (strncmp(text, want, strlen(want)) != 0) fail_msg("got '%s'", text);
    assert_true(st.t_first_token_ms >= st.t_submit_ms && st.t_end_ms >= st.t_first_token_ms);
    free(text);
    elpis_request_unref(r);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_batch_invariance(void **state) {
    (void)state;
    static const char *others[] = { "The cat", "Tom and Sue went", "A little bird", "One day", "The sun was",
                                    "There was a boy", "Lily liked" };
    elpis_sched *s = new_sched(8, 8, NULL);
    req_opts main_req = { .prompt = "Once upon a time", .max_tokens = 80, .ignore_eos = true };
    elpis_req_status st;
    elpis_request *r = submit(s, main_req);
    char *alone = drain_text(r, &st);
    elpis_request_unref(r);
    const int counts[] = { 1, 3, 7 };
    for (size_t c = 0; c < 3; c++) {
        elpis_request *o[7];
        for (int k = 0; k < counts[c]; k++)
            o[k] = submit(s, (req_opts){ .prompt = others[k], .max_tokens = 40 + 7 * k, .ignore_eos = true });
        r = submit(s, main_req);
        char *with = drain_text(r, &st);
        if (strcmp(alone, with) != 0) fail_msg("text differs with %d other streams:\n%s\n---\n%s", counts[c], alone, with);
        free(with);
        elpis_request_unref(r);
        for (int k = 0; k < counts[c]; k++) { free(drain_text(o[k], &st)); elpis_request_unref(o[k]); }
    }
    free(alone);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_cancel_running_and_queued(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 4, NULL);
    elpis_request *a = submit(s, (req_opts){ .prompt = "Once upon a time", .max_tokens = 100000, .ignore_eos = true });
    elpis_request *b = submit(s, (req_opts){ .prompt = "The cat", .max_tokens = 10 });
    wait_state(a, ELPIS_REQ_DECODE);
    /* b waits for the only slot; cancelling it removes it from the queue */
    elpis_request_cancel(b, ELPIS_CANCEL_USER);
    assert_true(elpis_request_wait(b, 2000));
    elpis_req_status st;
    free(drain_text(b, &st));
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    assert_int_equal(st.cancel_reason, ELPIS_CANCEL_USER);
    assert_int_equal(st.n_generated, 0);
    /* a is still running; cancel it mid-decode */
    elpis_request_read(a, (char[1]){ 0 }, 0, &st);
    assert_int_equal(st.state, ELPIS_REQ_DECODE);
    elpis_request_cancel(a, ELPIS_CANCEL_CLIENT);
    elpis_request_cancel(a, ELPIS_CANCEL_USER);   /* the first reason wins */
    assert_true(elpis_request_wait(a, 2000));
    free(drain_text(a, &st));
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    assert_int_equal(st.cancel_reason, ELPIS_CANCEL_CLIENT);
    expect_idle(s);
    elpis_sched_stats ss;
    elpis_sched_get_stats(s, &ss);
    assert_int_equal(ss.cancelled[ELPIS_CANCEL_CLIENT], 1);
    assert_int_equal(ss.cancelled[ELPIS_CANCEL_USER], 1);
    elpis_request_unref(a);
    elpis_request_unref(b);
    elpis_sched_free(s);
}

static void small_chunks(elpis_sched_params *p) { p->prefill_chunk = 4; p->n_ctx = 2048; }

static void test_cancel_during_prefill(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 1, small_chunks);
    elpis_request *r = submit(s, (req_opts){ .prompt = "Once upon a time there was a dog. ", .repeat_prompt = 100, .max_tokens = 5 });
    wait_state(r, ELPIS_REQ_PREFILL);
    elpis_request_cancel(r, ELPIS_CANCEL_CLIENT);
    assert_true(elpis_request_wait(r, 2000));
    elpis_req_status st;
    free(drain_text(r, &st));
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    assert_int_equal(st.n_generated, 0);
    expect_idle(s);
    elpis_request_unref(r);
    elpis_sched_free(s);
}

static void test_admission_control(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 1, NULL);
    elpis_request *a = submit(s, (req_opts){ .prompt = "Once", .max_tokens = 100000, .ignore_eos = true });
    elpis_request *b = submit(s, (req_opts){ .prompt = "The", .max_tokens = 3 });
    elpis_request *c = make_req(s, (req_opts){ .prompt = "A", .max_tokens = 3 });
    elpis_error err = { 0 };
    assert_int_equal(elpis_sched_submit(s, c, &err), ELPIS_ERANGE);
    assert_non_null(strstr(err.msg, "queue"));
    elpis_request_cancel(a, ELPIS_CANCEL_USER);
    elpis_req_status st;
    free(drain_text(b, &st));
    assert_int_equal(st.state, ELPIS_REQ_DONE);
    assert_int_equal(elpis_sched_submit(s, c, &err), ELPIS_OK);   /* room again */
    free(drain_text(c, &st));
    assert_int_equal(st.state, ELPIS_REQ_DONE);
    elpis_request_unref(a); elpis_request_unref(b); elpis_request_unref(c);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_prefix_reuse(void **state) {
    (void)state;
    elpis_sched *s = new_sched(2, 2, NULL);
    elpis_req_status st;
    req_opts o = { .prompt = "Once upon a time, there was a little girl named Lily.", .max_tokens = 20, .session = "s1" };
    elpis_request *a = submit(s, o);
    char *first = drain_text(a, &st);
    assert_int_equal(st.n_cached, 0);
    elpis_request *b = submit(s, o);
    char *second = drain_text(b, &st);
    assert_int_equal(st.n_cached, st.n_prompt - 1);   /* all but the last prompt token reused */
    assert_string_equal(first, second);
    elpis_sched_stats ss;
    elpis_sched_get_stats(s, &ss);
    assert_true(ss.kv_cells_cached > 0);
    free(first); free(second);
    elpis_request_unref(a); elpis_request_unref(b);
    expect_idle(s);
    elpis_sched_free(s);
}

/* Cached cells were computed under some steering vector: only a request
 * with the same vector may reuse them, or a steered stream would not match
 * its own single-stream output (issue 6). */
static void test_prefix_reuse_keyed_on_steering(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 2, NULL);
    size_t n = (size_t)g_model->hp.n_layer * (size_t)g_model->hp.n_embd;
    float *steer = calloc(n, sizeof *steer);
    assert_non_null(steer);
    for (size_t i = (size_t)g_model->hp.n_embd; i < n; i++) steer[i] = (i % 3 == 0) ? 2.0f : -1.0f;
    req_opts plain = { .prompt = "Once upon a time, there was a little girl named Lily.", .max_tokens = 24, .session = "s" };
    req_opts steered = plain;
    steered.steering = steer;
    elpis_req_status st;
    char *text[4];
    int32_t cached[4];
    req_opts order[4] = { steered, plain, steered, steered };
    for (int i = 0; i < 4; i++) {
        elpis_request *r = submit(s, order[i]);
        text[i] = drain_text(r, &st);
        cached[i] = st.n_cached;
        elpis_request_unref(r);
    }
    assert_int_equal(cached[0], 0);
    assert_int_equal(cached[1], 0);                  /* the cells were steered, this request is not */
    assert_int_equal(cached[2], 0);                  /* and now they are not steered */
    assert_int_equal(cached[3], st.n_prompt - 1);    /* same vector: reused */
    assert_string_not_equal(text[0], text[1]);       /* the vector does change the output */
    assert_string_equal(text[0], text[2]);
    assert_string_equal(text[0], text[3]);
    for (int i = 0; i < 4; i++) free(text[i]);
    free(steer);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_stop_string_and_length(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 1, NULL);
    elpis_req_status st;
    elpis_request *r = submit(s, (req_opts){ .prompt = "Once upon a time", .max_tokens = 200, .stop = "Lily" });
    char *text = drain_text(r, &st);
    assert_int_equal(st.finish, ELPIS_FINISH_STOP);
    assert_string_equal(text, ", there was a little girl named ");
    free(text);
    elpis_request_unref(r);
    elpis_sched_free(s);
}

static void tiny_out(elpis_sched_params *p) { p->out_capacity = 4096; p->stall_ms = 300; p->n_ctx = 2048; }

static void test_backpressure_and_stall(void **state) {
    (void)state;
    elpis_sched *s = new_sched(2, 2, tiny_out);
    elpis_request *slow = submit(s, (req_opts){ .prompt = "Once upon a time", .max_tokens = 100000, .ignore_eos = true });
    elpis_request *fast = submit(s, (req_opts){ .prompt = "The cat", .max_tokens = 60, .ignore_eos = true });
    elpis_req_status st;
    free(drain_text(fast, &st));   /* the other stream is not held up by the stalled reader */
    assert_int_equal(st.state, ELPIS_REQ_DONE);
    /* never read: it pauses when its buffer fills, then is cancelled after
     * stall_ms. The bound is generous: this is not a speed test. */
    assert_true(elpis_request_wait(slow, 300000));
    elpis_request_read(slow, (char[1]){ 0 }, 0, &st);
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    assert_int_equal(st.cancel_reason, ELPIS_CANCEL_STALL);
    assert_true(st.n_generated < 4096);            /* it paused when its buffer filled */
    elpis_request_unref(slow); elpis_request_unref(fast);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_drain_and_shutdown(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 2, NULL);
    elpis_request *a = submit(s, (req_opts){ .prompt = "Once", .max_tokens = 100000, .ignore_eos = true });
    wait_state(a, ELPIS_REQ_DECODE);
    elpis_sched_drain(s);
    elpis_req_status st;
    free(drain_text(a, &st));
    assert_int_equal(st.state, ELPIS_REQ_DONE);
    assert_int_equal(st.finish, ELPIS_FINISH_LENGTH);
    elpis_request *b = make_req(s, (req_opts){ .prompt = "The", .max_tokens = 3 });
    elpis_error err = { 0 };
    assert_int_equal(elpis_sched_submit(s, b, &err), ELPIS_ECANCELLED);
    elpis_request_unref(a); elpis_request_unref(b);
    elpis_sched_free(s);

    /* freeing a scheduler with live requests cancels them; they stay readable */
    s = new_sched(1, 2, NULL);
    a = submit(s, (req_opts){ .prompt = "Once", .max_tokens = 100000, .ignore_eos = true });
    b = submit(s, (req_opts){ .prompt = "The", .max_tokens = 100000, .ignore_eos = true });
    wait_state(a, ELPIS_REQ_DECODE);
    elpis_sched_free(s);
    elpis_request_read(a, (char[1]){ 0 }, 0, &st);
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    assert_int_equal(st.cancel_reason, ELPIS_CANCEL_SHUTDOWN);
    elpis_request_read(b, (char[1]){ 0 }, 0, &st);
    assert_int_equal(st.state, ELPIS_REQ_CANCELLED);
    elpis_request_unref(a); elpis_request_unref(b);
}

static void test_bad_requests(void **state) {
    (void)state;
    elpis_sched *s = new_sched(1, 1, NULL);
    elpis_error err = { 0 };
    int32_t bad[2] = { 1, 99999 };
    elpis_req_params p = { .prompt = bad, .n_prompt = 2, .sampling = elpis_sampler_defaults() };
    assert_null(elpis_request_new(s, &p, &err));
    assert_non_null(strstr(err.msg, "vocabulary"));
    p.n_prompt = 0;
    assert_null(elpis_request_new(s, &p, &err));
    assert_non_null(strstr(err.msg, "empty"));
    int32_t *big = calloc(600, sizeof *big);
    p.prompt = big;
    p.n_prompt = 600;
    assert_null(elpis_request_new(s, &p, &err));
    assert_non_null(strstr(err.msg, "context"));
    free(big);
    p.prompt = bad; p.n_prompt = 1;
    p.sampling.top_p = 2;
    assert_null(elpis_request_new(s, &p, &err));
    assert_non_null(strstr(err.msg, "top_p"));
    elpis_sched_free(s);
}


/* Cancels landing mid-step abandon the step between layers (the cancelled
 * request's slot is freed at the next step, not after the whole step) and
 * the step runs again for the others: their text must not change. A
 * stream of short requests is cancelled from this thread while three long
 * ones decode; the test keeps going until several steps were abandoned. */
static void test_abandoned_steps_change_nothing(void **state) {
    (void)state;
    elpis_sched *s = new_sched(4, 4, small_chunks);
    static const char *prompts[] = { "Once upon a time", "The cat", "Tom and Sue went" };
    char *alone[3];
    elpis_req_status st;
    for (int k = 0; k < 3; k++) {
        elpis_request *r = submit(s, (req_opts){ .prompt = prompts[k], .max_tokens = 300, .ignore_eos = true });
        alone[k] = drain_text(r, &st);
        elpis_request_unref(r);
    }
    elpis_sched_stats before, after;
    elpis_sched_get_stats(s, &before);
    for (int round = 0; round < 20; round++) {
        elpis_request *r[3];
        for (int k = 0; k < 3; k++) r[k] = submit(s, (req_opts){ .prompt = prompts[k], .max_tokens = 300, .ignore_eos = true });
        for (int i = 0; i < 40; i++) {
            elpis_request *x = submit(s, (req_opts){ .prompt = "A little bird sang a song about the sun and the moon", .max_tokens = 1000, .ignore_eos = true });
            wait_state(x, ELPIS_REQ_DECODE);
            usleep(100 + (unsigned)(i * 37 % 400));
            elpis_request_cancel(x, ELPIS_CANCEL_USER);
            assert_true(elpis_request_wait(x, 5000));
            free(drain_text(x, &st));
            elpis_request_unref(x);
        }
        for (int k = 0; k < 3; k++) {
            char *with = drain_text(r[k], &st);
            if (strcmp(alone[k], with) != 0) fail_msg("stream %d changed around abandoned steps:\n%s\n---\n%s", k, alone[k], with);
            free(with);
            elpis_request_unref(r[k]);
        }
        elpis_sched_get_stats(s, &after);
        if (after.steps_abandoned - before.steps_abandoned >= 5) break;
    }
    if (after.steps_abandoned - before.steps_abandoned < 5)
        fail_msg("only %lld steps were abandoned in 20 rounds of cancels: the between-layer check is not working",
                 (long long)(after.steps_abandoned - before.steps_abandoned));
    print_message("abandoned steps: %lld\n", (long long)(after.steps_abandoned - before.steps_abandoned));
    for (int k = 0; k < 3; k++) free(alone[k]);
    expect_idle(s);
    elpis_sched_free(s);
}

static void test_many_with_random_cancels(void **state) {
    (void)state;
    elpis_sched *s = new_sched(4, 64, NULL);
    enum { N = 40 };
    elpis_request *r[N];
    unsigned seed = 12345;
    for (int i = 0; i < N; i++) {
        r[i] = submit(s, (req_opts){ .prompt = i % 2 ? "Once upon a time" : "The cat sat", .max_tokens = 20 + i, .ignore_eos = true });
        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 3 == 0) elpis_request_cancel(r[i], ELPIS_CANCEL_CLIENT);
    }
    int done = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        elpis_req_status st;
        free(drain_text(r[i], &st));
        done += st.state == ELPIS_REQ_DONE;
        cancelled += st.state == ELPIS_REQ_CANCELLED;
        elpis_request_unref(r[i]);
    }
    assert_int_equal(done + cancelled, N);
    assert_true(cancelled > 0 && done > 0);
    expect_idle(s);
    elpis_sched_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_reference),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_cancel_running_and_queued),
        cmocka_unit_test(test_cancel_during_prefill),
        cmocka_unit_test(test_admission_control),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_prefix_reuse_keyed_on_steering),
        cmocka_unit_test(test_stop_string_and_length),
        cmocka_unit_test(test_backpressure_and_stall),
        cmocka_unit_test(test_drain_and_shutdown),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_many_with_random_cancels),
        cmocka_unit_test(test_abandoned_steps_change_nothing),
    };
    return cmocka_run_group_tests_name("sched", tests, setup, teardown);
}
