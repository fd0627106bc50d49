/* dream.c -- dreaming (spec §5.6, issue #8): POST /v1/psyche/dream, the
 * idle dream, and how a user's request wakes the server from either.
 *
 * A DREAM
 *   1. gather (psyche worker: memory search hits the disk, so never on the
 *      MHD thread or the scheduler thread): the emotional state and its
 *      trajectory; the quadrant's intention (theme + static queries) or the
 *      requested theme; dynamic queries from the trajectory and from the
 *      topics of the hits for "recent conversations" (dream.h, which also
 *      fixes the original's BUG: the trajectory is passed, so those queries
 *      fire); mood-congruent retrieval, max(1, 10/n) per query, deduplicated
 *      by id, at most 10; the prompt rendered with the model's chat template
 *      and the dream system prompt. Memories are dropped from the end until
 *      the prompt leaves room for the dream in the context.
 *   2. generate: an ordinary scheduler request (temperature 0.9, 500 tokens
 *      unless asked otherwise), so it is cancellable, counted in the metrics
 *      and released on every exit path like any completion. The route goes
 *      through stream.c (srv_gen_submit) with hooks for its own final event
 *      / body; the idle dream is read by the psyche worker, which the
 *      request's notify wakes.
 *   3. store (worker): every dream that ends normally is stored with tag
 *      `dream` and `theme:<t>` -- a deviation from the spec, which stored
 *      only dreams with an insight marker, so that any dream can be recalled;
 *      with a marker it is "[Dream insight - t] text", semantic, tags also
 *      `insight` and `semantic` (the spec's list), else "[Dream - t] text",
 *      episodic. Then should_consolidate -> consolidate. A cancelled dream
 *      stores nothing.
 *   "stored" in the answer is the id the dream is stored under. The id is
 *   drawn on the MHD thread and the store job queued before the answer is
 *   written; the worker runs jobs in order, so any later memory request
 *   finds it (a failed write is logged: dream_store_failed).
 *
 * WAKING UP: every completion request (chat or text) cancels every running
 * dream on arrival, on the MHD thread (elpis_request_cancel only sets the
 * request's flag): reason dream_interrupted, logged as stream_cancelled. Any
 * request that counts for the idle clock (below) also ends the idle dream:
 * the spec's "any request cancels the loop". A streaming dream then ends
 * with an error event and [DONE], like a superseded stream; a client
 * leaving a streaming dream cancels it through the usual client_disconnect
 * path.
 *
 * THE IDLE DREAM (serve --dream-delay S, --dream-interval S): when no request
 * that counts has been open for S seconds since the last one ended, and at
 * least one was ever served, the worker dreams; then it waits the interval
 * before the next dream. Requests that count: everything but GETs (health,
 * metrics and emotion polls would keep a server awake for ever) and the
 * dream route itself. The clock is a deadline in the worker's timed wait,
 * never a busy loop; the end of a counted request wakes the worker to
 * re-arm it. Default delay: 60 s when --data-dir is given (a memory the
 * user chose to keep), otherwise off, so a server started for a test or a
 * benchmark never generates on its own.
 *
 * Invariants: the run table (srv->lock) holds a reference to every dream
 * request that may still run; the idle dream's state is the worker's alone.
 */
#include "server_internal.h"

#include "elpis/dream.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RUNS 32
#define THEME_MAX 64

typedef struct dream_run {
    elpis_request *req;                /* a reference; NULL: free */
    srv_req *owner;                    /* the route's HTTP side; NULL: the idle dream */
    char trace[24];
} dream_run;

/* What the gather found; travels as JSON between threads (meta_json). */
typedef struct dream_meta {
    char theme[THEME_MAX];
    char quadrant[24];
    bool has_emotion;
    double valence, arousal;
    int n_memories, n_queries;
} dream_meta;

typedef struct idle_dream {            /* worker only */
    elpis_request *req;
    char trace[24];
    elpis_buf text;
    dream_meta meta;
} idle_dream;

