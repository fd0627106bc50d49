/* json.c -- memories as JSON, and the eight memory tools of the original's
 * Mnemosyne server (spec §2.2) as one dispatcher.
 *
 * elpis_memory_tool() is what `elpis mcp` (tools/call) and the HTTP routes
 * call, so both answer with the same shapes. Argument errors and failures
 * come back as {"error": "..."} (as the original did); only running out of
 * memory returns NULL.
 *
 * Field names follow the original's record: memory_type, importance_score,
 * emotional_context{valence, arousal, quadrant, salience}, related_memory_ids,
 * source_memory_ids, metadata; times are ISO 8601 UTC strings.
 */
#include "elpis/memory.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- times ------------------------------------------------------------------------ */

void elpis_memory_iso_time(double unix_s, char buf[32]) {
    if (!isfinite(unix_s) || unix_s < 0) unix_s = 0;
    if (unix_s > 253402300799.0) unix_s = 253402300799.0;   /* 9999-12-31T23:59:59 */
    time_t t = (time_t)floor(unix_s);
    unsigned ms = (unsigned)floor((unix_s - (double)t) * 1000.0);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03uZ", ms > 999 ? 999 : ms);
}

/* "YYYY-MM-DDTHH:MM:SS[.frac][Z|+HH:MM|-HH:MM]"; no zone means UTC. */
bool elpis_memory_parse_time(const char *iso, double *unix_s) {
    int y, mo, d, h, mi, n = 0;
    double sec;
    if (!iso || sscanf(iso, "%4d-%2d-%2d%*[T ]%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6) return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 || sec >= 61) return false;
    const char *z = iso + n;
    int off = 0;
    if (*z == 'Z' || *z == 'z') {
        z++;
    } else if (*z == '+' || *z == '-') {
        int oh, om;
        if (sscanf(z + 1, "%2d:%2d", &oh, &om) != 2) return false;
        off = (oh * 60 + om) * 60 * (*z == '-' ? -1 : 1);
        z += 6;
    }
    if (*z) return false;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi };
    double whole = floor(sec);
    tm.tm_sec = (int)whole;
    *unix_s = (double)timegm(&tm) + (sec - whole) - off;
    return true;
}

static json_t *iso_json(double t) {
    char buf[32];
    elpis_memory_iso_time(t, buf);
    return json_string(buf);
}

/* ---- records ------------------------------------------------------------------------- */

static json_t *strv_json(const elpis_strv *sv) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < sv->n; i++) json_array_append_new(a, json_string(sv->v[i]));
    return a;
}

static json_t *emotion_json(const elpis_mem_emotion *e) {
    if (!e->present) return json_null();
    return json_pack("{s:f, s:f, s:s, s:f}", "valence", e->valence, "arousal", e->arousal, "quadrant",
                     e->quadrant[0] ? e->quadrant : "neutral", "salience", e->salience);
}

static json_t *metadata_json(const char *text) {
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    return j;
}

json_t *elpis_memory_to_json(const elpis_memory *m) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:f, s:o, s:o, s:I, s:o, s:o, s:o}", "id", m->id, "content",
                     m->content ? m->content : "", "summary", m->summary ? m->summary : "", "memory_type",
                     elpis_memory_type_name(m->type), "status", elpis_memory_status_name(m->status), "tags",
                     strv_json(&m->tags), "emotional_context", emotion_json(&m->emotion), "importance_score",
                     m->importance, "created_at", iso_json(m->created_at), "last_accessed", iso_json(m->last_accessed),
                     "access_count", (json_int_t)m->access_count, "related_memory_ids", strv_json(&m->related_ids),
                     "source_memory_ids", strv_json(&m->source_ids), "metadata", metadata_json(m->metadata_json));
}

static elpis_status strv_from(const json_t *a, const char *name, elpis_strv *out, elpis_error *err) {
    size_t i;
    json_t *v;
    if (!a || json_is_null(a)) return ELPIS_OK;
    if (!json_is_array(a)) return elpis_fail(err, ELPIS_EINVAL, "%s must be an array of strings", name);
    json_array_foreach(a, i, v) {
        if (!json_is_string(v)) return elpis_fail(err, ELPIS_EINVAL, "%s must be an array of strings", name);
        if (elpis_strv_push(out, json_string_value(v)) != ELPIS_OK) return elpis_fail(err, ELPIS_ENOMEM, "oom");
    }
    return ELPIS_OK;
}

