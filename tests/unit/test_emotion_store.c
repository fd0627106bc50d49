/* test_emotion_store.c -- the emotion state in the on-disk SQLite database:
 * a save/load round trip of everything (anchors, counters, quadrant timer,
 * history), history trimming, restarts of the shared object, "an event is
 * acknowledged only once it is durable" (a failed commit is undone), and
 * kill -9 of a writer: every event it acknowledged is there afterwards.
 *
 * Each test works in its own fresh temp directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "elpis/emotion.h"

#define T0 1700000000.0

static char g_dir[256];

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected [%s] in [%s]", needle, hay);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static int setup(void **unused) {
    (void)unused;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_emotion_store.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **unused) {
    (void)unused;
    return nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static elpis_db *open_db(void) {
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    if (elpis_db_open(&db, g_dir, &err) != ELPIS_OK) fail_msg("%s", err.msg);
    return db;
}

static elpis_emotion_config defaults(void) {
    elpis_emotion_config c;
    elpis_emotion_config_default(&c);
    return c;
}

static void assert_same_state(const elpis_emotion_state *a, const elpis_emotion_state *b) {
    assert_true(a->anchor_valence == b->anchor_valence && a->anchor_arousal == b->anchor_arousal);
    assert_true(a->valence == b->valence && a->arousal == b->arousal);
    assert_true(a->last_update == b->last_update);
    assert_int_equal(a->update_count, b->update_count);
    assert_int_equal(a->quadrant, b->quadrant);
    assert_true(a->quadrant_since == b->quadrant_since);
    assert_int_equal(a->n_history, b->n_history);
    for (int i = 0; i < a->n_history; i++) {
        assert_true(a->history[i].t == b->history[i].t);
        assert_true(a->history[i].valence == b->history[i].valence);
        assert_true(a->history[i].arousal == b->history[i].arousal);
    }
}

static void test_round_trip(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_error err = { 0 };
    elpis_db *db = open_db();
    elpis_emotion_store *st = NULL;
    assert_int_equal(elpis_emotion_store_open(&st, db, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "emotion"), 1);

    elpis_emotion_state s, back;
    bool found = true;
    memset(&back, 0x5a, sizeof back);
    assert_int_equal(elpis_emotion_store_load(st, &c, T0, &back, &found, &err), ELPIS_OK);
    assert_false(found);
    assert_true(back.update_count == (int64_t)0x5a5a5a5a5a5a5a5aLL);   /* untouched */

    elpis_emotion_state_init(&s, &c, T0);
    elpis_emotion_apply_event(&s, &c, "blocked", 1.3, T0 + 1, NULL);
    elpis_emotion_apply_event(&s, &c, "frustration", 0.7, T0 + 2.5, NULL);
    elpis_emotion_apply_event(&s, &c, "insight", 2, T0 + 3.25, NULL);
    assert_int_equal(elpis_emotion_store_save(st, &s, &err), ELPIS_OK);
    elpis_emotion_store_close(st);
    elpis_db_close(db);

    db = open_db();   /* a restart */
    assert_int_equal(elpis_emotion_store_open(&st, db, &err), ELPIS_OK);   /* migrations are not re-run */
    assert_int_equal(elpis_emotion_store_load(st, &c, T0 + 4, &back, &found, &err), ELPIS_OK);
    assert_true(found);
    elpis_emotion_decay(&s, &c, T0 + 4);
    assert_same_state(&s, &back);
    assert_int_equal(back.update_count, 3);
    assert_int_equal(back.n_history, 3);

    /* a save replaces: fewer history rows after a reset */
    elpis_emotion_state_reset(&s, &c, T0 + 10);
    assert_int_equal(elpis_emotion_store_save(st, &s, &err), ELPIS_OK);
    assert_int_equal(elpis_emotion_store_load(st, &c, T0 + 10, &back, &found, &err), ELPIS_OK);
    assert_same_state(&s, &back);
    assert_int_equal(back.n_history, 0);
    elpis_emotion_store_close(st);
    elpis_db_close(db);
}

static void test_history_trimmed_on_load(void **unused) {
    (void)unused;
    elpis_emotion_config big = defaults(), small = defaults();
    big.trajectory_history_size = 30;
    small.trajectory_history_size = 8;
    small.velocity_window = 8;
    elpis_error err = { 0 };
    elpis_db *db = open_db();
    elpis_emotion_store *st = NULL;
    assert_int_equal(elpis_emotion_store_open(&st, db, &err), ELPIS_OK);
    elpis_emotion_state s, back;
    elpis_emotion_state_init(&s, &big, T0);
    for (int i = 0; i < 25; i++) elpis_emotion_apply_event(&s, &big, "routine", 1, T0 + i, NULL);
    assert_int_equal(elpis_emotion_store_save(st, &s, &err), ELPIS_OK);
    bool found;
    assert_int_equal(elpis_emotion_store_load(st, &small, T0 + 30, &back, &found, &err), ELPIS_OK);
    assert_int_equal(back.n_history, 8);
    assert_true(back.history[0].t == T0 + 17);   /* the newest 8 kept */
    assert_true(back.history[7].t == T0 + 24);
    assert_int_equal(back.update_count, 25);
    elpis_emotion_store_close(st);
    elpis_db_close(db);
}

