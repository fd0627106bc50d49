/* memory.h -- the model's long-term memory: a durable SQLite store with
 * hybrid (BM25 + vector) search, quality and mood re-ranking, consolidation,
 * and the tool surface of the original's memory server (Mnemosyne).
 *
 * Layers, bottom up (each usable on its own):
 *   1. Pure scoring functions (salience, importance, recency, quality, RRF,
 *      emotion similarity, clustering, exchange importance, storage filter).
 *      No I/O, no allocation unless stated; the unit tests pin every formula.
 *   2. elpis_embedder: sentence embeddings from a loaded GGUF model (mean of
 *      the final normed hidden state over the text's tokens, L2-normalised).
 *   3. elpis_memory_store: the memories table in the shared database
 *      (include/elpis/db.h), an FTS5 index kept in sync by triggers, and an
 *      in-memory matrix of the vectors for exact cosine search.
 *   4. JSON: records <-> json_t, the eight MCP tools as one dispatcher
 *      (elpis_memory_tool), their tools/list schemas, and JSON Lines
 *      export/import. HTTP and MCP share these so their answers agree.
 *
 * Durability: every write returns only after its transaction has COMMITted on
 * a synchronous=FULL connection, so an acknowledged memory survives kill -9.
 * Access-count bumps on retrieval are the one exception: they commit with
 * synchronous=NORMAL (WAL: no fsync of their own), so a power cut may lose the
 * last few bumps but never corrupts anything or loses a memory.
 *
 * Threads: a store serialises its own public calls with a mutex, so any
 * thread may call it. It uses the elpis_db connection it was given
 * exclusively while a call runs: give it a connection of its own (open the
 * same path again) if another module uses its connection from another thread.
 * The store calls its embedder under the same mutex; an embedder given to a
 * store must not be used elsewhere concurrently (use elpis_memory_embed_text
 * to embed through the store's lock, e.g. for POST /v1/embeddings).
 *
 * Not found: functions that look a memory up by id return ELPIS_OK and set a
 * `found`/`deleted` flag, so callers can tell 404 from failure.
 */
#ifndef ELPIS_MEMORY_H
#define ELPIS_MEMORY_H

#include <jansson.h>
#include <stdio.h>

#include "elpis/base.h"
#include "elpis/db.h"
#include "elpis/model.h"

#define ELPIS_MEMORY_ID_LEN 36          /* uuid4 text, without the NUL */

/* ---- record -------------------------------------------------------------- */

typedef enum elpis_memory_type {
    ELPIS_MEM_EPISODIC, ELPIS_MEM_SEMANTIC, ELPIS_MEM_PROCEDURAL, ELPIS_MEM_EMOTIONAL,
} elpis_memory_type;

typedef enum elpis_memory_status {
    ELPIS_MEM_SHORT_TERM, ELPIS_MEM_LONG_TERM, ELPIS_MEM_ARCHIVED,
} elpis_memory_status;

const char *elpis_memory_type_name(elpis_memory_type t);       /* "episodic", ... */
const char *elpis_memory_status_name(elpis_memory_status s);   /* "short_term", ... */
bool elpis_memory_type_parse(const char *s, elpis_memory_type *out);
bool elpis_memory_status_parse(const char *s, elpis_memory_status *out);

/* A list of owned strings. */
typedef struct elpis_strv {
    char **v;
    size_t n;
} elpis_strv;

elpis_status elpis_strv_push(elpis_strv *sv, const char *s);
bool elpis_strv_contains(const elpis_strv *sv, const char *s);
void elpis_strv_free(elpis_strv *sv);

typedef struct elpis_mem_emotion {
    bool   present;       /* false: the memory has no emotional context */
    double valence, arousal;   /* [-1, 1] */
    double salience;      /* elpis_mem_salience(valence, arousal) */
    char   quadrant[24];  /* "neutral" unless given */
} elpis_mem_emotion;

