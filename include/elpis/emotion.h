/* emotion.h -- the valence/arousal emotion model: state, events, decay,
 * response analysis, sampling modulation, steering, trajectory, persistence.
 *
 * DESIGN
 * ------
 * The state is two numbers in [-1, 1] (valence: bad..good, arousal:
 * calm..excited) plus bookkeeping. Events ("success", "blocked", ...) shift it
 * by a table of deltas scaled by an intensity; between events it decays
 * linearly toward a baseline. The original (elpis-spec.md §3) is followed
 * where it is sound; two of its marked bugs are fixed here:
 *   - decay_rate and max_delta are honoured (the original hard-wired 0.1/0.5);
 *   - decay is applied on read too, so a reported state is always current.
 *
 * Decay is anchored, so reading never changes the outcome: the state keeps
 * the values it had right after its last event (anchor_valence/arousal at
 * last_update) and the current values are always recomputed from them,
 *     factor = max(0, 1 - decay_rate * (now - last_update))
 *     v = baseline_v + (anchor_v - baseline_v) * factor       (same for a)
 * elpis_emotion_decay() writes that into valence/arousal. Reading every
 * millisecond or never gives the same state at the same time, and an event
 * starts from exactly what a read just before it reported (as the original,
 * which decays first inside process_event). Decay writes no history.
 *
 * Everything up to the store is pure: functions take the state, the config
 * and an injected `now` (seconds since the epoch, wall clock, because the
 * state outlives the process). elpis_emotion (the object at the end) is the
 * thread-safe owner the front ends share: it serialises events, commits each
 * one to SQLite before returning it, and hands out snapshots.
 *
 * Steering follows llama.cpp's control vectors (engine-facts §8): a file
 * holds direction.N (N >= 1) tensors, F32 [n_embd]; direction.N is added to
 * the residual stream after block N. A blend is laid out as the engine wants
 * it (elpis_ctx_set_steering / elpis_req_params.steering): n_layer rows of
 * n_embd floats, row il added after block il, row 0 always zero.
 *
 * Invariants: valence, arousal and the anchors are always in [-1, 1];
 * history holds at most cfg->trajectory_history_size entries, oldest first, in
 * nondecreasing time as recorded; update_count counts applied events since
 * creation or the last reset.
 */
#ifndef ELPIS_EMOTION_H
#define ELPIS_EMOTION_H

#include "elpis/base.h"
#include "elpis/db.h"
#include "elpis/model.h"

struct json_t;   /* jansson's; include <jansson.h> to use the json_t results */

/* ---- quadrants ------------------------------------------------------------------ */

typedef enum elpis_quadrant {
    ELPIS_QUADRANT_EXCITED,      /* v >= 0, a >= 0  (so (0,0) is "excited", as the original) */
    ELPIS_QUADRANT_FRUSTRATED,   /* v <  0, a >= 0 */
    ELPIS_QUADRANT_CALM,         /* v >= 0, a <  0 */
    ELPIS_QUADRANT_DEPLETED,     /* v <  0, a <  0 */
    ELPIS_QUADRANT_COUNT
} elpis_quadrant;

elpis_quadrant elpis_quadrant_of(double valence, double arousal);
const char *elpis_quadrant_name(elpis_quadrant q);          /* "excited", ... */
bool elpis_quadrant_parse(const char *name, elpis_quadrant *out);

/* ---- events ------------------------------------------------------------------------ */

typedef struct elpis_emotion_event_def {
    const char *name;
    double dv, da;               /* deltas at intensity 1 */
} elpis_emotion_event_def;

/* The 15 named events of the original's EVENT_MAPPINGS, in table order. */
const elpis_emotion_event_def *elpis_emotion_events(size_t *n);
/* Deltas of `name`; false (and the unknown-event deltas 0, +0.05) when the
 * name is not in the table. */
bool elpis_emotion_event_lookup(const char *name, double *dv, double *da);
#define ELPIS_EMOTION_UNKNOWN_DV 0.0
#define ELPIS_EMOTION_UNKNOWN_DA 0.05

/* ---- configuration ([emotion] section) -------------------------------------------------- */

#define ELPIS_EMOTION_HISTORY_MAX 100      /* upper bound of history_size */
#define ELPIS_EMOTION_RULES 4              /* response-analysis rules, tested in order */
#define ELPIS_EMOTION_WORDS_MAX 1024       /* bytes of one comma-separated word list */
#define ELPIS_EMOTION_PATH_MAX 1024