static elpis_status time_from(const json_t *j, const char *name, double *out, elpis_error *err) {
    if (!j || json_is_null(j)) return ELPIS_OK;   /* the store fills it in */
    if (json_is_number(j)) {
        *out = json_number_value(j);
        return ELPIS_OK;
    }
    if (json_is_string(j) && elpis_memory_parse_time(json_string_value(j), out)) return ELPIS_OK;
    return elpis_fail(err, ELPIS_EINVAL, "%s must be an ISO 8601 time or unix seconds", name);
}

static double clamp1(double x) { return x < -1 ? -1 : x > 1 ? 1 : x; }

/* {valence, arousal, quadrant?} -> e; EINVAL for a malformed object. */
static elpis_status emotion_from(const json_t *j, elpis_mem_emotion *e, elpis_error *err) {
    memset(e, 0, sizeof *e);
    if (!j || json_is_null(j)) return ELPIS_OK;
    const json_t *v = json_object_get(j, "valence"), *a = json_object_get(j, "arousal");
    const json_t *q = json_object_get(j, "quadrant");
    if (!json_is_object(j) || (v && !json_is_number(v)) || (a && !json_is_number(a)) || (q && !json_is_string(q)))
        return elpis_fail(err, ELPIS_EINVAL, "emotional_context must be {valence: number, arousal: number, quadrant?: string}");
    e->present = true;
    e->valence = v ? clamp1(json_number_value(v)) : 0;
    e->arousal = a ? clamp1(json_number_value(a)) : 0;
    snprintf(e->quadrant, sizeof e->quadrant, "%s", q ? json_string_value(q) : "neutral");
    e->salience = elpis_mem_salience(true, e->valence, e->arousal);
    return ELPIS_OK;
}

static const char *opt_string(const json_t *o, const char *key, bool *bad) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_string(v)) *bad = true;
    return json_string_value(v);
}

elpis_status elpis_memory_from_json(const json_t *j, elpis_memory *out, elpis_error *err) {
    elpis_memory m = { 0 };
    bool bad = false;
    elpis_status rc;
    if (!json_is_object(j)) return elpis_fail(err, ELPIS_EINVAL, "a memory must be a JSON object");
    const char *id = opt_string(j, "id", &bad), *content = opt_string(j, "content", &bad);
    const char *summary = opt_string(j, "summary", &bad), *type = opt_string(j, "memory_type", &bad);
    const char *status = opt_string(j, "status", &bad);
    if (bad) return elpis_fail(err, ELPIS_EINVAL, "id, content, summary, memory_type and status must be strings");
    if (!content || !*content) return elpis_fail(err, ELPIS_EINVAL, "content is missing or empty");
    if (id && (!*id || strlen(id) > ELPIS_MEMORY_ID_LEN))
        return elpis_fail(err, ELPIS_EINVAL, "id must be 1..%d characters", ELPIS_MEMORY_ID_LEN);
    if (type && !elpis_memory_type_parse(type, &m.type))
        return elpis_fail(err, ELPIS_EINVAL, "memory_type '%s' is not episodic, semantic, procedural or emotional", type);
    if (status && !elpis_memory_status_parse(status, &m.status))
        return elpis_fail(err, ELPIS_EINVAL, "status '%s' is not short_term, long_term or archived", status);
    snprintf(m.id, sizeof m.id, "%s", id ? id : "");
    const json_t *imp = json_object_get(j, "importance_score"), *ac = json_object_get(j, "access_count");
    const json_t *meta = json_object_get(j, "metadata");
    if ((imp && !json_is_number(imp)) || (ac && !json_is_integer(ac)) || (meta && !json_is_object(meta) && !json_is_null(meta)))
        return elpis_fail(err, ELPIS_EINVAL, "importance_score must be a number, access_count an integer, metadata an object");
    m.importance = imp ? ELPIS_MAX(0.0, ELPIS_MIN(1.0, json_number_value(imp))) : -1;   /* -1: the store computes it */
    m.access_count = ac ? ELPIS_MAX(0, json_integer_value(ac)) : 0;
    if ((rc = emotion_from(json_object_get(j, "emotional_context"), &m.emotion, err)) != ELPIS_OK) goto fail;
    if ((rc = strv_from(json_object_get(j, "tags"), "tags", &m.tags, err)) != ELPIS_OK) goto fail;
    if ((rc = strv_from(json_object_get(j, "related_memory_ids"), "related_memory_ids", &m.related_ids, err)) != ELPIS_OK)
        goto fail;
    if ((rc = strv_from(json_object_get(j, "source_memory_ids"), "source_memory_ids", &m.source_ids, err)) != ELPIS_OK)
        goto fail;
    if ((rc = time_from(json_object_get(j, "created_at"), "created_at", &m.created_at, err)) != ELPIS_OK) goto fail;
    if ((rc = time_from(json_object_get(j, "last_accessed"), "last_accessed", &m.last_accessed, err)) != ELPIS_OK)
        goto fail;
    m.content = strdup(content);
    m.summary = summary ? strdup(summary) : NULL;   /* NULL: the store derives it */
    m.metadata_json = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : strdup("{}");
    if (!m.content || (summary && !m.summary) || !m.metadata_json) {
        rc = elpis_fail(err, ELPIS_ENOMEM, "out of memory");
        goto fail;
    }
    *out = m;
    return ELPIS_OK;
fail:
    elpis_memory_clear(&m);
    return rc;
}

