/* db.c -- the one SQLite database under --data-dir (see include/elpis/db.h).
 *
 * DESIGN
 * ------
 * Opening is two phases so that a file we refuse is never written:
 *
 *   1. Probe (only when the file already exists and is not empty): check the
 *      16-byte SQLite header ourselves, then open the file READ-ONLY (and
 *      immutable when there is no -wal, so not even side files appear) and run
 *      `PRAGMA quick_check`, read `PRAGMA user_version` (the layout format of
 *      an Elpis database, ELPIS_DB_FORMAT) and look for schema_migrations.
 *      Anything wrong -> a one-line error naming the path; the file is left
 *      byte-for-byte as it was (a read-only connection cannot write, and we
 *      never switch journal mode on it).
 *   2. Open read-write and configure: busy_timeout, journal_mode=WAL,
 *      synchronous=FULL (every COMMIT is fsync'ed, so an acknowledged write
 *      survives kill -9 and power loss), foreign_keys=ON; create
 *      schema_migrations and stamp user_version on a fresh database.
 *
 * A valid SQLite file that has tables but no schema_migrations belongs to
 * someone else; it is refused rather than having our tables added to it.
 *
 * Migrations: each component passes its ordered list of scripts. Each script
 * runs in its own BEGIN IMMEDIATE transaction together with the row that
 * records it, so a crash leaves either both or neither. The recorded version
 * is re-read inside the transaction, so two processes migrating at once apply
 * each script exactly once. A recorded version above what the caller knows is
 * refused before anything is written.
 *
 * INVARIANTS
 * ----------
 *   - elpis_db_open* either returns a configured connection or writes nothing.
 *   - schema_migrations(component, version) has one row per applied script.
 */
#include "elpis/db.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Layout format of the database as a whole (PRAGMA user_version). Bump only
 * when schema_migrations itself changes shape; components version themselves. */
#define ELPIS_DB_FORMAT 1
#define ELPIS_DB_BUSY_MS 5000

struct elpis_db {
    sqlite3 *h;
    char *path;
};

