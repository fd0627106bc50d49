/* test_memory.c -- the memory store on SQLite, without a model (vectors are
 * given explicitly, so every ranking below is computed by hand):
 *   - store / get / delete round trips, content limit, metadata, SQL text
 *     that must stay text, access counts on retrieval;
 *   - hybrid search: BM25 and vector candidates, archived rows hidden,
 *     non-hybrid mode, and EVERY retrieval weight in the config changing a
 *     ranking (the original left several unwired);
 *   - consolidation: clustering, promotion, archiving with links, skips,
 *     age filter, batch caps, min cluster size, threshold arguments;
 *   - should_consolidate, stats, the eight tools' JSON shapes, export/import
 *     (round trip, all-or-nothing), a second connection's writes seen by the
 *     vector cache, migrations and newer schemas, durability across kill -9.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/memory.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIM 4
#define T0 1.8e9   /* a fixed "now" for the injected clock (2027-01-15) */

static double g_now = T0;
static double test_clock(void *ud) {
    (void)ud;
    return g_now;
}

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct env {
    elpis_db *db;
    elpis_memory_store *s;
} env;

/* Test config: only relevance counts unless a test turns a knob. */
static elpis_memory_config plain_cfg(void) {
    elpis_memory_config c = elpis_memory_default_config();
    c.length_weight = 0;
    c.recency_weight = 0;
    c.importance_weight = 0;
    c.semantic_type_factor = 1;
    c.assistant_role_factor = c.user_role_factor = 1;
    return c;
}

static void env_open(env *e, const elpis_memory_config *c) {
    elpis_error err = { 0 };
    memset(e, 0, sizeof *e);
    if (elpis_db_open_file(&e->db, ":memory:", &err) != ELPIS_OK) fail_msg("db: %s", err.msg);
    if (elpis_memory_store_open(&e->s, e->db, c, NULL, &err) != ELPIS_OK) fail_msg("store: %s", err.msg);
    g_now = T0;
    elpis_memory_set_clock(e->s, test_clock, NULL);
}

/* Reopen the store on the same database with another config. */
static void env_reconfig(env *e, const elpis_memory_config *c) {
    elpis_error err = { 0 };
    elpis_memory_store_close(e->s);
    if (elpis_memory_store_open(&e->s, e->db, c, NULL, &err) != ELPIS_OK) fail_msg("store: %s", err.msg);
    elpis_memory_set_clock(e->s, test_clock, NULL);
}

static void env_close(env *e) {
    elpis_memory_store_close(e->s);
    elpis_db_close(e->db);
}

/* A unit vector at cosine c to e1 (in the e1/e2 plane). */
static void vec_cos(float v[DIM], double c) {
    v[0] = (float)c;
    v[1] = (float)sqrt(1 - c * c);
    v[2] = v[3] = 0;
}

typedef struct mem_spec {
    const char *content;
    double cos;                 /* to the query vector e1; < -1: no vector */
    elpis_memory_type type;
    const char *tag;            /* one tag or NULL */
    bool emo;
    double v, a;
    double age_h;               /* created this long before T0 */
} mem_spec;

static void add(env *e, const mem_spec *m, char id[ELPIS_MEMORY_ID_LEN + 1]) {
    float v[DIM];
    vec_cos(v, m->cos);
    const char *tags[1] = { m->tag };
    elpis_memory_input in = { .content = m->content, .type = m->type, .tags = tags, .n_tags = m->tag ? 1 : 0,
                              .has_emotion = m->emo, .valence = m->v, .arousal = m->a,
                              .embedding = m->cos >= -1 ? v : NULL, .embedding_dim = DIM };
    elpis_error err = { 0 };
    double saved = g_now;
    g_now = T0 - m->age_h * 3600;
    if (elpis_memory_add(e->s, &in, id, NULL, &err) != ELPIS_OK) fail_msg("add: %s", err.msg);
    g_now = saved;
}

static elpis_memory_results search(env *e, const char *q, int n, bool hybrid) {
    float qv[DIM] = { 1, 0, 0, 0 };
    elpis_memory_query mq = { .query = q, .n_results = n, .use_hybrid = hybrid, .emotion_weight = -1,
                              .query_embedding = qv, .query_dim = DIM, .no_access_bump = true };
    elpis_memory_results r = { 0 };
    elpis_error err = { 0 };
    if (elpis_memory_search(e->s, &mq, &r, &err) != ELPIS_OK) fail_msg("search: %s", err.msg);
    return r;
}

static elpis_memory_results search_mood(env *e, const char *q, int n, double v, double a, double w) {
    float qv[DIM] = { 1, 0, 0, 0 };
    elpis_memory_query mq = { .query = q, .n_results = n, .use_hybrid = true, .has_emotion = true, .valence = v,
                              .arousal = a, .emotion_weight = w, .query_embedding = qv, .query_dim = DIM,
                              .no_access_bump = true };
    elpis_memory_results r = { 0 };
    elpis_error err = { 0 };
    if (elpis_memory_search(e->s, &mq, &r, &err) != ELPIS_OK) fail_msg("search: %s", err.msg);
    return r;
}

/* The id of the top hit of a hybrid search for "zebra" (n results). */
static void top_of(env *e, int n, char out[ELPIS_MEMORY_ID_LEN + 1]) {
    elpis_memory_results r = search(e, "zebra", n, true);
    assert_true(r.n > 0);
    memcpy(out, r.hits[0].mem.id, ELPIS_MEMORY_ID_LEN + 1);
    elpis_memory_results_free(&r);
}

static void get(env *e, const char *id, elpis_memory *m) {
    bool found;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_get(e->s, id, m, &found, &err), ELPIS_OK);
    assert_true(found);
}

/* ---- round trips ------------------------------------------------------------------------ */

static void test_store_get_delete(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    const char *tags[2] = { "a", "b" };
    elpis_memory_input in = { .content = "The user likes green tea.", .type = ELPIS_MEM_SEMANTIC, .tags = tags,
                              .n_tags = 2, .has_emotion = true, .valence = 3, .arousal = -0.5,
                              .metadata_json = "{\"source\":\"chat\"}" };
    char id[ELPIS_MEMORY_ID_LEN + 1];
    double imp;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_add(e.s, &in, id, &imp, &err), ELPIS_OK);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '4');   /* uuid4 */
    double sal = elpis_mem_salience(true, 1, -0.5);   /* valence clamped to 1 */
    assert_float_equal(imp, 0.3 + 0.4 * sal, 1e-12);
    elpis_memory m;
    get(&e, id, &m);
    assert_string_equal(m.content, "The user likes green tea.");
    assert_string_equal(m.summary, "The user likes green tea.");
    assert_int_equal(m.type, ELPIS_MEM_SEMANTIC);
    assert_int_equal(m.status, ELPIS_MEM_SHORT_TERM);
    assert_int_equal(m.tags.n, 2);
    assert_string_equal(m.tags.v[1], "b");
    assert_true(m.emotion.present);
    assert_float_equal(m.emotion.valence, 1.0, 1e-12);
    assert_float_equal(m.emotion.arousal, -0.5, 1e-12);
    assert_string_equal(m.emotion.quadrant, "neutral");
    assert_float_equal(m.emotion.salience, sal, 1e-12);
    assert_float_equal(m.created_at, T0, 1e-3);
    assert_int_equal(m.access_count, 0);
    assert_string_equal(m.metadata_json, "{\"source\":\"chat\"}");
    elpis_memory_clear(&m);

    bool found = true, deleted = false;
    assert_int_equal(elpis_memory_delete(e.s, id, &deleted, &err), ELPIS_OK);
    assert_true(deleted);
    assert_int_equal(elpis_memory_get(e.s, id, &m, &found, &err), ELPIS_OK);
    assert_false(found);
    assert_int_equal(elpis_memory_delete(e.s, id, &deleted, &err), ELPIS_OK);
    assert_false(deleted);
    /* gone from the FTS index too */
    elpis_memory_results r = search(&e, "green tea", 5, true);
    assert_int_equal(r.n, 0);
    elpis_memory_results_free(&r);
    env_close(&e);
}

