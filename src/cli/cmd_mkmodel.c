/* cmd_mkmodel.c -- `elpis mkmodel`: a random-weight model of a given shape.
 *
 * For benchmarks that need a real-sized model without a download: the
 * tokenizer is copied from a vocabulary GGUF (e.g. ../shared/testdata/vocab),
 * the weights are pseudo-random with std 1/sqrt(fan_in) (so activations stay
 * O(1)), norms are ones, and weight types follow llama.cpp's "mostly" file
 * types, including the Q4_K_M mix. Data is generated row by row while the
 * file is written, so a 1 GB model needs little memory, and it is
 * deterministic: the same flags give the same bytes.
 */
#include "cli.h"

#include "elpis/gguf.h"
#include "elpis/gguf_write.h"
#include "elpis/wquant.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mk_opts {
    const char *out, *vocab, *arch, *type;
    long dim, layers, heads, kv_heads, ffn, ctx, seed;
} mk_opts;

/* One tensor to generate: fill() makes rows of random weights in `type`. */
typedef struct mk_tensor {
    char name[64];
    elpis_dtype type;
    int64_t n_in, n_out;
    float std;          /* 0: all ones (norm weights) */
    uint64_t seed;
} mk_tensor;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s, uint64_t seed) {
    uint64_t h = 1469598103934665603ull ^ seed;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

/* Uniform in [-std*sqrt(3), std*sqrt(3)]: variance std^2, cheap to draw. */
static void random_row(const mk_tensor *t, int64_t row, float *x) {
    uint64_t s = t->seed ^ ((uint64_t)row * 0xD1B54A32D192ED03ull);
    const float a = t->std * 1.7320508f;
    for (int64_t i = 0; i < t->n_in; i++) {
        if (t->std == 0) { x[i] = 1.0f; continue; }
        x[i] = a * ((float)(splitmix(&s) >> 40) / 8388608.0f - 1.0f);
    }
}

static elpis_status fill(void *user, const char *name, uint64_t offset, void *dst, size_t n, elpis_error *err) {
    (void)name;
    const mk_tensor *t = user;
    size_t rb = elpis_row_bytes(t->type, t->n_in);
    float *x = malloc((size_t)t->n_in * sizeof *x);
    if (!x) return elpis_fail(err, ELPIS_ENOMEM, "mkmodel: row buffer");
    for (size_t done = 0; done < n; done += rb) {
        random_row(t, (int64_t)((offset + done) / rb), x);
        elpis_wquant_row(t->type, x, (char *)dst + done, t->n_in);
    }
    free(x);
    return ELPIS_OK;
}

/* ---- file type: which type each tensor gets ------------------------------------ */

static elpis_dtype k_fallback(elpis_dtype t, int64_t n_in) {
    if (n_in % 256 == 0) return t;
    switch (t) {  /* what llama.cpp's quantizer does for rows that are not a multiple of 256 */
    case ELPIS_Q4_K: return ELPIS_Q5_0;
    case ELPIS_Q5_K: return ELPIS_Q5_1;
    case ELPIS_Q6_K: return ELPIS_Q8_0;
    default: return t;
    }
}

/* Q4_K_M: Q6_K for output, and attn_v / ffn_down of the "more bits" layers. */
static elpis_dtype pick_type(const char *ftype, const char *tensor, int layer, int n_layer, elpis_dtype base) {
    if (strcmp(ftype, "q4_k_m") != 0) return base;
    bool more = layer >= 0 && (layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2);
    if (!strcmp(tensor, "output") || (more && (!strcmp(tensor, "attn_v") || !strcmp(tensor, "ffn_down")))) return ELPIS_Q6_K;
    return ELPIS_Q4_K;
}

static bool base_type(const char *ftype, elpis_dtype *out) {
    static const struct { const char *name; elpis_dtype t; } map[] = {
        { "f32", ELPIS_F32 }, { "f16", ELPIS_F16 }, { "bf16", ELPIS_BF16 }, { "q8_0", ELPIS_Q8_0 },
        { "q4_0", ELPIS_Q4_0 }, { "q4_1", ELPIS_Q4_1 }, { "q5_0", ELPIS_Q5_0 }, { "q5_1", ELPIS_Q5_1 },
        { "q4_k", ELPIS_Q4_K }, { "q5_k", ELPIS_Q5_K }, { "q6_k", ELPIS_Q6_K }, { "q4_k_m", ELPIS_Q4_K },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(map); i++)
        if (!strcmp(ftype, map[i].name)) { *out = map[i].t; return true; }
    return false;
}

/* ---- writing ----------------------------------------------------------------------------- */

static elpis_status copy_tokenizer(elpis_gguf_writer *w, const gguf_file *v, elpis_error *err) {
    for (uint64_t i = 0; i < v->n_kv; i++) {
        const gguf_kv *kv = &v->kv[i];
        char key[256];
        if (kv->key.len >= sizeof key || strncmp(kv->key.ptr, "tokenizer.", 10) != 0) continue;
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        elpis_status st = ELPIS_OK;
        if (kv->type == GGUF_STRING) {
            char *s = strndup(kv->v.str.ptr, kv->v.str.len);
            st = s ? elpis_gguf_writer_add_str(w, key, s) : ELPIS_ENOMEM;
            free(s);
        } else if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING) {
            char **strs = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *strs);
            st = strs ? ELPIS_OK : ELPIS_ENOMEM;
            for (uint64_t k = 0; st == ELPIS_OK && k < kv->arr_n; k++)
                if (!(strs[k] = strndup(kv->arr_str[k].ptr, kv->arr_str[k].len))) st = ELPIS_ENOMEM;
            if (st == ELPIS_OK) st = elpis_gguf_writer_add_arr_str(w, key, (const char *const *)strs, kv->arr_n);
            for (uint64_t k = 0; strs && k < kv->arr_n; k++) free(strs[k]);
            free(strs);
        } else if (kv->type == GGUF_ARRAY) {
            st = elpis_gguf_writer_add_arr(w, key, kv->arr_type, kv->arr_data, kv->arr_n);
        } else if (kv->type == GGUF_UINT32 || kv->type == GGUF_UINT64 || kv->type == GGUF_UINT8 || kv->type == GGUF_UINT16) {
            st = elpis_gguf_writer_add_u32(w, key, (uint32_t)kv->v.u64);
        } else if (kv->type == GGUF_INT32 || kv->type == GGUF_INT64 || kv->type == GGUF_INT8 || kv->type == GGUF_INT16) {
            st = elpis_gguf_writer_add_i32(w, key, (int32_t)kv->v.i64);
        } else if (kv->type == GGUF_BOOL) {
            st = elpis_gguf_writer_add_bool(w, key, kv->v.b);
        } else if (kv->type == GGUF_FLOAT32 || kv->type == GGUF_FLOAT64) {
            st = elpis_gguf_writer_add_f32(w, key, (float)kv->v.f64);
        }
        if (st != ELPIS_OK) return elpis_fail(err, st, "mkmodel: copying %s", key);
    }
    return ELPIS_OK;
}