struct srv_dreams {
    dream_run runs[MAX_RUNS];          /* srv->lock */
    double delay_ms, interval_ms;      /* idle dream; delay 0: off */
    atomic_int n_active;               /* counted requests open */
    atomic_bool ever, stopped;
    atomic_bool idle_running;          /* the worker has an idle dream out (a hint: no lock for every request) */
    atomic_llong last_end_ms;
    double next_allowed_ms;            /* worker */
    idle_dream idle;                   /* worker */
};

typedef struct dream_req {             /* route: r->hook_data (arena) */
    dream_meta meta;
    char stored[ELPIS_MEMORY_ID_LEN + 1];
} dream_req;

/* ---- the run table ------------------------------------------------------------------ */

static void track(elpis_server *s, elpis_request *q, srv_req *owner, const char *trace) {
    struct srv_dreams *d = s->dreams;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNS; i++) {
        if (d->runs[i].req) continue;
        elpis_request_ref(q);
        d->runs[i] = (dream_run){ q, owner, "" };
        snprintf(d->runs[i].trace, sizeof d->runs[i].trace, "%s", trace);
        break;
    }
    pthread_mutex_unlock(&s->lock);
}

/* Lock held. */
static void drop_run(dream_run *run) {
    elpis_request_unref(run->req);
    *run = (dream_run){ 0 };
}

static void untrack(elpis_server *s, elpis_request *q, srv_req *owner) {
    struct srv_dreams *d = s->dreams;
    if (!d) return;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNS; i++)
        if (d->runs[i].req && ((owner && d->runs[i].owner == owner) || (q && d->runs[i].req == q))) drop_run(&d->runs[i]);
    pthread_mutex_unlock(&s->lock);
}

/* Cancel the running dreams (only the idle one: idle_only), reason dream_interrupted. */
static void interrupt(elpis_server *s, bool idle_only) {
    struct srv_dreams *d = s->dreams;
    elpis_req_status st;
    bool idle = false;
    if (!d) return;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNS; i++) {
        dream_run *run = &d->runs[i];
        if (!run->req || (idle_only && run->owner)) continue;
        if (!srv_status_of(run->req, &st)) {
            elpis_request_cancel(run->req, ELPIS_CANCEL_DREAM);
            srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", run->trace, elpis_cancel_reason_name(ELPIS_CANCEL_DREAM));
            if (run->owner) run->owner->logged_cancel = true;
            idle |= !run->owner;
        }
        drop_run(run);
    }
    pthread_mutex_unlock(&s->lock);
    if (idle) srv_work_wake(s);   /* the worker sees its dream end and re-arms */
}

void srv_dream_interrupt(elpis_server *s) { interrupt(s, false); }

/* ---- gathering (worker) ------------------------------------------------------------------ */

static json_t *meta_json(const dream_meta *m) {
    return json_pack("{s:s, s:s, s:b, s:f, s:f, s:i, s:i}", "theme", m->theme, "quadrant", m->quadrant, "has_emotion",
                     m->has_emotion, "valence", m->valence, "arousal", m->arousal, "memories", m->n_memories, "queries",
                     m->n_queries);
}

static const char *str_or(const json_t *v, const char *dflt) { return json_is_string(v) ? json_string_value(v) : dflt; }

static void meta_from(const json_t *o, dream_meta *m) {
    memset(m, 0, sizeof *m);
    snprintf(m->theme, sizeof m->theme, "%s", str_or(json_object_get(o, "theme"), "reflection"));
    snprintf(m->quadrant, sizeof m->quadrant, "%s", str_or(json_object_get(o, "quadrant"), ""));
    m->has_emotion = json_is_true(json_object_get(o, "has_emotion"));
    m->valence = json_number_value(json_object_get(o, "valence"));
    m->arousal = json_number_value(json_object_get(o, "arousal"));
    m->n_memories = (int)json_integer_value(json_object_get(o, "memories"));
    m->n_queries = (int)json_integer_value(json_object_get(o, "queries"));
}

static elpis_memory_store *store_of(elpis_server *s) { return s->psyche ? s->psyche->memory : NULL; }