typedef struct elpis_emotion_rule {
    char   event[32];                      /* event fired on a hit */
    double intensity;                      /* 0..2 */
    char   words[ELPIS_EMOTION_WORDS_MAX]; /* comma-separated substrings; "" disables the rule */
} elpis_emotion_rule;

typedef struct elpis_emotion_config {
    double baseline_valence, baseline_arousal;     /* 0, 0      range -1..1 */
    double decay_rate;                             /* 0.1 /s    range 0..10 (0: no decay) */
    double max_delta;                              /* 0.5       range 0..2, per event and axis */
    double steering_strength;                      /* 1.0       range 0..3 */
    bool   modulation;                             /* true: modulate temperature/top_p */
    bool   response_analysis;                      /* true: analyse generated text */
    /* trajectory */
    int32_t trajectory_history_size;               /* 20        range 5..100 */
    int32_t velocity_window;                       /* 10        range 2..100, <= trajectory_history_size */
    double momentum_positive_threshold;            /* 0.01      range 0..1 */
    double momentum_negative_threshold;            /* -0.01     range -1..0 */
    double trend_improving_threshold;              /* 0.02      range 0..1 */
    double trend_declining_threshold;              /* -0.02     range -1..0 */
    int32_t spiral_history_count;                  /* 5         range 3..20, <= trajectory_history_size */
    int32_t spiral_increasing_threshold;           /* 3         range 2..10, < spiral_history_count */
    /* response analysis: success / error / exploration / novelty by default */
    elpis_emotion_rule rules[ELPIS_EMOTION_RULES];
    /* steering: one control-vector file per quadrant ("" = none) and the
     * blocks after which the blend is added (direction indices, inclusive;
     * 0 = from 1 / to n_layer-1, as llama.cpp's layer range) */
    char    vectors[ELPIS_QUADRANT_COUNT][ELPIS_EMOTION_PATH_MAX];
    int32_t steering_layer_start, steering_layer_end;
} elpis_emotion_config;

/* The original's defaults (elpis-spec §3, §9). */
void elpis_emotion_config_default(elpis_emotion_config *cfg);

/* Set one key from its text form (INI value, environment variable, flag).
 * Keys are the field names above, plus per rule `<slot>_words`,
 * `<slot>_intensity` and `<slot>_event` where slot is success, error,
 * exploration or novelty, and `vectors_<quadrant>` for the files. Booleans
 * take true/false/1/0/yes/no/on/off. The value is checked against its range
 * at once; ELPIS_EINVAL names the key, the value, the allowed range and
 * `source` (e.g. "elpis.ini:12", may be NULL). Unknown keys are errors. */
elpis_status elpis_emotion_config_set(elpis_emotion_config *cfg, const char *key, const char *value,
                                      const char *source, elpis_error *err);
/* Check every field and the relations between them (velocity_window and
 * spiral_history_count <= trajectory_history_size, threshold < spiral_history_count,
 * word lists well formed). ELPIS_EINVAL naming the first bad key. */
elpis_status elpis_emotion_config_validate(const elpis_emotion_config *cfg, elpis_error *err);
/* True when some vector file is configured and steering_strength > 0. */
bool elpis_emotion_config_steering(const elpis_emotion_config *cfg);

/* ---- state ------------------------------------------------------------------------ */

typedef struct elpis_emotion_sample {
    double t, valence, arousal;            /* epoch seconds; state right after an event */
} elpis_emotion_sample;

typedef struct elpis_emotion_state {
    double valence, arousal;               /* current, as of the last elpis_emotion_decay() */
    double anchor_valence, anchor_arousal; /* right after the last event (decay starts here) */
    double last_update;                    /* epoch seconds of the last event, reset or creation */
    int64_t update_count;                  /* events applied */
    elpis_quadrant quadrant;               /* quadrant right after the last event */
    double quadrant_since;                 /* when the state entered `quadrant` */
    int32_t n_history;                     /* entries in history[], oldest first */
    elpis_emotion_sample history[ELPIS_EMOTION_HISTORY_MAX];
} elpis_emotion_state;

/* A fresh state at the baseline, no history, update_count 0. */
void elpis_emotion_state_init(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now);
/* Reset: the same as init (the original's reset_emotion), quadrant timer included. */
void elpis_emotion_state_reset(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now);

/* Bring valence/arousal up to `now` (see DESIGN). Idempotent; a `now` before
 * last_update counts as no time elapsed. */