/* The shared object picks up where the last process left off. */
static void test_object_restart(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    c.decay_rate = 0.01;
    elpis_error err = { 0 };
    elpis_db *db = open_db();
    elpis_emotion *e = NULL;
    elpis_emotion_state s, t;
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0, &err), ELPIS_OK);
    assert_int_equal(elpis_emotion_event(e, "success", 1, T0, NULL, NULL, &err), ELPIS_OK);
    assert_int_equal(elpis_emotion_event(e, "novelty", 2, T0 + 1, &s, NULL, &err), ELPIS_OK);
    elpis_emotion_free(e);
    elpis_db_close(db);

    db = open_db();
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0 + 1, &err), ELPIS_OK);
    elpis_emotion_snapshot(e, T0 + 1, &t);
    assert_same_state(&s, &t);
    assert_int_equal(t.update_count, 2);
    elpis_emotion_snapshot(e, T0 + 51, &t);   /* decay keeps running across the restart */
    assert_true(fabs(t.valence - 0.5 * s.valence) < 1e-12);
    assert_int_equal(elpis_emotion_reset(e, T0 + 60, NULL, &err), ELPIS_OK);
    elpis_emotion_free(e);
    elpis_db_close(db);

    db = open_db();
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0 + 61, &err), ELPIS_OK);
    elpis_emotion_snapshot(e, T0 + 61, &t);
    assert_int_equal(t.update_count, 0);      /* the reset was persisted too */
    assert_true(t.valence == 0 && t.n_history == 0);
    elpis_emotion_free(e);
    elpis_db_close(db);
}

/* A commit that fails is not acknowledged and leaves no trace in memory. */
static void test_failed_commit_is_undone(void **unused) {
    (void)unused;
    elpis_emotion_config c = defaults();
    elpis_error err = { 0 };
    elpis_db *db = open_db();
    elpis_emotion *e = NULL;
    elpis_emotion_state before, after;
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0, &err), ELPIS_OK);
    assert_int_equal(elpis_emotion_event(e, "success", 1, T0, NULL, NULL, &err), ELPIS_OK);
    elpis_emotion_snapshot(e, T0, &before);

    /* another connection holds the write lock; don't wait 5 s for it */
    char path[512];
    snprintf(path, sizeof path, "%s/elpis.db", g_dir);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_busy_timeout(elpis_db_handle(db), 20);
    elpis_emotion_state out;
    memset(&out, 0x33, sizeof out);
    assert_int_equal(elpis_emotion_event(e, "failure", 2, T0, &out, NULL, &err), ELPIS_EIO);
    assert_contains(err.msg, "emotion store");
    assert_true(out.update_count == (int64_t)0x3333333333333333LL);   /* nothing reported */
    elpis_emotion_snapshot(e, T0, &after);
    assert_int_equal(after.update_count, 1);
    assert_true(after.valence == before.valence && after.n_history == before.n_history);
    assert_int_equal(elpis_emotion_reset(e, T0, NULL, &err), ELPIS_EIO);
    elpis_emotion_snapshot(e, T0, &after);
    assert_int_equal(after.update_count, 1);

    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(elpis_emotion_event(e, "idle", 1, T0, &out, NULL, &err), ELPIS_OK);
    assert_int_equal(out.update_count, 2);
    elpis_emotion_free(e);
    elpis_db_close(db);

    db = open_db();
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0, &err), ELPIS_OK);
    elpis_emotion_snapshot(e, T0, &after);
    assert_int_equal(after.update_count, 2);   /* success and idle; the failed failure never happened */
    assert_true(fabs(after.valence - 0.2) < 1e-12 && fabs(after.arousal - 0.0) < 1e-12);
    elpis_emotion_free(e);
    elpis_db_close(db);
}

/* A writer killed with SIGKILL: every event it acknowledged is on disk. */
static void test_kill9_keeps_acknowledged(void **unused) {
    (void)unused;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        elpis_emotion_config c = defaults();
        elpis_db *db = NULL;
        elpis_emotion *e = NULL;
        if (elpis_db_open(&db, g_dir, NULL) != ELPIS_OK || elpis_emotion_new(&e, &c, db, T0, NULL) != ELPIS_OK) _exit(3);
        for (int64_t i = 1;; i++) {
            elpis_emotion_state s;
            if (elpis_emotion_event(e, "routine", 1, T0 + (double)i, &s, NULL, NULL) != ELPIS_OK) _exit(4);
            if (write(fds[1], &s.update_count, sizeof s.update_count) != sizeof s.update_count) _exit(5);
        }
    }
    close(fds[1]);
    int64_t last = 0, v;
    while (last < 40 && read(fds[0], &v, sizeof v) == sizeof v) last = v;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(last, 40);

    elpis_emotion_config c = defaults();
    elpis_db *db = open_db();
    elpis_emotion *e = NULL;
    elpis_emotion_state s;
    assert_int_equal(elpis_emotion_new(&e, &c, db, T0, NULL), ELPIS_OK);
    elpis_emotion_snapshot(e, T0, &s);
    assert_true(s.update_count >= last);
    assert_true(s.history[s.n_history - 1].t == T0 + (double)s.update_count);   /* consistent with the count */
    elpis_emotion_free(e);
    elpis_db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_trimmed_on_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_is_undone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_keeps_acknowledged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
