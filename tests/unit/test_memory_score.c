/* test_memory_score.c -- the pure functions of the memory system (no
 * database, no model): every formula of spec §7, RRF, emotion similarity,
 * clustering and the promotion rule, exchange importance (§5.2), the storage
 * filter (§5.3), query terms, recall formatting, and the config setter.
 * Expected numbers are worked out by hand from the spec's formulas.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/memory.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-9

static elpis_memory_config cfg(void) { return elpis_memory_default_config(); }

/* ---- salience, importance, recency ------------------------------------------------- */

static void test_salience(void **state) {
    (void)state;
    assert_float_equal(elpis_mem_salience(false, 1, 1), 0.5, EPS);
    assert_float_equal(elpis_mem_salience(true, 0, 0), 0.5, EPS);
    assert_float_equal(elpis_mem_salience(true, 1, 1), 1.0, EPS);
    assert_float_equal(elpis_mem_salience(true, -1, -1), 1.0, EPS);          /* magnitude, not sign */
    assert_float_equal(elpis_mem_salience(true, 0, 0.5), 0.7 * 0.75 + 0.3 * 0.5, EPS);
    assert_float_equal(elpis_mem_salience(true, 0.5, 0), 0.7 * 0.5 + 0.3 * 0.75, EPS);
}

static void test_importance(void **state) {
    (void)state;
    /* at creation: 0.3 + 0.4*salience, 0.5..0.7 */
    assert_float_equal(elpis_mem_importance(0.5, 0, 0), 0.5, EPS);
    assert_float_equal(elpis_mem_importance(1.0, 0, 0), 0.7, EPS);
    /* age decays linearly over a year, then stops at 0 */
    assert_float_equal(elpis_mem_importance(0.5, 182.5, 0), 0.2 + 0.15, EPS);
    assert_float_equal(elpis_mem_importance(0.5, 400, 0), 0.2, EPS);
    /* access saturates at 10 */
    assert_float_equal(elpis_mem_importance(0.5, 0, 5), 0.5 + 0.15, EPS);
    assert_float_equal(elpis_mem_importance(0.5, 0, 10), 0.8, EPS);
    assert_float_equal(elpis_mem_importance(0.5, 0, 1000), 0.8, EPS);
    /* promotion (0.6) at creation needs salience >= 0.75 */
    assert_true(elpis_mem_importance(0.75, 0, 0) >= 0.6 - EPS);
    assert_true(elpis_mem_importance(0.74, 0, 0) < 0.6);
}

static void test_recency(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    assert_float_equal(elpis_mem_recency(&c, 0), 1.0, EPS);
    assert_float_equal(elpis_mem_recency(&c, 10), pow(0.995, 10), EPS);
    assert_float_equal(elpis_mem_recency(&c, 720), pow(0.995, 720), EPS);
    assert_float_equal(elpis_mem_recency(&c, 5000), pow(0.995, 720), EPS);   /* capped at max_recency_hours */
    assert_float_equal(elpis_mem_recency(&c, -3), 1.0, EPS);                 /* clock skew: never above 1 */
    c.recency_decay_rate = 0.9;
    assert_float_equal(elpis_mem_recency(&c, 10), pow(0.9, 10), EPS);
    c.max_recency_hours = 5;
    assert_float_equal(elpis_mem_recency(&c, 10), pow(0.9, 5), EPS);
}

/* ---- quality --------------------------------------------------------------------------- */