static const char SCHEMA_MIGRATIONS_SQL[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " component TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),"
    " PRIMARY KEY (component, version))";

/* ---- small helpers ---------------------------------------------------------- */

static bool is_memory_path(const char *path) {
    return strcmp(path, ":memory:") == 0 || strncmp(path, "file::memory:", 13) == 0;
}

/* Run one statement that returns a single integer (or none -> *out = 0). */
static int query_int(sqlite3 *h, const char *sql, long long *out) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    *out = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static int query_text(sqlite3 *h, const char *sql, char *buf, size_t cap) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    buf[0] = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(buf, cap, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* mkdir -p with mode 0700 (the database holds a person's memories). */
static elpis_status make_dirs(const char *dir, elpis_error *err) {
    char tmp[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp) return elpis_fail(err, ELPIS_EINVAL, "data dir: bad path '%s'", dir);
    memcpy(tmp, dir, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return elpis_fail(err, ELPIS_EIO, "data dir: mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return elpis_fail(err, ELPIS_EIO, "data dir: mkdir %s: %s", tmp, strerror(errno));
    struct stat sb;
    if (stat(tmp, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return elpis_fail(err, ELPIS_EIO, "data dir: %s is not a directory", tmp);
    return ELPIS_OK;
}

/* ---- phase 1: read-only probe of an existing file ---------------------------- */

static elpis_status check_header(const char *path, elpis_error *err) {
    static const char magic[16] = "SQLite format 3";   /* includes the NUL */
    char hdr[100];
    FILE *f = fopen(path, "rb");
    if (!f) return elpis_fail(err, ELPIS_EIO, "database %s: %s", path, strerror(errno));
    size_t got = fread(hdr, 1, sizeof hdr, f);
    fclose(f);
    if (got < sizeof hdr || memcmp(hdr, magic, sizeof magic) != 0)
        return elpis_fail(err, ELPIS_EFORMAT,
                          "database %s: not an SQLite database (bad header); refusing to touch it", path);
    return ELPIS_OK;
}

static elpis_status probe_contents(sqlite3 *h, const char *path, elpis_error *err) {
    char qc[256];
    long long v = 0, n_tables = 0, has_mig = 0;
    int rc = query_text(h, "PRAGMA quick_check", qc, sizeof qc);
    if (rc != SQLITE_OK || strcmp(qc, "ok") != 0)
        return elpis_fail(err, ELPIS_EFORMAT, "database %s: corrupt (%s); refusing to touch it", path,
                          rc != SQLITE_OK ? sqlite3_errmsg(h) : qc);
    if ((rc = query_int(h, "PRAGMA user_version", &v)) != SQLITE_OK)
        return elpis_fail(err, ELPIS_EFORMAT, "database %s: %s", path, sqlite3_errmsg(h));
    if (v > ELPIS_DB_FORMAT)
        return elpis_fail(err, ELPIS_EUNSUPPORTED,
                          "database %s: format %lld was written by a newer elpis (this one knows %d); refusing to touch it",
                          path, v, ELPIS_DB_FORMAT);
    rc = query_int(h, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'", &n_tables);
    if (rc == SQLITE_OK)
        rc = query_int(h, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'", &has_mig);
    if (rc != SQLITE_OK) return elpis_fail(err, ELPIS_EFORMAT, "database %s: %s", path, sqlite3_errmsg(h));
    if (n_tables > 0 && !has_mig)
        return elpis_fail(err, ELPIS_EFORMAT,
                          "database %s: an SQLite database of another program (no schema_migrations); refusing to touch it",
                          path);
    return ELPIS_OK;
}

/* The probe's URI. Without a -wal file all content is in the main file, so
 * immutable=1 reads it with no locks and no side files at all (a plain
 * read-only open of a WAL database would create -wal and -shm). With a -wal
 * (an unclean shutdown) immutable would ignore committed rows, so read it
 * normally; the side files exist already and a read-only connection never
 * checkpoints into the main file. */
static elpis_status probe_uri(const char *path, char *uri, size_t cap, elpis_error *err) {
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    bool has_wal = access(wal, F_OK) == 0;
    size_t o = 0;
    o += (size_t)snprintf(uri, cap, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (o + 4 >= cap) return elpis_fail(err, ELPIS_EINVAL, "database %s: path too long", path);
        if (*p == '?' || *p == '#' || *p == '%' || *p < 0x20 || *p >= 0x7f)
            o += (size_t)snprintf(uri + o, cap - o, "%%%02X", *p);
        else
            uri[o++] = (char)*p;
    }
    int n = snprintf(uri + o, cap - o, "%s", has_wal ? "?mode=ro" : "?mode=ro&immutable=1");
    if (n < 0 || (size_t)n >= cap - o) return elpis_fail(err, ELPIS_EINVAL, "database %s: path too long", path);
    return ELPIS_OK;
}

static elpis_status probe_existing(const char *path, elpis_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return ELPIS_OK;   /* will be created */
        return elpis_fail(err, ELPIS_EIO, "database %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return elpis_fail(err, ELPIS_EIO, "database %s: not a regular file", path);
    if (sb.st_size == 0) return ELPIS_OK;       /* SQLite treats an empty file as a new database */
    elpis_status st = check_header(path, err);
    if (st != ELPIS_OK) return st;
    char uri[PATH_MAX * 3 + 32];
    if ((st = probe_uri(path, uri, sizeof uri, err)) != ELPIS_OK) return st;
    sqlite3 *h = NULL;
    int rc = sqlite3_open_v2(uri, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    if (rc != SQLITE_OK) {
        st = elpis_fail(err, ELPIS_EIO, "database %s: %s", path, h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
    } else {
        sqlite3_busy_timeout(h, ELPIS_DB_BUSY_MS);
        st = probe_contents(h, path, err);
    }
    sqlite3_close(h);
    return st;
}

/* ---- phase 2: configure the read-write connection ---------------------------- */

static elpis_status exec(sqlite3 *h, const char *sql, const char *what, elpis_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &msg) == SQLITE_OK) return ELPIS_OK;
    elpis_status st = elpis_fail(err, ELPIS_EIO, "database: %s: %s", what, msg ? msg : sqlite3_errmsg(h));
    sqlite3_free(msg);
    return st;
}

static elpis_status configure(sqlite3 *h, const char *path, elpis_error *err) {
    elpis_status st;
    char mode[32];
    sqlite3_busy_timeout(h, ELPIS_DB_BUSY_MS);
    if (query_text(h, "PRAGMA journal_mode=WAL", mode, sizeof mode) != SQLITE_OK)
        return elpis_fail(err, ELPIS_EIO, "database %s: journal_mode: %s", path, sqlite3_errmsg(h));
    if (strcmp(mode, "wal") != 0 && !(is_memory_path(path) && strcmp(mode, "memory") == 0))
        return elpis_fail(err, ELPIS_EIO, "database %s: cannot use WAL (journal mode is %s)", path, mode);
    if ((st = exec(h, "PRAGMA synchronous=FULL", "synchronous", err)) != ELPIS_OK) return st;
    if ((st = exec(h, "PRAGMA foreign_keys=ON", "foreign_keys", err)) != ELPIS_OK) return st;
    /* Fresh database: create the version table and stamp the format, atomically. */
    long long has_mig = 0;
    if (query_int(h, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'",
                  &has_mig) != SQLITE_OK)
        return elpis_fail(err, ELPIS_EIO, "database %s: %s", path, sqlite3_errmsg(h));
    if (has_mig) return ELPIS_OK;
    char sql[512];
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; %s; PRAGMA user_version=%d; COMMIT;", SCHEMA_MIGRATIONS_SQL,
             ELPIS_DB_FORMAT);
    st = exec(h, sql, "create schema_migrations", err);
    if (st != ELPIS_OK) sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* ---- public API ----------------------------------------------------------------- */

elpis_status elpis_db_open_file(elpis_db **out, const char *path, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    elpis_db *db = NULL;
    sqlite3 *h = NULL;
    if (!out || !path || !*path) return elpis_fail(err, ELPIS_EINVAL, "database: no path");
    if (!is_memory_path(path) && (st = probe_existing(path, err)) != ELPIS_OK) return st;
    int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc != SQLITE_OK) {
        st = elpis_fail(err, ELPIS_EIO, "database %s: %s", path, h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(h, 1);
    if ((st = configure(h, path, err)) != ELPIS_OK) goto fail;
    if (!(db = calloc(1, sizeof *db)) || !(db->path = strdup(path))) {
        st = elpis_fail(err, ELPIS_ENOMEM, "database: out of memory");
        goto fail;
    }
    db->h = h;
    *out = db;
    return ELPIS_OK;
fail:
    if (db) free(db->path);
    free(db);
    sqlite3_close(h);
    return st;
}

elpis_status elpis_db_open(elpis_db **out, const char *data_dir, elpis_error *err) {
    char path[PATH_MAX];
    if (!data_dir || !*data_dir) return elpis_fail(err, ELPIS_EINVAL, "database: no data dir");
    elpis_status st = make_dirs(data_dir, err);
    if (st != ELPIS_OK) return st;
    int n = snprintf(path, sizeof path, "%s/elpis.db", data_dir);
    if (n < 0 || (size_t)n >= sizeof path) return elpis_fail(err, ELPIS_EINVAL, "data dir: path too long");
    return elpis_db_open_file(out, path, err);
}

void elpis_db_close(elpis_db *db) {
    if (!db) return;
    /* sqlite3_close_v2 would defer on unfinalized statements; every module
     * finalizes its own, so a plain close reporting BUSY is a bug worth a log. */
    if (sqlite3_close(db->h) != SQLITE_OK) {
        elpis_log(ELPIS_LOG_WARN, "database %s: close: %s (statements left open)", db->path, sqlite3_errmsg(db->h));
        sqlite3_close_v2(db->h);
    }
    free(db->path);
    free(db);
}

sqlite3 *elpis_db_handle(elpis_db *db) { return db ? db->h : NULL; }
const char *elpis_db_path(const elpis_db *db) { return db ? db->path : NULL; }

int elpis_db_version(elpis_db *db, const char *component) {
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (!db || !component) return -1;
    if (sqlite3_prepare_v2(db->h, "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static elpis_status record_version(sqlite3 *h, const char *component, int version, elpis_error *err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, "INSERT INTO schema_migrations(component, version) VALUES (?1, ?2)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, version);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return elpis_fail(err, ELPIS_EIO, "migration %s v%d: record: %s", component, version, sqlite3_errmsg(h));
    return ELPIS_OK;
}

/* Apply one script with its record in one transaction. Skips it when another
 * connection applied it between our check and our write lock. */
static elpis_status apply_one(elpis_db *db, const char *component, int version, const char *sql, elpis_error *err) {
    char *msg = NULL;
    elpis_status st = ELPIS_OK;
    if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
        st = elpis_fail(err, ELPIS_EIO, "migration %s v%d: begin: %s", component, version,
                        msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        return st;
    }
    int cur = elpis_db_version(db, component);
    if (cur < 0) {
        st = elpis_fail(err, ELPIS_EIO, "migration %s: read version: %s", component, sqlite3_errmsg(db->h));
        goto fail;
    }
    if (cur >= version) goto commit;
    if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        st = elpis_fail(err, ELPIS_EIO, "migration %s v%d: %s", component, version, msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        goto fail;
    }
    if ((st = record_version(db->h, component, version, err)) != ELPIS_OK) goto fail;
commit:
    if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        st = elpis_fail(err, ELPIS_EIO, "migration %s v%d: commit: %s", component, version,
                        msg ? msg : sqlite3_errmsg(db->h));
        sqlite3_free(msg);
        goto fail;
    }
    return ELPIS_OK;
fail:
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

elpis_status elpis_db_migrate(elpis_db *db, const char *component, const char *const *migrations, int n,
                              elpis_error *err) {
    if (!db || !component || !*component || n < 0 || (n > 0 && !migrations))
        return elpis_fail(err, ELPIS_EINVAL, "migrate: bad arguments");
    int cur = elpis_db_version(db, component);
    if (cur < 0) return elpis_fail(err, ELPIS_EIO, "migrate %s: %s", component, sqlite3_errmsg(db->h));
    if (cur > n)
        return elpis_fail(err, ELPIS_EUNSUPPORTED,
                          "database %s: %s schema version %d is newer than this elpis knows (%d); refusing to touch it",
                          db->path, component, cur, n);
    for (int v = cur + 1; v <= n; v++) {
        elpis_status st = apply_one(db, component, v, migrations[v - 1], err);
        if (st != ELPIS_OK) return st;
    }
    return ELPIS_OK;
}

const char *elpis_default_data_dir(char *buf, size_t cap) {
    const char *xdg = getenv("XDG_DATA_HOME");
    int n;
    /* The XDG spec says relative values are invalid and must be ignored. */
    if (xdg && xdg[0] == '/') {
        n = snprintf(buf, cap, "%s/elpis", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) return NULL;
        n = snprintf(buf, cap, "%s/.local/share/elpis", home);
    }
    if (n < 0 || (size_t)n >= cap) return NULL;
    return buf;
}
