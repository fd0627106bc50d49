/* test_chat_tools.c -- the chat client's workspace sandbox and its six tools.
 *
 * A fresh temporary tree per test:
 *     T/ws/a.txt  T/ws/sub/b.c  T/ws/.hidden/h.c
 *     T/ws/link_out -> T/outside/secret.txt     (symlink escaping the workspace)
 *     T/ws/link_dir -> T/outside                (a directory escape)
 *     T/ws/dangling -> T/outside/nothing-yet    (dangling, pointing outside)
 *     T/ws/link_in  -> a.txt                    (a harmless symlink)
 *     T/outside/secret.txt
 * Every refusal is checked for its effect too: the file outside is never
 * read, created or modified.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elpis/chat_client.h"

typedef struct fx {
    char top[PATH_MAX], ws_dir[PATH_MAX], out_dir[PATH_MAX];
    elpis_ws ws;
} fx;

static void write_text(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *dir, const char *name) {
    char p[PATH_MAX * 2], *data = NULL;
    size_t n;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (elpis_read_file(p, 1 << 20, &data, &n, NULL) != ELPIS_OK) return NULL;
    return data;
}

static bool exists(const char *dir, const char *name) {
    char p[PATH_MAX * 2];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &sb) == 0;
}

static void link_at(const char *target, const char *dir, const char *name) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(symlink(target, p), 0);
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    char tmpl[] = "/tmp/elpis-chat-tools-XXXXXX", p[PATH_MAX * 2];
    assert_non_null(mkdtemp(tmpl));
    snprintf(f->top, sizeof f->top, "%s", tmpl);
    snprintf(f->ws_dir, sizeof f->ws_dir, "%s/ws", tmpl);
    snprintf(f->out_dir, sizeof f->out_dir, "%s/outside", tmpl);
    assert_int_equal(mkdir(f->ws_dir, 0755), 0);
    assert_int_equal(mkdir(f->out_dir, 0755), 0);
    snprintf(p, sizeof p, "%s/sub", f->ws_dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/.hidden", f->ws_dir);
    assert_int_equal(mkdir(p, 0755), 0);
    write_text(f->ws_dir, "a.txt", "line one\nline two\nline three\n");
    write_text(f->ws_dir, "sub/b.c", "int main(void) {\n    return 42; /* answer */\n}\n");
    write_text(f->ws_dir, ".hidden/h.c", "return 42;\n");
    write_text(f->out_dir, "secret.txt", "TOP SECRET return 42\n");
    snprintf(p, sizeof p, "%s/secret.txt", f->out_dir);
    link_at(p, f->ws_dir, "link_out");
    link_at(f->out_dir, f->ws_dir, "link_dir");
    snprintf(p, sizeof p, "%s/nothing-yet", f->out_dir);
    link_at(p, f->ws_dir, "dangling");
    link_at("a.txt", f->ws_dir, "link_in");
    assert_int_equal(elpis_ws_init(&f->ws, f->ws_dir, NULL), ELPIS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->top);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Run a tool; return the envelope (caller frees) and check the outcome. */
static json_t *run(fx *f, const char *tool, const char *args, elpis_tool_outcome want) {
    elpis_tool_outcome o = (elpis_tool_outcome)-1;
    json_t *env = elpis_ws_run(&f->ws, tool, args, "call_test", &o);
    assert_non_null(env);
    if (o != want) {
        char *s = json_dumps(env, 0);
        fprintf(stderr, "%s %s: outcome %d, want %d: %s\n", tool, args, o, want, s);
        free(s);
    }
    assert_int_equal(o, want);
    assert_string_equal(json_string_value(json_object_get(env, "tool_call_id")), "call_test");
    assert_true(json_is_number(json_object_get(env, "duration_ms")));
    assert_int_equal(json_is_true(json_object_get(env, "success")), want == ELPIS_TOOL_OK);
    if (want != ELPIS_TOOL_OK) assert_true(json_is_string(json_object_get(env, "error")));
    return env;
}

static const char *err_of(json_t *env) { return json_string_value(json_object_get(env, "error")); }
static json_t *res_of(json_t *env) { return json_object_get(env, "result"); }

/* ---- path resolution ------------------------------------------------------------------------------ */

