/* test_emotion.c -- the emotion model's pure parts: configuration, events,
 * decay, quadrants, response analysis, sampling modulation, steering
 * coefficients, trajectory, JSON, and the thread-safe object in memory.
 *
 * The original's tests (elpis-spec §10: test_emotion.py, the modulation
 * cases of test_mcp_server.py, test_emotional_trajectory.py) are the floor;
 * each is marked "original:". Every time is injected: `now` is a number the
 * test picks, so decay and velocities are exact. Trajectory histories are
 * spaced one minute apart, as the original's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "elpis/emotion.h"

#define T0 1700000000.0   /* an arbitrary epoch second */
#define EPS 1e-12

static void assert_near(double got, double want, double eps) {
    if (!(fabs(got - want) <= eps)) fail_msg("got %.17g, want %.17g (+-%g)", got, want, eps);
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected [%s] in [%s]", needle, hay);
}

static elpis_emotion_config defaults(void) {
    elpis_emotion_config c;
    elpis_emotion_config_default(&c);
    return c;
}

/* Put the state at (v, a) as if an event had just left it there at time t. */
static void set_state(elpis_emotion_state *s, double v, double a, double t) {
    s->valence = s->anchor_valence = v;
    s->arousal = s->anchor_arousal = a;
    s->last_update = t;
    s->quadrant = elpis_quadrant_of(v, a);
    s->quadrant_since = t;
}

/* ==== configuration ============================================================ */

static void test_config_defaults(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    assert_true(elpis_emotion_config_validate(&c, NULL) == ELPIS_OK);
    assert_near(c.baseline_valence, 0, 0);
    assert_near(c.baseline_arousal, 0, 0);
    assert_near(c.decay_rate, 0.1, 0);
    assert_near(c.max_delta, 0.5, 0);
    assert_near(c.steering_strength, 1.0, 0);
    assert_int_equal(c.trajectory_history_size, 20);
    assert_int_equal(c.velocity_window, 10);
    assert_near(c.momentum_positive_threshold, 0.01, 0);
    assert_near(c.momentum_negative_threshold, -0.01, 0);
    assert_near(c.trend_improving_threshold, 0.02, 0);
    assert_near(c.trend_declining_threshold, -0.02, 0);
    assert_int_equal(c.spiral_history_count, 5);
    assert_int_equal(c.spiral_increasing_threshold, 3);
    assert_true(c.modulation && c.response_analysis);
    assert_string_equal(c.rules[0].event, "success");
    assert_string_equal(c.rules[0].words, "successfully,completed,done,fixed,working");
    assert_near(c.rules[0].intensity, 0.5, 0);
    assert_string_equal(c.rules[1].words, "error,failed,cannot,unable,exception");
    assert_near(c.rules[1].intensity, 0.5, 0);
    assert_string_equal(c.rules[2].event, "exploration");
    assert_string_equal(c.rules[2].words, "interesting,discover,learn,new,found");
    assert_near(c.rules[2].intensity, 0.3, 0);
    assert_string_equal(c.rules[3].event, "novelty");
    assert_string_equal(c.rules[3].words, "unsure,uncertain,might,perhaps,unclear");
    assert_near(c.rules[3].intensity, 0.2, 0);
    assert_false(elpis_emotion_config_steering(&c));   /* no vector files by default */
}

static void test_config_set_good(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    assert_true(elpis_emotion_config_set(&c, "decay_rate", "0.05", NULL, NULL) == ELPIS_OK);
    assert_near(c.decay_rate, 0.05, 0);
    assert_true(elpis_emotion_config_set(&c, "baseline_valence", "-1", NULL, NULL) == ELPIS_OK);
    assert_near(c.baseline_valence, -1, 0);
    assert_true(elpis_emotion_config_set(&c, "trajectory_history_size", "100", NULL, NULL) == ELPIS_OK);
    assert_int_equal(c.trajectory_history_size, 100);
    assert_true(elpis_emotion_config_set(&c, "modulation", "off", NULL, NULL) == ELPIS_OK);
    assert_false(c.modulation);
    assert_true(elpis_emotion_config_set(&c, "modulation", "Yes", NULL, NULL) == ELPIS_OK);
    assert_true(c.modulation);
    assert_true(elpis_emotion_config_set(&c, "novelty_words", "hmm, maybe", NULL, NULL) == ELPIS_OK);
    assert_string_equal(c.rules[3].words, "hmm, maybe");
    assert_true(elpis_emotion_config_set(&c, "success_intensity", "2", NULL, NULL) == ELPIS_OK);
    assert_near(c.rules[0].intensity, 2, 0);
    assert_true(elpis_emotion_config_set(&c, "error_event", "blocked", NULL, NULL) == ELPIS_OK);
    assert_string_equal(c.rules[1].event, "blocked");
    assert_true(elpis_emotion_config_set(&c, "vectors_calm", "/x/calm.gguf", NULL, NULL) == ELPIS_OK);
    assert_string_equal(c.vectors[ELPIS_QUADRANT_CALM], "/x/calm.gguf");
    assert_true(elpis_emotion_config_steering(&c));
    assert_true(elpis_emotion_config_set(&c, "steering_strength", "0", NULL, NULL) == ELPIS_OK);
    assert_false(elpis_emotion_config_steering(&c));   /* strength 0 turns steering off */
    assert_true(elpis_emotion_config_validate(&c, NULL) == ELPIS_OK);
}

static void expect_set_error(const char *key, const char *value, const char *needle) {
    elpis_emotion_config c, before;   /* both memset by the default: padding compares equal */
    elpis_emotion_config_default(&c);
    elpis_emotion_config_default(&before);
    elpis_error err = { 0 };
    assert_int_equal(elpis_emotion_config_set(&c, key, value, "elpis.ini:7", &err), ELPIS_EINVAL);
    assert_contains(err.msg, "elpis.ini:7");
    assert_contains(err.msg, key);
    assert_contains(err.msg, needle);
    assert_memory_equal(&c, &before, sizeof c);   /* nothing changed */
}

static void test_config_set_errors(void **unused) {
    (void)unused;
    expect_set_error("decay_rate", "-0.1", "0..10");
    expect_set_error("decay_rate", "fast", "0..10");
    expect_set_error("decay_rate", "nan", "0..10");
    expect_set_error("max_delta", "2.5", "0..2");
    expect_set_error("baseline_arousal", "1.01", "-1..1");
    expect_set_error("steering_strength", "3.5", "0..3");
    expect_set_error("trajectory_history_size", "4", "5..100");
    expect_set_error("trajectory_history_size", "20.5", "integer");
    expect_set_error("spiral_history_count", "21", "3..20");
    expect_set_error("momentum_negative_threshold", "0.1", "-1..0");
    expect_set_error("modulation", "maybe", "true or false");
    expect_set_error("decay", "0.1", "unknown key");
    expect_set_error("vectors_neutral", "x.gguf", "unknown key");
    expect_set_error("success_colour", "red", "unknown key");
    expect_set_error("success_intensity", "3", "0..2");
    expect_set_error("success_words", "done,,fixed", "non-empty words");
    expect_set_error("success_words", "done, ", "non-empty words");
    expect_set_error("success_event", "joy", "not an event name");
}

