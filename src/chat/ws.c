/* ws.c -- the workspace sandbox: path resolution, argument checking, and the
 * dispatcher of the six local tools (spec §5.5).
 *
 * DESIGN
 *   Tools are a table (name, description, arguments with types, whether the
 *   user must confirm, handler). The same table produces the OpenAI `tools`
 *   array sent to the server, validates arguments before anything runs
 *   (unknown names and wrong types are refused, as the original's pydantic
 *   models with extra="forbid" did) and drives the confirmation prompt.
 *
 *   Every result is the original's envelope
 *       {"tool_call_id", "success", "result" | "error", "duration_ms"}
 *   and an outcome for the emotion events (chat_client.h).
 *
 * CONFINEMENT (elpis_ws_resolve)
 *   1. ".." components are refused outright, whatever they would resolve to.
 *   2. Relative paths are taken from the workspace root; absolute ones are
 *      allowed only if they resolve inside it.
 *   3. The existing part of the path is resolved with realpath(3), so every
 *      symlink on the way is followed, and the result must be the root or
 *      below it. A dangling symlink cannot be checked and is refused.
 *   4. Writers open with O_NOFOLLOW | O_EXCL or write a temporary file and
 *      rename it, so the final component is never a symlink they follow.
 *   Limitation: between the check and the write another process could swap a
 *   directory for a symlink (a check-then-use race); tools run one at a time
 *   and the model has no other way to act, so this is accepted. execute_bash
 *   runs with the workspace as its working directory but is a shell: it is
 *   confined by the blocklist and the user's confirmation, not by paths.
 */
#include "chat_internal.h"
#include "ws_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- setup ------------------------------------------------------------------------------ */

elpis_status elpis_ws_init(elpis_ws *w, const char *dir, elpis_error *err) {
    struct stat sb;
    memset(w, 0, sizeof *w);
    if (!realpath(dir, w->root)) return elpis_fail(err, ELPIS_EIO, "workspace %s: %s", dir, strerror(errno));
    if (stat(w->root, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return elpis_fail(err, ELPIS_EINVAL, "workspace %s: not a directory", dir);
    w->bash_timeout_s = 30;
    w->search_timeout_s = 30;
    w->output_cap = 64 * 1024;
    w->read_max_bytes = 1000000;
    w->write_max_bytes = 1000000;
    w->result_max_chars = 16000;
    w->list_max_items = 1000;
    w->search_max_matches = 200;
    return ELPIS_OK;
}

/* ---- paths ------------------------------------------------------------------------------ */

static bool has_dotdot(const char *p) {
    for (const char *s = p; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 2 && s[0] == '.' && s[1] == '.') return true;
        s += n;
        while (*s == '/') s++;
    }
    return false;
}

bool ws__inside(const elpis_ws *w, const char *real) {
    size_t n = strlen(w->root);
    if (n == 1) return real[0] == '/';   /* the root directory itself is the workspace */
    return strncmp(real, w->root, n) == 0 && (real[n] == 0 || real[n] == '/');
}

const char *ws__rel(const elpis_ws *w, const char *real) {
    size_t n = strlen(w->root);
    if (n == 1) return real[1] ? real + 1 : ".";
    return real[n] == '/' ? real + n + 1 : ".";
}

/* realpath(p) inside the workspace -> out. */
static elpis_status resolve_existing(const elpis_ws *w, const char *shown, const char *p, char out[PATH_MAX],
                                     elpis_error *err) {
    char real[PATH_MAX];
    if (!realpath(p, real)) {
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode))
            return elpis_fail(err, ELPIS_EINVAL, "%s: a dangling symlink (refused)", shown);
        return elpis_fail(err, errno == ENOENT ? ELPIS_EIO : ELPIS_EINVAL, "%s: %s", shown, strerror(errno));
    }
    if (!ws__inside(w, real)) return elpis_fail(err, ELPIS_EINVAL, "%s: resolves outside the workspace (refused)", shown);
    memcpy(out, real, strlen(real) + 1);
    return ELPIS_OK;
}

