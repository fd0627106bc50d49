/* model.c -- turn a GGUF file into an elpis_model.
 *
 * DESIGN
 * ------
 * Loading is validation: every hyperparameter is read once with its default
 * (shared/docs/engine-facts.md §1.3), every tensor the architecture needs is
 * looked up by name and its shape and type checked, and the first problem ends
 * the load with an error naming the file, the key or tensor, and what was
 * expected. After a successful load the forward pass never needs to check a
 * shape again.
 *
 * Large weights stay in the read-only mapping. Small vectors (norm weights,
 * biases, rope factors) are converted to F32 once, into the model's arena, so
 * the forward pass reads them as plain floats whatever their stored type.
 *
 * Packing: when the chosen kernel path asks for it (elpis_kernels.pack8),
 * the matmul weights whose type has a packed layout (quant.h, "packed
 * weights") are copied into 8-row groups in one anonymous mapping, tensor by
 * tensor, and the source pages are released right after each tensor
 * (MADV_DONTNEED on a private file mapping: a later read faults the file's
 * bytes back in), so the resident set stays about one model large. The
 * token embedding is never packed (rows are looked up one at a time), nor
 * an output matrix tied to it. If the mapping cannot be had, the model runs
 * unpacked (slower prefill, same results within the oracle's tolerance).
 * ELPIS_PACK=0 in the environment turns packing off (A/B benchmarks).
 */
#include "elpis/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct loader {
    elpis_model *m;
    const gguf_file *g;
    const char *arch;          /* key prefix */
    elpis_arena arena;         /* small F32 vectors; moved into the model */
    elpis_error *err;
} loader;

/* The model keeps its arena of converted vectors here; see elpis_model_free. */
typedef struct model_box {
    elpis_model m;
    elpis_arena arena;
    void *packed;          /* anonymous mapping of the packed weights, or NULL */
    size_t packed_bytes;
} model_box;

const char *elpis_arch_name(elpis_arch a) {
    switch (a) {
    case ELPIS_ARCH_LLAMA: return "llama";
    case ELPIS_ARCH_QWEN2: return "qwen2";
    case ELPIS_ARCH_QWEN3: return "qwen3";
    }
    return "?";
}

/* ---- hyperparameters ------------------------------------------------------- */

static elpis_status key_u32(loader *L, const char *suffix, bool required, uint32_t def, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    const gguf_kv *kv = gguf_find(L->g, key);
    uint64_t v = def;
    if (kv && kv->type == GGUF_ARRAY) {
        /* per-layer arrays (e.g. feed_forward_length): accept when uniform */
        if (kv->arr_n == 0) return elpis_fail(L->err, ELPIS_EFORMAT, "%s: key %s is an empty array", L->g->path, key);
        int64_t first = gguf_arr_i64(kv, 0);
        for (uint64_t i = 1; i < kv->arr_n; i++)
            if (gguf_arr_i64(kv, i) != first)
                return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: key %s varies per layer, which is not supported", L->g->path, key);
        if (first < 0) return elpis_fail(L->err, ELPIS_EFORMAT, "%s: key %s is negative", L->g->path, key);
        v = (uint64_t)first;
    } else if (kv) {
        if (!gguf_get_u64(L->g, key, &v))
            return elpis_fail(L->err, ELPIS_EFORMAT, "%s: key %s has type %s, expected an unsigned integer",
                              L->g->path, key, gguf_vtype_name(kv->type));
    } else if (required) {
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: missing required key %s", L->g->path, key);
    }
    if (v > (1u << 30)) return elpis_fail(L->err, ELPIS_EFORMAT, "%s: key %s = %llu is out of range", L->g->path, key, (unsigned long long)v);
    *out = (int32_t)v;
    return ELPIS_OK;
}