static void expect_invalid(elpis_emotion_config *c, const char *needle) {
    elpis_error err = { 0 };
    assert_int_equal(elpis_emotion_config_validate(c, &err), ELPIS_EINVAL);
    assert_contains(err.msg, needle);
}

static void test_config_validate_relations(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    c.velocity_window = 21;
    expect_invalid(&c, "velocity_window");
    c = defaults();
    c.trajectory_history_size = 5;
    c.velocity_window = 5;
    c.spiral_history_count = 6;
    expect_invalid(&c, "spiral_history_count");
    c = defaults();
    c.spiral_increasing_threshold = 5;   /* 5 samples give only 4 transitions */
    expect_invalid(&c, "spiral_increasing_threshold");
    c = defaults();
    c.steering_layer_start = 5;
    c.steering_layer_end = 3;
    expect_invalid(&c, "steering_layer_start");
    c = defaults();
    c.decay_rate = NAN;
    expect_invalid(&c, "decay_rate");
    c = defaults();
    c.max_delta = 3;
    expect_invalid(&c, "max_delta");
    c = defaults();
    strcpy(c.rules[2].words, "a,");
    expect_invalid(&c, "exploration_words");
    c = defaults();
    strcpy(c.rules[0].event, "nope");
    expect_invalid(&c, "success_event");
}

/* ==== quadrants, events, state ========================================================= */

/* original: quadrants, and (0,0) maps to excited */
static void test_quadrants(void **unused) {
    (void)unused;
    assert_int_equal(elpis_quadrant_of(0.5, 0.5), ELPIS_QUADRANT_EXCITED);
    assert_int_equal(elpis_quadrant_of(-0.5, 0.5), ELPIS_QUADRANT_FRUSTRATED);
    assert_int_equal(elpis_quadrant_of(0.5, -0.5), ELPIS_QUADRANT_CALM);
    assert_int_equal(elpis_quadrant_of(-0.5, -0.5), ELPIS_QUADRANT_DEPLETED);
    assert_int_equal(elpis_quadrant_of(0, 0), ELPIS_QUADRANT_EXCITED);
    assert_int_equal(elpis_quadrant_of(0, -0.01), ELPIS_QUADRANT_CALM);
    assert_int_equal(elpis_quadrant_of(-0.01, 0), ELPIS_QUADRANT_FRUSTRATED);
    const char *names[] = { "excited", "frustrated", "calm", "depleted" };
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++) {
        elpis_quadrant back;
        assert_string_equal(elpis_quadrant_name(q), names[q]);
        assert_true(elpis_quadrant_parse(names[q], &back) && back == (elpis_quadrant)q);
    }
    elpis_quadrant q;
    assert_false(elpis_quadrant_parse("neutral", &q));   /* Elpis never reports neutral */
}

static void test_event_table(void **unused) {
    (void)unused;
    static const struct { const char *name; double dv, da; } want[] = {
        { "success", .20, .10 },        { "failure", -.20, .15 },      { "idle", 0, -.10 },
        { "test_passed", .15, .05 },    { "test_failed", -.15, .10 },  { "routine", .05, -.05 },
        { "insight", .25, .20 },        { "error", -.10, .20 },        { "novelty", .10, .20 },
        { "user_positive", .15, .10 },  { "frustration", -.15, .25 },  { "exploration", .15, .15 },
        { "user_negative", -.10, .15 }, { "blocked", -.20, .30 },      { "user_question", .05, .10 },
    };
    size_t n;
    elpis_emotion_events(&n);
    assert_int_equal(n, ELPIS_ARRAY_LEN(want));
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(want); i++) {
        double dv, da;
        assert_true(elpis_emotion_event_lookup(want[i].name, &dv, &da));
        assert_near(dv, want[i].dv, EPS);
        assert_near(da, want[i].da, EPS);
    }
    double dv, da;
    assert_false(elpis_emotion_event_lookup("unknown", &dv, &da));
    assert_near(dv, 0, 0);
    assert_near(da, 0.05, 0);
    assert_false(elpis_emotion_event_lookup("Success", &dv, &da));   /* names are exact */
}

/* Each event of the table, at intensity 1 from the baseline, moves by its deltas. */
static void test_every_event_applies_its_deltas(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    size_t n;
    const elpis_emotion_event_def *ev = elpis_emotion_events(&n);
    for (size_t i = 0; i < n; i++) {
        elpis_emotion_state s;
        elpis_emotion_result r;
        elpis_emotion_state_init(&s, &c, T0);
        elpis_emotion_apply_event(&s, &c, ev[i].name, 1.0, T0, &r);
        assert_near(s.valence, ev[i].dv, EPS);
        assert_near(s.arousal, ev[i].da, EPS);
        assert_true(r.known);
        assert_string_equal(r.event, ev[i].name);
    }
}

/* original: unknown event gives v = 0, a > 0 */
static void test_unknown_event(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_result r;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "made_up", 1.0, T0, &r);
    assert_near(s.valence, 0, 0);
    assert_near(s.arousal, 0.05, EPS);
    assert_false(r.known);
    assert_string_equal(r.event, "unknown");
    assert_int_equal(s.update_count, 1);
}

/* original: intensity 10 behaves like 2; and the clamp's other end */
static void test_intensity_clamp(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state a, b;
    elpis_emotion_state_init(&a, &c, T0);
    elpis_emotion_state_init(&b, &c, T0);
    elpis_emotion_apply_event(&a, &c, "success", 10, T0, NULL);
    elpis_emotion_apply_event(&b, &c, "success", 2, T0, NULL);
    assert_near(a.valence, 0.4, EPS);
    assert_near(a.valence, b.valence, 0);
    assert_near(a.arousal, b.arousal, 0);

    elpis_emotion_result r;
    elpis_emotion_state_init(&a, &c, T0);
    elpis_emotion_apply_event(&a, &c, "success", -3, T0, &r);
    assert_near(r.intensity, 0, 0);
    assert_near(a.valence, 0, 0);
    assert_int_equal(a.update_count, 1);   /* an event of intensity 0 is still an update */
    elpis_emotion_apply_event(&a, &c, "success", NAN, T0, &r);
    assert_near(r.intensity, 0, 0);
    assert_false(isnan(a.valence));
    elpis_emotion_apply_event(&a, &c, "success", 0.5, T0, &r);
    assert_near(a.valence, 0.1, EPS);
}

