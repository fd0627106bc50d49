/* store.c -- the emotion state in the shared SQLite database (db.h).
 *
 * Tables (component "emotion", migration 1):
 *   emotion_state    one row (id = 1): the anchor values, last_update,
 *                    update_count and the quadrant timer;
 *   emotion_history  the trajectory samples, seq 0 = oldest.
 * A save rewrites both in one BEGIN IMMEDIATE transaction (at most 100
 * history rows, so rewriting is simpler than diffing and just as cheap); the
 * database runs synchronous=FULL, so when save returns OK the state survives
 * kill -9. The anchors are stored, not the decayed values: decay is a pure
 * function of them and the clock, so a restart loses nothing.
 */
#include "elpis/emotion.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

static const char *const g_migrations[] = {
    ("CREATE TABLE emotion_state ("
     " id INTEGER PRIMARY KEY CHECK (id = 1),"
     " valence REAL NOT NULL, arousal REAL NOT NULL,"
     " last_update REAL NOT NULL, update_count INTEGER NOT NULL,"
     " quadrant TEXT NOT NULL, quadrant_since REAL NOT NULL);"
     "CREATE TABLE emotion_history ("
     " seq INTEGER PRIMARY KEY, t REAL NOT NULL, valence REAL NOT NULL, arousal REAL NOT NULL);"),
};

enum { Q_PUT_STATE, Q_CLEAR_HISTORY, Q_PUT_HISTORY, Q_GET_STATE, Q_GET_HISTORY, Q_COUNT };
static const char *const g_sql[Q_COUNT] = {
    ("INSERT OR REPLACE INTO emotion_state(id, valence, arousal, last_update, update_count, quadrant, quadrant_since)"
     " VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)"),
    "DELETE FROM emotion_history",
    "INSERT INTO emotion_history(seq, t, valence, arousal) VALUES (?1, ?2, ?3, ?4)",
    "SELECT valence, arousal, last_update, update_count, quadrant, quadrant_since FROM emotion_state WHERE id = 1",
    "SELECT t, valence, arousal FROM emotion_history ORDER BY seq",
};

struct elpis_emotion_store {
    elpis_db *db;
    sqlite3_stmt *q[Q_COUNT];
};

void elpis_emotion_store_close(elpis_emotion_store *st) {
    if (!st) return;
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
    free(st);
}

elpis_status elpis_emotion_store_open(elpis_emotion_store **out, elpis_db *db, elpis_error *err) {
    elpis_status s = elpis_db_migrate(db, "emotion", g_migrations, (int)ELPIS_ARRAY_LEN(g_migrations), err);
    if (s != ELPIS_OK) return s;
    elpis_emotion_store *st = calloc(1, sizeof *st);
    if (!st) return elpis_fail(err, ELPIS_ENOMEM, "emotion store");
    st->db = db;
    sqlite3 *h = elpis_db_handle(db);
    for (int i = 0; i < Q_COUNT; i++) {
        if (sqlite3_prepare_v2(h, g_sql[i], -1, &st->q[i], NULL) != SQLITE_OK) {
            s = elpis_fail(err, ELPIS_EIO, "emotion store: %s", sqlite3_errmsg(h));
            elpis_emotion_store_close(st);
            return s;
        }
    }
    *out = st;
    return ELPIS_OK;
}

