/* state.c -- the emotion state: quadrants, events, decay, response analysis,
 * sampling modulation and steering coefficients. All pure functions of
 * (state, config, now); see emotion.h for the model and its invariants.
 *
 * Decay is computed from the anchor (the values right after the last event),
 * never from the previous read: linear decay does not compose
 * ((1-r*t1)(1-r*t2) != 1-r*(t1+t2)), so stepping it on every read would make
 * the state depend on how often somebody looked at it.
 */
#include "elpis/emotion.h"

#include <ctype.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* ---- quadrants ------------------------------------------------------------------- */

static const char *const g_quadrant_names[ELPIS_QUADRANT_COUNT] = { "excited", "frustrated", "calm", "depleted" };

elpis_quadrant elpis_quadrant_of(double valence, double arousal) {
    if (arousal >= 0) return valence >= 0 ? ELPIS_QUADRANT_EXCITED : ELPIS_QUADRANT_FRUSTRATED;
    return valence >= 0 ? ELPIS_QUADRANT_CALM : ELPIS_QUADRANT_DEPLETED;
}

const char *elpis_quadrant_name(elpis_quadrant q) {
    return q >= 0 && q < ELPIS_QUADRANT_COUNT ? g_quadrant_names[q] : "?";
}

bool elpis_quadrant_parse(const char *name, elpis_quadrant *out) {
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++)
        if (!strcmp(name, g_quadrant_names[q])) { *out = (elpis_quadrant)q; return true; }
    return false;
}

/* ---- events -------------------------------------------------------------------------- */

static const elpis_emotion_event_def g_events[] = {
    { "success", 0.20, 0.10 },       { "failure", -0.20, 0.15 },      { "test_passed", 0.15, 0.05 },
    { "test_failed", -0.15, 0.10 },  { "insight", 0.25, 0.20 },       { "error", -0.10, 0.20 },
    { "frustration", -0.15, 0.25 },  { "blocked", -0.20, 0.30 },      { "novelty", 0.10, 0.20 },
    { "exploration", 0.15, 0.15 },   { "user_positive", 0.15, 0.10 }, { "user_negative", -0.10, 0.15 },
    { "user_question", 0.05, 0.10 }, { "idle", 0.0, -0.10 },          { "routine", 0.05, -0.05 },
};

const elpis_emotion_event_def *elpis_emotion_events(size_t *n) {
    *n = ELPIS_ARRAY_LEN(g_events);
    return g_events;
}

static const elpis_emotion_event_def *event_find(const char *name) {
    for (size_t i = 0; name && i < ELPIS_ARRAY_LEN(g_events); i++)
        if (!strcmp(name, g_events[i].name)) return &g_events[i];
    return NULL;
}

bool elpis_emotion_event_lookup(const char *name, double *dv, double *da) {
    const elpis_emotion_event_def *e = event_find(name);
    *dv = e ? e->dv : ELPIS_EMOTION_UNKNOWN_DV;
    *da = e ? e->da : ELPIS_EMOTION_UNKNOWN_DA;
    return e != NULL;
}

/* ---- state ------------------------------------------------------------------------------ */

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }
/* NaN never reaches the state: it would poison every later value. */
static double clamp_unit(double x) { return isnan(x) ? 0 : clamp(x, -1, 1); }

void elpis_emotion_state_init(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now) {
    memset(s, 0, sizeof *s);
    s->valence = s->anchor_valence = clamp_unit(cfg->baseline_valence);
    s->arousal = s->anchor_arousal = clamp_unit(cfg->baseline_arousal);
    s->last_update = now;
    s->quadrant = elpis_quadrant_of(s->valence, s->arousal);
    s->quadrant_since = now;
}

void elpis_emotion_state_reset(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now) {
    elpis_emotion_state_init(s, cfg, now);
}

/* Fraction of the anchor's offset from the baseline still left at `now`. */
static double decay_factor(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now) {
    double elapsed = now - s->last_update;
    if (!(elapsed > 0)) return 1;          /* clock went back, or no time: no decay */
    return fmax(0, 1 - cfg->decay_rate * elapsed);
}

void elpis_emotion_decay(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now) {
    double f = decay_factor(s, cfg, now);
    s->valence = clamp_unit(cfg->baseline_valence + (s->anchor_valence - cfg->baseline_valence) * f);
    s->arousal = clamp_unit(cfg->baseline_arousal + (s->anchor_arousal - cfg->baseline_arousal) * f);
}

/* When does decay move an axis from x0 across 0 (the quadrant boundary,
 * x >= 0 vs x < 0) toward the baseline b? x(f) = b + (x0-b)*f with f falling
 * from 1 to 0, so the class flips once at f* = b / (b - x0). */
static double crossing_time(double x0, double b, double t0, double rate) {
    double fstar = b / (b - x0);
    return t0 + (1 - fstar) / rate;
}

elpis_quadrant elpis_emotion_quadrant(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                      double *since) {
    elpis_quadrant q = elpis_quadrant_of(s->valence, s->arousal);
    double entered = s->quadrant_since;
    if (q != s->quadrant && cfg->decay_rate > 0) {
        /* decay alone changed the quadrant: it was entered when the last axis flipped */
        const double t0 = s->last_update, r = cfg->decay_rate;
        entered = t0;
        if ((s->valence >= 0) != (s->anchor_valence >= 0))
            entered = fmax(entered, crossing_time(s->anchor_valence, cfg->baseline_valence, t0, r));
        if ((s->arousal >= 0) != (s->anchor_arousal >= 0))
            entered = fmax(entered, crossing_time(s->anchor_arousal, cfg->baseline_arousal, t0, r));
        entered = fmin(entered, now);
    }
    if (since) *since = entered;
    return q;
}