/* original: max_delta is enforced; fixed bug: a configured max_delta is honoured */
static void test_max_delta(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_result r;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "blocked", 2, T0, &r);   /* -0.4, +0.6 -> +0.5 */
    assert_near(r.dv, -0.4, EPS);
    assert_near(r.da, 0.5, 0);
    assert_near(s.arousal, 0.5, 0);

    c.max_delta = 0.1;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "blocked", 1, T0, &r);
    assert_near(s.valence, -0.1, 0);
    assert_near(s.arousal, 0.1, 0);
}

/* original: clamping to [-1, 1] on every shift */
static void test_clamping(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    for (int i = 0; i < 20; i++) elpis_emotion_apply_event(&s, &c, "insight", 2, T0, NULL);
    assert_near(s.valence, 1, 0);
    assert_near(s.arousal, 1, 0);
    for (int i = 0; i < 20; i++) elpis_emotion_apply_event(&s, &c, "failure", 2, T0, NULL);
    assert_near(s.valence, -1, 0);
    for (int i = 0; i < 30; i++) elpis_emotion_apply_event(&s, &c, "idle", 2, T0, NULL);
    assert_near(s.arousal, -1, 0);
}

/* original: shift/update_count and reset */
static void test_update_count_history_and_reset(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    assert_int_equal(s.update_count, 0);
    assert_int_equal(s.n_history, 0);
    for (int i = 0; i < 25; i++) elpis_emotion_apply_event(&s, &c, "routine", 0, T0 + i, NULL);
    assert_int_equal(s.update_count, 25);
    assert_int_equal(s.n_history, 20);               /* the last trajectory_history_size kept */
    assert_near(s.history[0].t, T0 + 5, 0);          /* the 5 oldest dropped */
    assert_near(s.history[19].t, T0 + 24, 0);
    assert_near(s.last_update, T0 + 24, 0);

    c.baseline_valence = 0.3;
    c.baseline_arousal = -0.2;
    elpis_emotion_state_reset(&s, &c, T0 + 100);
    assert_int_equal(s.update_count, 0);
    assert_int_equal(s.n_history, 0);
    assert_near(s.valence, 0.3, 0);
    assert_near(s.arousal, -0.2, 0);
    assert_near(s.last_update, T0 + 100, 0);
    assert_int_equal(s.quadrant, ELPIS_QUADRANT_CALM);
}

/* original: distance of (0.6, 0.8) = 1.0 */
static void test_distance(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, 0.6, 0.8, T0);
    assert_near(elpis_emotion_distance(&s, &c), 1.0, EPS);
    c.baseline_valence = 0.6;
    assert_near(elpis_emotion_distance(&s, &c), 0.8, EPS);
}

/* ==== decay ====================================================================== */

/* original: decay reduces the distance to the baseline; exact linear law */
static void test_decay_linear(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, 0.5, -0.8, T0);
    double d0 = elpis_emotion_distance(&s, &c);
    elpis_emotion_decay(&s, &c, T0 + 1);
    assert_true(elpis_emotion_distance(&s, &c) < d0);
    assert_near(s.valence, 0.45, EPS);
    assert_near(s.arousal, -0.72, EPS);
    elpis_emotion_decay(&s, &c, T0 + 5);
    assert_near(s.valence, 0.25, EPS);
    elpis_emotion_decay(&s, &c, T0 + 10);   /* factor reaches 0 at 1/rate seconds */
    assert_near(s.valence, 0, 0);
    assert_near(s.arousal, 0, 0);
    elpis_emotion_decay(&s, &c, T0 + 1000);
    assert_near(s.valence, 0, 0);
    /* the anchor is untouched: decay is recomputed, never accumulated */
    assert_near(s.anchor_valence, 0.5, 0);
    assert_int_equal(s.update_count, 0);
    assert_int_equal(s.n_history, 0);       /* decay writes no history */
}

/* Reading often or never gives the same state (the linear law does not compose). */
static void test_decay_independent_of_reads(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state polled, once;
    elpis_emotion_state_init(&polled, &c, T0);
    set_state(&polled, -0.9, 0.6, T0);
    once = polled;
    for (int i = 1; i <= 40; i++) elpis_emotion_decay(&polled, &c, T0 + i * 0.1);
    elpis_emotion_decay(&once, &c, T0 + 4);
    assert_near(polled.valence, once.valence, 0);
    assert_near(polled.arousal, once.arousal, 0);
    assert_near(once.valence, -0.9 * 0.6, EPS);
}

/* fixed bug: decay_rate is honoured; rate 0 means no decay; toward a non-zero baseline */
static void test_decay_rate_and_baseline(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    c.decay_rate = 0.05;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, 0.8, 0.8, T0);
    elpis_emotion_decay(&s, &c, T0 + 10);
    assert_near(s.valence, 0.4, EPS);
    c.decay_rate = 0;
    elpis_emotion_decay(&s, &c, T0 + 1e6);
    assert_near(s.valence, 0.8, 0);
    c.decay_rate = 0.1;
    c.baseline_valence = 0.2;
    c.baseline_arousal = -0.4;
    set_state(&s, 0.6, 0.6, T0);
    elpis_emotion_decay(&s, &c, T0 + 5);
    assert_near(s.valence, 0.4, EPS);
    assert_near(s.arousal, 0.1, EPS);
    elpis_emotion_decay(&s, &c, T0 + 11);
    assert_near(s.valence, 0.2, EPS);
    assert_near(s.arousal, -0.4, EPS);
}

static void test_decay_clock_backwards(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, 0.5, 0.5, T0);
    elpis_emotion_decay(&s, &c, T0 - 30);   /* a wall clock set back: no decay, no growth */
    assert_near(s.valence, 0.5, 0);
    elpis_emotion_apply_event(&s, &c, "success", 1, T0 - 30, NULL);
    assert_near(s.valence, 0.7, EPS);
    assert_near(s.last_update, T0, 0);      /* the anchor time never moves back */
}

/* An event starts from the decayed state (the original decays first). */
static void test_event_after_decay(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "insight", 2, T0, NULL);   /* 0.5, 0.4 */
    elpis_emotion_apply_event(&s, &c, "success", 1, T0 + 5, NULL);
    assert_near(s.valence, 0.25 + 0.2, EPS);
    assert_near(s.arousal, 0.2 + 0.1, EPS);
    assert_near(s.anchor_valence, s.valence, 0);
    assert_near(s.history[1].valence, 0.45, EPS);
    assert_near(s.history[1].t, T0 + 5, 0);
}

/* ==== quadrant timer ================================================================== */