static elpis_status add_hparams(elpis_gguf_writer *w, const mk_opts *o) {
    char k[128];
    const char *a = o->arch;
    elpis_status st = elpis_gguf_writer_add_str(w, "general.architecture", a);
    st = st ? st : elpis_gguf_writer_add_str(w, "general.name", "elpis-mkmodel");
#define U32(suffix, v) (snprintf(k, sizeof k, "%s." suffix, a), st = st ? st : elpis_gguf_writer_add_u32(w, k, (uint32_t)(v)))
    U32("context_length", o->ctx);
    U32("embedding_length", o->dim);
    U32("block_count", o->layers);
    U32("feed_forward_length", o->ffn);
    U32("attention.head_count", o->heads);
    U32("attention.head_count_kv", o->kv_heads);
    U32("rope.dimension_count", o->dim / o->heads);
#undef U32
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", a);
    st = st ? st : elpis_gguf_writer_add_f32(w, k, 1e-5f);
    snprintf(k, sizeof k, "%s.rope.freq_base", a);
    st = st ? st : elpis_gguf_writer_add_f32(w, k, 10000.0f);
    return st;
}

typedef struct planner {
    const mk_opts *o;
    elpis_dtype base;
    mk_tensor *t;
    int n;
} planner;

/* Add one tensor; layer < 0 for tensors outside the blocks. std 0: norm (ones, F32). */
static void add(planner *p, const char *name, int layer, const char *kind, int64_t n_in, int64_t n_out, float std) {
    mk_tensor *x = &p->t[p->n++];
    if (layer >= 0) snprintf(x->name, sizeof x->name, "blk.%d.%s", layer, name);
    else snprintf(x->name, sizeof x->name, "%s", name);
    x->n_in = n_in;
    x->n_out = n_out;
    x->std = std;
    bool small = std == 0 || n_out == 1;   /* norms and biases stay F32, as llama.cpp keeps them */
    x->type = small ? ELPIS_F32 : k_fallback(pick_type(p->o->type, kind, layer, (int)p->o->layers, p->base), n_in);
    x->seed = name_hash(x->name, (uint64_t)p->o->seed);
}

