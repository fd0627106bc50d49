/* cmd_bench.c -- `elpis bench`: prompt and generation throughput, llama-bench style.
 *
 *   pp  : one batch of -p prompt tokens on an empty sequence      (tok/s)
 *   tg  : -n tokens generated one at a time after a 1-token prompt (tok/s)
 *   agg : --streams N sequences decoding together, one batched
 *         forward per step, -n tokens each                         (total tok/s)
 *
 * Each figure is the median of -r repeats. Token ids are deterministic
 * pseudo-random (like the peer scripts'), so runs are comparable. The engine
 * is driven directly: this measures kernels and batching, not HTTP.
 */
#include "cli.h"

#include "elpis/model.h"
#include "elpis/pool.h"

#include <getopt.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

typedef struct bench_opts {
    const char *model;
    long n_prompt, n_gen, threads, streams, repeats;
    bool json;
} bench_opts;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int32_t bench_token(const elpis_model *m, long i) {
    int32_t v = m->hp.n_vocab;
    return (int32_t)((1000 + (i * 7919) % 20000) % (v > 1 ? v - 1 : 1)) + (v > 1);
}

/* One forward over n tokens, one per sequence or all in sequence 0. */
static elpis_status run_batch(elpis_ctx *c, int n, const int32_t *tok, const int32_t *pos, const int32_t *seq,
                              const bool *logits, elpis_error *err) {
    elpis_batch b = { .n = n, .token = tok, .pos = pos, .seq = seq, .logits = logits };
    return elpis_forward(c, &b, err);
}

static elpis_status bench_pp(elpis_ctx *c, const elpis_model *m, int np, double *tok_s, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    int32_t *tok = malloc((size_t)np * sizeof *tok), *pos = malloc((size_t)np * sizeof *pos), *seq = calloc((size_t)np, sizeof *seq);
    if (!tok || !pos || !seq) { st = elpis_fail(err, ELPIS_ENOMEM, "bench buffers"); goto done; }
    for (int i = 0; i < np; i++) { tok[i] = bench_token(m, i); pos[i] = i; }
    elpis_kv_seq_truncate(c, 0, 0);
    double t0 = elpis_now_ms();
    if ((st = run_batch(c, np, tok, pos, seq, NULL, err)) != ELPIS_OK) goto done;
    *tok_s = np / ((elpis_now_ms() - t0) / 1e3);
done:
    free(tok); free(pos); free(seq);
    return st;
}

/* ns sequences, each fed one prompt token then decoded ng steps (greedy ids
 * don't matter for speed: feed a fixed pseudo-random sequence). */
static elpis_status bench_decode(elpis_ctx *c, const elpis_model *m, int ns, int ng, double *tok_s, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    int32_t tok[256], pos[256], seq[256];
    bool logits[256];
    for (int s = 0; s < ns; s++) {
        elpis_kv_seq_truncate(c, s, 0);
        tok[s] = bench_token(m, 31 * s);
        pos[s] = 0;
        seq[s] = s;
        logits[s] = true;
    }
    if ((st = run_batch(c, ns, tok, pos, seq, logits, err)) != ELPIS_OK) return st;
    double t0 = elpis_now_ms();
    for (int step = 1; step <= ng; step++) {
        for (int s = 0; s < ns; s++) { tok[s] = bench_token(m, step + 31 * s); pos[s] = step; }
        if ((st = run_batch(c, ns, tok, pos, seq, logits, err)) != ELPIS_OK) return st;
    }
    *tok_s = (double)ns * ng / ((elpis_now_ms() - t0) / 1e3);
    return ELPIS_OK;
}

