/* store.c -- the memory store: SQLite rows, FTS5 index, vector cache, search,
 * consolidation, export/import.
 *
 * DESIGN
 * ------
 * Table `memories` (component "memory", migrations below) holds every field
 * of a record; tags, related and source ids, and metadata are JSON text;
 * emotional context is NULL columns when absent; the vector is a float32
 * BLOB with its dimension and the name of the model that made it. `rid` is an
 * INTEGER PRIMARY KEY so VACUUM never renumbers it (the FTS index refers to it).
 *
 * `memories_fts` is an external-content FTS5 table (porter + unicode61) over
 * content, summary and tags, kept in sync by triggers, so the index commits
 * or rolls back with the row. Query terms are bound as a parameter, each
 * quoted, joined with OR: user text never reaches FTS5 syntax.
 *
 * The in-memory index has two parts: a contiguous [n][dim] matrix of unit
 * vectors with the rid and status of each (a vector search is one pass of
 * dot products), and a table indexed by rid giving every row's status and
 * vector slot (BM25 hits are filtered and looked up in O(1), with no join).
 * It is loaded at open, updated after each COMMIT (never before: a
 * rolled-back write must not appear), and reloaded when `PRAGMA
 * data_version` shows that another connection (e.g. `elpis memory import`
 * while the server runs) committed. Vectors from a different model or of
 * another dimension are left out (elpis_memory_reembed fixes them).
 *
 * INVARIANTS
 * ----------
 *   - Every public function takes s->mu; internal *_locked helpers assume it.
 *   - A write returns ELPIS_OK only after COMMIT (synchronous=FULL), except
 *     access-count bumps, which commit at synchronous=NORMAL (see memory.h).
 *   - Index == table: every row in the rid table with its status; every
 *     row with a usable vector in the matrix, status equal.
 *   - Archived rows are never returned by search (both lists skip them).
 */
#include "elpis/memory.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- schema -------------------------------------------------------------------- */

static const char *const MIGRATIONS[] = {
    /* v1 */
    "CREATE TABLE memories ("
    " rid INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 36),"
    " content TEXT NOT NULL,"
    " summary TEXT NOT NULL,"
    " memory_type TEXT NOT NULL CHECK (memory_type IN ('episodic','semantic','procedural','emotional')),"
    " status TEXT NOT NULL CHECK (status IN ('short_term','long_term','archived')),"
    " tags TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),"
    " valence REAL, arousal REAL, quadrant TEXT, salience REAL,"
    " importance REAL NOT NULL,"
    " created_at REAL NOT NULL,"
    " last_accessed REAL NOT NULL,"
    " access_count INTEGER NOT NULL DEFAULT 0,"
    " related_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(related_ids)),"
    " source_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(source_ids)),"
    " metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),"
    " embedding BLOB, embedding_dim INTEGER, embedding_model TEXT);"
    "CREATE INDEX memories_status_created ON memories(status, created_at);"
    "CREATE VIRTUAL TABLE memories_fts USING fts5(content, summary, tags,"
    " content='memories', content_rowid='rid', tokenize='porter unicode61');"
    "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN"
    " INSERT INTO memories_fts(rowid, content, summary, tags) VALUES (new.rid, new.content, new.summary, new.tags);"
    " END;"
    "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN"
    " INSERT INTO memories_fts(memories_fts, rowid, content, summary, tags)"
    "  VALUES ('delete', old.rid, old.content, old.summary, old.tags);"
    " END;"
    "CREATE TRIGGER memories_au AFTER UPDATE OF content, summary, tags ON memories BEGIN"
    " INSERT INTO memories_fts(memories_fts, rowid, content, summary, tags)"
    "  VALUES ('delete', old.rid, old.content, old.summary, old.tags);"
    " INSERT INTO memories_fts(rowid, content, summary, tags) VALUES (new.rid, new.content, new.summary, new.tags);"
    " END;",
};

/* BM25 column weights: content counts most; the summary is often a prefix
 * of the content (so it mostly repeats it); tags are short labels. */
#define BM25_EXPR "bm25(memories_fts, 1.0, 0.5, 0.25)"

#define COLS "rid, id, content, summary, memory_type, status, tags, valence, arousal, quadrant, salience," \
             " importance, created_at, last_accessed, access_count, related_ids, source_ids, metadata"
#define N_COLS 18

#define MAX_RESULTS 1000

/* ---- the store ------------------------------------------------------------------ */

typedef struct vec_cache {
    int32_t dim;
    size_t n, cap;          /* vector rows */
    float *mat;             /* [cap][dim], unit vectors */
    int64_t *rid;           /* [cap] rid of each vector row */
    uint8_t *status;        /* [cap] elpis_memory_status (kept next to the vectors for the scan) */
    /* every row, with or without a vector, indexed by rid */
    size_t rcap;
    uint8_t *row_status;    /* [rcap] 0: no such row, else 1 + elpis_memory_status */
    int32_t *row_slot;      /* [rcap] vector row of the rid, -1: none */
    size_t n_rows;          /* live rows */
} vec_cache;

struct elpis_memory_store {
    pthread_mutex_t mu;
    elpis_db *db;
    sqlite3 *h;
    elpis_memory_config cfg;
    elpis_embedder *emb;
    double (*now)(void *ud);
    void *now_ud;
    vec_cache vc;
    int64_t data_version;
    size_t n_stale;     /* vectors left out of the cache (other model/dim) */
};