static void test_quality_formula(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    elpis_strv none = { 0 };
    /* 500 chars, episodic, no role: factor 1; mix = .5*rel + .3*rec + .2*imp */
    double q = elpis_mem_quality(&c, 0.8, 10, 0.6, 500, ELPIS_MEM_EPISODIC, &none);
    assert_float_equal(q, 0.5 * 0.8 + 0.3 * pow(0.995, 10) + 0.2 * 0.6, 1e-12);
    /* weights are normalised */
    c.relevance_weight = 1, c.recency_weight = 0.6, c.importance_weight = 0.4;
    assert_float_equal(elpis_mem_quality(&c, 0.8, 10, 0.6, 500, ELPIS_MEM_EPISODIC, &none), q, 1e-12);
    /* length factor: (1-lw) + lw*min(len,max)/max */
    c = cfg();
    assert_float_equal(elpis_mem_quality_factor(&c, 100, ELPIS_MEM_EPISODIC, &none), 0.8 + 0.2 * 0.2, 1e-12);
    assert_float_equal(elpis_mem_quality_factor(&c, 5000, ELPIS_MEM_EPISODIC, &none), 1.0, 1e-12);
    c.length_weight = 1;   /* the original's pure len/max */
    assert_float_equal(elpis_mem_quality_factor(&c, 100, ELPIS_MEM_EPISODIC, &none), 0.2, 1e-12);
    c.max_content_length = 50;
    assert_float_equal(elpis_mem_quality_factor(&c, 100, ELPIS_MEM_EPISODIC, &none), 1.0, 1e-12);
    /* type and role factors multiply; capped at 2 */
    c = cfg();
    elpis_strv tags = { 0 };
    elpis_strv_push(&tags, "assistant");
    assert_float_equal(elpis_mem_quality_factor(&c, 500, ELPIS_MEM_SEMANTIC, &tags), 1.2 * 1.1, 1e-12);
    elpis_strv_free(&tags);
    elpis_strv_push(&tags, "user");
    assert_float_equal(elpis_mem_quality_factor(&c, 500, ELPIS_MEM_SEMANTIC, &tags), 1.2 * 0.9, 1e-12);
    c.semantic_type_factor = 5;
    assert_float_equal(elpis_mem_quality_factor(&c, 500, ELPIS_MEM_SEMANTIC, &tags), 2.0, 1e-12);
    elpis_strv_free(&tags);
}

static void test_quality_bounded(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    c.semantic_type_factor = 10;
    elpis_strv none = { 0 };
    for (double rel = -1; rel <= 3; rel += 0.5)
        for (double imp = 0; imp <= 1; imp += 0.25)
            for (double age = -10; age <= 2000; age += 500)
                for (int t = 0; t < 4; t++) {
                    double q = elpis_mem_quality(&c, rel, age, imp, (size_t)(age > 0 ? age : 0), (elpis_memory_type)t, &none);
                    assert_true(q >= 0 && q <= 1);
                }
    assert_float_equal(elpis_mem_quality(&c, 1, 0, 1, 500, ELPIS_MEM_SEMANTIC, &none), 1.0, EPS);
}

/* ---- emotion similarity and mood re-rank (the original's test values) -------------------- */

static void test_emotion_similarity(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    assert_float_equal(elpis_mem_emotion_similarity(&c, true, 0.5, 0.5, true, 0.5, 0.5), 1.0, EPS);   /* identical */
    double opp = elpis_mem_emotion_similarity(&c, true, 1, 1, true, -1, -1);
    assert_true(opp >= 0 && opp < 0.01);                                                               /* opposite ~0 */
    assert_float_equal(elpis_mem_emotion_similarity(&c, false, 0, 0, true, 1, 1), 0.5, EPS);         /* missing */
    assert_float_equal(elpis_mem_emotion_similarity(&c, true, 1, 1, false, 0, 0), 0.5, EPS);
    double partial = elpis_mem_emotion_similarity(&c, true, 0.5, 0.5, true, 0, 0);
    assert_true(partial >= 0.7 && partial <= 0.8);                                                     /* partial */
    assert_float_equal(partial, 1 - sqrt(0.5) / 2.83, 1e-12);
    c.use_angular_similarity = true;
    assert_true(elpis_mem_emotion_similarity(&c, true, 0.9, 0.8, true, 0.2, 0.2) > 0.9);             /* same direction */
    assert_float_equal(elpis_mem_emotion_similarity(&c, true, 1, 0, true, -1, 0), 0.0, EPS);
    assert_float_equal(elpis_mem_emotion_similarity(&c, true, 1, 0, true, 0, 1), 0.5, EPS);
    assert_float_equal(elpis_mem_emotion_similarity(&c, true, 0, 0, true, 1, 1), 0.5, EPS);          /* zero norm */
}

static void test_mood_rerank(void **state) {
    (void)state;
    assert_float_equal(elpis_mem_mood_rerank(0.8, 0.2, 0), 0.8, EPS);
    assert_float_equal(elpis_mem_mood_rerank(0.8, 0.2, 1), 0.2, EPS);
    assert_float_equal(elpis_mem_mood_rerank(0.8, 0.2, 0.3), 0.7 * 0.8 + 0.3 * 0.2, EPS);
}

