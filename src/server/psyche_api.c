/* psyche_api.c -- the emotional state in the HTTP server: how it shapes each
 * completion, its routes, and its metrics.
 *
 * EVERY COMPLETION (srv_emo_prepare, MHD thread, before the request exists)
 *   1. snapshot the state, decayed to now (a copy under the emotion mutex);
 *   2. sampling: temperature = clamp(base_t - 0.2*arousal, 0.1, 1.5) and
 *      top_p = clamp(base_p + 0.1*valence, 0.5, 1.0), each only when the
 *      request did not give that value and neither the configuration
 *      (emotion.modulation) nor the request ("emotional_modulation": false)
 *      turned modulation off. Base values: model.temperature / model.top_p;
 *   3. steering (local engine only): the blend of the quadrant vectors for
 *      this state, copied into the request, so concurrent streams each keep
 *      the blend of the state they started in (the scheduler also keys
 *      prefix reuse on it);
 *   4. the echo "elpis":{"temperature","top_p","emotion":{valence, arousal,
 *      quadrant},"modulated","steered"} rendered once, written into the
 *      non-stream body and the last stream chunk(s) by sse.c.
 * The state reported is the one the request started in: the one that
 * shaped it.
 *
 * AFTER A COMPLETION (srv_emo_after): whatever text the request produced,
 * also the partial text of a cancelled one, is analysed on the psyche worker
 * (elpis_emotion_process_response), which may fire and commit one event.
 *
 * THE VIEW: elpis_emotion holds its mutex across the fsync of each commit,
 * so reading it could stall the MHD thread behind a disk. In `serve` only
 * the psyche worker writes the state (events, response analysis), so after
 * each write it publishes a copy here; readers (MHD thread) copy that under
 * a mutex held for a memcpy and decay the copy to now themselves (decay is
 * anchored: the same result as reading the object). A write is published
 * before its request is answered, so an acknowledged event is always seen.
 *
 * Routes: GET /v1/psyche/emotion (Psyche's {valence, arousal, quadrant}),
 * POST /v1/psyche/emotion {event_type, intensity} -> the new state, sent only
 * after the event is committed (the worker does the commit), and
 * GET /v1/emotion: the full state (trajectory, steering coefficients) plus
 * the steering configuration.
 */
#include "server_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENT_NAME_MAX 64

/* ---- the view ---------------------------------------------------------------------------- */

struct srv_emo_view {
    pthread_mutex_t mu;
    elpis_emotion_state st;            /* as of the last commit */
};

/* Worker thread, after a write (the emotion mutex is free again). */
static void publish(elpis_server *s) {
    struct srv_emo_view *v = s->emo_view;
    elpis_emotion_state *st = malloc(sizeof *st);
    if (!st) return;   /* the view stays one write behind; it is only a reading */
    elpis_emotion_snapshot(s->psyche->emotion, elpis_emotion_now(), st);
    pthread_mutex_lock(&v->mu);
    v->st = *st;
    pthread_mutex_unlock(&v->mu);
    free(st);
}

/* The state at `now`, into *out. Any thread; never waits for a commit. */
static void current(elpis_server *s, double now, elpis_emotion_state *out) {
    struct srv_emo_view *v = s->emo_view;
    pthread_mutex_lock(&v->mu);
    *out = v->st;
    pthread_mutex_unlock(&v->mu);
    elpis_emotion_decay(out, elpis_emotion_config_of(s->psyche->emotion), now);
}

elpis_status srv_emo_view_open(elpis_server *s, elpis_error *err) {
    struct srv_emo_view *v = calloc(1, sizeof *v);
    if (!v) return elpis_fail(err, ELPIS_ENOMEM, "emotion view");
    pthread_mutex_init(&v->mu, NULL);
    elpis_emotion_snapshot(s->psyche->emotion, elpis_emotion_now(), &v->st);
    s->emo_view = v;
    return ELPIS_OK;
}