static elpis_status search(elpis_server *s, const char *q, int n, const dream_meta *m, elpis_memory_results *out) {
    elpis_memory_query mq = { .query = q, .n_results = n, .use_hybrid = true, .has_emotion = m->has_emotion,
                              .valence = m->valence, .arousal = m->arousal, .emotion_weight = -1 };
    elpis_error err = { 0 };
    elpis_status st = elpis_memory_search(store_of(s), &mq, out, &err);
    if (st != ELPIS_OK) srv_evlog(&s->log, "dream_search_failed query=\"%s\" error=\"%s\"", q, err.msg);
    return st;
}

/* The emotional state: quadrant and trajectory into m / *traj. false: none. */
static bool read_mood(elpis_server *s, dream_meta *m, elpis_emotion_trajectory *traj) {
    if (!s->psyche || !s->psyche->emotion) return false;
    elpis_emotion_state *st = malloc(sizeof *st);   /* 2.4 KB of history: not on the stack */
    if (!st) return false;
    const elpis_emotion_config *ec = elpis_emotion_config_of(s->psyche->emotion);
    double now = elpis_emotion_now();
    elpis_emotion_snapshot(s->psyche->emotion, now, st);
    elpis_quadrant q = elpis_emotion_quadrant(st, ec, now, NULL);
    elpis_emotion_trajectory_of(st, ec, now, traj);
    m->has_emotion = true;
    m->valence = st->valence;
    m->arousal = st->arousal;
    snprintf(m->quadrant, sizeof m->quadrant, "%s", elpis_quadrant_name(q));
    free(st);
    return true;
}

/* Static queries, then the dynamic ones (topics from "recent conversations"). */
static elpis_status build_queries(elpis_server *s, const elpis_dream_intention *in, const dream_meta *m,
                                  const elpis_emotion_trajectory *traj, elpis_strv *queries) {
    elpis_strv topics = { 0 };
    elpis_memory_results hits = { 0 };
    elpis_status st = ELPIS_OK;
    for (int i = 0; i < ELPIS_DREAM_STATIC_QUERIES && st == ELPIS_OK; i++) st = elpis_strv_push(queries, in->queries[i]);
    if (st == ELPIS_OK && store_of(s) && search(s, ELPIS_DREAM_TOPIC_QUERY, ELPIS_DREAM_MAX_TOPICS, m, &hits) == ELPIS_OK) {
        for (size_t i = 0; i < hits.n && st == ELPIS_OK; i++) {
            const char *t = hits.hits[i].mem.content;
            st = elpis_dream_topics(&t, 1, ELPIS_DREAM_MAX_TOPICS - ELPIS_MIN(topics.n, ELPIS_DREAM_MAX_TOPICS), &topics);
        }
    }
    if (st == ELPIS_OK) st = elpis_dream_dynamic_queries(traj, &topics, queries);
    elpis_memory_results_free(&hits);
    elpis_strv_free(&topics);
    return st;
}

/* Mood-congruent retrieval: per-query hits, deduplicated by id, at most 10. */
static void retrieve(elpis_server *s, const elpis_strv *queries, const dream_meta *m, elpis_strv *ids, elpis_strv *texts) {
    int per = elpis_dream_per_query(queries->n);
    for (size_t i = 0; i < queries->n && texts->n < ELPIS_DREAM_MAX_MEMORIES; i++) {
        elpis_memory_results hits = { 0 };
        if (search(s, queries->v[i], per, m, &hits) != ELPIS_OK) continue;
        for (size_t k = 0; k < hits.n && texts->n < ELPIS_DREAM_MAX_MEMORIES; k++) {
            const elpis_memory *mem = &hits.hits[k].mem;
            if (elpis_strv_contains(ids, mem->id)) continue;
            if (elpis_strv_push(ids, mem->id) != ELPIS_OK || elpis_strv_push(texts, mem->content) != ELPIS_OK) break;
        }
        elpis_memory_results_free(&hits);
    }
}

