/* test_memory_recall.c -- embeddings from the real stories260K model and the
 * retrieval quality of the whole search pipeline on a fixed set.
 *
 * tests/data/memory_recall.jsonl holds 200 memories (short story-like,
 * factual, procedural and emotional sentences) and 40 queries, each naming
 * the memory it should find. Queries are paraphrases or partial keyword
 * overlaps, never copies. The test stores the memories through the public
 * API (so they are embedded exactly as in production), runs every query with
 * the default configuration, and reports recall@5 for hybrid search (the
 * acceptance bar: >= 0.8) and, for information, for each half alone.
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

#define MAX_MEMS 256
#define MAX_QUERIES 64

typedef struct fixture {
    elpis_model *model;
    elpis_embedder *emb;
} fixture;

static fixture g;

static int setup(void **state) {
    (void)state;
    char path[1024];
    const char *shared = getenv("ELPIS_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    elpis_error err = { 0 };
    if (elpis_model_load(&g.model, path, &err) != ELPIS_OK || elpis_embedder_new(&g.emb, g.model, 2, &err) != ELPIS_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    elpis_embedder_free(g.emb);
    elpis_model_free(g.model);
    return 0;
}

static void embed(const char *text, float *out) {
    elpis_error err = { 0 };
    if (elpis_embed(g.emb, text, strlen(text), out, &err) != ELPIS_OK) fail_msg("embed: %s", err.msg);
}

/* ---- the embedder --------------------------------------------------------------------- */

static void test_embedder_basics(void **state) {
    (void)state;
    int dim = elpis_embedder_dim(g.emb);
    assert_int_equal(dim, g.model->hp.n_embd);
    float a[dim], b[dim], c[dim];
    embed("The cat sat on the warm mat.", a);
    embed("The cat sat on the warm mat.", b);
    assert_memory_equal(a, b, sizeof a);   /* deterministic */
    double norm = 0;
    for (int i = 0; i < dim; i++) norm += (double)a[i] * a[i];
    assert_float_equal(norm, 1.0, 1e-5);
    embed("Dad fixed the broken car engine.", c);
    assert_true(memcmp(a, c, sizeof a) != 0);
    elpis_error err = { 0 };
    assert_int_equal(elpis_embed(g.emb, "", 0, a, &err), ELPIS_EINVAL);
}

/* A paraphrase must be closer than unrelated sentences, for several pairs. */
static void test_embedder_paraphrase_closer(void **state) {
    (void)state;
    static const char *const pairs[][3] = {
        { "Lily found a red ball in the park.", "The little girl saw a red ball at the park.",
          "The printer jams when the paper is wet." },
        { "Timmy was sad because his toy boat broke.", "Ben's toy boat was broken and he cried.",
          "The user prefers tea in the morning." },
        { "The dog barked at the cat in the garden.", "A dog was barking at a cat in the yard.",
          "We should water the plants twice a week." },
    };
    int dim = elpis_embedder_dim(g.emb);
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(pairs); i++) {
        float x[dim], p[dim], u[dim];
        embed(pairs[i][0], x);
        embed(pairs[i][1], p);
        embed(pairs[i][2], u);
        double sp = elpis_mem_cosine(x, p, dim), su = elpis_mem_cosine(x, u, dim);
        printf("  pair %zu: paraphrase %.3f, unrelated %.3f\n", i, sp, su);
        assert_true(sp > su);
    }
}

/* Longer than one context window: still a finite unit vector, and the
 * windowed mean keeps it close to the vector of the repeated sentence. */
static void test_embedder_long_text(void **state) {
    (void)state;
    const char *unit = "The happy dog ran to the park and played with a big red ball. ";
    size_t n = strlen(unit), reps = 200;
    char *text = malloc(n * reps + 1);
    for (size_t i = 0; i < reps; i++) memcpy(text + i * n, unit, n);
    text[n * reps] = 0;
    int dim = elpis_embedder_dim(g.emb);
    float a[dim], b[dim];
    embed(text, a);
    embed(unit, b);
    double norm = 0;
    for (int i = 0; i < dim; i++) norm += (double)a[i] * a[i];
    assert_float_equal(norm, 1.0, 1e-5);
    assert_true(elpis_mem_cosine(a, b, dim) > 0.5);
    free(text);
}

/* Vectors missing or from another model are left out of vector search
 * until re-embedded; then they are found by meaning. */