/* A caller may name the memory in advance (a dream answers with its id
 * before the worker stores it); a malformed id is ignored, not stored. */
static void test_add_with_given_id(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char given[ELPIS_MEMORY_ID_LEN + 1], id[ELPIS_MEMORY_ID_LEN + 1];
    elpis_memory_new_id(given);
    assert_int_equal(strlen(given), 36);
    assert_int_equal(given[14], '4');
    elpis_memory_input in = { .content = "a dream of rivers", .id = given };
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_OK);
    assert_string_equal(id, given);
    elpis_memory m;
    get(&e, given, &m);
    assert_string_equal(m.content, "a dream of rivers");
    elpis_memory_clear(&m);
    in.id = "not-an-id";
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_OK);
    assert_int_equal(strlen(id), 36);
    assert_string_not_equal(id, given);
    env_close(&e);
}

static void test_input_errors(void **state) {
    (void)state;
    elpis_memory_config c = elpis_memory_default_config();
    c.max_content_bytes = 100;
    env e;
    env_open(&e, &c);
    char id[ELPIS_MEMORY_ID_LEN + 1] = "untouched";
    elpis_error err = { 0 };
    char big[102];
    memset(big, 'x', 101);
    big[101] = 0;
    elpis_memory_input in = { .content = big };
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "101 bytes"));
    assert_non_null(strstr(err.msg, "max_content_bytes"));
    assert_string_equal(id, "untouched");
    big[100] = 0;   /* exactly the limit is fine */
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_OK);
    in.content = "";
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_EINVAL);
    in.content = "fine";
    in.metadata_json = "[1,2]";
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_EINVAL);
    in.metadata_json = NULL;
    float v3[3] = { 1, 0, 0 }, v4[DIM] = { 1, 0, 0, 0 };
    in.embedding = v4;
    in.embedding_dim = DIM;
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_OK);
    in.embedding = v3;   /* the store now uses 4 dimensions */
    in.embedding_dim = 3;
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_EINVAL);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 2);
    assert_int_equal(st.with_embedding, 1);
    assert_int_equal(st.embedding_dim, DIM);
    env_close(&e);
}

/* SQL and FTS syntax in content and queries stay data. */
static void test_hostile_text(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    const char *evil = "Robert'); DROP TABLE memories; -- \"zebra\" NEAR(a b) * OR content:x";
    char id[ELPIS_MEMORY_ID_LEN + 1];
    elpis_error err = { 0 };
    elpis_memory_input in = { .content = evil };
    assert_int_equal(elpis_memory_add(e.s, &in, id, NULL, &err), ELPIS_OK);
    elpis_memory m;
    get(&e, id, &m);
    assert_string_equal(m.content, evil);
    elpis_memory_clear(&m);
    static const char *const queries[] = { "\"", "zebra\" OR \"", "NEAR(", "*", "content:x", "'; DROP TABLE memories; --",
                                           "AND OR NOT", "^zebra", "zebra*" };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(queries); i++) {
        elpis_memory_results r = search(&e, queries[i], 5, true);
        elpis_memory_results_free(&r);
    }
    elpis_memory_results r = search(&e, "robert drop table", 5, true);
    assert_int_equal(r.n, 1);
    elpis_memory_results_free(&r);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 1);
    env_close(&e);
}

static void test_access_count_on_retrieval(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char id[ELPIS_MEMORY_ID_LEN + 1], other[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "the zebra ate grass", .cos = 1 }, id);
    add(&e, &(mem_spec){ .content = "unrelated text about boats", .cos = -0.9 }, other);
    float qv[DIM] = { 1, 0, 0, 0 };
    elpis_error err = { 0 };
    for (int i = 1; i <= 3; i++) {
        g_now = T0 + i * 60;
        elpis_memory_query q = { .query = "zebra", .n_results = 1, .use_hybrid = true, .emotion_weight = -1,
                                 .query_embedding = qv, .query_dim = DIM };
        elpis_memory_results r = { 0 };
        assert_int_equal(elpis_memory_search(e.s, &q, &r, &err), ELPIS_OK);
        assert_int_equal(r.n, 1);
        assert_string_equal(r.hits[0].mem.id, id);
        assert_int_equal(r.hits[0].mem.access_count, i);   /* the returned record is current */
        elpis_memory_results_free(&r);
    }
    elpis_memory m;
    get(&e, id, &m);
    assert_int_equal(m.access_count, 3);
    assert_float_equal(m.last_accessed, T0 + 180, 1e-3);
    elpis_memory_clear(&m);
    get(&e, other, &m);   /* not returned (n=1), not counted; get itself does not count */
    assert_int_equal(m.access_count, 0);
    elpis_memory_clear(&m);
    /* get_recent_memories counts too */
    elpis_memory_list l = { 0 };
    assert_int_equal(elpis_memory_recent(e.s, 24, 10, &l, &err), ELPIS_OK);
    assert_int_equal(l.n, 2);
    elpis_memory_list_free(&l);
    get(&e, other, &m);
    assert_int_equal(m.access_count, 1);
    elpis_memory_clear(&m);
    env_close(&e);
}

/* A batch is all or nothing; the error names the bad entry. */
static void test_add_many(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    float v[DIM] = { 1, 0, 0, 0 }, w[3] = { 1, 0, 0 };
    elpis_memory_input in[3] = {
        { .content = "first of three", .embedding = v, .embedding_dim = DIM },
        { .content = "second of three", .type = ELPIS_MEM_SEMANTIC },
        { .content = "" },
    };
    char ids[3][ELPIS_MEMORY_ID_LEN + 1];
    double imp[3];
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_add_many(e.s, in, 3, ids, imp, &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "memory 2"));
    in[2].content = "third of three";
    in[2].embedding = w;   /* disagrees with the first vector of the batch */
    in[2].embedding_dim = 3;
    assert_int_equal(elpis_memory_add_many(e.s, in, 3, ids, imp, &err), ELPIS_EINVAL);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 0);
    in[2].embedding = NULL;
    assert_int_equal(elpis_memory_add_many(e.s, in, 3, ids, imp, &err), ELPIS_OK);
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 3);
    assert_int_equal(st.with_embedding, 1);
    assert_int_equal(st.by_type[ELPIS_MEM_SEMANTIC], 1);
    elpis_memory m;
    get(&e, ids[1], &m);
    assert_string_equal(m.content, "second of three");
    elpis_memory_clear(&m);
    assert_float_equal(imp[0], 0.5, 1e-12);
    env_close(&e);
}

/* The store serialises its callers: threads adding and searching at once. */
typedef struct worker_arg {
    elpis_memory_store *s;
    int id;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    float v[DIM] = { (float)a->id, 1, 0, 0 };
    for (int i = 0; i < 25; i++) {
        char text[64], id[ELPIS_MEMORY_ID_LEN + 1];
        snprintf(text, sizeof text, "worker %d note %d about zebras", a->id, i);
        elpis_memory_input in = { .content = text, .embedding = v, .embedding_dim = DIM };
        if (elpis_memory_add(a->s, &in, id, NULL, NULL) != ELPIS_OK) return (void *)1;
        elpis_memory_query q = { .query = "zebras note", .n_results = 3, .use_hybrid = true, .emotion_weight = -1,
                                 .query_embedding = v, .query_dim = DIM };
        elpis_memory_results r = { 0 };
        if (elpis_memory_search(a->s, &q, &r, NULL) != ELPIS_OK || r.n == 0) return (void *)2;
        elpis_memory_results_free(&r);
    }
    return NULL;
}

