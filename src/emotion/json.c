/* json.c -- the emotion state as the original's clients see it (elpis-spec
 * §2.1 state dict, §6 Psyche emotion routes), built with jansson so the HTTP
 * and MCP layers can embed it or print it.
 *
 * Numbers are rounded as the original rounds them (valence/arousal 3 dp,
 * velocities 4 dp, time in quadrant 1 dp); steering coefficients are not
 * rounded. The state is decayed to `now` on a copy first, so what is printed
 * is always current.
 */
#include "elpis/emotion.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

static double round_to(double x, double scale) { return round(x * scale) / scale; }

/* json_object_set_new that remembers a failure instead of checking each call. */
static void put(json_t *o, const char *k, json_t *v, bool *ok) {
    if (!v || json_object_set_new(o, k, v)) *ok = false;
}

static json_t *trajectory_json(const elpis_emotion_trajectory *t) {
    json_t *o = json_object();
    bool ok = o != NULL;
    if (!ok) return NULL;
    const char *dir = elpis_emotion_spiral_name(t->spiral_direction);
    put(o, "valence_velocity", json_real(round_to(t->valence_velocity, 1e4)), &ok);
    put(o, "arousal_velocity", json_real(round_to(t->arousal_velocity, 1e4)), &ok);
    put(o, "trend", json_string(elpis_emotion_trend_name(t->trend)), &ok);
    put(o, "spiral_detected", json_boolean(t->spiral_detected), &ok);
    put(o, "spiral_direction", dir ? json_string(dir) : json_null(), &ok);
    put(o, "time_in_quadrant", json_real(round_to(t->time_in_quadrant, 10)), &ok);
    put(o, "momentum", json_string(elpis_emotion_momentum_name(t->momentum)), &ok);
    if (!ok) { json_decref(o); return NULL; }
    return o;
}

static json_t *coefficients_json(const elpis_emotion_state *s, const elpis_emotion_config *cfg) {
    double c[ELPIS_QUADRANT_COUNT];
    elpis_emotion_coefficients(s->valence, s->arousal, cfg->steering_strength, c);
    json_t *o = json_object();
    bool ok = o != NULL;
    for (int q = 0; ok && q < ELPIS_QUADRANT_COUNT; q++) put(o, elpis_quadrant_name(q), json_real(c[q]), &ok);
    if (!ok) { json_decref(o); return NULL; }
    return o;
}

static void put_full(json_t *o, const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now, bool *ok) {
    elpis_emotion_trajectory tr;
    elpis_emotion_trajectory_of(s, cfg, now, &tr);
    put(o, "last_update", json_real(s->last_update), ok);
    put(o, "update_count", json_integer(s->update_count), ok);
    put(o, "baseline", json_pack("{s:f, s:f}", "valence", cfg->baseline_valence, "arousal", cfg->baseline_arousal), ok);
    put(o, "steering_coefficients", coefficients_json(s, cfg), ok);
    put(o, "trajectory", trajectory_json(&tr), ok);
}

json_t *elpis_emotion_json(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                           elpis_emotion_json_kind kind) {
    elpis_emotion_state cur = *s;
    elpis_emotion_decay(&cur, cfg, now);
    json_t *o = json_object();
    bool ok = o != NULL;
    if (!ok) return NULL;
    put(o, "valence", json_real(round_to(cur.valence, 1e3)), &ok);
    put(o, "arousal", json_real(round_to(cur.arousal, 1e3)), &ok);
    put(o, "quadrant", json_string(elpis_quadrant_name(elpis_emotion_quadrant(&cur, cfg, now, NULL))), &ok);
    if (kind == ELPIS_EMOTION_JSON_FULL) put_full(o, &cur, cfg, now, &ok);
    if (!ok) { json_decref(o); return NULL; }
    return o;
}

elpis_status elpis_emotion_to_json(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                   elpis_emotion_json_kind kind, elpis_buf *out, elpis_error *err) {
    json_t *o = elpis_emotion_json(s, cfg, now, kind);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    if (!text) return elpis_fail(err, ELPIS_ENOMEM, "emotion state JSON");
    elpis_status st = elpis_buf_puts(out, text);
    free(text);
    if (st != ELPIS_OK) return elpis_fail(err, st, "emotion state JSON");
    return ELPIS_OK;
}

json_t *elpis_emotion_events_json(void) {
    size_t n;
    const elpis_emotion_event_def *ev = elpis_emotion_events(&n);
    json_t *o = json_object();
    bool ok = o != NULL;
    for (size_t i = 0; ok && i < n; i++) put(o, ev[i].name, json_pack("[f, f]", ev[i].dv, ev[i].da), &ok);
    if (!ok) { json_decref(o); return NULL; }
    return o;
}