static void test_quadrant_timer_events(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    c.decay_rate = 0;
    elpis_emotion_state s;
    elpis_emotion_trajectory tr;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "success", 1, T0 + 10, NULL);   /* excited, as before */
    elpis_emotion_trajectory_of(&s, &c, T0 + 30, &tr);
    assert_near(tr.time_in_quadrant, 30, EPS);
    elpis_emotion_apply_event(&s, &c, "failure", 2, T0 + 40, NULL);   /* -> frustrated */
    assert_int_equal(s.quadrant, ELPIS_QUADRANT_FRUSTRATED);
    elpis_emotion_trajectory_of(&s, &c, T0 + 45, &tr);
    assert_near(tr.time_in_quadrant, 5, EPS);
    elpis_emotion_apply_event(&s, &c, "error", 1, T0 + 50, NULL);     /* still frustrated */
    elpis_emotion_trajectory_of(&s, &c, T0 + 60, &tr);
    assert_near(tr.time_in_quadrant, 20, EPS);
    elpis_emotion_state_reset(&s, &c, T0 + 70);                        /* original: timer reset */
    elpis_emotion_trajectory_of(&s, &c, T0 + 70, &tr);
    assert_near(tr.time_in_quadrant, 0, 0);
}

/* Decay alone can change the quadrant; the timer starts when it crossed. */
static void test_quadrant_timer_decay_crossing(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    double since;
    elpis_emotion_state_init(&s, &c, T0 - 100);
    set_state(&s, -0.5, 0.5, T0);                  /* frustrated; v reaches 0 at T0+10 */
    elpis_emotion_decay(&s, &c, T0 + 9);
    assert_int_equal(elpis_emotion_quadrant(&s, &c, T0 + 9, &since), ELPIS_QUADRANT_FRUSTRATED);
    assert_near(since, T0, 0);
    elpis_emotion_decay(&s, &c, T0 + 15);
    assert_int_equal(elpis_emotion_quadrant(&s, &c, T0 + 15, &since), ELPIS_QUADRANT_EXCITED);
    assert_near(since, T0 + 10, EPS);

    c.baseline_valence = 0.2;                      /* crossing at f* = 0.25: T0 + 7.5 */
    set_state(&s, -0.6, 0.5, T0);
    elpis_emotion_decay(&s, &c, T0 + 7.4);
    assert_int_equal(elpis_emotion_quadrant(&s, &c, T0 + 7.4, &since), ELPIS_QUADRANT_FRUSTRATED);
    elpis_emotion_decay(&s, &c, T0 + 7.6);
    assert_int_equal(elpis_emotion_quadrant(&s, &c, T0 + 7.6, &since), ELPIS_QUADRANT_EXCITED);
    assert_near(since, T0 + 7.5, 1e-6);

    /* an event that keeps the decayed quadrant keeps its entry time */
    elpis_emotion_apply_event(&s, &c, "routine", 0, T0 + 9, NULL);
    assert_int_equal(s.quadrant, ELPIS_QUADRANT_EXCITED);
    assert_near(s.quadrant_since, T0 + 7.5, 1e-6);
}

/* ==== response analysis ================================================================ */

/* original: "completed successfully" gives v > 0; "Error: unable..." gives v < 0, a > 0 */
static void test_analysis_original_cases(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    const char *ev;
    double in;
    elpis_emotion_state_init(&s, &c, T0);
    assert_int_equal(elpis_emotion_analyze_response(&c, "The task completed successfully.", &ev, &in), 0);
    elpis_emotion_apply_event(&s, &c, ev, in, T0, NULL);
    assert_true(s.valence > 0);
    assert_near(s.valence, 0.1, EPS);

    elpis_emotion_state_init(&s, &c, T0);
    assert_int_equal(elpis_emotion_analyze_response(&c, "Error: unable to open the file", &ev, &in), 1);
    assert_string_equal(ev, "error");
    assert_near(in, 0.5, 0);
    elpis_emotion_apply_event(&s, &c, ev, in, T0, NULL);
    assert_true(s.valence < 0 && s.arousal > 0);
}

static void test_analysis_order_case_and_misses(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const char *ev = NULL;
    double in = -1;
    /* rule order wins over position in the text */
    assert_int_equal(elpis_emotion_analyze_response(&c, "An exception... but now it is FIXED", &ev, &in), 0);
    assert_string_equal(ev, "success");
    assert_int_equal(elpis_emotion_analyze_response(&c, "What an INTERESTING idea", &ev, &in), 2);
    assert_string_equal(ev, "exploration");
    assert_near(in, 0.3, 0);
    assert_int_equal(elpis_emotion_analyze_response(&c, "Perhaps.", &ev, &in), 3);
    assert_near(in, 0.2, 0);
    /* substrings, as the original: "renewal" contains "new" */
    assert_int_equal(elpis_emotion_analyze_response(&c, "renewal", &ev, &in), 2);
    ev = NULL;
    assert_int_equal(elpis_emotion_analyze_response(&c, "The sky is blue.", &ev, &in), -1);
    assert_null(ev);
    assert_int_equal(elpis_emotion_analyze_response(&c, "", &ev, &in), -1);
    assert_int_equal(elpis_emotion_analyze_response(&c, NULL, &ev, &in), -1);
    c.response_analysis = false;
    assert_int_equal(elpis_emotion_analyze_response(&c, "done", &ev, &in), -1);
}

static void test_analysis_configured_words(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const char *ev;
    double in;
    assert_true(elpis_emotion_config_set(&c, "success_words", " yay , hooray", NULL, NULL) == ELPIS_OK);
    assert_true(elpis_emotion_config_set(&c, "success_intensity", "1.5", NULL, NULL) == ELPIS_OK);
    assert_true(elpis_emotion_config_set(&c, "error_words", "", NULL, NULL) == ELPIS_OK);   /* rule off */
    assert_true(elpis_emotion_config_set(&c, "novelty_event", "insight", NULL, NULL) == ELPIS_OK);
    assert_int_equal(elpis_emotion_analyze_response(&c, "HOORAY!", &ev, &in), 0);
    assert_near(in, 1.5, 0);
    assert_int_equal(elpis_emotion_analyze_response(&c, "done", &ev, &in), -1);   /* old word gone */
    assert_int_equal(elpis_emotion_analyze_response(&c, "an error", &ev, &in), -1);
    assert_int_equal(elpis_emotion_analyze_response(&c, "I might", &ev, &in), 3);
    assert_string_equal(ev, "insight");
}

/* ==== sampling modulation ================================================================ */

static elpis_emotion_sampling mod_at(double v, double a, double bt, double bp, bool ts, bool ps, bool on) {
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, v, a, T0);
    return elpis_emotion_modulate(&s, bt, bp, ts, ps, on);
}

