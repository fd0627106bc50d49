/* memory_api.c -- the memory store and its embedder over HTTP.
 *
 *   POST   /v1/memories          {content, summary?, memory_type?, tags?,
 *                                 emotional_context?, metadata?}
 *                                 -> 201 {id, importance_score, status:"stored"}
 *   GET    /v1/memories?q=&n=    search_memories' result {query, hybrid_search, results}
 *   GET    /v1/memories/stats    get_memory_stats' result
 *   GET    /v1/memories/{id}     the full record; 404 when absent
 *   DELETE /v1/memories/{id}     {deleted:true, memory_id}; 404 when absent
 *   POST   /v1/embeddings        OpenAI's format: {input: string | [string],
 *                                 model?, encoding_format?: float|base64}
 *
 * Division of labour: the MHD thread checks the input (every client error is
 * a 400/413 naming the field, decided before anything is queued), the psyche
 * worker (work.c) does the SQLite and embedder calls. So an error that comes
 * back from the store is a server failure (500), never the client's.
 *
 * Durability: 201 is written only after elpis_memory_add returned, i.e. after
 * its COMMIT on a synchronous=FULL connection: an acknowledged memory
 * survives kill -9 (tests/cli/test_memory_e2e.sh).
 *
 * Shapes follow the MCP tools (elpis_memory_tool) so both front ends agree.
 */
#include "server_internal.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EMBED_INPUTS 2048

static enum MHD_Result no_store(srv_req *r) {
    return srv_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable_error", NULL, "no_memory_store",
                             "the memory store is not available");
}

static enum MHD_Result invalid(srv_req *r, const char *param, const char *msg) {
    return srv_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid_request_error", param, "invalid_value", "%s", msg);
}

/* A tool result: {"error": ...} is a store failure (inputs were checked). */
static void tool_job_result(elpis_server *s, srv_job *j, json_t *res, unsigned ok_status) {
    const char *msg = json_string_value(json_object_get(res, "error"));
    if (!res) srv_job_error(j, 500, "server_error", NULL, "out of memory");
    else if (msg) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_job_error(j, 500, "server_error", "memory_store_failed", "%s", msg);
        json_decref(res);
        return;
    }
    if (res) srv_job_json(j, ok_status, res);
}

/* ---- POST /v1/memories ------------------------------------------------------------------- */

