/* cmd_chat.c -- `elpis chat`: the terminal client.
 *
 *   elpis chat [--server URL] [--api-key K] [--workspace DIR] [--plain] [--yes]
 *   elpis chat -m MODEL [-c CTX] [-t THREADS] [--log-file F] [--data-dir DIR] ...
 *
 * With -m the server runs inside this process on a private loopback port
 * (port 0: the kernel picks) behind a random API key, so one command gives
 * a working chat and no other local client can use that server. Otherwise
 * the client connects to --server (default $ELPIS_SERVER, then
 * http://127.0.0.1:8741), checks /health (5 s) and exits 1 if it fails.
 *
 * Signals: SIGINT, SIGTERM and SIGWINCH are blocked while the in-process
 * server starts, so its threads inherit a mask without them and every
 * Ctrl+C reaches the client's thread. The handlers only count (SIGINT) or
 * set a flag (SIGTERM); the front ends look at the counters. SIGPIPE is
 * ignored. In the full-screen UI, stderr goes to a log file so diagnostics
 * from the engine cannot scribble over the screen.
 *
 * Front end: the full-screen UI when stdin and stdout are terminals, unless
 * --plain; otherwise plain line mode.
 *
 * Dreams: the client dreams after --dream-delay idle seconds (default 60 in
 * the full-screen UI; in plain mode only when the flag is given, so a script
 * never waits on a dream). The in-process server's own idle dream is off:
 * the client decides when to dream, and shows it. --data-dir is the
 * in-process server's --data-dir (emotion state and memories).
 */
#include "cli.h"

#include "elpis/chat_client.h"
#include "elpis/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t g_sigint, g_sigterm;

static void on_sigint(int s) { (void)s; g_sigint++; }
static void on_sigterm(int s) { (void)s; g_sigterm = 1; }

typedef struct chat_opts {
    const char *server, *api_key, *workspace, *model, *log_file, *system, *data_dir;
    double dream_delay_s;   /* < 0: not given */
    bool plain, yes, no_tools, thoughts;
    long ctx, threads, max_tokens;
    json_t *params;   /* --param KEY=VALUE */
} chat_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: elpis chat [options]\n\n"
            "  --server URL        server to talk to (default $ELPIS_SERVER, then http://127.0.0.1:%d)\n"
            "  --api-key K         API key for the server (default $ELPIS_API_KEY)\n"
            "  -m, --model MODEL   run a private in-process server with this GGUF model instead\n"
            "  -c, --ctx N         context size of the in-process server\n"
            "  -t, --threads N     threads of the in-process server\n"
            "  --log-file F        event log of the in-process server (default $XDG_STATE_HOME/elpis/chat-server.log)\n"
            "  --data-dir DIR      emotion state and memories of the in-process server (default $XDG_DATA_HOME/elpis)\n"
            "  --dream-delay S     dream after S idle seconds (default 60 full-screen, off in --plain; 0: never)\n"
            "  --workspace DIR     directory the model's tools may use (default .)\n"
            "  --no-tools          offer the model no tools\n"
            "  --yes               run commands and writes without asking\n"
            "  --plain             line mode (automatic when stdin or stdout is not a terminal)\n"
            "  --thoughts          show the model's reasoning from the start (/thoughts on)\n"
            "  --system TEXT       a system prompt for the conversation\n"
            "  --max-tokens N      reply length limit\n"
            "  --param KEY=VALUE   an extra request field (VALUE as JSON, else a string), e.g. temperature=0.2\n"
            "\nType /help in the chat for its commands. Ctrl+C interrupts a reply; twice when idle quits.\n",
            ELPIS_SERVER_DEFAULT_PORT);
}

/* ---- options -------------------------------------------------------------------------------------- */

static bool add_param(chat_opts *o, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return cli_error("chat", "--param: '%s' is not KEY=VALUE", kv), false;
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    json_error_t je;
    json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, &je);
    if (!v) v = json_string(eq + 1);
    return json_object_set_new(o->params, key, v) == 0;
}

