/* ws_files.c -- read_file, create_file, edit_file, list_directory.
 *
 * Shapes follow the original's tools (spec §5.5):
 *   read_file      {content, line_count, total_lines, truncated, file_path, size_bytes}
 *   create_file    {file_path, size_bytes, lines_written}
 *   edit_file      {file_path, backup_created, chars_replaced, chars_inserted}
 *   list_directory {directory, files[], directories[], total_items, file_count,
 *                   directory_count, recursive, truncated}; entries are
 *                  {name, path, absolute_path, size, type}, sorted by path.
 * Paths in results are relative to the workspace. Content is returned as
 * UTF-8 with invalid bytes replaced (errors="replace").
 *
 * Writes never follow a symlink at the last component: new files are opened
 * O_CREAT|O_EXCL|O_NOFOLLOW; edits write "<file>.elpis-XXXXXX" next to the
 * file and rename it over, after the backup "<file>.bak" was written the
 * same way. Directory walks use lstat and never descend into symlinks.
 */
#include "ws_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static size_t count_chars(const char *s) {   /* UTF-8 code points */
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static size_t count_lines(const char *s, size_t n) {
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) lines += s[i] == '\n';
    return lines + (n && s[n - 1] != '\n');
}

/* Replace `path` with data: a temporary file beside it, then rename. */
static bool write_replace(const char *path, const char *data, size_t n, mode_t mode, char *why, size_t wn) {
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.elpis-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return snprintf(why, wn, "%s", strerror(errno)), false;
    bool ok = elpis_write_all(fd, data, n) && fchmod(fd, mode & 07777) == 0;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return true;
    snprintf(why, wn, "%s", strerror(errno));
    unlink(tmp);
    return false;
}

/* A regular file inside the workspace, read whole (size-capped). */
static char *load_file(elpis_ws *w, const char *path, char real[PATH_MAX], size_t *len, mode_t *mode, ws_err *e) {
    elpis_error err = { 0 };
    struct stat sb;
    char *data = NULL;
    if (elpis_ws_resolve(w, path, true, real, &err) != ELPIS_OK) return ws__fail(e, ELPIS_TOOL_ERROR, "%s", err.msg), NULL;
    if (stat(real, &sb) != 0 || !S_ISREG(sb.st_mode)) return ws__fail(e, ELPIS_TOOL_FAILED, "%s: not a regular file", path), NULL;
    if ((size_t)sb.st_size > w->read_max_bytes)
        return ws__fail(e, ELPIS_TOOL_FAILED, "%s: %lld bytes; files over %zu bytes are refused", path,
                        (long long)sb.st_size, w->read_max_bytes), NULL;
    if (elpis_read_file(real, w->read_max_bytes, &data, len, &err) != ELPIS_OK)
        return ws__fail(e, ELPIS_TOOL_FAILED, "%s", err.msg), NULL;
    if (mode) *mode = sb.st_mode;
    return data;
}

/* ---- read_file ----------------------------------------------------------------------------- */

json_t *ws__read_file(elpis_ws *w, json_t *a, ws_err *e) {
    const char *path = ws__str(a, "file_path", "");
    long long max_lines = ws__int(a, "max_lines", 2000);
    char real[PATH_MAX];
    size_t len;
    if (max_lines == 0) max_lines = 2000;
    if (max_lines < 0 || max_lines > 100000) return ws__fail(e, ELPIS_TOOL_ERROR, "read_file: max_lines must be 0..100000");
    char *data = load_file(w, path, real, &len, NULL, e);
    if (!data) return NULL;
    size_t total = count_lines(data, len), end = 0, kept = 0;
    while (end < len && kept < (size_t)max_lines) {
        const char *nl = memchr(data + end, '\n', len - end);
        end = nl ? (size_t)(nl - data) + 1 : len;
        kept++;
    }
    elpis_buf clean = { 0 };
    json_t *r = NULL;
    if (chat__utf8_clean(data, end, &clean) == ELPIS_OK)
        r = json_pack("{s:s%, s:I, s:I, s:b, s:s, s:I}", "content", clean.data ? clean.data : "", clean.len, "line_count",
                      (json_int_t)kept, "total_lines", (json_int_t)total, "truncated", kept < total, "file_path",
                      ws__rel(w, real), "size_bytes", (json_int_t)len);
    elpis_buf_free(&clean);
    free(data);
    return r ? r : ws__fail(e, ELPIS_TOOL_ERROR, "read_file: out of memory");
}

/* ---- create_file --------------------------------------------------------------------------- */

