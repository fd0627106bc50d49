/* test_db.c -- the shared SQLite database module (include/elpis/db.h):
 *   - a fresh database is WAL, synchronous=FULL, foreign keys on;
 *   - migrations apply in order, once, each atomically; re-running is a no-op;
 *     a failing script leaves nothing behind;
 *   - garbage, corrupt, foreign and newer-format/newer-schema files are refused
 *     with a clear message and left byte-for-byte unchanged;
 *   - a committed write survives the writer dying without closing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "elpis/db.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/elpis-test-db-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

static long long q_int(elpis_db *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(elpis_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    long long v = -12345;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *slurp(const char *path, size_t *n) {
    char *data = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_read_file(path, 1 << 24, &data, n, &err), ELPIS_OK);
    return data;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* Opening `path` must fail with `code`, a message containing `needle`, and
 * leave the file (and its absent -wal) exactly as they were. */
static void assert_refused_untouched(const char *path, elpis_status code, const char *needle) {
    size_t n0, n1;
    char *before = slurp(path, &n0);
    char wal[512];
    snprintf(wal, sizeof wal, "%s-wal", path);
    bool had_wal = exists(wal);
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), code);
    assert_null(db);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_non_null(strstr(err.msg, path));
    char *after = slurp(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(exists(wal), had_wal);
    free(before);
    free(after);
}

static const char *const MIG_V3[] = {
    "CREATE TABLE t1(a INTEGER PRIMARY KEY, b TEXT)",
    "ALTER TABLE t1 ADD COLUMN c REAL",
    "CREATE TABLE t2(x INTEGER REFERENCES t1(a))",
};

static void test_open_fresh_pragmas(void **state) {
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/nested/data", g_dir);
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open(&db, dir, &err), ELPIS_OK);
    char expect[400];
    snprintf(expect, sizeof expect, "%s/elpis.db", dir);
    assert_string_equal(elpis_db_path(db), expect);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(elpis_db_handle(db), "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(q_int(db, "PRAGMA synchronous"), 2);  /* FULL */
    assert_int_equal(q_int(db, "PRAGMA foreign_keys"), 1);
    assert_true(q_int(db, "PRAGMA busy_timeout") >= 1000);
    assert_int_equal(q_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(elpis_db_version(db, "memory"), 0);
    elpis_db_close(db);
    /* reopening a database we created is fine */
    assert_int_equal(elpis_db_open(&db, dir, &err), ELPIS_OK);
    elpis_db_close(db);
}

static void test_migrate_in_order_and_idempotent(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "mig.db");
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 2, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "alpha"), 2);
    assert_int_equal(elpis_db_version(db, "beta"), 0);
    /* same list again: nothing re-applied (ALTER ADD COLUMN would fail twice) */
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 2, &err), ELPIS_OK);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations WHERE component='alpha'"), 2);
    /* a longer list applies only the new script */
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 3, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "alpha"), 3);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations WHERE component='alpha'"), 3);
    /* components are independent */
    static const char *const beta[] = { "CREATE TABLE beta_t(z)" };
    assert_int_equal(elpis_db_migrate(db, "beta", beta, 1, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "beta"), 1);
    assert_int_equal(elpis_db_version(db, "alpha"), 3);
    /* foreign keys are enforced */
    char *msg = NULL;
    assert_int_not_equal(sqlite3_exec(elpis_db_handle(db), "INSERT INTO t2(x) VALUES (42)", NULL, NULL, &msg),
                         SQLITE_OK);
    sqlite3_free(msg);
    elpis_db_close(db);

    /* a second connection sees the recorded versions; migrating again is a no-op */
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "alpha"), 3);
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 3, &err), ELPIS_OK);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations"), 4);
    elpis_db_close(db);
}

static void test_migrate_two_connections(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "two.db");
    elpis_db *a = NULL, *b = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&a, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_open_file(&b, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(a, "alpha", MIG_V3, 3, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(b, "alpha", MIG_V3, 3, &err), ELPIS_OK);
    assert_int_equal(q_int(b, "SELECT count(*) FROM schema_migrations WHERE component='alpha'"), 3);
    elpis_db_close(a);
    elpis_db_close(b);
}