static void refused(fx *f, const char *path, bool must_exist, const char *why) {
    char out[PATH_MAX];
    elpis_error err = { 0 };
    assert_int_not_equal(elpis_ws_resolve(&f->ws, path, must_exist, out, &err), ELPIS_OK);
    if (!strstr(err.msg, why)) fprintf(stderr, "%s: '%s' does not say '%s'\n", path, err.msg, why);
    assert_non_null(strstr(err.msg, why));
}

static void test_resolve(void **state) {
    fx *f = *state;
    char out[PATH_MAX], want[PATH_MAX * 2], abs[PATH_MAX * 2];
    assert_int_equal(elpis_ws_resolve(&f->ws, "a.txt", true, out, NULL), ELPIS_OK);
    snprintf(want, sizeof want, "%s/a.txt", f->ws.root);
    assert_string_equal(out, want);
    assert_int_equal(elpis_ws_resolve(&f->ws, "./sub//b.c", true, out, NULL), ELPIS_OK);
    assert_int_equal(elpis_ws_resolve(&f->ws, ".", true, out, NULL), ELPIS_OK);
    assert_string_equal(out, f->ws.root);
    assert_int_equal(elpis_ws_resolve(&f->ws, "link_in", true, out, NULL), ELPIS_OK);   /* inside: fine */
    assert_string_equal(out, want);
    assert_int_equal(elpis_ws_resolve(&f->ws, want, true, out, NULL), ELPIS_OK);       /* absolute, inside */
    assert_int_equal(elpis_ws_resolve(&f->ws, "new/dir/file.txt", false, out, NULL), ELPIS_OK);
    snprintf(want, sizeof want, "%s/new/dir/file.txt", f->ws.root);
    assert_string_equal(out, want);

    refused(f, "", true, "empty");
    refused(f, "../outside/secret.txt", true, "'..'");
    refused(f, "sub/../a.txt", true, "'..'");                  /* even when it would stay inside */
    refused(f, "sub/..", false, "'..'");
    snprintf(abs, sizeof abs, "%s/secret.txt", f->out_dir);
    refused(f, abs, true, "outside");
    refused(f, abs, false, "outside");
    refused(f, "/etc/passwd", true, "outside");
    refused(f, "/etc/new-file", false, "outside");
    refused(f, "link_out", true, "outside");                   /* symlink escape */
    refused(f, "link_out", false, "outside");
    refused(f, "link_dir/secret.txt", true, "outside");
    refused(f, "link_dir/new.txt", false, "outside");          /* create through a symlinked dir */
    refused(f, "link_dir/deeper/new.txt", false, "outside");
    refused(f, "dangling", false, "dangling");
    refused(f, "missing.txt", true, "No such file");
    refused(f, "a.txt/x", false, "Not a directory");
}

/* ---- read_file ------------------------------------------------------------------------------------- */

static void test_read_file(void **state) {
    fx *f = *state;
    json_t *env = run(f, "read_file", "{\"file_path\":\"a.txt\"}", ELPIS_TOOL_OK), *r = res_of(env);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "line one\nline two\nline three\n");
    assert_int_equal(json_integer_value(json_object_get(r, "line_count")), 3);
    assert_int_equal(json_integer_value(json_object_get(r, "total_lines")), 3);
    assert_false(json_is_true(json_object_get(r, "truncated")));
    assert_string_equal(json_string_value(json_object_get(r, "file_path")), "a.txt");
    assert_int_equal(json_integer_value(json_object_get(r, "size_bytes")), 29);
    json_decref(env);

    env = run(f, "read_file", "{\"file_path\":\"a.txt\",\"max_lines\":2}", ELPIS_TOOL_OK);
    r = res_of(env);
    assert_string_equal(json_string_value(json_object_get(r, "content")), "line one\nline two\n");
    assert_true(json_is_true(json_object_get(r, "truncated")));
    json_decref(env);

    write_text(f->ws_dir, "bad.txt", "ok \xff\xfe end");   /* invalid UTF-8 is replaced */
    env = run(f, "read_file", "{\"file_path\":\"bad.txt\"}", ELPIS_TOOL_OK);
    assert_string_equal(json_string_value(json_object_get(res_of(env), "content")), "ok \xef\xbf\xbd\xef\xbf\xbd end");
    json_decref(env);
}