typedef struct elpis_memory {
    char   id[ELPIS_MEMORY_ID_LEN + 1];
    char  *content;
    char  *summary;
    elpis_memory_type   type;
    elpis_memory_status status;
    elpis_strv tags;
    elpis_mem_emotion emotion;
    double importance;               /* [0, 1] */
    double created_at, last_accessed;/* unix seconds (UTC) */
    int64_t access_count;            /* retrievals (search, context, recent) */
    elpis_strv related_ids;          /* archived -> the memory it was merged into */
    elpis_strv source_ids;           /* promoted -> the memories merged into it */
    char  *metadata_json;            /* a JSON object, "{}" when empty */
} elpis_memory;

void elpis_memory_clear(elpis_memory *m);   /* free the fields; the struct may be reused */

typedef struct elpis_memory_list {
    elpis_memory *items;
    size_t n;
} elpis_memory_list;

void elpis_memory_list_free(elpis_memory_list *l);

/* ---- configuration ------------------------------------------------------- */
/* Every field is used. Defaults are the original's mnemosyne.toml, except
 * where noted (and why) in elpis_memory_default_config's comments. */
typedef struct elpis_memory_config {
    /* store */
    size_t max_content_bytes;     /* larger content is refused (65536) */
    size_t summary_chars;         /* default summary = first N code points (500) */
    /* retrieval */
    double emotion_weight;        /* mood re-rank weight when a mood is given (0.3) */
    int    candidate_multiplier;  /* candidates per list = n * this (2) */
    double vector_weight, bm25_weight;  /* RRF list weights (0.5, 0.5) */
    double rrf_k;                 /* RRF constant (60) */
    double relevance_weight, recency_weight, importance_weight; /* quality mix (0.5 0.3 0.2), normalised */
    double recency_decay_rate;    /* per hour (0.995) */
    double max_recency_hours;     /* age cap for recency (720) */
    double max_content_length;    /* length factor saturates here, chars (500) */
    double length_weight;         /* 0: length ignored .. 1: original's pure len/max (0.2) */
    double semantic_type_factor;  /* 1.2 */
    double assistant_role_factor, user_role_factor; /* tag "assistant" / "user" (1.1, 0.9) */
    bool   use_angular_similarity;/* emotion similarity: angular instead of euclidean (false) */
    /* consolidation */
    double importance_threshold;  /* cluster average needed to promote (0.6) */
    double similarity_threshold;  /* cosine to the centroid to join a cluster (0.85) */
    double min_age_hours;         /* younger short-term memories wait (1) */
    int    max_batch_size;        /* memories clustered per run (50) */
    int    load_limit;            /* short-term memories considered per run (100) */
    int    buffer_threshold;      /* should_consolidate when short_term >= this (100) */
    int    min_cluster_size;      /* smaller clusters are skipped (1; see config.c) */
} elpis_memory_config;

elpis_memory_config elpis_memory_default_config(void);
elpis_status elpis_memory_config_validate(const elpis_memory_config *c, elpis_error *err);
/* Set one field by its name above from text ("vector_weight", "0.4"), for
 * TOML and ELPIS_MEMORY__KEY environment overrides. EINVAL names the key. */
elpis_status elpis_memory_config_set(elpis_memory_config *c, const char *key, const char *value, elpis_error *err);
/* The names accepted by elpis_memory_config_set, NULL-terminated. */
const char *const *elpis_memory_config_keys(void);

/* ---- pure scoring (spec §5.2, §5.3, §7) ------------------------------------ */

/* 0.7*(|a|+1)/2 + 0.3*(|v|+1)/2, in [0.5, 1]; 0.5 without emotion. */
double elpis_mem_salience(bool present, double valence, double arousal);
/* 0.4*salience + 0.3*max(0, 1 - age_days/365) + 0.3*min(1, access/10). */
double elpis_mem_importance(double salience, double age_days, int64_t access_count);
/* decay^min(max(age_h, 0), max_recency_hours). */
double elpis_mem_recency(const elpis_memory_config *c, double age_hours);
/* The length x type x role multiplier, capped at 2. */
double elpis_mem_quality_factor(const elpis_memory_config *c, size_t content_chars, elpis_memory_type type,
                                const elpis_strv *tags);
