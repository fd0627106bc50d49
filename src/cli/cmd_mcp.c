/* cmd_mcp.c -- `elpis mcp`: the MCP server over stdin/stdout.
 *
 * Loads the model, starts the scheduler and the psyche (psyche.h: the
 * emotional state, steering vectors and the memory store with its own
 * embedder, in --data-dir, default $XDG_DATA_HOME/elpis; `--data-dir
 * :memory:` keeps nothing), then serves MCP until stdin reaches end of file
 * or SIGTERM/SIGINT arrives, and exits 0. [emotion] and [memory] come from
 * --config FILE and ELPIS_EMOTION__KEY / ELPIS_MEMORY__KEY, as for serve.
 *
 * stdout carries protocol messages only: nothing in this file prints to it,
 * and every diagnostic goes to stderr, which --log-file redirects.
 *
 * Teardown order matters: the scheduler is freed before the MCP server,
 * because its requests call back into the server until it is gone.
 */
#include "cli.h"

#include "elpis/mcp.h"
#include "elpis/model.h"
#include "elpis/psyche.h"
#include "elpis/sched.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CMD "mcp"

typedef struct mcp_opts {
    const char *model, *log_file, *data_dir, *config, *embedding_model;
    long parallel, ctx, threads;
    bool verbose;
    elpis_mcp_config cfg;
} mcp_opts;

static void mcp_usage(FILE *f) {
    fprintf(f,
            "usage: elpis mcp [-m MODEL] [--parallel N] [--ctx N] [--threads N] [--log-file F] [--data-dir DIR]\n"
            "                 [--config FILE] [--embedding-model GGUF] [--max-streams N] [--stream-ttl SECONDS]\n"
            "                 [--max-line BYTES] [--progress-ms MS] [--max-tokens N] [--verbose]\n"
            "\n"
            "Serve the Model Context Protocol over stdin/stdout (one JSON-RPC message per line).\n"
            "  --parallel N        sequences generating at once (default 4)\n"
            "  --ctx N             context positions per sequence (default: the model's, at most 4096)\n"
            "  --threads N         engine threads (default: all CPUs)\n"
            "  --log-file F        append logs to F instead of stderr\n"
            "  --data-dir DIR      emotional state and memories in DIR/elpis.db (default $XDG_DATA_HOME/elpis;\n"
            "                      :memory: keeps nothing)\n"
            "  --config FILE       INI file: [emotion] and [memory] sections (other sections are skipped)\n"
            "  --embedding-model G GGUF whose embeddings the memory store uses (default: the model)\n"
            "  --max-streams N     open generate_stream_* streams (default 100)\n"
            "  --stream-ttl S      drop a stream not read for S seconds (default 600)\n"
            "  --max-line BYTES    longest accepted message (default 4194304)\n"
            "  --progress-ms MS    least time between two progress notifications of a call (default 25)\n"
            "  --max-tokens N      max_tokens when a call gives none (default 2048)\n"
            "  --verbose           log every request\n");
}

static int parse_size_flag(const char *flag, const char *v, long min, long max, long *out) {
    return cli_parse_int(CMD, flag, v, min, max, out) ? 0 : CLI_EXIT_USAGE;
}

static int parse_mcp_opts(int argc, char **argv, mcp_opts *o) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },      { "parallel", required_argument, 0, 'P' },
        { "ctx", required_argument, 0, 'c' },        { "ctx-size", required_argument, 0, 'c' },
        { "threads", required_argument, 0, 't' },    { "log-file", required_argument, 0, 'L' },
        { "data-dir", required_argument, 0, 'D' },   { "max-streams", required_argument, 0, 'S' },
        { "stream-ttl", required_argument, 0, 'T' }, { "max-line", required_argument, 0, 'X' },
        { "progress-ms", required_argument, 0, 'G' }, { "max-tokens", required_argument, 0, 'N' },
        { "config", required_argument, 0, 'C' },     { "embedding-model", required_argument, 0, 'E' },
        { "verbose", no_argument, 0, 'v' },          { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    long l = 0;
    double d = 0;
    int c, rc = 0;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "m:c:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'P': rc = parse_size_flag("--parallel", optarg, 1, 256, &o->parallel); break;
        case 'c': rc = parse_size_flag("--ctx", optarg, 0, 1 << 20, &o->ctx); break;
        case 't': rc = parse_size_flag("--threads", optarg, 0, 256, &o->threads); break;
        case 'L': o->log_file = optarg; break;
        case 'D': o->data_dir = optarg; break;
        case 'C': o->config = optarg; break;
        case 'E': o->embedding_model = optarg; break;
        case 'S': rc = parse_size_flag("--max-streams", optarg, 0, 100000, &l); o->cfg.max_streams = (int32_t)l; break;
        case 'X': rc = parse_size_flag("--max-line", optarg, 1024, 1L << 30, &l); o->cfg.max_line = (size_t)l; break;
        case 'N': rc = parse_size_flag("--max-tokens", optarg, 1, 32768, &l); o->cfg.default_max_tokens = (int32_t)l; break;
        case 'T':
            if (!cli_parse_float(CMD, "--stream-ttl", optarg, 0.001, 604800, &d)) rc = CLI_EXIT_USAGE;
            o->cfg.stream_ttl_s = d;
            break;
        case 'G':
            if (!cli_parse_float(CMD, "--progress-ms", optarg, 0, 60000, &d)) rc = CLI_EXIT_USAGE;
            o->cfg.progress_interval_ms = d;
            break;
        case 'v': o->verbose = true; break;
        case 'h': mcp_usage(stdout); return -1;
        default: mcp_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (rc == 0 && optind < argc) { cli_error(CMD, "unexpected argument '%s'", argv[optind]); rc = CLI_EXIT_USAGE; }
    return rc;
}