static void test_concurrent_callers(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    elpis_memory_set_clock(e.s, NULL, NULL);   /* the wall clock: g_now is not thread-safe */
    pthread_t t[4];
    worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (worker_arg){ e.s, i };
        assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        assert_null(ret);
    }
    elpis_memory_stats st;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 100);
    assert_int_equal(st.with_embedding, 100);
    env_close(&e);
}

/* ---- search mechanics --------------------------------------------------------------------- */

static void test_hybrid_candidates_and_modes(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char kw[ELPIS_MEMORY_ID_LEN + 1], vec[ELPIS_MEMORY_ID_LEN + 1], both[ELPIS_MEMORY_ID_LEN + 1];
    char none[ELPIS_MEMORY_ID_LEN + 1], novec[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "a zebra in the field", .cos = -0.5 }, kw);         /* keyword only */
    add(&e, &(mem_spec){ .content = "striped horse of africa", .cos = 0.99 }, vec);     /* vector only */
    add(&e, &(mem_spec){ .content = "zebra, the striped horse", .cos = 0.9 }, both);    /* both */
    add(&e, &(mem_spec){ .content = "kettle and teapot", .cos = -0.9 }, none);
    add(&e, &(mem_spec){ .content = "zebra crossing", .cos = -2 }, novec);              /* no vector at all */
    elpis_memory_results r = search(&e, "zebra", 10, true);
    assert_int_equal(r.n, 5);   /* every row is a candidate of one list or the other */
    assert_string_equal(r.hits[0].mem.id, both);
    assert_true(r.hits[0].has_relevance);
    for (size_t i = 0; i < r.n; i++) {
        const elpis_memory_hit *h = &r.hits[i];
        if (!strcmp(h->mem.id, novec)) assert_int_equal(h->vec_rank, -1);
        if (!strcmp(h->mem.id, none)) assert_int_equal(h->bm25_rank, -1);
        if (i) assert_true(h->relevance <= r.hits[i - 1].relevance);
    }
    elpis_memory_results_free(&r);
    /* vector only: pure cosine order, no relevance score */
    r = search(&e, "zebra", 2, false);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.hits[0].mem.id, vec);
    assert_string_equal(r.hits[1].mem.id, both);
    assert_false(r.hits[0].has_relevance);
    assert_float_equal(r.hits[0].cosine, 0.99, 1e-6);
    elpis_memory_results_free(&r);
    /* a query with no usable terms still searches by vector */
    r = search(&e, "the of and", 1, true);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.hits[0].mem.id, vec);
    elpis_memory_results_free(&r);
    env_close(&e);
}

static void test_bm25_only_without_vectors(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1];
    elpis_error err = { 0 };
    elpis_memory_input in = { .content = "the cat chased the mouse around the barn" };
    assert_int_equal(elpis_memory_add(e.s, &in, a, NULL, &err), ELPIS_OK);
    in.content = "a mouse, a mouse, a little grey mouse";
    assert_int_equal(elpis_memory_add(e.s, &in, b, NULL, &err), ELPIS_OK);
    elpis_memory_query q = { .query = "mouse", .n_results = 5, .use_hybrid = false, .emotion_weight = -1 };
    elpis_memory_results r = { 0 };
    assert_int_equal(elpis_memory_search(e.s, &q, &r, &err), ELPIS_OK);   /* no embedder: BM25 order */
    assert_int_equal(r.n, 2);
    assert_string_equal(r.hits[0].mem.id, b);
    elpis_memory_results_free(&r);
    /* porter stemming: "chasing" finds "chased" */
    q.query = "chasing";
    assert_int_equal(elpis_memory_search(e.s, &q, &r, &err), ELPIS_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.hits[0].mem.id, a);
    elpis_memory_results_free(&r);
    q.query = "";
    assert_int_equal(elpis_memory_search(e.s, &q, &r, &err), ELPIS_EINVAL);
    env_close(&e);
}

/* When BM25 finds nothing, the fused score is the original's 1/(1 + dist). */
static void test_vector_fallback_score(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "first", .cos = 0.8 }, a);
    add(&e, &(mem_spec){ .content = "second", .cos = 0.2 }, b);
    elpis_memory_results r = search(&e, "nomatchword", 5, true);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.hits[0].mem.id, a);
    assert_float_equal(r.hits[0].fused, 1.0 / (1.0 + 2.0 * (1 - 0.8)), 1e-6);
    assert_float_equal(r.hits[1].fused, 1.0 / (1.0 + 2.0 * (1 - 0.2)), 1e-6);
    elpis_memory_results_free(&r);
    env_close(&e);
}

/* ---- every weight changes a ranking --------------------------------------------------------- */

/* Two memories with crossed ranks: A is first by BM25, B first by vector. */
static void test_weights_vector_and_bm25(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra on the plain", .cos = 0.5 }, a);
    add(&e, &(mem_spec){ .content = "one zebra among many animals", .cos = 0.9 }, b);
    c.vector_weight = 0.7, c.bm25_weight = 0.3;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, b);
    c.vector_weight = 0.3, c.bm25_weight = 0.7;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    c.vector_weight = 0, c.bm25_weight = 1;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    c.vector_weight = 1, c.bm25_weight = 0;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, b);
    env_close(&e);
}

/* A: vector rank 0 only; B: vector 1 + BM25 1; Y: vector 2; X: vector 3 +
 * BM25 0. With vector 1.0 / BM25 0.5: k=0 gives A 1, B .75, X .75 (A wins);
 * k=60 gives A .0164, B .0242, X .0238 (B wins). */
static void test_weight_rrf_k(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    c.vector_weight = 1, c.bm25_weight = 0.5;
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], x[ELPIS_MEMORY_ID_LEN + 1], y[ELPIS_MEMORY_ID_LEN + 1];
    char top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "a horse in a field", .cos = 0.95 }, a);
    add(&e, &(mem_spec){ .content = "one zebra in a big herd of animals", .cos = 0.9 }, b);
    add(&e, &(mem_spec){ .content = "a donkey by the road", .cos = 0.8 }, y);
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.1 }, x);
    c.rrf_k = 0;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    c.rrf_k = 60;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, b);
    env_close(&e);
}

/* A: more relevant but old; B: less relevant but new. */
static void test_weights_relevance_recency_decay_cap(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.9, .age_h = 200 }, a);
    add(&e, &(mem_spec){ .content = "a zebra and other animals", .cos = 0.3, .age_h = 0 }, b);
    c.relevance_weight = 1, c.recency_weight = 0;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    /* relevance .3 / recency .7: A = .3 + .7*.995^200 = .557, B = .7 */
    c.relevance_weight = 0.3, c.recency_weight = 0.7;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, b);
    /* a slower decay keeps A fresh enough: .3 + .7*.9999^200 = .986 */
    c.recency_decay_rate = 0.9999;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    /* capping ages at 10 h also rescues A: .3 + .7*.995^10 = .966 */
    c.recency_decay_rate = 0.995, c.max_recency_hours = 10;
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    env_close(&e);
}

/* A: more relevant, plain importance (0.5); B: less relevant, salient (0.7). */
static void test_weight_importance(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.9 }, a);
    add(&e, &(mem_spec){ .content = "a zebra and other animals", .cos = 0.3, .emo = true, .v = 1, .a = 1 }, b);
    c.relevance_weight = 0.5, c.importance_weight = 0.2;   /* A .5+.1 vs B .14 */
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, a);
    c.importance_weight = 5;   /* A .5+2.5=3 vs B 3.5 */
    env_reconfig(&e, &c);
    top_of(&e, 2, top);
    assert_string_equal(top, b);
    env_close(&e);
}