static void test_read_file_refusals(void **state) {
    fx *f = *state;
    static const struct { const char *args, *why; elpis_tool_outcome o; } C[] = {
        { "{\"file_path\":\"../outside/secret.txt\"}", "'..'", ELPIS_TOOL_ERROR },
        { "{\"file_path\":\"link_out\"}", "outside", ELPIS_TOOL_ERROR },
        { "{\"file_path\":\"link_dir/secret.txt\"}", "outside", ELPIS_TOOL_ERROR },
        { "{\"file_path\":\"a.txt\",\"mode\":\"rb\"}", "unexpected argument 'mode'", ELPIS_TOOL_ERROR },
        { "{\"file_path\":7}", "must be a string", ELPIS_TOOL_ERROR },
        { "{}", "missing required argument 'file_path'", ELPIS_TOOL_ERROR },
        { "[1]", "not a JSON object", ELPIS_TOOL_ERROR },
        { "{\"file_path\":\"a.txt\",\"max_lines\":100001}", "max_lines", ELPIS_TOOL_ERROR },
        { "{\"file_path\":\"sub\"}", "not a regular file", ELPIS_TOOL_FAILED },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(C); i++) {
        json_t *env = run(f, "read_file", C[i].args, C[i].o);
        if (!strstr(err_of(env), C[i].why)) fprintf(stderr, "%s: %s\n", C[i].args, err_of(env));
        assert_non_null(strstr(err_of(env), C[i].why));
        char *dump = json_dumps(env, 0);
        assert_null(strstr(dump, "SECRET"));
        free(dump);
        json_decref(env);
    }
    f->ws.read_max_bytes = 10;   /* size cap */
    json_t *env = run(f, "read_file", "{\"file_path\":\"a.txt\"}", ELPIS_TOOL_FAILED);
    assert_non_null(strstr(err_of(env), "over 10 bytes"));
    json_decref(env);
    env = run(f, "no_such_tool", "{}", ELPIS_TOOL_ERROR);
    assert_non_null(strstr(err_of(env), "unknown tool"));
    json_decref(env);
}

/* ---- create_file and edit_file ---------------------------------------------------------------------- */

static void test_create_file(void **state) {
    fx *f = *state;
    json_t *env = run(f, "create_file", "{\"file_path\":\"new/deep/n.txt\",\"content\":\"x\\ny\\n\"}", ELPIS_TOOL_OK);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "lines_written")), 2);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "size_bytes")), 4);
    json_decref(env);
    char *t = read_text(f->ws_dir, "new/deep/n.txt");
    assert_string_equal(t, "x\ny\n");
    free(t);
    env = run(f, "create_file", "{\"file_path\":\"a.txt\",\"content\":\"clobber\"}", ELPIS_TOOL_FAILED);
    assert_non_null(strstr(err_of(env), "already exists"));
    json_decref(env);
    env = run(f, "create_file", "{\"file_path\":\"nodir/x.txt\",\"content\":\"\",\"create_dirs\":false}", ELPIS_TOOL_FAILED);
    assert_false(exists(f->ws_dir, "nodir"));
    json_decref(env);
    /* escapes: through a symlinked directory, a dangling symlink, '..' */
    json_decref(run(f, "create_file", "{\"file_path\":\"link_dir/planted.txt\",\"content\":\"x\"}", ELPIS_TOOL_ERROR));
    json_decref(run(f, "create_file", "{\"file_path\":\"dangling\",\"content\":\"x\"}", ELPIS_TOOL_ERROR));
    json_decref(run(f, "create_file", "{\"file_path\":\"../outside/planted.txt\",\"content\":\"x\"}", ELPIS_TOOL_ERROR));
    assert_false(exists(f->out_dir, "planted.txt"));
    assert_false(exists(f->out_dir, "nothing-yet"));
    f->ws.write_max_bytes = 3;
    json_decref(run(f, "create_file", "{\"file_path\":\"big.txt\",\"content\":\"four\"}", ELPIS_TOOL_ERROR));
    assert_false(exists(f->ws_dir, "big.txt"));
}

