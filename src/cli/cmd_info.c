/* cmd_info.c -- `elpis info`: what a model file is and what it needs. */
#include "cli.h"

#include "elpis/chat.h"
#include "elpis/model.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void print_types(const gguf_file *g) {
    uint64_t count[ELPIS_DTYPE_MAX] = { 0 };
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].type < ELPIS_DTYPE_MAX) count[g->tensors[i].type]++;
    printf("tensor types:");
    for (int t = 0; t < ELPIS_DTYPE_MAX; t++)
        if (count[t]) printf(" %s=%llu", elpis_type_info_of((uint32_t)t)->name, (unsigned long long)count[t]);
    printf("\n");
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        { "model", required_argument, 0, 'm' }, { "ctx-size", required_argument, 0, 'c' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    const char *model_flag = NULL;
    long n_ctx = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_flag = optarg; break;
        case 'c': if (!cli_parse_int("info", "--ctx-size", optarg, 1, 1 << 24, &n_ctx)) return CLI_EXIT_USAGE; break;
        case 'h': printf("usage: elpis info [-m MODEL] [-c CTX]\n"); return CLI_EXIT_OK;
        default: fprintf(stderr, "usage: elpis info [-m MODEL] [-c CTX]\n"); return CLI_EXIT_USAGE;
        }
    }
    const char *path = cli_model_path(model_flag, "info");
    if (!path) return CLI_EXIT_USAGE;
    elpis_error err = { 0 };
    elpis_model *m = NULL;
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) {
        cli_error("info", "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    const elpis_hparams *hp = &m->hp;
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    uint64_t ctx_bytes = elpis_ctx_estimate_bytes(m, &cp);
    elpis_chat_family fam = elpis_chat_detect(m->chat_template);
    printf("file: %s\nname: %s\ngguf version: %u\n", path, m->name, m->gguf->version);
    printf("architecture: %s\n", elpis_arch_name(hp->arch));
    printf("embedding: %d\nlayers: %d\nfeed forward: %d\nheads: %d\nkv heads: %d\nhead dim: %d\n", hp->n_embd,
           hp->n_layer, hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim);
    printf("rope: %s, dims %d, base %g, scale %g\n", hp->rope_type == ELPIS_ROPE_NEOX ? "neox" : "normal", hp->n_rot,
           hp->rope_base, hp->rope_freq_scale);
    printf("rms eps: %g\ncontext (trained): %d\nvocab: %d (%s tokenizer, pre %s)\n", hp->rms_eps, hp->n_ctx_train,
           hp->n_vocab, elpis_vocab_kind_of(m->vocab) == ELPIS_VOCAB_SPM ? "spm" : "bpe",
           elpis_vocab_pre(m->vocab));
    printf("output: %s\n", m->tied_output ? "tied to token_embd" : "separate");
    print_types(m->gguf);
    printf("chat template: %s%s\n", elpis_chat_family_name(fam), m->chat_template ? "" : " (none in file; default)");
    printf("weights: %.2f MiB\n", m->weight_bytes / 1048576.0);
    printf("memory for 1 sequence of %d positions: %.2f MiB weights (mapped) + %.2f MiB context\n",
           n_ctx ? (int)n_ctx : ELPIS_MIN(hp->n_ctx_train, 4096),
           m->weight_bytes / 1048576.0, ctx_bytes / 1048576.0);
    elpis_model_free(m);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