static mk_tensor *plan(const mk_opts *o, elpis_dtype base, int32_t n_vocab, int *n_out) {
    const int64_t E = o->dim, hd = o->dim / o->heads, KV = hd * o->kv_heads, F = o->ffn;
    const float sE = 1.0f / sqrtf((float)E), sF = 1.0f / sqrtf((float)F);
    planner p = { o, base, calloc((size_t)(3 + o->layers * 12), sizeof(mk_tensor)), 0 };
    if (!p.t) return NULL;
    add(&p, "token_embd.weight", -1, "token_embd", E, n_vocab, 1.0f);
    add(&p, "output_norm.weight", -1, "norm", E, 1, 0);
    add(&p, "output.weight", -1, "output", E, n_vocab, sE);
    for (int il = 0; il < o->layers; il++) {
        add(&p, "attn_norm.weight", il, "norm", E, 1, 0);
        add(&p, "attn_q.weight", il, "attn_q", E, E, sE);
        add(&p, "attn_k.weight", il, "attn_k", E, KV, sE);
        add(&p, "attn_v.weight", il, "attn_v", E, KV, sE);
        add(&p, "attn_output.weight", il, "attn_output", E, E, sE);
        add(&p, "ffn_norm.weight", il, "norm", E, 1, 0);
        add(&p, "ffn_gate.weight", il, "ffn_gate", E, F, sE);
        add(&p, "ffn_up.weight", il, "ffn_up", E, F, sE);
        add(&p, "ffn_down.weight", il, "ffn_down", F, E, sF);
        if (!strcmp(o->arch, "qwen2")) {
            add(&p, "attn_q.bias", il, "bias", E, 1, 0.02f);
            add(&p, "attn_k.bias", il, "bias", KV, 1, 0.02f);
            add(&p, "attn_v.bias", il, "bias", KV, 1, 0.02f);
        }
    }
    *n_out = p.n;
    return p.t;
}

static void mk_usage(FILE *f) {
    fprintf(f, "usage: elpis mkmodel -o OUT.gguf --vocab VOCAB.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k_m|q4_k|q5_k|q6_k]\n"
               "                     [--arch llama|qwen2] [--preset tinyllama|small] [--dim N] [--layers N] [--heads N]\n"
               "                     [--kv-heads N] [--ffn N] [--ctx N] [--seed N]\n"
               "presets: tinyllama = 2048/16 layers/32 heads/4 kv/5632 (the 1.1B benchmark shape); small = 512/4/8/4/1408\n");
}

static bool apply_preset(mk_opts *o, const char *name) {
    if (!strcmp(name, "tinyllama")) { o->dim = 2048; o->layers = 16; o->heads = 32; o->kv_heads = 4; o->ffn = 5632; return true; }
    if (!strcmp(name, "small")) { o->dim = 512; o->layers = 4; o->heads = 8; o->kv_heads = 4; o->ffn = 1408; return true; }
    return false;
}