static void test_edit_file(void **state) {
    fx *f = *state;
    json_t *env = run(f, "edit_file", "{\"file_path\":\"a.txt\",\"old_string\":\"two\",\"new_string\":\"2 \\u00e9\"}", ELPIS_TOOL_OK);
    assert_true(json_is_true(json_object_get(res_of(env), "backup_created")));
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "chars_replaced")), 3);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "chars_inserted")), 3);
    json_decref(env);
    char *t = read_text(f->ws_dir, "a.txt"), *b = read_text(f->ws_dir, "a.txt.bak");
    assert_string_equal(t, "line one\nline 2 \xc3\xa9\nline three\n");
    assert_string_equal(b, "line one\nline two\nline three\n");
    free(t);
    free(b);
    env = run(f, "edit_file", "{\"file_path\":\"a.txt\",\"old_string\":\"line\",\"new_string\":\"x\"}", ELPIS_TOOL_FAILED);
    assert_non_null(strstr(err_of(env), "3 times"));
    json_decref(env);
    env = run(f, "edit_file", "{\"file_path\":\"a.txt\",\"old_string\":\"absent\",\"new_string\":\"x\"}", ELPIS_TOOL_FAILED);
    assert_non_null(strstr(err_of(env), "0 times"));
    json_decref(env);
    json_decref(run(f, "edit_file", "{\"file_path\":\"a.txt\",\"old_string\":\"\",\"new_string\":\"x\"}", ELPIS_TOOL_ERROR));
    json_decref(run(f, "edit_file", "{\"file_path\":\"link_out\",\"old_string\":\"TOP\",\"new_string\":\"x\"}", ELPIS_TOOL_ERROR));
    t = read_text(f->out_dir, "secret.txt");
    assert_string_equal(t, "TOP SECRET return 42\n");
    free(t);
    assert_false(exists(f->out_dir, "secret.txt.bak"));
}

static bool g_allow;
static char g_asked[256];
static bool confirm(void *ud, const char *tool, const char *detail) {
    (void)ud;
    snprintf(g_asked, sizeof g_asked, "%s|%s", tool, detail);
    return g_allow;
}

static void test_confirmation(void **state) {
    fx *f = *state;
    f->ws.confirm = confirm;
    g_allow = false;
    json_t *env = run(f, "create_file", "{\"file_path\":\"c.txt\",\"content\":\"abc\"}", ELPIS_TOOL_DECLINED);
    assert_string_equal(g_asked, "create_file|create c.txt (3 bytes)");
    assert_false(exists(f->ws_dir, "c.txt"));
    json_decref(env);
    json_decref(run(f, "execute_bash", "{\"command\":\"touch ran\"}", ELPIS_TOOL_DECLINED));
    assert_string_equal(g_asked, "execute_bash|$ touch ran");
    assert_false(exists(f->ws_dir, "ran"));
    g_asked[0] = 0;
    json_decref(run(f, "read_file", "{\"file_path\":\"a.txt\"}", ELPIS_TOOL_OK));   /* reads are not asked */
    json_decref(run(f, "execute_bash", "{\"command\":\"sudo true\"}", ELPIS_TOOL_ERROR));   /* blocked before asking */
    assert_string_equal(g_asked, "");
    g_allow = true;
    json_decref(run(f, "edit_file", "{\"file_path\":\"a.txt\",\"old_string\":\"one\",\"new_string\":\"1\"}", ELPIS_TOOL_OK));
    assert_string_equal(g_asked, "edit_file|edit a.txt");
}

/* ---- list_directory and search_codebase -------------------------------------------------------------- */