/* The path does not exist: check its deepest existing ancestor. */
static elpis_status resolve_new(const elpis_ws *w, const char *shown, const char *p, char out[PATH_MAX], elpis_error *err) {
    char anc[PATH_MAX], real[PATH_MAX];
    struct stat sb;
    snprintf(anc, sizeof anc, "%s", p);
    size_t cut = strlen(anc);
    for (;;) {
        char *slash = strrchr(anc, '/');
        if (!slash) return elpis_fail(err, ELPIS_EINVAL, "%s: no existing parent directory", shown);
        *slash = 0;
        cut = (size_t)(slash - anc);
        const char *probe = anc[0] ? anc : "/";
        if (lstat(probe, &sb) == 0) break;
        if (errno != ENOENT) return elpis_fail(err, ELPIS_EINVAL, "%s: %s", shown, strerror(errno));
    }
    const char *probe = anc[0] ? anc : "/";
    if (!realpath(probe, real)) return elpis_fail(err, ELPIS_EINVAL, "%s: %s", shown, strerror(errno));
    if (!ws__inside(w, real)) return elpis_fail(err, ELPIS_EINVAL, "%s: resolves outside the workspace (refused)", shown);
    if (stat(real, &sb) != 0 || !S_ISDIR(sb.st_mode)) return elpis_fail(err, ELPIS_EINVAL, "%s: a parent is not a directory", shown);
    const char *rest = p + cut;   /* starts with '/' */
    if (snprintf(out, PATH_MAX, "%s%s", strcmp(real, "/") ? real : "", rest) >= PATH_MAX)
        return elpis_fail(err, ELPIS_EINVAL, "%s: path too long", shown);
    return ELPIS_OK;
}

elpis_status elpis_ws_resolve(const elpis_ws *w, const char *path, bool must_exist, char out[PATH_MAX], elpis_error *err) {
    char full[PATH_MAX];
    struct stat sb;
    if (!path || !*path) return elpis_fail(err, ELPIS_EINVAL, "empty path");
    if (strlen(path) >= PATH_MAX - strlen(w->root) - 2) return elpis_fail(err, ELPIS_EINVAL, "path too long");
    if (has_dotdot(path)) return elpis_fail(err, ELPIS_EINVAL, "%s: '..' is not allowed (paths stay inside the workspace)", path);
    if (snprintf(full, sizeof full, "%s%s%s", path[0] == '/' ? "" : w->root, path[0] == '/' ? "" : "/", path) >= PATH_MAX)
        return elpis_fail(err, ELPIS_EINVAL, "path too long");
    size_t n = strlen(full);
    while (n > 1 && full[n - 1] == '/') full[--n] = 0;
    if (must_exist || lstat(full, &sb) == 0) return resolve_existing(w, path, full, out, err);
    if (errno != ENOENT) return elpis_fail(err, ELPIS_EINVAL, "%s: %s", path, strerror(errno));
    return resolve_new(w, path, full, out, err);
}

/* ---- arguments ------------------------------------------------------------------------------ */

json_t *ws__fail(ws_err *e, elpis_tool_outcome o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->outcome = o;
    return NULL;
}

static const char *type_name(ws_arg_type t) { return t == WS_STR ? "string" : t == WS_INT ? "integer" : "boolean"; }

static bool type_ok(json_t *v, ws_arg_type t) {
    if (t == WS_STR) return json_is_string(v);
    if (t == WS_INT) return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v));
    return json_is_boolean(v);
}

static const ws_arg *find_arg(const ws_tool *t, const char *name) {
    for (size_t i = 0; i < t->n_args; i++)
        if (!strcmp(t->args[i].name, name)) return &t->args[i];
    return NULL;
}

/* Unknown names, wrong types and missing required arguments are errors. */
static bool check_args(const ws_tool *t, json_t *a, ws_err *e) {
    const char *k;
    json_t *v;
    json_object_foreach(a, k, v) {
        const ws_arg *spec = find_arg(t, k);
        if (!spec) return ws__fail(e, ELPIS_TOOL_ERROR, "%s: unexpected argument '%s'", t->name, k), false;
        if (!json_is_null(v) && !type_ok(v, spec->type))
            return ws__fail(e, ELPIS_TOOL_ERROR, "%s: argument '%s' must be a %s", t->name, k, type_name(spec->type)), false;
    }
    for (size_t i = 0; i < t->n_args; i++) {
        json_t *v = json_object_get(a, t->args[i].name);
        if (t->args[i].required && (!v || json_is_null(v)))
            return ws__fail(e, ELPIS_TOOL_ERROR, "%s: missing required argument '%s'", t->name, t->args[i].name), false;
    }
    return true;
}