static double wall_clock(void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_s(elpis_memory_store *s) { return s->now(s->now_ud); }

static elpis_status sql_fail(elpis_memory_store *s, elpis_error *err, const char *what) {
    return elpis_fail(err, ELPIS_EIO, "memory: %s: %s", what, sqlite3_errmsg(s->h));
}

static elpis_status prepare(elpis_memory_store *s, const char *sql, sqlite3_stmt **st, elpis_error *err) {
    if (sqlite3_prepare_v2(s->h, sql, -1, st, NULL) == SQLITE_OK) return ELPIS_OK;
    return sql_fail(s, err, "prepare");
}

static elpis_status exec_sql(elpis_memory_store *s, const char *sql, elpis_error *err) {
    if (sqlite3_exec(s->h, sql, NULL, NULL, NULL) == SQLITE_OK) return ELPIS_OK;
    return sql_fail(s, err, sql);
}

static elpis_status begin_write(elpis_memory_store *s, elpis_error *err) { return exec_sql(s, "BEGIN IMMEDIATE", err); }
static elpis_status commit(elpis_memory_store *s, elpis_error *err) { return exec_sql(s, "COMMIT", err); }
static void rollback(elpis_memory_store *s) {
    if (!sqlite3_get_autocommit(s->h)) sqlite3_exec(s->h, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- in-memory index: vector matrix + per-rid row table ---------------------------- */

static void cache_free(vec_cache *vc) {
    free(vc->mat);
    free(vc->rid);
    free(vc->status);
    free(vc->row_status);
    free(vc->row_slot);
    memset(vc, 0, sizeof *vc);
}

static elpis_status cache_reserve(vec_cache *vc, size_t want) {
    if (want <= vc->cap) return ELPIS_OK;
    size_t cap = vc->cap ? vc->cap : 256;
    while (cap < want) cap *= 2;
    float *mat = realloc(vc->mat, cap * (size_t)vc->dim * sizeof *mat);
    if (mat) vc->mat = mat;
    int64_t *rid = realloc(vc->rid, cap * sizeof *rid);
    if (rid) vc->rid = rid;
    uint8_t *st = realloc(vc->status, cap * sizeof *st);
    if (st) vc->status = st;
    if (!mat || !rid || !st) return ELPIS_ENOMEM;
    vc->cap = cap;
    return ELPIS_OK;
}

/* Room in the row table for `rid` (rids are SQLite's dense rowids). */
static elpis_status rows_reserve(vec_cache *vc, int64_t rid) {
    if (rid < 0) return ELPIS_EINVAL;
    if ((size_t)rid < vc->rcap) return ELPIS_OK;
    size_t cap = vc->rcap ? vc->rcap : 1024;
    while (cap <= (size_t)rid) cap *= 2;
    uint8_t *st = realloc(vc->row_status, cap * sizeof *st);
    if (st) vc->row_status = st;
    int32_t *slot = realloc(vc->row_slot, cap * sizeof *slot);
    if (slot) vc->row_slot = slot;
    if (!st || !slot) return ELPIS_ENOMEM;
    for (size_t i = vc->rcap; i < cap; i++) {
        st[i] = 0;
        slot[i] = -1;
    }
    vc->rcap = cap;
    return ELPIS_OK;
}

static elpis_status rows_put(vec_cache *vc, int64_t rid, elpis_memory_status status) {
    if (rows_reserve(vc, rid) != ELPIS_OK) return ELPIS_ENOMEM;
    if (!vc->row_status[rid]) vc->n_rows++;
    vc->row_status[rid] = (uint8_t)(1 + status);
    return ELPIS_OK;
}

/* Is this rid a live, searchable (not archived) row? */
static bool row_searchable(const vec_cache *vc, int64_t rid) {
    return rid >= 0 && (size_t)rid < vc->rcap && vc->row_status[rid] &&
           vc->row_status[rid] != 1 + ELPIS_MEM_ARCHIVED;
}

/* Append a copy of v, normalised (so search is a plain dot product). The
 * row must have been put first. */
static elpis_status cache_add(vec_cache *vc, int64_t rid, elpis_memory_status status, const float *v) {
    if (cache_reserve(vc, vc->n + 1) != ELPIS_OK) return ELPIS_ENOMEM;
    float *dst = vc->mat + vc->n * (size_t)vc->dim;
    double norm = 0;
    for (int32_t d = 0; d < vc->dim; d++) norm += (double)v[d] * v[d];
    norm = norm > 0 ? sqrt(norm) : 1;
    for (int32_t d = 0; d < vc->dim; d++) dst[d] = (float)(v[d] / norm);
    vc->rid[vc->n] = rid;
    vc->status[vc->n] = (uint8_t)status;
    vc->row_slot[rid] = (int32_t)vc->n;
    vc->n++;
    return ELPIS_OK;
}

static ssize_t cache_find(const vec_cache *vc, int64_t rid) {
    return rid >= 0 && (size_t)rid < vc->rcap ? vc->row_slot[rid] : -1;
}

/* Forget a row (and its vector: the last vector moves into its slot). */
static void cache_remove(vec_cache *vc, int64_t rid) {
    ssize_t i = cache_find(vc, rid);
    if (i >= 0) {
        size_t last = vc->n - 1;
        if ((size_t)i != last) {
            memcpy(vc->mat + (size_t)i * vc->dim, vc->mat + last * vc->dim, (size_t)vc->dim * sizeof *vc->mat);
            vc->rid[i] = vc->rid[last];
            vc->status[i] = vc->status[last];
            vc->row_slot[vc->rid[i]] = (int32_t)i;
        }
        vc->row_slot[rid] = -1;
        vc->n--;
    }
    if (rid >= 0 && (size_t)rid < vc->rcap && vc->row_status[rid]) {
        vc->row_status[rid] = 0;
        vc->n_rows--;
    }
}

static void cache_set_status(vec_cache *vc, int64_t rid, elpis_memory_status st) {
    ssize_t i = cache_find(vc, rid);
    if (i >= 0) vc->status[i] = (uint8_t)st;
    if (rid >= 0 && (size_t)rid < vc->rcap && vc->row_status[rid]) vc->row_status[rid] = (uint8_t)(1 + st);
}

/* The model name a vector must carry to be used ("" without an embedder:
 * then any vector of the store's dimension is accepted). */
static const char *vec_model(elpis_memory_store *s) { return s->emb ? elpis_embedder_name(s->emb) : ""; }

static bool vector_usable(elpis_memory_store *s, int32_t dim, const char *model) {
    if (dim <= 0) return false;
    if (s->emb) return dim == s->vc.dim && model && strcmp(model, vec_model(s)) == 0;
    return s->vc.dim == 0 || dim == s->vc.dim;
}

static int64_t data_version(elpis_memory_store *s) {
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(s->h, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static elpis_status cache_load(elpis_memory_store *s, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    vec_cache *vc = &s->vc;
    elpis_status rc = prepare(s, "SELECT rid, status, embedding, embedding_dim, embedding_model FROM memories ORDER BY rid",
                              &st, err);
    if (rc != ELPIS_OK) return rc;
    vc->n = 0;
    vc->n_rows = 0;
    for (size_t i = 0; i < vc->rcap; i++) {
        vc->row_status[i] = 0;
        vc->row_slot[i] = -1;
    }
    s->n_stale = 0;
    if (!s->emb) vc->dim = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t rid = sqlite3_column_int64(st, 0);
        elpis_memory_status status = ELPIS_MEM_SHORT_TERM;
        elpis_memory_status_parse((const char *)sqlite3_column_text(st, 1), &status);
        if (rows_put(vc, rid, status) != ELPIS_OK) goto oom;
        if (sqlite3_column_type(st, 2) == SQLITE_NULL) continue;
        int32_t dim = sqlite3_column_int(st, 3);
        int bytes = sqlite3_column_bytes(st, 2);
        if (!vector_usable(s, dim, (const char *)sqlite3_column_text(st, 4)) || bytes != dim * (int)sizeof(float)) {
            s->n_stale++;
            continue;
        }
        if (vc->dim == 0) vc->dim = dim;
        /* BLOBs are not guaranteed float-aligned: copy before use. */
        float tmp[dim];
        memcpy(tmp, sqlite3_column_blob(st, 2), (size_t)bytes);
        if (cache_add(vc, rid, status, tmp) != ELPIS_OK) goto oom;
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) return sql_fail(s, err, "load vectors");
    if (s->n_stale)
        elpis_log(ELPIS_LOG_WARN, "memory: %zu stored vectors come from another model or dimension; "
                  "run a re-embed to search them by meaning", s->n_stale);
    s->data_version = data_version(s);
    return ELPIS_OK;
oom:
    sqlite3_finalize(st);
    s->data_version = -1;   /* incomplete: reload next time */
    return elpis_fail(err, ELPIS_ENOMEM, "memory: index: out of memory");
}

/* Another connection committed since we last looked: our cache may be stale. */
static elpis_status cache_refresh(elpis_memory_store *s, elpis_error *err) {
    int64_t v = data_version(s);
    if (v == s->data_version) return ELPIS_OK;
    return cache_load(s, err);
}

/* ---- open / close -------------------------------------------------------------- */

elpis_status elpis_memory_store_open(elpis_memory_store **out, elpis_db *db, const elpis_memory_config *cfg,
                                     elpis_embedder *emb, elpis_error *err) {
    elpis_status st;
    if (!out || !db) return elpis_fail(err, ELPIS_EINVAL, "memory: no database");
    elpis_memory_config c = cfg ? *cfg : elpis_memory_default_config();
    if ((st = elpis_memory_config_validate(&c, err)) != ELPIS_OK) return st;
    if ((st = elpis_db_migrate(db, "memory", MIGRATIONS, (int)ELPIS_ARRAY_LEN(MIGRATIONS), err)) != ELPIS_OK)
        return st;
    elpis_memory_store *s = calloc(1, sizeof *s);
    if (!s) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->db = db;
    s->h = elpis_db_handle(db);
    s->cfg = c;
    s->emb = emb;
    s->now = wall_clock;
    s->vc.dim = emb ? elpis_embedder_dim(emb) : 0;
    if ((st = cache_load(s, err)) != ELPIS_OK) {
        elpis_memory_store_close(s);
        return st;
    }
    *out = s;
    return ELPIS_OK;
}

void elpis_memory_store_close(elpis_memory_store *s) {
    if (!s) return;
    cache_free(&s->vc);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const elpis_memory_config *elpis_memory_store_config(const elpis_memory_store *s) { return &s->cfg; }

int32_t elpis_memory_dim(elpis_memory_store *s) {
    pthread_mutex_lock(&s->mu);
    int32_t d = s->vc.dim;
    pthread_mutex_unlock(&s->mu);
    return d;
}

void elpis_memory_set_clock(elpis_memory_store *s, double (*now)(void *ud), void *ud) {
    pthread_mutex_lock(&s->mu);
    s->now = now ? now : wall_clock;
    s->now_ud = now ? ud : NULL;
    pthread_mutex_unlock(&s->mu);
}

/* ---- rows <-> records ------------------------------------------------------------ */

static elpis_status strv_from_json_text(const char *text, elpis_strv *out) {
    json_t *a = json_loads(text ? text : "[]", 0, NULL);
    elpis_status st = ELPIS_OK;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (json_is_string(v) && (st = elpis_strv_push(out, json_string_value(v))) != ELPIS_OK) break;
    }
    json_decref(a);
    return st;
}

static char *strv_to_json_text(const elpis_strv *sv) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < sv->n; i++) json_array_append_new(a, json_string(sv->v[i]));
    char *t = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return t;
}

static char *col_dup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

/* Read the COLS columns starting at column 0 into `m` (zeroed first). */
static elpis_status read_row(sqlite3_stmt *st, elpis_memory *m, int64_t *rid) {
    memset(m, 0, sizeof *m);
    if (rid) *rid = sqlite3_column_int64(st, 0);
    snprintf(m->id, sizeof m->id, "%s", (const char *)sqlite3_column_text(st, 1));
    m->content = col_dup(st, 2);
    m->summary = col_dup(st, 3);
    elpis_memory_type_parse((const char *)sqlite3_column_text(st, 4), &m->type);
    elpis_memory_status_parse((const char *)sqlite3_column_text(st, 5), &m->status);
    elpis_status rc = strv_from_json_text((const char *)sqlite3_column_text(st, 6), &m->tags);
    if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
        m->emotion.present = true;
        m->emotion.valence = sqlite3_column_double(st, 7);
        m->emotion.arousal = sqlite3_column_double(st, 8);
        const unsigned char *q = sqlite3_column_text(st, 9);
        snprintf(m->emotion.quadrant, sizeof m->emotion.quadrant, "%s", q ? (const char *)q : "neutral");
        m->emotion.salience = sqlite3_column_double(st, 10);
    }
    m->importance = sqlite3_column_double(st, 11);
    m->created_at = sqlite3_column_double(st, 12);
    m->last_accessed = sqlite3_column_double(st, 13);
    m->access_count = sqlite3_column_int64(st, 14);
    if (rc == ELPIS_OK) rc = strv_from_json_text((const char *)sqlite3_column_text(st, 15), &m->related_ids);
    if (rc == ELPIS_OK) rc = strv_from_json_text((const char *)sqlite3_column_text(st, 16), &m->source_ids);
    m->metadata_json = col_dup(st, 17);
    if (rc != ELPIS_OK || !m->content || !m->summary || !m->metadata_json) {
        elpis_memory_clear(m);
        return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

/* Insert a full record (and its vector, if any); *rid_out gets the rowid. */
static elpis_status insert_row(elpis_memory_store *s, const elpis_memory *m, const float *vec, int32_t dim,
                               int64_t *rid_out, elpis_error *err) {
    static const char sql[] =
        "INSERT INTO memories(id, content, summary, memory_type, status, tags, valence, arousal, quadrant, salience,"
        " importance, created_at, last_accessed, access_count, related_ids, source_ids, metadata, embedding,"
        " embedding_dim, embedding_model) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20)";
    sqlite3_stmt *st = NULL;
    char *tags = strv_to_json_text(&m->tags), *rel = strv_to_json_text(&m->related_ids);
    char *src = strv_to_json_text(&m->source_ids);
    elpis_status rc = ELPIS_OK;
    if (!tags || !rel || !src) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    if ((rc = prepare(s, sql, &st, err)) != ELPIS_OK) goto done;
    sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->content, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->summary ? m->summary : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, elpis_memory_type_name(m->type), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, elpis_memory_status_name(m->status), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, tags, -1, SQLITE_STATIC);
    if (m->emotion.present) {
        sqlite3_bind_double(st, 7, m->emotion.valence);
        sqlite3_bind_double(st, 8, m->emotion.arousal);
        sqlite3_bind_text(st, 9, m->emotion.quadrant[0] ? m->emotion.quadrant : "neutral", -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 10, m->emotion.salience);
    }
    sqlite3_bind_double(st, 11, m->importance);
    sqlite3_bind_double(st, 12, m->created_at);
    sqlite3_bind_double(st, 13, m->last_accessed);
    sqlite3_bind_int64(st, 14, m->access_count);
    sqlite3_bind_text(st, 15, rel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, src, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 17, m->metadata_json && *m->metadata_json ? m->metadata_json : "{}", -1, SQLITE_STATIC);
    if (vec && dim > 0) {
        sqlite3_bind_blob(st, 18, vec, dim * (int)sizeof(float), SQLITE_STATIC);
        sqlite3_bind_int(st, 19, dim);
        sqlite3_bind_text(st, 20, vec_model(s), -1, SQLITE_STATIC);
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(s->h) == SQLITE_CONSTRAINT_UNIQUE
                 ? elpis_fail(err, ELPIS_EINVAL, "memory: id %s already exists", m->id)
                 : sql_fail(s, err, "insert");
        goto done;
    }
    *rid_out = sqlite3_last_insert_rowid(s->h);
done:
    sqlite3_finalize(st);
    free(tags);
    free(rel);
    free(src);
    return rc;
}

/* rid of an id, or 0 when absent. */
static elpis_status find_rid(elpis_memory_store *s, const char *id, int64_t *rid, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    elpis_status rc = prepare(s, "SELECT rid FROM memories WHERE id = ?1", &st, err);
    if (rc != ELPIS_OK) return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    *rid = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? ELPIS_OK : sql_fail(s, err, "find");
}

/* ---- ids and input checks ------------------------------------------------------------ */

static void new_uuid4(char out[ELPIS_MEMORY_ID_LEN + 1]) {
    uint8_t b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* Practically unreachable; fall back to a time-and-address mix. */
        uint64_t x = (uint64_t)(wall_clock(NULL) * 1e9) ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            b[i] = (uint8_t)x;
        }
    }
    b[6] = (uint8_t)((b[6] & 0x0F) | 0x40);   /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);   /* RFC 4122 variant */
    snprintf(out, ELPIS_MEMORY_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
             b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void elpis_memory_new_id(char out[ELPIS_MEMORY_ID_LEN + 1]) { new_uuid4(out); }

static double clamp1(double x) { return x < -1 ? -1 : x > 1 ? 1 : x; }

static elpis_status check_content(elpis_memory_store *s, const char *content, elpis_error *err) {
    if (!content || !*content) return elpis_fail(err, ELPIS_EINVAL, "memory: content is empty");
    size_t n = strlen(content);
    if (n > s->cfg.max_content_bytes)
        return elpis_fail(err, ELPIS_EINVAL, "memory: content is %zu bytes, the limit is %zu (max_content_bytes)", n,
                          s->cfg.max_content_bytes);
    return ELPIS_OK;
}

static elpis_status check_metadata(const char *text, elpis_error *err) {
    if (!text) return ELPIS_OK;
    json_t *j = json_loads(text, 0, NULL);
    bool ok = json_is_object(j);
    json_decref(j);
    return ok ? ELPIS_OK : elpis_fail(err, ELPIS_EINVAL, "memory: metadata must be a JSON object");
}

/* Vector for a new row: the given one, else the embedder's, else none.
 * *vec is malloc'd (or NULL). */
static elpis_status vector_for(elpis_memory_store *s, const char *content, const float *given, int32_t given_dim,
                               float **vec, int32_t *dim, elpis_error *err) {
    *vec = NULL;
    *dim = 0;
    if (given) {
        if (given_dim <= 0 || (s->vc.dim > 0 && given_dim != s->vc.dim))
            return elpis_fail(err, ELPIS_EINVAL, "memory: embedding has %d dimensions, the store uses %d", given_dim,
                              s->vc.dim);
        if (!(*vec = malloc((size_t)given_dim * sizeof **vec))) return elpis_fail(err, ELPIS_ENOMEM, "memory: oom");
        memcpy(*vec, given, (size_t)given_dim * sizeof **vec);
        *dim = given_dim;
        return ELPIS_OK;
    }
    if (!s->emb) return ELPIS_OK;
    int32_t d = elpis_embedder_dim(s->emb);
    if (!(*vec = malloc((size_t)d * sizeof **vec))) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    elpis_status rc = elpis_embed(s->emb, content, strlen(content), *vec, err);
    if (rc != ELPIS_OK) {
        free(*vec);
        *vec = NULL;
        return rc;
    }
    *dim = d;
    return ELPIS_OK;
}

/* After COMMIT: make the index agree with a row just written. */
static void cache_after_insert(elpis_memory_store *s, int64_t rid, elpis_memory_status st, const float *vec,
                               int32_t dim) {
    vec_cache *vc = &s->vc;
    if (rows_put(vc, rid, st) != ELPIS_OK) goto oom;
    if (!vec || dim <= 0) return;
    if (vc->dim == 0) vc->dim = dim;
    if (dim != vc->dim) return;
    if (cache_add(vc, rid, st, vec) != ELPIS_OK) goto oom;
    return;
oom:
    /* The row is committed; only the index lacks it. Reload next time. */
    s->data_version = -1;
    elpis_log(ELPIS_LOG_WARN, "memory: index: out of memory; will reload");
}

/* ---- add / put / get / delete ------------------------------------------------------------ */

static elpis_status fill_new(elpis_memory_store *s, const elpis_memory_input *in, elpis_memory *m, elpis_error *err) {
    memset(m, 0, sizeof *m);
    if (in->id && strlen(in->id) == ELPIS_MEMORY_ID_LEN) memcpy(m->id, in->id, sizeof m->id);
    else new_uuid4(m->id);
    m->content = strdup(in->content);
    m->summary = in->summary ? strdup(in->summary) : elpis_utf8_prefix(in->content, s->cfg.summary_chars);
    m->metadata_json = strdup(in->metadata_json ? in->metadata_json : "{}");
    m->type = (unsigned)in->type <= ELPIS_MEM_EMOTIONAL ? in->type : ELPIS_MEM_EPISODIC;
    m->status = ELPIS_MEM_SHORT_TERM;
    for (size_t i = 0; i < in->n_tags; i++)
        if (in->tags[i] && elpis_strv_push(&m->tags, in->tags[i]) != ELPIS_OK) goto oom;
    if (in->has_emotion) {
        m->emotion.present = true;
        m->emotion.valence = clamp1(in->valence);
        m->emotion.arousal = clamp1(in->arousal);
        snprintf(m->emotion.quadrant, sizeof m->emotion.quadrant, "%s",
                 in->quadrant && *in->quadrant ? in->quadrant : "neutral");
        m->emotion.salience = elpis_mem_salience(true, m->emotion.valence, m->emotion.arousal);
    }
    /* At creation age is 0 and access 0, so this is 0.3 + 0.4*salience. */
    m->importance = elpis_mem_importance(elpis_mem_salience(in->has_emotion, m->emotion.valence, m->emotion.arousal), 0, 0);
    m->created_at = m->last_accessed = now_s(s);
    if (!m->content || !m->summary || !m->metadata_json) goto oom;
    return ELPIS_OK;
oom:
    elpis_memory_clear(m);
    return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
}

/* A new record and its vector, checked and embedded, not yet written. */
typedef struct staged {
    elpis_memory m;
    float *vec;
    int32_t dim;
    int64_t rid;
} staged;

static elpis_status stage_one(elpis_memory_store *s, const elpis_memory_input *in, int32_t *want_dim, staged *st,
                              elpis_error *err) {
    elpis_status rc = check_content(s, in->content, err);
    if (rc == ELPIS_OK) rc = check_metadata(in->metadata_json, err);
    if (rc == ELPIS_OK) rc = fill_new(s, in, &st->m, err);
    if (rc == ELPIS_OK) rc = vector_for(s, st->m.content, in->embedding, in->embedding_dim, &st->vec, &st->dim, err);
    if (rc != ELPIS_OK) return rc;
    /* Within one batch every vector must agree too (the cache learns the
     * dimension only after COMMIT). */
    if (st->vec && *want_dim && st->dim != *want_dim)
        return elpis_fail(err, ELPIS_EINVAL, "memory: embedding has %d dimensions, the batch uses %d", st->dim, *want_dim);
    if (st->vec) *want_dim = st->dim;
    return ELPIS_OK;
}

elpis_status elpis_memory_add_many(elpis_memory_store *s, const elpis_memory_input *in, size_t n,
                                   char (*ids)[ELPIS_MEMORY_ID_LEN + 1], double *importance, elpis_error *err) {
    staged *st = NULL;
    elpis_status rc = ELPIS_OK;
    if (!s || (n && !in)) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    if (n == 0) return ELPIS_OK;
    if (!(st = calloc(n, sizeof *st))) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    pthread_mutex_lock(&s->mu);
    int32_t want_dim = s->vc.dim;
    /* Check and embed everything before taking the write lock: embedding is
     * the slow part, and a bad input must fail the batch before any write. */
    for (size_t i = 0; i < n && rc == ELPIS_OK; i++) {
        elpis_error e2 = { 0 };
        if ((rc = stage_one(s, &in[i], &want_dim, &st[i], &e2)) != ELPIS_OK)
            rc = n == 1 ? elpis_fail(err, rc, "%s", e2.msg) : elpis_fail(err, rc, "memory %zu: %s", i, e2.msg);
    }
    if (rc != ELPIS_OK) goto done;
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    for (size_t i = 0; i < n && rc == ELPIS_OK; i++) rc = insert_row(s, &st[i].m, st[i].vec, st[i].dim, &st[i].rid, err);
    if (rc == ELPIS_OK) rc = commit(s, err);
    if (rc != ELPIS_OK) goto done;
    for (size_t i = 0; i < n; i++) {
        cache_after_insert(s, st[i].rid, st[i].m.status, st[i].vec, st[i].dim);
        if (ids) memcpy(ids[i], st[i].m.id, sizeof st[i].m.id);
        if (importance) importance[i] = st[i].m.importance;
    }
done:
    if (rc != ELPIS_OK) rollback(s);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        elpis_memory_clear(&st[i].m);
        free(st[i].vec);
    }
    free(st);
    return rc;
}

