/* vectors.c -- control vectors: load (llama.cpp's format and rules), blend
 * per emotion state, write, and the mean-difference math of `vectors build`.
 *
 * Layout everywhere: n_layer rows of n_embd floats; row il is added to the
 * residual stream after block il; row 0 is always zero (llama.cpp never has a
 * vector for layer 0, and neither does the engine). direction.N <-> row N.
 *
 * The loader follows common_control_vector_load_one (engine-facts §8) and is
 * stricter where llama.cpp only warns or silently ignores: the architecture,
 * the model hint and the layer count are checked against the model, and an
 * index past the last block is an error, because a steering file that does
 * not fit the model must stop the server at startup, not be half applied.
 */
#include "elpis/emotion.h"

#include "elpis/gguf.h"
#include "elpis/gguf_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CVEC_ARCH "controlvector"
#define CVEC_MIN_COEFF 0.01     /* the original's blend skips smaller weights */

/* ---- loading -------------------------------------------------------------------- */

/* "direction.<decimal>" -> N; -1 if not. No sign, spaces, trailing bytes or
 * leading zeros: one spelling per index, so unique tensor names (which the
 * reader enforces) mean unique layers. */
static long direction_index(gguf_str name) {
    static const char prefix[] = "direction.";
    const size_t pl = sizeof prefix - 1;
    if (name.len <= pl || memcmp(name.ptr, prefix, pl)) return -1;
    if (name.ptr[pl] == '0' && name.len > pl + 1) return -1;
    long v = 0;
    for (uint64_t i = pl; i < name.len; i++) {
        char c = name.ptr[i];
        if (c < '0' || c > '9' || v > 1000000) return -1;
        v = v * 10 + (c - '0');
    }
    return v;
}

/* llama.cpp's ggml_n_dims: trailing dimensions of size 1 do not count. */
static int effective_dims(const gguf_tensor *t) {
    int n = 1;
    for (int i = 1; i < GGUF_MAX_DIMS; i++)
        if (t->ne[i] != 1) n = i + 1;
    return n;
}

static elpis_status check_header(const gguf_file *f, const char *path, const elpis_hparams *hp, elpis_error *err) {
    gguf_str s;
    if (!gguf_get_str(f, "general.architecture", &s) || !gguf_str_eq(s, CVEC_ARCH))
        return elpis_fail(err, ELPIS_EFORMAT, "%s: not a control vector (general.architecture is not \"%s\")", path,
                          CVEC_ARCH);
    const char *arch = elpis_arch_name(hp->arch);
    if (gguf_find(f, CVEC_ARCH ".model_hint")) {
        if (!gguf_get_str(f, CVEC_ARCH ".model_hint", &s))
            return elpis_fail(err, ELPIS_EFORMAT, "%s: controlvector.model_hint is not a string", path);
        if (!gguf_str_eq(s, arch))
            return elpis_fail(err, ELPIS_EINVAL, "%s: made for a \"%.*s\" model, this model is \"%s\"", path,
                              (int)ELPIS_MIN(s.len, 64), s.ptr, arch);
    }
    if (gguf_find(f, CVEC_ARCH ".layer_count")) {
        int64_t lc;
        if (!gguf_get_i64(f, CVEC_ARCH ".layer_count", &lc))
            return elpis_fail(err, ELPIS_EFORMAT, "%s: controlvector.layer_count is not an integer", path);
        if (lc != (int64_t)f->n_tensors)
            return elpis_fail(err, ELPIS_EFORMAT, "%s: controlvector.layer_count is %lld but the file has %llu tensors",
                              path, (long long)lc, (unsigned long long)f->n_tensors);
        if (lc > hp->n_layer - 1)
            return elpis_fail(err, ELPIS_EINVAL, "%s: %lld layers of directions, this model takes at most %d", path,
                              (long long)lc, hp->n_layer - 1);
    }
    return ELPIS_OK;
}