/* ---- RRF and cosine ---------------------------------------------------------------------- */

static void test_rrf(void **state) {
    (void)state;
    assert_float_equal(elpis_mem_rrf(0, 0, 0.5, 0.5, 60), 1.0 / 61, EPS);
    assert_float_equal(elpis_mem_rrf(0, -1, 0.5, 0.5, 60), 0.5 / 61, EPS);
    assert_float_equal(elpis_mem_rrf(-1, 2, 0.5, 0.5, 60), 0.5 / 63, EPS);
    assert_float_equal(elpis_mem_rrf(-1, -1, 0.5, 0.5, 60), 0.0, EPS);
    /* ranks: better rank, higher score; both lists beat one */
    assert_true(elpis_mem_rrf(0, -1, 0.5, 0.5, 60) > elpis_mem_rrf(1, -1, 0.5, 0.5, 60));
    assert_true(elpis_mem_rrf(5, 5, 0.5, 0.5, 60) > elpis_mem_rrf(0, -1, 0.5, 0.5, 60));
    /* weights: the heavier list decides between crossed ranks */
    assert_true(elpis_mem_rrf(0, 3, 0.7, 0.3, 60) > elpis_mem_rrf(3, 0, 0.7, 0.3, 60));
    assert_true(elpis_mem_rrf(0, 3, 0.3, 0.7, 60) < elpis_mem_rrf(3, 0, 0.3, 0.7, 60));
    /* k: small k makes the top rank dominate */
    assert_float_equal(elpis_mem_rrf(0, -1, 1, 1, 0), 1.0, EPS);
    assert_true(elpis_mem_rrf(0, -1, 1, 1, 0) > elpis_mem_rrf(2, 2, 1, 1, 0) - 0.34);
}

static void test_cosine_edges(void **state) {
    (void)state;
    float a[3] = { 1, 0, 0 }, b[3] = { 0, 1, 0 }, z[3] = { 0, 0, 0 }, n[3] = { -2, 0, 0 }, s[3] = { 3, 0, 0 };
    assert_float_equal(elpis_mem_cosine(a, a, 3), 1.0, EPS);
    assert_float_equal(elpis_mem_cosine(a, b, 3), 0.0, EPS);
    assert_float_equal(elpis_mem_cosine(a, n, 3), -1.0, EPS);
    assert_float_equal(elpis_mem_cosine(a, s, 3), 1.0, EPS);   /* scale-free */
    assert_float_equal(elpis_mem_cosine(a, z, 3), 0.0, EPS);   /* zero vector: 0, not NaN */
    assert_float_equal(elpis_mem_cosine(z, z, 3), 0.0, EPS);
}

/* ---- query terms ---------------------------------------------------------------------- */

static void test_query_terms(void **state) {
    (void)state;
    elpis_strv t = { 0 };
    assert_int_equal(elpis_mem_query_terms("What did the Dog eat? The dog ate a bone, x y z!", &t), ELPIS_OK);
    /* "what", "did", "the", "a" are stop words; 1-char terms dropped; lowercased; deduplicated */
    assert_int_equal(t.n, 4);
    assert_string_equal(t.v[0], "dog");
    assert_string_equal(t.v[1], "eat");
    assert_string_equal(t.v[2], "ate");
    assert_string_equal(t.v[3], "bone");
    elpis_strv_free(&t);
    assert_int_equal(elpis_mem_query_terms("snake_case 42 \"quoted\" NEAR(a b) col:val caf\xc3\xa9", &t), ELPIS_OK);
    assert_int_equal(t.n, 7);
    assert_string_equal(t.v[0], "snake_case");
    assert_string_equal(t.v[1], "42");
    assert_string_equal(t.v[2], "quoted");
    assert_string_equal(t.v[3], "near");
    assert_string_equal(t.v[4], "col");
    assert_string_equal(t.v[5], "val");
    assert_string_equal(t.v[6], "caf\xc3\xa9");
    elpis_strv_free(&t);
    assert_int_equal(elpis_mem_query_terms("the and of ?!", &t), ELPIS_OK);
    assert_int_equal(t.n, 0);
    assert_true(elpis_mem_is_stopword("the"));
    assert_false(elpis_mem_is_stopword("zebra"));
}