/* original (test_mcp_server): 0.5 at arousal +1, 0.9 at arousal -1, top_p 1.0 at valence +1 */
static void test_modulation_original(void **unused) {
    (void)unused;
    elpis_emotion_sampling m = mod_at(0, 1, 0.7, 0.9, false, false, true);
    assert_near(m.temperature, 0.5, EPS);
    assert_true(m.temperature_modulated && m.top_p_modulated);
    m = mod_at(0, -1, 0.7, 0.9, false, false, true);
    assert_near(m.temperature, 0.9, EPS);
    m = mod_at(1, 0, 0.7, 0.9, false, false, true);
    assert_near(m.top_p, 1.0, EPS);
    m = mod_at(-1, 0, 0.7, 0.9, false, false, true);
    assert_near(m.top_p, 0.8, EPS);
    /* direction: more arousal, lower temperature; more valence, higher top_p */
    assert_true(mod_at(0, 0.5, 0.7, 0.9, false, false, true).temperature <
                mod_at(0, -0.5, 0.7, 0.9, false, false, true).temperature);
    assert_true(mod_at(0.5, 0, 0.7, 0.9, false, false, true).top_p >
                mod_at(-0.5, 0, 0.7, 0.9, false, false, true).top_p);
    /* an explicit temperature passes through unchanged (not even rounded) */
    m = mod_at(0, 1, 1.234, 0.9, true, false, true);
    assert_near(m.temperature, 1.234, 0);
    assert_false(m.temperature_modulated);
    assert_true(m.top_p_modulated);
}

static void test_modulation_clamps_rounding_and_switches(void **unused) {
    (void)unused;
    assert_near(mod_at(0, -1, 1.5, 0.9, false, false, true).temperature, 1.5, EPS);   /* 1.7 -> 1.5 */
    assert_near(mod_at(0, 1, 0.2, 0.9, false, false, true).temperature, 0.1, EPS);    /* 0.0 -> 0.1 */
    assert_near(mod_at(-1, 0, 0.7, 0.5, false, false, true).top_p, 0.5, EPS);         /* 0.4 -> 0.5 */
    assert_near(mod_at(1, 0, 0.7, 0.95, false, false, true).top_p, 1.0, EPS);         /* 1.05 -> 1 */
    assert_near(mod_at(0.26, 0.333, 0.7, 0.9, false, false, true).temperature, 0.63, EPS); /* 0.6334 */
    assert_near(mod_at(0.26, 0.333, 0.7, 0.9, false, false, true).top_p, 0.93, EPS);       /* 0.926 */
    elpis_emotion_sampling m = mod_at(1, 1, 0.7, 0.9, false, true, true);
    assert_near(m.top_p, 0.9, 0);
    assert_false(m.top_p_modulated);
    m = mod_at(1, 1, 0.7, 0.9, false, false, false);   /* modulation off */
    assert_near(m.temperature, 0.7, 0);
    assert_near(m.top_p, 0.9, 0);
    assert_false(m.temperature_modulated || m.top_p_modulated);
}

/* ==== steering coefficients ====================================================================== */

static double sum4(const double c[4]) { return c[0] + c[1] + c[2] + c[3]; }

/* original: sum 1; corners (+-0.9) > 0.7; neutral 0.2..0.3; strength scales */
static void test_coefficients_original(void **unused) {
    (void)unused;
    double c[ELPIS_QUADRANT_COUNT];
    const struct { double v, a; elpis_quadrant q; } corners[] = {
        { 0.9, 0.9, ELPIS_QUADRANT_EXCITED }, { -0.9, 0.9, ELPIS_QUADRANT_FRUSTRATED },
        { 0.9, -0.9, ELPIS_QUADRANT_CALM },   { -0.9, -0.9, ELPIS_QUADRANT_DEPLETED },
    };
    for (size_t i = 0; i < 4; i++) {
        elpis_emotion_coefficients(corners[i].v, corners[i].a, 1.0, c);
        assert_near(sum4(c), 1, EPS);
        assert_true(c[corners[i].q] > 0.7);
    }
    elpis_emotion_coefficients(0, 0, 1.0, c);
    for (int q = 0; q < 4; q++) assert_true(c[q] >= 0.2 && c[q] <= 0.3);
    elpis_emotion_coefficients(0.3, -0.7, 0.5, c);
    assert_near(sum4(c), 0.5, EPS);
    elpis_emotion_coefficients(0.3, -0.7, 0, c);
    assert_near(sum4(c), 0, 0);
    elpis_emotion_coefficients(0.3, -0.7, 2.0, c);
    assert_near(sum4(c), 2.0, EPS);
}

static void test_coefficients_exact(void **unused) {
    (void)unused;
    double c[ELPIS_QUADRANT_COUNT];
    const struct { double v, a; double want[4]; } cases[] = {
        { 1, 1, { 1, 0, 0, 0 } },  { -1, 1, { 0, 1, 0, 0 } },  { 1, -1, { 0, 0, 1, 0 } },
        { -1, -1, { 0, 0, 0, 1 } }, { 0, 0, { .25, .25, .25, .25 } },
        { 0.5, 0, { 0.375, 0.125, 0.375, 0.125 } },   /* v' = .75, a' = .5 */
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(cases); i++) {
        elpis_emotion_coefficients(cases[i].v, cases[i].a, 1.0, c);
        for (int q = 0; q < 4; q++) assert_near(c[q], cases[i].want[q], EPS);
        elpis_emotion_coefficients(cases[i].v, cases[i].a, 3.0, c);
        for (int q = 0; q < 4; q++) assert_near(c[q], 3 * cases[i].want[q], EPS);
    }
}

/* ==== trajectory ===================================================================================== */

/* A state whose history is the given (v, a) samples, one minute apart. */
static void history_of(elpis_emotion_state *s, const elpis_emotion_config *c, const double (*va)[2], int n) {
    elpis_emotion_state_init(s, c, T0);
    for (int i = 0; i < n; i++) s->history[i] = (elpis_emotion_sample){ T0 + 60.0 * i, va[i][0], va[i][1] };
    s->n_history = n;
    set_state(s, va[n - 1][0], va[n - 1][1], T0 + 60.0 * (n - 1));
}

static elpis_emotion_trajectory traj(const elpis_emotion_config *c, const double (*va)[2], int n) {
    elpis_emotion_state s;
    elpis_emotion_trajectory t;
    history_of(&s, c, va, n);
    elpis_emotion_trajectory_of(&s, c, T0 + 60.0 * (n - 1), &t);
    return t;
}