/* mkdir -p of the directories between the workspace part that exists and
 * the file. Components created meanwhile by someone else must be real dirs. */
static bool make_parents(const char *path, bool create, char *why, size_t wn) {
    char dir[PATH_MAX];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", path);
    char *last = strrchr(dir, '/');
    if (!last || last == dir) return true;
    *last = 0;
    if (lstat(dir, &sb) == 0) return S_ISDIR(sb.st_mode) ? true : (snprintf(why, wn, "a parent is not a directory"), false);
    if (!create) return snprintf(why, wn, "the parent directory does not exist (create_dirs is false)"), false;
    for (char *p = dir + 1;; p++) {
        if (*p && *p != '/') continue;
        char c = *p;
        *p = 0;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) return snprintf(why, wn, "mkdir %.200s: %s", dir, strerror(errno)), false;
        if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return snprintf(why, wn, "%.200s is not a directory", dir), false;
        *p = c;
        if (!c) return true;
    }
}

json_t *ws__create_file(elpis_ws *w, json_t *a, ws_err *e) {
    const char *path = ws__str(a, "file_path", ""), *content = ws__str(a, "content", "");
    size_t n = strlen(content);
    char real[PATH_MAX], why[256];
    elpis_error err = { 0 };
    if (n > w->write_max_bytes) return ws__fail(e, ELPIS_TOOL_ERROR, "create_file: content is %zu bytes; the limit is %zu", n, w->write_max_bytes);
    if (elpis_ws_resolve(w, path, false, real, &err) != ELPIS_OK) return ws__fail(e, ELPIS_TOOL_ERROR, "%s", err.msg);
    if (!make_parents(real, ws__bool(a, "create_dirs", true), why, sizeof why))
        return ws__fail(e, ELPIS_TOOL_FAILED, "create_file %s: %s", path, why);
    int fd = open(real, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return ws__fail(e, ELPIS_TOOL_FAILED, "create_file %s: %s", path,
                        errno == EEXIST ? "the file already exists (use edit_file)" : strerror(errno));
    bool ok = elpis_write_all(fd, content, n);
    ok = close(fd) == 0 && ok;
    if (!ok) {
        unlink(real);
        return ws__fail(e, ELPIS_TOOL_FAILED, "create_file %s: write failed", path);
    }
    return json_pack("{s:s, s:I, s:I}", "file_path", ws__rel(w, real), "size_bytes", (json_int_t)n, "lines_written",
                     (json_int_t)count_lines(content, n));
}

/* ---- edit_file ----------------------------------------------------------------------------- */

static size_t occurrences(const char *hay, const char *needle, const char **first) {
    size_t n = 0, k = strlen(needle);
    *first = NULL;
    for (const char *p = hay; (p = strstr(p, needle)); p += k) {
        if (!n) *first = p;
        n++;
    }
    return n;
}

json_t *ws__edit_file(elpis_ws *w, json_t *a, ws_err *e) {
    const char *path = ws__str(a, "file_path", ""), *old = ws__str(a, "old_string", ""), *new = ws__str(a, "new_string", "");
    char real[PATH_MAX], bak[PATH_MAX + 8], why[256];
    size_t len;
    mode_t mode;
    const char *at;
    if (!*old) return ws__fail(e, ELPIS_TOOL_ERROR, "edit_file: old_string must not be empty");
    char *data = load_file(w, path, real, &len, &mode, e);
    if (!data) return NULL;
    json_t *r = NULL;
    size_t k = occurrences(data, old, &at), lo = strlen(old), ln = strlen(new);
    if (strlen(data) != len) ws__fail(e, ELPIS_TOOL_FAILED, "edit_file %s: a binary file (NUL bytes)", path);
    else if (k != 1) ws__fail(e, ELPIS_TOOL_FAILED, "edit_file %s: old_string found %zu times; it must occur exactly once", path, k);
    else if (len - lo + ln > w->write_max_bytes) ws__fail(e, ELPIS_TOOL_ERROR, "edit_file %s: the result exceeds %zu bytes", path, w->write_max_bytes);
    else {
        snprintf(bak, sizeof bak, "%s.bak", real);
        elpis_buf out = { 0 };
        size_t pre = (size_t)(at - data);
        bool built = elpis_buf_append(&out, data, pre) == ELPIS_OK && elpis_buf_append(&out, new, ln) == ELPIS_OK &&
                     elpis_buf_append(&out, at + lo, len - pre - lo) == ELPIS_OK;
        if (!built) ws__fail(e, ELPIS_TOOL_ERROR, "edit_file: out of memory");
        else if (!write_replace(bak, data, len, mode, why, sizeof why)) ws__fail(e, ELPIS_TOOL_FAILED, "edit_file %s: backup: %s", path, why);
        else if (!write_replace(real, out.data, out.len, mode, why, sizeof why)) ws__fail(e, ELPIS_TOOL_FAILED, "edit_file %s: %s", path, why);
        else r = json_pack("{s:s, s:b, s:I, s:I}", "file_path", ws__rel(w, real), "backup_created", 1, "chars_replaced",
                           (json_int_t)count_chars(old), "chars_inserted", (json_int_t)count_chars(new));
        elpis_buf_free(&out);
    }
    free(data);
    return r;
}

/* ---- list_directory ------------------------------------------------------------------------- */

typedef struct walk {
    elpis_ws *w;
    const char *pattern;
    bool recursive;
    json_t *files, *dirs;
    size_t n_items;
    bool truncated;
    double deadline;
} walk;

static const char *type_of(mode_t m) {
    return S_ISREG(m) ? "file" : S_ISDIR(m) ? "directory" : S_ISLNK(m) ? "symlink" : "other";
}

static void add_entry(walk *k, const char *name, const char *abs, const struct stat *sb) {
    if (k->pattern && *k->pattern && fnmatch(k->pattern, name, 0) != 0) return;
    if (k->n_items >= k->w->list_max_items) {
        k->truncated = true;
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", name, "path", ws__rel(k->w, abs), "absolute_path", abs,
                          "size", (json_int_t)sb->st_size, "type", type_of(sb->st_mode));
    json_array_append_new(S_ISDIR(sb->st_mode) ? k->dirs : k->files, o);
    k->n_items++;
}

static void walk_dir(walk *k, const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (elpis_now_ms() > k->deadline) { k->truncated = true; break; }
        char abs[PATH_MAX];
        struct stat sb;
        if (snprintf(abs, sizeof abs, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", de->d_name) >= (int)sizeof abs) continue;
        if (lstat(abs, &sb) != 0) continue;
        add_entry(k, de->d_name, abs, &sb);
        if (k->recursive && S_ISDIR(sb.st_mode) && depth < 32 && !k->truncated) walk_dir(k, abs, depth + 1);
    }
    closedir(d);
}

static int by_path(const void *x, const void *y) {
    json_t *const *a = x, *const *b = y;
    return strcmp(json_string_value(json_object_get(*a, "path")), json_string_value(json_object_get(*b, "path")));
}

static json_t *sorted(json_t *arr) {
    size_t n = json_array_size(arr);
    json_t **v = malloc((n ? n : 1) * sizeof *v), *out = json_array();
    if (!v || !out) { free(v); json_decref(out); return NULL; }
    for (size_t i = 0; i < n; i++) v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof *v, by_path);
    for (size_t i = 0; i < n; i++) json_array_append(out, v[i]);
    free(v);
    return out;
}

json_t *ws__list_directory(elpis_ws *w, json_t *a, ws_err *e) {
    const char *path = ws__str(a, "dir_path", ".");
    char real[PATH_MAX];
    struct stat sb;
    elpis_error err = { 0 };
    if (elpis_ws_resolve(w, path, true, real, &err) != ELPIS_OK) return ws__fail(e, ELPIS_TOOL_ERROR, "%s", err.msg);
    if (stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) return ws__fail(e, ELPIS_TOOL_FAILED, "%s: not a directory", path);
    walk k = { w, ws__str(a, "pattern", NULL), ws__bool(a, "recursive", false), json_array(), json_array(), 0, false,
               elpis_now_ms() + w->search_timeout_s * 1000.0 };
    walk_dir(&k, real, 0);
    json_t *files = sorted(k.files), *dirs = sorted(k.dirs);
    size_t nf = json_array_size(files), nd = json_array_size(dirs);
    json_decref(k.files);
    json_decref(k.dirs);
    if (!files || !dirs) {
        json_decref(files);
        json_decref(dirs);
        return ws__fail(e, ELPIS_TOOL_ERROR, "list_directory: out of memory");
    }
    return json_pack("{s:s, s:o, s:o, s:I, s:I, s:I, s:b, s:b}", "directory", ws__rel(w, real), "files", files,
                     "directories", dirs, "total_items", (json_int_t)(nf + nd), "file_count", (json_int_t)nf,
                     "directory_count", (json_int_t)nd, "recursive", k.recursive, "truncated", k.truncated);
}