elpis_status elpis_memory_add(elpis_memory_store *s, const elpis_memory_input *in, char id_out[ELPIS_MEMORY_ID_LEN + 1],
                              double *importance_out, elpis_error *err) {
    char ids[1][ELPIS_MEMORY_ID_LEN + 1];
    double imp;
    if (!in) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    elpis_status rc = elpis_memory_add_many(s, in, 1, ids, &imp, err);
    if (rc != ELPIS_OK) return rc;
    if (id_out) memcpy(id_out, ids[0], sizeof ids[0]);
    if (importance_out) *importance_out = imp;
    return ELPIS_OK;
}

static elpis_status check_record(elpis_memory_store *s, const elpis_memory *m, elpis_error *err) {
    if (!m->id[0]) return elpis_fail(err, ELPIS_EINVAL, "memory: record has no id");
    elpis_status rc = check_content(s, m->content, err);
    if (rc == ELPIS_OK) rc = check_metadata(m->metadata_json, err);
    return rc;
}

/* Insert or replace one full record (with its precomputed vector, or none)
 * inside an open transaction. */
static elpis_status put_locked(elpis_memory_store *s, const elpis_memory *m, const float *vec, int32_t dim,
                               bool replace, bool *written, int64_t *old_rid, int64_t *new_rid, elpis_error *err) {
    elpis_status rc = find_rid(s, m->id, old_rid, err);
    *written = false;
    if (rc != ELPIS_OK) return rc;
    if (*old_rid && !replace) return ELPIS_OK;
    if (*old_rid) {
        sqlite3_stmt *st = NULL;
        if ((rc = prepare(s, "DELETE FROM memories WHERE rid = ?1", &st, err)) != ELPIS_OK) return rc;
        sqlite3_bind_int64(st, 1, *old_rid);
        int step = sqlite3_step(st);
        sqlite3_finalize(st);
        if (step != SQLITE_DONE) return sql_fail(s, err, "replace");
    }
    if ((rc = insert_row(s, m, vec, dim, new_rid, err)) != ELPIS_OK) return rc;
    *written = true;
    return ELPIS_OK;
}