json_t *elpis_memory_hit_to_json(const elpis_memory_hit *h) {
    const elpis_memory *m = &h->mem;
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:f, s:o, s:o}", "id", m->id, "content", m->content, "summary",
                     m->summary, "memory_type", elpis_memory_type_name(m->type), "tags", strv_json(&m->tags),
                     "emotional_context", emotion_json(&m->emotion), "importance_score", m->importance,
                     "relevance_score", h->has_relevance ? json_real(h->relevance) : json_null(), "created_at",
                     iso_json(m->created_at));
}

json_t *elpis_memory_stats_to_json(const elpis_memory_stats *st) {
    return json_pack("{s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:I, s:i}", "total_memories",
                     (json_int_t)st->total_memories, "short_term", (json_int_t)st->short_term, "long_term",
                     (json_int_t)st->long_term, "archived", (json_int_t)st->archived, "by_type", "episodic",
                     (json_int_t)st->by_type[0], "semantic", (json_int_t)st->by_type[1], "procedural",
                     (json_int_t)st->by_type[2], "emotional", (json_int_t)st->by_type[3], "with_embedding",
                     (json_int_t)st->with_embedding, "embedding_dim", (int)st->embedding_dim);
}

json_t *elpis_consolidation_report_to_json(const elpis_consolidation_report *r) {
    json_t *clusters = json_array();
    for (size_t i = 0; clusters && i < r->n_clusters; i++) {
        const elpis_cluster_summary *c = &r->clusters[i];
        json_array_append_new(clusters, json_pack("{s:s, s:o, s:I, s:f, s:s}", "promoted_id", c->promoted_id,
                                                  "source_ids", strv_json(&c->source_ids), "cluster_size",
                                                  (json_int_t)c->cluster_size, "avg_importance", c->avg_importance,
                                                  "dominant_type", elpis_memory_type_name(c->dominant_type)));
    }
    return json_pack("{s:i, s:i, s:i, s:i, s:i, s:f, s:o}", "clusters_formed", r->clusters_formed,
                     "memories_promoted", r->memories_promoted, "memories_archived", r->memories_archived,
                     "memories_skipped", r->memories_skipped, "total_processed", r->total_processed,
                     "duration_seconds", r->duration_seconds, "cluster_summaries", clusters);
}

/* ---- tools ------------------------------------------------------------------------------ */

static json_t *tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *tool_error(const char *fmt, ...) {
    char msg[ELPIS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:s}", "error", msg);
}

/* Optional typed arguments: *bad names the first wrong one. */
static double num_arg(const json_t *args, const char *key, double dflt, double lo, double hi, const char **bad) {
    const json_t *v = json_object_get(args, key);
    if (!v || json_is_null(v)) return dflt;
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!(x >= lo && x <= hi)) {
        if (!*bad) *bad = key;
        return dflt;
    }
    return x;
}

static bool bool_arg(const json_t *args, const char *key, bool dflt, const char **bad) {
    const json_t *v = json_object_get(args, key);
    if (!v || json_is_null(v)) return dflt;
    if (!json_is_boolean(v)) {
        if (!*bad) *bad = key;
        return dflt;
    }
    return json_is_true(v);
}

static const char *str_arg(const json_t *args, const char *key, const char **bad) {
    const json_t *v = json_object_get(args, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        if (!*bad) *bad = key;
        return NULL;
    }
    return json_string_value(v);
}