static void test_migrate_failure_rolls_back(void **state) {
    (void)state;
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, ":memory:", &err), ELPIS_OK);
    static const char *const bad[] = {
        "CREATE TABLE ok1(a)",
        "CREATE TABLE half(a); INSERT INTO nowhere VALUES (1)",
    };
    assert_int_equal(elpis_db_migrate(db, "gamma", bad, 2, &err), ELPIS_EIO);
    assert_non_null(strstr(err.msg, "gamma v2"));
    assert_int_equal(elpis_db_version(db, "gamma"), 1);
    /* the half-applied script left no table behind */
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name='half'"), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name='ok1'"), 1);
    /* no transaction left open: a normal write works */
    assert_int_equal(sqlite3_exec(elpis_db_handle(db), "INSERT INTO ok1 VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
    /* bad arguments */
    assert_int_equal(elpis_db_migrate(db, "", bad, 1, &err), ELPIS_EINVAL);
    assert_int_equal(elpis_db_migrate(db, "x", NULL, 1, &err), ELPIS_EINVAL);
    elpis_db_close(db);
}

static void test_newer_component_schema_refused(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "newer-comp.db");
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 3, &err), ELPIS_OK);
    elpis_db_close(db);

    size_t n0, n1;
    char *before = slurp(path, &n0);
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(db, "alpha", MIG_V3, 2, &err), ELPIS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));
    assert_non_null(strstr(err.msg, "alpha"));
    assert_int_equal(elpis_db_version(db, "alpha"), 3);
    elpis_db_close(db);
    char *after = slurp(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
}

static void test_garbage_file_refused(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "garbage.db");
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
    write_bytes(path, junk, sizeof junk);
    assert_refused_untouched(path, ELPIS_EFORMAT, "not an SQLite database");
    /* short file too */
    write_bytes(path, "hello", 5);
    assert_refused_untouched(path, ELPIS_EFORMAT, "not an SQLite database");
    /* header right, rest wrong */
    memcpy(junk, "SQLite format 3", 16);
    write_bytes(path, junk, sizeof junk);
    size_t n0;
    char *before = slurp(path, &n0);
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_not_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_null(db);
    assert_non_null(strstr(err.msg, path));
    size_t n1;
    char *after = slurp(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
}

/* A real database with a table spanning many pages, then one b-tree page
 * overwritten with junk: quick_check must notice. */
static void test_corrupt_file_refused(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "corrupt.db");
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    static const char *const mig[] = { "CREATE TABLE big(id INTEGER PRIMARY KEY, s TEXT); CREATE INDEX big_s ON big(s)" };
    assert_int_equal(elpis_db_migrate(db, "alpha", mig, 1, &err), ELPIS_OK);
    assert_int_equal(sqlite3_exec(elpis_db_handle(db),
                                  "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<2000) "
                                  "INSERT INTO big(s) SELECT printf('row %d %s', i, hex(randomblob(40))) FROM c",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    elpis_db_close(db);   /* checkpoints the WAL into the file */
    size_t n;
    char *data = slurp(path, &n);
    assert_true(n > 16 * 4096);
    /* page size is at offset 16 (big endian); smash pages 3..6 (not the header page) */
    size_t page = ((unsigned char)data[16] << 8) | (unsigned char)data[17];
    if (page == 1) page = 65536;
    for (size_t off = 2 * page; off < 6 * page && off < n; off++) data[off] = (char)(off * 31 + 7);
    write_bytes(path, data, n);
    free(data);
    assert_refused_untouched(path, ELPIS_EFORMAT, "corrupt");
}

static void test_newer_format_refused(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "newer-format.db");
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(sqlite3_exec(elpis_db_handle(db), "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    elpis_db_close(db);
    assert_refused_untouched(path, ELPIS_EUNSUPPORTED, "newer elpis");
}

static void test_foreign_sqlite_refused(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "foreign.db");
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "CREATE TABLE contacts(name TEXT); INSERT INTO contacts VALUES('x')", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(h);
    assert_refused_untouched(path, ELPIS_EFORMAT, "another program");
}

static void test_empty_file_and_bad_paths(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "empty.db");
    write_bytes(path, "", 0);
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_version(db, "alpha"), 0);
    elpis_db_close(db);

    db = NULL;
    assert_int_equal(elpis_db_open_file(&db, g_dir, &err), ELPIS_EIO);   /* a directory */
    assert_null(db);
    assert_int_equal(elpis_db_open_file(&db, "", &err), ELPIS_EINVAL);
    /* data dir that is a file */
    assert_int_equal(elpis_db_open(&db, path, &err), ELPIS_EIO);
    assert_non_null(strstr(err.msg, "not a directory"));
}