/* Render the first n memories into the chat template; *n_tokens its length. */
static elpis_status render(elpis_server *s, const elpis_dream_intention *in, const char *theme, const elpis_strv *texts,
                           size_t n, elpis_buf *out, size_t *n_tokens, elpis_error *err) {
    elpis_buf user = { 0 };
    elpis_tokens t = { 0 };
    out->len = 0;
    elpis_status st = elpis_dream_prompt(in, theme, (const char *const *)texts->v, n, &user);
    if (st != ELPIS_OK) { st = elpis_fail(err, ELPIS_ENOMEM, "dream prompt: out of memory"); goto fail; }
    elpis_chat_msg msgs[2] = { { "system", ELPIS_DREAM_SYSTEM }, { "user", user.data } };
    if ((st = elpis_chat_apply(s->chat_family, msgs, 2, true, out, err)) != ELPIS_OK) goto fail;
    st = elpis_tokenize(s->model->vocab, out->data, out->len, true, true, &t, err);
    *n_tokens = t.n;
fail:
    elpis_tokens_free(&t);
    elpis_buf_free(&user);
    return st;
}

/* Everything before the generation. want: the dream's token budget. */
static elpis_status gather(elpis_server *s, const char *theme, int32_t want, dream_meta *m, elpis_buf *prompt,
                           elpis_error *err) {
    elpis_emotion_trajectory traj = { 0 };
    elpis_strv queries = { 0 }, ids = { 0 }, texts = { 0 };
    memset(m, 0, sizeof *m);
    bool mood = read_mood(s, m, &traj);
    elpis_quadrant q = ELPIS_QUADRANT_COUNT;
    if (mood) elpis_quadrant_parse(m->quadrant, &q);
    const elpis_dream_intention *in = theme && *theme ? elpis_dream_intention_named(theme) : elpis_dream_intention_of(q);
    if (!in) in = elpis_dream_intention_of(ELPIS_QUADRANT_COUNT);   /* a free theme: reflection's queries */
    snprintf(m->theme, sizeof m->theme, "%s", theme && *theme ? theme : in->theme);
    elpis_status st = build_queries(s, in, m, mood ? &traj : NULL, &queries);
    if (st != ELPIS_OK) { st = elpis_fail(err, ELPIS_ENOMEM, "dream queries: out of memory"); goto done; }
    if (store_of(s)) retrieve(s, &queries, m, &ids, &texts);
    int32_t n_ctx = elpis_sched_params_of(s->sched)->n_ctx;
    size_t budget = (size_t)(n_ctx - ELPIS_MIN(want, n_ctx / 2)), n = texts.n, n_tok = 0;
    while ((st = render(s, in, m->theme, &texts, n, prompt, &n_tok, err)) == ELPIS_OK && n_tok > budget && n > 0) n--;
    m->n_memories = (int)n;
    m->n_queries = (int)queries.n;
    const char *spiral = mood && traj.spiral_detected ? elpis_emotion_spiral_name(traj.spiral_direction) : "-";
    srv_evlog(&s->log, "dream_gather theme=%s quadrant=%s spiral=%s trend=%s queries=%zu memories=%zu prompt_tokens=%zu",
              m->theme, mood ? m->quadrant : "-", spiral, mood ? elpis_emotion_trend_name(traj.trend) : "-", queries.n, n, n_tok);
done:
    elpis_strv_free(&queries);
    elpis_strv_free(&ids);
    elpis_strv_free(&texts);
    return st;
}

/* ---- storing (worker) ---------------------------------------------------------------------- */