/* min(1, (wr*min(1,relevance) + wc*recency + wi*importance)/(wr+wc+wi) * factor).
 * `relevance` is the fused score normalised to [0,1] (see search). */
double elpis_mem_quality(const elpis_memory_config *c, double relevance, double age_hours, double importance,
                         size_t content_chars, elpis_memory_type type, const elpis_strv *tags);
/* Emotion similarity in [0,1]: euclidean 1 - d/2.83 (clamped), or angular
 * (cos+1)/2 (0.5 if either norm < 1e-6); 0.5 if either side is missing. */
double elpis_mem_emotion_similarity(const elpis_memory_config *c, bool has_a, double va, double aa, bool has_b,
                                    double vb, double ab);
/* (1-w)*quality + w*similarity. */
double elpis_mem_mood_rerank(double quality, double similarity, double w);
/* Reciprocal rank fusion of one candidate: sum over lists of w/(k + rank + 1)
 * with 0-based ranks; rank < 0 means "not in that list". */
double elpis_mem_rrf(int vec_rank, int bm25_rank, double vec_w, double bm25_w, double k);
/* Cosine similarity; 0 when either vector is all zeros. */
double elpis_mem_cosine(const float *a, const float *b, int dim);

/* Query terms for BM25: runs of word characters (ASCII alnum, '_', any byte
 * >= 0x80), ASCII-lowercased, minus a stop list and 1-character terms,
 * duplicates removed, in order. Appends to `out`. */
elpis_status elpis_mem_query_terms(const char *text, elpis_strv *out);
bool elpis_mem_is_stopword(const char *lower_word);

/* Greedy clustering (consolidation step 2). Rows are visited in order (sort
 * by importance first); each unassigned row with a vector seeds a cluster and
 * every later unassigned row whose cosine to the running-mean centroid is >=
 * threshold joins it (the centroid updates as rows join). Rows without a
 * vector (has_vec[i] false, or vecs NULL) form singletons. Writes the cluster
 * index of each row (clusters numbered in seed order) and returns the number
 * of clusters, or -1 on allocation failure. */
int elpis_mem_cluster(const float *vecs, const bool *has_vec, size_t n, int dim, double threshold,
                      int32_t *cluster_of);
/* A cluster is promoted when size >= min_cluster_size and avg >= threshold. */
bool elpis_mem_cluster_promotes(const elpis_memory_config *c, size_t size, double avg_importance,
                                double importance_threshold);

/* Importance of an exchange (§5.2): factors summed, capped at 1. */
typedef struct elpis_exchange_score {
    double length, code, tools, errors, explicit_request, emotion;
    double total;
} elpis_exchange_score;

elpis_exchange_score elpis_score_exchange(const char *user_text, const char *response, const char *const *tool_results,
                                          size_t n_tool_results, bool has_emotion, double valence, double arousal);
#define ELPIS_AUTO_STORE_THRESHOLD 0.6

/* Storage filter for compacted messages (§5.3, rules in order). */
typedef struct elpis_storage_decision {
    bool store;
    elpis_memory_type type;    /* when store */
    const char *reason;        /* static text, for logs and tests */
} elpis_storage_decision;

elpis_storage_decision elpis_storage_filter(const char *role, const char *content);

/* The first n code points of s (never splits a UTF-8 sequence), malloc'd. */
char *elpis_utf8_prefix(const char *s, size_t n_chars);
size_t elpis_utf8_chars(const char *s);

/* ---- embeddings ------------------------------------------------------------ */

typedef struct elpis_embedder elpis_embedder;

/* Borrows `m` (which must outlive the embedder) and creates a context of its
 * own (one sequence, up to 512 positions). n_threads 0: the engine's default.
 * Embeds 32 short calibration sentences before returning. One thread at a
 * time: the embedder is not the scheduler's context and never touches it. */