static void test_list_directory(void **state) {
    fx *f = *state;
    json_t *env = run(f, "list_directory", "{}", ELPIS_TOOL_OK), *r = res_of(env);
    json_t *files = json_object_get(r, "files"), *dirs = json_object_get(r, "directories");
    /* files: a.txt dangling link_dir link_in link_out (symlinks are not followed) ; dirs: .hidden sub */
    assert_int_equal(json_array_size(files), 5);
    assert_int_equal(json_array_size(dirs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(files, 0), "name")), "a.txt");
    assert_string_equal(json_string_value(json_object_get(json_array_get(files, 2), "type")), "symlink");
    assert_string_equal(json_string_value(json_object_get(json_array_get(dirs, 1), "path")), "sub");
    assert_int_equal(json_integer_value(json_object_get(r, "total_items")), 7);
    json_decref(env);
    env = run(f, "list_directory", "{\"recursive\":true,\"pattern\":\"*.c\"}", ELPIS_TOOL_OK);
    files = json_object_get(res_of(env), "files");
    assert_int_equal(json_array_size(files), 2);   /* .hidden/h.c, sub/b.c; never outside/ through link_dir */
    assert_string_equal(json_string_value(json_object_get(json_array_get(files, 1), "path")), "sub/b.c");
    json_decref(env);
    json_decref(run(f, "list_directory", "{\"dir_path\":\"link_dir\"}", ELPIS_TOOL_ERROR));
    json_decref(run(f, "list_directory", "{\"dir_path\":\"..\"}", ELPIS_TOOL_ERROR));
    json_decref(run(f, "list_directory", "{\"dir_path\":\"a.txt\"}", ELPIS_TOOL_FAILED));
    f->ws.list_max_items = 3;
    env = run(f, "list_directory", "{\"recursive\":true}", ELPIS_TOOL_OK);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "total_items")), 3);
    assert_true(json_is_true(json_object_get(res_of(env), "truncated")));
    json_decref(env);
}

static void test_search_codebase(void **state) {
    fx *f = *state;
    json_t *env = run(f, "search_codebase", "{\"pattern\":\"return \\\\d+\"}", ELPIS_TOOL_OK), *r = res_of(env);
    json_t *m = json_object_get(r, "matches");
    assert_int_equal(json_array_size(m), 1);   /* not .hidden/h.c, not outside/secret.txt via link_dir */
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "file")), "sub/b.c");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(m, 0), "line_number")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "match")), "return 42");
    json_decref(env);
    env = run(f, "search_codebase", "{\"pattern\":\"two\",\"context_lines\":1,\"file_glob\":\"*.txt\"}", ELPIS_TOOL_OK);
    m = json_array_get(json_object_get(res_of(env), "matches"), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(m, "before"), 0)), "line one");
    assert_string_equal(json_string_value(json_array_get(json_object_get(m, "after"), 0)), "line three");
    json_decref(env);
    env = run(f, "search_codebase", "{\"pattern\":\"zzz_absent\"}", ELPIS_TOOL_OK);   /* no match is a success */
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "match_count")), 0);
    json_decref(env);
    env = run(f, "search_codebase", "{\"pattern\":\"(unclosed\"}", ELPIS_TOOL_ERROR);
    assert_non_null(strstr(err_of(env), "bad pattern"));
    json_decref(env);
    json_decref(run(f, "search_codebase", "{\"pattern\":\"x\",\"context_lines\":11}", ELPIS_TOOL_ERROR));
    f->ws.search_max_matches = 1;
    env = run(f, "search_codebase", "{\"pattern\":\"line\"}", ELPIS_TOOL_OK);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "match_count")), 1);
    assert_true(json_is_true(json_object_get(res_of(env), "truncated")));
    json_decref(env);
}

/* ---- execute_bash ------------------------------------------------------------------------------------ */

static void test_bash_runs_in_workspace(void **state) {
    fx *f = *state;
    json_t *env = run(f, "execute_bash", "{\"command\":\"pwd; echo err >&2; printf ok\"}", ELPIS_TOOL_OK), *r = res_of(env);
    char want[PATH_MAX + 8];
    snprintf(want, sizeof want, "%s\nok", f->ws.root);
    assert_string_equal(json_string_value(json_object_get(r, "stdout")), want);
    assert_string_equal(json_string_value(json_object_get(r, "stderr")), "err\n");
    assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 0);
    json_decref(env);
    env = run(f, "execute_bash", "{\"command\":\"echo partial; exit 3\"}", ELPIS_TOOL_FAILED);
    assert_int_equal(json_integer_value(json_object_get(res_of(env), "exit_code")), 3);
    assert_string_equal(err_of(env), "exit code 3");
    json_decref(env);
    /* 2>/dev/null is allowed (the original refused every redirect near /dev/) */
    json_decref(run(f, "execute_bash", "{\"command\":\"ls nothing 2>/dev/null; true\"}", ELPIS_TOOL_OK));
}

