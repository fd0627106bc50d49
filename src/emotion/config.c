/* config.c -- the [emotion] configuration: defaults, set-by-key, validation.
 *
 * One table describes every scalar key (name, type, field offset, range), so
 * that setting a key and validating a whole struct use the same ranges and
 * the same messages. The composite keys (response-analysis rules, one
 * control-vector file per quadrant) are parsed by name prefix.
 *
 * Defaults are the original's (elpis-spec §3 and §9): baseline (0, 0),
 * decay_rate 0.1, max_delta 0.5 (both now honoured), steering_strength 1.0,
 * trajectory thresholds 0.01 / -0.01 / 0.02 / -0.02, history 20, spiral
 * 5 / 3, and the four word lists of process_response. velocity_window (10)
 * was a constant in the original; it is a key here.
 */
#include "elpis/emotion.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { K_DOUBLE, K_INT, K_BOOL } key_type;

typedef struct key_def {
    const char *name;
    key_type type;
    size_t offset;
    double min, max;
} key_def;

#define F(field) offsetof(elpis_emotion_config, field)
static const key_def g_keys[] = {
    { "baseline_valence", K_DOUBLE, F(baseline_valence), -1, 1 },
    { "baseline_arousal", K_DOUBLE, F(baseline_arousal), -1, 1 },
    { "decay_rate", K_DOUBLE, F(decay_rate), 0, 10 },
    { "max_delta", K_DOUBLE, F(max_delta), 0, 2 },
    { "steering_strength", K_DOUBLE, F(steering_strength), 0, 3 },
    { "modulation", K_BOOL, F(modulation), 0, 1 },
    { "response_analysis", K_BOOL, F(response_analysis), 0, 1 },
    { "trajectory_history_size", K_INT, F(trajectory_history_size), 5, ELPIS_EMOTION_HISTORY_MAX },
    { "velocity_window", K_INT, F(velocity_window), 2, ELPIS_EMOTION_HISTORY_MAX },
    { "momentum_positive_threshold", K_DOUBLE, F(momentum_positive_threshold), 0, 1 },
    { "momentum_negative_threshold", K_DOUBLE, F(momentum_negative_threshold), -1, 0 },
    { "trend_improving_threshold", K_DOUBLE, F(trend_improving_threshold), 0, 1 },
    { "trend_declining_threshold", K_DOUBLE, F(trend_declining_threshold), -1, 0 },
    { "spiral_history_count", K_INT, F(spiral_history_count), 3, 20 },
    { "spiral_increasing_threshold", K_INT, F(spiral_increasing_threshold), 2, 10 },
    { "steering_layer_start", K_INT, F(steering_layer_start), 0, 65536 },
    { "steering_layer_end", K_INT, F(steering_layer_end), 0, 65536 },
};
#undef F

/* Rule slots, in the order they are tested, with the original's lists. */
static const char *const g_slots[ELPIS_EMOTION_RULES] = { "success", "error", "exploration", "novelty" };
static const struct { const char *event; double intensity; const char *words; } g_default_rules[ELPIS_EMOTION_RULES] = {
    { "success", 0.5, "successfully,completed,done,fixed,working" },
    { "error", 0.5, "error,failed,cannot,unable,exception" },
    { "exploration", 0.3, "interesting,discover,learn,new,found" },
    { "novelty", 0.2, "unsure,uncertain,might,perhaps,unclear" },
};

void elpis_emotion_config_default(elpis_emotion_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->decay_rate = 0.1;
    cfg->max_delta = 0.5;
    cfg->steering_strength = 1.0;
    cfg->modulation = true;
    cfg->response_analysis = true;
    cfg->trajectory_history_size = 20;
    cfg->velocity_window = 10;
    cfg->momentum_positive_threshold = 0.01;
    cfg->momentum_negative_threshold = -0.01;
    cfg->trend_improving_threshold = 0.02;
    cfg->trend_declining_threshold = -0.02;
    cfg->spiral_history_count = 5;
    cfg->spiral_increasing_threshold = 3;
    for (int i = 0; i < ELPIS_EMOTION_RULES; i++) {
        snprintf(cfg->rules[i].event, sizeof cfg->rules[i].event, "%s", g_default_rules[i].event);
        cfg->rules[i].intensity = g_default_rules[i].intensity;
        snprintf(cfg->rules[i].words, sizeof cfg->rules[i].words, "%s", g_default_rules[i].words);
    }
}