static void store_dream(elpis_server *s, const char *id, const char *text, const dream_meta *m, const char *trace) {
    elpis_error err = { 0 };
    elpis_buf content = { 0 };
    char theme_tag[THEME_MAX + 8];
    bool insight = elpis_dream_has_insight(text);
    snprintf(theme_tag, sizeof theme_tag, "theme:%s", m->theme);
    const char *tags[] = { "dream", theme_tag, "insight", "semantic" };
    elpis_buf_printf(&content, "[Dream%s - %s] %s", insight ? " insight" : "", m->theme, text);
    elpis_memory_input in = { .content = content.data, .type = insight ? ELPIS_MEM_SEMANTIC : ELPIS_MEM_EPISODIC,
                              .tags = tags, .n_tags = insight ? 4 : 2, .has_emotion = m->has_emotion,
                              .valence = m->valence, .arousal = m->arousal,
                              .quadrant = m->quadrant[0] ? m->quadrant : NULL, .id = id };
    if (!content.data || elpis_memory_add(store_of(s), &in, NULL, NULL, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_evlog(&s->log, "dream_store_failed trace=%s id=%s error=\"%s\"", trace, id, content.data ? err.msg : "out of memory");
    } else {
        srv_evlog(&s->log, "dream_stored trace=%s id=%s theme=%s insight=%d", trace, id, m->theme, insight);
        srv_mem_consolidate_tick(s);   /* should_consolidate -> consolidate, as the original did after a dream */
    }
    elpis_buf_free(&content);
}

static void store_job(elpis_server *s, srv_job *j) {
    dream_meta m;
    meta_from(j->args, &m);
    store_dream(s, j->key, j->text, &m, str_or(json_object_get(j->args, "trace"), "-"));
}

static void gather_job(elpis_server *s, srv_job *j) {
    dream_meta m;
    elpis_error err = { 0 };
    int32_t want = (int32_t)json_integer_value(json_object_get(j->args, "max_tokens"));
    j->body.len = 0;
    if (gather(s, j->key, want, &m, &j->body, &err) != ELPIS_OK) {
        srv_job_error(j, 500, "server_error", "dream_failed", "dream: %s", err.msg);
        return;
    }
    json_decref(j->args);
    j->args = meta_json(&m);
    j->status = j->args ? 200 : 500;
}

/* ---- the route (MHD thread) ------------------------------------------------------------------ */

static json_t *summary(srv_req *r) {
    dream_req *d = r->hook_data;
    return json_pack("{s:s, s:s%, s:s, s:i, s:o}", "object", "elpis.dream", "dream", r->text.data ? r->text.data : "",
                     r->text.len, "theme", d->meta.theme, "memories", d->meta.n_memories, "stored",
                     d->stored[0] ? json_string(d->stored) : json_null());
}

static void on_final(srv_req *r) {
    elpis_server *s = r->srv;
    dream_req *d = r->hook_data;
    untrack(s, NULL, r);
    bool done = r->st.state == ELPIS_REQ_DONE && r->text.len > 0;
    srv_job *j = done && store_of(s) ? srv_job_new(store_job) : NULL;
    if (j) {
        elpis_memory_new_id(d->stored);
        snprintf(j->key, sizeof j->key, "%s", d->stored);
        j->text = strndup(r->text.data, r->text.len);
        j->args = meta_json(&d->meta);
        json_object_set_new(j->args, "trace", json_string(r->trace));
        if (!j->text || !j->args) { srv_job_free(j); j = NULL; d->stored[0] = 0; }
    }
    if (j) srv_work_post(s, j);
    srv_evlog(&s->log, "dream_end trace=%s theme=%s tokens=%d finish=%s stored=%s", r->trace, d->meta.theme,
              r->st.n_generated, done ? "done" : "cancelled", d->stored[0] ? d->stored : "-");
}

static void stream_tail(srv_req *r, elpis_buf *out) {
    json_t *o = summary(r);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text) elpis_buf_printf(out, "data: %s\n\n", text);
    free(text);
}

static enum MHD_Result respond(srv_req *r) {
    json_t *o = summary(r);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) return srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    enum MHD_Result ret = srv_respond(r, MHD_HTTP_OK, "application/json", text, strlen(text));
    free(text);
    return ret;
}

static const srv_gen_hooks HOOKS = { on_final, stream_tail, respond };

static elpis_sampler_params dream_sampling(void) {
    elpis_sampler_params sp = elpis_sampler_defaults();
    sp.temperature = (float)ELPIS_DREAM_TEMPERATURE;
    sp.seed = (uint64_t)(elpis_now_ms() * 1e3) * 0x9E3779B97F4A7C15ull;
    return sp;
}

static bool api_fail(srv_api_error *e, unsigned status, const char *param, const char *msg) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->param = param;
    e->code = status == MHD_HTTP_BAD_REQUEST ? "invalid_value" : NULL;
    snprintf(e->msg, sizeof e->msg, "%.390s", msg);
    return false;
}

