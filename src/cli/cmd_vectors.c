/* cmd_vectors.c -- `elpis vectors build`: make an emotion steering vector.
 *
 *   elpis vectors build -m MODEL --positive FILE --negative FILE -o OUT.gguf
 *                       [--layers A-B] [-t THREADS]
 *
 * Each non-empty line of FILE is one prompt. The direction for each layer is
 * the unit-length difference of the mean hidden states of the two sets
 * (elpis_cvec_build), written as a llama.cpp control-vector GGUF that both
 * Elpis ([emotion] vectors_<quadrant>) and llama.cpp (--control-vector) load.
 * --layers keeps direction.A..direction.B (inclusive, 1..n_layer-1; default
 * all).
 */
#include "cli.h"

#include "elpis/emotion.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VECTORS_MAX_FILE (64u << 20)

static void vectors_usage(FILE *f) {
    fprintf(f, "usage: elpis vectors build [-m MODEL] --positive FILE --negative FILE -o OUT.gguf [--layers A-B] "
               "[-t THREADS]\n");
}

typedef struct prompt_lines {
    char *text;            /* the file, lines cut in place */
    const char **lines;
    size_t n;
} prompt_lines;

/* Read FILE and cut it into its non-empty lines (CR LF tolerated). */
static bool read_lines(const char *path, prompt_lines *out) {
    elpis_error err = { 0 };
    size_t len;
    if (elpis_read_file(path, VECTORS_MAX_FILE, &out->text, &len, &err) != ELPIS_OK) {
        cli_error("vectors", "%s", err.msg);
        return false;
    }
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += out->text[i] == '\n';
    if (!(out->lines = calloc(cap, sizeof *out->lines))) { cli_error("vectors", "out of memory"); return false; }
    for (char *line = out->text; line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        if (n && strspn(line, " \t") < n) out->lines[out->n++] = line;
        line = nl ? nl + 1 : NULL;
    }
    if (out->n == 0) { cli_error("vectors", "%s: no prompts (one per line)", path); return false; }
    return true;
}

static void lines_free(prompt_lines *p) {
    free(p->text);
    free(p->lines);
}

static bool parse_layers(const char *s, long *a, long *b) {
    char *end;
    *a = strtol(s, &end, 10);
    if (end == s || *end != '-') return false;
    const char *s2 = end + 1;
    *b = strtol(s2, &end, 10);
    return end != s2 && !*end && *a >= 1 && *b >= *a;
}

static int vectors_build(int argc, char **argv) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },    { "positive", required_argument, 0, 'P' },
        { "negative", required_argument, 0, 'N' }, { "output", required_argument, 0, 'o' },
        { "layers", required_argument, 0, 'L' },   { "threads", required_argument, 0, 't' },
        { "help", no_argument, 0, 'h' },           { 0, 0, 0, 0 },
    };
    const char *model_flag = NULL, *pos_path = NULL, *neg_path = NULL, *out_path = NULL;
    long la = 0, lb = 0, threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_flag = optarg; break;
        case 'P': pos_path = optarg; break;
        case 'N': neg_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'L':
            if (!parse_layers(optarg, &la, &lb)) {
                cli_error("vectors", "--layers: '%s' is not A-B with 1 <= A <= B", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 't': if (!cli_parse_int("vectors", "--threads", optarg, 0, 256, &threads)) return CLI_EXIT_USAGE; break;
        case 'h': vectors_usage(stdout); return CLI_EXIT_OK;
        default: vectors_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (!pos_path || !neg_path || !out_path || optind != argc) {
        cli_error("vectors", "build needs --positive FILE, --negative FILE and -o OUT.gguf");
        vectors_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *model_path = cli_model_path(model_flag, "vectors");
    if (!model_path) return CLI_EXIT_USAGE;

    int rc = CLI_EXIT_ERROR;
    prompt_lines pos = { 0 }, neg = { 0 };
    elpis_model *m = NULL;
    float *dirs = NULL;
    elpis_error err = { 0 };
    if (!read_lines(pos_path, &pos) || !read_lines(neg_path, &neg)) goto done;
    if (elpis_model_load(&m, model_path, &err) != ELPIS_OK) { cli_error("vectors", "%s", err.msg); goto done; }
    if (lb > m->hp.n_layer - 1) {
        cli_error("vectors", "--layers: %ld-%ld is outside 1..%d for this model", la, lb, m->hp.n_layer - 1);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if (!(dirs = calloc((size_t)m->hp.n_layer * m->hp.n_embd, sizeof *dirs))) {
        cli_error("vectors", "out of memory");
        goto done;
    }
    elpis_cvec_build_params bp = { .positive = pos.lines, .n_positive = pos.n, .negative = neg.lines,
                                   .n_negative = neg.n, .n_threads = (int32_t)threads };
    if (elpis_cvec_build(m, &bp, dirs, &err) != ELPIS_OK ||
        elpis_cvec_write(out_path, elpis_arch_name(m->hp.arch), m->hp.n_layer, m->hp.n_embd, dirs, (int32_t)la,
                         (int32_t)lb, &err) != ELPIS_OK) {
        cli_error("vectors", "%s", err.msg);
        goto done;
    }
    fprintf(stderr, "elpis vectors: wrote %s (%zu positive, %zu negative prompts)\n", out_path, pos.n, neg.n);
    rc = CLI_EXIT_OK;
done:
    free(dirs);
    elpis_model_free(m);
    lines_free(&pos);
    lines_free(&neg);
    return rc;
}

int cmd_vectors(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "build")) return vectors_build(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { vectors_usage(stdout); return CLI_EXIT_OK; }
    vectors_usage(stderr);
    return CLI_EXIT_USAGE;
}