/* A: more relevant but short; B: less relevant, 400 chars. Three candidates
 * so B's relevance is between 0 and 1. */
static void test_weights_length(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], z[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    char long_text[420];
    snprintf(long_text, sizeof long_text, "zebra %0400d", 0);
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.9 }, a);
    add(&e, &(mem_spec){ .content = long_text, .cos = 0.7 }, b);
    add(&e, &(mem_spec){ .content = "nothing", .cos = -0.9 }, z);
    top_of(&e, 3, top);   /* length ignored */
    assert_string_equal(top, a);
    c.length_weight = 1;   /* the original: 17/500 vs ~1 */
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, b);
    c.max_content_length = 10;   /* both saturate: relevance decides again */
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, a);
    env_close(&e);
}

/* Recency .5 at 100 h keeps qualities below the cap of 1, so factors show:
 * A (rel 1, episodic, tag user) = .803; B (rel ~.5, semantic, tag assistant) ~ .55 x factors. */
static void test_weights_type_and_role(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    c.relevance_weight = 0.5, c.recency_weight = 0.5;
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], z[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.9, .tag = "user", .age_h = 100 }, a);
    add(&e, &(mem_spec){ .content = "a zebra here", .cos = 0.7, .type = ELPIS_MEM_SEMANTIC, .tag = "assistant",
                         .age_h = 100 },
        b);
    add(&e, &(mem_spec){ .content = "nothing", .cos = -0.9, .age_h = 100 }, z);
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, a);
    c.semantic_type_factor = 2;
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, b);
    c.semantic_type_factor = 1, c.assistant_role_factor = 2;
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, b);
    c.assistant_role_factor = 1, c.user_role_factor = 0.3;
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, b);
    c.user_role_factor = 1;
    env_reconfig(&e, &c);
    top_of(&e, 3, top);
    assert_string_equal(top, a);
    env_close(&e);
}

static void test_weight_emotion_and_angular(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra", .cos = 0.9, .emo = true, .v = 0.1, .a = 0.1 }, a);
    add(&e, &(mem_spec){ .content = "a zebra and other animals", .cos = 0.3, .emo = true, .v = 0.9, .a = 0.5 }, b);
    /* no mood: relevance wins */
    elpis_memory_results r = search(&e, "zebra", 2, true);
    assert_string_equal(r.hits[0].mem.id, a);
    elpis_memory_results_free(&r);
    /* mood (0.9, 0.9) with weight 0: ignored */
    r = search_mood(&e, "zebra", 2, 0.9, 0.9, 0);
    assert_string_equal(r.hits[0].mem.id, a);
    elpis_memory_results_free(&r);
    /* weight 1: pure mood. Euclidean: A is far (d 1.13), B near (d .4) */
    r = search_mood(&e, "zebra", 2, 0.9, 0.9, 1);
    assert_string_equal(r.hits[0].mem.id, b);
    assert_float_equal(r.hits[0].relevance, 1 - 0.4 / 2.83, 1e-6);
    elpis_memory_results_free(&r);
    /* angular: A points exactly the mood's way (1.0), B at 16 degrees (.98) */
    c.use_angular_similarity = true;
    env_reconfig(&e, &c);
    r = search_mood(&e, "zebra", 2, 0.9, 0.9, 1);
    assert_string_equal(r.hits[0].mem.id, a);
    elpis_memory_results_free(&r);
    /* the config's emotion_weight is used when the query gives none (-1) */
    c.use_angular_similarity = false, c.emotion_weight = 1;
    env_reconfig(&e, &c);
    r = search_mood(&e, "zebra", 2, 0.9, 0.9, -1);
    assert_string_equal(r.hits[0].mem.id, b);
    elpis_memory_results_free(&r);
    c.emotion_weight = 0;
    env_reconfig(&e, &c);
    r = search_mood(&e, "zebra", 2, 0.9, 0.9, -1);
    assert_string_equal(r.hits[0].mem.id, a);
    elpis_memory_results_free(&r);
    env_close(&e);
}

/* n=1: multiplier 1 gives one candidate per list (A, first in both);
 * multiplier 5 lets the salient B in, and importance makes it win. */
static void test_weight_candidate_multiplier(void **state) {
    (void)state;
    elpis_memory_config c = plain_cfg();
    c.importance_weight = 10;
    env e;
    env_open(&e, &c);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1], f[ELPIS_MEMORY_ID_LEN + 1], top[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "zebra zebra zebra zebra", .cos = 0.99 }, a);
    add(&e, &(mem_spec){ .content = "zebra zebra zebra and a lion", .cos = 0.9 }, f);
    add(&e, &(mem_spec){ .content = "zebra zebra and a giraffe", .cos = 0.8 }, f);
    add(&e, &(mem_spec){ .content = "a zebra was seen once, far away", .cos = 0.5, .emo = true, .v = 1, .a = 1 }, b);
    c.candidate_multiplier = 1;
    env_reconfig(&e, &c);
    top_of(&e, 1, top);
    assert_string_equal(top, a);
    c.candidate_multiplier = 5;
    env_reconfig(&e, &c);
    top_of(&e, 1, top);
    assert_string_equal(top, b);
    env_close(&e);
}

/* ---- consolidation --------------------------------------------------------------------------- */

static void test_consolidation_promote_archive_skip(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char c1[ELPIS_MEMORY_ID_LEN + 1], c2[ELPIS_MEMORY_ID_LEN + 1], c3[ELPIS_MEMORY_ID_LEN + 1];
    char low[ELPIS_MEMORY_ID_LEN + 1], young[ELPIS_MEMORY_ID_LEN + 1];
    /* a tight, salient cluster (importance .4*1 + .3*(1-2/24/365) ~ .7) */
    add(&e, &(mem_spec){ .content = "zebra seen at dawn", .cos = 1.0, .emo = true, .v = 1, .a = 1, .age_h = 2 }, c1);
    add(&e, &(mem_spec){ .content = "zebra seen at dawn again", .cos = 0.99, .emo = true, .v = 0.8, .a = 1, .age_h = 3 }, c2);
    add(&e, &(mem_spec){ .content = "zebra at dawn", .cos = 0.98, .emo = true, .v = 0.5, .a = 1, .age_h = 4 }, c3);
    /* dissimilar and unremarkable: its own cluster, skipped (.2 + .3 = .5) */
    add(&e, &(mem_spec){ .content = "tax forms", .cos = -1.0, .age_h = 5 }, low);
    /* too young to consolidate */
    add(&e, &(mem_spec){ .content = "zebra just now", .cos = 1.0, .emo = true, .v = 1, .a = 1, .age_h = 0.5 }, young);

    elpis_should_consolidate sc;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_should_consolidate(e.s, &sc, &err), ELPIS_OK);
    assert_false(sc.should);
    assert_string_equal(sc.reason, "Buffer size (5) below threshold (100)");

    elpis_consolidation_report r;
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.total_processed, 4);
    assert_int_equal(r.clusters_formed, 2);
    assert_int_equal(r.memories_promoted, 1);
    assert_int_equal(r.memories_archived, 2);
    assert_int_equal(r.memories_skipped, 1);
    assert_int_equal(r.n_clusters, 1);
    assert_string_equal(r.clusters[0].promoted_id, c1);   /* the most important (salience 1) */
    assert_int_equal(r.clusters[0].cluster_size, 3);
    assert_int_equal(r.clusters[0].source_ids.n, 2);
    assert_true(r.clusters[0].avg_importance >= 0.6);
    json_t *j = elpis_consolidation_report_to_json(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "memories_archived")), 2);
    assert_int_equal(json_array_size(json_object_get(j, "cluster_summaries")), 1);
    json_decref(j);
    elpis_consolidation_report_free(&r);

    elpis_memory m;
    get(&e, c1, &m);
    assert_int_equal(m.status, ELPIS_MEM_LONG_TERM);
    assert_int_equal(m.source_ids.n, 2);
    assert_true(elpis_strv_contains(&m.source_ids, c2) && elpis_strv_contains(&m.source_ids, c3));
    elpis_memory_clear(&m);
    get(&e, c2, &m);   /* archived, not deleted, linked to the promoted one */
    assert_int_equal(m.status, ELPIS_MEM_ARCHIVED);
    assert_int_equal(m.related_ids.n, 1);
    assert_string_equal(m.related_ids.v[0], c1);
    elpis_memory_clear(&m);
    get(&e, low, &m);
    assert_int_equal(m.status, ELPIS_MEM_SHORT_TERM);
    elpis_memory_clear(&m);
    get(&e, young, &m);
    assert_int_equal(m.status, ELPIS_MEM_SHORT_TERM);
    elpis_memory_clear(&m);

    /* archived memories are no longer found; the promoted one is */
    elpis_memory_results res = search(&e, "zebra dawn", 10, true);
    for (size_t i = 0; i < res.n; i++) {
        assert_string_not_equal(res.hits[i].mem.id, c2);
        assert_string_not_equal(res.hits[i].mem.id, c3);
    }
    assert_int_equal(res.n, 3);   /* c1, young and low (a vector candidate) */
    elpis_memory_results_free(&res);
    res = search(&e, "zebra", 10, false);
    for (size_t i = 0; i < res.n; i++) assert_int_not_equal(res.hits[i].mem.status, ELPIS_MEM_ARCHIVED);
    elpis_memory_results_free(&res);

    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.short_term, 2);
    assert_int_equal(st.long_term, 1);
    assert_int_equal(st.archived, 2);
    assert_int_equal(st.total_memories, 5);

    /* a second run has nothing new to promote */
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 0);
    assert_int_equal(r.total_processed, 1);
    elpis_consolidation_report_free(&r);
    env_close(&e);
}