static void test_velocity(void **unused) {
    (void)unused;
    elpis_emotion_sample h[12];
    for (int i = 0; i < 3; i++) h[i] = (elpis_emotion_sample){ 60.0 * i, 0.1 * i, -0.05 * i };
    assert_near(elpis_emotion_velocity(h, 3, 10, false), 0.1, 1e-12);   /* per minute */
    assert_near(elpis_emotion_velocity(h, 3, 10, true), -0.05, 1e-12);
    assert_near(elpis_emotion_velocity(h, 1, 10, false), 0, 0);
    /* same timestamps: degenerate, 0 */
    for (int i = 0; i < 3; i++) h[i] = (elpis_emotion_sample){ 5, 0.3 * i, 0 };
    assert_near(elpis_emotion_velocity(h, 3, 10, false), 0, 0);
    /* 0 -> 1 in one second is 60 per minute: clamped to 1 */
    h[0] = (elpis_emotion_sample){ 0, -1, 0 };
    h[1] = (elpis_emotion_sample){ 1, 1, 0 };
    assert_near(elpis_emotion_velocity(h, 2, 10, false), 1, 0);
    h[1].valence = -1;
    h[0].valence = 1;
    assert_near(elpis_emotion_velocity(h, 2, 10, false), -1, 0);
    /* only the last `window` samples count: two wild samples first, then a steady rise */
    h[0] = (elpis_emotion_sample){ 0, 1, 0 };
    h[1] = (elpis_emotion_sample){ 60, 1, 0 };
    for (int i = 2; i < 12; i++) h[i] = (elpis_emotion_sample){ 60.0 * i, 0.01 * i, 0 };
    assert_near(elpis_emotion_velocity(h, 12, 10, false), 0.01, 1e-12);
    assert_true(elpis_emotion_velocity(h, 12, 12, false) < 0);   /* with them, it would be falling */
}

/* original: neutral with fewer than 2 entries */
static void test_trajectory_neutral(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const double one[][2] = { { 0.9, 0.9 } };
    elpis_emotion_trajectory t = traj(&c, one, 1);
    assert_near(t.valence_velocity, 0, 0);
    assert_near(t.arousal_velocity, 0, 0);
    assert_int_equal(t.trend, ELPIS_TREND_STABLE);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEUTRAL);
    assert_false(t.spiral_detected);
    assert_int_equal(t.spiral_direction, ELPIS_SPIRAL_NONE);
}

/* original: momentum and trend */
static void test_trend_and_momentum(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const double up[][2] = { { 0, 0 }, { 0.05, 0 }, { 0.1, 0 }, { 0.15, 0 } };
    elpis_emotion_trajectory t = traj(&c, up, 4);
    assert_near(t.valence_velocity, 0.05, 1e-12);
    assert_int_equal(t.trend, ELPIS_TREND_IMPROVING);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_POSITIVE);
    const double down[][2] = { { 0, 0 }, { -0.05, 0 }, { -0.1, 0 }, { -0.15, 0 } };
    t = traj(&c, down, 4);
    assert_int_equal(t.trend, ELPIS_TREND_DECLINING);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEGATIVE);
    /* 0.015/min: momentum positive but trend still stable */
    const double slow[][2] = { { 0, 0 }, { 0.015, 0 }, { 0.03, 0 } };
    t = traj(&c, slow, 3);
    assert_int_equal(t.trend, ELPIS_TREND_STABLE);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_POSITIVE);
    const double flat[][2] = { { 0.3, 0.1 }, { 0.3, 0.2 }, { 0.3, 0.3 } };
    t = traj(&c, flat, 3);
    assert_int_equal(t.trend, ELPIS_TREND_STABLE);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEUTRAL);
    assert_near(t.arousal_velocity, 0.1, 1e-12);
}

/* Thresholds are strict and configurable: 0.125/min is exact in binary. */
static void test_trend_thresholds_configurable(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const double rise[][2] = { { 0, 0 }, { 0.125, 0 } };
    c.trend_improving_threshold = 0.125;
    c.momentum_positive_threshold = 0.125;
    elpis_emotion_trajectory t = traj(&c, rise, 2);
    assert_near(t.valence_velocity, 0.125, 0);
    assert_int_equal(t.trend, ELPIS_TREND_STABLE);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEUTRAL);
    c.trend_improving_threshold = 0.124;
    c.momentum_positive_threshold = 0.124;
    t = traj(&c, rise, 2);
    assert_int_equal(t.trend, ELPIS_TREND_IMPROVING);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_POSITIVE);
    const double fall[][2] = { { 0, 0 }, { -0.125, 0 } };
    c.trend_declining_threshold = -0.125;
    c.momentum_negative_threshold = -0.125;
    t = traj(&c, fall, 2);
    assert_int_equal(t.trend, ELPIS_TREND_STABLE);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEUTRAL);
    c.trend_declining_threshold = -0.124;
    c.momentum_negative_threshold = -0.124;
    t = traj(&c, fall, 2);
    assert_int_equal(t.trend, ELPIS_TREND_DECLINING);
    assert_int_equal(t.momentum, ELPIS_MOMENTUM_NEGATIVE);
}

/* original: oscillation, which wins over a strong velocity */
static void test_oscillation(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const double osc[][2] = { { 0, 0 }, { 0.5, 0 }, { 0.2, 0 }, { 0.9, 0 } };   /* +, -, + */
    elpis_emotion_trajectory t = traj(&c, osc, 4);
    assert_true(t.valence_velocity > 0.02);
    assert_int_equal(t.trend, ELPIS_TREND_OSCILLATING);
    const double osc2[][2] = { { 0.5, 0 }, { 0.1, 0 }, { 0.3, 0 }, { 0.2, 0 } };  /* -, +, - */
    assert_int_equal(traj(&c, osc2, 4).trend, ELPIS_TREND_OSCILLATING);
    /* as the original, the flags are d > 0, so a flat step counts as a fall: +, 0, + alternates */
    const double step[][2] = { { 0, 0 }, { 0.1, 0 }, { 0.1, 0 }, { 0.2, 0 } };
    assert_int_equal(traj(&c, step, 4).trend, ELPIS_TREND_OSCILLATING);
    /* 0, +, - alternates too (flags F, T, F) */
    const double zero_first[][2] = { { 0.1, 0 }, { 0.1, 0 }, { 0.3, 0 }, { 0.2, 0 } };
    assert_int_equal(traj(&c, zero_first, 4).trend, ELPIS_TREND_OSCILLATING);
    /* +, +, - does not alternate: velocity decides (0.04/min) */
    const double turn[][2] = { { 0, 0 }, { 0.1, 0 }, { 0.2, 0 }, { 0.1, 0 } };
    elpis_emotion_trajectory tt = traj(&c, turn, 4);
    assert_near(tt.valence_velocity, 0.04, 1e-12);
    assert_int_equal(tt.trend, ELPIS_TREND_IMPROVING);
    /* three samples are too few to call it oscillating */
    const double three[][2] = { { 0, 0 }, { 0.5, 0 }, { 0.2, 0 } };
    assert_int_not_equal(traj(&c, three, 3).trend, ELPIS_TREND_OSCILLATING);
    /* only the last three differences matter */
    const double late[][2] = { { 0, 0 }, { 0.5, 0 }, { 0.1, 0 }, { 0.2, 0 }, { 0.3, 0 } };
    assert_int_not_equal(traj(&c, late, 5).trend, ELPIS_TREND_OSCILLATING);
}