/* Format the reason into why[cap] and return the field at fault. */
static const char *reject(char *why, size_t cap, const char *param, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static const char *reject(char *why, size_t cap, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return param;
}

static bool bad_emotion(const json_t *emo) {
    if (!emo || json_is_null(emo)) return false;
    const json_t *v = json_object_get(emo, "valence"), *a = json_object_get(emo, "arousal"), *q = json_object_get(emo, "quadrant");
    return !json_is_object(emo) || (v && !json_is_number(v)) || (a && !json_is_number(a)) || (q && !json_is_string(q));
}

static bool present(const json_t *v) { return v && !json_is_null(v); }

/* Check a store body: NULL when it is a memory, else the field at fault with
 * why[] and *status (413 for oversize content, else 400). */
static const char *check_store_body(json_t *o, size_t max_bytes, char *why, size_t cap, unsigned *status) {
    json_t *c = json_object_get(o, "content"), *t = json_object_get(o, "memory_type"), *tags = json_object_get(o, "tags");
    json_t *sum = json_object_get(o, "summary"), *meta = json_object_get(o, "metadata"), *v;
    elpis_memory_type mt;
    size_t i;
    *status = MHD_HTTP_BAD_REQUEST;
    if (!json_is_string(c) || json_string_length(c) == 0) return reject(why, cap, "content", "content must be a non-empty string");
    if (strlen(json_string_value(c)) != json_string_length(c))
        return reject(why, cap, "content", "content must not contain NUL characters");
    if (json_string_length(c) > max_bytes) {
        *status = MHD_HTTP_CONTENT_TOO_LARGE;
        return reject(why, cap, "content", "content is %zu bytes; the limit is %zu bytes (memory.max_content_bytes)",
                      json_string_length(c), max_bytes);
    }
    if (present(sum) && !json_is_string(sum)) return reject(why, cap, "summary", "summary must be a string");
    if (present(t) && !(json_is_string(t) && elpis_memory_type_parse(json_string_value(t), &mt)))
        return reject(why, cap, "memory_type", "memory_type must be episodic, semantic, procedural or emotional");
    if (present(tags) && !json_is_array(tags)) return reject(why, cap, "tags", "tags must be an array of strings");
    json_array_foreach(tags, i, v) {
        if (!json_is_string(v)) return reject(why, cap, "tags", "tags[%zu] must be a string", i);
    }
    if (bad_emotion(json_object_get(o, "emotional_context")))
        return reject(why, cap, "emotional_context",
                      "emotional_context must be {valence: number, arousal: number, quadrant?: string}");
    if (present(meta) && !json_is_object(meta)) return reject(why, cap, "metadata", "metadata must be an object");
    return NULL;
}

static const char *opt_str(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

/* Worker: store the checked body; tv are its tags, meta its metadata text. */
static void add_memory(elpis_server *s, srv_job *j, const char **tv, size_t nt, const char *meta) {
    const json_t *o = j->args, *emo = json_object_get(o, "emotional_context");
    elpis_memory_input in = { .content = opt_str(o, "content"), .summary = opt_str(o, "summary"), .tags = tv,
                              .n_tags = nt, .metadata_json = meta };
    char id[ELPIS_MEMORY_ID_LEN + 1];
    double importance = 0;
    elpis_error err = { 0 };
    if (opt_str(o, "memory_type")) elpis_memory_type_parse(opt_str(o, "memory_type"), &in.type);
    if (json_is_object(emo)) {
        in.has_emotion = true;
        in.valence = json_number_value(json_object_get(emo, "valence"));
        in.arousal = json_number_value(json_object_get(emo, "arousal"));
        in.quadrant = opt_str(emo, "quadrant");
    }
    if (elpis_memory_add(s->psyche->memory, &in, id, &importance, &err) == ELPIS_OK) {
        srv_job_json(j, 201, json_pack("{s:s, s:f, s:s}", "id", id, "importance_score", importance, "status", "stored"));
        return;
    }
    atomic_fetch_add(&s->psyche_failures, 1);
    bool client = err.code == ELPIS_EINVAL;   /* the body was checked; this is not expected */
    srv_job_error(j, client ? 400 : 500, client ? "invalid_request_error" : "server_error", "not_stored",
                  "the memory was not stored: %s", err.msg);
}

/* Worker: the strings point into j->args, which lives as long as the job. */
static void store_job(elpis_server *s, srv_job *j) {
    json_t *tags = json_object_get(j->args, "tags"), *meta = json_object_get(j->args, "metadata");
    size_t nt = json_array_size(tags);
    const char **tv = calloc(nt + 1, sizeof *tv);
    char *meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    for (size_t i = 0; tv && i < nt; i++) tv[i] = json_string_value(json_array_get(tags, i));
    if (!tv || (json_is_object(meta) && !meta_text)) srv_job_error(j, 500, "server_error", NULL, "out of memory");
    else add_memory(s, j, tv, nt, meta_text);
    free(tv);
    free(meta_text);
}

enum MHD_Result srv_h_mem_store(srv_req *r) {
    srv_api_error e = { 0 };
    char why[256];
    unsigned status;
    if (!r->srv->psyche) return no_store(r);
    json_t *o = srv_body_json(r, &e);
    if (!o) return srv_respond_api_error(r, &e);
    const char *param = check_store_body(o, elpis_memory_store_config(r->srv->psyche->memory)->max_content_bytes, why,
                                         sizeof why, &status);
    if (param) {
        json_decref(o);
        return srv_respond_error(r, status, "invalid_request_error", param,
                                 status == MHD_HTTP_CONTENT_TOO_LARGE ? "content_too_large" : "invalid_value", "%s", why);
    }
    srv_job *j = srv_job_new(store_job);
    if (j) j->args = o;
    else json_decref(o);
    return srv_work_submit(r, j);
}

/* ---- GET /v1/memories?q=&n= and /v1/memories/stats ---------------------------------------------- */

static void search_job(elpis_server *s, srv_job *j) {
    tool_job_result(s, j, elpis_memory_tool(s->psyche->memory, "search_memories", j->args), MHD_HTTP_OK);
}

static void stats_job(elpis_server *s, srv_job *j) {
    tool_job_result(s, j, elpis_memory_tool(s->psyche->memory, "get_memory_stats", NULL), MHD_HTTP_OK);
}

enum MHD_Result srv_h_mem_search(srv_req *r) {
    if (!r->srv->psyche) return no_store(r);
    const char *q = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "q");
    const char *n = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "n");
    long long nres = 10;
    char *end = NULL;
    if (!q || !*q) return invalid(r, "q", "q (the search text) is required: GET /v1/memories?q=TEXT&n=N");
    if (n && (nres = strtoll(n, &end, 10), !*n || *end || nres < 1 || nres > 1000))
        return invalid(r, "n", "n must be an integer in 1..1000");
    srv_job *j = srv_job_new(search_job);
    if (j && !(j->args = json_pack("{s:s, s:I}", "query", q, "n_results", (json_int_t)nres))) {
        srv_job_free(j);
        j = NULL;
    }
    return srv_work_submit(r, j);
}