elpis_status elpis_embedder_new(elpis_embedder **out, const elpis_model *m, int32_t n_threads, elpis_error *err);
void elpis_embedder_free(elpis_embedder *e);
int32_t elpis_embedder_dim(const elpis_embedder *e);
const char *elpis_embedder_name(const elpis_embedder *e);   /* model name, recorded with each vector */
/* Embed text[0..len) into out[dim]: tokens with BOS (add_special), the final
 * normed hidden state of every token except a leading BOS, averaged (over
 * windows of the context size for long text), L2-normalised, minus a fixed
 * centering vector (the mean embedding of a built-in calibration set,
 * computed at elpis_embedder_new), L2-normalised again. The centering removes
 * the direction all sentences share; see embed.c. Empty text is EINVAL. */
elpis_status elpis_embed(elpis_embedder *e, const char *text, size_t len, float *out, elpis_error *err);

/* ---- the store --------------------------------------------------------------- */

typedef struct elpis_memory_store elpis_memory_store;

/* Migrate the "memory" component of `db` and load the vector cache. `db` and
 * `emb` (NULL: no embedder; vectors only when given explicitly) are borrowed
 * and must outlive the store; `cfg` is copied (NULL: defaults). */
elpis_status elpis_memory_store_open(elpis_memory_store **out, elpis_db *db, const elpis_memory_config *cfg,
                                     elpis_embedder *emb, elpis_error *err);
void elpis_memory_store_close(elpis_memory_store *s);
const elpis_memory_config *elpis_memory_store_config(const elpis_memory_store *s);
/* Vector dimension in use (the embedder's, else that of the first stored vector; 0 if none yet). */
int32_t elpis_memory_dim(elpis_memory_store *s);
/* Tests and benchmarks: replace the wall clock (unix seconds). NULL restores it. */
void elpis_memory_set_clock(elpis_memory_store *s, double (*now)(void *ud), void *ud);

typedef struct elpis_memory_input {
    const char *content;                 /* required, non-empty, <= max_content_bytes */
    const char *summary;                 /* NULL: first summary_chars code points of content */
    elpis_memory_type type;              /* 0 = episodic */
    const char *const *tags;
    size_t n_tags;
    bool   has_emotion;
    double valence, arousal;             /* clamped to [-1, 1] */
    const char *quadrant;                /* NULL: "neutral" */
    const char *metadata_json;           /* NULL: {}; must be a JSON object */
    const float *embedding;              /* NULL: computed by the embedder (if any) */
    int32_t embedding_dim;
    const char *id;                      /* NULL: a fresh uuid4; else one from elpis_memory_new_id (a dream names
                                            its memory before the worker stores it) */
} elpis_memory_input;

/* Store a new short-term memory; importance = 0.3 + 0.4*salience (as the
 * original: there is no importance input). Returns after COMMIT. */
/* A fresh uuid4 id, as the store draws them. */
void elpis_memory_new_id(char out[ELPIS_MEMORY_ID_LEN + 1]);
elpis_status elpis_memory_add(elpis_memory_store *s, const elpis_memory_input *in, char id_out[ELPIS_MEMORY_ID_LEN + 1],
                              double *importance_out, elpis_error *err);
/* Store n memories in one transaction (e.g. the compaction staging flush):
 * all or none; an error names the index. ids/importance may be NULL. */
elpis_status elpis_memory_add_many(elpis_memory_store *s, const elpis_memory_input *in, size_t n,
                                   char (*ids)[ELPIS_MEMORY_ID_LEN + 1], double *importance, elpis_error *err);
/* Write a complete record as given (import): keeps id, times, status, links.
 * An existing id is replaced if `replace`, else left alone (*written false). */
elpis_status elpis_memory_put(elpis_memory_store *s, const elpis_memory *m, bool replace, bool *written,
                              elpis_error *err);
