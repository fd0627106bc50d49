/* memory_bench.c -- memory store benchmark (not a test).
 *
 *   build/bench_memory_bench [--dim D] [--queries Q] [--keep] [N ...]   (default N: 10000 100000)
 *
 * For each N, in a fresh database file under $TMPDIR (WAL, synchronous=FULL,
 * as in production):
 *   - store throughput: 1000 single elpis_memory_add calls (one fsync'ed
 *     COMMIT each: the rate a client sees), then the rest in batches of 1000
 *     with elpis_memory_add_many (how the fill is done here);
 *   - re-open time (migration check + loading the vector cache);
 *   - search latency p50/p99 over Q queries: hybrid (BM25 + exact cosine +
 *     RRF + quality), with and without the access-count bump, with a mood,
 *     and vector-only;
 *   - one consolidation run (clock moved 2 h ahead so the batch is full).
 * Memories are synthetic: 10-30 words drawn (Zipf-like) from a 5000-word
 * vocabulary, and random unit vectors of D dimensions (default 64, the
 * stories260K width; try 384 for a MiniLM-sized model).
 */
#include "elpis/memory.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VOCAB 5000
#define BATCH 1000
#define SINGLE 1000

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return g_rng;
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* Zipf-like: word i with weight ~ 1/(i+1), by inverse transform on a log scale. */
static int word_id(void) { return (int)(exp(unif() * log(VOCAB + 1.0)) - 1.0); }

static void word(int id, char *out) {
    static const char *const syl[] = { "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa" };
    out[0] = 0;
    do {
        strcat(out, syl[id % 10]);
        id /= 10;
    } while (id);
    strcat(out, "n");
}

static void sentence(char *buf, size_t cap) {
    int n = 10 + (int)(rnd() % 21);
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        char w[32];
        word(word_id(), w);
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " " : "", w);
    }
}