static json_t *tool_store(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    const char *content = str_arg(args, "content", &bad), *summary = str_arg(args, "summary", &bad);
    const char *type = str_arg(args, "memory_type", &bad);
    elpis_memory_input in = { .content = content, .summary = summary };
    elpis_strv tags = { 0 };
    elpis_mem_emotion emo;
    elpis_error err = { 0 };
    json_t *res = NULL;
    if (bad) return tool_error("store_memory: %s must be a string", bad);
    if (!content || !*content) return tool_error("store_memory: content is required");
    if (type && !elpis_memory_type_parse(type, &in.type))
        return tool_error("store_memory: memory_type '%s' is not episodic, semantic, procedural or emotional", type);
    if (strv_from(json_object_get(args, "tags"), "tags", &tags, &err) != ELPIS_OK ||
        emotion_from(json_object_get(args, "emotional_context"), &emo, &err) != ELPIS_OK) {
        res = tool_error("store_memory: %s", err.msg);
        goto done;
    }
    in.tags = (const char *const *)tags.v;
    in.n_tags = tags.n;
    in.has_emotion = emo.present;
    in.valence = emo.valence;
    in.arousal = emo.arousal;
    in.quadrant = emo.present ? emo.quadrant : NULL;
    char id[ELPIS_MEMORY_ID_LEN + 1];
    double importance;
    if (elpis_memory_add(s, &in, id, &importance, &err) != ELPIS_OK)
        res = tool_error("store_memory: %s", err.msg);
    else
        res = json_pack("{s:s, s:f, s:s}", "id", id, "importance_score", importance, "status", "stored");
done:
    elpis_strv_free(&tags);
    return res;
}

static json_t *search_json(elpis_memory_store *s, const elpis_memory_query *q, elpis_error *err, bool *failed) {
    elpis_memory_results r = { 0 };
    *failed = elpis_memory_search(s, q, &r, err) != ELPIS_OK;
    if (*failed) return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < r.n; i++) json_array_append_new(a, elpis_memory_hit_to_json(&r.hits[i]));
    elpis_memory_results_free(&r);
    return a;
}

static json_t *tool_search(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    elpis_memory_query q = { .query = str_arg(args, "query", &bad) };
    q.n_results = (int)num_arg(args, "n_results", 10, 1, 1000, &bad);
    q.use_hybrid = bool_arg(args, "use_hybrid", true, &bad);
    q.emotion_weight = num_arg(args, "emotion_weight", -1, 0, 1, &bad);
    elpis_mem_emotion emo;
    elpis_error err = { 0 };
    if (bad) return tool_error("search_memories: bad %s", bad);
    if (!q.query || !*q.query) return tool_error("search_memories: query is required");
    if (emotion_from(json_object_get(args, "emotional_context"), &emo, &err) != ELPIS_OK)
        return tool_error("search_memories: %s", err.msg);
    q.has_emotion = emo.present;
    q.valence = emo.valence;
    q.arousal = emo.arousal;
    bool failed;
    json_t *results = search_json(s, &q, &err, &failed);
    if (failed) return tool_error("search_memories: %s", err.msg);
    return json_pack("{s:s, s:b, s:o}", "query", q.query, "hybrid_search", q.use_hybrid, "results", results);
}

static json_t *tool_stats(elpis_memory_store *s) {
    elpis_memory_stats st;
    elpis_error err = { 0 };
    if (elpis_memory_stats_get(s, &st, &err) != ELPIS_OK) return tool_error("get_memory_stats: %s", err.msg);
    return elpis_memory_stats_to_json(&st);
}

static json_t *tool_consolidate(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    double it = num_arg(args, "importance_threshold", -1, 0, 1, &bad);
    double st = num_arg(args, "similarity_threshold", -1, 0, 1, &bad);
    if (bad) return tool_error("consolidate_memories: %s must be a number in 0..1", bad);
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    if (elpis_memory_consolidate(s, it, st, &r, &err) != ELPIS_OK)
        return tool_error("consolidate_memories: %s", err.msg);
    json_t *j = elpis_consolidation_report_to_json(&r);
    elpis_consolidation_report_free(&r);
    return j;
}

static json_t *tool_should(elpis_memory_store *s) {
    elpis_should_consolidate sc;
    elpis_error err = { 0 };
    if (elpis_memory_should_consolidate(s, &sc, &err) != ELPIS_OK) return tool_error("should_consolidate: %s", err.msg);
    return json_pack("{s:b, s:s, s:I, s:I}", "should_consolidate", sc.should, "reason", sc.reason, "short_term_count",
                     (json_int_t)sc.short_term_count, "long_term_count", (json_int_t)sc.long_term_count);
}