/* The probe builds a file: URI; odd characters in the path must survive it. */
static void test_odd_path_reopen(void **state) {
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/we?ird#dir%%41 x", g_dir);
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    static const char *const mig[] = { "CREATE TABLE o(i)" };
    assert_int_equal(elpis_db_open(&db, dir, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(db, "alpha", mig, 1, &err), ELPIS_OK);
    elpis_db_close(db);
    assert_int_equal(elpis_db_open(&db, dir, &err), ELPIS_OK);   /* probed this time */
    assert_int_equal(elpis_db_version(db, "alpha"), 1);
    elpis_db_close(db);
}

static void test_default_data_dir(void **state) {
    (void)state;
    char buf[512];
    char *old_xdg = getenv("XDG_DATA_HOME") ? strdup(getenv("XDG_DATA_HOME")) : NULL;
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("XDG_DATA_HOME", "/x/data", 1);
    assert_string_equal(elpis_default_data_dir(buf, sizeof buf), "/x/data/elpis");
    setenv("XDG_DATA_HOME", "relative", 1);   /* invalid per XDG: ignored */
    setenv("HOME", "/home/u", 1);
    assert_string_equal(elpis_default_data_dir(buf, sizeof buf), "/home/u/.local/share/elpis");
    unsetenv("XDG_DATA_HOME");
    assert_string_equal(elpis_default_data_dir(buf, sizeof buf), "/home/u/.local/share/elpis");
    assert_null(elpis_default_data_dir(buf, 8));
    unsetenv("HOME");
    assert_null(elpis_default_data_dir(buf, sizeof buf));
    if (old_xdg) setenv("XDG_DATA_HOME", old_xdg, 1);
    if (old_home) setenv("HOME", old_home, 1);
    free(old_xdg);
    free(old_home);
}

/* A child commits rows and is SIGKILLed without closing; every committed row
 * is there when the parent reopens (WAL recovery). */
static void test_committed_survives_kill(void **state) {
    (void)state;
    char path[300];
    path_in(path, sizeof path, "kill.db");
    elpis_db *db = NULL;
    elpis_error err = { 0 };
    static const char *const mig[] = { "CREATE TABLE k(i INTEGER PRIMARY KEY)" };
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(elpis_db_migrate(db, "alpha", mig, 1, &err), ELPIS_OK);
    elpis_db_close(db);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        elpis_db *c = NULL;
        if (elpis_db_open_file(&c, path, NULL) != ELPIS_OK) _exit(3);
        for (int i = 1; i <= 50; i++) {
            char sql[64];
            snprintf(sql, sizeof sql, "INSERT INTO k VALUES (%d)", i);
            if (sqlite3_exec(elpis_db_handle(c), sql, NULL, NULL, NULL) != SQLITE_OK) _exit(4);
            if (write(fds[1], &i, sizeof i) != sizeof i) _exit(5);   /* acknowledge */
        }
        for (;;) pause();
    }
    close(fds[1]);
    int acked = 0, v;
    while (acked < 50 && read(fds[0], &v, sizeof v) == sizeof v) acked = v;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_int_equal(acked, 50);
    assert_int_equal(elpis_db_open_file(&db, path, &err), ELPIS_OK);
    assert_int_equal(q_int(db, "SELECT count(*) FROM k"), 50);
    elpis_db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_fresh_pragmas),
        cmocka_unit_test(test_migrate_in_order_and_idempotent),
        cmocka_unit_test(test_migrate_two_connections),
        cmocka_unit_test(test_migrate_failure_rolls_back),
        cmocka_unit_test(test_newer_component_schema_refused),
        cmocka_unit_test(test_garbage_file_refused),
        cmocka_unit_test(test_corrupt_file_refused),
        cmocka_unit_test(test_newer_format_refused),
        cmocka_unit_test(test_foreign_sqlite_refused),
        cmocka_unit_test(test_empty_file_and_bad_paths),
        cmocka_unit_test(test_odd_path_reopen),
        cmocka_unit_test(test_default_data_dir),
        cmocka_unit_test(test_committed_survives_kill),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