/* The prompt into r->gen (tokens, budget). */
static bool prompt_tokens(srv_req *r, const elpis_buf *text, srv_api_error *e) {
    elpis_error err = { 0 };
    if (elpis_tokenize(r->srv->model->vocab, text->data ? text->data : "", text->len, true, true, &r->gen.prompt, &err) != ELPIS_OK)
        return api_fail(e, 500, NULL, err.msg);
    int32_t n_ctx = elpis_sched_params_of(r->srv->sched)->n_ctx;
    if ((int64_t)r->gen.prompt.n >= n_ctx) return api_fail(e, 500, NULL, "dream: the prompt does not fit the context");
    int32_t room = n_ctx - (int32_t)r->gen.prompt.n;
    if (r->gen.max_tokens > room) r->gen.max_tokens = room;
    return true;
}

static enum MHD_Result after_gather(srv_req *r, srv_job *j) {
    srv_api_error e = { 0 };
    dream_req *d = elpis_arena_alloc(&r->arena, sizeof *d, 0);
    if (!d) return srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    memset(d, 0, sizeof *d);
    meta_from(j->args, &d->meta);
    r->gen.kind = SRV_CHAT;
    r->gen.sp = dream_sampling();
    r->gen.t_set = true;               /* 0.9 is the dream's own; top_p may follow the mood */
    r->gen.modulate = true;
    if (!prompt_tokens(r, &j->body, &e) || !srv_emo_prepare(r, &e)) return srv_respond_api_error(r, &e);
    r->gen.keep_text = true;           /* the dream is stored */
    r->hooks = &HOOKS;
    r->hook_data = d;
    srv_evlog(&r->srv->log, "dream_start trace=%s source=route theme=%s memories=%d stream=%d", r->trace, d->meta.theme,
              d->meta.n_memories, r->gen.stream);
    enum MHD_Result ret = srv_gen_submit(r, SRV_CHAT);
    if (r->submitted && r->req && !r->final_seen) track(r->srv, r->req, r, r->trace);
    return ret;
}

/* A boolean field; absent or null: false. */
static bool body_bool(json_t *o, const char *key, bool *out, srv_api_error *e) {
    json_t *v = json_object_get(o, key);
    char msg[64];
    snprintf(msg, sizeof msg, "%s must be true or false", key);
    if (v && !json_is_null(v) && !json_is_boolean(v)) return api_fail(e, 400, key, msg);
    *out = json_is_true(v);
    return true;
}

static bool body_max_tokens(json_t *o, int32_t *out, srv_api_error *e) {
    json_t *v = json_object_get(o, "max_tokens");
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 20))
        return api_fail(e, 400, "max_tokens", "max_tokens must be an integer in 1..1048576");
    *out = (int32_t)json_integer_value(v);
    return true;
}

/* One word: it becomes a tag (theme:<t>) and a log field. */
static bool body_theme(srv_req *r, json_t *o, const char **out, srv_api_error *e) {
    json_t *v = json_object_get(o, "theme");
    if (!v || json_is_null(v)) return true;
    size_t n = json_string_length(v);
    if (!json_is_string(v) || !n || n >= THEME_MAX || strpbrk(json_string_value(v), " \t\r\n\"="))
        return api_fail(e, 400, "theme", "theme must be one word of 1..63 bytes");
    return (*out = elpis_arena_strndup(&r->arena, json_string_value(v), n)) != NULL || api_fail(e, 500, NULL, "out of memory");
}

/* {"stream"?, "max_tokens"?, "theme"?, "ignore_eos"?} into r->gen and *theme; an empty body is {}. */
static bool parse_body(srv_req *r, const char **theme, srv_api_error *e) {
    r->gen.max_tokens = ELPIS_DREAM_MAX_TOKENS;
    *theme = NULL;
    if (!r->body.len) return true;
    json_t *o = srv_body_json(r, e);
    if (!o) return false;
    bool ok = body_bool(o, "stream", &r->gen.stream, e) && body_bool(o, "ignore_eos", &r->gen.ignore_eos, e) &&
              body_max_tokens(o, &r->gen.max_tokens, e) && body_theme(r, o, theme, e);
    json_decref(o);
    return ok;
}

