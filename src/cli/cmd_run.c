/* cmd_run.c -- `elpis run`: one-shot generation, streamed to stdout.
 *
 * Prints the prompt, then each generated piece as soon as it is complete
 * UTF-8 (like llama2.c's run). BOS is added per the model's metadata; -n
 * counts generated tokens. With --chat the prompt becomes one user message
 * rendered with the model's chat template, and only the reply is printed.
 * Generation stops at -n tokens, an end-of-generation token, or a full context.
 */
#include "cli.h"

#include "elpis/chat.h"
#include "elpis/model.h"
#include "elpis/sampler.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUN_BATCH 512  /* prompt tokens per forward call */

typedef struct run_opts {
    const char *model, *prompt, *system;
    long n_predict, threads, ctx;
    bool chat, seed_set;
    elpis_sampler_params sp;
} run_opts;

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: elpis run [-m MODEL] -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
            "                 [--repeat-penalty R] [--seed S] [--chat] [--system TEXT] [-c CTX] [-t THREADS]\n");
}

static int parse_run_opts(int argc, char **argv, run_opts *o) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' },  { "prompt", required_argument, 0, 'p' },
        { "n-predict", required_argument, 0, 'n' }, { "temp", required_argument, 0, 'T' },
        { "top-k", required_argument, 0, 'K' },  { "top-p", required_argument, 0, 'P' },
        { "min-p", required_argument, 0, 'M' },  { "repeat-penalty", required_argument, 0, 'R' },
        { "seed", required_argument, 0, 'S' },   { "chat", no_argument, 0, 'C' },
        { "system", required_argument, 0, 'Y' }, { "ctx-size", required_argument, 0, 'c' },
        { "threads", required_argument, 0, 't' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    double d;
    long l;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'n': if (!cli_parse_int("run", "-n", optarg, 0, 1 << 24, &o->n_predict)) return CLI_EXIT_USAGE; break;
        case 'c': if (!cli_parse_int("run", "--ctx-size", optarg, 0, 1 << 24, &o->ctx)) return CLI_EXIT_USAGE; break;
        case 't': if (!cli_parse_int("run", "--threads", optarg, 0, 256, &o->threads)) return CLI_EXIT_USAGE; break;
        case 'T': if (!cli_parse_float("run", "--temp", optarg, 0, 100, &d)) return CLI_EXIT_USAGE; o->sp.temperature = (float)d; break;
        case 'K': if (!cli_parse_int("run", "--top-k", optarg, 0, 1 << 24, &l)) return CLI_EXIT_USAGE; o->sp.top_k = (int32_t)l; break;
        case 'P': if (!cli_parse_float("run", "--top-p", optarg, 0, 1, &d)) return CLI_EXIT_USAGE; o->sp.top_p = (float)d; break;
        case 'M': if (!cli_parse_float("run", "--min-p", optarg, 0, 1, &d)) return CLI_EXIT_USAGE; o->sp.min_p = (float)d; break;
        case 'R': if (!cli_parse_float("run", "--repeat-penalty", optarg, 0, 100, &d)) return CLI_EXIT_USAGE; o->sp.repeat_penalty = (float)d; break;
        case 'S': if (!cli_parse_int("run", "--seed", optarg, 0, 0x7fffffffffffffffL, &l)) return CLI_EXIT_USAGE; o->sp.seed = (uint64_t)l; o->seed_set = true; break;
        case 'C': o->chat = true; break;
        case 'Y': o->system = optarg; break;
        case 'h': run_usage(stdout); return -1;
        default: run_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) { cli_error("run", "unexpected argument '%s'", argv[optind]); return CLI_EXIT_USAGE; }
    if (!o->prompt) { cli_error("run", "-p PROMPT is required"); run_usage(stderr); return CLI_EXIT_USAGE; }
    if (!o->seed_set) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    return CLI_EXIT_OK;
}

/* The text to tokenize: the prompt itself, or a chat rendering of it. */
static elpis_status build_prompt(const elpis_model *m, const run_opts *o, elpis_buf *out, elpis_error *err) {
    if (!o->chat) return elpis_buf_puts(out, o->prompt) == ELPIS_OK ? ELPIS_OK : elpis_fail(err, ELPIS_ENOMEM, "prompt");
    elpis_chat_family fam = elpis_chat_detect(m->chat_template);
    if (fam == ELPIS_CHAT_UNKNOWN) elpis_log(ELPIS_LOG_WARN, "chat template not recognised; using chatml");
    elpis_chat_msg msgs[2];
    size_t n = 0;
    if (o->system) msgs[n++] = (elpis_chat_msg){ "system", o->system };
    msgs[n++] = (elpis_chat_msg){ "user", o->prompt };
    return elpis_chat_apply(fam, msgs, n, true, out, err);
}