enum MHD_Result srv_h_mem_stats(srv_req *r) {
    return r->srv->psyche ? srv_work_submit(r, srv_job_new(stats_job)) : no_store(r);
}

/* ---- /v1/memories/{id} ------------------------------------------------------------------------------- */

static void not_found(srv_job *j) {
    srv_job_error(j, MHD_HTTP_NOT_FOUND, "not_found_error", "memory_not_found", "no memory with id '%s'", j->key);
}

static void get_job(elpis_server *s, srv_job *j) {
    elpis_memory m;
    bool found = false;
    elpis_error err = { 0 };
    if (elpis_memory_get(s->psyche->memory, j->key, &m, &found, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_job_error(j, 500, "server_error", NULL, "%s", err.msg);
    } else if (!found) {
        not_found(j);
    } else {
        srv_job_json(j, MHD_HTTP_OK, elpis_memory_to_json(&m));
        elpis_memory_clear(&m);
    }
}

static void delete_job(elpis_server *s, srv_job *j) {
    bool deleted = false;
    elpis_error err = { 0 };
    if (elpis_memory_delete(s->psyche->memory, j->key, &deleted, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_job_error(j, 500, "server_error", NULL, "%s", err.msg);
    } else if (!deleted) {
        not_found(j);
    } else {
        srv_job_json(j, MHD_HTTP_OK, json_pack("{s:b, s:s}", "deleted", 1, "memory_id", j->key));
    }
}

static enum MHD_Result by_id(srv_req *r, srv_job_fn fn) {
    if (!r->srv->psyche) return no_store(r);
    const char *id = r->path_arg;
    if (!id || !*id || strlen(id) > ELPIS_MEMORY_ID_LEN)
        return srv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found_error", NULL, "memory_not_found",
                                 "no memory with id '%.80s'", id ? id : "");
    srv_job *j = srv_job_new(fn);
    if (j) snprintf(j->key, sizeof j->key, "%s", id);
    return srv_work_submit(r, j);
}

enum MHD_Result srv_h_mem_get(srv_req *r) { return by_id(r, get_job); }
enum MHD_Result srv_h_mem_delete(srv_req *r) { return by_id(r, delete_job); }

/* ---- POST /v1/embeddings ------------------------------------------------------------------------------- */

static void base64(elpis_buf *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char q[4] = { tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        elpis_buf_append(b, q, 4);
    }
}

/* One {"object":"embedding","index":i,"embedding":...} item. */
static void embedding_item(elpis_buf *b, size_t idx, const float *v, int32_t dim, bool b64) {
    elpis_buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", idx ? "," : "", idx);
    if (b64) {
        elpis_buf_puts(b, "\"");
        base64(b, (const unsigned char *)v, (size_t)dim * sizeof *v);   /* float32 little-endian, as OpenAI */
        elpis_buf_puts(b, "\"}");
        return;
    }
    elpis_buf_puts(b, "[");
    for (int32_t k = 0; k < dim; k++) elpis_buf_printf(b, "%s%.9g", k ? "," : "", (double)v[k]);
    elpis_buf_puts(b, "]}");
}

static void embed_job(elpis_server *s, srv_job *j) {
    elpis_psyche *p = s->psyche;
    json_t *in = json_object_get(j->args, "input");
    bool b64 = !strcmp(json_string_value(json_object_get(j->args, "encoding_format")), "base64");
    int32_t dim = elpis_embedder_dim(p->embedder);
    const elpis_vocab *vocab = (p->embed_model ? p->embed_model : s->model)->vocab;
    float *v = malloc((size_t)dim * sizeof *v);
    elpis_tokens t = { 0 };
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    long long tokens = 0;
    if (!v) { srv_job_error(j, 500, "server_error", NULL, "out of memory"); return; }
    elpis_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < json_array_size(in); i++) {
        json_t *x = json_array_get(in, i);
        if (elpis_memory_embed_text(p->memory, json_string_value(x), json_string_length(x), v, &err) != ELPIS_OK) {
            srv_job_error(j, 500, "server_error", "embedding_failed", "input[%zu]: %s", i, err.msg);
            goto done;
        }
        t.n = 0;
        if (elpis_tokenize(vocab, json_string_value(x), json_string_length(x), true, false, &t, &err) == ELPIS_OK)
            tokens += (long long)t.n;
        embedding_item(&b, i, v, dim, b64);
    }
    elpis_buf_puts(&b, "],\"model\":");
    srv_json_str(&b, j->key, strlen(j->key));
    if (elpis_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}", tokens, tokens) != ELPIS_OK) {
        srv_job_error(j, 500, "server_error", NULL, "out of memory");
        goto done;
    }
    elpis_buf_free(&j->body);
    j->body = b;
    b = (elpis_buf){ 0 };
    j->status = MHD_HTTP_OK;