static void test_consolidation_thresholds_and_caps(void **state) {
    (void)state;
    elpis_memory_config c = elpis_memory_default_config();
    env e;
    env_open(&e, &c);
    char id[4][ELPIS_MEMORY_ID_LEN + 1];
    /* four plain memories (importance ~.5), pairwise cosine ~.87 around e1 */
    add(&e, &(mem_spec){ .content = "one", .cos = 1.0, .age_h = 2 }, id[0]);
    add(&e, &(mem_spec){ .content = "two", .cos = 0.93, .age_h = 3 }, id[1]);
    add(&e, &(mem_spec){ .content = "three", .cos = -1.0, .age_h = 4 }, id[2]);
    add(&e, &(mem_spec){ .content = "four", .cos = -2, .age_h = 5 }, id[3]);   /* no vector */
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    /* importance threshold: .5 < .6 -> nothing; .4 -> everything promoted */
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 0);
    assert_int_equal(r.memories_skipped, 4);
    assert_int_equal(r.clusters_formed, 3);   /* {one, two}, {three}, {four: no vector} */
    elpis_consolidation_report_free(&r);
    /* a similarity threshold above their cosine splits one/two */
    assert_int_equal(elpis_memory_consolidate(e.s, 0.9, 0.95, &r, &err), ELPIS_OK);
    assert_int_equal(r.clusters_formed, 4);
    assert_int_equal(r.memories_promoted, 0);
    elpis_consolidation_report_free(&r);
    /* min_cluster_size 2: only the pair may promote */
    c.min_cluster_size = 2;
    env_reconfig(&e, &c);
    assert_int_equal(elpis_memory_consolidate(e.s, 0.4, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 1);
    assert_int_equal(r.memories_archived, 1);
    assert_int_equal(r.memories_skipped, 2);
    elpis_consolidation_report_free(&r);
    /* batch cap and load limit */
    c.min_cluster_size = 1, c.max_batch_size = 1;
    env_reconfig(&e, &c);
    assert_int_equal(elpis_memory_consolidate(e.s, 0.99, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.total_processed, 1);
    elpis_consolidation_report_free(&r);
    c.max_batch_size = 50, c.load_limit = 1;
    env_reconfig(&e, &c);
    assert_int_equal(elpis_memory_consolidate(e.s, 0.99, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.total_processed, 1);
    elpis_consolidation_report_free(&r);
    /* min_age_hours: with 10 h nothing is old enough */
    c.load_limit = 100, c.min_age_hours = 10;
    env_reconfig(&e, &c);
    assert_int_equal(elpis_memory_consolidate(e.s, 0.0, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.total_processed, 0);
    assert_int_equal(r.clusters_formed, 0);
    elpis_consolidation_report_free(&r);
    env_close(&e);
}

/* Retrieval raises importance: ten recalls add 0.3, enough to promote. */
static void test_consolidation_access_raises_importance(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char id[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "the zebra password hint", .cos = 1, .age_h = 2 }, id);
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 0);
    elpis_consolidation_report_free(&r);
    float qv[DIM] = { 1, 0, 0, 0 };
    for (int i = 0; i < 10; i++) {
        elpis_memory_query q = { .query = "zebra", .n_results = 1, .use_hybrid = true, .emotion_weight = -1,
                                 .query_embedding = qv, .query_dim = DIM };
        elpis_memory_results res = { 0 };
        assert_int_equal(elpis_memory_search(e.s, &q, &res, &err), ELPIS_OK);
        elpis_memory_results_free(&res);
    }
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 1);
    assert_float_equal(r.clusters[0].avg_importance, 0.2 + 0.3 * (1 - 2.0 / 24 / 365) + 0.3, 1e-6);
    elpis_consolidation_report_free(&r);
    elpis_memory m;
    get(&e, id, &m);
    assert_int_equal(m.status, ELPIS_MEM_LONG_TERM);
    elpis_memory_clear(&m);
    env_close(&e);
}

/* The cluster's dominant type is reported; ties go to the earlier type. */
static void test_consolidation_dominant_type(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char id[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "a", .cos = 1, .type = ELPIS_MEM_EPISODIC, .emo = true, .v = 1, .a = 1, .age_h = 2 }, id);
    add(&e, &(mem_spec){ .content = "b", .cos = 0.99, .type = ELPIS_MEM_PROCEDURAL, .emo = true, .v = 1, .a = 1, .age_h = 2 }, id);
    add(&e, &(mem_spec){ .content = "c", .cos = 0.98, .type = ELPIS_MEM_PROCEDURAL, .emo = true, .v = 1, .a = 1, .age_h = 2 }, id);
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.n_clusters, 1);
    assert_int_equal(r.clusters[0].dominant_type, ELPIS_MEM_PROCEDURAL);
    json_t *j = elpis_consolidation_report_to_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "cluster_summaries"), 0),
                                                          "dominant_type")),
                        "procedural");
    json_decref(j);
    elpis_consolidation_report_free(&r);
    env_close(&e);
}