/* ---- clustering and promotion ------------------------------------------------------------- */

static void test_cluster_similar_dissimilar(void **state) {
    (void)state;
    /* rows 0, 2 near each other; 1 and 3 orthogonal to them and to each other */
    float v[4][3] = { { 1, 0, 0 }, { 0, 1, 0 }, { 0.99f, 0.05f, 0 }, { 0, 0, 1 } };
    bool has[4] = { true, true, true, true };
    int32_t cl[4];
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 4, 3, 0.85, cl), 3);
    assert_int_equal(cl[0], 0);
    assert_int_equal(cl[2], 0);
    assert_int_equal(cl[1], 1);
    assert_int_equal(cl[3], 2);
    /* threshold 0 (and below) puts everything non-opposed together */
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 4, 3, -1, cl), 1);
    /* threshold 1: only exact direction matches */
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 4, 3, 1.0, cl), 4);
}

static void test_cluster_threshold_equality(void **state) {
    (void)state;
    float c = 0.85f, s = sqrtf(1 - 0.85f * 0.85f);
    float v[2][2] = { { 1, 0 }, { c, s } };
    bool has[2] = { true, true };
    int32_t cl[2];
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 2, 2, 0.85, cl), 1);   /* exactly at the threshold joins */
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 2, 2, 0.851, cl), 2);
}

static void test_cluster_running_centroid(void **state) {
    (void)state;
    /* Angles 0, t, 2t with cos t = 0.9: c is 0.9 to b but only cos 2t ~ 0.62
     * to a. The centroid of {a, b} sits at t/2, so c's cosine to it is
     * cos 1.5t ~ 0.78: c stays out at 0.85, and joins at 0.75 although it is
     * below 0.75 to the seed (the centroid, not the seed, decides). */
    double t = acos(0.9);
    float v[3][2] = { { 1, 0 }, { (float)cos(t), (float)sin(t) }, { (float)cos(2 * t), (float)sin(2 * t) } };
    bool has[3] = { true, true, true };
    int32_t cl[3];
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 3, 2, 0.85, cl), 2);
    assert_int_equal(cl[1], 0);
    assert_int_equal(cl[2], 1);
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 3, 2, 0.75, cl), 1);
    assert_true(elpis_mem_cosine(v[0], v[2], 2) < 0.75);   /* so it joined through the centroid */
}

static void test_cluster_missing_embeddings_and_empty(void **state) {
    (void)state;
    float v[3][2] = { { 1, 0 }, { 1, 0 }, { 1, 0 } };
    bool has[3] = { true, false, true };
    int32_t cl[3];
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 3, 2, 0.85, cl), 2);
    assert_int_equal(cl[0], 0);
    assert_int_equal(cl[1], 1);   /* no vector: a singleton */
    assert_int_equal(cl[2], 0);
    assert_int_equal(elpis_mem_cluster(NULL, NULL, 3, 0, 0.85, cl), 3);
    assert_int_equal(elpis_mem_cluster(&v[0][0], has, 0, 2, 0.85, cl), 0);   /* empty buffer */
}

static void test_promotion_rule(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    assert_true(elpis_mem_cluster_promotes(&c, 3, 0.6, 0.6));        /* equality promotes */
    assert_true(elpis_mem_cluster_promotes(&c, 1, 0.7, 0.6));        /* singletons allowed by default */
    assert_false(elpis_mem_cluster_promotes(&c, 3, 0.59, 0.6));
    assert_true(elpis_mem_cluster_promotes(&c, 3, 0.59, 0.5));       /* threshold argument is used */
    c.min_cluster_size = 2;
    assert_false(elpis_mem_cluster_promotes(&c, 1, 0.9, 0.6));
    assert_true(elpis_mem_cluster_promotes(&c, 2, 0.9, 0.6));
}

/* ---- exchange importance (§5.2) ------------------------------------------------------------- */

static char *repeat(char ch, size_t n) {
    char *s = malloc(n + 1);
    memset(s, ch, n);
    s[n] = 0;
    return s;
}