static elpis_status key_f32(loader *L, const char *suffix, bool required, float def, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->arch, suffix);
    const gguf_kv *kv = gguf_find(L->g, key);
    *out = def;
    if (!kv) return required ? elpis_fail(L->err, ELPIS_EFORMAT, "%s: missing required key %s", L->g->path, key) : ELPIS_OK;
    if (!gguf_get_f32(L->g, key, out))
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: key %s has type %s, expected a number", L->g->path, key, gguf_vtype_name(kv->type));
    return ELPIS_OK;
}

static elpis_status load_rope_scaling(loader *L, elpis_hparams *hp) {
    char key[128];
    gguf_str type = { "linear", 6 };
    snprintf(key, sizeof key, "%s.rope.scaling.type", L->arch);
    gguf_get_str(L->g, key, &type);
    float factor = 0;
    if (key_f32(L, "rope.scaling.factor", false, 0, &factor) != ELPIS_OK) return ELPIS_EFORMAT;
    if (factor == 0 && key_f32(L, "rope.scale_linear", false, 0, &factor) != ELPIS_OK) return ELPIS_EFORMAT;
    hp->rope_freq_scale = factor > 0 ? 1.0f / factor : 1.0f;
    if (gguf_str_eq(type, "none")) hp->rope_freq_scale = 1.0f;
    else if (!gguf_str_eq(type, "linear") && hp->rope_freq_scale != 1.0f)
        return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: rope scaling type '%.*s' is not supported (linear only)",
                          L->g->path, (int)type.len, type.ptr);
    return ELPIS_OK;
}

static elpis_status load_hparams(loader *L, elpis_hparams *hp) {
    int32_t key_len = 0, val_len = 0;
    if (key_u32(L, "context_length", true, 0, &hp->n_ctx_train) ||
        key_u32(L, "embedding_length", true, 0, &hp->n_embd) ||
        key_u32(L, "block_count", true, 0, &hp->n_layer) ||
        key_u32(L, "feed_forward_length", true, 0, &hp->n_ff) ||
        key_u32(L, "attention.head_count", true, 0, &hp->n_head) ||
        key_u32(L, "attention.head_count_kv", false, 0, &hp->n_head_kv) ||
        key_u32(L, "attention.key_length", false, 0, &key_len) ||
        key_u32(L, "attention.value_length", false, 0, &val_len) ||
        key_u32(L, "rope.dimension_count", false, 0, &hp->n_rot) ||
        key_f32(L, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps) ||
        key_f32(L, "rope.freq_base", false, 10000.0f, &hp->rope_base) ||
        load_rope_scaling(L, hp))
        return ELPIS_EFORMAT;
    const char *path = L->g->path;
    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_ff <= 0)
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: embedding_length, block_count, head_count and feed_forward_length must be positive", path);
    if (hp->n_head_kv == 0) hp->n_head_kv = hp->n_head;
    if (hp->n_head % hp->n_head_kv != 0)
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: head_count %d is not a multiple of head_count_kv %d", path, hp->n_head, hp->n_head_kv);
    hp->head_dim = key_len ? key_len : hp->n_embd / hp->n_head;
    if (!key_len && hp->n_embd % hp->n_head != 0)
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: embedding_length %d is not a multiple of head_count %d", path, hp->n_embd, hp->n_head);
    if (val_len && val_len != hp->head_dim)
        return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: value_length %d differs from key_length %d", path, val_len, hp->head_dim);
    if (hp->n_rot == 0) hp->n_rot = hp->head_dim;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: rope.dimension_count %d is invalid for head size %d", path, hp->n_rot, hp->head_dim);
    if (hp->arch == ELPIS_ARCH_LLAMA && hp->n_rot != hp->head_dim)
        return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: llama with rope.dimension_count %d != head size %d", path, hp->n_rot, hp->head_dim);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: layer_norm_rms_epsilon %g is out of range (0, 1)", path, hp->rms_eps);
    if (!(hp->rope_base > 0))
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: rope.freq_base %g must be positive", path, hp->rope_base);
    hp->rope_type = hp->arch == ELPIS_ARCH_LLAMA ? ELPIS_ROPE_NORM : ELPIS_ROPE_NEOX;
    return ELPIS_OK;
}