elpis_status elpis_memory_get(elpis_memory_store *s, const char *id, elpis_memory *out, bool *found, elpis_error *err);
elpis_status elpis_memory_delete(elpis_memory_store *s, const char *id, bool *deleted, elpis_error *err);
/* All memories (status < 0) or those of one status, newest first. limit <= 0: all. */
elpis_status elpis_memory_list_all(elpis_memory_store *s, int status, int limit, int offset, elpis_memory_list *out,
                                   elpis_error *err);
/* Short-term memories created within `hours`, newest first, at most `limit`;
 * counts as a retrieval (access_count++). */
elpis_status elpis_memory_recent(elpis_memory_store *s, double hours, int limit, elpis_memory_list *out,
                                 elpis_error *err);
/* Embed through the store's embedder and lock. EUNSUPPORTED without one. */
elpis_status elpis_memory_embed_text(elpis_memory_store *s, const char *text, size_t len, float *out,
                                     elpis_error *err);
/* Recompute vectors that are missing or came from another model. */
elpis_status elpis_memory_reembed(elpis_memory_store *s, size_t *n_done, elpis_error *err);

/* ---- search ---------------------------------------------------------------- */

typedef struct elpis_memory_query {
    const char *query;         /* required */
    int    n_results;          /* 0: 10 */
    bool   use_hybrid;         /* false: vector only (BM25 only without vectors), no relevance */
    bool   has_emotion;
    double valence, arousal;
    double emotion_weight;     /* < 0: config; ignored without has_emotion */
    const float *query_embedding;   /* NULL: embed `query` with the store's embedder */
    int32_t query_dim;
    bool   no_access_bump;     /* people browsing (CLI) do not count as retrieval */
} elpis_memory_query;

typedef struct elpis_memory_hit {
    elpis_memory mem;
    bool   has_relevance;      /* hybrid only */
    double relevance;          /* final score */
    double fused;              /* raw RRF (or vector fallback) score */
    double quality;            /* before the mood re-rank */
    double cosine;             /* vs. the query vector; 0 if none */
    int    vec_rank, bm25_rank;/* 0-based within the candidate lists; -1 absent */
} elpis_memory_hit;

typedef struct elpis_memory_results {
    elpis_memory_hit *hits;
    size_t n;
} elpis_memory_results;

/* Hybrid search (archived memories excluded):
 *   1. candidates: top n*candidate_multiplier by cosine over the vector cache
 *      and top n*candidate_multiplier by FTS5 BM25 over the query terms;
 *   2. fused = RRF(vec_rank, bm25_rank); when BM25 finds nothing, the
 *      original's fallback 1/(1 + squared L2 distance of the unit vectors);
 *   3. relevance = fused min-max normalised over the candidates to [0,1]
 *      (the original fed the raw RRF, at most ~0.016, so relevance hardly
 *      counted); quality = elpis_mem_quality(...);
 *   4. with a mood: final = elpis_mem_mood_rerank(quality, emotion sim, w);
 *   5. sort by final (ties: fused), keep n; bump access counts. */
elpis_status elpis_memory_search(elpis_memory_store *s, const elpis_memory_query *q, elpis_memory_results *out,
                                 elpis_error *err);
void elpis_memory_results_free(elpis_memory_results *r);

/* ---- stats and consolidation ------------------------------------------------ */

typedef struct elpis_memory_stats {
    int64_t total_memories;    /* every row, archived included */
    int64_t short_term, long_term, archived;
    int64_t by_type[4];        /* indexed by elpis_memory_type */
    int64_t with_embedding;    /* rows in the vector cache */
    int32_t embedding_dim;
} elpis_memory_stats;

elpis_status elpis_memory_stats_get(elpis_memory_store *s, elpis_memory_stats *out, elpis_error *err);

typedef struct elpis_should_consolidate {
    bool    should;
    int64_t short_term_count, long_term_count;
    int     threshold;
    char    reason[96];        /* "Buffer size (N) exceeds threshold (100)" / "... below ..." */
} elpis_should_consolidate;