static void test_reembed(void **state) {
    (void)state;
    elpis_db *db = NULL;
    elpis_memory_store *s = NULL;
    elpis_error err = { 0 };
    int dim = elpis_embedder_dim(g.emb);
    assert_int_equal(elpis_db_open_file(&db, ":memory:", &err), ELPIS_OK);
    assert_int_equal(elpis_memory_store_open(&s, db, NULL, NULL, &err), ELPIS_OK);   /* no model */
    float foreign[dim];
    for (int i = 0; i < dim; i++) foreign[i] = i == 0;
    elpis_memory_input in[3] = {
        { .content = "The little dog ran after the red ball." },
        { .content = "Mom baked a warm apple pie." },
        { .content = "The rocket flew up to the moon.", .embedding = foreign, .embedding_dim = dim },
    };
    assert_int_equal(elpis_memory_add_many(s, in, 3, NULL, NULL, &err), ELPIS_OK);
    elpis_memory_store_close(s);

    assert_int_equal(elpis_memory_store_open(&s, db, NULL, g.emb, &err), ELPIS_OK);
    elpis_memory_stats st;
    assert_int_equal(elpis_memory_stats_get(s, &st, &err), ELPIS_OK);
    assert_int_equal(st.with_embedding, 0);   /* the foreign vector is not trusted */
    size_t n = 0;
    assert_int_equal(elpis_memory_reembed(s, &n, &err), ELPIS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(elpis_memory_stats_get(s, &st, &err), ELPIS_OK);
    assert_int_equal(st.with_embedding, 3);
    assert_int_equal(elpis_memory_reembed(s, &n, &err), ELPIS_OK);
    assert_int_equal(n, 0);
    /* stored vectors equal what the embedder gives now, through the store's lock too */
    float a[dim], b[dim];
    embed("Mom baked a warm apple pie.", a);
    assert_int_equal(elpis_memory_embed_text(s, "Mom baked a warm apple pie.", 27, b, &err), ELPIS_OK);
    assert_memory_equal(a, b, sizeof a);
    elpis_memory_query q = { .query = "pie", .n_results = 3, .use_hybrid = false, .emotion_weight = -1,
                             .query_embedding = a, .query_dim = dim, .no_access_bump = true };
    elpis_memory_results r = { 0 };
    assert_int_equal(elpis_memory_search(s, &q, &r, &err), ELPIS_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.hits[0].mem.content, "Mom baked a warm apple pie.");
    assert_float_equal(r.hits[0].cosine, 1.0, 1e-5);
    elpis_memory_results_free(&r);
    elpis_memory_store_close(s);
    elpis_db_close(db);
}

/* ---- retrieval quality ------------------------------------------------------------------- */

typedef struct recall_set {
    char *label[MAX_MEMS];
    char id[MAX_MEMS][ELPIS_MEMORY_ID_LEN + 1];
    size_t n_mem;
    char *query[MAX_QUERIES], *expected[MAX_QUERIES];
    size_t n_q;
} recall_set;

static FILE *open_data(void) {
    static const char *const rel[] = { "tests/data/memory_recall.jsonl", "../tests/data/memory_recall.jsonl" };
    char path[1024];
    const char *src = getenv("ELPIS_SRC");
    if (src) {
        snprintf(path, sizeof path, "%s/tests/data/memory_recall.jsonl", src);
        FILE *f = fopen(path, "r");
        if (f) return f;
    }
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(rel); i++) {
        FILE *f = fopen(rel[i], "r");
        if (f) return f;
    }
    fail_msg("cannot find tests/data/memory_recall.jsonl (set ELPIS_SRC)");
    return NULL;
}

static void add_memory(elpis_memory_store *s, recall_set *rs, const json_t *j) {
    elpis_memory_input in = { .content = json_string_value(json_object_get(j, "content")) };
    assert_non_null(in.content);
    assert_true(elpis_memory_type_parse(json_string_value(json_object_get(j, "memory_type")), &in.type));
    const char *tags[8];
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(j, "tags"), i, t) {
        if (i < 8) tags[in.n_tags++] = json_string_value(t);
    }
    in.tags = tags;
    const json_t *emo = json_object_get(j, "emotional_context");
    if (emo) {
        in.has_emotion = true;
        in.valence = json_number_value(json_object_get(emo, "valence"));
        in.arousal = json_number_value(json_object_get(emo, "arousal"));
    }
    elpis_error err = { 0 };
    assert_true(rs->n_mem < MAX_MEMS);
    if (elpis_memory_add(s, &in, rs->id[rs->n_mem], NULL, &err) != ELPIS_OK) fail_msg("add: %s", err.msg);
    rs->label[rs->n_mem++] = strdup(json_string_value(json_object_get(j, "id")));
}