const char *ws__str(json_t *a, const char *k, const char *def) {
    json_t *v = json_object_get(a, k);
    return json_is_string(v) ? json_string_value(v) : def;
}

long long ws__int(json_t *a, const char *k, long long def) {
    json_t *v = json_object_get(a, k);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_real(v)) return (long long)json_real_value(v);
    return def;
}

bool ws__bool(json_t *a, const char *k, bool def) {
    json_t *v = json_object_get(a, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* ---- the table -------------------------------------------------------------------------------- */

static const ws_arg READ_ARGS[] = {
    { "file_path", WS_STR, true, "Path of the file, relative to the workspace" },
    { "max_lines", WS_INT, false, "Most lines to return (default 2000, at most 100000)" },
};
static const ws_arg CREATE_ARGS[] = {
    { "file_path", WS_STR, true, "Path of the new file, relative to the workspace" },
    { "content", WS_STR, true, "The file's content" },
    { "create_dirs", WS_BOOL, false, "Create missing parent directories (default true)" },
};
static const ws_arg EDIT_ARGS[] = {
    { "file_path", WS_STR, true, "Path of the file, relative to the workspace" },
    { "old_string", WS_STR, true, "Exact text to replace; must occur exactly once" },
    { "new_string", WS_STR, true, "Replacement text" },
};
static const ws_arg LIST_ARGS[] = {
    { "dir_path", WS_STR, false, "Directory, relative to the workspace (default \".\")" },
    { "recursive", WS_BOOL, false, "List subdirectories too (default false)" },
    { "pattern", WS_STR, false, "Glob the names must match, e.g. *.c" },
};
static const ws_arg SEARCH_ARGS[] = {
    { "pattern", WS_STR, true, "Regular expression (PCRE) to search for" },
    { "file_glob", WS_STR, false, "Only files matching this glob, e.g. *.py" },
    { "context_lines", WS_INT, false, "Lines of context around each match (0..10, default 0)" },
};
static const ws_arg BASH_ARGS[] = {
    { "command", WS_STR, true, "Shell command, run with the workspace as working directory" },
};

#define TOOL(n, d, c, a, f) { n, d, c, a, ELPIS_ARRAY_LEN(a), f }
static const ws_tool TOOLS[] = {
    TOOL("read_file", "Read a text file from the workspace.", false, READ_ARGS, ws__read_file),
    TOOL("create_file", "Create a new file (fails if it exists).", true, CREATE_ARGS, ws__create_file),
    TOOL("edit_file", "Replace one exact occurrence of old_string with new_string (a .bak backup is kept).", true,
         EDIT_ARGS, ws__edit_file),
    TOOL("list_directory", "List the files and directories of a workspace directory.", false, LIST_ARGS,
         ws__list_directory),
    TOOL("search_codebase", "Search the workspace's files for a regular expression.", false, SEARCH_ARGS,
         ws__search_codebase),
    TOOL("execute_bash", "Run a shell command in the workspace (30 s timeout).", true, BASH_ARGS, ws__execute_bash),
};

static const ws_tool *find_tool(const char *name) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(TOOLS); i++)
        if (name && !strcmp(TOOLS[i].name, name)) return &TOOLS[i];
    return NULL;
}

json_t *elpis_ws_tools_json(void) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < ELPIS_ARRAY_LEN(TOOLS); i++) {
        const ws_tool *t = &TOOLS[i];
        json_t *props = json_object(), *req = json_array();
        for (size_t k = 0; props && req && k < t->n_args; k++) {
            json_object_set_new(props, t->args[k].name,
                                json_pack("{s:s, s:s}", "type", type_name(t->args[k].type), "description", t->args[k].desc));
            if (t->args[k].required) json_array_append_new(req, json_string(t->args[k].name));
        }
        json_array_append_new(arr, json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:o, s:o, s:b}}}", "type", "function", "function",
                                             "name", t->name, "description", t->desc, "parameters", "type", "object",
                                             "properties", props, "required", req, "additionalProperties", 0));
    }
    return arr;
}