elpis_status elpis_memory_should_consolidate(elpis_memory_store *s, elpis_should_consolidate *out, elpis_error *err);

typedef struct elpis_cluster_summary {
    char   promoted_id[ELPIS_MEMORY_ID_LEN + 1];
    elpis_strv source_ids;     /* the archived members */
    size_t cluster_size;
    double avg_importance;
    elpis_memory_type dominant_type;
} elpis_cluster_summary;

typedef struct elpis_consolidation_report {
    int clusters_formed, memories_promoted, memories_archived, memories_skipped, total_processed;
    double duration_seconds;
    elpis_cluster_summary *clusters;   /* promoted clusters only */
    size_t n_clusters;
} elpis_consolidation_report;

/* One run (spec §7 Consolidation, archiving instead of deleting): load up to
 * load_limit short-term memories at least min_age_hours old, recompute their
 * importance, keep the top max_batch_size, cluster, and for each cluster
 * that promotes: the most important member becomes long_term with
 * source_ids = the others, the others become archived with related_ids = it.
 * One transaction. Thresholds < 0 take the config's. */
elpis_status elpis_memory_consolidate(elpis_memory_store *s, double importance_threshold,
                                      double similarity_threshold, elpis_consolidation_report *out,
                                      elpis_error *err);
void elpis_consolidation_report_free(elpis_consolidation_report *r);

/* ---- JSON ------------------------------------------------------------------------- */

/* ISO 8601 UTC with milliseconds, e.g. "2026-01-24T10:00:00.000Z". */
void elpis_memory_iso_time(double unix_s, char buf[32]);
bool elpis_memory_parse_time(const char *iso, double *unix_s);

/* The full record (export, `show`, GET /v1/memories/{id}). */
json_t *elpis_memory_to_json(const elpis_memory *m);
elpis_status elpis_memory_from_json(const json_t *j, elpis_memory *out, elpis_error *err);
/* One search result in the tool's shape. */
json_t *elpis_memory_hit_to_json(const elpis_memory_hit *h);
json_t *elpis_memory_stats_to_json(const elpis_memory_stats *st);
json_t *elpis_consolidation_report_to_json(const elpis_consolidation_report *r);

/* The eight tools of §2.2 by name (store_memory, search_memories,
 * get_memory_stats, consolidate_memories, should_consolidate,
 * get_memory_context, delete_memory, get_recent_memories) with their JSON
 * arguments (NULL = {}); returns the tool's result object, or {"error": msg}
 * for bad arguments and failures. NULL only when out of memory. */
json_t *elpis_memory_tool(elpis_memory_store *s, const char *name, const json_t *args);
bool elpis_memory_is_tool(const char *name);
/* MCP tools/list entries: [{name, description, inputSchema}, ...]. */
json_t *elpis_memory_tool_list(void);

/* JSON Lines: one elpis_memory_to_json object per line, oldest first.
 * Vectors are not exported; import recomputes them with the embedder. */
elpis_status elpis_memory_export(elpis_memory_store *s, FILE *f, size_t *n_out, elpis_error *err);
/* All or nothing: a malformed line fails the import naming the line, and
 * nothing is written. Existing ids are skipped (or replaced if `replace`). */
elpis_status elpis_memory_import(elpis_memory_store *s, FILE *f, bool replace, size_t *n_imported,
                                 size_t *n_skipped, elpis_error *err);

/* ---- formatting for the conversation (spec §5.3) ------------------------------- */

/* "[Relevant memories]\n1. [episodic] text\n..." where text is the summary
 * when the content exceeds 200 chars, cut at 300 chars + "...". */
elpis_status elpis_memory_format_recall(const elpis_memory_results *r, elpis_buf *out);
/* Auto-stored exchange: "User: {u[:300]}...\n\nAssistant: {r[:800]}..." and summary r[:150]. */
elpis_status elpis_memory_format_exchange(const char *user_text, const char *response, elpis_buf *content,
                                          elpis_buf *summary);

#endif