/* Step a write statement to completion and reset it for the next use. */
static int run(sqlite3_stmt *q) {
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int put_state(elpis_emotion_store *st, const elpis_emotion_state *s) {
    sqlite3_stmt *q = st->q[Q_PUT_STATE];
    sqlite3_bind_double(q, 1, s->anchor_valence);
    sqlite3_bind_double(q, 2, s->anchor_arousal);
    sqlite3_bind_double(q, 3, s->last_update);
    sqlite3_bind_int64(q, 4, s->update_count);
    sqlite3_bind_text(q, 5, elpis_quadrant_name(s->quadrant), -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 6, s->quadrant_since);
    return run(q);
}

static int put_history(elpis_emotion_store *st, const elpis_emotion_state *s) {
    int rc = run(st->q[Q_CLEAR_HISTORY]);
    for (int32_t i = 0; rc == SQLITE_OK && i < s->n_history; i++) {
        sqlite3_stmt *q = st->q[Q_PUT_HISTORY];
        sqlite3_bind_int(q, 1, i);
        sqlite3_bind_double(q, 2, s->history[i].t);
        sqlite3_bind_double(q, 3, s->history[i].valence);
        sqlite3_bind_double(q, 4, s->history[i].arousal);
        rc = run(q);
    }
    return rc;
}

elpis_status elpis_emotion_store_save(elpis_emotion_store *st, const elpis_emotion_state *s, elpis_error *err) {
    sqlite3 *h = elpis_db_handle(st->db);
    int rc = sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = put_state(st, s);
    if (rc == SQLITE_OK) rc = put_history(st, s);
    if (rc == SQLITE_OK) rc = sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return ELPIS_OK;
    elpis_status e = elpis_fail(err, ELPIS_EIO, "emotion store %s: save: %s", elpis_db_path(st->db), sqlite3_errmsg(h));
    if (!sqlite3_get_autocommit(h)) sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    return e;
}

static double unit(double x) { return isfinite(x) ? fmax(-1, fmin(1, x)) : 0; }
static double finite_or(double x, double dflt) { return isfinite(x) ? x : dflt; }

/* Read the history rows into s, keeping the newest `cap`. */
static int get_history(elpis_emotion_store *st, elpis_emotion_state *s, int32_t cap) {
    sqlite3_stmt *q = st->q[Q_GET_HISTORY];
    int rc;
    s->n_history = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (s->n_history == cap) {
            memmove(s->history, s->history + 1, (size_t)(cap - 1) * sizeof s->history[0]);
            s->n_history--;
        }
        s->history[s->n_history++] = (elpis_emotion_sample){ finite_or(sqlite3_column_double(q, 0), s->last_update),
                                                             unit(sqlite3_column_double(q, 1)),
                                                             unit(sqlite3_column_double(q, 2)) };
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

elpis_status elpis_emotion_store_load(elpis_emotion_store *st, const elpis_emotion_config *cfg, double now,
                                      elpis_emotion_state *s, bool *found, elpis_error *err) {
    sqlite3 *h = elpis_db_handle(st->db);
    sqlite3_stmt *q = st->q[Q_GET_STATE];
    elpis_emotion_state tmp;
    *found = false;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) { sqlite3_reset(q); return ELPIS_OK; }
    if (rc != SQLITE_ROW) goto fail;
    elpis_emotion_state_init(&tmp, cfg, now);
    tmp.anchor_valence = unit(sqlite3_column_double(q, 0));
    tmp.anchor_arousal = unit(sqlite3_column_double(q, 1));
    tmp.last_update = finite_or(sqlite3_column_double(q, 2), now);
    tmp.update_count = sqlite3_column_int64(q, 3);
    const unsigned char *qn = sqlite3_column_text(q, 4);
    if (!qn || !elpis_quadrant_parse((const char *)qn, &tmp.quadrant))
        tmp.quadrant = elpis_quadrant_of(tmp.anchor_valence, tmp.anchor_arousal);
    tmp.quadrant_since = finite_or(sqlite3_column_double(q, 5), tmp.last_update);
    sqlite3_reset(q);
    int32_t cap = cfg->trajectory_history_size;
    if (cap < 1 || cap > ELPIS_EMOTION_HISTORY_MAX) cap = ELPIS_EMOTION_HISTORY_MAX;
    if ((rc = get_history(st, &tmp, cap)) != SQLITE_OK) goto fail;
    elpis_emotion_decay(&tmp, cfg, now);
    *s = tmp;
    *found = true;
    return ELPIS_OK;
fail:
    sqlite3_reset(q);
    return elpis_fail(err, ELPIS_EIO, "emotion store %s: load: %s", elpis_db_path(st->db), sqlite3_errmsg(h));
}