enum MHD_Result srv_h_dream(srv_req *r) {
    elpis_server *s = r->srv;
    srv_api_error e = { 0 };
    const char *theme;
    if (atomic_load(&s->draining))
        return srv_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable_error", NULL, "shutting_down",
                                 "the server is shutting down");
    if (s->up)
        return srv_respond_error(r, MHD_HTTP_NOT_IMPLEMENTED, "invalid_request_error", NULL, "needs_local_engine",
                                 "/v1/psyche/dream needs the local engine; this server sends generation to --upstream");
    if (!parse_body(r, &theme, &e)) return srv_respond_api_error(r, &e);
    srv_job *j = srv_job_new(gather_job);
    if (j) {
        j->then = after_gather;
        snprintf(j->key, sizeof j->key, "%s", theme ? theme : "");
        if (!(j->args = json_pack("{s:i}", "max_tokens", r->gen.max_tokens))) { srv_job_free(j); j = NULL; }
    }
    return srv_work_submit(r, j);
}

/* ---- the idle clock ------------------------------------------------------------------------------- */

void srv_dream_request_begin(srv_req *r, const char *url, const char *method) {
    struct srv_dreams *d = r->srv->dreams;
    if (!d || !r->route || !strcmp(method, "GET") || !strcmp(url, "/v1/psyche/dream")) return;
    r->activity = true;
    atomic_fetch_add(&d->n_active, 1);
    atomic_store(&d->ever, true);
    if (d->idle_running) interrupt(r->srv, true);   /* spec: any request ends the idle dream */
}

void srv_dream_request_end(srv_req *r) {
    struct srv_dreams *d = r->srv->dreams;
    if (!d) return;
    if (r->hooks && !r->final_seen) {   /* a dream whose client left before its end: on_final never ran */
        untrack(r->srv, NULL, r);
        const dream_req *dr = r->hook_data;
        srv_evlog(&r->srv->log, "dream_end trace=%s theme=%s tokens=%d finish=cancelled stored=-", r->trace,
                  dr->meta.theme, r->st.n_generated);
    }
    if (!r->activity) return;
    atomic_store(&d->last_end_ms, (long long)elpis_now_ms());
    atomic_fetch_sub(&d->n_active, 1);
    if (d->delay_ms > 0) srv_work_wake(r->srv);   /* re-arm the clock */
}

/* ---- the idle dream (worker) ----------------------------------------------------------------------- */

static void idle_notify(void *arg) { srv_work_wake(arg); }

static elpis_status idle_start(elpis_server *s, struct srv_dreams *d, elpis_error *err) {
    idle_dream *id = &d->idle;
    elpis_buf prompt = { 0 };
    elpis_tokens t = { 0 };
    elpis_status st = gather(s, NULL, ELPIS_DREAM_MAX_TOKENS, &id->meta, &prompt, err);
    if (st == ELPIS_OK) st = elpis_tokenize(s->model->vocab, prompt.data, prompt.len, true, true, &t, err);
    if (st != ELPIS_OK) goto done;
    int32_t room = elpis_sched_params_of(s->sched)->n_ctx - (int32_t)t.n;
    elpis_req_params p = { .prompt = t.ids, .n_prompt = t.n, .sampling = dream_sampling(),
                           .max_tokens = ELPIS_MIN(ELPIS_DREAM_MAX_TOKENS, room) };
    if (!(id->req = elpis_request_new(s->sched, &p, err))) { st = err->code ? err->code : ELPIS_EINVAL; goto done; }
    elpis_request_set_notify(id->req, idle_notify, s);
    snprintf(id->trace, sizeof id->trace, "%016llx",
             (unsigned long long)(s->trace_base + atomic_fetch_add(&s->next_serial, 1)));
    if ((st = elpis_sched_submit(s->sched, id->req, err)) != ELPIS_OK) {
        elpis_request_unref(id->req);
        id->req = NULL;
        goto done;
    }
    track(s, id->req, NULL, id->trace);
    atomic_store(&d->idle_running, true);
    srv_evlog(&s->log, "dream_start trace=%s source=idle theme=%s memories=%d", id->trace, id->meta.theme, id->meta.n_memories);
done:
    elpis_tokens_free(&t);
    elpis_buf_free(&prompt);
    return st;
}