static void test_exchange_importance_factors(void **state) {
    (void)state;
    char *r201 = repeat('a', 201), *r501 = repeat('a', 501), *r1001 = repeat('a', 1001), *r200 = repeat('a', 200);
    elpis_exchange_score s;
    s = elpis_score_exchange("hi", r200, NULL, 0, false, 0, 0);
    assert_float_equal(s.total, 0, EPS);
    assert_float_equal(elpis_score_exchange("hi", r201, NULL, 0, false, 0, 0).length, 0.15, EPS);
    assert_float_equal(elpis_score_exchange("hi", r501, NULL, 0, false, 0, 0).length, 0.25, EPS);
    assert_float_equal(elpis_score_exchange("hi", r1001, NULL, 0, false, 0, 0).length, 0.35, EPS);
    assert_float_equal(elpis_score_exchange("hi", "```x```", NULL, 0, false, 0, 0).code, 0.25, EPS);
    assert_float_equal(elpis_score_exchange("hi", "```x``` ```y```", NULL, 0, false, 0, 0).code, 0.35, EPS);
    assert_float_equal(elpis_score_exchange("hi", "``` only one", NULL, 0, false, 0, 0).code, 0, EPS);
    const char *ok[3] = { "done", "fine", "all good" };
    const char *bad[1] = { "Traceback (most recent call last)" };
    assert_float_equal(elpis_score_exchange("hi", "", ok, 1, false, 0, 0).tools, 0.2, EPS);
    assert_float_equal(elpis_score_exchange("hi", "", ok, 3, false, 0, 0).tools, 0.3, EPS);
    assert_float_equal(elpis_score_exchange("hi", "", ok, 3, false, 0, 0).errors, 0, EPS);
    s = elpis_score_exchange("hi", "", bad, 1, false, 0, 0);
    assert_float_equal(s.errors, 0.2, EPS);
    assert_float_equal(s.total, 0.4, EPS);
    assert_float_equal(elpis_score_exchange("Please REMEMBER my name", "", NULL, 0, false, 0, 0).explicit_request, 0.4, EPS);
    assert_float_equal(elpis_score_exchange("keep in mind that I hate jazz", "", NULL, 0, false, 0, 0).total, 0.4, EPS);
    assert_float_equal(elpis_score_exchange("what time is it", "", NULL, 0, false, 0, 0).explicit_request, 0, EPS);
    assert_float_equal(elpis_score_exchange("x", "", NULL, 0, true, 0.8, 0).emotion, 0.25, EPS);
    assert_float_equal(elpis_score_exchange("x", "", NULL, 0, true, 0, -0.6).emotion, 0.15, EPS);
    assert_float_equal(elpis_score_exchange("x", "", NULL, 0, true, 0.5, 0.5).emotion, 0, EPS);   /* strictly above */
    assert_float_equal(elpis_score_exchange("x", "", NULL, 0, false, 0.9, 0.9).emotion, 0, EPS);
    free(r201);
    free(r501);
    free(r1001);
    free(r200);
}

static void test_exchange_importance_cap_and_threshold(void **state) {
    (void)state;
    char *r1001 = repeat('a', 1001);
    const char *bad[3] = { "error", "x", "y" };
    elpis_exchange_score s = elpis_score_exchange("remember this", r1001, bad, 3, true, 0.9, 0.9);
    assert_float_equal(s.length + s.tools + s.errors + s.explicit_request + s.emotion, 1.5, EPS);
    assert_float_equal(s.total, 1.0, EPS);   /* capped */
    /* 0.4 + 0.2 = 0.6: exactly the auto-store threshold */
    const char *fine[1] = { "ok" };
    s = elpis_score_exchange("don't forget", "", fine, 1, false, 0, 0);
    assert_float_equal(s.total, 0.6, EPS);
    assert_true(s.total >= ELPIS_AUTO_STORE_THRESHOLD - EPS);
    free(r1001);
}

/* ---- storage filter (§5.3) ------------------------------------------------------------------ */