/* ---- value parsing -------------------------------------------------------------- */

static const char *src_of(const char *source) { return source ? source : "configuration"; }

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (end != s && isspace((unsigned char)*end)) end++;
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *const yes[] = { "true", "1", "yes", "on" }, *const no[] = { "false", "0", "no", "off" };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(yes); i++) {
        if (!strcasecmp(s, yes[i])) { *out = true; return true; }
        if (!strcasecmp(s, no[i])) { *out = false; return true; }
    }
    return false;
}

static double key_get(const elpis_emotion_config *cfg, const key_def *k) {
    const char *p = (const char *)cfg + k->offset;
    switch (k->type) {
    case K_DOUBLE: return *(const double *)p;
    case K_INT: return *(const int32_t *)p;
    case K_BOOL: return *(const bool *)p;
    }
    return 0;
}

static elpis_status set_scalar(elpis_emotion_config *cfg, const key_def *k, const char *value, const char *source,
                               elpis_error *err) {
    char *p = (char *)cfg + k->offset;
    if (k->type == K_BOOL) {
        if (!parse_bool(value, (bool *)p))
            return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s = '%s': expected true or false", src_of(source),
                              k->name, value);
        return ELPIS_OK;
    }
    double v;
    bool ok = parse_double(value, &v) && v >= k->min && v <= k->max;
    if (ok && k->type == K_INT) ok = v == floor(v);
    if (!ok)
        return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s = '%s': expected %s in %g..%g", src_of(source), k->name,
                          value, k->type == K_INT ? "an integer" : "a number", k->min, k->max);
    if (k->type == K_INT) *(int32_t *)p = (int32_t)v;
    else *(double *)p = v;
    return ELPIS_OK;
}

/* ---- word lists --------------------------------------------------------------------- */

/* A list is "" or comma-separated words, none empty after trimming (an empty
 * word would be a substring of every text). */
static bool words_ok(const char *w) {
    if (!*w) return true;
    for (;;) {
        const char *comma = strchr(w, ',');
        size_t n = comma ? (size_t)(comma - w) : strlen(w);
        bool blank = true;
        for (size_t i = 0; i < n; i++) blank = blank && isspace((unsigned char)w[i]);
        if (blank) return false;
        if (!comma) return true;
        w = comma + 1;
    }
}

static int slot_index(const char *name, size_t len) {
    for (int i = 0; i < ELPIS_EMOTION_RULES; i++)
        if (strlen(g_slots[i]) == len && !strncmp(g_slots[i], name, len)) return i;
    return -1;
}

static elpis_status set_rule(elpis_emotion_config *cfg, int slot, const char *field, const char *key,
                             const char *value, const char *source, elpis_error *err) {
    elpis_emotion_rule *r = &cfg->rules[slot];
    if (!strcmp(field, "words")) {
        if (strlen(value) >= sizeof r->words || !words_ok(value))
            return elpis_fail(err, ELPIS_EINVAL,
                              "%s: emotion.%s: expected comma-separated non-empty words, at most %zu bytes",
                              src_of(source), key, sizeof r->words - 1);
        snprintf(r->words, sizeof r->words, "%s", value);
        return ELPIS_OK;
    }
    if (!strcmp(field, "intensity")) {
        double v;
        if (!parse_double(value, &v) || v < 0 || v > 2)
            return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s = '%s': expected a number in 0..2", src_of(source),
                              key, value);
        r->intensity = v;
        return ELPIS_OK;
    }
    if (!strcmp(field, "event")) {
        double dv, da;
        if (!elpis_emotion_event_lookup(value, &dv, &da) || strlen(value) >= sizeof r->event)
            return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s = '%s': not an event name (see emotion://events)",
                              src_of(source), key, value);
        snprintf(r->event, sizeof r->event, "%s", value);
        return ELPIS_OK;
    }
    return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s: unknown key", src_of(source), key);
}

static elpis_status set_vectors(elpis_emotion_config *cfg, const char *key, const char *qname, const char *value,
                                const char *source, elpis_error *err) {
    elpis_quadrant q;
    if (!elpis_quadrant_parse(qname, &q))
        return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s: unknown key (quadrants: excited, frustrated, calm, depleted)",
                          src_of(source), key);
    if (strlen(value) >= sizeof cfg->vectors[q])
        return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s: path longer than %zu bytes", src_of(source), key,
                          sizeof cfg->vectors[q] - 1);
    snprintf(cfg->vectors[q], sizeof cfg->vectors[q], "%s", value);
    return ELPIS_OK;
}