/* Move the idle dream's text; at its end store it. true: it ended. */
static bool idle_drain(elpis_server *s, struct srv_dreams *d) {
    idle_dream *id = &d->idle;
    elpis_req_status st;
    char buf[4096];
    size_t n;
    while ((n = elpis_request_read(id->req, buf, sizeof buf, &st)) > 0) elpis_buf_append(&id->text, buf, n);
    if (!elpis_req_state_final(st.state)) return false;
    bool done = st.state == ELPIS_REQ_DONE && id->text.len > 0;
    char mem_id[ELPIS_MEMORY_ID_LEN + 1] = "";
    if (done && store_of(s)) {
        elpis_memory_new_id(mem_id);
        store_dream(s, mem_id, id->text.data, &id->meta, id->trace);
    }
    srv_evlog(&s->log, "dream_end trace=%s theme=%s tokens=%d finish=%s stored=%s", id->trace, id->meta.theme,
              st.n_generated, done ? "done" : "cancelled", mem_id[0] ? mem_id : "-");
    untrack(s, id->req, NULL);
    atomic_store(&d->idle_running, false);
    elpis_request_unref(id->req);
    id->req = NULL;
    elpis_buf_free(&id->text);
    /* a finished dream waits the interval; an interrupted one waits for the next idle period */
    d->next_allowed_ms = done ? elpis_now_ms() + d->interval_ms : 0;
    return true;
}

double srv_dream_tick(elpis_server *s) {
    struct srv_dreams *d = s->dreams;
    elpis_error err = { 0 };
    if (!d || d->delay_ms <= 0) return 0;
    if (d->idle.req && !idle_drain(s, d)) return 0;   /* its notify wakes us */
    if (atomic_load(&d->stopped) || !atomic_load(&d->ever) || atomic_load(&d->n_active) > 0) return 0;
    double now = elpis_now_ms(), due = (double)atomic_load(&d->last_end_ms) + d->delay_ms;
    if (d->next_allowed_ms > due) due = d->next_allowed_ms;
    if (now < due) return due;
    if (idle_start(s, d, &err) == ELPIS_OK) return 0;
    srv_evlog(&s->log, "dream_failed source=idle error=\"%s\"", err.msg);
    d->next_allowed_ms = now + d->interval_ms;
    return d->next_allowed_ms;
}

/* ---- life ---------------------------------------------------------------------------------------------- */

elpis_status srv_dream_open(elpis_server *s, elpis_error *err) {
    const elpis_server_config *c = s->cfg;
    struct srv_dreams *d = calloc(1, sizeof *d);
    if (!d) return elpis_fail(err, ELPIS_ENOMEM, "dreams");
    double delay = c->dream_delay_s < 0 ? (c->psyche.data_dir ? 60.0 : 0.0) : c->dream_delay_s;
    d->delay_ms = s->up ? 0 : delay * 1000.0;   /* --upstream: no local engine to dream with */
    d->interval_ms = c->dream_interval_s * 1000.0;
    s->dreams = d;
    srv_evlog(&s->log, "dream_config delay=%g interval=%g", d->delay_ms / 1000.0, c->dream_interval_s);
    return ELPIS_OK;
}

void srv_dream_stop(elpis_server *s) {
    struct srv_dreams *d = s->dreams;
    if (!d) return;
    atomic_store(&d->stopped, true);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNS; i++)
        if (d->runs[i].req && !d->runs[i].owner) elpis_request_cancel(d->runs[i].req, ELPIS_CANCEL_SHUTDOWN);
    pthread_mutex_unlock(&s->lock);
}

void srv_dream_close(elpis_server *s) {
    struct srv_dreams *d = s->dreams;
    if (!d) return;
    for (int i = 0; i < MAX_RUNS; i++) elpis_request_unref(d->runs[i].req);
    elpis_request_unref(d->idle.req);
    elpis_buf_free(&d->idle.text);
    free(d);
    s->dreams = NULL;
}