/* ---- tensors ------------------------------------------------------------------ */

static const gguf_tensor *find_t(loader *L, const char *name, bool required, elpis_status *st) {
    const gguf_tensor *t = gguf_find_tensor(L->g, name);
    if (!t && required) *st = elpis_fail(L->err, ELPIS_EFORMAT, "%s: missing tensor '%s'", L->g->path, name);
    return t;
}

static elpis_status check_shape(loader *L, const gguf_tensor *t, const char *name, int64_t ne0, int64_t ne1) {
    if (t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == 1 && t->ne[3] == 1) return ELPIS_OK;
    return elpis_fail(L->err, ELPIS_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                      L->g->path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                      (long long)t->ne[3], (long long)ne0, (long long)ne1);
}

/* A matmul weight {n_in, n_out}. */
static elpis_status load_weight(loader *L, const char *name, int64_t n_in, int64_t n_out, bool required, elpis_weight *w) {
    elpis_status st = ELPIS_OK;
    const gguf_tensor *t = find_t(L, name, required, &st);
    if (!t) return st;
    if ((st = check_shape(L, t, name, n_in, n_out)) != ELPIS_OK) return st;
    const elpis_type_info *ti = elpis_type_info_of(t->type);
    if (!ti || !ti->weight)
        return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: tensor '%s' has type %s, which is not supported for weights",
                          L->g->path, name, ti ? ti->name : "unknown");
    w->data = t->data;
    w->type = (elpis_dtype)t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = elpis_row_bytes(w->type, n_in);
    return ELPIS_OK;
}

/* A small 1-D vector, converted to F32 into the arena. */
static elpis_status load_vec(loader *L, const char *name, int64_t n, bool required, float **out) {
    elpis_status st = ELPIS_OK;
    *out = NULL;
    const gguf_tensor *t = find_t(L, name, required, &st);
    if (!t) return st;
    if ((st = check_shape(L, t, name, n, 1)) != ELPIS_OK) return st;
    const elpis_type_info *ti = elpis_type_info_of(t->type);
    if (!ti || !ti->weight)
        return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: tensor '%s' has unsupported type", L->g->path, name);
    float *v = elpis_arena_alloc(&L->arena, (size_t)n * sizeof(float), 64);
    if (!v) return elpis_fail(L->err, ELPIS_ENOMEM, "%s: tensor '%s'", L->g->path, name);
    elpis_dequantize_row((elpis_dtype)t->type, t->data, v, n);
    *out = v;
    return ELPIS_OK;
}

static elpis_status load_layer(loader *L, int il, elpis_layer *ly) {
    const elpis_hparams *hp = &L->m->hp;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const bool qwen2 = hp->arch == ELPIS_ARCH_QWEN2, qwen3 = hp->arch == ELPIS_ARCH_QWEN3;
    char n[GGUF_MAX_NAME + 16];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, il), n)
    elpis_status st;
    if ((st = load_vec(L, NAME("attn_norm.weight"), E, true, &ly->attn_norm)) ||
        (st = load_vec(L, NAME("ffn_norm.weight"), E, true, &ly->ffn_norm)) ||
        (st = load_weight(L, NAME("attn_q.weight"), E, Q, true, &ly->wq)) ||
        (st = load_weight(L, NAME("attn_k.weight"), E, KV, true, &ly->wk)) ||
        (st = load_weight(L, NAME("attn_v.weight"), E, KV, true, &ly->wv)) ||
        (st = load_weight(L, NAME("attn_output.weight"), Q, E, true, &ly->wo)) ||
        (st = load_weight(L, NAME("ffn_gate.weight"), E, hp->n_ff, true, &ly->w_gate)) ||
        (st = load_weight(L, NAME("ffn_up.weight"), E, hp->n_ff, true, &ly->w_up)) ||
        (st = load_weight(L, NAME("ffn_down.weight"), hp->n_ff, E, true, &ly->w_down)) ||
        (st = load_vec(L, NAME("attn_q.bias"), Q, qwen2, &ly->bq)) ||
        (st = load_vec(L, NAME("attn_k.bias"), KV, qwen2, &ly->bk)) ||
        (st = load_vec(L, NAME("attn_v.bias"), KV, qwen2, &ly->bv)) ||
        (st = load_vec(L, NAME("attn_output.bias"), E, false, &ly->bo)) ||
        (st = load_vec(L, NAME("attn_q_norm.weight"), hp->head_dim, qwen3, &ly->q_norm)) ||
        (st = load_vec(L, NAME("attn_k_norm.weight"), hp->head_dim, qwen3, &ly->k_norm)))
        return st;