elpis_status elpis_memory_put(elpis_memory_store *s, const elpis_memory *m, bool replace, bool *written,
                              elpis_error *err) {
    float *vec = NULL;
    int32_t dim = 0;
    int64_t old_rid = 0, new_rid = 0;
    bool w = false;
    elpis_status rc;
    if (!s || !m) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    if ((rc = check_record(s, m, err)) != ELPIS_OK) goto done;
    if ((rc = vector_for(s, m->content, NULL, 0, &vec, &dim, err)) != ELPIS_OK) goto done;
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    if ((rc = put_locked(s, m, vec, dim, replace, &w, &old_rid, &new_rid, err)) != ELPIS_OK) goto done;
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    if (w) {
        if (old_rid) cache_remove(&s->vc, old_rid);
        cache_after_insert(s, new_rid, m->status, vec, dim);
    }
    if (written) *written = w;
done:
    if (rc != ELPIS_OK) rollback(s);
    pthread_mutex_unlock(&s->mu);
    free(vec);
    return rc;
}

elpis_status elpis_memory_get(elpis_memory_store *s, const char *id, elpis_memory *out, bool *found, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    elpis_status rc;
    if (!s || !id || !out || !found) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    *found = false;
    if ((rc = prepare(s, "SELECT " COLS " FROM memories WHERE id = ?1", &st, err)) != ELPIS_OK) goto done;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        if ((rc = read_row(st, out, NULL)) != ELPIS_OK) {
            rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
            goto done;
        }
        *found = true;
    } else if (step != SQLITE_DONE) {
        rc = sql_fail(s, err, "get");
    }
done:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

elpis_status elpis_memory_delete(elpis_memory_store *s, const char *id, bool *deleted, elpis_error *err) {
    int64_t rid = 0;
    sqlite3_stmt *st = NULL;
    elpis_status rc;
    if (!s || !id || !deleted) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    *deleted = false;
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    if ((rc = find_rid(s, id, &rid, err)) != ELPIS_OK || !rid) goto done;
    if ((rc = prepare(s, "DELETE FROM memories WHERE rid = ?1", &st, err)) != ELPIS_OK) goto done;
    sqlite3_bind_int64(st, 1, rid);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sql_fail(s, err, "delete");
        goto done;
    }
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    cache_remove(&s->vc, rid);
    *deleted = true;
done:
    sqlite3_finalize(st);
    if (rc != ELPIS_OK || !*deleted) rollback(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- listing ---------------------------------------------------------------------------- */

/* Run a prepared SELECT COLS statement into a list; rids optional. */
static elpis_status collect(elpis_memory_store *s, sqlite3_stmt *st, elpis_memory_list *out, int64_t **rids,
                            elpis_error *err) {
    size_t cap = 0;
    int step;
    out->items = NULL;
    out->n = 0;
    if (rids) *rids = NULL;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            elpis_memory *items = realloc(out->items, cap * sizeof *items);
            int64_t *r = rids ? realloc(*rids, cap * sizeof *r) : NULL;
            if (items) out->items = items;
            if (r) *rids = r;
            if (!items || (rids && !r)) goto oom;
        }
        int64_t rid;
        if (read_row(st, &out->items[out->n], &rid) != ELPIS_OK) goto oom;
        if (rids) (*rids)[out->n] = rid;
        out->n++;
    }
    if (step == SQLITE_DONE) return ELPIS_OK;
    elpis_status rc = sql_fail(s, err, "read");
    goto fail;
oom:
    rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
fail:
    elpis_memory_list_free(out);
    if (rids) {
        free(*rids);
        *rids = NULL;
    }
    return rc;
}

