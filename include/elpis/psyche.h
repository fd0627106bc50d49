/* psyche.h -- the emotional state and the memory store a front end owns.
 *
 * `elpis serve` and `elpis mcp` keep the same "psyche" next to the model: one
 * elpis_emotion (persisted), the steering vectors loaded for the model, and
 * one elpis_memory_store with an embedder of its own. This module configures
 * and opens that set the same way for both, so they cannot drift apart.
 *
 * CONNECTIONS AND CONTEXTS
 * ------------------------
 * DIR/elpis.db is opened twice: one connection for the emotion object, one
 * for the memory store. Each module serialises its own calls with its own
 * mutex, so two connections are what lets them run on different threads at
 * once (WAL: one writer at a time, readers never block). The embedder has an
 * inference context of its own over the model (or over a separate
 * --embedding-model); it never touches the scheduler's context.
 *
 * CONFIGURATION
 * -------------
 * Sections [emotion] and [memory] of an INI file (keys of
 * elpis_emotion_config_set and elpis_memory_config_set), then the environment
 * ELPIS_EMOTION__KEY / ELPIS_MEMORY__KEY (KEY in any case), then the front
 * end's flags. Each value is checked when it is set, with an error naming the
 * key, the value, the allowed range and where it came from; the relations
 * between keys are checked by elpis_psyche_config_validate.
 *
 * Steering files: a configured vector file that is missing or does not fit
 * the model fails elpis_psyche_open (a silent fallback to "no steering" would
 * hide a typo for ever).
 */
#ifndef ELPIS_PSYCHE_H
#define ELPIS_PSYCHE_H

#include "elpis/base.h"
#include "elpis/db.h"
#include "elpis/emotion.h"
#include "elpis/memory.h"
#include "elpis/model.h"

#define ELPIS_PSYCHE_IN_MEMORY ":memory:"   /* data_dir value: nothing is written to disk */

typedef struct elpis_psyche_config {
    char *data_dir;               /* NULL: elpis_default_data_dir(); ELPIS_PSYCHE_IN_MEMORY: no files */
    char *embedding_model;        /* NULL: embed with the front end's model */
    elpis_emotion_config emotion; /* [emotion] */
    elpis_memory_config memory;   /* [memory] */
} elpis_psyche_config;

void elpis_psyche_config_init(elpis_psyche_config *c);   /* the modules' defaults */
void elpis_psyche_config_free(elpis_psyche_config *c);

/* True for the sections this module owns ("emotion", "memory"). */
bool elpis_psyche_section(const char *section);
/* Set section.key = value; `source` ("elpis.ini:12", "ELPIS_EMOTION__DECAY_RATE") is named in errors. */
elpis_status elpis_psyche_config_set(elpis_psyche_config *c, const char *section, const char *key, const char *value,
                                     const char *source, elpis_error *err);
/* Apply every ELPIS_EMOTION__KEY and ELPIS_MEMORY__KEY of the environment. */
elpis_status elpis_psyche_config_env(elpis_psyche_config *c, elpis_error *err);
/* Read the [emotion] and [memory] sections of an INI file (others are skipped). */
elpis_status elpis_psyche_config_file(elpis_psyche_config *c, const char *path, elpis_error *err);
elpis_status elpis_psyche_config_validate(const elpis_psyche_config *c, elpis_error *err);

typedef struct elpis_psyche {
    char *data_dir;                  /* resolved; ELPIS_PSYCHE_IN_MEMORY when nothing persists */
    elpis_db *emotion_db, *memory_db;
    elpis_emotion *emotion;
    elpis_emotion_vectors *vectors;  /* NULL: steering off (no files, or strength 0) */
    elpis_model *embed_model;        /* owned; only with config embedding_model */
    elpis_embedder *embedder;
    elpis_memory_store *memory;
} elpis_psyche;

/* Validate c, open the two connections, the emotion state (loading what was
 * saved), the steering vectors for `m`, the embedder and the memory store.
 * `m` must outlive the psyche. n_threads: the embedder's (0: all CPUs). */
elpis_status elpis_psyche_open(elpis_psyche **out, const elpis_psyche_config *c, const elpis_model *m,
                               int32_t n_threads, elpis_error *err);
void elpis_psyche_close(elpis_psyche *p);   /* NULL is fine */

/* The steering blend for a generation that starts in state `s` (decayed to
 * now), malloc'd (n_layer * n_embd floats, the layout of
 * elpis_req_params.steering), or NULL when there is nothing to add (steering
 * off, or every coefficient too small). *oom is set when allocation failed. */
float *elpis_psyche_steering(const elpis_psyche *p, const elpis_emotion_state *s, bool *oom);

#endif