static void test_bash_timeout_and_cap(void **state) {
    fx *f = *state;
    f->ws.bash_timeout_s = 0.3;
    double t0 = elpis_now_ms();
    json_t *env = run(f, "execute_bash", "{\"command\":\"sleep 5; echo never\"}", ELPIS_TOOL_FAILED);
    double ms = elpis_now_ms() - t0;
    assert_string_equal(err_of(env), "Timed out after 0.3s");
    assert_true(ms < 2000);
    json_decref(env);
    /* a background child holding the pipes is killed with its group at the deadline */
    t0 = elpis_now_ms();
    json_decref(run(f, "execute_bash", "{\"command\":\"(sleep 5) & sleep 5\"}", ELPIS_TOOL_FAILED));
    assert_true(elpis_now_ms() - t0 < 2000);
    f->ws.bash_timeout_s = 10;
    f->ws.output_cap = 1000;
    env = run(f, "execute_bash", "{\"command\":\"head -c 100000 /dev/zero | tr '\\\\0' x\"}", ELPIS_TOOL_OK);
    const char *out = json_string_value(json_object_get(res_of(env), "stdout"));
    assert_int_equal(strspn(out, "x"), 1000);
    assert_non_null(strstr(out, "[... 99000 more bytes not shown]"));
    json_decref(env);
    json_decref(run(f, "execute_bash", "{\"command\":\"\"}", ELPIS_TOOL_ERROR));
    char *longcmd = malloc(10020);
    strcpy(longcmd, "{\"command\":\"");
    memset(longcmd + 12, 'e', 10001);
    strcpy(longcmd + 12 + 10001, "\"}");
    json_decref(run(f, "execute_bash", longcmd, ELPIS_TOOL_ERROR));
    free(longcmd);
}

static int g_polls;
static int poll_stop(void *ud) {
    (void)ud;
    return ++g_polls > 3;   /* Ctrl+C after ~150 ms */
}

static void test_bash_interrupt(void **state) {
    fx *f = *state;
    f->ws.poll = poll_stop;
    g_polls = 0;
    double t0 = elpis_now_ms();
    json_t *env = run(f, "execute_bash", "{\"command\":\"sleep 5\"}", ELPIS_TOOL_FAILED);
    assert_true(elpis_now_ms() - t0 < 2000);
    assert_string_equal(err_of(env), "Interrupted by the user");
    json_decref(env);
}

static void test_bash_blocklist(void **state) {
    (void)state;
    static const char *const BAD[] = {
        "rm -rf /", "rm -rf ~/x", "rm -rf *", "mkfs.ext4 /dev/sdb", ":(){ :|:& };:", "dd if=/dev/zero of=f",
        "mv / /x", "chmod -R 777 /", "echo x > /dev/sda", "wget http://x", "curl http://x", "sudo ls", "chown -R me .",
        "shutdown now", "reboot", "poweroff", "init 0", "init 6",
        "rm  -rf   /tmp/x", "RM -RF /", "rm\t-rf /", "echo hi > /dev/sdb1", "cat x >> /dev/mem", "echo x > /",
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(BAD); i++) {
        if (!elpis_ws_bash_blocked(BAD[i])) fprintf(stderr, "not blocked: %s\n", BAD[i]);
        assert_non_null(elpis_ws_bash_blocked(BAD[i]));
    }
    static const char *const OK[] = { "ls -la", "rm -rf build", "echo x > out.txt", "make 2>/dev/null", "cmd >/dev/stderr",
                                      "grep -R sudoers .", "git status" };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(OK); i++) {
        if (elpis_ws_bash_blocked(OK[i])) fprintf(stderr, "blocked: %s (%s)\n", OK[i], elpis_ws_bash_blocked(OK[i]));
        assert_null(elpis_ws_bash_blocked(OK[i]));
    }
}

/* ---- the tool list ------------------------------------------------------------------------------------- */

