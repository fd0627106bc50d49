/* db.h -- the one SQLite database under --data-dir (memories, emotion state).
 *
 * Opening: WAL journal, foreign keys on, synchronous=FULL (an acknowledged
 * write survives kill -9 and power loss), busy timeout. A file that is not an
 * SQLite database, or fails `PRAGMA quick_check`, or carries a schema newer
 * than this binary knows, is refused with a clear error and never modified.
 *
 * Migrations are per component ("memory", "emotion", ...): each component owns
 * an ordered list of SQL scripts; elpis_db_migrate() applies the ones not yet
 * applied, each in its own transaction, and records them in the table
 * schema_migrations(component TEXT, version INTEGER). Components never touch
 * each other's tables.
 *
 * Threading: an elpis_db is one sqlite3 connection; use it from one thread at
 * a time (each module serialises its own access with a mutex or owns a
 * connection of its own; WAL allows one writer and many readers).
 */
#ifndef ELPIS_DB_H
#define ELPIS_DB_H

#include "elpis/base.h"

typedef struct sqlite3 sqlite3;
typedef struct elpis_db elpis_db;

/* Open (creating it and its directory if needed) DIR/elpis.db. */
elpis_status elpis_db_open(elpis_db **out, const char *data_dir, elpis_error *err);
/* Open an exact file path (":memory:" works, for tests). */
elpis_status elpis_db_open_file(elpis_db **out, const char *path, elpis_error *err);
void elpis_db_close(elpis_db *db);
sqlite3 *elpis_db_handle(elpis_db *db);
const char *elpis_db_path(const elpis_db *db);

/* Apply migrations[version-1] for every version above the recorded one.
 * Refuses (ELPIS_EUNSUPPORTED) when the recorded version is above n. */
elpis_status elpis_db_migrate(elpis_db *db, const char *component, const char *const *migrations, int n,
                              elpis_error *err);
int elpis_db_version(elpis_db *db, const char *component);   /* 0 if none */

/* Default data directory: $XDG_DATA_HOME/elpis, else $HOME/.local/share/elpis. */
const char *elpis_default_data_dir(char *buf, size_t cap);

#endif
