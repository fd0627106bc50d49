/* cmd_eval.c -- `elpis eval`: teacher-forced next-token probabilities.
 *
 * Evaluates exactly the given ids (no BOS added) as one batch and prints, for
 * each position, the K most likely next tokens with their plain softmax
 * probabilities (no temperature, no penalties). With --exact the reference
 * path runs (dequantized weights, F32 activations and KV cache). This is how
 * the engine's correctness is measured against llama.cpp and exact math.
 */
#include "cli.h"

#include "elpis/model.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_MAX_TOKENS 65536

static void eval_usage(FILE *f) {
    fprintf(f, "usage: elpis eval [-m MODEL] --tokens ID,ID,... [--top K] [--exact] [-t THREADS]\n");
}

static bool parse_ids(const char *s, elpis_tokens *out) {
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || out->n >= EVAL_MAX_TOKENS) return false;
        if (elpis_tokens_push(out, (int32_t)v) != ELPIS_OK) return false;
        s = end;
        if (*s == ',') s++;
        else if (*s) return false;
    }
    return out->n > 0;
}

/* Softmax of `logits` into `probs` in double precision, then print the top K. */
static void print_top(int pos, const float *logits, int n_vocab, int k, double *probs, int32_t *idx) {
    float mx = -INFINITY;
    for (int i = 0; i < n_vocab; i++) if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += probs[i] = exp((double)logits[i] - mx);
    for (int i = 0; i < n_vocab; i++) probs[i] /= sum;
    /* selection of the top k (k is small) */
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n_vocab; i++) {
            bool taken = false;
            for (int t = 0; t < j && !taken; t++) taken = idx[t] == i;
            if (!taken && (best < 0 || probs[i] > probs[best])) best = i;
        }
        idx[j] = best;
    }
    printf("{\"pos\":%d,\"top\":[", pos);
    for (int j = 0; j < k; j++) printf("%s[%d,%.9g]", j ? "," : "", idx[j], probs[idx[j]]);
    printf("]}\n");
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' }, { "tokens", required_argument, 0, 'T' },
        { "top", required_argument, 0, 'k' },   { "exact", no_argument, 0, 'x' },
        { "threads", required_argument, 0, 't' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    const char *model_flag = NULL, *tokens_arg = NULL;
    long top = 10, threads = 0;
    bool exact = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_flag = optarg; break;
        case 'T': tokens_arg = optarg; break;
        case 'k': if (!cli_parse_int("eval", "--top", optarg, 1, 1000, &top)) return CLI_EXIT_USAGE; break;
        case 't': if (!cli_parse_int("eval", "--threads", optarg, 0, 256, &threads)) return CLI_EXIT_USAGE; break;
        case 'x': exact = true; break;
        case 'h': eval_usage(stdout); return CLI_EXIT_OK;
        default: eval_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    elpis_tokens ids = { 0 };
    if (!tokens_arg || !parse_ids(tokens_arg, &ids)) {
        cli_error("eval", "--tokens needs a comma-separated list of 1..%d token ids", EVAL_MAX_TOKENS);
        elpis_tokens_free(&ids);
        return CLI_EXIT_USAGE;
    }
    const char *path = cli_model_path(model_flag, "eval");
    if (!path) { elpis_tokens_free(&ids); return CLI_EXIT_USAGE; }

    int rc = CLI_EXIT_ERROR;
    elpis_error err = { 0 };
    elpis_model *m = NULL;
    elpis_ctx *ctx = NULL;
    int32_t *pos = NULL, *seq = NULL, *idx = NULL;
    bool *want = NULL;
    double *probs = NULL;
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) { cli_error("eval", "%s", err.msg); goto done; }
    const int n = (int)ids.n, n_vocab = m->hp.n_vocab;
    if (top > n_vocab) top = n_vocab;
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = n;
    cp.n_batch = n;
    cp.n_outputs = n;
    cp.n_threads = (int32_t)threads;
    cp.exact = exact;
    if (elpis_ctx_new(&ctx, m, &cp, &err) != ELPIS_OK) { cli_error("eval", "%s", err.msg); goto done; }
    pos = calloc((size_t)n, sizeof *pos);
    seq = calloc((size_t)n, sizeof *seq);
    want = calloc((size_t)n, sizeof *want);
    probs = calloc((size_t)n_vocab, sizeof *probs);
    idx = calloc((size_t)top, sizeof *idx);
    if (!pos || !seq || !want || !probs || !idx) { cli_error("eval", "out of memory"); goto done; }
    for (int i = 0; i < n; i++) { pos[i] = i; want[i] = true; }
    elpis_batch b = { .n = n, .token = ids.ids, .pos = pos, .seq = seq, .logits = want };
    if (elpis_forward(ctx, &b, &err) != ELPIS_OK) { cli_error("eval", "%s", err.msg); goto done; }
    for (int i = 0; i < n; i++) print_top(i, elpis_ctx_logits(ctx, i), n_vocab, (int)top, probs, idx);
    rc = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
done:
    free(pos); free(seq); free(want); free(probs); free(idx);
    elpis_tokens_free(&ids);
    elpis_ctx_free(ctx);
    elpis_model_free(m);
    return rc;
}