static void test_tools_json_and_describe(void **state) {
    (void)state;
    json_t *t = elpis_ws_tools_json();
    static const char *const names[] = { "read_file", "create_file", "edit_file", "list_directory", "search_codebase", "execute_bash" };
    assert_int_equal(json_array_size(t), 6);
    for (size_t i = 0; i < 6; i++) {
        json_t *fn = json_object_get(json_array_get(t, i), "function");
        assert_string_equal(json_string_value(json_object_get(fn, "name")), names[i]);
        assert_string_equal(json_string_value(json_object_get(json_object_get(fn, "parameters"), "type")), "object");
    }
    json_t *bash = json_object_get(json_object_get(json_array_get(t, 5), "function"), "parameters");
    assert_string_equal(json_string_value(json_array_get(json_object_get(bash, "required"), 0)), "command");
    json_decref(t);
    char d[128];
    elpis_ws_describe("read_file", "{\"file_path\":\"src/a.c\"}", d, sizeof d);
    assert_string_equal(d, "Reading src/a.c");
    elpis_ws_describe("execute_bash", "{\"command\":\"0123456789012345678901234567890123456789TAIL\"}", d, sizeof d);
    assert_string_equal(d, "$ 0123456789012345678901234567890123456789...");
    elpis_ws_describe("list_directory", "{}", d, sizeof d);
    assert_string_equal(d, "Listing .");
}

/* ---- the agent runs a fake reply's calls ----------------------------------------------------------------- */

static int g_tool_events;
static void on_tool(void *ud, const elpis_tool_call *c, elpis_tool_state st, elpis_tool_outcome o, const char *summary) {
    (void)ud, (void)c, (void)o, (void)summary;
    g_tool_events += st == ELPIS_TOOL_DONE ? 10 : 1;
}

static void test_agent_runs_parsed_calls(void **state) {
    fx *f = *state;
    elpis_client cl;
    elpis_agent a;
    elpis_tool_calls calls = { 0 };
    elpis_agent_ui ui = { .tool = on_tool, .poll_fd = -1 };
    const char *reply = "Let me look.\n```tool_call\n{\"name\":\"list_directory\",\"arguments\":{}}\n```\n"
                        "```tool_call\n{\"name\":\"read_file\",\"arguments\":{\"file_path\":\"../outside/secret.txt\"}}\n```";
    assert_int_equal(elpis_client_init(&cl, "http://127.0.0.1:1", NULL, NULL), ELPIS_OK);   /* nothing listens: events fail quietly */
    assert_int_equal(elpis_agent_init(&a, &cl, &f->ws, NULL), ELPIS_OK);
    assert_int_equal(elpis_tool_calls_from_text(reply, &calls, NULL), ELPIS_OK);
    assert_int_equal(calls.n, 2);
    f->ws.result_max_chars = 60;
    g_tool_events = 0;
    elpis_agent_run_tools(&a, &calls, &ui);
    assert_int_equal(g_tool_events, 22);   /* running + done, twice */
    assert_int_equal(a.n_tool_calls, 2);
    assert_int_equal(json_array_size(a.messages), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *m = json_array_get(a.messages, i);
        assert_string_equal(json_string_value(json_object_get(m, "role")), "tool");
        assert_string_equal(json_string_value(json_object_get(m, "tool_call_id")), calls.v[i].id);
        assert_string_equal(json_string_value(json_object_get(m, "name")), calls.v[i].name);
    }
    const char *c0 = json_string_value(json_object_get(json_array_get(a.messages, 0), "content"));
    const char *c1 = json_string_value(json_object_get(json_array_get(a.messages, 1), "content"));
    assert_non_null(strstr(c0, "\"success\":true"));
    assert_non_null(strstr(c0, "[... result truncated at 60 characters]"));   /* the listing is longer */
    assert_non_null(strstr(c1, "\"success\":false"));
    assert_null(strstr(c1, "SECRET"));
    elpis_tool_calls_free(&calls);
    elpis_agent_free(&a);
    elpis_client_free(&cl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_file_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_confirmation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_codebase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bash_runs_in_workspace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bash_timeout_and_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bash_interrupt, setup, teardown),
        cmocka_unit_test(test_bash_blocklist),
        cmocka_unit_test(test_tools_json_and_describe),
        cmocka_unit_test_setup_teardown(test_agent_runs_parsed_calls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