#undef NAME
    return ELPIS_OK;
}

static elpis_status load_tensors(loader *L) {
    elpis_model *m = L->m;
    elpis_hparams *hp = &m->hp;
    elpis_status st = ELPIS_OK;
    const gguf_tensor *te = find_t(L, "token_embd.weight", true, &st);
    if (!te) return st;
    hp->n_vocab = (int32_t)te->ne[1];
    if (te->ne[1] <= 0 || te->ne[1] > (1 << 24)) return elpis_fail(L->err, ELPIS_EFORMAT, "%s: token_embd vocabulary %lld is out of range", L->g->path, (long long)te->ne[1]);
    if ((st = load_weight(L, "token_embd.weight", hp->n_embd, hp->n_vocab, true, &m->tok_embd)) ||
        (st = load_vec(L, "output_norm.weight", hp->n_embd, true, &m->output_norm)) ||
        (st = load_weight(L, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output)) ||
        (st = load_vec(L, "output.bias", hp->n_vocab, false, &m->output_bias)) ||
        (st = load_vec(L, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freqs)))
        return st;
    if (!m->output.data) { m->output = m->tok_embd; m->tied_output = true; }
    m->layers = elpis_arena_alloc(&L->arena, (size_t)hp->n_layer * sizeof *m->layers, 64);
    if (!m->layers) return elpis_fail(L->err, ELPIS_ENOMEM, "%s: layers", L->g->path);
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = load_layer(L, il, &m->layers[il])) != ELPIS_OK) return st;
    for (uint64_t i = 0; i < L->g->n_tensors; i++) m->weight_bytes += L->g->tensors[i].nbytes;
    return ELPIS_OK;
}

static elpis_status load_arch(loader *L) {
    gguf_str a;
    if (!gguf_get_str(L->g, "general.architecture", &a))
        return elpis_fail(L->err, ELPIS_EFORMAT, "%s: missing required key general.architecture", L->g->path);
    static const struct { const char *name; elpis_arch arch; } known[] = {
        { "llama", ELPIS_ARCH_LLAMA }, { "qwen2", ELPIS_ARCH_QWEN2 }, { "qwen3", ELPIS_ARCH_QWEN3 },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(known); i++)
        if (gguf_str_eq(a, known[i].name)) {
            L->m->hp.arch = known[i].arch;
            L->arch = known[i].name;
            return ELPIS_OK;
        }
    return elpis_fail(L->err, ELPIS_EUNSUPPORTED, "%s: architecture '%.*s' is not supported (llama, qwen2, qwen3)",
                      L->g->path, (int)ELPIS_MIN(a.len, 64), a.ptr);
}

static elpis_status load_strings(loader *L) {
    elpis_model *m = L->m;
    gguf_str s;
    const char *base = strrchr(L->g->path, '/');
    base = base ? base + 1 : L->g->path;
    if (gguf_get_str(L->g, "general.name", &s) && s.len > 0) m->name = strndup(s.ptr, s.len);
    else m->name = strdup(base);
    if (!m->name) return elpis_fail(L->err, ELPIS_ENOMEM, "model name");
    if (gguf_get_str(L->g, "tokenizer.chat_template", &s) && !(m->chat_template = strndup(s.ptr, s.len)))
        return elpis_fail(L->err, ELPIS_ENOMEM, "chat template");
    return ELPIS_OK;
}