done:
    elpis_buf_free(&b);
    elpis_tokens_free(&t);
    free(v);
}

/* input: a string or an array of 1..2048 non-empty strings; returned as an array. */
static json_t *embed_inputs(json_t *in, char *why, size_t cap) {
    if (json_is_string(in) && json_string_length(in) > 0) return json_pack("[O]", in);
    if (!json_is_array(in) || json_array_size(in) == 0 || json_array_size(in) > MAX_EMBED_INPUTS) {
        snprintf(why, cap, "input must be a non-empty string or an array of 1..%d strings", MAX_EMBED_INPUTS);
        return NULL;
    }
    size_t i;
    json_t *x;
    json_array_foreach(in, i, x) {
        if (json_is_string(x) && json_string_length(x) > 0) continue;
        snprintf(why, cap, "input[%zu] must be a non-empty string (token arrays are not supported)", i);
        return NULL;
    }
    return json_incref(in);
}

enum MHD_Result srv_h_embeddings(srv_req *r) {
    srv_api_error e = { 0 };
    char why[160];
    if (!r->srv->psyche) return no_store(r);
    json_t *o = srv_body_json(r, &e);
    if (!o) return srv_respond_api_error(r, &e);
    json_t *model = json_object_get(o, "model"), *fmt = json_object_get(o, "encoding_format");
    json_t *inputs = embed_inputs(json_object_get(o, "input"), why, sizeof why);
    enum MHD_Result ret;
    const char *f = json_string_value(fmt);
    if (!inputs) ret = invalid(r, "input", why);
    else if (fmt && !json_is_null(fmt) && !(f && (!strcmp(f, "float") || !strcmp(f, "base64"))))
        ret = invalid(r, "encoding_format", "encoding_format must be \"float\" or \"base64\"");
    else if (model && !json_is_null(model) && (!json_is_string(model) || json_string_length(model) >= 64))
        ret = invalid(r, "model", "model must be a string of fewer than 64 bytes");
    else {
        srv_job *j = srv_job_new(embed_job);
        if (j) {
            const char *name = json_is_string(model) ? json_string_value(model) : elpis_embedder_name(r->srv->psyche->embedder);
            snprintf(j->key, sizeof j->key, "%s", name ? name : r->srv->model_id);
            j->args = json_pack("{s:O, s:s}", "input", inputs, "encoding_format", f ? f : "float");
        }
        ret = srv_work_submit(r, j);
    }
    json_decref(inputs);
    json_decref(o);
    return ret;
}

/* ---- timed consolidation (worker thread) ---------------------------------------------------------------- */

void srv_mem_consolidate_tick(elpis_server *s) {
    elpis_should_consolidate sc;
    elpis_consolidation_report rep;
    elpis_error err = { 0 };
    if (!s->psyche) return;
    if (elpis_memory_should_consolidate(s->psyche->memory, &sc, &err) != ELPIS_OK) goto fail;
    if (!sc.should) return;
    if (elpis_memory_consolidate(s->psyche->memory, -1, -1, &rep, &err) != ELPIS_OK) goto fail;
    atomic_fetch_add(&s->consolidations, 1);
    atomic_fetch_add(&s->memories_promoted, rep.memories_promoted);
    atomic_fetch_add(&s->memories_archived, rep.memories_archived);
    srv_evlog(&s->log, "memory_consolidated short_term=%lld clusters=%d promoted=%d archived=%d skipped=%d ms=%.0f",
              (long long)sc.short_term_count, rep.clusters_formed, rep.memories_promoted, rep.memories_archived,
              rep.memories_skipped, rep.duration_seconds * 1000.0);
    elpis_consolidation_report_free(&rep);
    return;
fail:
    atomic_fetch_add(&s->psyche_failures, 1);
    srv_evlog(&s->log, "memory_consolidation_failed error=\"%s\"", err.msg);
}
