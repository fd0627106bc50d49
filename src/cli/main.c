/* main.c -- the `elpis` command: dispatch to a subcommand. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    cli_cmd_fn fn;
    const char *help;
} commands[] = {
    { "run", cmd_run, "generate text from a prompt" },
    { "eval", cmd_eval, "print next-token probabilities for given token ids" },
    { "tokenize", cmd_tokenize, "print the token ids of a text" },
    { "info", cmd_info, "describe a model file" },
    { "serve", cmd_serve, "run the OpenAI-compatible HTTP server" },
    { "bench", cmd_bench, "measure prompt and generation speed" },
    { "mcp", cmd_mcp, "serve the Model Context Protocol over stdin/stdout" },
    { "chat", cmd_chat, "talk to a model in the terminal (tools, thoughts, emotion)" },
    { "memory", cmd_memory, "list, search, show, export and import memories" },
    { "vectors", cmd_vectors, "build emotion steering vectors (control-vector GGUF)" },
    { "mkmodel", cmd_mkmodel, "write a random-weight model of a given shape (for benchmarks)" },
};

static void usage(FILE *f) {
    fprintf(f, "usage: elpis COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(commands); i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'elpis COMMAND --help' for the options of a command.\n");
}

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "elpis %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

bool cli_parse_int(const char *cmd, const char *flag, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_error(cmd, "%s: '%s' is not an integer in %ld..%ld", flag, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_float(const char *cmd, const char *flag, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        cli_error(cmd, "%s: '%s' is not a number in %g..%g", flag, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

static bool file_exists(const char *p) { return access(p, R_OK) == 0; }

const char *cli_model_path(const char *flag_value, const char *cmd) {
    static char buf[PATH_MAX + 64];
    if (flag_value) return flag_value;
    const char *env = getenv("ELPIS_MODEL");
    if (env && *env) return env;
    const char *rel = "models/stories260K.gguf";
    const char *shared = getenv("ELPIS_SHARED");
    if (shared) {
        snprintf(buf, sizeof buf, "%s/%s", shared, rel);
        if (file_exists(buf)) return buf;
    }
    /* ../shared next to the checkout: from the repo root, or from the binary in build/ */
    snprintf(buf, sizeof buf, "../shared/%s", rel);
    if (file_exists(buf)) return buf;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(buf, sizeof buf, "%s/../../shared/%s", exe, rel);
        if (file_exists(buf)) return buf;
    }
    cli_error(cmd, "no model: pass -m MODEL.gguf or set ELPIS_MODEL");
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(commands); i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "elpis: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