void srv_emo_view_close(elpis_server *s) {
    if (!s->emo_view) return;
    pthread_mutex_destroy(&s->emo_view->mu);
    free(s->emo_view);
    s->emo_view = NULL;
}

/* ---- shaping a completion ------------------------------------------------------------ */

static bool prep_fail(srv_api_error *e, const char *msg) {
    e->status = 500;
    e->type = "server_error";
    e->param = NULL;
    e->code = NULL;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    return false;
}

/* A value the request gave went through a float: 0.3f is 0.300000011920929.
 * Six decimals are more than any sampler setting means. */
static double tidy(double x) { return round(x * 1e6) / 1e6; }

/* The "elpis" object, as compact JSON text in the request's arena. */
static const char *render_echo(srv_req *r, const elpis_emotion_state *st, const elpis_emotion_sampling *m,
                               bool modulated, double now) {
    const elpis_emotion_config *ec = elpis_emotion_config_of(r->srv->psyche->emotion);
    json_t *o = json_pack("{s:f, s:f, s:o, s:b, s:b}", "temperature", tidy(m->temperature), "top_p", tidy(m->top_p),
                          "emotion", elpis_emotion_json(st, ec, now, ELPIS_EMOTION_JSON_BRIEF), "modulated", modulated,
                          "steered", r->gen.steering != NULL);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    const char *out = text ? elpis_arena_strndup(&r->arena, text, strlen(text)) : NULL;
    free(text);
    return out;
}

bool srv_emo_prepare(srv_req *r, srv_api_error *e) {
    elpis_psyche *p = r->srv->psyche;
    srv_gen *g = &r->gen;
    if (!p) return true;
    const elpis_emotion_config *ec = elpis_emotion_config_of(p->emotion);
    double now = elpis_emotion_now();
    elpis_emotion_state *st = malloc(sizeof *st);   /* 2.4 KB of history: not on the stack */
    if (!st) return prep_fail(e, "out of memory");
    current(r->srv, now, st);
    bool modulated = g->modulate && ec->modulation;
    double base_t = g->t_set ? g->sp.temperature : r->srv->cfg->temperature;
    double base_p = g->p_set ? g->sp.top_p : r->srv->cfg->top_p;
    elpis_emotion_sampling m = elpis_emotion_modulate(st, base_t, base_p, g->t_set, g->p_set, modulated);
    g->sp.temperature = (float)m.temperature;
    g->sp.top_p = (float)m.top_p;
    bool oom = false;   /* --upstream: there is no local forward pass to steer */
    if (g->modulate && !r->srv->up) g->steering = elpis_psyche_steering(p, st, &oom);
    g->keep_text = ec->response_analysis;
    g->echo = oom ? NULL : render_echo(r, st, &m, modulated, now);
    free(st);
    if (oom || !g->echo) return prep_fail(e, "out of memory preparing the emotional state");
    return true;
}

/* ---- after a completion ----------------------------------------------------------------------- */

static void analyse_job(elpis_server *s, srv_job *j) {
    const char *fired = NULL;
    elpis_error err = { 0 };
    if (elpis_emotion_process_response(s->psyche->emotion, j->text, elpis_emotion_now(), &fired, NULL, &err) !=
        ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_evlog(&s->log, "emotion_analysis_failed trace=%s error=\"%s\"", j->key, err.msg);
    } else if (fired) {
        publish(s);
        srv_evlog(&s->log, "emotion_from_response trace=%s event=%s", j->key, fired);
    }
}