static void history_push(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now) {
    int32_t cap = (int32_t)clamp(cfg->trajectory_history_size, 1, ELPIS_EMOTION_HISTORY_MAX);
    if (s->n_history >= cap) {
        int32_t drop = s->n_history - cap + 1;
        memmove(s->history, s->history + drop, (size_t)(s->n_history - drop) * sizeof s->history[0]);
        s->n_history -= drop;
    }
    s->history[s->n_history++] = (elpis_emotion_sample){ now, s->valence, s->arousal };
}

static double clamp_intensity(double x) { return isnan(x) ? 0 : clamp(x, 0, 2); }

void elpis_emotion_apply_event(elpis_emotion_state *s, const elpis_emotion_config *cfg, const char *event_type,
                               double intensity, double now, elpis_emotion_result *out) {
    elpis_emotion_decay(s, cfg, now);
    double since;
    elpis_quadrant before = elpis_emotion_quadrant(s, cfg, now, &since);

    double dv, da;
    const elpis_emotion_event_def *def = event_find(event_type);
    bool known = elpis_emotion_event_lookup(event_type, &dv, &da);
    intensity = clamp_intensity(intensity);
    dv = clamp(dv * intensity, -cfg->max_delta, cfg->max_delta);
    da = clamp(da * intensity, -cfg->max_delta, cfg->max_delta);

    s->valence = s->anchor_valence = clamp_unit(s->valence + dv);
    s->arousal = s->anchor_arousal = clamp_unit(s->arousal + da);
    if (now > s->last_update) s->last_update = now;   /* a late clock never rewinds the anchor */
    s->update_count++;
    s->quadrant = elpis_quadrant_of(s->valence, s->arousal);
    s->quadrant_since = s->quadrant == before ? since : s->last_update;
    history_push(s, cfg, s->last_update);

    if (out) *out = (elpis_emotion_result){ def ? def->name : "unknown", known, intensity, dv, da };
}

double elpis_emotion_distance(const elpis_emotion_state *s, const elpis_emotion_config *cfg) {
    return hypot(s->valence - cfg->baseline_valence, s->arousal - cfg->baseline_arousal);
}

/* ---- response analysis --------------------------------------------------------------------- */

/* Does `text` contain word[0..n) (trimmed), ignoring ASCII case? */
static bool contains_word(const char *text, const char *word, size_t n) {
    while (n && isspace((unsigned char)*word)) { word++; n--; }
    while (n && isspace((unsigned char)word[n - 1])) n--;
    if (!n) return false;   /* validation forbids empty words; never match everything */
    for (const char *t = text; *t; t++) {
        size_t i = 0;
        while (i < n && t[i] && tolower((unsigned char)t[i]) == tolower((unsigned char)word[i])) i++;
        if (i == n) return true;
    }
    return false;
}

static bool rule_matches(const elpis_emotion_rule *r, const char *text) {
    for (const char *w = r->words; *w;) {
        const char *comma = strchr(w, ',');
        size_t n = comma ? (size_t)(comma - w) : strlen(w);
        if (contains_word(text, w, n)) return true;
        if (!comma) break;
        w = comma + 1;
    }
    return false;
}

int elpis_emotion_analyze_response(const elpis_emotion_config *cfg, const char *text, const char **event,
                                   double *intensity) {
    if (!cfg->response_analysis || !text) return -1;
    for (int i = 0; i < ELPIS_EMOTION_RULES; i++) {
        if (!rule_matches(&cfg->rules[i], text)) continue;
        if (event) *event = cfg->rules[i].event;
        if (intensity) *intensity = cfg->rules[i].intensity;
        return i;
    }
    return -1;
}

/* ---- modulation and steering coefficients ------------------------------------------------- */

static double round2(double x) { return round(x * 100) / 100; }

elpis_emotion_sampling elpis_emotion_modulate(const elpis_emotion_state *s, double base_t, double base_p, bool t_set,
                                              bool p_set, bool enabled) {
    elpis_emotion_sampling r = { base_t, base_p, false, false };
    if (!enabled) return r;
    if (!t_set) {
        r.temperature = round2(clamp(base_t - 0.2 * s->arousal, 0.1, 1.5));
        r.temperature_modulated = true;
    }
    if (!p_set) {
        r.top_p = round2(clamp(base_p + 0.1 * s->valence, 0.5, 1.0));
        r.top_p_modulated = true;
    }
    return r;
}

void elpis_emotion_coefficients(double valence, double arousal, double strength, double out[ELPIS_QUADRANT_COUNT]) {
    double v = (clamp_unit(valence) + 1) / 2, a = (clamp_unit(arousal) + 1) / 2;
    out[ELPIS_QUADRANT_EXCITED] = v * a * strength;
    out[ELPIS_QUADRANT_FRUSTRATED] = (1 - v) * a * strength;
    out[ELPIS_QUADRANT_CALM] = v * (1 - a) * strength;
    out[ELPIS_QUADRANT_DEPLETED] = (1 - v) * (1 - a) * strength;
}

double elpis_emotion_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