/* A promotion that fails leaves every memory as it was: one transaction. */
static void test_consolidation_promote_failure(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    char a[ELPIS_MEMORY_ID_LEN + 1], b[ELPIS_MEMORY_ID_LEN + 1];
    add(&e, &(mem_spec){ .content = "a", .cos = 1, .emo = true, .v = 1, .a = 1, .age_h = 2 }, a);
    add(&e, &(mem_spec){ .content = "b", .cos = 0.99, .emo = true, .v = 1, .a = 0.9, .age_h = 2 }, b);
    /* the archive of b is written first, then the promotion of a fails */
    assert_int_equal(sqlite3_exec(elpis_db_handle(e.db),
                                  "CREATE TEMP TRIGGER no_promote BEFORE UPDATE OF status ON memories"
                                  " WHEN new.status = 'long_term' BEGIN SELECT RAISE(ABORT, 'promotion refused'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_EIO);
    assert_non_null(strstr(err.msg, "promotion refused"));
    elpis_memory m;
    get(&e, b, &m);
    assert_int_equal(m.status, ELPIS_MEM_SHORT_TERM);
    assert_int_equal(m.related_ids.n, 0);
    elpis_memory_clear(&m);
    get(&e, a, &m);
    assert_int_equal(m.status, ELPIS_MEM_SHORT_TERM);
    elpis_memory_clear(&m);
    /* still searchable: the index was not touched either */
    elpis_memory_results res = search(&e, "b", 5, true);
    assert_int_equal(res.n, 2);
    elpis_memory_results_free(&res);
    assert_int_equal(sqlite3_exec(elpis_db_handle(e.db), "DROP TRIGGER no_promote", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(elpis_memory_consolidate(e.s, -1, -1, &r, &err), ELPIS_OK);
    assert_int_equal(r.memories_promoted, 1);
    assert_int_equal(r.memories_archived, 1);
    elpis_consolidation_report_free(&r);
    env_close(&e);
}

static void test_should_consolidate(void **state) {
    (void)state;
    elpis_memory_config c = elpis_memory_default_config();
    c.buffer_threshold = 3;
    env e;
    env_open(&e, &c);
    char id[ELPIS_MEMORY_ID_LEN + 1];
    elpis_should_consolidate sc;
    elpis_error err = { 0 };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(elpis_memory_should_consolidate(e.s, &sc, &err), ELPIS_OK);
        assert_false(sc.should);
        add(&e, &(mem_spec){ .content = "x", .cos = 1 }, id);
    }
    assert_int_equal(elpis_memory_should_consolidate(e.s, &sc, &err), ELPIS_OK);
    assert_true(sc.should);
    assert_int_equal(sc.short_term_count, 3);
    assert_string_equal(sc.reason, "Buffer size (3) exceeds threshold (3)");
    env_close(&e);
}

/* ---- the tools -------------------------------------------------------------------------------- */

static json_t *tool(env *e, const char *name, const char *args) {
    json_t *a = args ? json_loads(args, 0, NULL) : NULL;
    if (args) assert_non_null(a);
    json_t *r = elpis_memory_tool(e->s, name, a);
    json_decref(a);
    assert_non_null(r);
    return r;
}

static const char *err_of(json_t *r) { return json_string_value(json_object_get(r, "error")); }

static void test_tools(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    json_t *r = tool(&e, "store_memory", "{\"content\":\"The user's cat is named Pixel\",\"memory_type\":\"semantic\","
                                        "\"tags\":[\"pets\"],\"emotional_context\":{\"valence\":0.9,\"arousal\":0.9,"
                                        "\"quadrant\":\"excited\"}}");
    assert_null(err_of(r));
    char id[ELPIS_MEMORY_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(r, "id")));
    assert_string_equal(json_string_value(json_object_get(r, "status")), "stored");
    assert_float_equal(json_real_value(json_object_get(r, "importance_score")),
                       0.3 + 0.4 * elpis_mem_salience(true, 0.9, 0.9), 1e-9);
    json_decref(r);
    g_now += 60;
    r = tool(&e, "store_memory", "{\"content\":\"Went to the vet with Pixel today\"}");
    json_decref(r);

    /* errors come back as {"error": ...} */
    r = tool(&e, "store_memory", "{}");
    assert_non_null(strstr(err_of(r), "content is required"));
    json_decref(r);
    r = tool(&e, "store_memory", "{\"content\":\"x\",\"memory_type\":\"dream\"}");
    assert_non_null(strstr(err_of(r), "dream"));
    json_decref(r);
    r = tool(&e, "store_memory", "{\"content\":\"x\",\"tags\":[1]}");
    assert_non_null(err_of(r));
    json_decref(r);
    r = tool(&e, "search_memories", "{\"query\":\"cat\",\"n_results\":0}");
    assert_non_null(err_of(r));
    json_decref(r);
    r = tool(&e, "no_such_tool", NULL);
    assert_non_null(strstr(err_of(r), "unknown tool"));
    json_decref(r);

    /* search: shape of the original */
    r = tool(&e, "search_memories", "{\"query\":\"Pixel cat\",\"n_results\":5,\"emotional_context\":{\"valence\":0.9,"
                                    "\"arousal\":0.9},\"emotion_weight\":0.5}");
    assert_null(err_of(r));
    assert_string_equal(json_string_value(json_object_get(r, "query")), "Pixel cat");
    assert_true(json_is_true(json_object_get(r, "hybrid_search")));
    json_t *res = json_object_get(r, "results");
    assert_int_equal(json_array_size(res), 2);
    json_t *h0 = json_array_get(res, 0);
    assert_string_equal(json_string_value(json_object_get(h0, "id")), id);
    assert_true(json_is_real(json_object_get(h0, "relevance_score")));
    assert_string_equal(json_string_value(json_object_get(h0, "memory_type")), "semantic");
    json_t *ec = json_object_get(h0, "emotional_context");
    assert_string_equal(json_string_value(json_object_get(ec, "quadrant")), "excited");
    assert_true(json_is_real(json_object_get(ec, "salience")));
    assert_true(json_is_null(json_object_get(json_array_get(res, 1), "emotional_context")));
    assert_true(json_is_string(json_object_get(h0, "created_at")));
    json_decref(r);
    r = tool(&e, "search_memories", "{\"query\":\"Pixel\",\"use_hybrid\":false}");
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(r, "results"), 0), "relevance_score")));
    json_decref(r);

    r = tool(&e, "get_memory_stats", NULL);
    assert_int_equal(json_integer_value(json_object_get(r, "total_memories")), 2);
    assert_int_equal(json_integer_value(json_object_get(r, "short_term")), 2);
    assert_int_equal(json_integer_value(json_object_get(r, "long_term")), 0);
    json_decref(r);
    r = tool(&e, "should_consolidate", NULL);
    assert_false(json_is_true(json_object_get(r, "should_consolidate")));
    assert_string_equal(json_string_value(json_object_get(r, "reason")), "Buffer size (2) below threshold (100)");
    assert_int_equal(json_integer_value(json_object_get(r, "short_term_count")), 2);
    json_decref(r);

    /* context: "[iso] content" costs len/4 tokens; the budget truncates */
    r = tool(&e, "get_memory_context", "{\"query\":\"Pixel\"}");
    assert_int_equal(json_array_size(json_object_get(r, "memories")), 2);
    assert_false(json_is_true(json_object_get(r, "truncated")));
    long t1 = (long)(27 + strlen("The user's cat is named Pixel")) / 4, t2 = (long)(27 + strlen("Went to the vet with Pixel today")) / 4;
    assert_int_equal(json_integer_value(json_object_get(r, "token_count")), t1 + t2);
    json_decref(r);
    r = tool(&e, "get_memory_context", "{\"query\":\"Pixel\",\"max_tokens\":15}");
    assert_int_equal(json_array_size(json_object_get(r, "memories")), 1);
    assert_true(json_is_true(json_object_get(r, "truncated")));
    json_decref(r);

    /* recent: newest first, window respected */
    r = tool(&e, "get_recent_memories", "{\"hours\":1,\"limit\":5}");
    assert_int_equal(json_integer_value(json_object_get(r, "count")), 2);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(json_object_get(r, "memories"), 0), "content")),
                           "vet"));
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(r, "memories"), 0), "status")), "short_term");
    json_decref(r);
    g_now += 3 * 3600;
    r = tool(&e, "get_recent_memories", "{\"hours\":1}");
    assert_int_equal(json_integer_value(json_object_get(r, "count")), 0);
    json_decref(r);

    /* both promote: the salient one from the start (.68), the plain one
     * (.5) because the five retrievals above added .15 */
    r = tool(&e, "consolidate_memories", "{\"importance_threshold\":0.6}");
    assert_int_equal(json_integer_value(json_object_get(r, "memories_promoted")), 2);
    assert_true(json_is_array(json_object_get(r, "cluster_summaries")));
    json_decref(r);

    char args[128];
    snprintf(args, sizeof args, "{\"memory_id\":\"%s\"}", id);
    r = tool(&e, "delete_memory", args);
    assert_true(json_is_true(json_object_get(r, "deleted")));
    assert_string_equal(json_string_value(json_object_get(r, "memory_id")), id);
    json_decref(r);
    r = tool(&e, "delete_memory", args);
    assert_false(json_is_true(json_object_get(r, "deleted")));
    json_decref(r);

    json_t *list = elpis_memory_tool_list();
    assert_int_equal(json_array_size(list), 8);
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        assert_true(elpis_memory_is_tool(json_string_value(json_object_get(t, "name"))));
        assert_true(json_is_object(json_object_get(t, "inputSchema")));
    }
    json_decref(list);
    assert_false(elpis_memory_is_tool("chat"));
    env_close(&e);
}

