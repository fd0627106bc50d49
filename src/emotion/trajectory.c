/* trajectory.c -- where the emotion state is heading (elpis-spec §3,
 * "Trajectory"), computed from the event history only (decay writes none).
 *
 *   velocity  least-squares slope of valence (arousal) against time in
 *             minutes over the last `velocity_window` samples, clamped to
 *             [-1, 1]; 0 if the time spread is degenerate (< 1e-10).
 *   trend     with >= 4 samples, if the signs (d > 0) of the last 3 valence
 *             differences alternate: oscillating; else by valence velocity
 *             against the improving / declining thresholds.
 *   momentum  valence velocity against the momentum thresholds.
 *   spiral    over the last spiral_history_count samples, at least
 *             spiral_increasing_threshold transitions move farther from the
 *             baseline. Direction from the first to the last of them: if
 *             both |dv| and |da| < 0.05, the axis whose final offset from the
 *             baseline is larger; else the axis with the larger |delta|;
 *             ties go to valence. Valence: positive / negative; arousal:
 *             escalating / withdrawing.
 * Fewer than 2 samples give the neutral trajectory.
 */
#include "elpis/emotion.h"

#include <math.h>

#define SPIRAL_SMALL_DELTA 0.05
#define VELOCITY_EPS 1e-10

const char *elpis_emotion_trend_name(elpis_emotion_trend t) {
    switch (t) {
    case ELPIS_TREND_STABLE: return "stable";
    case ELPIS_TREND_IMPROVING: return "improving";
    case ELPIS_TREND_DECLINING: return "declining";
    case ELPIS_TREND_OSCILLATING: return "oscillating";
    }
    return "?";
}

const char *elpis_emotion_momentum_name(elpis_emotion_momentum m) {
    switch (m) {
    case ELPIS_MOMENTUM_NEUTRAL: return "neutral";
    case ELPIS_MOMENTUM_POSITIVE: return "positive";
    case ELPIS_MOMENTUM_NEGATIVE: return "negative";
    }
    return "?";
}

const char *elpis_emotion_spiral_name(elpis_emotion_spiral d) {
    switch (d) {
    case ELPIS_SPIRAL_NONE: return NULL;
    case ELPIS_SPIRAL_POSITIVE: return "positive";
    case ELPIS_SPIRAL_NEGATIVE: return "negative";
    case ELPIS_SPIRAL_ESCALATING: return "escalating";
    case ELPIS_SPIRAL_WITHDRAWING: return "withdrawing";
    }
    return NULL;
}

double elpis_emotion_velocity(const elpis_emotion_sample *h, int32_t n, int32_t window, bool arousal) {
    if (window < 2) window = 2;
    if (n > window) { h += n - window; n = window; }
    if (n < 2) return 0;
    /* times relative to the first sample keep the sums well conditioned */
    double mx = 0, my = 0;
    for (int32_t i = 0; i < n; i++) {
        mx += (h[i].t - h[0].t) / 60.0;
        my += arousal ? h[i].arousal : h[i].valence;
    }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0;
    for (int32_t i = 0; i < n; i++) {
        double dx = (h[i].t - h[0].t) / 60.0 - mx, dy = (arousal ? h[i].arousal : h[i].valence) - my;
        sxy += dx * dy;
        sxx += dx * dx;
    }
    if (sxx < VELOCITY_EPS) return 0;
    return fmax(-1, fmin(1, sxy / sxx));
}

static bool oscillating(const elpis_emotion_sample *h, int32_t n) {
    if (n < 4) return false;
    bool s0 = h[n - 3].valence - h[n - 4].valence > 0;
    bool s1 = h[n - 2].valence - h[n - 3].valence > 0;
    bool s2 = h[n - 1].valence - h[n - 2].valence > 0;
    return s0 != s1 && s1 != s2;
}

static elpis_emotion_trend trend_of(const elpis_emotion_sample *h, int32_t n, double vv, const elpis_emotion_config *cfg) {
    if (oscillating(h, n)) return ELPIS_TREND_OSCILLATING;
    if (vv > cfg->trend_improving_threshold) return ELPIS_TREND_IMPROVING;
    if (vv < cfg->trend_declining_threshold) return ELPIS_TREND_DECLINING;
    return ELPIS_TREND_STABLE;
}

static elpis_emotion_momentum momentum_of(double vv, const elpis_emotion_config *cfg) {
    if (vv > cfg->momentum_positive_threshold) return ELPIS_MOMENTUM_POSITIVE;
    if (vv < cfg->momentum_negative_threshold) return ELPIS_MOMENTUM_NEGATIVE;
    return ELPIS_MOMENTUM_NEUTRAL;
}

static elpis_emotion_spiral axis_direction(bool valence_axis, double d) {
    if (valence_axis) return d > 0 ? ELPIS_SPIRAL_POSITIVE : ELPIS_SPIRAL_NEGATIVE;
    return d > 0 ? ELPIS_SPIRAL_ESCALATING : ELPIS_SPIRAL_WITHDRAWING;
}

static elpis_emotion_spiral spiral_of(const elpis_emotion_sample *h, int32_t n, const elpis_emotion_config *cfg) {
    int32_t k = cfg->spiral_history_count;
    if (k < 2 || n < k) return ELPIS_SPIRAL_NONE;
    h += n - k;
    const double bv = cfg->baseline_valence, ba = cfg->baseline_arousal;
    int increasing = 0;
    for (int32_t i = 1; i < k; i++)
        increasing += hypot(h[i].valence - bv, h[i].arousal - ba) > hypot(h[i - 1].valence - bv, h[i - 1].arousal - ba);
    if (increasing < cfg->spiral_increasing_threshold) return ELPIS_SPIRAL_NONE;

    double dv = h[k - 1].valence - h[0].valence, da = h[k - 1].arousal - h[0].arousal;
    if (fabs(dv) < SPIRAL_SMALL_DELTA && fabs(da) < SPIRAL_SMALL_DELTA) {
        double ov = h[k - 1].valence - bv, oa = h[k - 1].arousal - ba;
        return fabs(ov) >= fabs(oa) ? axis_direction(true, ov) : axis_direction(false, oa);
    }
    return fabs(dv) >= fabs(da) ? axis_direction(true, dv) : axis_direction(false, da);
}

void elpis_emotion_trajectory_of(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                 elpis_emotion_trajectory *out) {
    *out = (elpis_emotion_trajectory){ 0 };
    double since;
    elpis_emotion_state cur = *s;   /* the quadrant timer needs the current values */
    elpis_emotion_decay(&cur, cfg, now);
    elpis_emotion_quadrant(&cur, cfg, now, &since);
    out->time_in_quadrant = fmax(0, now - since);

    const elpis_emotion_sample *h = s->history;
    int32_t n = s->n_history;
    if (n < 2) return;
    out->valence_velocity = elpis_emotion_velocity(h, n, cfg->velocity_window, false);
    out->arousal_velocity = elpis_emotion_velocity(h, n, cfg->velocity_window, true);
    out->trend = trend_of(h, n, out->valence_velocity, cfg);
    out->momentum = momentum_of(out->valence_velocity, cfg);
    out->spiral_direction = spiral_of(h, n, cfg);
    out->spiral_detected = out->spiral_direction != ELPIS_SPIRAL_NONE;
}