static elpis_status check_tensor(const gguf_tensor *t, const char *path, const elpis_hparams *hp, long *index,
                                 elpis_error *err) {
    const int nl = (int)ELPIS_MIN(t->name.len, 64);
    long n = direction_index(t->name);
    if (n < 0)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: tensor %.*s: name is not direction.<layer>", path, nl, t->name.ptr);
    if (n == 0)
        return elpis_fail(err, ELPIS_EFORMAT,
                          "%s: tensor %.*s: layer index 0 is invalid (control vectors start at direction.1)", path, nl,
                          t->name.ptr);
    if (n > hp->n_layer - 1)
        return elpis_fail(err, ELPIS_EINVAL, "%s: tensor %.*s: layer %ld is past this model's last steerable layer %d",
                          path, nl, t->name.ptr, n, hp->n_layer - 1);
    if (t->type != ELPIS_F32) {
        const elpis_type_info *ti = elpis_type_info_of(t->type);
        return elpis_fail(err, ELPIS_EFORMAT, "%s: tensor %.*s: type %s, expected f32", path, nl, t->name.ptr,
                          ti ? ti->name : "?");
    }
    if (effective_dims(t) != 1)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: tensor %.*s: %d-D, expected 1-D", path, nl, t->name.ptr,
                          effective_dims(t));
    if (t->ne[0] != hp->n_embd)
        return elpis_fail(err, ELPIS_EINVAL, "%s: tensor %.*s: %lld values, this model's n_embd is %d", path, nl,
                          t->name.ptr, (long long)t->ne[0], hp->n_embd);
    *index = n;
    return ELPIS_OK;
}

elpis_status elpis_cvec_load(const char *path, const elpis_hparams *hp, float scale, float *out, elpis_error *err) {
    gguf_file *f = NULL;
    elpis_status st = gguf_open(&f, path, err);
    if (st != ELPIS_OK) return st;
    if ((st = check_header(f, path, hp, err)) != ELPIS_OK) goto done;
    if (f->n_tensors == 0) { st = elpis_fail(err, ELPIS_EFORMAT, "%s: no direction tensors", path); goto done; }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        long n = 0;
        if ((st = check_tensor(t, path, hp, &n, err)) != ELPIS_OK) goto done;
        float *row = out + (size_t)n * hp->n_embd;
        for (int32_t e = 0; e < hp->n_embd; e++) {
            float x;
            memcpy(&x, (const char *)t->data + (size_t)e * sizeof x, sizeof x);   /* the mapping may be unaligned */
            if (!isfinite(x)) {
                st = elpis_fail(err, ELPIS_EFORMAT, "%s: tensor %.*s: value %d is not finite", path,
                                (int)ELPIS_MIN(t->name.len, 64), t->name.ptr, e);
                goto done;
            }
            row[e] += scale * x;
        }
    }
done:
    gguf_close(f);
    return st;
}

void elpis_emotion_vectors_free(elpis_emotion_vectors *v) {
    if (!v) return;
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++) { free(v->dir[q]); free(v->path[q]); }
    free(v);
}

elpis_status elpis_emotion_vectors_load(elpis_emotion_vectors **out, const elpis_emotion_config *cfg,
                                        const elpis_hparams *hp, elpis_error *err) {
    elpis_status st = ELPIS_OK;
    if (hp->n_layer < 2 || hp->n_embd < 1)
        return elpis_fail(err, ELPIS_EINVAL, "steering: a model of %d layers cannot be steered", hp->n_layer);
    elpis_emotion_vectors *v = calloc(1, sizeof *v);
    if (!v) return elpis_fail(err, ELPIS_ENOMEM, "steering vectors");
    v->n_layer = hp->n_layer;
    v->n_embd = hp->n_embd;
    const size_t n = (size_t)hp->n_layer * hp->n_embd;
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++) {
        if (!cfg->vectors[q][0]) continue;
        if (!(v->dir[q] = calloc(n, sizeof(float))) || !(v->path[q] = strdup(cfg->vectors[q]))) {
            st = elpis_fail(err, ELPIS_ENOMEM, "steering vectors: %zu floats", n);
            goto fail;
        }
        elpis_error e1 = { 0 };
        if ((st = elpis_cvec_load(cfg->vectors[q], hp, 1.0f, v->dir[q], &e1)) != ELPIS_OK) {
            st = elpis_fail(err, st, "emotion.vectors_%s: %s", elpis_quadrant_name(q), e1.msg);
            goto fail;
        }
    }
    *out = v;
    return ELPIS_OK;