static void test_storage_filter(void **state) {
    (void)state;
    elpis_storage_decision d;
    /* 1. too short */
    d = elpis_storage_filter("user", "I love pizza because it is tasty.");
    assert_false(d.store);
    /* 2. short, low-value word, no high-value pattern */
    d = elpis_storage_filter("user", "Thanks so much for the help with all of that, really great");
    assert_false(d.store);
    assert_string_equal(d.reason, "low-value pleasantry");
    /* ...but a high-value pattern rescues it, as semantic */
    d = elpis_storage_filter("user", "Thanks, I always drink my coffee black in the early morning hours");
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_SEMANTIC);
    /* 3. high value, long */
    d = elpis_storage_filter("assistant", "a recursion means a function that calls itself until a base case stops it");
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_SEMANTIC);
    /* 4. user statement without '?' -> episodic */
    d = elpis_storage_filter("user", "went to the market today and bought two fresh fish for dinner tonight");
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);
    /* low-value words match as substrings, as the original's `in`: "yesterday" holds "yes" */
    d = elpis_storage_filter("user", "went to the market yesterday and bought two fish for dinner");
    assert_false(d.store);
    /* short user question with a question word -> skip */
    d = elpis_storage_filter("user", "what was the name of that film we talked about yesterday afternoon?");
    assert_false(d.store);
    /* '?' but no question word -> falls through to episodic */
    d = elpis_storage_filter("user", "that film we talked about last week, the one with the robot?????");
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);
    /* long user question -> episodic */
    char long_q[260];
    memset(long_q, 'x', sizeof long_q);
    memcpy(long_q, "what ", 5);
    long_q[258] = '?';
    long_q[259] = 0;
    d = elpis_storage_filter("user", long_q);
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);
    /* 5. assistant: knowledge indicator (case-sensitive) -> semantic */
    d = elpis_storage_filter("assistant", "The file you asked about lives in the src directory of the repo");
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_SEMANTIC);
    d = elpis_storage_filter("assistant", "the file you asked about lives in the src directory of the repo");
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);   /* lowercase "the": no indicator, < 100 chars */
    char long_a[230];
    memset(long_a, 'y', sizeof long_a - 1);
    long_a[sizeof long_a - 1] = 0;
    d = elpis_storage_filter("assistant", long_a);
    assert_int_equal(d.type, ELPIS_MEM_SEMANTIC);
    /* 6. anything else: episodic (assistant 100..199 chars, other roles) */
    char mid[150];
    memset(mid, 'z', sizeof mid - 1);
    mid[sizeof mid - 1] = 0;
    d = elpis_storage_filter("assistant", mid);
    assert_true(d.store);
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);
    assert_string_equal(d.reason, "default");
    d = elpis_storage_filter("tool", mid);
    assert_int_equal(d.type, ELPIS_MEM_EPISODIC);
}

/* ---- formatting ------------------------------------------------------------------------------ */

static void test_format_recall(void **state) {
    (void)state;
    elpis_memory_hit h[2] = { 0 };
    char long_content[400];
    memset(long_content, 'c', sizeof long_content - 1);
    long_content[sizeof long_content - 1] = 0;
    char long_summary[350];
    memset(long_summary, 's', sizeof long_summary - 1);
    long_summary[sizeof long_summary - 1] = 0;
    h[0].mem.content = "short fact";
    h[0].mem.summary = "unused";
    h[0].mem.type = ELPIS_MEM_SEMANTIC;
    h[1].mem.content = long_content;   /* > 200: the summary is used, cut at 300 */
    h[1].mem.summary = long_summary;
    elpis_memory_results r = { h, 2 };
    elpis_buf b = { 0 };
    assert_int_equal(elpis_memory_format_recall(&r, &b), ELPIS_OK);
    assert_int_equal(strncmp(b.data, "[Relevant memories]\n1. [semantic] short fact\n2. [episodic] sss", 61), 0);
    const char *second = strstr(b.data, "2. [episodic] ") + 14;
    assert_int_equal(strlen(second), 303);
    assert_string_equal(second + 300, "...");
    elpis_buf_free(&b);

    elpis_buf c = { 0 }, s = { 0 };
    assert_int_equal(elpis_memory_format_exchange("hello", "hi there", &c, &s), ELPIS_OK);
    assert_string_equal(c.data, "User: hello...\n\nAssistant: hi there...");
    assert_string_equal(s.data, "hi there");
    elpis_buf_free(&c);
    elpis_buf_free(&s);
}

static void test_utf8_prefix(void **state) {
    (void)state;
    char *p = elpis_utf8_prefix("h\xc3\xa9llo", 2);   /* "hé" */
    assert_string_equal(p, "h\xc3\xa9");
    free(p);
    assert_int_equal(elpis_utf8_chars("h\xc3\xa9llo \xe2\x82\xac"), 7);
    p = elpis_utf8_prefix("abc", 10);
    assert_string_equal(p, "abc");
    free(p);
}