/* original: all four spiral directions */
static void test_spiral_directions(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    const double pos[][2] = { { .1, 0 }, { .2, 0 }, { .3, 0 }, { .4, 0 }, { .5, 0 } };
    const double neg[][2] = { { -.1, 0 }, { -.2, 0 }, { -.3, 0 }, { -.4, 0 }, { -.5, 0 } };
    const double esc[][2] = { { 0, .1 }, { 0, .2 }, { 0, .3 }, { 0, .4 }, { 0, .5 } };
    const double wdr[][2] = { { .05, -.1 }, { .05, -.2 }, { .05, -.3 }, { .05, -.4 }, { .05, -.5 } };
    const struct { const double (*va)[2]; elpis_emotion_spiral d; const char *name; } cases[] = {
        { pos, ELPIS_SPIRAL_POSITIVE, "positive" },     { neg, ELPIS_SPIRAL_NEGATIVE, "negative" },
        { esc, ELPIS_SPIRAL_ESCALATING, "escalating" }, { wdr, ELPIS_SPIRAL_WITHDRAWING, "withdrawing" },
    };
    for (size_t i = 0; i < 4; i++) {
        elpis_emotion_trajectory t = traj(&c, cases[i].va, 5);
        assert_true(t.spiral_detected);
        assert_int_equal(t.spiral_direction, cases[i].d);
        assert_string_equal(elpis_emotion_spiral_name(t.spiral_direction), cases[i].name);
    }
    assert_null(elpis_emotion_spiral_name(ELPIS_SPIRAL_NONE));
}

static void test_spiral_rules(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    /* original: no spiral for back-and-forth moves (2 of 4 transitions increase) */
    const double zig[][2] = { { .5, 0 }, { .1, 0 }, { .5, .1 }, { .1, -.1 }, { .5, 0 } };
    assert_false(traj(&c, zig, 5).spiral_detected);
    /* exactly 3 of 4 increasing: a spiral (threshold is inclusive) */
    const double three[][2] = { { .1, 0 }, { .2, 0 }, { .15, 0 }, { .3, 0 }, { .4, 0 } };
    assert_true(traj(&c, three, 5).spiral_detected);
    c.spiral_increasing_threshold = 4;
    assert_false(traj(&c, three, 5).spiral_detected);
    c = defaults();
    /* fewer samples than spiral_history_count: none, even if all of them move out */
    const double rising[][2] = { { .1, 0 }, { .2, 0 }, { .3, 0 }, { .4, 0 }, { .5, 0 } };
    assert_true(traj(&c, rising, 5).spiral_detected);
    assert_false(traj(&c, rising, 4).spiral_detected);
    /* only the last spiral_history_count samples count */
    const double late[][2] = { { .9, .9 }, { .1, 0 }, { .2, 0 }, { .3, 0 }, { .4, 0 }, { .5, 0 } };
    assert_true(traj(&c, late, 6).spiral_detected);
    /* small moves (< 0.05 on both axes): the axis with the larger final offset */
    const double small_v[][2] = { { .30, .1 }, { .31, .1 }, { .32, .1 }, { .33, .1 }, { .34, .1 } };
    assert_int_equal(traj(&c, small_v, 5).spiral_direction, ELPIS_SPIRAL_POSITIVE);
    const double small_a[][2] = { { .30, -.6 }, { .31, -.6 }, { .32, -.6 }, { .33, -.6 }, { .34, -.6 } };
    assert_int_equal(traj(&c, small_a, 5).spiral_direction, ELPIS_SPIRAL_WITHDRAWING);
    /* equal |dv| and |da|: valence wins */
    const double tie[][2] = { { 0, 0 }, { .1, .1 }, { .2, .2 }, { .3, .3 }, { .4, .4 } };
    assert_int_equal(traj(&c, tie, 5).spiral_direction, ELPIS_SPIRAL_POSITIVE);
    /* distances are measured from the baseline */
    const double pos[][2] = { { .1, 0 }, { .2, 0 }, { .3, 0 }, { .4, 0 }, { .5, 0 } };
    assert_true(traj(&c, pos, 5).spiral_detected);
    c.baseline_valence = 0.6;
    assert_false(traj(&c, pos, 5).spiral_detected);   /* moving toward 0.6: closer each step */
    const double away[][2] = { { .4, 0 }, { .3, 0 }, { .2, 0 }, { .1, 0 }, { 0, 0 } };
    elpis_emotion_trajectory ta = traj(&c, away, 5);  /* toward 0, away from 0.6 */
    assert_true(ta.spiral_detected);
    assert_int_equal(ta.spiral_direction, ELPIS_SPIRAL_NEGATIVE);
}

/* ==== JSON =============================================================================================== */

static json_t *parse(const elpis_buf *b) {
    json_error_t je;
    json_t *j = json_loads(b->data, 0, &je);
    if (!j) fail_msg("bad JSON (%s): %s", je.text, b->data);
    return j;
}

static void test_json_full(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "insight", 1, T0, NULL);        /* .25, .2 */
    elpis_emotion_apply_event(&s, &c, "success", 1, T0 + 1, NULL);    /* .425, .28 */
    elpis_buf b = { 0 };
    assert_true(elpis_emotion_to_json(&s, &c, T0 + 3, ELPIS_EMOTION_JSON_FULL, &b, NULL) == ELPIS_OK);
    json_t *j = parse(&b);
    /* decayed to now (2 s: factor 0.8) and rounded to 3 dp */
    assert_near(json_real_value(json_object_get(j, "valence")), 0.34, 1e-12);
    assert_near(json_real_value(json_object_get(j, "arousal")), 0.224, 1e-12);
    assert_string_equal(json_string_value(json_object_get(j, "quadrant")), "excited");
    assert_near(json_number_value(json_object_get(j, "last_update")), T0 + 1, 0.01);
    assert_int_equal(json_integer_value(json_object_get(j, "update_count")), 2);
    json_t *base = json_object_get(j, "baseline");
    assert_near(json_number_value(json_object_get(base, "valence")), 0, 0);
    assert_near(json_number_value(json_object_get(base, "arousal")), 0, 0);
    json_t *co = json_object_get(j, "steering_coefficients");
    double sum = 0;
    for (int q = 0; q < 4; q++) sum += json_number_value(json_object_get(co, elpis_quadrant_name(q)));
    assert_near(sum, 1, 1e-9);
    assert_near(json_number_value(json_object_get(co, "excited")), (1.34 / 2) * (1.224 / 2), 1e-6);
    json_t *tr = json_object_get(j, "trajectory");
    assert_non_null(tr);
    /* 0.175 valence in 1 s = 10.5/min, clamped, 4 dp */
    assert_near(json_number_value(json_object_get(tr, "valence_velocity")), 1, 0);
    assert_string_equal(json_string_value(json_object_get(tr, "trend")), "improving");
    assert_string_equal(json_string_value(json_object_get(tr, "momentum")), "positive");
    assert_true(json_is_false(json_object_get(tr, "spiral_detected")));
    assert_true(json_is_null(json_object_get(tr, "spiral_direction")));
    assert_near(json_number_value(json_object_get(tr, "time_in_quadrant")), 3, 0);
    assert_near(s.valence, 0.425, EPS);   /* the state itself was not decayed */
    json_decref(j);
    elpis_buf_free(&b);
}