/* ---- packing ------------------------------------------------------------------- */

static bool packable(const elpis_model *m, const elpis_weight *w) {
    return elpis_pack8_supported(w->type) && w->n_out % 8 == 0 && w->data && w->data != m->tok_embd.data;
}

/* Every matmul weight, for packing: n_layer * 7 + the output. */
static int matmul_weights(elpis_model *m, elpis_weight **ws, int cap) {
    int n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        elpis_layer *l = &m->layers[il];
        elpis_weight *lw[] = { &l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down };
        for (size_t i = 0; i < sizeof lw / sizeof lw[0] && n < cap; i++) ws[n++] = lw[i];
    }
    if (n < cap) ws[n++] = &m->output;
    return n;
}

/* Drop the pages wholly inside [p, p+n) from the resident set. */
static void release_pages(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + n) & ~(page - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static void pack_weights(model_box *box) {
    elpis_model *m = &box->m;
    const int cap = m->hp.n_layer * 7 + 1;
    elpis_weight **ws = malloc((size_t)cap * sizeof *ws);
    if (!ws) return;
    const int n = matmul_weights(m, ws, cap);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (packable(m, ws[i])) total += (size_t)(ws[i]->n_out / 8) * elpis_pack8_bytes(ws[i]->type, ws[i]->n_in);
    void *mem = total ? mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    if (mem == MAP_FAILED) {
        if (total) elpis_log(ELPIS_LOG_WARN, "packing weights: no memory for %zu bytes; running unpacked", total);
        free(ws);
        return;
    }
    char *dst = mem;
    for (int i = 0; i < n; i++) {
        elpis_weight *w = ws[i];
        if (!packable(m, w)) continue;
        const size_t group = elpis_pack8_bytes(w->type, w->n_in);
        for (int64_t g = 0; g < w->n_out / 8; g++)
            elpis_pack8(w->type, (const char *)w->data + g * 8 * w->row_bytes, w->row_bytes, w->n_in, dst + g * group);
        release_pages(w->data, (size_t)w->n_out * w->row_bytes);
        w->data = dst;
        w->packed = true;
        dst += (size_t)(w->n_out / 8) * group;
    }
    box->packed = mem;
    box->packed_bytes = total;
    free(ws);
}

elpis_status elpis_model_load(elpis_model **out, const char *path, elpis_error *err) {
    elpis_status st;
    model_box *box = calloc(1, sizeof *box);
    if (!box) return elpis_fail(err, ELPIS_ENOMEM, "%s: out of memory", path);
    loader L = { .m = &box->m, .err = err };
    elpis_arena_init(&L.arena, 64 * 1024);
    if ((st = gguf_open(&box->m.gguf, path, err)) != ELPIS_OK) goto fail;
    L.g = box->m.gguf;
    if ((st = load_arch(&L)) || (st = load_hparams(&L, &box->m.hp)) || (st = load_tensors(&L)) ||
        (st = load_strings(&L)) || (st = elpis_vocab_load(&box->m.vocab, L.g, err)))
        goto fail;
    box->arena = L.arena;
    const char *pack = getenv("ELPIS_PACK");
    if (elpis_kernels_get()->pack8 && !(pack && !strcmp(pack, "0"))) pack_weights(box);
    *out = &box->m;
    return ELPIS_OK;
fail:
    box->arena = L.arena;
    elpis_model_free(&box->m);
    return st;
}

void elpis_model_free(elpis_model *m) {
    if (!m) return;
    model_box *box = (model_box *)m;  /* m is the first member */
    elpis_vocab_free(m->vocab);
    gguf_close(m->gguf);
    free(m->name);
    free(m->chat_template);
    elpis_arena_free(&box->arena);
    if (box->packed) munmap(box->packed, box->packed_bytes);
    free(box);
}