void elpis_emotion_decay(elpis_emotion_state *s, const elpis_emotion_config *cfg, double now);

/* The quadrant of the current values and the time the state entered it,
 * including a crossing caused by decay alone (computed exactly: each axis
 * moves monotonically toward the baseline). Call after elpis_emotion_decay. */
elpis_quadrant elpis_emotion_quadrant(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                      double *since);

typedef struct elpis_emotion_result {
    const char *event;            /* the table's name, or "unknown" */
    bool   known;
    double intensity;             /* after clamping to [0, 2] */
    double dv, da;                /* deltas applied, after scaling and clamping */
} elpis_emotion_result;

/* process_event: decay to `now`, look up the deltas (unknown: 0, +0.05),
 * scale by intensity clamped to [0, 2] (NaN counts as 0), clamp each to
 * +-max_delta, shift and clamp to [-1, 1], set last_update, increment
 * update_count, append (now, v, a) to the history (dropping the oldest
 * beyond history_size) and track the quadrant timer. `out` may be NULL. */
void elpis_emotion_apply_event(elpis_emotion_state *s, const elpis_emotion_config *cfg, const char *event_type,
                               double intensity, double now, elpis_emotion_result *out);

/* Euclidean distance of the current values from the baseline. */
double elpis_emotion_distance(const elpis_emotion_state *s, const elpis_emotion_config *cfg);

/* Response analysis: ASCII-case-insensitive substring tests, rule by rule and
 * word by word in order; the first hit wins. Returns the rule index and sets
 * *event and *intensity, or -1 when nothing matched (or analysis is off). */
int elpis_emotion_analyze_response(const elpis_emotion_config *cfg, const char *text, const char **event,
                                   double *intensity);

/* ---- sampling modulation -------------------------------------------------------------- */

typedef struct elpis_emotion_sampling {
    double temperature, top_p;
    bool   temperature_modulated, top_p_modulated;
} elpis_emotion_sampling;

/* temperature = clamp(base_t - 0.2*arousal, 0.1, 1.5) and
 * top_p = clamp(base_p + 0.1*valence, 0.5, 1.0), both rounded to 2 dp, each
 * only when modulation is enabled and the request did not set that value
 * (then base_* passes through unchanged). Uses the state's current values:
 * decay it first. */
elpis_emotion_sampling elpis_emotion_modulate(const elpis_emotion_state *s, double base_t, double base_p, bool t_set,
                                              bool p_set, bool enabled);

/* ---- steering --------------------------------------------------------------------------- */

/* Bilinear quadrant weights: with v = (valence+1)/2 and a = (arousal+1)/2,
 * excited = v*a, frustrated = (1-v)*a, calm = v*(1-a), depleted = (1-v)*(1-a)
 * (they sum to 1), each times `strength`. Indexed by elpis_quadrant. */
void elpis_emotion_coefficients(double valence, double arousal, double strength, double out[ELPIS_QUADRANT_COUNT]);

typedef struct elpis_emotion_vectors {
    int32_t n_layer, n_embd;
    float  *dir[ELPIS_QUADRANT_COUNT];     /* [n_layer][n_embd], row 0 zero; NULL: no file for it */
    char   *path[ELPIS_QUADRANT_COUNT];
} elpis_emotion_vectors;

/* Read one control-vector file and ADD scale * direction.N into
 * out[N * n_embd ...] (out holds hp->n_layer * n_embd floats), llama.cpp's
 * loader rules made strict: general.architecture must be "controlvector";
 * controlvector.model_hint, when present, must be the model's architecture;
 * controlvector.layer_count, when present, must equal the number of
 * direction tensors; every tensor must be named direction.<N> with N a
 * decimal in 1..n_layer-1 (the engine has no vector for layer 0 and none
 * after the last block), be F32, 1-D, of the model's n_embd. Errors name the
 * file and the tensor; on error `out` may hold a partial sum. */
elpis_status elpis_cvec_load(const char *path, const elpis_hparams *hp, float scale, float *out, elpis_error *err);

/* Load the quadrant files named in cfg->vectors for a model. A configured
 * file that is missing or does not fit the model is an error (startup must
 * fail loudly); unconfigured quadrants stay NULL. */
elpis_status elpis_emotion_vectors_load(elpis_emotion_vectors **out, const elpis_emotion_config *cfg,
                                        const elpis_hparams *hp, elpis_error *err);
void elpis_emotion_vectors_free(elpis_emotion_vectors *v);   /* NULL is fine */