void srv_emo_after(srv_req *r) {
    elpis_server *s = r->srv;
    if (!s->psyche || !r->req || !r->submitted || r->analysed) return;
    if (!elpis_emotion_config_of(s->psyche->emotion)->response_analysis) return;
    r->analysed = true;
    char buf[4096];
    size_t n;   /* text generated but never read (the client left): still the model's words */
    while ((n = elpis_request_read(r->req, buf, sizeof buf, NULL)) > 0) elpis_buf_append(&r->text, buf, n);
    if (!r->text.len) return;
    srv_job *j = srv_job_new(analyse_job);
    if (!j || !(j->text = strndup(r->text.data, r->text.len))) {
        srv_job_free(j);
        return;
    }
    snprintf(j->key, sizeof j->key, "%s", r->trace);
    srv_work_post(s, j);
}

/* ---- routes --------------------------------------------------------------------------------------- */

static enum MHD_Result no_psyche(srv_req *r) {
    return srv_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable_error", NULL, "no_psyche",
                             "the emotional state is not available");
}

static enum MHD_Result respond_state(srv_req *r, elpis_emotion_json_kind kind) {
    elpis_psyche *p = r->srv->psyche;
    elpis_emotion_state *st = malloc(sizeof *st);
    double now = elpis_emotion_now();
    if (!st) return srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    current(r->srv, now, st);
    json_t *o = elpis_emotion_json(st, elpis_emotion_config_of(p->emotion), now, kind);
    free(st);
    if (o && kind == ELPIS_EMOTION_JSON_FULL) {
        const elpis_emotion_config *ec = elpis_emotion_config_of(p->emotion);
        json_t *files = json_object();
        for (int q = 0; files && q < ELPIS_QUADRANT_COUNT; q++)
            json_object_set_new(files, elpis_quadrant_name(q), ec->vectors[q][0] ? json_string(ec->vectors[q]) : json_null());
        json_object_set_new(o, "steering", json_pack("{s:b, s:f, s:o}", "enabled", p->vectors != NULL &&
                                                     elpis_emotion_config_steering(ec), "strength",
                                                     ec->steering_strength, "vectors", files));
        json_object_set_new(o, "modulation", json_boolean(ec->modulation));
    }
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    if (!text) return srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    enum MHD_Result ret = srv_respond(r, MHD_HTTP_OK, "application/json", text, strlen(text));
    free(text);
    return ret;
}

enum MHD_Result srv_h_emotion_get(srv_req *r) {
    return r->srv->psyche ? respond_state(r, ELPIS_EMOTION_JSON_BRIEF) : no_psyche(r);
}

enum MHD_Result srv_h_emotion_full(srv_req *r) {
    return r->srv->psyche ? respond_state(r, ELPIS_EMOTION_JSON_FULL) : no_psyche(r);
}

/* Worker: apply and commit the event, then render the state it produced. */
static void event_job(elpis_server *s, srv_job *j) {
    elpis_emotion *emo = s->psyche->emotion;
    elpis_emotion_state *st = malloc(sizeof *st);
    elpis_emotion_result res;
    elpis_error err = { 0 };
    double now = elpis_emotion_now();
    if (!st) { srv_job_error(j, 500, "server_error", NULL, "out of memory"); return; }
    double intensity = json_number_value(json_object_get(j->args, "intensity"));
    if (elpis_emotion_event(emo, j->key, intensity, now, st, &res, &err) != ELPIS_OK) {
        atomic_fetch_add(&s->psyche_failures, 1);
        srv_job_error(j, 500, "server_error", "not_saved", "the event was not saved: %s", err.msg);
    } else {
        publish(s);   /* before the answer: whoever saw the ack reads this state */
        srv_evlog(&s->log, "emotion_event type=%s known=%d intensity=%.2f dv=%.3f da=%.3f updates=%lld", res.event,
                  res.known, res.intensity, res.dv, res.da, (long long)st->update_count);
        srv_job_json(j, MHD_HTTP_OK, elpis_emotion_json(st, elpis_emotion_config_of(emo), now, ELPIS_EMOTION_JSON_BRIEF));
    }
    free(st);
}