static void load_set(elpis_memory_store *s, recall_set *rs) {
    FILE *f = open_data();
    json_error_t je;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, &je);
        if (!j) fail_msg("recall set: %s", je.text);
        const char *kind = json_string_value(json_object_get(j, "kind"));
        if (kind && strcmp(kind, "memory") == 0) {
            add_memory(s, rs, j);
        } else {
            assert_true(rs->n_q < MAX_QUERIES);
            rs->query[rs->n_q] = strdup(json_string_value(json_object_get(j, "query")));
            rs->expected[rs->n_q++] = strdup(json_string_value(json_object_get(j, "expected")));
        }
        json_decref(j);
    }
    fclose(f);
}

static const char *label_of(const recall_set *rs, const char *id) {
    for (size_t i = 0; i < rs->n_mem; i++)
        if (strcmp(rs->id[i], id) == 0) return rs->label[i];
    return "?";
}

/* recall@k of the queries against store `s`; prints the misses when verbose. */
static double recall_at(elpis_memory_store *s, const recall_set *rs, int k, bool hybrid, bool verbose) {
    size_t found = 0;
    for (size_t q = 0; q < rs->n_q; q++) {
        elpis_memory_query mq = { .query = rs->query[q], .n_results = k, .use_hybrid = hybrid, .emotion_weight = -1,
                                  .no_access_bump = true };
        elpis_memory_results r = { 0 };
        elpis_error err = { 0 };
        if (elpis_memory_search(s, &mq, &r, &err) != ELPIS_OK) fail_msg("search: %s", err.msg);
        bool hit = false;
        for (size_t i = 0; i < r.n; i++) hit |= strcmp(label_of(rs, r.hits[i].mem.id), rs->expected[q]) == 0;
        found += hit;
        if (!hit && verbose) {
            printf("    miss: \"%s\" (want %s) got", rs->query[q], rs->expected[q]);
            for (size_t i = 0; i < r.n; i++) printf(" %s", label_of(rs, r.hits[i].mem.id));
            printf("\n");
        }
        elpis_memory_results_free(&r);
    }
    return (double)found / (double)rs->n_q;
}

static void test_recall_at_5(void **state) {
    (void)state;
    elpis_db *db = NULL;
    elpis_memory_store *s = NULL;
    elpis_error err = { 0 };
    recall_set *rs = calloc(1, sizeof *rs);
    assert_int_equal(elpis_db_open_file(&db, ":memory:", &err), ELPIS_OK);
    assert_int_equal(elpis_memory_store_open(&s, db, NULL, g.emb, &err), ELPIS_OK);
    load_set(s, rs);
    assert_int_equal(rs->n_mem, 200);
    assert_int_equal(rs->n_q, 40);

    double hybrid = recall_at(s, rs, 5, true, true);
    double vector_only = recall_at(s, rs, 5, false, false);
    elpis_memory_store_close(s);
    /* BM25 alone: the same pipeline with the vector list weighted out */
    elpis_memory_config c = elpis_memory_default_config();
    c.vector_weight = 0;
    assert_int_equal(elpis_memory_store_open(&s, db, &c, g.emb, &err), ELPIS_OK);
    double bm25_only = recall_at(s, rs, 5, true, false);
    elpis_memory_store_close(s);

    printf("  recall@5 over %zu queries, %zu memories: hybrid %.3f  (vector only %.3f, bm25 only %.3f)\n", rs->n_q,
           rs->n_mem, hybrid, vector_only, bm25_only);
    assert_true(hybrid >= 0.8);
    for (size_t i = 0; i < rs->n_mem; i++) free(rs->label[i]);
    for (size_t i = 0; i < rs->n_q; i++) {
        free(rs->query[i]);
        free(rs->expected[i]);
    }
    free(rs);
    elpis_db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedder_basics),
        cmocka_unit_test(test_embedder_paraphrase_closer),
        cmocka_unit_test(test_embedder_long_text),
        cmocka_unit_test(test_reembed),
        cmocka_unit_test(test_recall_at_5),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