/* ---- config -------------------------------------------------------------------------------- */

static void test_config(void **state) {
    (void)state;
    elpis_memory_config c = cfg();
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_config_validate(&c, &err), ELPIS_OK);
    assert_float_equal(c.similarity_threshold, 0.85, EPS);
    assert_float_equal(c.importance_threshold, 0.6, EPS);
    assert_int_equal(c.buffer_threshold, 100);
    assert_int_equal(elpis_memory_config_set(&c, "vector_weight", "0.7", &err), ELPIS_OK);
    assert_float_equal(c.vector_weight, 0.7, EPS);
    assert_int_equal(elpis_memory_config_set(&c, "buffer_threshold", "250", &err), ELPIS_OK);
    assert_int_equal(c.buffer_threshold, 250);
    assert_int_equal(elpis_memory_config_set(&c, "use_angular_similarity", "true", &err), ELPIS_OK);
    assert_true(c.use_angular_similarity);
    assert_int_equal(elpis_memory_config_set(&c, "max_content_bytes", "1000", &err), ELPIS_OK);
    assert_int_equal(c.max_content_bytes, 1000);
    assert_int_equal(elpis_memory_config_set(&c, "vectorweight", "1", &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "vectorweight"));
    assert_int_equal(elpis_memory_config_set(&c, "emotion_weight", "1.5", &err), ELPIS_EINVAL);
    assert_int_equal(elpis_memory_config_set(&c, "buffer_threshold", "2.5", &err), ELPIS_EINVAL);
    assert_int_equal(elpis_memory_config_set(&c, "rrf_k", "abc", &err), ELPIS_EINVAL);
    assert_int_equal(elpis_memory_config_set(&c, "use_angular_similarity", "maybe", &err), ELPIS_EINVAL);
    /* every listed key is settable */
    for (const char *const *k = elpis_memory_config_keys(); *k; k++) {
        elpis_memory_config d = cfg();
        assert_int_equal(elpis_memory_config_set(&d, *k, strstr(*k, "angular") ? "false" : "1", &err), ELPIS_OK);
    }
    c = cfg();
    c.relevance_weight = c.recency_weight = c.importance_weight = 0;
    assert_int_equal(elpis_memory_config_validate(&c, &err), ELPIS_EINVAL);
    c = cfg();
    c.candidate_multiplier = 0;
    assert_int_equal(elpis_memory_config_validate(&c, &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "candidate_multiplier"));
}

static void test_names(void **state) {
    (void)state;
    elpis_memory_type t;
    elpis_memory_status s;
    assert_true(elpis_memory_type_parse("procedural", &t));
    assert_int_equal(t, ELPIS_MEM_PROCEDURAL);
    assert_false(elpis_memory_type_parse("Procedural", &t));
    assert_true(elpis_memory_status_parse("archived", &s));
    assert_int_equal(s, ELPIS_MEM_ARCHIVED);
    assert_false(elpis_memory_status_parse("consolidating", &s));
    assert_string_equal(elpis_memory_type_name(ELPIS_MEM_EMOTIONAL), "emotional");
    assert_string_equal(elpis_memory_status_name(ELPIS_MEM_LONG_TERM), "long_term");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_salience),
        cmocka_unit_test(test_importance),
        cmocka_unit_test(test_recency),
        cmocka_unit_test(test_quality_formula),
        cmocka_unit_test(test_quality_bounded),
        cmocka_unit_test(test_emotion_similarity),
        cmocka_unit_test(test_mood_rerank),
        cmocka_unit_test(test_rrf),
        cmocka_unit_test(test_cosine_edges),
        cmocka_unit_test(test_query_terms),
        cmocka_unit_test(test_cluster_similar_dissimilar),
        cmocka_unit_test(test_cluster_threshold_equality),
        cmocka_unit_test(test_cluster_running_centroid),
        cmocka_unit_test(test_cluster_missing_embeddings_and_empty),
        cmocka_unit_test(test_promotion_rule),
        cmocka_unit_test(test_exchange_importance_factors),
        cmocka_unit_test(test_exchange_importance_cap_and_threshold),
        cmocka_unit_test(test_storage_filter),
        cmocka_unit_test(test_format_recall),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