/* out[n_layer*n_embd] = the sum of coeff[q] * dir[q] over the quadrants
 * that have a vector and a coefficient >= 0.01 (the original's blend skips
 * smaller ones; no renormalisation), in rows layer_start..layer_end
 * (inclusive; <= 0 means 1 / n_layer-1); other rows, and row 0 always, are
 * zero. Returns false when nothing was added (then pass no steering at all). */
bool elpis_emotion_blend(const elpis_emotion_vectors *v, const double coeffs[ELPIS_QUADRANT_COUNT],
                         int32_t layer_start, int32_t layer_end, float *out);
/* The steering vector for a request starting in state `s` (decayed): the
 * blend of the bilinear coefficients times cfg->steering_strength over
 * cfg's layer range. Returns false (out zeroed) when there is nothing to
 * add: give the request steering = NULL then. */
bool elpis_emotion_steering(const elpis_emotion_vectors *v, const elpis_emotion_state *s,
                            const elpis_emotion_config *cfg, float *out);

/* Write a control-vector GGUF as llama.cpp's cvector-generator does:
 * general.architecture "controlvector", controlvector.model_hint (arch),
 * controlvector.layer_count (i32, number of tensors), and direction.N for
 * N in layer_start..layer_end (inclusive, clamped to 1..n_layer-1) from rows
 * dirs[N * n_embd ...]. */
elpis_status elpis_cvec_write(const char *path, const char *model_hint, int32_t n_layer, int32_t n_embd,
                              const float *dirs, int32_t layer_start, int32_t layer_end, elpis_error *err);

/* Mean-difference directions (llama.cpp cvector-generator's mean method):
 * for each block il, d = pos_mean[il] - neg_mean[il], normalised to unit L2
 * (left zero when its norm is 0), stored as row il+1 of `out` (the vector
 * made from block il's output is direction.(il+1)). Row 0 is zero; the last
 * block's output gives no row (there is no block after it). */
void elpis_cvec_mean_diff(const float *pos_mean, const float *neg_mean, int32_t n_layer, int32_t n_embd, float *out);

typedef struct elpis_cvec_build_params {
    const char *const *positive; size_t n_positive;   /* one prompt each */
    const char *const *negative; size_t n_negative;
    int32_t n_threads;                                /* 0: all CPUs */
} elpis_cvec_build_params;

/* Run every prompt (BOS added as the model wants) through the model, average
 * the residual stream after each block over its tokens, average those over
 * each set, and fill out[n_layer*n_embd] with elpis_cvec_mean_diff. Needs the
 * engine's layer capture (ELPIS_EUNSUPPORTED without it). */
elpis_status elpis_cvec_build(const elpis_model *m, const elpis_cvec_build_params *p, float *out, elpis_error *err);

/* ---- trajectory ------------------------------------------------------------------------- */

typedef enum {
    ELPIS_TREND_STABLE, ELPIS_TREND_IMPROVING, ELPIS_TREND_DECLINING, ELPIS_TREND_OSCILLATING
} elpis_emotion_trend;
typedef enum { ELPIS_MOMENTUM_NEUTRAL, ELPIS_MOMENTUM_POSITIVE, ELPIS_MOMENTUM_NEGATIVE } elpis_emotion_momentum;
typedef enum {
    ELPIS_SPIRAL_NONE, ELPIS_SPIRAL_POSITIVE, ELPIS_SPIRAL_NEGATIVE, ELPIS_SPIRAL_ESCALATING, ELPIS_SPIRAL_WITHDRAWING
} elpis_emotion_spiral;

const char *elpis_emotion_trend_name(elpis_emotion_trend t);         /* "stable", ... */
const char *elpis_emotion_momentum_name(elpis_emotion_momentum m);   /* "neutral", ... */
const char *elpis_emotion_spiral_name(elpis_emotion_spiral d);       /* NULL for NONE */

typedef struct elpis_emotion_trajectory {
    double valence_velocity, arousal_velocity;   /* per minute, clamped to [-1, 1] */
    elpis_emotion_trend trend;
    elpis_emotion_momentum momentum;
    bool spiral_detected;
    elpis_emotion_spiral spiral_direction;
    double time_in_quadrant;                     /* seconds */
} elpis_emotion_trajectory;

/* Least-squares slope per minute of valence (or arousal) over the last
 * min(n, window) samples; 0 below two samples or when the times coincide. */
double elpis_emotion_velocity(const elpis_emotion_sample *h, int32_t n, int32_t window, bool arousal);