elpis_status elpis_emotion_config_set(elpis_emotion_config *cfg, const char *key, const char *value,
                                      const char *source, elpis_error *err) {
    if (!key || !value) return elpis_fail(err, ELPIS_EINVAL, "%s: emotion: missing key or value", src_of(source));
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(g_keys); i++)
        if (!strcmp(key, g_keys[i].name)) return set_scalar(cfg, &g_keys[i], value, source, err);
    if (!strncmp(key, "vectors_", 8)) return set_vectors(cfg, key, key + 8, value, source, err);
    const char *us = strrchr(key, '_');
    int slot = us ? slot_index(key, (size_t)(us - key)) : -1;
    if (slot >= 0) return set_rule(cfg, slot, us + 1, key, value, source, err);
    return elpis_fail(err, ELPIS_EINVAL, "%s: emotion.%s: unknown key", src_of(source), key);
}

/* ---- validation ------------------------------------------------------------------------ */

static elpis_status validate_rules(const elpis_emotion_config *cfg, elpis_error *err) {
    for (int i = 0; i < ELPIS_EMOTION_RULES; i++) {
        const elpis_emotion_rule *r = &cfg->rules[i];
        double dv, da;
        if (!memchr(r->words, 0, sizeof r->words) || !words_ok(r->words))
            return elpis_fail(err, ELPIS_EINVAL, "emotion.%s_words: expected comma-separated non-empty words", g_slots[i]);
        if (!(r->intensity >= 0 && r->intensity <= 2))
            return elpis_fail(err, ELPIS_EINVAL, "emotion.%s_intensity = %g: expected 0..2", g_slots[i], r->intensity);
        if (!memchr(r->event, 0, sizeof r->event) || !elpis_emotion_event_lookup(r->event, &dv, &da))
            return elpis_fail(err, ELPIS_EINVAL, "emotion.%s_event: not an event name", g_slots[i]);
    }
    return ELPIS_OK;
}

elpis_status elpis_emotion_config_validate(const elpis_emotion_config *cfg, elpis_error *err) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(g_keys); i++) {
        const key_def *k = &g_keys[i];
        double v = key_get(cfg, k);
        if (!(v >= k->min && v <= k->max))   /* also catches NaN */
            return elpis_fail(err, ELPIS_EINVAL, "emotion.%s = %g: expected %g..%g", k->name, v, k->min, k->max);
    }
    if (cfg->velocity_window > cfg->trajectory_history_size)
        return elpis_fail(err, ELPIS_EINVAL, "emotion.velocity_window = %d: must not exceed trajectory_history_size (%d)",
                          cfg->velocity_window, cfg->trajectory_history_size);
    if (cfg->spiral_history_count > cfg->trajectory_history_size)
        return elpis_fail(err, ELPIS_EINVAL,
                          "emotion.spiral_history_count = %d: must not exceed trajectory_history_size (%d)",
                          cfg->spiral_history_count, cfg->trajectory_history_size);
    if (cfg->spiral_increasing_threshold >= cfg->spiral_history_count)
        return elpis_fail(err, ELPIS_EINVAL,
                          "emotion.spiral_increasing_threshold = %d: must be below spiral_history_count (%d), "
                          "which gives %d transitions",
                          cfg->spiral_increasing_threshold, cfg->spiral_history_count, cfg->spiral_history_count - 1);
    if (cfg->steering_layer_start > 0 && cfg->steering_layer_end > 0 &&
        cfg->steering_layer_start > cfg->steering_layer_end)
        return elpis_fail(err, ELPIS_EINVAL, "emotion.steering_layer_start = %d: after steering_layer_end (%d)",
                          cfg->steering_layer_start, cfg->steering_layer_end);
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++)
        if (!memchr(cfg->vectors[q], 0, sizeof cfg->vectors[q]))
            return elpis_fail(err, ELPIS_EINVAL, "emotion.vectors_%s: path not terminated", elpis_quadrant_name(q));
    return validate_rules(cfg, err);
}

bool elpis_emotion_config_steering(const elpis_emotion_config *cfg) {
    if (!(cfg->steering_strength > 0)) return false;
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++)
        if (cfg->vectors[q][0]) return true;
    return false;
}