fail:
    elpis_emotion_vectors_free(v);
    return st;
}

/* ---- blending ------------------------------------------------------------------------ */

static void layer_range(int32_t n_layer, int32_t *start, int32_t *end) {
    if (*start <= 0) *start = 1;
    if (*end <= 0 || *end > n_layer - 1) *end = n_layer - 1;
}

bool elpis_emotion_blend(const elpis_emotion_vectors *v, const double coeffs[ELPIS_QUADRANT_COUNT],
                         int32_t layer_start, int32_t layer_end, float *out) {
    const size_t E = (size_t)v->n_embd;
    memset(out, 0, (size_t)v->n_layer * E * sizeof *out);
    layer_range(v->n_layer, &layer_start, &layer_end);
    bool any = false;
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++) {
        if (!v->dir[q] || !(coeffs[q] >= CVEC_MIN_COEFF)) continue;
        const float c = (float)coeffs[q];
        for (size_t i = (size_t)layer_start * E; i < (size_t)(layer_end + 1) * E; i++) out[i] += c * v->dir[q][i];
        any = true;
    }
    return any && layer_start <= layer_end;
}

bool elpis_emotion_steering(const elpis_emotion_vectors *v, const elpis_emotion_state *s,
                            const elpis_emotion_config *cfg, float *out) {
    double k[ELPIS_QUADRANT_COUNT];
    elpis_emotion_coefficients(s->valence, s->arousal, cfg->steering_strength, k);
    return elpis_emotion_blend(v, k, cfg->steering_layer_start, cfg->steering_layer_end, out);
}

/* ---- writing and building ------------------------------------------------------------------ */

elpis_status elpis_cvec_write(const char *path, const char *model_hint, int32_t n_layer, int32_t n_embd,
                              const float *dirs, int32_t layer_start, int32_t layer_end, elpis_error *err) {
    layer_range(n_layer, &layer_start, &layer_end);
    if (layer_start > layer_end)
        return elpis_fail(err, ELPIS_EINVAL, "%s: no layers to write (range %d..%d)", path, layer_start, layer_end);
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    if (!w) return elpis_fail(err, ELPIS_ENOMEM, "%s: gguf writer", path);
    elpis_gguf_writer_add_str(w, "general.architecture", CVEC_ARCH);
    elpis_gguf_writer_add_str(w, CVEC_ARCH ".model_hint", model_hint);
    elpis_gguf_writer_add_i32(w, CVEC_ARCH ".layer_count", layer_end - layer_start + 1);
    for (int32_t il = layer_start; il <= layer_end; il++) {
        char name[GGUF_MAX_NAME];
        snprintf(name, sizeof name, "direction.%d", il);
        elpis_gguf_writer_add_tensor_ref(w, name, ELPIS_F32, 1, (const int64_t[]){ n_embd },
                                         dirs + (size_t)il * n_embd, (size_t)n_embd * sizeof(float));
    }
    elpis_status st = elpis_gguf_writer_write(w, path, err);   /* also reports any sticky add_* error */
    elpis_gguf_writer_free(w);
    return st;
}

void elpis_cvec_mean_diff(const float *pos_mean, const float *neg_mean, int32_t n_layer, int32_t n_embd, float *out) {
    const size_t E = (size_t)n_embd;
    memset(out, 0, (size_t)n_layer * E * sizeof *out);
    for (int32_t il = 0; il + 1 < n_layer; il++) {
        float *d = out + (size_t)(il + 1) * E;
        double norm = 0;
        for (size_t e = 0; e < E; e++) {
            d[e] = pos_mean[(size_t)il * E + e] - neg_mean[(size_t)il * E + e];
            norm += (double)d[e] * d[e];
        }
        norm = sqrt(norm);
        if (norm > 0)
            for (size_t e = 0; e < E; e++) d[e] = (float)(d[e] / norm);
    }
}