static int parse_bench(int argc, char **argv, bench_opts *o) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' }, { "n-prompt", required_argument, 0, 'p' },
        { "n-gen", required_argument, 0, 'n' }, { "threads", required_argument, 0, 't' },
        { "streams", required_argument, 0, 's' }, { "repeats", required_argument, 0, 'r' },
        { "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:t:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': if (!cli_parse_int("bench", "-p", optarg, 1, 8192, &o->n_prompt)) return CLI_EXIT_USAGE; break;
        case 'n': if (!cli_parse_int("bench", "-n", optarg, 1, 8192, &o->n_gen)) return CLI_EXIT_USAGE; break;
        case 't': if (!cli_parse_int("bench", "-t", optarg, 0, 256, &o->threads)) return CLI_EXIT_USAGE; break;
        case 's': if (!cli_parse_int("bench", "--streams", optarg, 1, 256, &o->streams)) return CLI_EXIT_USAGE; break;
        case 'r': if (!cli_parse_int("bench", "-r", optarg, 1, 1000, &o->repeats)) return CLI_EXIT_USAGE; break;
        case 'j': o->json = true; break;
        case 'h':
            printf("usage: elpis bench [-m MODEL] [-p 128] [-n 64] [-t THREADS] [--streams N] [-r REPEATS] [--json]\n");
            return -1;
        default: return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = { .n_prompt = 128, .n_gen = 64, .streams = 1, .repeats = 5 };
    int prc = parse_bench(argc, argv, &o);
    if (prc != CLI_EXIT_OK) return prc < 0 ? CLI_EXIT_OK : prc;
    const char *path = cli_model_path(o.model, "bench");
    if (!path) return CLI_EXIT_USAGE;
    int rc = CLI_EXIT_ERROR, R = (int)o.repeats;
    elpis_error err = { 0 };
    elpis_model *m = NULL;
    elpis_ctx *c = NULL;
    double *pp = calloc((size_t)R, sizeof *pp), *tg = calloc((size_t)R, sizeof *tg), *agg = calloc((size_t)R, sizeof *agg);
    if (!pp || !tg || !agg) { cli_error("bench", "out of memory"); goto done; }
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) goto fail;
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = (int32_t)ELPIS_MAX(o.n_prompt, o.n_gen + 1) + 8;
    cp.n_seq = (int32_t)o.streams;
    cp.n_batch = (int32_t)ELPIS_MAX(o.n_prompt, o.streams);
    cp.n_outputs = (int32_t)o.streams;
    cp.n_threads = (int32_t)o.threads;
    if (elpis_ctx_new(&c, m, &cp, &err) != ELPIS_OK) goto fail;
    if (bench_decode(c, m, 1, 4, &tg[0], &err) != ELPIS_OK) goto fail;   /* warm-up: page in the weights */
    for (int r = 0; r < R; r++) {
        if (bench_pp(c, m, (int)o.n_prompt, &pp[r], &err) != ELPIS_OK) goto fail;
        if (bench_decode(c, m, 1, (int)o.n_gen, &tg[r], &err) != ELPIS_OK) goto fail;
        if (o.streams > 1 && bench_decode(c, m, (int)o.streams, (int)o.n_gen, &agg[r], &err) != ELPIS_OK) goto fail;
        if (o.streams == 1) agg[r] = tg[r];
    }
    double mpp = median(pp, R), mtg = median(tg, R), magg = median(agg, R);
    /* Memory: peak resident set against the file and the context (KV cache + scratch). */
    struct rusage ru;
    struct stat sb;
    getrusage(RUSAGE_SELF, &ru);
    const double rss = ru.ru_maxrss / 1024.0, file = stat(path, &sb) == 0 ? sb.st_size / 1048576.0 : 0,
                 ctx = elpis_ctx_bytes(c) / 1048576.0;
    if (o.json) {
        printf("{\"engine\":\"elpis\",\"model\":\"%s\",\"kernels\":\"%s\",\"threads\":%d,\"n_prompt\":%ld,\"n_gen\":%ld,"
               "\"pp_tok_s\":%.2f,\"tg_tok_s\":%.2f,\"streams\":%ld,\"agg_tok_s\":%.2f,"
               "\"peak_rss_mib\":%.1f,\"file_mib\":%.1f,\"ctx_mib\":%.1f}\n",
               m->name, elpis_kernels_get()->name, elpis_ctx_params_of(c)->n_threads ? elpis_ctx_params_of(c)->n_threads : elpis_cpu_count(),
               o.n_prompt, o.n_gen, mpp, mtg, o.streams, magg, rss, file, ctx);
    } else {
        printf("model: %s (%.1f MiB), kernels: %s, repeats: %d (medians)\n", m->name, m->weight_bytes / 1048576.0,
               elpis_kernels_get()->name, R);
        printf("pp%-5ld %10.2f tok/s\ntg%-5ld %10.2f tok/s\n", o.n_prompt, mpp, o.n_gen, mtg);
        if (o.streams > 1) printf("agg x%-3ld %9.2f tok/s total\n", o.streams, magg);
        printf("peak RSS %.1f MiB = file %.1f + context (KV + scratch) %.1f + other %.1f MiB\n", rss, file, ctx,
               rss - file - ctx);
    }
    rc = CLI_EXIT_OK;
    goto done;
fail:
    cli_error("bench", "%s", err.msg);
done:
    free(pp); free(tg); free(agg);
    elpis_ctx_free(c);
    elpis_model_free(m);
    return rc;
}
