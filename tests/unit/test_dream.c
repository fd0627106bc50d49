/* test_dream.c -- the pure rules of a dream (dream.h, spec §5.6):
 * quadrant -> theme and static queries, trajectory -> dynamic queries (the
 * original's BUG: they never fired; here they must), topic extraction,
 * memories per query, insight markers and the prompt's shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "elpis/dream.h"

static void assert_queries(const elpis_strv *got, const char *const *want, size_t n) {
    if (got->n != n) fail_msg("got %zu queries, want %zu (first: %s)", got->n, n, got->n ? got->v[0] : "-");
    for (size_t i = 0; i < n; i++)
        if (strcmp(got->v[i], want[i])) fail_msg("query %zu: got [%s], want [%s]", i, got->v[i], want[i]);
}

static void test_intentions(void **state) {
    (void)state;
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_FRUSTRATED)->theme, "resolution");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_DEPLETED)->theme, "restoration");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_EXCITED)->theme, "exploration");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_CALM)->theme, "synthesis");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_COUNT)->theme, "reflection");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_FRUSTRATED)->queries[0], "problems I solved");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_CALM)->queries[4], "insights");
    assert_string_equal(elpis_dream_intention_of(ELPIS_QUADRANT_DEPLETED)->queries[4], "why I do this");
    assert_ptr_equal(elpis_dream_intention_named("synthesis"), elpis_dream_intention_of(ELPIS_QUADRANT_CALM));
    assert_null(elpis_dream_intention_named("nightmare"));
}

static void test_dynamic_spiral_and_trend(void **state) {
    (void)state;
    elpis_emotion_trajectory t = { 0 };
    t.spiral_detected = true;
    t.spiral_direction = ELPIS_SPIRAL_ESCALATING;
    t.trend = ELPIS_TREND_DECLINING;
    elpis_strv q = { 0 };
    assert_int_equal(elpis_dream_dynamic_queries(&t, NULL, &q), ELPIS_OK);
    static const char *const want[] = { "grounding", "calm moments", "stability", "turning points" };
    assert_queries(&q, want, 4);   /* at most 4: the fifth (resilience) is cut */
    elpis_strv_free(&q);
}

static void test_dynamic_trend_peace_topics(void **state) {
    (void)state;
    elpis_emotion_trajectory t = { 0 };
    t.trend = ELPIS_TREND_IMPROVING;
    t.time_in_quadrant = 301;
    elpis_strv topics = { 0 }, q = { 0 };
    elpis_strv_push(&topics, "gardens");
    assert_int_equal(elpis_dream_dynamic_queries(&t, &topics, &q), ELPIS_OK);
    static const char *const want[] = { "keep momentum", "recent wins", "what brings peace", "experiences with gardens" };
    assert_queries(&q, want, 4);
    elpis_strv_free(&q);
    /* a spiral that was not detected, a stable trend, a short stay: topics only */
    t = (elpis_emotion_trajectory){ 0 };
    t.spiral_direction = ELPIS_SPIRAL_POSITIVE;
    t.time_in_quadrant = 300;
    assert_int_equal(elpis_dream_dynamic_queries(&t, &topics, &q), ELPIS_OK);
    static const char *const want2[] = { "experiences with gardens", "what I learned about gardens" };
    assert_queries(&q, want2, 2);
    elpis_strv_free(&q);
    elpis_strv_free(&topics);
}