/* Hybrid search n=20; each hit costs len("[iso] content")/4 tokens; stop
 * before the budget would be exceeded. */
static json_t *tool_context(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    elpis_memory_query q = { .query = str_arg(args, "query", &bad), .n_results = 20, .use_hybrid = true,
                             .emotion_weight = -1 };
    long max_tokens = (long)num_arg(args, "max_tokens", 2000, 1, 1e9, &bad);
    elpis_memory_results r = { 0 };
    elpis_error err = { 0 };
    if (bad) return tool_error("get_memory_context: bad %s", bad);
    if (!q.query || !*q.query) return tool_error("get_memory_context: query is required");
    if (elpis_memory_search(s, &q, &r, &err) != ELPIS_OK) return tool_error("get_memory_context: %s", err.msg);
    json_t *mems = json_array();
    long tokens = 0;
    bool truncated = false;
    for (size_t i = 0; mems && i < r.n; i++) {
        const elpis_memory *m = &r.hits[i].mem;
        char iso[32];
        elpis_memory_iso_time(m->created_at, iso);
        long t = (long)((elpis_utf8_chars(iso) + 3 + elpis_utf8_chars(m->content)) / 4);   /* "[" iso "] " content */
        if (tokens + t > max_tokens) {
            truncated = true;
            break;
        }
        tokens += t;
        json_array_append_new(mems, json_pack("{s:s, s:s, s:s, s:s, s:f}", "id", m->id, "content", m->content,
                                              "summary", m->summary, "created_at", iso, "importance_score",
                                              m->importance));
    }
    elpis_memory_results_free(&r);
    return json_pack("{s:s, s:o, s:i, s:b}", "query", q.query, "memories", mems, "token_count", (int)tokens,
                     "truncated", truncated);
}

static json_t *tool_delete(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    const char *id = str_arg(args, "memory_id", &bad);
    bool deleted;
    elpis_error err = { 0 };
    if (bad || !id || !*id) return tool_error("delete_memory: memory_id is required");
    if (elpis_memory_delete(s, id, &deleted, &err) != ELPIS_OK) return tool_error("delete_memory: %s", err.msg);
    return json_pack("{s:b, s:s}", "deleted", deleted, "memory_id", id);
}

static json_t *tool_recent(elpis_memory_store *s, const json_t *args) {
    const char *bad = NULL;
    double hours = num_arg(args, "hours", 24, 0, 1e7, &bad);
    int limit = (int)num_arg(args, "limit", 20, 1, 1000, &bad);
    elpis_memory_list l = { 0 };
    elpis_error err = { 0 };
    if (bad) return tool_error("get_recent_memories: bad %s", bad);
    if (elpis_memory_recent(s, hours, limit, &l, &err) != ELPIS_OK) return tool_error("get_recent_memories: %s", err.msg);
    json_t *a = json_array();
    for (size_t i = 0; a && i < l.n; i++) {
        const elpis_memory *m = &l.items[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:o, s:f, s:s}", "id", m->id, "content", m->content,
                                           "summary", m->summary, "created_at", iso_json(m->created_at),
                                           "importance_score", m->importance, "status",
                                           elpis_memory_status_name(m->status)));
    }
    size_t n = l.n;
    elpis_memory_list_free(&l);
    return json_pack("{s:o, s:I}", "memories", a, "count", (json_int_t)n);
}

static const char *const TOOL_NAMES[] = {
    "store_memory", "search_memories", "get_memory_stats", "consolidate_memories",
    "should_consolidate", "get_memory_context", "delete_memory", "get_recent_memories",
};

bool elpis_memory_is_tool(const char *name) {
    for (size_t i = 0; name && i < ELPIS_ARRAY_LEN(TOOL_NAMES); i++)
        if (strcmp(name, TOOL_NAMES[i]) == 0) return true;
    return false;
}

json_t *elpis_memory_tool(elpis_memory_store *s, const char *name, const json_t *args) {
    json_t *empty = NULL;
    if (!args) args = empty = json_object();
    json_t *r;
    if (!s) r = tool_error("memory store is not available");
    else if (!json_is_object(args)) r = tool_error("%s: arguments must be an object", name ? name : "?");
    else if (!name) r = tool_error("no tool name");
    else if (!strcmp(name, "store_memory")) r = tool_store(s, args);
    else if (!strcmp(name, "search_memories")) r = tool_search(s, args);
    else if (!strcmp(name, "get_memory_stats")) r = tool_stats(s);
    else if (!strcmp(name, "consolidate_memories")) r = tool_consolidate(s, args);
    else if (!strcmp(name, "should_consolidate")) r = tool_should(s);
    else if (!strcmp(name, "get_memory_context")) r = tool_context(s, args);
    else if (!strcmp(name, "delete_memory")) r = tool_delete(s, args);
    else if (!strcmp(name, "get_recent_memories")) r = tool_recent(s, args);
    else r = tool_error("unknown tool: %s", name);
    json_decref(empty);
    return r;
}