/* ---- running ------------------------------------------------------------------------------------ */

static json_t *envelope(const char *id, bool ok, json_t *result, const char *error, double ms) {
    json_t *o = json_pack("{s:s, s:b, s:f}", "tool_call_id", id ? id : "", "success", ok, "duration_ms", ms);
    if (!o) {
        json_decref(result);
        return NULL;
    }
    if (result) json_object_set_new(o, "result", result);
    if (error) json_object_set_new(o, "error", json_string(error));
    return o;
}

/* What the user is asked to allow. */
static void confirm_detail(const ws_tool *t, json_t *a, char *buf, size_t n) {
    if (!strcmp(t->name, "execute_bash")) snprintf(buf, n, "$ %s", ws__str(a, "command", ""));
    else if (!strcmp(t->name, "create_file"))
        snprintf(buf, n, "create %s (%zu bytes)", ws__str(a, "file_path", ""), strlen(ws__str(a, "content", "")));
    else snprintf(buf, n, "edit %s", ws__str(a, "file_path", ""));
}

json_t *elpis_ws_run(elpis_ws *w, const char *name, const char *args_json, const char *call_id,
                     elpis_tool_outcome *outcome) {
    double t0 = elpis_now_ms();
    ws_err e = { ELPIS_TOOL_ERROR, "" };
    json_error_t je;
    const ws_tool *t = find_tool(name);
    json_t *a = json_loads(args_json && *args_json ? args_json : "{}", 0, &je), *res = NULL;
    if (!t) ws__fail(&e, ELPIS_TOOL_ERROR, "unknown tool '%s'", name ? name : "");
    else if (!json_is_object(a)) ws__fail(&e, ELPIS_TOOL_ERROR, "%s: arguments are not a JSON object", name);
    else if (check_args(t, a, &e)) {
        const char *blocked = !strcmp(t->name, "execute_bash") ? elpis_ws_bash_blocked(ws__str(a, "command", "")) : NULL;
        char detail[512];
        confirm_detail(t, a, detail, sizeof detail);
        if (blocked) ws__fail(&e, ELPIS_TOOL_ERROR, "Command blocked for safety: matches '%s'", blocked);
        else if (t->confirm && w->confirm && !w->confirm(w->confirm_ud, t->name, detail))
            ws__fail(&e, ELPIS_TOOL_DECLINED, "The user declined to run %s", t->name);
        else {
            e.outcome = ELPIS_TOOL_OK;
            res = t->fn(w, a, &e);
        }
    }
    json_decref(a);
    bool ok = res && e.outcome == ELPIS_TOOL_OK;
    if (res && e.outcome == ELPIS_TOOL_ERROR) e.outcome = ELPIS_TOOL_FAILED;   /* a result came back: it ran */
    *outcome = ok ? ELPIS_TOOL_OK : e.outcome;
    return envelope(call_id, ok, res, ok ? NULL : e.msg, elpis_now_ms() - t0);
}

/* ---- activity lines ----------------------------------------------------------------------------- */

void elpis_ws_describe(const char *name, const char *args_json, char *buf, size_t n) {
    static const struct { const char *tool, *verb, *arg; } D[] = {
        { "read_file", "Reading ", "file_path" },     { "create_file", "Creating ", "file_path" },
        { "edit_file", "Editing ", "file_path" },      { "list_directory", "Listing ", "dir_path" },
        { "search_codebase", "Searching ", "pattern" }, { "execute_bash", "$ ", "command" },
    };
    json_error_t je;
    json_t *a = json_loads(args_json ? args_json : "{}", 0, &je);
    const char *verb = "", *arg = "";
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(D); i++)
        if (name && !strcmp(name, D[i].tool)) {
            verb = D[i].verb;
            arg = ws__str(a, D[i].arg, !strcmp(name, "list_directory") ? "." : "");
        }
    if (!*verb) snprintf(buf, n, "%s", name ? name : "?");
    else snprintf(buf, n, "%s%.40s%s", verb, arg, strlen(arg) > 40 ? "..." : "");
    json_decref(a);
}