static void test_json_brief_and_events(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &c, T0);
    set_state(&s, -0.12345, -0.5, T0);
    elpis_buf b = { 0 };
    assert_true(elpis_emotion_to_json(&s, &c, T0, ELPIS_EMOTION_JSON_BRIEF, &b, NULL) == ELPIS_OK);
    json_t *j = parse(&b);
    assert_int_equal(json_object_size(j), 3);
    assert_near(json_real_value(json_object_get(j, "valence")), -0.123, 1e-12);
    assert_string_equal(json_string_value(json_object_get(j, "quadrant")), "depleted");
    json_decref(j);
    elpis_buf_free(&b);

    json_t *ev = elpis_emotion_events_json();
    assert_int_equal(json_object_size(ev), 15);
    json_t *blocked = json_object_get(ev, "blocked");
    assert_near(json_real_value(json_array_get(blocked, 0)), -0.2, EPS);
    assert_near(json_real_value(json_array_get(blocked, 1)), 0.3, EPS);
    json_decref(ev);
}

/* ==== the shared object (memory only) ======================================================================= */

static void test_object_memory(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion *e = NULL;
    elpis_emotion_state s;
    elpis_emotion_result r;
    elpis_error err = { 0 };
    assert_true(elpis_emotion_new(&e, &c, NULL, T0, &err) == ELPIS_OK);
    assert_true(elpis_emotion_event(e, "blocked", 1, T0, &s, &r, &err) == ELPIS_OK);
    assert_near(s.arousal, 0.3, EPS);
    assert_near(r.da, 0.3, EPS);
    elpis_emotion_snapshot(e, T0 + 5, &s);
    assert_near(s.arousal, 0.15, EPS);            /* decayed on read */
    assert_int_equal(elpis_emotion_event(e, "", 1, T0, &s, NULL, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "event_type");

    const char *fired = "x";
    assert_true(elpis_emotion_process_response(e, "Nothing here.", T0 + 5, &fired, &s, &err) == ELPIS_OK);
    assert_null(fired);
    assert_int_equal(s.update_count, 1);
    assert_true(elpis_emotion_process_response(e, "Done!", T0 + 5, &fired, &s, &err) == ELPIS_OK);
    assert_string_equal(fired, "success");
    assert_int_equal(s.update_count, 2);
    assert_near(s.valence, -0.1 + 0.1, EPS);      /* -0.2 decayed by half, then +0.1 */

    assert_true(elpis_emotion_reset(e, T0 + 6, &s, &err) == ELPIS_OK);
    assert_int_equal(s.update_count, 0);
    assert_near(s.valence, 0, 0);
    elpis_emotion_free(e);

    c.max_delta = 7;   /* invalid configuration is refused */
    assert_int_equal(elpis_emotion_new(&e, &c, NULL, T0, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "max_delta");
}

typedef struct { elpis_emotion *e; int n; } worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int i = 0; i < a->n; i++) elpis_emotion_event(a->e, "routine", 0, T0, NULL, NULL, NULL);
    return NULL;
}

/* Concurrent events never lose an update. */
static void test_object_concurrent(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_emotion *e = NULL;
    assert_true(elpis_emotion_new(&e, &c, NULL, T0, NULL) == ELPIS_OK);
    pthread_t th[8];
    worker_arg a = { e, 20000 };
    for (int i = 0; i < 8; i++) assert_int_equal(pthread_create(&th[i], NULL, worker, &a), 0);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    elpis_emotion_state s;
    elpis_emotion_snapshot(e, T0, &s);
    assert_int_equal(s.update_count, 8 * 20000);
    assert_int_equal(s.n_history, 20);
    elpis_emotion_free(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_set_good),
        cmocka_unit_test(test_config_set_errors),
        cmocka_unit_test(test_config_validate_relations),
        cmocka_unit_test(test_quadrants),
        cmocka_unit_test(test_event_table),
        cmocka_unit_test(test_every_event_applies_its_deltas),
        cmocka_unit_test(test_unknown_event),
        cmocka_unit_test(test_intensity_clamp),
        cmocka_unit_test(test_max_delta),
        cmocka_unit_test(test_clamping),
        cmocka_unit_test(test_update_count_history_and_reset),
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_decay_linear),
        cmocka_unit_test(test_decay_independent_of_reads),
        cmocka_unit_test(test_decay_rate_and_baseline),
        cmocka_unit_test(test_decay_clock_backwards),
        cmocka_unit_test(test_event_after_decay),
        cmocka_unit_test(test_quadrant_timer_events),
        cmocka_unit_test(test_quadrant_timer_decay_crossing),
        cmocka_unit_test(test_analysis_original_cases),
        cmocka_unit_test(test_analysis_order_case_and_misses),
        cmocka_unit_test(test_analysis_configured_words),
        cmocka_unit_test(test_modulation_original),
        cmocka_unit_test(test_modulation_clamps_rounding_and_switches),
        cmocka_unit_test(test_coefficients_original),
        cmocka_unit_test(test_coefficients_exact),
        cmocka_unit_test(test_velocity),
        cmocka_unit_test(test_trajectory_neutral),
        cmocka_unit_test(test_trend_and_momentum),
        cmocka_unit_test(test_trend_thresholds_configurable),
        cmocka_unit_test(test_oscillation),
        cmocka_unit_test(test_spiral_directions),
        cmocka_unit_test(test_spiral_rules),
        cmocka_unit_test(test_json_full),
        cmocka_unit_test(test_json_brief_and_events),
        cmocka_unit_test(test_object_memory),
        cmocka_unit_test(test_object_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