elpis_status elpis_memory_list_all(elpis_memory_store *s, int status, int limit, int offset, elpis_memory_list *out,
                                   elpis_error *err) {
    sqlite3_stmt *st = NULL;
    elpis_status rc;
    if (!s || !out) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    rc = prepare(s,
                 "SELECT " COLS " FROM memories WHERE (?1 IS NULL OR status = ?1)"
                 " ORDER BY created_at DESC, rid DESC LIMIT ?2 OFFSET ?3",
                 &st, err);
    if (rc == ELPIS_OK) {
        if (status >= 0) sqlite3_bind_text(st, 1, elpis_memory_status_name((elpis_memory_status)status), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
        sqlite3_bind_int64(st, 3, offset > 0 ? offset : 0);
        rc = collect(s, st, out, NULL, err);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Count a retrieval of rows[0..n): access_count++ and last_accessed = now,
 * in the database and in the returned records. These commits skip their own
 * fsync (synchronous=NORMAL): losing a few counts to a power cut is fine,
 * paying an fsync per search is not. The next FULL commit syncs them. */
static elpis_status bump_access(elpis_memory_store *s, const int64_t *rids, elpis_memory **recs, size_t n,
                                elpis_error *err) {
    sqlite3_stmt *st = NULL;
    elpis_status rc = ELPIS_OK;
    if (n == 0) return ELPIS_OK;
    double t = now_s(s);
    sqlite3_exec(s->h, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    if ((rc = prepare(s, "UPDATE memories SET access_count = access_count + 1, last_accessed = ?1 WHERE rid = ?2", &st,
                      err)) != ELPIS_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_double(st, 1, t);
        sqlite3_bind_int64(st, 2, rids[i]);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = sql_fail(s, err, "access count");
            goto done;
        }
        sqlite3_reset(st);
    }
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    for (size_t i = 0; i < n; i++) {
        recs[i]->access_count++;
        recs[i]->last_accessed = t;
    }
done:
    sqlite3_finalize(st);
    if (rc != ELPIS_OK) rollback(s);
    sqlite3_exec(s->h, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    return rc;
}

elpis_status elpis_memory_recent(elpis_memory_store *s, double hours, int limit, elpis_memory_list *out,
                                 elpis_error *err) {
    sqlite3_stmt *st = NULL;
    int64_t *rids = NULL;
    elpis_memory **recs = NULL;
    elpis_status rc;
    if (!s || !out || !(hours >= 0)) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    rc = prepare(s,
                 "SELECT " COLS " FROM memories WHERE status = 'short_term' AND created_at >= ?1"
                 " ORDER BY created_at DESC, rid DESC LIMIT ?2",
                 &st, err);
    if (rc != ELPIS_OK) goto done;
    sqlite3_bind_double(st, 1, now_s(s) - hours * 3600.0);
    sqlite3_bind_int64(st, 2, limit > 0 ? limit : 20);
    if ((rc = collect(s, st, out, &rids, err)) != ELPIS_OK) goto done;
    if (!(recs = malloc((out->n ? out->n : 1) * sizeof *recs))) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    for (size_t i = 0; i < out->n; i++) recs[i] = &out->items[i];
    rc = bump_access(s, rids, recs, out->n, err);
done:
    if (rc != ELPIS_OK) elpis_memory_list_free(out);
    sqlite3_finalize(st);
    free(rids);
    free(recs);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- embeddings through the store ------------------------------------------------------------ */

elpis_status elpis_memory_embed_text(elpis_memory_store *s, const char *text, size_t len, float *out,
                                     elpis_error *err) {
    if (!s || !s->emb) return elpis_fail(err, ELPIS_EUNSUPPORTED, "memory: no embedding model loaded");
    pthread_mutex_lock(&s->mu);
    elpis_status rc = elpis_embed(s->emb, text, len, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

elpis_status elpis_memory_reembed(elpis_memory_store *s, size_t *n_done, elpis_error *err) {
    sqlite3_stmt *sel = NULL, *upd = NULL;
    float *vec = NULL;
    size_t n = 0;
    elpis_status rc;
    if (!s || !s->emb) return elpis_fail(err, ELPIS_EUNSUPPORTED, "memory: re-embed needs an embedding model");
    pthread_mutex_lock(&s->mu);
    int32_t dim = elpis_embedder_dim(s->emb);
    if (!(vec = malloc((size_t)dim * sizeof *vec))) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    rc = prepare(s,
                 "SELECT rid, content FROM memories WHERE embedding IS NULL OR embedding_dim IS NOT ?1"
                 " OR embedding_model IS NOT ?2",
                 &sel, err);
    if (rc == ELPIS_OK)
        rc = prepare(s, "UPDATE memories SET embedding = ?1, embedding_dim = ?2, embedding_model = ?3 WHERE rid = ?4",
                     &upd, err);
    if (rc != ELPIS_OK) goto done;
    sqlite3_bind_int(sel, 1, dim);
    sqlite3_bind_text(sel, 2, vec_model(s), -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
        const char *content = (const char *)sqlite3_column_text(sel, 1);
        if ((rc = elpis_embed(s->emb, content, strlen(content), vec, err)) != ELPIS_OK) goto done;
        sqlite3_bind_blob(upd, 1, vec, dim * (int)sizeof(float), SQLITE_STATIC);
        sqlite3_bind_int(upd, 2, dim);
        sqlite3_bind_text(upd, 3, vec_model(s), -1, SQLITE_STATIC);
        sqlite3_bind_int64(upd, 4, sqlite3_column_int64(sel, 0));
        if (sqlite3_step(upd) != SQLITE_DONE) {
            rc = sql_fail(s, err, "re-embed");
            goto done;
        }
        sqlite3_reset(upd);
        n++;
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(s, err, "re-embed");
        goto done;
    }
    sqlite3_finalize(sel);
    sel = NULL;
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    rc = cache_load(s, err);
    if (n_done) *n_done = n;
done:
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    if (rc != ELPIS_OK) rollback(s);
    pthread_mutex_unlock(&s->mu);
    free(vec);
    return rc;
}

/* ---- search ---------------------------------------------------------------------------------- */

typedef struct cand {
    int64_t rid;
    int vec_rank, bm25_rank;
    double cosine, fused, relevance;
    bool in_cache;
} cand;

/* Eight independent partial sums: without -ffast-math the compiler may
 * not reorder a single float sum, and this lets it use vector registers. */
static float dot_f32(const float *a, const float *b, int32_t n) {
    float acc[8] = { 0 };
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Top-k rows of the cache by dot product with the unit query q (archived
 * rows skipped): best first in idx/score. One pass; an insertion into a
 * k-array only for rows that beat the current k-th. */
static size_t vector_topk(const vec_cache *vc, const float *q, size_t k, size_t *idx, float *score) {
    size_t n = 0;
    for (size_t i = 0; i < vc->n; i++) {
        if (vc->status[i] == ELPIS_MEM_ARCHIVED) continue;
        float dot = dot_f32(vc->mat + i * (size_t)vc->dim, q, vc->dim);
        if (n == k && dot <= score[k - 1]) continue;
        size_t j = n < k ? n++ : k - 1;
        while (j > 0 && score[j - 1] < dot) {
            score[j] = score[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        score[j] = dot;
        idx[j] = i;
    }
    return n;
}

static elpis_status append_quoted(elpis_buf *out, const char *term) {
    elpis_status rc = elpis_buf_puts(out, "\"");
    for (const char *p = term; rc == ELPIS_OK && *p; p++)
        rc = *p == '"' ? elpis_buf_puts(out, "\"\"") : elpis_buf_append(out, p, 1);
    if (rc == ELPIS_OK) rc = elpis_buf_puts(out, "\"");
    return rc;
}

/* Rows matching one term (count only: far cheaper than scoring them). */
static int64_t term_rows(elpis_memory_store *s, const char *term) {
    elpis_buf q = { 0 };
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (append_quoted(&q, term) == ELPIS_OK &&
        sqlite3_prepare_v2(s->h, "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?1", -1, &st, NULL) ==
            SQLITE_OK) {
        sqlite3_bind_text(st, 1, q.data, (int)q.len, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    elpis_buf_free(&q);
    return n;
}

/* FTS5 MATCH text for the query: each term quoted, OR'ed ("" if none).
 *
 * A term found in more than half of all rows has (almost) no BM25 weight
 * (FTS5 clamps its idf to 1e-6), yet FTS5 scores every row it matches: a
 * term in 85,000 of 100,000 memories costs ~100 ms for nothing. Such terms
 * are left out once they match more than BM25_PRUNE_ROWS rows; below that
 * they are cheap, and small stores keep FTS5's exact ranking. */
#define BM25_PRUNE_ROWS 5000

static elpis_status fts_match(elpis_memory_store *s, const char *query, elpis_buf *out) {
    elpis_strv terms = { 0 };
    elpis_status rc = elpis_mem_query_terms(query, &terms);
    bool prune = s->vc.n_rows / 2 > BM25_PRUNE_ROWS;
    size_t kept = 0;
    for (size_t i = 0; rc == ELPIS_OK && i < terms.n; i++) {
        if (prune) {
            int64_t n = term_rows(s, terms.v[i]);
            if (n > BM25_PRUNE_ROWS && (size_t)n > s->vc.n_rows / 2) continue;
        }
        if (kept++) rc = elpis_buf_puts(out, " OR ");
        if (rc == ELPIS_OK) rc = append_quoted(out, terms.v[i]);
    }
    elpis_strv_free(&terms);
    if (rc == ELPIS_OK && !out->data) rc = elpis_buf_puts(out, "");
    return rc;
}

/* Top-k rows by BM25, archived rows skipped. The status filter runs on the
 * in-memory row table rather than as a join (a join costs a table lookup per
 * matching row); if archived rows crowd the window, it is widened. */
static elpis_status bm25_topk(elpis_memory_store *s, const char *query, size_t k, int64_t *rids, size_t *n_out,
                              elpis_error *err) {
    elpis_buf match = { 0 };
    sqlite3_stmt *st = NULL;
    elpis_status rc = fts_match(s, query, &match);
    *n_out = 0;
    if (rc != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    if (match.len == 0 || k == 0) goto done;
    rc = prepare(s, "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1 ORDER BY " BM25_EXPR " LIMIT ?2", &st,
                 err);
    if (rc != ELPIS_OK) goto done;
    for (size_t window = k + k / 2 + 8;; window *= 4) {
        size_t seen = 0;
        int step;
        *n_out = 0;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, match.data, (int)match.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)window);
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            seen++;
            int64_t rid = sqlite3_column_int64(st, 0);
            if (*n_out < k && row_searchable(&s->vc, rid)) rids[(*n_out)++] = rid;
        }
        if (step != SQLITE_DONE) {
            rc = sql_fail(s, err, "full-text search");
            break;
        }
        if (*n_out == k || seen < window) break;   /* enough, or nothing more to find */
    }
done:
    sqlite3_finalize(st);
    elpis_buf_free(&match);
    return rc;
}

static cand *cand_find(cand *c, size_t n, int64_t rid) {
    for (size_t i = 0; i < n; i++)
        if (c[i].rid == rid) return &c[i];
    return NULL;
}

/* The query vector (unit length), or NULL when there is none to use. */
static elpis_status query_vector(elpis_memory_store *s, const elpis_memory_query *q, float **out, elpis_error *err) {
    *out = NULL;
    if (s->vc.dim <= 0 || s->vc.n == 0) return ELPIS_OK;
    if (q->query_embedding) {
        if (q->query_dim != s->vc.dim)
            return elpis_fail(err, ELPIS_EINVAL, "memory: query embedding has %d dimensions, the store uses %d",
                              q->query_dim, s->vc.dim);
    } else if (!s->emb) {
        return ELPIS_OK;
    }
    float *v = malloc((size_t)s->vc.dim * sizeof *v);
    if (!v) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    elpis_status rc = ELPIS_OK;
    if (q->query_embedding)
        memcpy(v, q->query_embedding, (size_t)s->vc.dim * sizeof *v);
    else
        rc = elpis_embed(s->emb, q->query, strlen(q->query), v, err);
    if (rc != ELPIS_OK) {
        free(v);
        return rc;
    }
    double norm = 0;
    for (int32_t d = 0; d < s->vc.dim; d++) norm += (double)v[d] * v[d];
    norm = norm > 0 ? sqrt(norm) : 1;
    for (int32_t d = 0; d < s->vc.dim; d++) v[d] = (float)(v[d] / norm);
    *out = v;
    return ELPIS_OK;
}

/* Gather candidates from both lists (step 1) and fuse them (step 2-3). */
static elpis_status gather(elpis_memory_store *s, const elpis_memory_query *q, const float *qv, size_t n_cand,
                           bool hybrid, cand **out, size_t *n_out, elpis_error *err) {
    size_t *vidx = malloc(n_cand * sizeof *vidx);
    float *vscore = malloc(n_cand * sizeof *vscore);
    int64_t *brid = malloc(n_cand * sizeof *brid);
    cand *c = calloc(2 * n_cand, sizeof *c);
    size_t nv = 0, nb = 0, n = 0;
    elpis_status rc = ELPIS_OK;
    if (!vidx || !vscore || !brid || !c) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    if (qv) nv = vector_topk(&s->vc, qv, n_cand, vidx, vscore);
    if ((hybrid || !qv) && (rc = bm25_topk(s, q->query, n_cand, brid, &nb, err)) != ELPIS_OK) goto done;
    for (size_t i = 0; i < nv; i++)
        c[n++] = (cand){ .rid = s->vc.rid[vidx[i]], .vec_rank = (int)i, .bm25_rank = -1, .cosine = vscore[i],
                         .in_cache = true };
    for (size_t i = 0; i < nb; i++) {
        cand *e = cand_find(c, n, brid[i]);
        if (!e) {
            e = &c[n++];
            *e = (cand){ .rid = brid[i], .vec_rank = -1 };
            ssize_t slot = qv ? cache_find(&s->vc, brid[i]) : -1;
            if (slot >= 0) {
                e->cosine = dot_f32(s->vc.mat + (size_t)slot * s->vc.dim, qv, s->vc.dim);
                e->in_cache = true;
            }
        }
        e->bm25_rank = (int)i;
    }
    /* Fuse. Without BM25 hits, the original's fallback: 1/(1+dist), dist the
     * squared L2 distance of unit vectors = 2(1 - cos). */
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        c[i].fused = nb == 0 ? 1.0 / (1.0 + 2.0 * (1.0 - c[i].cosine))
                             : elpis_mem_rrf(c[i].vec_rank, c[i].bm25_rank, s->cfg.vector_weight,
                                             s->cfg.bm25_weight, s->cfg.rrf_k);
        lo = ELPIS_MIN(lo, c[i].fused);
        hi = ELPIS_MAX(hi, c[i].fused);
    }
    for (size_t i = 0; i < n; i++) c[i].relevance = hi > lo ? (c[i].fused - lo) / (hi - lo) : 1.0;
    *out = c;
    *n_out = n;
    c = NULL;
done:
    free(vidx);
    free(vscore);
    free(brid);
    free(c);
    return rc;
}

static elpis_status load_by_rid(elpis_memory_store *s, sqlite3_stmt *st, int64_t rid, elpis_memory *m, bool *found,
                                elpis_error *err) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, rid);
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    if (step == SQLITE_ROW) return read_row(st, m, NULL) == ELPIS_OK ? ELPIS_OK : elpis_fail(err, ELPIS_ENOMEM, "oom");
    return step == SQLITE_DONE ? ELPIS_OK : sql_fail(s, err, "load candidate");
}

/* Steps 3-4 for one loaded candidate. */
static void score_hit(elpis_memory_store *s, const elpis_memory_query *q, double now, elpis_memory_hit *h) {
    const elpis_memory *m = &h->mem;
    double age_h = (now - m->created_at) / 3600.0;
    h->quality = elpis_mem_quality(&s->cfg, h->relevance, age_h, m->importance, elpis_utf8_chars(m->content), m->type,
                                   &m->tags);
    double w = q->emotion_weight >= 0 ? q->emotion_weight : s->cfg.emotion_weight;
    if (q->has_emotion && w > 0) {
        double sim = elpis_mem_emotion_similarity(&s->cfg, true, q->valence, q->arousal, m->emotion.present,
                                                  m->emotion.valence, m->emotion.arousal);
        h->relevance = elpis_mem_mood_rerank(h->quality, sim, w);
    } else {
        h->relevance = h->quality;
    }
}

/* A hit with the rowid it came from (for the access bump after sorting). */
typedef struct scored {
    elpis_memory_hit h;
    int64_t rid;
} scored;

static int cmp_hybrid(const void *a, const void *b) {
    const elpis_memory_hit *x = &((const scored *)a)->h, *y = &((const scored *)b)->h;
    if (x->relevance != y->relevance) return x->relevance > y->relevance ? -1 : 1;
    if (x->fused != y->fused) return x->fused > y->fused ? -1 : 1;
    return x->mem.created_at > y->mem.created_at ? -1 : x->mem.created_at < y->mem.created_at;
}

/* Non-hybrid order: the list the candidates came from (vector, else BM25). */
static int cmp_plain(const void *a, const void *b) {
    const elpis_memory_hit *x = &((const scored *)a)->h, *y = &((const scored *)b)->h;
    int rx = x->vec_rank >= 0 ? x->vec_rank : 1000000 + x->bm25_rank;
    int ry = y->vec_rank >= 0 ? y->vec_rank : 1000000 + y->bm25_rank;
    return (rx > ry) - (rx < ry);
}

/* Load, score and sort the candidates; keep the best n in *out. */
static elpis_status rank_candidates(elpis_memory_store *s, const elpis_memory_query *q, const cand *c, size_t nc,
                                    size_t n, bool hybrid, scored **out, size_t *n_out, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    scored *sc = calloc(nc ? nc : 1, sizeof *sc);
    size_t ns = 0;
    elpis_status rc = ELPIS_OK;
    if (!sc) return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
    if ((rc = prepare(s, "SELECT " COLS " FROM memories WHERE rid = ?1", &st, err)) != ELPIS_OK) goto done;
    double now = now_s(s);
    for (size_t i = 0; i < nc; i++) {
        bool found;
        elpis_memory_hit *h = &sc[ns].h;
        if ((rc = load_by_rid(s, st, c[i].rid, &h->mem, &found, err)) != ELPIS_OK) goto done;
        if (!found) continue;   /* deleted by another connection since the cache was read */
        h->fused = c[i].fused;
        h->relevance = c[i].relevance;
        h->cosine = c[i].cosine;
        h->vec_rank = c[i].vec_rank;
        h->bm25_rank = c[i].bm25_rank;
        h->has_relevance = hybrid;
        if (hybrid) score_hit(s, q, now, h);
        sc[ns++].rid = c[i].rid;
    }
    qsort(sc, ns, sizeof *sc, hybrid ? cmp_hybrid : cmp_plain);
    for (size_t i = n; i < ns; i++) elpis_memory_clear(&sc[i].h.mem);
    ns = ELPIS_MIN(ns, n);
done:
    sqlite3_finalize(st);
    if (rc != ELPIS_OK) {
        for (size_t i = 0; i < ns; i++) elpis_memory_clear(&sc[i].h.mem);
        free(sc);
        return rc;
    }
    *out = sc;
    *n_out = ns;
    return ELPIS_OK;
}

static elpis_status search_locked(elpis_memory_store *s, const elpis_memory_query *q, elpis_memory_results *out,
                                  elpis_error *err) {
    float *qv = NULL;
    cand *c = NULL;
    scored *sc = NULL;
    elpis_memory_hit *hits = NULL;
    int64_t *rids = NULL;
    elpis_memory **recs = NULL;
    size_t nc = 0, ns = 0;
    elpis_status rc;
    size_t n = q->n_results > 0 ? (size_t)ELPIS_MIN(q->n_results, MAX_RESULTS) : 10;
    size_t n_cand = n * (size_t)s->cfg.candidate_multiplier;
    bool hybrid = q->use_hybrid;

    if ((rc = cache_refresh(s, err)) != ELPIS_OK) goto done;
    if ((rc = query_vector(s, q, &qv, err)) != ELPIS_OK) goto done;
    if ((rc = gather(s, q, qv, hybrid ? n_cand : n, hybrid, &c, &nc, err)) != ELPIS_OK) goto done;
    if ((rc = rank_candidates(s, q, c, nc, n, hybrid, &sc, &ns, err)) != ELPIS_OK) goto done;
    hits = calloc(ns ? ns : 1, sizeof *hits);
    rids = malloc((ns ? ns : 1) * sizeof *rids);
    recs = malloc((ns ? ns : 1) * sizeof *recs);
    if (!hits || !rids || !recs) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    for (size_t i = 0; i < ns; i++) {
        hits[i] = sc[i].h;   /* moves ownership of the record */
        rids[i] = sc[i].rid;
        recs[i] = &hits[i].mem;
    }
    free(sc);
    sc = NULL;
    if (!q->no_access_bump && (rc = bump_access(s, rids, recs, ns, err)) != ELPIS_OK) goto done;
    out->hits = hits;
    out->n = ns;
    hits = NULL;
done:
    for (size_t i = 0; sc && i < ns; i++) elpis_memory_clear(&sc[i].h.mem);
    for (size_t i = 0; hits && i < ns; i++) elpis_memory_clear(&hits[i].mem);
    free(sc);
    free(hits);
    free(qv);
    free(c);
    free(rids);
    free(recs);
    return rc;
}

elpis_status elpis_memory_search(elpis_memory_store *s, const elpis_memory_query *q, elpis_memory_results *out,
                                 elpis_error *err) {
    if (!s || !q || !q->query || !out) return elpis_fail(err, ELPIS_EINVAL, "memory: bad search arguments");
    out->hits = NULL;
    out->n = 0;
    if (!*q->query && !q->query_embedding) return elpis_fail(err, ELPIS_EINVAL, "memory: empty query");
    pthread_mutex_lock(&s->mu);
    elpis_status rc = search_locked(s, q, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void elpis_memory_results_free(elpis_memory_results *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) elpis_memory_clear(&r->hits[i].mem);
    free(r->hits);
    r->hits = NULL;
    r->n = 0;
}

/* ---- stats ------------------------------------------------------------------------------------ */

static elpis_status count_by(elpis_memory_store *s, const char *col, const char *const *names, size_t n_names,
                             int64_t *counts, elpis_error *err) {
    char sql[128];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT %s, count(*) FROM memories GROUP BY %s", col, col);
    elpis_status rc = prepare(s, sql, &st, err);
    if (rc != ELPIS_OK) return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        for (size_t i = 0; v && i < n_names; i++)
            if (strcmp(v, names[i]) == 0) counts[i] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return step == SQLITE_DONE ? ELPIS_OK : sql_fail(s, err, "stats");
}

static elpis_status stats_locked(elpis_memory_store *s, elpis_memory_stats *out, elpis_error *err) {
    static const char *const statuses[] = { "short_term", "long_term", "archived" };
    static const char *const types[] = { "episodic", "semantic", "procedural", "emotional" };
    int64_t by_status[3] = { 0 };
    memset(out, 0, sizeof *out);
    elpis_status rc = cache_refresh(s, err);
    if (rc == ELPIS_OK) rc = count_by(s, "status", statuses, 3, by_status, err);
    if (rc == ELPIS_OK) rc = count_by(s, "memory_type", types, 4, out->by_type, err);
    if (rc != ELPIS_OK) return rc;
    out->short_term = by_status[0];
    out->long_term = by_status[1];
    out->archived = by_status[2];
    out->total_memories = by_status[0] + by_status[1] + by_status[2];
    out->with_embedding = (int64_t)s->vc.n;
    out->embedding_dim = s->vc.dim;
    return ELPIS_OK;
}

elpis_status elpis_memory_stats_get(elpis_memory_store *s, elpis_memory_stats *out, elpis_error *err) {
    if (!s || !out) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    elpis_status rc = stats_locked(s, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

elpis_status elpis_memory_should_consolidate(elpis_memory_store *s, elpis_should_consolidate *out, elpis_error *err) {
    elpis_memory_stats st;
    if (!s || !out) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    elpis_status rc = stats_locked(s, &st, err);
    pthread_mutex_unlock(&s->mu);
    if (rc != ELPIS_OK) return rc;
    memset(out, 0, sizeof *out);
    out->short_term_count = st.short_term;
    out->long_term_count = st.long_term;
    out->threshold = s->cfg.buffer_threshold;
    out->should = st.short_term >= s->cfg.buffer_threshold;
    snprintf(out->reason, sizeof out->reason, "Buffer size (%lld) %s threshold (%d)", (long long)st.short_term,
             out->should ? "exceeds" : "below", s->cfg.buffer_threshold);
    return ELPIS_OK;
}

/* ---- consolidation ------------------------------------------------------------------------------ */

/* One short-term memory under consideration. */
typedef struct batch_item {
    elpis_memory m;
    int64_t rid;
    double importance;    /* recomputed */
    float *vec;           /* [dim] or NULL */
} batch_item;

static void batch_free(batch_item *b, size_t n) {
    for (size_t i = 0; b && i < n; i++) {
        elpis_memory_clear(&b[i].m);
        free(b[i].vec);
    }
    free(b);
}

static int cmp_importance(const void *a, const void *b) {
    const batch_item *x = a, *y = b;
    if (x->importance != y->importance) return x->importance > y->importance ? -1 : 1;
    return (x->m.created_at > y->m.created_at) - (x->m.created_at < y->m.created_at);   /* older first */
}

/* Step 1: the oldest load_limit short-term memories, those old enough, with
 * recomputed importance, best first, at most max_batch_size. */
static elpis_status load_batch(elpis_memory_store *s, double now, batch_item **out, size_t *n_out, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    batch_item *b = NULL;
    size_t n = 0;
    elpis_status rc = prepare(s,
                              "SELECT " COLS ", embedding, embedding_dim, embedding_model FROM memories"
                              " WHERE status = 'short_term' ORDER BY created_at ASC, rid ASC LIMIT ?1",
                              &st, err);
    if (rc != ELPIS_OK) return rc;
    sqlite3_bind_int(st, 1, s->cfg.load_limit);
    if (!(b = calloc((size_t)s->cfg.load_limit, sizeof *b))) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        batch_item *it = &b[n];
        if (read_row(st, &it->m, &it->rid) != ELPIS_OK) {
            rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
            goto done;
        }
        double age_h = (now - it->m.created_at) / 3600.0;
        if (age_h < s->cfg.min_age_hours) {   /* too young: give it time to be recalled */
            elpis_memory_clear(&it->m);
            continue;
        }
        n++;
        const elpis_mem_emotion *e = &it->m.emotion;
        it->importance = elpis_mem_importance(elpis_mem_salience(e->present, e->valence, e->arousal), age_h / 24.0,
                                              it->m.access_count);
        int32_t dim = sqlite3_column_int(st, N_COLS + 1);
        int bytes = sqlite3_column_bytes(st, N_COLS);
        if (vector_usable(s, dim, (const char *)sqlite3_column_text(st, N_COLS + 2)) && dim == s->vc.dim &&
            bytes == dim * (int)sizeof(float)) {
            if (!(it->vec = malloc((size_t)bytes))) {
                rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
                goto done;
            }
            memcpy(it->vec, sqlite3_column_blob(st, N_COLS), (size_t)bytes);
        }
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(s, err, "consolidation batch");
        goto done;
    }
    qsort(b, n, sizeof *b, cmp_importance);
    while (n > (size_t)s->cfg.max_batch_size) {
        n--;
        elpis_memory_clear(&b[n].m);
        free(b[n].vec);
        b[n].vec = NULL;
    }
done:
    sqlite3_finalize(st);
    if (rc != ELPIS_OK) {
        batch_free(b, n);
        return rc;
    }
    *out = b;
    *n_out = n;
    return ELPIS_OK;
}

static elpis_status update_links(elpis_memory_store *s, sqlite3_stmt *st, int64_t rid, const char *status,
                                 double importance, const elpis_strv *related, const elpis_strv *sources,
                                 elpis_error *err) {
    char *rel = strv_to_json_text(related), *src = strv_to_json_text(sources);
    elpis_status rc = ELPIS_OK;
    if (!rel || !src) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, importance);
    sqlite3_bind_text(st, 3, rel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, src, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, rid);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sql_fail(s, err, "consolidation update");
done:
    free(rel);
    free(src);
    return rc;
}

static elpis_memory_type dominant_type(batch_item *b, const size_t *members, size_t n) {
    size_t count[4] = { 0 }, best = 0;
    for (size_t i = 0; i < n; i++) count[b[members[i]].m.type & 3]++;
    for (size_t t = 1; t < 4; t++)
        if (count[t] > count[best]) best = t;   /* ties: the earlier type, episodic first */
    return (elpis_memory_type)best;
}

/* Step 3 for one cluster (members best first): write the promotion and the
 * archives, and describe it in `sum`. */
static elpis_status promote_cluster(elpis_memory_store *s, sqlite3_stmt *upd, batch_item *b, const size_t *members,
                                    size_t n, elpis_cluster_summary *sum, elpis_error *err) {
    batch_item *top = &b[members[0]];
    elpis_status rc = ELPIS_OK;
    memcpy(sum->promoted_id, top->m.id, sizeof sum->promoted_id);
    sum->cluster_size = n;
    sum->dominant_type = dominant_type(b, members, n);
    for (size_t i = 1; i < n && rc == ELPIS_OK; i++) {
        batch_item *it = &b[members[i]];
        if (elpis_strv_push(&sum->source_ids, it->m.id) != ELPIS_OK ||
            (!elpis_strv_contains(&top->m.source_ids, it->m.id) && elpis_strv_push(&top->m.source_ids, it->m.id)) ||
            (!elpis_strv_contains(&it->m.related_ids, top->m.id) && elpis_strv_push(&it->m.related_ids, top->m.id)))
            return elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        rc = update_links(s, upd, it->rid, "archived", it->importance, &it->m.related_ids, &it->m.source_ids, err);
    }
    if (rc == ELPIS_OK)
        rc = update_links(s, upd, top->rid, "long_term", top->importance, &top->m.related_ids, &top->m.source_ids, err);
    return rc;
}

void elpis_consolidation_report_free(elpis_consolidation_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_clusters; i++) elpis_strv_free(&r->clusters[i].source_ids);
    free(r->clusters);
    memset(r, 0, sizeof *r);
}

/* Steps 2-4 inside one write transaction. */
static elpis_status consolidate_batch(elpis_memory_store *s, batch_item *b, size_t n, double imp_thr, double sim_thr,
                                      elpis_consolidation_report *r, elpis_error *err) {
    int32_t dim = s->vc.dim;
    float *vecs = dim > 0 ? calloc(n ? n * (size_t)dim : 1, sizeof *vecs) : NULL;
    bool *has = calloc(n ? n : 1, sizeof *has);
    int32_t *cl = malloc((n ? n : 1) * sizeof *cl);
    size_t *members = malloc((n ? n : 1) * sizeof *members);
    sqlite3_stmt *upd = NULL;
    elpis_status rc = ELPIS_OK;
    if ((dim > 0 && !vecs) || !has || !cl || !members) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (b[i].vec && dim > 0) {
            memcpy(vecs + i * (size_t)dim, b[i].vec, (size_t)dim * sizeof *vecs);
            has[i] = true;
        }
    int nclusters = elpis_mem_cluster(vecs, has, n, dim, sim_thr, cl);
    if (nclusters < 0) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    r->clusters_formed = nclusters;
    r->total_processed = (int)n;
    if (!(r->clusters = calloc(nclusters ? (size_t)nclusters : 1, sizeof *r->clusters))) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
        goto done;
    }
    rc = prepare(s, "UPDATE memories SET status = ?1, importance = ?2, related_ids = ?3, source_ids = ?4 WHERE rid = ?5",
                 &upd, err);
    for (int c = 0; c < nclusters && rc == ELPIS_OK; c++) {
        size_t m = 0;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            if (cl[i] == c) {
                members[m++] = i;
                sum += b[i].importance;
            }
        double avg = sum / (double)m;
        if (!elpis_mem_cluster_promotes(&s->cfg, m, avg, imp_thr)) {
            r->memories_skipped += (int)m;
            continue;
        }
        elpis_cluster_summary *cs = &r->clusters[r->n_clusters++];
        cs->avg_importance = avg;
        rc = promote_cluster(s, upd, b, members, m, cs, err);
        r->memories_promoted++;
        r->memories_archived += (int)m - 1;
    }
done:
    sqlite3_finalize(upd);
    free(vecs);
    free(has);
    free(cl);
    free(members);
    return rc;
}

elpis_status elpis_memory_consolidate(elpis_memory_store *s, double importance_threshold,
                                      double similarity_threshold, elpis_consolidation_report *out,
                                      elpis_error *err) {
    batch_item *b = NULL;
    size_t n = 0;
    elpis_consolidation_report r = { 0 };
    elpis_status rc;
    if (!s || !out) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    double imp_thr = importance_threshold >= 0 ? importance_threshold : s->cfg.importance_threshold;
    double sim_thr = similarity_threshold >= 0 ? similarity_threshold : s->cfg.similarity_threshold;
    double t0 = elpis_now_ms();
    pthread_mutex_lock(&s->mu);
    double now = now_s(s);
    if ((rc = cache_refresh(s, err)) != ELPIS_OK) goto done;
    /* The write lock is taken before reading, so no other writer can change
     * the batch between clustering and the updates. */
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    if ((rc = load_batch(s, now, &b, &n, err)) != ELPIS_OK) goto done;
    if ((rc = consolidate_batch(s, b, n, imp_thr, sim_thr, &r, err)) != ELPIS_OK) goto done;
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    for (size_t c = 0; c < r.n_clusters; c++) {
        int64_t top_rid = 0;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(b[i].m.id, r.clusters[c].promoted_id) == 0) top_rid = b[i].rid;
            if (elpis_strv_contains(&r.clusters[c].source_ids, b[i].m.id))
                cache_set_status(&s->vc, b[i].rid, ELPIS_MEM_ARCHIVED);
        }
        cache_set_status(&s->vc, top_rid, ELPIS_MEM_LONG_TERM);
    }
    r.duration_seconds = (elpis_now_ms() - t0) / 1000.0;
    *out = r;
done:
    if (rc != ELPIS_OK) {
        rollback(s);
        elpis_consolidation_report_free(&r);
    }
    pthread_mutex_unlock(&s->mu);
    batch_free(b, n);
    return rc;
}

/* ---- export / import ------------------------------------------------------------------------------ */

elpis_status elpis_memory_export(elpis_memory_store *s, FILE *f, size_t *n_out, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    elpis_status rc;
    if (!s || !f) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    /* One read transaction: a consistent snapshot even while others write. */
    if ((rc = exec_sql(s, "BEGIN", err)) != ELPIS_OK) goto done;
    if ((rc = prepare(s, "SELECT " COLS " FROM memories ORDER BY created_at ASC, rid ASC", &st, err)) != ELPIS_OK)
        goto done;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        elpis_memory m;
        if (read_row(st, &m, NULL) != ELPIS_OK) {
            rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
            goto done;
        }
        json_t *j = elpis_memory_to_json(&m);
        char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        elpis_memory_clear(&m);
        if (!line) {
            rc = elpis_fail(err, ELPIS_ENOMEM, "memory: out of memory");
            goto done;
        }
        int w = fprintf(f, "%s\n", line);
        free(line);
        if (w < 0) {
            rc = elpis_fail(err, ELPIS_EIO, "memory export: write failed: %s", strerror(errno));
            goto done;
        }
        n++;
    }
    if (step != SQLITE_DONE) {
        rc = sql_fail(s, err, "export");
        goto done;
    }
    if (fflush(f) != 0) rc = elpis_fail(err, ELPIS_EIO, "memory export: write failed: %s", strerror(errno));
    if (n_out) *n_out = n;
done:
    sqlite3_finalize(st);
    rollback(s);   /* ends the read transaction */
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bool blank(const char *line) {
    for (; *line; line++)
        if (*line != ' ' && *line != '\t' && *line != '\r' && *line != '\n') return false;
    return true;
}

/* Hand-written import lines may leave out what the store can supply:
 * id, times, summary, importance (elpis_memory_from_json marks them). */
static elpis_status fill_defaults(elpis_memory_store *s, elpis_memory *m, elpis_error *err) {
    if (!m->id[0]) new_uuid4(m->id);
    if (!(m->created_at > 0)) m->created_at = now_s(s);
    if (!(m->last_accessed > 0)) m->last_accessed = m->created_at;
    if (!m->summary && m->content && !(m->summary = elpis_utf8_prefix(m->content, s->cfg.summary_chars)))
        return elpis_fail(err, ELPIS_ENOMEM, "out of memory");
    if (m->emotion.present) m->emotion.salience = elpis_mem_salience(true, m->emotion.valence, m->emotion.arousal);
    if (m->importance < 0)
        m->importance = elpis_mem_importance(elpis_mem_salience(m->emotion.present, m->emotion.valence,
                                                                m->emotion.arousal), 0, 0);
    return ELPIS_OK;
}

/* Parse every line first, so a bad line fails the import before any write. */
static elpis_status read_jsonl(elpis_memory_store *s, FILE *f, elpis_memory_list *out, elpis_error *err) {
    char *line = NULL;
    size_t cap = 0, lineno = 0, alloc = 0;
    ssize_t len;
    elpis_status rc = ELPIS_OK;
    out->items = NULL;
    out->n = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (blank(line)) continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) {
            rc = elpis_fail(err, ELPIS_EFORMAT, "memory import: line %zu: %s", lineno, je.text);
            break;
        }
        if (out->n == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            elpis_memory *items = realloc(out->items, alloc * sizeof *items);
            if (!items) {
                json_decref(j);
                rc = elpis_fail(err, ELPIS_ENOMEM, "memory import: out of memory");
                break;
            }
            out->items = items;
        }
        elpis_error e2 = { 0 };
        rc = elpis_memory_from_json(j, &out->items[out->n], &e2);
        json_decref(j);
        if (rc == ELPIS_OK) rc = fill_defaults(s, &out->items[out->n], &e2);
        if (rc == ELPIS_OK && (rc = check_record(s, &out->items[out->n], &e2)) != ELPIS_OK)
            elpis_memory_clear(&out->items[out->n]);
        if (rc != ELPIS_OK) {
            rc = elpis_fail(err, rc, "memory import: line %zu: %s", lineno, e2.msg);
            break;
        }
        out->n++;
    }
    if (rc == ELPIS_OK && ferror(f)) rc = elpis_fail(err, ELPIS_EIO, "memory import: read failed: %s", strerror(errno));
    free(line);
    if (rc != ELPIS_OK) elpis_memory_list_free(out);
    return rc;
}

typedef struct pending {
    bool written;
    int64_t old_rid, new_rid;
    float *vec;
    int32_t dim;
    elpis_memory_status status;
} pending;

elpis_status elpis_memory_import(elpis_memory_store *s, FILE *f, bool replace, size_t *n_imported,
                                 size_t *n_skipped, elpis_error *err) {
    elpis_memory_list recs = { 0 };
    pending *p = NULL;
    size_t np = 0, skipped = 0;
    elpis_status rc;
    if (!s || !f) return elpis_fail(err, ELPIS_EINVAL, "memory: bad arguments");
    pthread_mutex_lock(&s->mu);
    if ((rc = read_jsonl(s, f, &recs, err)) != ELPIS_OK) goto done;
    if (!(p = calloc(recs.n ? recs.n : 1, sizeof *p))) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "memory import: out of memory");
        goto done;
    }
    /* Embed everything before taking the write lock (the slow part). */
    for (size_t i = 0; i < recs.n; i++)
        if ((rc = vector_for(s, recs.items[i].content, NULL, 0, &p[i].vec, &p[i].dim, err)) != ELPIS_OK) goto done;
    if ((rc = begin_write(s, err)) != ELPIS_OK) goto done;
    for (size_t i = 0; i < recs.n; i++) {
        bool written;
        rc = put_locked(s, &recs.items[i], p[i].vec, p[i].dim, replace, &written, &p[i].old_rid, &p[i].new_rid, err);
        if (rc != ELPIS_OK) goto done;
        p[i].written = written;
        p[i].status = recs.items[i].status;
        if (written) np++; else skipped++;
    }
    if ((rc = commit(s, err)) != ELPIS_OK) goto done;
    for (size_t i = 0; i < recs.n; i++) {
        if (!p[i].written) continue;
        if (p[i].old_rid) cache_remove(&s->vc, p[i].old_rid);
        cache_after_insert(s, p[i].new_rid, p[i].status, p[i].vec, p[i].dim);
    }
    if (n_imported) *n_imported = np;
    if (n_skipped) *n_skipped = skipped;
done:
    if (rc != ELPIS_OK) rollback(s);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; p && i < recs.n; i++) free(p[i].vec);
    free(p);
    elpis_memory_list_free(&recs);
    return rc;
}