/* Feed `toks` to sequence 0 in chunks of the context's batch size. */
static elpis_status prefill(elpis_ctx *ctx, const elpis_tokens *toks, elpis_error *err) {
    const int32_t n_batch = RUN_BATCH;
    int32_t pos[RUN_BATCH], seq[RUN_BATCH] = { 0 };
    for (size_t i = 0; i < toks->n; i += (size_t)n_batch) {
        int32_t n = (int32_t)ELPIS_MIN((size_t)n_batch, toks->n - i);
        for (int32_t k = 0; k < n; k++) pos[k] = (int32_t)(i + (size_t)k);
        elpis_batch b = { .n = n, .token = toks->ids + i, .pos = pos, .seq = seq, .logits = NULL };
        elpis_status st = elpis_forward(ctx, &b, err);
        if (st != ELPIS_OK) return st;
    }
    return ELPIS_OK;
}

static elpis_status generate(elpis_ctx *ctx, const elpis_model *m, elpis_sampler *smp, const elpis_tokens *prompt,
                             long n_predict, elpis_error *err) {
    elpis_status st;
    if ((st = prefill(ctx, prompt, err)) != ELPIS_OK) return st;
    for (size_t i = 0; i < prompt->n; i++) elpis_sampler_accept(smp, prompt->ids[i]);
    elpis_detok dt;
    elpis_detok_init(&dt, m->vocab, false);
    const size_t cap = elpis_detok_cap(m->vocab);
    char *piece = malloc(cap);
    if (!piece) return elpis_fail(err, ELPIS_ENOMEM, "piece buffer");
    const int32_t n_ctx = elpis_ctx_params_of(ctx)->n_ctx;
    int32_t pos = (int32_t)prompt->n, seq = 0;
    for (long i = 0; i < n_predict; i++) {
        int32_t tok = elpis_sampler_sample(smp, elpis_ctx_logits(ctx, 0));
        if (elpis_vocab_is_eog(m->vocab, tok)) break;
        elpis_sampler_accept(smp, tok);
        size_t len = elpis_detok_push(&dt, tok, piece, cap);
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        if (pos >= n_ctx || i + 1 == n_predict) break;
        elpis_batch b = { .n = 1, .token = &tok, .pos = &pos, .seq = &seq, .logits = NULL };
        if ((st = elpis_forward(ctx, &b, err)) != ELPIS_OK) goto done;
        pos++;
    }
    fwrite(piece, 1, elpis_detok_flush(&dt, piece, cap), stdout);
done:
    free(piece);
    return st;
}

int cmd_run(int argc, char **argv) {
    run_opts o = { .n_predict = 128, .sp = elpis_sampler_defaults() };
    int prc = parse_run_opts(argc, argv, &o);
    if (prc != CLI_EXIT_OK) return prc < 0 ? CLI_EXIT_OK : prc;
    const char *path = cli_model_path(o.model, "run");
    if (!path) return CLI_EXIT_USAGE;

    int rc = CLI_EXIT_ERROR;
    elpis_error err = { 0 };
    elpis_model *m = NULL;
    elpis_ctx *ctx = NULL;
    elpis_sampler *smp = NULL;
    elpis_buf text = { 0 };
    elpis_tokens toks = { 0 };
    if (elpis_sampler_validate(&o.sp, &err) != ELPIS_OK) { cli_error("run", "%s", err.msg); rc = CLI_EXIT_USAGE; goto done; }
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) goto fail;
    if (build_prompt(m, &o, &text, &err) != ELPIS_OK) goto fail;
    if (elpis_tokenize(m->vocab, text.data, text.len, true, o.chat, &toks, &err) != ELPIS_OK) goto fail;
    if (toks.n == 0) { cli_error("run", "the prompt produced no tokens"); goto done; }

    elpis_ctx_params cp = elpis_ctx_default_params();
    long want = (long)toks.n + o.n_predict + 1;
    cp.n_ctx = (int32_t)(o.ctx > 0 ? o.ctx : ELPIS_MIN(want, (long)ELPIS_MAX(m->hp.n_ctx_train, 512)));
    if ((long)toks.n >= cp.n_ctx) { cli_error("run", "prompt of %zu tokens does not fit the context of %d", toks.n, cp.n_ctx); goto done; }
    cp.n_batch = RUN_BATCH;
    cp.n_threads = (int32_t)o.threads;
    if (elpis_ctx_new(&ctx, m, &cp, &err) != ELPIS_OK) goto fail;
    if (!(smp = elpis_sampler_new(&o.sp, m->hp.n_vocab))) { cli_error("run", "out of memory"); goto done; }

    if (!o.chat) { fputs(o.prompt, stdout); fflush(stdout); }
    if (generate(ctx, m, smp, &toks, o.n_predict, &err) != ELPIS_OK) goto fail;
    putchar('\n');
    rc = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
    goto done;
fail:
    cli_error("run", "%s", err.msg);
done:
    elpis_sampler_free(smp);
    elpis_tokens_free(&toks);
    elpis_buf_free(&text);
    elpis_ctx_free(ctx);
    elpis_model_free(m);
    return rc;
}
