/* emotion.c -- elpis_emotion: the one emotion state a server shares between
 * its front ends (HTTP routes, MCP tools, generation hooks).
 *
 * A mutex serialises every read and write, so concurrent events never lose
 * an update. Each change is applied to the in-memory state, committed to the
 * store, and only then reported: if the commit fails, the state is restored
 * from a copy taken before the change and the caller gets the error, so the
 * state a client was told about is always the one on disk (the kill -9 test).
 * The database handle is used only under the mutex.
 */
#include "elpis/emotion.h"

#include <pthread.h>
#include <stdlib.h>

struct elpis_emotion {
    pthread_mutex_t mu;
    elpis_emotion_config cfg;
    elpis_emotion_state state;
    elpis_emotion_store *store;   /* NULL: memory only */
};

elpis_status elpis_emotion_new(elpis_emotion **out, const elpis_emotion_config *cfg, elpis_db *db, double now,
                               elpis_error *err) {
    elpis_status st = elpis_emotion_config_validate(cfg, err);
    if (st != ELPIS_OK) return st;
    elpis_emotion *e = calloc(1, sizeof *e);
    if (!e) return elpis_fail(err, ELPIS_ENOMEM, "emotion state");
    pthread_mutex_init(&e->mu, NULL);
    e->cfg = *cfg;
    elpis_emotion_state_init(&e->state, cfg, now);
    if (db) {
        bool found;
        if ((st = elpis_emotion_store_open(&e->store, db, err)) != ELPIS_OK ||
            (st = elpis_emotion_store_load(e->store, cfg, now, &e->state, &found, err)) != ELPIS_OK) {
            elpis_emotion_free(e);
            return st;
        }
    }
    *out = e;
    return ELPIS_OK;
}

void elpis_emotion_free(elpis_emotion *e) {
    if (!e) return;
    elpis_emotion_store_close(e->store);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const elpis_emotion_config *elpis_emotion_config_of(const elpis_emotion *e) { return &e->cfg; }

/* Commit the state changed under the lock, or put `before` back. */
static elpis_status commit_or_undo(elpis_emotion *e, const elpis_emotion_state *before, elpis_error *err) {
    if (!e->store) return ELPIS_OK;
    elpis_status st = elpis_emotion_store_save(e->store, &e->state, err);
    if (st != ELPIS_OK) e->state = *before;
    return st;
}

/* The snapshot handed out: decayed to `now` (the stored anchors are unchanged). */
static void copy_out(elpis_emotion *e, double now, elpis_emotion_state *out) {
    if (!out) return;
    *out = e->state;
    elpis_emotion_decay(out, &e->cfg, now);
}

elpis_status elpis_emotion_event(elpis_emotion *e, const char *event_type, double intensity, double now,
                                 elpis_emotion_state *out, elpis_emotion_result *res, elpis_error *err) {
    if (!event_type || !*event_type) return elpis_fail(err, ELPIS_EINVAL, "emotion event: event_type is required");
    elpis_emotion_state *before = malloc(sizeof *before);   /* 2.4 KB: keep it off small thread stacks */
    if (!before) return elpis_fail(err, ELPIS_ENOMEM, "emotion event");
    pthread_mutex_lock(&e->mu);
    *before = e->state;
    elpis_emotion_result r;
    elpis_emotion_apply_event(&e->state, &e->cfg, event_type, intensity, now, &r);
    elpis_status st = commit_or_undo(e, before, err);
    if (st == ELPIS_OK) {
        copy_out(e, now, out);
        if (res) *res = r;
    }
    pthread_mutex_unlock(&e->mu);
    free(before);
    return st;
}

elpis_status elpis_emotion_process_response(elpis_emotion *e, const char *text, double now, const char **fired,
                                            elpis_emotion_state *out, elpis_error *err) {
    const char *event = NULL;
    double intensity = 0;
    if (fired) *fired = NULL;
    /* cfg is immutable after new, so it is read without the lock */
    if (elpis_emotion_analyze_response(&e->cfg, text, &event, &intensity) < 0) {
        if (out) elpis_emotion_snapshot(e, now, out);
        return ELPIS_OK;
    }
    elpis_status st = elpis_emotion_event(e, event, intensity, now, out, NULL, err);
    if (st == ELPIS_OK && fired) *fired = event;
    return st;
}

elpis_status elpis_emotion_reset(elpis_emotion *e, double now, elpis_emotion_state *out, elpis_error *err) {
    elpis_emotion_state *before = malloc(sizeof *before);
    if (!before) return elpis_fail(err, ELPIS_ENOMEM, "emotion reset");
    pthread_mutex_lock(&e->mu);
    *before = e->state;
    elpis_emotion_state_reset(&e->state, &e->cfg, now);
    elpis_status st = commit_or_undo(e, before, err);
    if (st == ELPIS_OK) copy_out(e, now, out);
    pthread_mutex_unlock(&e->mu);
    free(before);
    return st;
}

void elpis_emotion_snapshot(elpis_emotion *e, double now, elpis_emotion_state *out) {
    pthread_mutex_lock(&e->mu);
    copy_out(e, now, out);
    pthread_mutex_unlock(&e->mu);
}