/* 0: ok, 1: --help shown, 2: usage error */
static int parse(int argc, char **argv, chat_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
#define IS(x) (!strcmp(a, x))
        if (IS("-h") || IS("--help")) return usage(stdout), 1;
        else if (IS("--plain")) o->plain = true, takes = false;
        else if (IS("--yes") || IS("-y")) o->yes = true, takes = false;
        else if (IS("--no-tools")) o->no_tools = true, takes = false;
        else if (IS("--thoughts")) o->thoughts = true, takes = false;
        else if (!v) return cli_error("chat", "%s: missing value (or unknown option)", a), 2;
        else if (IS("--server")) o->server = v;
        else if (IS("--api-key")) o->api_key = v;
        else if (IS("--workspace")) o->workspace = v;
        else if (IS("-m") || IS("--model")) o->model = v;
        else if (IS("--log-file")) o->log_file = v;
        else if (IS("--data-dir")) o->data_dir = v;
        else if (IS("--dream-delay")) {
            long s;
            if (!cli_parse_int("chat", a, v, 0, 86400 * 7, &s)) return 2;
            o->dream_delay_s = (double)s;
        }
        else if (IS("--system")) o->system = v;
        else if (IS("-c") || IS("--ctx")) { if (!cli_parse_int("chat", a, v, 16, 1 << 20, &o->ctx)) return 2; }
        else if (IS("-t") || IS("--threads")) { if (!cli_parse_int("chat", a, v, 1, 1024, &o->threads)) return 2; }
        else if (IS("--max-tokens")) { if (!cli_parse_int("chat", a, v, 1, 1 << 30, &o->max_tokens)) return 2; }
        else if (IS("--param")) { if (!add_param(o, v)) return 2; }
        else return cli_error("chat", "unknown option '%s'", a), 2;
#undef IS
        if (takes) i++;
    }
    if (o->server && o->model) return cli_error("chat", "--server and -m exclude each other"), 2;
    if (o->data_dir && !o->model) return cli_error("chat", "--data-dir is for the in-process server (-m)"), 2;
    return 0;
}

/* ---- the in-process server ----------------------------------------------------------------------------- */

static char *default_log_file(void) {
    char buf[4096];
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (state && *state) snprintf(buf, sizeof buf, "%s/elpis/chat-server.log", state);
    else if (home && *home) snprintf(buf, sizeof buf, "%s/.local/state/elpis/chat-server.log", home);
    else snprintf(buf, sizeof buf, "/tmp/elpis-chat-server-%d.log", (int)getuid());
    return strdup(buf);
}

static char *random_key(void) {
    unsigned char r[16];
    char *k = malloc(40);
    if (!k || getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return free(k), NULL;
    strcpy(k, "chat-");
    for (int i = 0; i < 16; i++) sprintf(k + 5 + 2 * i, "%02x", r[i]);
    return k;
}

static elpis_status start_server(const chat_opts *o, elpis_server_config *cfg, elpis_server **srv, char **key, elpis_error *err) {
    const char *model = cli_model_path(o->model, "chat");
    if (!model) return elpis_fail(err, ELPIS_EINVAL, "no model");
    free(cfg->host);
    free(cfg->log_file);
    cfg->host = strdup("127.0.0.1");
    cfg->port = 0;
    cfg->log_file = o->log_file ? strdup(o->log_file) : default_log_file();
    cfg->model_path = strdup(model);
    if (o->ctx) cfg->ctx = (int32_t)o->ctx;
    if (o->threads) cfg->threads = (int32_t)o->threads;
    cfg->dream_delay_s = 0;   /* the client dreams (and shows it); the server must not dream behind its back */
    if (o->data_dir && !(cfg->psyche.data_dir = strdup(o->data_dir))) return elpis_fail(err, ELPIS_ENOMEM, "out of memory");
    *key = random_key();
    cfg->api_keys = calloc(2, sizeof *cfg->api_keys);
    if (!cfg->host || !cfg->log_file || !cfg->model_path || !*key || !cfg->api_keys || !(cfg->api_keys[0] = strdup(*key)))
        return elpis_fail(err, ELPIS_ENOMEM, "out of memory");
    cfg->n_api_keys = 1;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &set, &old);   /* the server's threads inherit this */
    elpis_status st = elpis_server_new(srv, cfg, err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return st;
}

static void install_signals(void) {
    struct sigaction sa = { 0 };
    sa.sa_handler = on_sigint;   /* no SA_RESTART: a blocked read or poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- connecting ------------------------------------------------------------------------------------------ */

/* /health within 5 s, then the model's name from /v1/models. */
static elpis_status connect_check(elpis_chat_app *app, char **model_name, elpis_error *err) {
    json_t *o = NULL;
    long status = 0;
    app->client.timeout_ms = 5000;
    elpis_status st = elpis_client_request(&app->client, "GET", "/health", NULL, &status, &o, err);
    json_decref(o);
    o = NULL;
    if (st == ELPIS_OK && status != 200) st = elpis_fail(err, ELPIS_EIO, "%s/health answered %ld", app->client.base, status);
    if (st == ELPIS_OK && elpis_client_request(&app->client, "GET", "/v1/models", NULL, &status, &o, NULL) == ELPIS_OK) {
        const char *id = json_string_value(json_object_get(json_array_get(json_object_get(o, "data"), 0), "id"));
        if (id) *model_name = strdup(id);
        if (status == 401) st = elpis_fail(err, ELPIS_EINVAL, "%s: the API key was refused (--api-key)", app->client.base);
    }
    json_decref(o);
    app->client.timeout_ms = 10000;
    return st;
}

/* mkdir -p of the directory part of path (best effort). */
static void make_parent_dirs(const char *path) {
    char dir[4400];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(dir, 0755);
        *p = '/';
    }
}

/* TUI: stderr to a file beside the server log, so nothing writes over the screen. */
static void redirect_stderr(const chat_opts *o) {
    char *log = o->log_file ? strdup(o->log_file) : default_log_file();
    if (!log) return;
    char path[4200];
    snprintf(path, sizeof path, "%s.stderr", log);
    make_parent_dirs(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 2);
        close(fd);
    }
    free(log);
}

