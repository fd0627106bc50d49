/* cmd_tokenize.c -- `elpis tokenize`: text to token ids.
 *
 *   elpis tokenize -m MODEL [--no-bos] [--special] TEXT   ids on one line
 *   elpis tokenize -m MODEL --inp FILE.inp                llama.cpp's test format
 *
 * The .inp file holds strings separated by lines of exactly
 * "__ggml_vocab_test__"; for each string one line of ids is printed, each id
 * preceded by a space, without BOS and without special-token parsing: the
 * .out format of llama.cpp's tokenizer tests. Only the tokenizer is loaded
 * (no context), so vocab-only GGUF files work too.
 */
#include "cli.h"

#include "elpis/gguf.h"
#include "elpis/tokenizer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INP_SEPARATOR "\n__ggml_vocab_test__\n"
#define INP_MAX_BYTES (64u << 20)

static void tok_usage(FILE *f) {
    fprintf(f, "usage: elpis tokenize [-m MODEL] [--no-bos] [--special] TEXT\n"
               "       elpis tokenize [-m MODEL] --inp FILE.inp\n");
}

static elpis_status print_ids(const elpis_vocab *v, const char *s, size_t len, bool bos, bool special,
                              bool out_format, elpis_error *err) {
    elpis_tokens t = { 0 };
    elpis_status st = elpis_tokenize(v, s, len, bos, special, &t, err);
    if (st == ELPIS_OK) {
        for (size_t i = 0; i < t.n; i++) printf(out_format || i ? " %d" : "%d", t.ids[i]);
        putchar('\n');
    }
    elpis_tokens_free(&t);
    return st;
}

/* Each string ends at the next separator; the file ends with one. */
static elpis_status run_inp(const elpis_vocab *v, const char *path, elpis_error *err) {
    char *data = NULL;
    size_t len = 0;
    elpis_status st = elpis_read_file(path, INP_MAX_BYTES, &data, &len, err);
    if (st != ELPIS_OK) return st;
    const size_t seplen = strlen(INP_SEPARATOR);
    const char *p = data, *end = data + len;
    while (p < end && st == ELPIS_OK) {
        const char *sep = memmem(p, (size_t)(end - p), INP_SEPARATOR, seplen);
        if (!sep) break; /* trailing text after the last separator is not a test string */
        st = print_ids(v, p, (size_t)(sep - p), false, false, true, err);
        p = sep + seplen;
    }
    free(data);
    return st;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' }, { "no-bos", no_argument, 0, 'B' },
        { "special", no_argument, 0, 's' },     { "inp", required_argument, 0, 'i' },
        { "help", no_argument, 0, 'h' },        { 0, 0, 0, 0 },
    };
    const char *model_flag = NULL, *inp = NULL;
    bool bos = true, special = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_flag = optarg; break;
        case 'B': bos = false; break;
        case 's': special = true; break;
        case 'i': inp = optarg; break;
        case 'h': tok_usage(stdout); return CLI_EXIT_OK;
        default: tok_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (!inp && optind != argc - 1) { tok_usage(stderr); return CLI_EXIT_USAGE; }
    const char *path = cli_model_path(model_flag, "tokenize");
    if (!path) return CLI_EXIT_USAGE;

    int rc = CLI_EXIT_ERROR;
    elpis_error err = { 0 };
    gguf_file *g = NULL;
    elpis_vocab *v = NULL;
    if (gguf_open(&g, path, &err) != ELPIS_OK || elpis_vocab_load(&v, g, &err) != ELPIS_OK) goto fail;
    elpis_status st = inp ? run_inp(v, inp, &err)
                          : print_ids(v, argv[optind], strlen(argv[optind]), bos, special, false, &err);
    if (st != ELPIS_OK) goto fail;
    rc = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
    goto done;
fail:
    cli_error("tokenize", "%s", err.msg);
done:
    elpis_vocab_free(v);
    gguf_close(g);
    return rc;
}