static void unit_vec(float *v, int dim) {
    double norm = 0;
    for (int d = 0; d < dim; d++) {
        double u1 = unif() + 1e-12, u2 = unif();
        v[d] = (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
        norm += (double)v[d] * v[d];
    }
    for (int d = 0; d < dim; d++) v[d] = (float)(v[d] / sqrt(norm));
}

/* Two hours from now: every memory is old enough to consolidate. */
static double later_clock(void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9 + 7200;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, const elpis_error *err) {
    fprintf(stderr, "memory_bench: %s: %s\n", what, err->msg);
    exit(1);
}

typedef struct search_mode {
    const char *name;
    bool hybrid, bump, mood;
} search_mode;

static void bench_search(elpis_memory_store *s, int dim, int queries, const search_mode *m) {
    double *t = malloc((size_t)queries * sizeof *t);
    float *qv = malloc((size_t)dim * sizeof *qv);
    elpis_error err = { 0 };
    for (int i = 0; i < queries; i++) {
        char q[64], w[32];
        q[0] = 0;
        for (int k = 0; k < 3; k++) {
            word(word_id(), w);
            strcat(q, w);
            strcat(q, " ");
        }
        unit_vec(qv, dim);
        elpis_memory_query mq = { .query = q, .n_results = 10, .use_hybrid = m->hybrid, .emotion_weight = -1,
                                  .has_emotion = m->mood, .valence = 0.5, .arousal = -0.2, .query_embedding = qv,
                                  .query_dim = dim, .no_access_bump = !m->bump };
        elpis_memory_results r = { 0 };
        double t0 = elpis_now_ms();
        if (elpis_memory_search(s, &mq, &r, &err) != ELPIS_OK) die("search", &err);
        t[i] = elpis_now_ms() - t0;
        elpis_memory_results_free(&r);
    }
    qsort(t, (size_t)queries, sizeof *t, cmp_double);
    printf("  search %-22s p50 %7.2f ms   p99 %7.2f ms\n", m->name, t[queries / 2], t[(queries * 99) / 100]);
    free(t);
    free(qv);
}

static void fill(elpis_memory_store *s, int n, int dim) {
    elpis_memory_input *in = calloc(BATCH, sizeof *in);
    char (*text)[400] = malloc(BATCH * sizeof *text);
    float *vecs = malloc((size_t)BATCH * dim * sizeof *vecs);
    elpis_error err = { 0 };
    int single = n < SINGLE ? n : SINGLE;
    double t0 = elpis_now_ms();
    for (int i = 0; i < single; i++) {
        sentence(text[0], sizeof text[0]);
        unit_vec(vecs, dim);
        elpis_memory_input one = { .content = text[0], .embedding = vecs, .embedding_dim = dim };
        if (elpis_memory_add(s, &one, NULL, NULL, &err) != ELPIS_OK) die("add", &err);
    }
    double t1 = elpis_now_ms();
    printf("  store, one call each:     %8.0f memories/s (%.2f ms per acknowledged store)\n",
           single / ((t1 - t0) / 1000.0), (t1 - t0) / single);
    int done = single;
    while (done < n) {
        int k = n - done < BATCH ? n - done : BATCH;
        for (int i = 0; i < k; i++) {
            sentence(text[i], sizeof text[i]);
            unit_vec(vecs + (size_t)i * dim, dim);
            in[i] = (elpis_memory_input){ .content = text[i], .embedding = vecs + (size_t)i * dim, .embedding_dim = dim,
                                          .type = (elpis_memory_type)(rnd() % 4) };
        }
        if (elpis_memory_add_many(s, in, (size_t)k, NULL, NULL, &err) != ELPIS_OK) die("add_many", &err);
        done += k;
    }
    if (n > single) {
        double t2 = elpis_now_ms();
        printf("  store, batches of %d:   %8.0f memories/s\n", BATCH, (n - single) / ((t2 - t1) / 1000.0));
    }
    free(in);
    free(text);
    free(vecs);
}

static bool g_keep;   /* --keep: leave the database for inspection */

static void run(int n, int dim, int queries) {
    char dir[] = "/tmp/elpis-memory-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    elpis_db *db = NULL;
    elpis_memory_store *s = NULL;
    elpis_error err = { 0 };
    printf("N = %d memories, %d-d vectors\n", n, dim);
    if (elpis_db_open(&db, dir, &err) != ELPIS_OK) die("open", &err);
    if (elpis_memory_store_open(&s, db, NULL, NULL, &err) != ELPIS_OK) die("store", &err);
    fill(s, n, dim);
    elpis_memory_store_close(s);
    double t0 = elpis_now_ms();
    if (elpis_memory_store_open(&s, db, NULL, NULL, &err) != ELPIS_OK) die("reopen", &err);
    printf("  re-open (vector cache):   %8.1f ms\n", elpis_now_ms() - t0);
    static const search_mode modes[] = {
        { "hybrid", true, true, false },
        { "hybrid, no access bump", true, false, false },
        { "hybrid + mood", true, true, true },
        { "vector only", false, false, false },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(modes); i++) bench_search(s, dim, queries, &modes[i]);
    elpis_consolidation_report r;
    elpis_memory_set_clock(s, later_clock, NULL);
    t0 = elpis_now_ms();
    if (elpis_memory_consolidate(s, -1, -1, &r, &err) != ELPIS_OK) die("consolidate", &err);
    printf("  consolidate (batch of %d): %7.1f ms\n", r.total_processed, elpis_now_ms() - t0);
    elpis_consolidation_report_free(&r);
    elpis_memory_store_close(s);
    elpis_db_close(db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (g_keep) printf("  kept %s/elpis.db\n", dir);
    else if (system(cmd) != 0) fprintf(stderr, "memory_bench: could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    int dim = 64, queries = 500, sizes[8], n_sizes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dim") && i + 1 < argc) dim = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc) queries = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep")) g_keep = true;
        else if (n_sizes < 8 && atoi(argv[i]) > 0) sizes[n_sizes++] = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: %s [--dim D] [--queries Q] [--keep] [N ...]\n", argv[0]);
            return 2;
        }
    }
    if (dim <= 0 || queries <= 0) return 2;
    if (!n_sizes) {
        sizes[n_sizes++] = 10000;
        sizes[n_sizes++] = 100000;
    }
    for (int i = 0; i < n_sizes; i++) run(sizes[i], dim, queries);
    return 0;
}