/* ---- signals: SIGTERM/SIGINT stop the server like end of input ------------------ */

static elpis_mcp *volatile g_server;

static void on_signal(int sig) {
    (void)sig;
    if (g_server) elpis_mcp_stop(g_server);
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static bool redirect_log(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        cli_error(CMD, "--log-file %s: %s", path, strerror(errno));
        return false;
    }
    bool ok = dup2(fd, STDERR_FILENO) >= 0;
    close(fd);
    return ok;
}

/* ---- the command ---------------------------------------------------------------- */

typedef struct mcp_parts {
    elpis_model *model;
    elpis_sched *sched;
    elpis_psyche_config pc;
    elpis_psyche *psyche;
    elpis_mcp *server;
} mcp_parts;

/* Defaults < --config < environment < flags; relations checked at the end. */
static elpis_status psyche_config(const mcp_opts *o, elpis_psyche_config *pc, elpis_error *err) {
    elpis_status st;
    if (o->config && (st = elpis_psyche_config_file(pc, o->config, err)) != ELPIS_OK) return st;
    if ((st = elpis_psyche_config_env(pc, err)) != ELPIS_OK) return st;
    if ((o->data_dir && !(pc->data_dir = strdup(o->data_dir))) ||
        (o->embedding_model && !(pc->embedding_model = strdup(o->embedding_model))))
        return elpis_fail(err, ELPIS_ENOMEM, "config");
    return elpis_psyche_config_validate(pc, err);
}

static elpis_status start_parts(const mcp_opts *o, const char *path, mcp_parts *p, elpis_error *err) {
    elpis_status st;
    if ((st = elpis_model_load(&p->model, path, err)) != ELPIS_OK) return st;
    elpis_sched_params sp = elpis_sched_default_params();
    if (o->parallel > 0) sp.n_parallel = (int32_t)o->parallel;
    sp.n_ctx = (int32_t)o->ctx;
    sp.n_threads = (int32_t)o->threads;
    sp.n_queue = ELPIS_MAX(16, o->cfg.max_streams + sp.n_parallel);   /* every open stream can be queued */
    sp.stall_ms = 0;   /* the completion thread drains every request; nothing can stall */
    if ((st = elpis_psyche_open(&p->psyche, &p->pc, p->model, (int32_t)o->threads, err)) != ELPIS_OK) return st;
    elpis_log(ELPIS_LOG_INFO, "mcp event=psyche data_dir=%s steering=%s", p->psyche->data_dir,
              p->psyche->vectors && elpis_emotion_config_steering(&p->pc.emotion) ? "on" : "off");
    if ((st = elpis_sched_new(&p->sched, p->model, &sp, err)) != ELPIS_OK) return st;
    elpis_mcp_config mc = o->cfg;
    mc.model_path = path;
    if ((st = elpis_mcp_new(&p->server, &mc, p->sched, p->psyche->emotion, err)) != ELPIS_OK) return st;
    elpis_mcp_set_steering(p->server, p->psyche->vectors);
    return elpis_mcp_set_memory(p->server, p->psyche->memory, err);
}

static void stop_parts(mcp_parts *p) {
    g_server = NULL;
    elpis_sched_free(p->sched);   /* first: no more callbacks into the server */
    elpis_mcp_free(p->server);
    elpis_psyche_close(p->psyche);
    elpis_psyche_config_free(&p->pc);
    elpis_model_free(p->model);
}

int cmd_mcp(int argc, char **argv) {
    mcp_opts o = { 0 };
    elpis_mcp_config_default(&o.cfg);
    int prc = parse_mcp_opts(argc, argv, &o);
    if (prc != 0) return prc < 0 ? CLI_EXIT_OK : prc;
    const char *path = cli_model_path(o.model, CMD);
    if (!path) return CLI_EXIT_USAGE;
    if (o.log_file && !redirect_log(o.log_file)) return CLI_EXIT_ERROR;
    if (o.verbose) elpis_log_set_level(ELPIS_LOG_DEBUG);
    signal(SIGPIPE, SIG_IGN);   /* a vanished client shows up as EPIPE on write */

    mcp_parts p = { 0 };
    elpis_error err = { 0 };
    int rc = CLI_EXIT_OK;
    elpis_psyche_config_init(&p.pc);
    if (psyche_config(&o, &p.pc, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        elpis_psyche_config_free(&p.pc);
        return CLI_EXIT_USAGE;
    }
    if (start_parts(&o, path, &p, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        rc = CLI_EXIT_ERROR;
    } else {
        g_server = p.server;
        install_signals();
        elpis_log(ELPIS_LOG_INFO, "mcp event=ready model=%s", path);
        if (elpis_mcp_serve(p.server, STDIN_FILENO, STDOUT_FILENO, &err) != ELPIS_OK) {
            cli_error(CMD, "%s", err.msg);
            rc = CLI_EXIT_ERROR;
        }
    }
    stop_parts(&p);
    return rc;
}