static int parse_mk(int argc, char **argv, mk_opts *o) {
    static const struct option opts[] = {
        { "out", required_argument, 0, 'o' }, { "vocab", required_argument, 0, 'v' }, { "type", required_argument, 0, 'T' },
        { "arch", required_argument, 0, 'a' }, { "preset", required_argument, 0, 'P' }, { "dim", required_argument, 0, 'd' },
        { "layers", required_argument, 0, 'l' }, { "heads", required_argument, 0, 'H' }, { "kv-heads", required_argument, 0, 'k' },
        { "ffn", required_argument, 0, 'f' }, { "ctx", required_argument, 0, 'c' }, { "seed", required_argument, 0, 's' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        long *dst = NULL;
        switch (c) {
        case 'o': o->out = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'T': o->type = optarg; break;
        case 'a': o->arch = optarg; break;
        case 'P': if (!apply_preset(o, optarg)) { cli_error("mkmodel", "--preset: unknown '%s'", optarg); return CLI_EXIT_USAGE; } break;
        case 'd': dst = &o->dim; break;
        case 'l': dst = &o->layers; break;
        case 'H': dst = &o->heads; break;
        case 'k': dst = &o->kv_heads; break;
        case 'f': dst = &o->ffn; break;
        case 'c': dst = &o->ctx; break;
        case 's': dst = &o->seed; break;
        case 'h': mk_usage(stdout); return -1;
        default: mk_usage(stderr); return CLI_EXIT_USAGE;
        }
        if (dst && !cli_parse_int("mkmodel", argv[optind - 2], optarg, 1, 1 << 20, dst)) return CLI_EXIT_USAGE;
    }
    if (!o->out || !o->vocab) { mk_usage(stderr); return CLI_EXIT_USAGE; }
    if (strcmp(o->arch, "llama") && strcmp(o->arch, "qwen2")) { cli_error("mkmodel", "--arch: '%s' is not llama or qwen2", o->arch); return CLI_EXIT_USAGE; }
    if (o->dim % o->heads || o->heads % o->kv_heads || (o->dim / o->heads) % 2) {
        cli_error("mkmodel", "--dim %ld must be a multiple of --heads %ld (even head size), and heads of --kv-heads %ld", o->dim, o->heads, o->kv_heads);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

int cmd_mkmodel(int argc, char **argv) {
    mk_opts o = { .arch = "llama", .type = "q8_0", .dim = 512, .layers = 4, .heads = 8, .kv_heads = 4, .ffn = 1408,
                  .ctx = 2048, .seed = 1 };
    int prc = parse_mk(argc, argv, &o);
    if (prc != CLI_EXIT_OK) return prc < 0 ? CLI_EXIT_OK : prc;
    elpis_dtype base;
    if (!base_type(o.type, &base)) { cli_error("mkmodel", "--type: unknown '%s'", o.type); return CLI_EXIT_USAGE; }
    int rc = CLI_EXIT_ERROR, n = 0;
    elpis_error err = { 0 };
    gguf_file *v = NULL;
    elpis_gguf_writer *w = NULL;
    mk_tensor *t = NULL;
    if (gguf_open(&v, o.vocab, &err) != ELPIS_OK) goto fail;
    const gguf_kv *toks = gguf_find_array(v, "tokenizer.ggml.tokens", GGUF_STRING);
    if (!toks) { elpis_fail(&err, ELPIS_EFORMAT, "%s: no tokenizer.ggml.tokens", o.vocab); goto fail; }
    if (!(w = elpis_gguf_writer_new()) || !(t = plan(&o, base, (int32_t)toks->arr_n, &n))) { elpis_fail(&err, ELPIS_ENOMEM, "mkmodel"); goto fail; }
    if (add_hparams(w, &o) != ELPIS_OK || copy_tokenizer(w, v, &err) != ELPIS_OK) {
        if (!err.msg[0]) elpis_fail(&err, ELPIS_ENOMEM, "mkmodel: metadata");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = { t[i].n_in, t[i].n_out };
        if (elpis_gguf_writer_add_tensor_fill(w, t[i].name, t[i].type, t[i].n_out == 1 ? 1 : 2, ne, fill, &t[i]) != ELPIS_OK) {
            err = *elpis_gguf_writer_error(w);
            goto fail;
        }
    }
    if (elpis_gguf_writer_write(w, o.out, &err) != ELPIS_OK) goto fail;
    fprintf(stderr, "elpis mkmodel: wrote %s (%s %s, %ld/%ld layers/%ld heads/%ld kv/%ld ffn, vocab %llu)\n", o.out, o.arch,
            o.type, o.dim, o.layers, o.heads, o.kv_heads, o.ffn, (unsigned long long)toks->arr_n);
    rc = CLI_EXIT_OK;
    goto done;
fail:
    cli_error("mkmodel", "%s", err.msg);
done:
    free(t);
    elpis_gguf_writer_free(w);
    gguf_close(v);
    return rc;
}