/* ---- export / import --------------------------------------------------------------------------- */

static void test_export_import_round_trip(void **state) {
    (void)state;
    env a, b;
    env_open(&a, NULL);
    char id1[ELPIS_MEMORY_ID_LEN + 1], id2[ELPIS_MEMORY_ID_LEN + 1];
    add(&a, &(mem_spec){ .content = "zebra one \"quoted\"\nnew line", .cos = 1, .tag = "t1", .emo = true, .v = 0.5,
                         .a = -0.5, .age_h = 3 },
        id1);
    add(&a, &(mem_spec){ .content = "caf\xc3\xa9 two", .cos = 0.5, .type = ELPIS_MEM_PROCEDURAL, .age_h = 1 }, id2);
    char *buf = NULL;
    size_t len = 0, n = 0;
    FILE *f = open_memstream(&buf, &len);
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_export(a.s, f, &n, &err), ELPIS_OK);
    fclose(f);
    assert_int_equal(n, 2);
    /* two lines, oldest first */
    assert_non_null(strchr(buf, '\n'));
    assert_non_null(strstr(buf, id1));
    assert_true(strstr(buf, id1) < strstr(buf, id2));

    env_open(&b, NULL);
    size_t imported = 0, skipped = 0;
    f = fmemopen(buf, len, "r");
    assert_int_equal(elpis_memory_import(b.s, f, false, &imported, &skipped, &err), ELPIS_OK);
    fclose(f);
    assert_int_equal(imported, 2);
    assert_int_equal(skipped, 0);
    const char *ids[2] = { id1, id2 };
    for (int i = 0; i < 2; i++) {
        elpis_memory x, y;
        get(&a, ids[i], &x);
        get(&b, ids[i], &y);
        json_t *jx = elpis_memory_to_json(&x), *jy = elpis_memory_to_json(&y);
        assert_true(json_equal(jx, jy));
        json_decref(jx);
        json_decref(jy);
        elpis_memory_clear(&x);
        elpis_memory_clear(&y);
    }
    /* searchable in the new store (FTS index built by the triggers) */
    elpis_memory_results r = search(&b, "zebra", 5, true);
    assert_int_equal(r.n, 1);
    elpis_memory_results_free(&r);
    /* again: skipped; with replace: rewritten */
    f = fmemopen(buf, len, "r");
    assert_int_equal(elpis_memory_import(b.s, f, false, &imported, &skipped, &err), ELPIS_OK);
    fclose(f);
    assert_int_equal(imported, 0);
    assert_int_equal(skipped, 2);
    f = fmemopen(buf, len, "r");
    assert_int_equal(elpis_memory_import(b.s, f, true, &imported, &skipped, &err), ELPIS_OK);
    fclose(f);
    assert_int_equal(imported, 2);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(b.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 2);
    free(buf);
    env_close(&a);
    env_close(&b);
}

static void test_import_all_or_nothing(void **state) {
    (void)state;
    env e;
    env_open(&e, NULL);
    const char *text = "{\"content\":\"first fine line\"}\n"
                       "\n"
                       "{\"content\":\"second\",\"memory_type\":\"semantic\",\"created_at\":\"2025-01-02T03:04:05Z\"}\n"
                       "{\"content\":\"bad type\",\"memory_type\":\"dream\"}\n";
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    size_t imported = 99, skipped = 99;
    elpis_error err = { 0 };
    assert_int_equal(elpis_memory_import(e.s, f, false, &imported, &skipped, &err), ELPIS_EINVAL);
    fclose(f);
    assert_non_null(strstr(err.msg, "line 4"));
    assert_int_equal(imported, 99);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(e.s, &st, &err), ELPIS_OK);
    assert_int_equal(st.total_memories, 0);
    f = fmemopen((void *)text, strlen(text), "r");   /* not JSON at all on line 2 */
    const char *garbage = "{\"content\":\"ok\"}\n{not json\n";
    fclose(f);
    f = fmemopen((void *)garbage, strlen(garbage), "r");
    assert_int_equal(elpis_memory_import(e.s, f, false, &imported, &skipped, &err), ELPIS_EFORMAT);
    fclose(f);
    assert_non_null(strstr(err.msg, "line 2"));
    /* the valid lines alone import, with defaults filled in */
    const char *good = "{\"content\":\"first fine line\"}\n"
                       "{\"content\":\"second\",\"memory_type\":\"semantic\",\"created_at\":\"2025-01-02T03:04:05Z\"}\n";
    f = fmemopen((void *)good, strlen(good), "r");
    assert_int_equal(elpis_memory_import(e.s, f, false, &imported, &skipped, &err), ELPIS_OK);
    fclose(f);
    assert_int_equal(imported, 2);
    elpis_memory_list l = { 0 };
    assert_int_equal(elpis_memory_list_all(e.s, -1, 0, 0, &l, &err), ELPIS_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[1].content, "second");   /* 2025 is older than T0 */
    double t;
    assert_true(elpis_memory_parse_time("2025-01-02T03:04:05Z", &t));
    assert_float_equal(l.items[1].created_at, t, 1e-3);
    assert_float_equal(l.items[1].importance, 0.5, 1e-9);
    assert_int_equal(strlen(l.items[0].id), 36);
    elpis_memory_list_free(&l);
    env_close(&e);
}