/* tools/list. Descriptions say what the model needs to pick the tool. */
static const char TOOL_LIST_JSON[] =
    "["
    "{\"name\":\"store_memory\",\"description\":\"Store a new memory in short-term memory. Importance is computed from "
    "the emotional context.\",\"inputSchema\":{\"type\":\"object\",\"properties\":{"
    "\"content\":{\"type\":\"string\",\"description\":\"What to remember\"},"
    "\"summary\":{\"type\":\"string\",\"description\":\"Short summary (default: the first 500 characters)\"},"
    "\"memory_type\":{\"type\":\"string\",\"enum\":[\"episodic\",\"semantic\",\"procedural\",\"emotional\"],"
    "\"default\":\"episodic\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
    "\"emotional_context\":{\"type\":\"object\",\"properties\":{\"valence\":{\"type\":\"number\",\"minimum\":-1,"
    "\"maximum\":1},\"arousal\":{\"type\":\"number\",\"minimum\":-1,\"maximum\":1},\"quadrant\":{\"type\":\"string\"}}}"
    "},\"required\":[\"content\"]}},"
    "{\"name\":\"search_memories\",\"description\":\"Search memories by meaning and keywords (hybrid), optionally "
    "favouring memories that match a mood.\",\"inputSchema\":{\"type\":\"object\",\"properties\":{"
    "\"query\":{\"type\":\"string\"},"
    "\"n_results\":{\"type\":\"integer\",\"default\":10,\"minimum\":1,\"maximum\":1000},"
    "\"use_hybrid\":{\"type\":\"boolean\",\"default\":true},"
    "\"emotional_context\":{\"type\":\"object\",\"properties\":{\"valence\":{\"type\":\"number\"},\"arousal\":{"
    "\"type\":\"number\"}}},"
    "\"emotion_weight\":{\"type\":\"number\",\"default\":0.3,\"minimum\":0,\"maximum\":1}"
    "},\"required\":[\"query\"]}},"
    "{\"name\":\"get_memory_stats\",\"description\":\"Count stored memories.\",\"inputSchema\":{\"type\":\"object\","
    "\"properties\":{}}},"
    "{\"name\":\"consolidate_memories\",\"description\":\"Cluster similar short-term memories; promote the most "
    "important of each important cluster to long-term and archive the rest.\",\"inputSchema\":{\"type\":\"object\","
    "\"properties\":{\"importance_threshold\":{\"type\":\"number\",\"default\":0.6,\"minimum\":0,\"maximum\":1},"
    "\"similarity_threshold\":{\"type\":\"number\",\"default\":0.85,\"minimum\":0,\"maximum\":1}}}},"
    "{\"name\":\"should_consolidate\",\"description\":\"Whether the short-term buffer is full enough to consolidate."
    "\",\"inputSchema\":{\"type\":\"object\",\"properties\":{}}},"
    "{\"name\":\"get_memory_context\",\"description\":\"Relevant memories for a query, formatted to fit a token "
    "budget.\",\"inputSchema\":{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\"},\"max_tokens\":{"
    "\"type\":\"integer\",\"default\":2000,\"minimum\":1}},\"required\":[\"query\"]}},"
    "{\"name\":\"delete_memory\",\"description\":\"Delete a memory by id.\",\"inputSchema\":{\"type\":\"object\","
    "\"properties\":{\"memory_id\":{\"type\":\"string\"}},\"required\":[\"memory_id\"]}},"
    "{\"name\":\"get_recent_memories\",\"description\":\"Short-term memories from the last hours, newest first.\","
    "\"inputSchema\":{\"type\":\"object\",\"properties\":{\"hours\":{\"type\":\"number\",\"default\":24,\"minimum\":0},"
    "\"limit\":{\"type\":\"integer\",\"default\":20,\"minimum\":1,\"maximum\":1000}}}}"
    "]";

json_t *elpis_memory_tool_list(void) { return json_loads(TOOL_LIST_JSON, 0, NULL); }