static void test_dynamic_every_spiral(void **state) {
    (void)state;
    static const char *const first[] = { [ELPIS_SPIRAL_POSITIVE] = "progress", [ELPIS_SPIRAL_NEGATIVE] = "comfort",
                                         [ELPIS_SPIRAL_ESCALATING] = "grounding", [ELPIS_SPIRAL_WITHDRAWING] = "energy" };
    for (int d = ELPIS_SPIRAL_POSITIVE; d <= ELPIS_SPIRAL_WITHDRAWING; d++) {
        elpis_emotion_trajectory t = { 0 };
        t.spiral_detected = true;
        t.spiral_direction = (elpis_emotion_spiral)d;
        elpis_strv q = { 0 };
        assert_int_equal(elpis_dream_dynamic_queries(&t, NULL, &q), ELPIS_OK);
        assert_int_equal(q.n, 3);
        assert_string_equal(q.v[0], first[d]);
        elpis_strv_free(&q);
    }
    elpis_emotion_trajectory t = { 0 };
    t.trend = ELPIS_TREND_OSCILLATING;
    elpis_strv q = { 0 };
    elpis_dream_dynamic_queries(&t, NULL, &q);
    static const char *const want[] = { "balance", "stability", "patterns" };
    assert_queries(&q, want, 3);
    elpis_strv_free(&q);
}

static void test_topics(void **state) {
    (void)state;
    const char *texts[] = { "User: Tell me about Gardens and rivers, about the gardens!",
                            NULL, "Assistant: rivers flow; tiny; elephants123 are there; would about" };
    elpis_strv t = { 0 };
    assert_int_equal(elpis_dream_topics(texts, 3, 5, &t), ELPIS_OK);
    static const char *const want[] = { "gardens", "rivers", "assistant", "elephants123" };
    assert_queries(&t, want, 4);   /* "about", "would", "there" are stop words; <=4 chars are skipped */
    elpis_strv_free(&t);
    assert_int_equal(elpis_dream_topics(texts, 3, 2, &t), ELPIS_OK);
    assert_int_equal(t.n, 2);
    elpis_strv_free(&t);
}

static void test_per_query_and_insight(void **state) {
    (void)state;
    assert_int_equal(elpis_dream_per_query(5), 2);
    assert_int_equal(elpis_dream_per_query(9), 1);
    assert_int_equal(elpis_dream_per_query(20), 1);
    assert_int_equal(elpis_dream_per_query(0), 10);
    assert_true(elpis_dream_has_insight("Suddenly I REALIZED the river was a road"));
    assert_true(elpis_dream_has_insight("a pattern of light"));
    assert_true(elpis_dream_has_insight("what it all meant, its significance"));
    assert_false(elpis_dream_has_insight("the cat sat on the mat"));
    assert_false(elpis_dream_has_insight(NULL));
}

static void test_prompt(void **state) {
    (void)state;
    char longmem[400];
    memset(longmem, 'x', sizeof longmem - 1);
    longmem[sizeof longmem - 1] = 0;
    const char *mems[] = { "we fixed the parser", longmem };
    elpis_buf b = { 0 };
    const elpis_dream_intention *in = elpis_dream_intention_of(ELPIS_QUADRANT_CALM);
    assert_int_equal(elpis_dream_prompt(in, NULL, mems, 2, &b), ELPIS_OK);
    assert_non_null(strstr(b.data, "You are in a dream state, reflecting"));
    assert_non_null(strstr(b.data, "Theme for this dream: synthesis\n"));
    assert_non_null(strstr(b.data, "Memories surfacing:\n- we fixed the parser\n- xxx"));
    assert_non_null(strstr(b.data, "...\n\nYour dream:"));
    const char *line = strstr(b.data, "- xxx");
    assert_int_equal(strchr(line, '.') - line, 2 + ELPIS_DREAM_MEMORY_CHARS);   /* cut at 300 characters */
    b.len = 0;
    assert_int_equal(elpis_dream_prompt(in, "gardens", NULL, 0, &b), ELPIS_OK);
    assert_non_null(strstr(b.data, "Theme for this dream: gardens\n"));
    assert_non_null(strstr(b.data, "no memories surface"));
    elpis_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intentions),
        cmocka_unit_test(test_dynamic_spiral_and_trend),
        cmocka_unit_test(test_dynamic_trend_peace_topics),
        cmocka_unit_test(test_dynamic_every_spiral),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_per_query_and_insight),
        cmocka_unit_test(test_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