static void test_time_format(void **state) {
    (void)state;
    char buf[32];
    elpis_memory_iso_time(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    elpis_memory_iso_time(1700000000.25, buf);
    assert_string_equal(buf, "2023-11-14T22:13:20.250Z");
    double t;
    assert_true(elpis_memory_parse_time(buf, &t));
    assert_float_equal(t, 1700000000.25, 1e-6);
    assert_true(elpis_memory_parse_time("2023-11-14T23:13:20+01:00", &t));
    assert_float_equal(t, 1700000000, 1e-6);
    assert_true(elpis_memory_parse_time("2023-11-14T22:13:20", &t));   /* no zone: UTC */
    assert_false(elpis_memory_parse_time("yesterday", &t));
    assert_false(elpis_memory_parse_time("2023-13-14T22:13:20Z", &t));
    assert_false(elpis_memory_parse_time("2023-11-14T22:13:20Zjunk", &t));
}

/* ---- connections, migrations, durability --------------------------------------------------------- */

static char g_dir[256];

static int group_setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/elpis-test-memory-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Another connection's commits reach this store's vector cache. */
static void test_second_connection_seen(void **state) {
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/two.db", g_dir);
    elpis_db *d1 = NULL, *d2 = NULL;
    elpis_memory_store *s1 = NULL, *s2 = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&d1, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_open_file(&d2, path, &err), ELPIS_OK);
    assert_int_equal(elpis_memory_store_open(&s1, d1, NULL, NULL, &err), ELPIS_OK);
    assert_int_equal(elpis_memory_store_open(&s2, d2, NULL, NULL, &err), ELPIS_OK);
    float v[DIM] = { 1, 0, 0, 0 };
    char id[ELPIS_MEMORY_ID_LEN + 1];
    elpis_memory_input in = { .content = "written elsewhere", .embedding = v, .embedding_dim = DIM };
    assert_int_equal(elpis_memory_add(s2, &in, id, NULL, &err), ELPIS_OK);
    elpis_memory_query q = { .query = "unrelatedword", .n_results = 3, .use_hybrid = true, .emotion_weight = -1,
                             .query_embedding = v, .query_dim = DIM };
    elpis_memory_results r = { 0 };
    assert_int_equal(elpis_memory_search(s1, &q, &r, &err), ELPIS_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.hits[0].vec_rank, 0);   /* found by vector: the cache reloaded */
    elpis_memory_results_free(&r);
    bool deleted;
    assert_int_equal(elpis_memory_delete(s2, id, &deleted, &err), ELPIS_OK);
    assert_int_equal(elpis_memory_search(s1, &q, &r, &err), ELPIS_OK);
    assert_int_equal(r.n, 0);
    elpis_memory_results_free(&r);
    elpis_memory_store_close(s1);
    elpis_memory_store_close(s2);
    elpis_db_close(d1);
    elpis_db_close(d2);
}

static void test_migration_idempotent_and_newer_refused(void **state) {
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/mig.db", g_dir);
    elpis_db *db = NULL;
    elpis_memory_store *s = NULL;
    elpis_error err = { 0 };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
        assert_int_equal(elpis_memory_store_open(&s, db, NULL, NULL, &err), ELPIS_OK);
        assert_int_equal(elpis_db_version(db, "memory"), 1);
        char id[ELPIS_MEMORY_ID_LEN + 1];
        elpis_memory_input in = { .content = "survives reopening" };
        assert_int_equal(elpis_memory_add(s, &in, id, NULL, &err), ELPIS_OK);
        elpis_memory_stats st;
        assert_int_equal(elpis_memory_stats_get(s, &st, &err), ELPIS_OK);
        assert_int_equal(st.total_memories, i + 1);
        elpis_memory_store_close(s);
        elpis_db_close(db);
    }
    /* a database whose memory schema is newer than this build: refused, untouched */
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(sqlite3_exec(elpis_db_handle(db), "INSERT INTO schema_migrations(component, version) VALUES ('memory', 7)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    elpis_db_close(db);
    char *before = NULL, *after = NULL;
    size_t n0, n1;
    assert_int_equal(elpis_read_file(path, 1 << 24, &before, &n0, &err), ELPIS_OK);
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    s = NULL;
    assert_int_equal(elpis_memory_store_open(&s, db, NULL, NULL, &err), ELPIS_EUNSUPPORTED);
    assert_null(s);
    assert_non_null(strstr(err.msg, "memory schema version 7"));
    elpis_db_close(db);
    assert_int_equal(elpis_read_file(path, 1 << 24, &after, &n1, &err), ELPIS_OK);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
}

/* A child stores memories and acknowledges each through a pipe; it is
 * killed at a random moment. Every acknowledged id is there afterwards.
 * 20 rounds on the same file, so recovery after recovery is exercised too. */
static void test_acknowledged_survive_kill(void **state) {
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/kill.db", g_dir);
    srand((unsigned)getpid());
    for (int round = 0; round < 20; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            elpis_db *db = NULL;
            elpis_memory_store *s = NULL;
            if (elpis_db_open_file(&db, path, NULL) || elpis_memory_store_open(&s, db, NULL, NULL, NULL)) _exit(3);
            float v[DIM] = { 1, 0, 0, 0 };
            for (;;) {
                char id[ELPIS_MEMORY_ID_LEN + 1];
                elpis_memory_input in = { .content = "durable memory", .embedding = v, .embedding_dim = DIM };
                if (elpis_memory_add(s, &in, id, NULL, NULL) != ELPIS_OK) _exit(4);
                if (write(fds[1], id, ELPIS_MEMORY_ID_LEN) != ELPIS_MEMORY_ID_LEN) _exit(5);
            }
        }
        close(fds[1]);
        char (*ids)[ELPIS_MEMORY_ID_LEN + 1] = NULL;
        size_t n = 0;
        char buf[ELPIS_MEMORY_ID_LEN];
        /* wait for the first acknowledgement (start-up time varies a lot
         * under sanitizers), then kill at a random moment of the stream */
        bool first = true;
        while (read(fds[0], buf, sizeof buf) == (ssize_t)sizeof buf) {
            ids = realloc(ids, (n + 1) * sizeof *ids);
            memcpy(ids[n], buf, sizeof buf);
            ids[n++][ELPIS_MEMORY_ID_LEN] = 0;
            if (first) {
                first = false;
                usleep((useconds_t)(rand() % 100000));
                kill(pid, SIGKILL);
            }
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status)) fail_msg("round %d: the writer exited early (status %d)", round, WEXITSTATUS(status));
        close(fds[0]);
        assert_true(n > 0);
        elpis_db *db = NULL;
        elpis_memory_store *s = NULL;
        elpis_error err = { 0 };
        assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
        assert_int_equal(elpis_memory_store_open(&s, db, NULL, NULL, &err), ELPIS_OK);
        for (size_t i = 0; i < n; i++) {
            elpis_memory m;
            bool found;
            assert_int_equal(elpis_memory_get(s, ids[i], &m, &found, &err), ELPIS_OK);
            if (!found) fail_msg("round %d: acknowledged memory %s is missing", round, ids[i]);
            elpis_memory_clear(&m);
        }
        elpis_memory_store_close(s);
        elpis_db_close(db);
        free(ids);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_get_delete),
        cmocka_unit_test(test_add_with_given_id),
        cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_hostile_text),
        cmocka_unit_test(test_access_count_on_retrieval),
        cmocka_unit_test(test_add_many),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_hybrid_candidates_and_modes),
        cmocka_unit_test(test_bm25_only_without_vectors),
        cmocka_unit_test(test_vector_fallback_score),
        cmocka_unit_test(test_weights_vector_and_bm25),
        cmocka_unit_test(test_weight_rrf_k),
        cmocka_unit_test(test_weights_relevance_recency_decay_cap),
        cmocka_unit_test(test_weight_importance),
        cmocka_unit_test(test_weights_length),
        cmocka_unit_test(test_weights_type_and_role),
        cmocka_unit_test(test_weight_emotion_and_angular),
        cmocka_unit_test(test_weight_candidate_multiplier),
        cmocka_unit_test(test_consolidation_promote_archive_skip),
        cmocka_unit_test(test_consolidation_thresholds_and_caps),
        cmocka_unit_test(test_consolidation_access_raises_importance),
        cmocka_unit_test(test_consolidation_dominant_type),
        cmocka_unit_test(test_consolidation_promote_failure),
        cmocka_unit_test(test_should_consolidate),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_export_import_round_trip),
        cmocka_unit_test(test_import_all_or_nothing),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_second_connection_seen),
        cmocka_unit_test(test_migration_idempotent_and_newer_refused),
        cmocka_unit_test(test_acknowledged_survive_kill),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