static int run(const chat_opts *o, elpis_chat_app *app) {
    elpis_error err = { 0 };
    char *model_name = NULL;
    if (connect_check(app, &model_name, &err) != ELPIS_OK) {
        cli_error("chat", "cannot use the server: %s", err.msg);
        return CLI_EXIT_ERROR;
    }
    app->model_name = model_name;
    bool tui = !o->plain && isatty(0) && isatty(1);
    if (tui) redirect_stderr(o);
    app->dream_delay_s = o->dream_delay_s >= 0 ? o->dream_delay_s : tui ? 60 : 0;
    int rc = tui ? elpis_chat_run_tui(app) : elpis_chat_run_plain(app);
    app->model_name = NULL;
    free(model_name);
    return rc;
}

static elpis_status setup_app(const chat_opts *o, elpis_chat_app *app, const char *url, const char *key, elpis_error *err) {
    elpis_status st = elpis_client_init(&app->client, url, key, err);
    if (st == ELPIS_OK) st = elpis_ws_init(&app->ws, o->workspace ? o->workspace : ".", err);
    if (st == ELPIS_OK) st = elpis_agent_init(&app->agent, &app->client, o->no_tools ? NULL : &app->ws, err);
    if (st != ELPIS_OK) return st;
    app->tools = !o->no_tools;
    app->yes = o->yes;
    app->show_thoughts = o->thoughts;
    app->sigint = &g_sigint;
    app->sigterm = &g_sigterm;
    if (o->system && !(app->agent.system = strdup(o->system))) return elpis_fail(err, ELPIS_ENOMEM, "out of memory");
    json_object_update(app->agent.params, o->params);
    if (o->max_tokens) json_object_set_new(app->agent.params, "max_tokens", json_integer(o->max_tokens));
    return ELPIS_OK;
}

int cmd_chat(int argc, char **argv) {
    chat_opts o = { .params = json_object(), .dream_delay_s = -1 };
    elpis_server_config cfg;
    elpis_server *srv = NULL;
    elpis_chat_app app = { 0 };
    elpis_error err = { 0 };
    char *key = NULL, url[64];
    int rc = CLI_EXIT_USAGE;
    elpis_server_config_init(&cfg);
    int pr = o.params ? parse(argc, argv, &o) : 2;
    if (pr) {
        rc = pr == 1 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
        goto done;
    }
    rc = CLI_EXIT_ERROR;
    install_signals();
    const char *server = o.server ? o.server : getenv("ELPIS_SERVER");
    const char *api_key = o.api_key ? o.api_key : getenv("ELPIS_API_KEY");
    if (o.model) {
        elpis_log_set_level(ELPIS_LOG_WARN);
        if (start_server(&o, &cfg, &srv, &key, &err) != ELPIS_OK) {
            cli_error("chat", "in-process server: %s", err.msg);
            goto done;
        }
        snprintf(url, sizeof url, "http://127.0.0.1:%u", elpis_server_port(srv));
        server = url;
        api_key = key;
    } else if (!server || !*server) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d", ELPIS_SERVER_DEFAULT_PORT);
        server = url;
    }
    if (setup_app(&o, &app, server, api_key, &err) != ELPIS_OK) {
        cli_error("chat", "%s", err.msg);
        rc = err.code == ELPIS_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
        goto done;
    }
    app.in_process = srv != NULL;
    rc = run(&o, &app);
done:
    elpis_agent_free(&app.agent);
    elpis_client_free(&app.client);
    if (srv) elpis_server_shutdown(srv, "chat_exit");
    elpis_server_free(srv);
    elpis_server_config_free(&cfg);
    free(key);
    json_decref(o.params);
    return rc;
}
