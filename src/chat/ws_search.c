/* ws_search.c -- search_codebase: a regular-expression search of the
 * workspace, done in-process with PCRE2 (the original ran `rg --json`).
 *
 * Like ripgrep's defaults: hidden files and directories (".git", ".env")
 * are skipped, binary files (a NUL byte in the first 8 KiB) are skipped,
 * symlinks are not followed. file_glob is matched against the file name and
 * the workspace-relative path. Files over read_max_bytes are skipped.
 * The walk stops at search_max_matches matches or search_timeout_s seconds
 * and says so with "truncated". No match is a success (rg exit code 1).
 * Result: {matches[{file, line_number, line, match, before?, after?}],
 *          match_count, files_searched, truncated}.
 */
#include "ws_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <dirent.h>
#include <fnmatch.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LINE_CHARS 500

typedef struct search {
    elpis_ws *w;
    pcre2_code *re;
    pcre2_match_data *md;
    const char *glob;
    int context;
    json_t *matches;
    size_t n_files;
    bool truncated;
    double deadline;
} search;

/* One line as a JSON string, cut at MAX_LINE_CHARS bytes, made valid UTF-8. */
static json_t *line_json(const char *s, size_t n) {
    elpis_buf b = { 0 };
    if (n > MAX_LINE_CHARS) n = MAX_LINE_CHARS;
    json_t *j = chat__utf8_clean(s, n, &b) == ELPIS_OK ? json_stringn(b.data ? b.data : "", b.len) : NULL;
    elpis_buf_free(&b);
    return j;
}

typedef struct line_ref { const char *s; size_t n; } line_ref;

/* Split data into lines (without their '\n'). */
static line_ref *split_lines(const char *data, size_t len, size_t *n_out) {
    size_t cap = 64, n = 0;
    line_ref *v = malloc(cap * sizeof *v);
    for (size_t i = 0; v && i < len;) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - data) : len;
        if (n == cap) {
            line_ref *g = realloc(v, (cap *= 2) * sizeof *v);
            if (!g) { free(v); return NULL; }
            v = g;
        }
        v[n++] = (line_ref){ data + i, e - i };
        i = e + 1;
    }
    *n_out = n;
    return v;
}

static json_t *context_json(const line_ref *lines, size_t from, size_t to) {
    json_t *a = json_array();
    for (size_t i = from; a && i < to; i++) json_array_append_new(a, line_json(lines[i].s, lines[i].n));
    return a;
}

static void add_match(search *s, const char *rel, const line_ref *lines, size_t n_lines, size_t i) {
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    size_t ms = ov[0], me = ov[1] > ov[0] ? ov[1] : ov[0];
    json_t *m = json_pack("{s:s, s:I, s:o, s:o}", "file", rel, "line_number", (json_int_t)(i + 1), "line",
                          line_json(lines[i].s, lines[i].n), "match", line_json(lines[i].s + ms, me - ms));
    if (m && s->context > 0) {
        size_t c = (size_t)s->context;
        json_object_set_new(m, "before", context_json(lines, i > c ? i - c : 0, i));
        json_object_set_new(m, "after", context_json(lines, i + 1, ELPIS_MIN(n_lines, i + 1 + c)));
    }
    json_array_append_new(s->matches, m);
}

static void search_file(search *s, const char *abs, const char *name) {
    const char *rel = ws__rel(s->w, abs);
    if (s->glob && *s->glob && fnmatch(s->glob, name, 0) != 0 && fnmatch(s->glob, rel, 0) != 0) return;
    char *data = NULL;
    size_t len = 0, n_lines = 0;
    if (elpis_read_file(abs, s->w->read_max_bytes, &data, &len, NULL) != ELPIS_OK) return;
    if (memchr(data, 0, ELPIS_MIN(len, (size_t)8192))) { free(data); return; }
    s->n_files++;
    line_ref *lines = split_lines(data, len, &n_lines);
    for (size_t i = 0; lines && i < n_lines && !s->truncated; i++) {
        if (pcre2_match(s->re, (PCRE2_SPTR)lines[i].s, lines[i].n, 0, 0, s->md, NULL) < 0) continue;
        if (json_array_size(s->matches) >= s->w->search_max_matches) s->truncated = true;
        else add_match(s, rel, lines, n_lines, i);
    }
    free(lines);
    free(data);
}

static void search_dir(search *s, const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d)) && !s->truncated;) {
        if (de->d_name[0] == '.') continue;   /* hidden, ".", ".." */
        if (elpis_now_ms() > s->deadline) { s->truncated = true; break; }
        char abs[PATH_MAX];
        struct stat sb;
        if (snprintf(abs, sizeof abs, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", de->d_name) >= (int)sizeof abs) continue;
        if (lstat(abs, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode) && depth < 32) search_dir(s, abs, depth + 1);
        else if (S_ISREG(sb.st_mode)) search_file(s, abs, de->d_name);
    }
    closedir(d);
}

json_t *ws__search_codebase(elpis_ws *w, json_t *a, ws_err *e) {
    const char *pattern = ws__str(a, "pattern", "");
    long long ctx = ws__int(a, "context_lines", 0);
    int code;
    PCRE2_SIZE off;
    if (!*pattern) return ws__fail(e, ELPIS_TOOL_ERROR, "search_codebase: pattern must not be empty");
    if (ctx < 0 || ctx > 10) return ws__fail(e, ELPIS_TOOL_ERROR, "search_codebase: context_lines must be 0..10");
    search s = { w, NULL, NULL, ws__str(a, "file_glob", NULL), (int)ctx, json_array(), 0, false,
                 elpis_now_ms() + w->search_timeout_s * 1000.0 };
    s.re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (!s.re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        json_decref(s.matches);
        return ws__fail(e, ELPIS_TOOL_ERROR, "search_codebase: bad pattern at offset %zu: %s", (size_t)off, (char *)msg);
    }
    s.md = pcre2_match_data_create_from_pattern(s.re, NULL);
    if (s.md && s.matches) search_dir(&s, w->root, 0);
    pcre2_match_data_free(s.md);
    pcre2_code_free(s.re);
    if (!s.matches) return ws__fail(e, ELPIS_TOOL_ERROR, "search_codebase: out of memory");
    size_t n = json_array_size(s.matches);
    return json_pack("{s:o, s:I, s:I, s:b}", "matches", s.matches, "match_count", (json_int_t)n, "files_searched",
                     (json_int_t)s.n_files, "truncated", s.truncated);
}