/* The trajectory of the state's history (§3): velocity, trend (oscillation
 * first), momentum, spiral and its direction, time in the current quadrant.
 * Fewer than 2 samples give the neutral trajectory (time_in_quadrant is
 * still reported). */
void elpis_emotion_trajectory_of(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                 elpis_emotion_trajectory *out);

/* ---- JSON -------------------------------------------------------------------------------- */

typedef enum elpis_emotion_json_kind {
    ELPIS_EMOTION_JSON_BRIEF,   /* Psyche's GET/POST /v1/psyche/emotion: {valence, arousal, quadrant} */
    ELPIS_EMOTION_JSON_FULL,    /* the MCP state dict (§2.1) */
} elpis_emotion_json_kind;

/* The state at `now` (decayed on a copy; `s` is not changed). FULL:
 * {valence, arousal (3 dp), quadrant, last_update, update_count,
 *  baseline{valence, arousal}, steering_coefficients{excited, frustrated,
 *  calm, depleted}, trajectory{valence_velocity, arousal_velocity (4 dp),
 *  trend, spiral_detected, spiral_direction (null when none),
 *  time_in_quadrant (1 dp), momentum}}. NULL on OOM. */
struct json_t *elpis_emotion_json(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                  elpis_emotion_json_kind kind);
/* The same, appended to `out` as compact JSON text. */
elpis_status elpis_emotion_to_json(const elpis_emotion_state *s, const elpis_emotion_config *cfg, double now,
                                   elpis_emotion_json_kind kind, elpis_buf *out, elpis_error *err);
/* emotion://events: {name: [dv, da], ...}. NULL on OOM. */
struct json_t *elpis_emotion_events_json(void);

/* ---- persistence ---------------------------------------------------------------------------- */

typedef struct elpis_emotion_store elpis_emotion_store;

/* Apply the "emotion" migrations to db. The store uses the connection only
 * inside its own calls; the caller must not use the same elpis_db from
 * another thread at the same time (open a second connection if needed). */
elpis_status elpis_emotion_store_open(elpis_emotion_store **out, elpis_db *db, elpis_error *err);
void elpis_emotion_store_close(elpis_emotion_store *st);   /* does not close db */
/* Replace the stored state by `s` in one transaction (synchronous=FULL:
 * durable when this returns OK). */
elpis_status elpis_emotion_store_save(elpis_emotion_store *st, const elpis_emotion_state *s, elpis_error *err);
/* Load the stored state into *s (*found false and *s untouched when nothing
 * was saved yet). History beyond cfg->trajectory_history_size keeps the newest. Values
 * are clamped to [-1, 1]; current values are recomputed with decay at `now`. */
elpis_status elpis_emotion_store_load(elpis_emotion_store *st, const elpis_emotion_config *cfg, double now,
                                      elpis_emotion_state *s, bool *found, elpis_error *err);

/* ---- the shared, thread-safe emotion object -------------------------------------------------- */

typedef struct elpis_emotion elpis_emotion;

/* Validate cfg (copied), load the stored state from db (NULL: memory only)
 * or start at the baseline. */
elpis_status elpis_emotion_new(elpis_emotion **out, const elpis_emotion_config *cfg, elpis_db *db, double now,
                               elpis_error *err);
void elpis_emotion_free(elpis_emotion *e);   /* NULL is fine; does not close db */
const elpis_emotion_config *elpis_emotion_config_of(const elpis_emotion *e);

/* Apply an event and commit it; only then copy the new state into *out (may
 * be NULL). If the commit fails the event is undone and the error returned:
 * an event is acknowledged only once it is durable. */
elpis_status elpis_emotion_event(elpis_emotion *e, const char *event_type, double intensity, double now,
                                 elpis_emotion_state *out, elpis_emotion_result *res, elpis_error *err);
/* Analyse generated text; on a hit apply and commit that event. *fired is
 * the event name or NULL when nothing matched. */
elpis_status elpis_emotion_process_response(elpis_emotion *e, const char *text, double now, const char **fired,
                                            elpis_emotion_state *out, elpis_error *err);
elpis_status elpis_emotion_reset(elpis_emotion *e, double now, elpis_emotion_state *out, elpis_error *err);
/* The state decayed to `now` (no write). */
void elpis_emotion_snapshot(elpis_emotion *e, double now, elpis_emotion_state *out);

/* Wall-clock seconds since the epoch (what `now` means above). */
double elpis_emotion_now(void);

#endif