enum MHD_Result srv_h_emotion_post(srv_req *r) {
    srv_api_error e = { 0 };
    if (!r->srv->psyche) return no_psyche(r);
    json_t *o = srv_body_json(r, &e);
    if (!o) return srv_respond_api_error(r, &e);
    json_t *type = json_object_get(o, "event_type"), *in = json_object_get(o, "intensity");
    enum MHD_Result ret;
    if (!json_is_string(type) || json_string_length(type) == 0 || json_string_length(type) >= EVENT_NAME_MAX)
        ret = srv_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid_request_error", "event_type", "invalid_value",
                                "event_type must be a non-empty string of fewer than %d bytes", EVENT_NAME_MAX);
    else if (in && !json_is_null(in) && !(json_is_number(in) && isfinite(json_number_value(in))))
        ret = srv_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid_request_error", "intensity", "invalid_type",
                                "intensity must be a number (it is clamped to 0..2)");
    else {
        srv_job *j = srv_job_new(event_job);
        if (j) {
            snprintf(j->key, sizeof j->key, "%s", json_string_value(type));
            j->args = json_pack("{s:f}", "intensity", in && !json_is_null(in) ? json_number_value(in) : 1.0);
        }
        ret = srv_work_submit(r, j);
    }
    json_decref(o);
    return ret;
}

/* ---- metrics ---------------------------------------------------------------------------------------- */

static void gauge(elpis_buf *b, const char *name, const char *type, const char *help, double v) {
    elpis_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

void srv_psyche_metrics(elpis_server *s, elpis_buf *b) {
    elpis_psyche *p = s->psyche;
    if (!p) return;
    const elpis_emotion_config *ec = elpis_emotion_config_of(p->emotion);
    elpis_emotion_state *st = malloc(sizeof *st);
    if (!st) return;
    double now = elpis_emotion_now(), c[ELPIS_QUADRANT_COUNT];
    current(s, now, st);
    elpis_quadrant q = elpis_emotion_quadrant(st, ec, now, NULL);
    elpis_emotion_coefficients(st->valence, st->arousal, ec->steering_strength, c);
    gauge(b, "elpis_emotion_valence", "gauge", "Emotional valence, -1 (bad) .. 1 (good).", st->valence);
    gauge(b, "elpis_emotion_arousal", "gauge", "Emotional arousal, -1 (calm) .. 1 (excited).", st->arousal);
    gauge(b, "elpis_emotion_updates", "gauge", "Emotional events applied since the state was created or reset.",
          (double)st->update_count);
    elpis_buf_printf(b, "# HELP elpis_emotion_quadrant 1 for the current quadrant.\n# TYPE elpis_emotion_quadrant gauge\n");
    for (int i = 0; i < ELPIS_QUADRANT_COUNT; i++)
        elpis_buf_printf(b, "elpis_emotion_quadrant{quadrant=\"%s\"} %d\n", elpis_quadrant_name(i), (int)q == i);
    elpis_buf_printf(b, "# HELP elpis_emotion_steering_coefficient Weight of each quadrant's vector (x steering_strength).\n"
                        "# TYPE elpis_emotion_steering_coefficient gauge\n");
    for (int i = 0; i < ELPIS_QUADRANT_COUNT; i++)
        elpis_buf_printf(b, "elpis_emotion_steering_coefficient{quadrant=\"%s\"} %.17g\n", elpis_quadrant_name(i), c[i]);
    gauge(b, "elpis_memory_consolidations_total", "counter", "Timed consolidation runs.",
          (double)atomic_load(&s->consolidations));
    gauge(b, "elpis_memory_promoted_total", "counter", "Memories promoted to long-term by timed runs.",
          (double)atomic_load(&s->memories_promoted));
    gauge(b, "elpis_memory_archived_total", "counter", "Memories archived by timed runs.",
          (double)atomic_load(&s->memories_archived));
    gauge(b, "elpis_psyche_failures_total", "counter", "Emotion or memory writes that failed.",
          (double)atomic_load(&s->psyche_failures));
    free(st);
}
