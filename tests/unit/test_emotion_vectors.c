/* test_emotion_vectors.c -- control vectors: the writer's format, llama.cpp's
 * loader rules (each rejection names the file and the tensor), quadrant
 * files from the configuration, blend arithmetic, the mean-difference math,
 * and -- when the engine has layer capture -- `vectors build` on the real
 * stories260K model.
 *
 * Malformed files are made with the GGUF writer in a fresh temp directory,
 * one defect each, against a pretend model of 4 layers and n_embd 8 (so
 * direction.1..3 are the valid indices).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "elpis/emotion.h"
#include "elpis/gguf.h"
#include "elpis/gguf_write.h"
#include "elpis/tokenizer.h"

#define NL 4
#define NE 8

static char g_dir[256];
static const elpis_hparams g_hp = { .arch = ELPIS_ARCH_LLAMA, .n_layer = NL, .n_embd = NE };

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected [%s] in [%s]", needle, hay);
}

static const char *tmp_path(const char *name) {
    static char p[4][512];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, sizeof p[0], "%s/%s", g_dir, name);
    return s;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static int setup_dir(void **unused) {
    (void)unused;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_emotion_vectors.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **unused) {
    (void)unused;
    return nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* rows[il][e] = il * 10 + e * 0.5 (row 0 too, so that loading it would show) */
static void fill_rows(float *rows) {
    for (int il = 0; il < NL; il++)
        for (int e = 0; e < NE; e++) rows[il * NE + e] = il * 10.0f + e * 0.5f;
}

/* ---- crafting files ------------------------------------------------------------------- */

typedef struct tensor_spec {
    const char *name;
    elpis_dtype type;
    int n_dims;
    int64_t ne0, ne1;
} tensor_spec;

typedef struct file_spec {
    const char *arch;          /* NULL: no general.architecture */
    const char *hint;          /* NULL: no model_hint */
    int64_t layer_count;       /* < 0: none */
    bool count_u32;            /* write layer_count as u32 (repeng does) */
    bool hint_u32;             /* model_hint with the wrong type */
    tensor_spec t[4];
    float poison;              /* stored as the first value of every tensor when non-zero */
} file_spec;

static void craft(const char *path, const file_spec *fs) {
    elpis_gguf_writer *w = elpis_gguf_writer_new();
    assert_non_null(w);
    if (fs->arch) elpis_gguf_writer_add_str(w, "general.architecture", fs->arch);
    if (fs->hint_u32) elpis_gguf_writer_add_u32(w, "controlvector.model_hint", 7);
    else if (fs->hint) elpis_gguf_writer_add_str(w, "controlvector.model_hint", fs->hint);
    if (fs->layer_count >= 0) {
        if (fs->count_u32) elpis_gguf_writer_add_u32(w, "controlvector.layer_count", (uint32_t)fs->layer_count);
        else elpis_gguf_writer_add_i32(w, "controlvector.layer_count", (int32_t)fs->layer_count);
    }
    static float data[64 * 4];
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(data); i++) data[i] = 0.25f;
    data[0] = fs->poison ? fs->poison : 0.25f;
    uint16_t half[64];
    for (size_t i = 0; i < 64; i++) half[i] = elpis_f32_to_f16(0.25f);
    for (int i = 0; i < 4 && fs->t[i].name; i++) {
        const tensor_spec *t = &fs->t[i];
        int64_t ne[2] = { t->ne0, t->ne1 ? t->ne1 : 1 };
        size_t nb = (size_t)(ne[0] * ne[1]) * (t->type == ELPIS_F16 ? 2 : 4);
        elpis_gguf_writer_add_tensor(w, t->name, t->type, (uint32_t)t->n_dims, ne,
                                     t->type == ELPIS_F16 ? (const void *)half : (const void *)data, nb);
    }
    elpis_error err = { 0 };
    if (elpis_gguf_writer_write(w, path, &err) != ELPIS_OK) fail_msg("craft %s: %s", path, err.msg);
    elpis_gguf_writer_free(w);
}

#define GOOD_T(n) { n, ELPIS_F32, 1, NE, 0 }

/* Load and expect a failure whose message names the file and contains `a` and `b`. */
static void expect_load_error(const char *name, const file_spec *fs, elpis_status code, const char *a, const char *b) {
    const char *path = tmp_path(name);
    craft(path, fs);
    float out[NL * NE] = { 0 };
    elpis_error err = { 0 };
    elpis_status st = elpis_cvec_load(path, &g_hp, 1.0f, out, &err);
    if (st != code) fail_msg("%s: status %s, want %s (%s)", name, elpis_status_name(st), elpis_status_name(code), err.msg);
    assert_contains(err.msg, path);
    assert_contains(err.msg, a);
    if (b) assert_contains(err.msg, b);
}

/* ==== writing and loading ======================================================================= */

static void test_write_load_roundtrip(void **unused) {
    (void)unused;
    float rows[NL * NE], out[NL * NE] = { 0 };
    fill_rows(rows);
    const char *path = tmp_path("good.gguf");
    elpis_error err = { 0 };
    assert_int_equal(elpis_cvec_write(path, "llama", NL, NE, rows, 0, 0, &err), ELPIS_OK);

    /* the file is what llama.cpp's cvector-generator writes */
    gguf_file *f = NULL;
    assert_int_equal(gguf_open(&f, path, &err), ELPIS_OK);
    gguf_str s;
    assert_true(gguf_get_str(f, "general.architecture", &s) && gguf_str_eq(s, "controlvector"));
    assert_true(gguf_get_str(f, "controlvector.model_hint", &s) && gguf_str_eq(s, "llama"));
    const gguf_kv *lc = gguf_find(f, "controlvector.layer_count");
    assert_non_null(lc);
    assert_int_equal(lc->type, GGUF_INT32);
    assert_int_equal(lc->v.i64, NL - 1);
    assert_int_equal(f->n_tensors, NL - 1);
    assert_null(gguf_find_tensor(f, "direction.0"));
    for (int il = 1; il < NL; il++) {
        char name[32];
        snprintf(name, sizeof name, "direction.%d", il);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        assert_non_null(t);
        assert_int_equal(t->type, ELPIS_F32);
        assert_int_equal(t->n_dims, 1);
        assert_int_equal(t->ne[0], NE);
    }
    gguf_close(f);

    assert_int_equal(elpis_cvec_load(path, &g_hp, 1.0f, out, &err), ELPIS_OK);
    for (int e = 0; e < NE; e++) assert_true(out[e] == 0.0f);   /* row 0 never loaded */
    for (int i = NE; i < NL * NE; i++) assert_true(out[i] == rows[i]);
    /* a second load adds, scaled (llama.cpp sums several files) */
    assert_int_equal(elpis_cvec_load(path, &g_hp, 0.5f, out, &err), ELPIS_OK);
    for (int i = NE; i < NL * NE; i++) assert_true(out[i] == 1.5f * rows[i]);
}

static void test_write_layer_range(void **unused) {
    (void)unused;
    float rows[NL * NE], out[NL * NE] = { 0 };
    fill_rows(rows);
    const char *path = tmp_path("range.gguf");
    elpis_error err = { 0 };
    assert_int_equal(elpis_cvec_write(path, "llama", NL, NE, rows, 2, 99, &err), ELPIS_OK);   /* end clamps to 3 */
    gguf_file *f = NULL;
    assert_int_equal(gguf_open(&f, path, &err), ELPIS_OK);
    assert_int_equal(f->n_tensors, 2);
    assert_null(gguf_find_tensor(f, "direction.1"));
    assert_non_null(gguf_find_tensor(f, "direction.3"));
    int64_t n;
    assert_true(gguf_get_i64(f, "controlvector.layer_count", &n) && n == 2);
    gguf_close(f);
    assert_int_equal(elpis_cvec_load(path, &g_hp, 1.0f, out, &err), ELPIS_OK);
    for (int i = 0; i < 2 * NE; i++) assert_true(out[i] == 0.0f);
    for (int i = 2 * NE; i < NL * NE; i++) assert_true(out[i] == rows[i]);

    assert_int_equal(elpis_cvec_write(tmp_path("none.gguf"), "llama", NL, NE, rows, 3, 2, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "no layers");
    assert_true(access(tmp_path("none.gguf"), F_OK) != 0);   /* nothing written */
}

/* Every rejection of llama.cpp's loader, plus the model checks it only warns about. */
static void test_load_errors(void **unused) {
    (void)unused;
    const char *cv = "controlvector";
    expect_load_error("index0.gguf", &(file_spec){ cv, "llama", 1, .t = { GOOD_T("direction.0") } }, ELPIS_EFORMAT,
                      "direction.0", "index 0");
    expect_load_error("embd.gguf", &(file_spec){ cv, "llama", 1, .t = { { "direction.1", ELPIS_F32, 1, NE - 1, 0 } } },
                      ELPIS_EINVAL, "direction.1", "n_embd is 8");
    expect_load_error("f16.gguf",
                      &(file_spec){ cv, "llama", 2, .t = { GOOD_T("direction.1"), { "direction.2", ELPIS_F16, 1, NE, 0 } } },
                      ELPIS_EFORMAT, "direction.2", "expected f32");
    expect_load_error("2d.gguf", &(file_spec){ cv, "llama", 1, .t = { { "direction.1", ELPIS_F32, 2, NE, 2 } } },
                      ELPIS_EFORMAT, "direction.1", "2-D");
    const char *bad_names[] = { "dir.1", "direction.x", "direction.01", "direction.1a", "direction.", "direction.-1",
                                "direction", "Direction.1" };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(bad_names); i++)
        expect_load_error("name.gguf", &(file_spec){ cv, "llama", 1, .t = { GOOD_T(bad_names[i]) } }, ELPIS_EFORMAT,
                          bad_names[i], "not direction.<layer>");
    expect_load_error("past.gguf", &(file_spec){ cv, "llama", 1, .t = { GOOD_T("direction.4") } }, ELPIS_EINVAL,
                      "direction.4", "last steerable layer 3");
    expect_load_error("arch.gguf", &(file_spec){ "llama", "llama", 1, .t = { GOOD_T("direction.1") } }, ELPIS_EFORMAT,
                      "not a control vector", NULL);
    expect_load_error("noarch.gguf", &(file_spec){ NULL, "llama", 1, .t = { GOOD_T("direction.1") } }, ELPIS_EFORMAT,
                      "not a control vector", NULL);
    expect_load_error("hint.gguf", &(file_spec){ cv, "qwen2", 1, .t = { GOOD_T("direction.1") } }, ELPIS_EINVAL,
                      "\"qwen2\"", "\"llama\"");
    expect_load_error("hinttype.gguf", &(file_spec){ cv, NULL, 1, .hint_u32 = true, .t = { GOOD_T("direction.1") } },
                      ELPIS_EFORMAT, "model_hint is not a string", NULL);
    expect_load_error("count.gguf", &(file_spec){ cv, "llama", 5, .t = { GOOD_T("direction.1") } }, ELPIS_EFORMAT,
                      "layer_count is 5", "1 tensors");
    expect_load_error("nan.gguf", &(file_spec){ cv, "llama", 1, .t = { GOOD_T("direction.2") }, .poison = NAN },
                      ELPIS_EFORMAT, "direction.2", "not finite");
    expect_load_error("empty.gguf", &(file_spec){ .arch = cv, .hint = "llama", .layer_count = -1 }, ELPIS_EFORMAT,
                      "no direction tensors", NULL);

    float out[NL * NE] = { 0 };
    elpis_error err = { 0 };
    const char *missing = tmp_path("missing.gguf");
    assert_int_not_equal(elpis_cvec_load(missing, &g_hp, 1.0f, out, &err), ELPIS_OK);
    assert_contains(err.msg, missing);
}

/* What llama.cpp accepts is accepted: a trailing dimension of 1 (ggml_n_dims
 * is 1), a u32 layer_count (repeng), no hint, no count, a subset of layers. */
static void test_load_lenient(void **unused) {
    (void)unused;
    const char *cv = "controlvector";
    const file_spec ok[] = {
        { cv, "llama", 1, .t = { { "direction.2", ELPIS_F32, 2, NE, 1 } } },
        { cv, "llama", 2, .count_u32 = true, .t = { GOOD_T("direction.1"), GOOD_T("direction.3") } },
        { cv, NULL, -1, .t = { GOOD_T("direction.3") } },
    };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(ok); i++) {
        const char *path = tmp_path("lenient.gguf");
        craft(path, &ok[i]);
        float out[NL * NE] = { 0 };
        elpis_error err = { 0 };
        if (elpis_cvec_load(path, &g_hp, 2.0f, out, &err) != ELPIS_OK) fail_msg("case %zu: %s", i, err.msg);
        float total = 0;
        for (int j = 0; j < NL * NE; j++) total += out[j];
        assert_true(total == 2.0f * 0.25f * NE * (float)(i == 1 ? 2 : 1));
    }
}

/* ==== quadrant files from the configuration ============================================================ */

static void test_vectors_load(void **unused) {
    (void)unused;
    float rows[NL * NE];
    fill_rows(rows);
    elpis_error err = { 0 };
    assert_int_equal(elpis_cvec_write(tmp_path("excited.gguf"), "llama", NL, NE, rows, 0, 0, &err), ELPIS_OK);
    for (int i = 0; i < NL * NE; i++) rows[i] = -rows[i];
    assert_int_equal(elpis_cvec_write(tmp_path("depleted.gguf"), "llama", NL, NE, rows, 0, 0, &err), ELPIS_OK);

    elpis_emotion_config c;
    elpis_emotion_config_default(&c);
    assert_int_equal(elpis_emotion_config_set(&c, "vectors_excited", tmp_path("excited.gguf"), NULL, &err), ELPIS_OK);
    assert_int_equal(elpis_emotion_config_set(&c, "vectors_depleted", tmp_path("depleted.gguf"), NULL, &err), ELPIS_OK);
    elpis_emotion_vectors *v = NULL;
    assert_int_equal(elpis_emotion_vectors_load(&v, &c, &g_hp, &err), ELPIS_OK);
    assert_int_equal(v->n_layer, NL);
    assert_int_equal(v->n_embd, NE);
    assert_non_null(v->dir[ELPIS_QUADRANT_EXCITED]);
    assert_non_null(v->dir[ELPIS_QUADRANT_DEPLETED]);
    assert_null(v->dir[ELPIS_QUADRANT_CALM]);
    assert_null(v->dir[ELPIS_QUADRANT_FRUSTRATED]);
    assert_true(v->dir[ELPIS_QUADRANT_EXCITED][NE + 3] == 11.5f);
    assert_true(v->dir[ELPIS_QUADRANT_DEPLETED][NE + 3] == -11.5f);
    assert_true(v->dir[ELPIS_QUADRANT_EXCITED][3] == 0.0f);
    assert_string_equal(v->path[ELPIS_QUADRANT_EXCITED], tmp_path("excited.gguf"));
    elpis_emotion_vectors_free(v);

    /* a configured file that is missing, or made for another model: a startup error */
    const char *missing = tmp_path("calm.gguf");
    assert_int_equal(elpis_emotion_config_set(&c, "vectors_calm", missing, NULL, &err), ELPIS_OK);
    v = NULL;
    assert_int_not_equal(elpis_emotion_vectors_load(&v, &c, &g_hp, &err), ELPIS_OK);
    assert_null(v);
    assert_contains(err.msg, "emotion.vectors_calm");
    assert_contains(err.msg, missing);
    c.vectors[ELPIS_QUADRANT_CALM][0] = 0;
    elpis_hparams wide = g_hp;
    wide.n_embd = NE * 2;
    assert_int_equal(elpis_emotion_vectors_load(&v, &c, &wide, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "emotion.vectors_excited");
    assert_contains(err.msg, "n_embd is 16");
    elpis_hparams qwen = g_hp;
    qwen.arch = ELPIS_ARCH_QWEN2;
    assert_int_equal(elpis_emotion_vectors_load(&v, &c, &qwen, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "\"qwen2\"");
    elpis_hparams tiny = g_hp;
    tiny.n_layer = 1;
    assert_int_equal(elpis_emotion_vectors_load(&v, &c, &tiny, &err), ELPIS_EINVAL);
}

/* ==== blending ========================================================================================== */

static void test_blend_arithmetic(void **unused) {
    (void)unused;
    static float ex[NL * NE], ca[NL * NE], de[NL * NE];
    for (int i = 0; i < NL * NE; i++) {
        ex[i] = 1;
        ca[i] = 10;
        de[i] = 100;
    }
    elpis_emotion_vectors v = { .n_layer = NL, .n_embd = NE };
    v.dir[ELPIS_QUADRANT_EXCITED] = ex;
    v.dir[ELPIS_QUADRANT_CALM] = ca;
    v.dir[ELPIS_QUADRANT_DEPLETED] = de;
    float out[NL * NE];
    /* frustrated has a weight but no vector; depleted is below 0.01 and skipped */
    const double k[4] = { 0.5, 0.9, 0.25, 0.009 };
    assert_true(elpis_emotion_blend(&v, k, 0, 0, out));
    for (int e = 0; e < NE; e++) assert_true(out[e] == 0.0f);        /* row 0 always zero */
    for (int i = NE; i < NL * NE; i++) assert_true(out[i] == 3.0f);  /* 0.5*1 + 0.25*10 */

    const double k2[4] = { 0, 0, 0, 0.01 };                           /* 0.01 itself counts */
    assert_true(elpis_emotion_blend(&v, k2, 0, 0, out));
    assert_true(out[NE] == 1.0f);

    assert_true(elpis_emotion_blend(&v, k, 2, 2, out));              /* layer range */
    for (int i = 0; i < NL * NE; i++) assert_true(out[i] == (i / NE == 2 ? 3.0f : 0.0f));

    const double none[4] = { 0.005, 0.5, 0.001, 0 };
    assert_false(elpis_emotion_blend(&v, none, 0, 0, out));
    for (int i = 0; i < NL * NE; i++) assert_true(out[i] == 0.0f);

    /* at the excited corner with strength 2: exactly twice the excited vector */
    double co[4];
    elpis_emotion_coefficients(1, 1, 2.0, co);
    assert_true(elpis_emotion_blend(&v, co, 0, 0, out));
    for (int i = NE; i < NL * NE; i++) assert_true(out[i] == 2.0f);
    /* at the centre: a quarter of each vector present */
    elpis_emotion_coefficients(0, 0, 1.0, co);
    assert_true(elpis_emotion_blend(&v, co, 0, 0, out));
    for (int i = NE; i < NL * NE; i++) assert_true(out[i] == 0.25f * 111.0f);

    /* from a state and a configuration: strength and layer range are applied */
    elpis_emotion_config cfg;
    elpis_emotion_config_default(&cfg);
    cfg.steering_strength = 2.0;
    cfg.steering_layer_start = 3;
    elpis_emotion_state s;
    elpis_emotion_state_init(&s, &cfg, 0);
    s.valence = 1;
    s.arousal = -1;   /* calm corner */
    assert_true(elpis_emotion_steering(&v, &s, &cfg, out));
    for (int i = 0; i < NL * NE; i++) assert_true(out[i] == (i / NE == 3 ? 20.0f : 0.0f));
    cfg.steering_strength = 0;
    assert_false(elpis_emotion_steering(&v, &s, &cfg, out));
}

/* ==== mean difference ================================================================================== */

static void test_mean_diff(void **unused) {
    (void)unused;
    /* 3 blocks, n_embd 2: block 0 -> direction.1, block 1 -> direction.2, block 2 -> nothing */
    const float pos[] = { 4, 6, 5, 5, 9, 9 }, neg[] = { 1, 2, 5, 5, 0, 0 };
    float out[6];
    memset(out, 0x55, sizeof out);
    elpis_cvec_mean_diff(pos, neg, 3, 2, out);
    assert_true(out[0] == 0.0f && out[1] == 0.0f);
    assert_true(fabsf(out[2] - 0.6f) < 1e-7f && fabsf(out[3] - 0.8f) < 1e-7f);   /* (3,4)/5 */
    assert_true(out[4] == 0.0f && out[5] == 0.0f);                             /* zero diff stays zero */
}

/* ==== building from a real model ======================================================================== */

#ifdef ELPIS_HAVE_LAYER_CAPTURE

static elpis_model *load_stories(void) {
    char path[1024];
    const char *shared = getenv("ELPIS_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    elpis_model *m = NULL;
    elpis_error err = { 0 };
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) fail_msg("%s", err.msg);
    return m;
}

static void run_prompt(elpis_ctx *c, const elpis_model *m, const char *text, const float *steer, float *sum, int *n_tok) {
    elpis_tokens t = { 0 };
    elpis_error err = { 0 };
    assert_int_equal(elpis_tokenize(m->vocab, text, strlen(text), true, false, &t, &err), ELPIS_OK);
    int32_t pos[64], seq[64] = { 0 };
    assert_true(t.n <= 64);
    for (size_t i = 0; i < t.n; i++) pos[i] = (int32_t)i;
    elpis_kv_seq_truncate(c, 0, 0);
    assert_int_equal(elpis_ctx_set_steering(c, 0, steer, &err), ELPIS_OK);
    memset(sum, 0, (size_t)m->hp.n_layer * m->hp.n_embd * sizeof *sum);
    elpis_ctx_capture_layers(c, sum);
    elpis_batch b = { .n = (int32_t)t.n, .token = t.ids, .pos = pos, .seq = seq };
    assert_int_equal(elpis_forward(c, &b, &err), ELPIS_OK);
    elpis_ctx_capture_layers(c, NULL);
    *n_tok = (int)t.n;
    elpis_tokens_free(&t);
}

/* The capture reads the residual stream after steering (llama.cpp's l_out):
 * a vector at row 2 shifts the layer-2 sum by n_tokens * v exactly and
 * leaves the earlier layers bit-identical. */
static void test_capture_placement(void **unused) {
    (void)unused;
    elpis_model *m = load_stories();
    const int L = m->hp.n_layer, E = m->hp.n_embd;
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = 64;
    p.n_batch = 64;
    p.n_threads = 2;
    elpis_ctx *c = NULL;
    assert_int_equal(elpis_ctx_new(&c, m, &p, NULL), ELPIS_OK);
    float *a = calloc((size_t)L * E, sizeof *a), *b = calloc((size_t)L * E, sizeof *b);
    float *v = calloc((size_t)L * E, sizeof *v);
    for (int e = 0; e < E; e++) v[2 * E + e] = 0.5f;
    int n1, n2;
    run_prompt(c, m, "Once upon a time", NULL, a, &n1);
    run_prompt(c, m, "Once upon a time", v, b, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, (size_t)2 * E * sizeof *a);
    for (int e = 0; e < E; e++) assert_true(fabsf(b[2 * E + e] - a[2 * E + e] - 0.5f * n1) < 1e-3f);
    bool later_differs = false;
    for (int i = 3 * E; i < L * E; i++) later_differs |= a[i] != b[i];
    assert_true(later_differs || L <= 3);
    free(a); free(b); free(v);
    elpis_ctx_free(c);
    elpis_model_free(m);
}

static void test_build_on_stories(void **unused) {
    (void)unused;
    elpis_model *m = load_stories();
    const int L = m->hp.n_layer, E = m->hp.n_embd;
    const char *happy[] = { "The little girl laughed and played in the sun with her big red ball.", "Tom smiled." };
    const char *sad[] = { "The dog was sad and cried all night.", "Lily lost her toy and felt very bad." };
    elpis_cvec_build_params bp = { happy, 2, sad, 2, 2 };
    float *d = calloc((size_t)L * E, sizeof *d), *r = calloc((size_t)L * E, sizeof *r);
    float *back = calloc((size_t)L * E, sizeof *back);
    elpis_error err = { 0 };
    assert_int_equal(elpis_cvec_build(m, &bp, d, &err), ELPIS_OK);
    for (int e = 0; e < E; e++) assert_true(d[e] == 0.0f);
    for (int il = 1; il < L; il++) {
        double n2 = 0;
        for (int e = 0; e < E; e++) n2 += (double)d[il * E + e] * d[il * E + e];
        assert_true(fabs(sqrt(n2) - 1) < 1e-5);   /* unit length per layer */
    }
    /* the same as averaging, per set, each prompt's mean over its own tokens
     * (prompts of different lengths weigh the same) */
    {
        elpis_ctx_params p = elpis_ctx_default_params();
        p.n_ctx = 64;
        p.n_batch = 64;
        p.n_threads = 2;
        elpis_ctx *c = NULL;
        assert_int_equal(elpis_ctx_new(&c, m, &p, NULL), ELPIS_OK);
        float *sum = calloc((size_t)L * E, sizeof *sum), *pm = calloc((size_t)L * E, sizeof *pm);
        float *nm = calloc((size_t)L * E, sizeof *nm);
        for (int k = 0; k < 2; k++) {
            int n;
            run_prompt(c, m, happy[k], NULL, sum, &n);
            for (int i = 0; i < L * E; i++) pm[i] += sum[i] / n / 2;
            run_prompt(c, m, sad[k], NULL, sum, &n);
            for (int i = 0; i < L * E; i++) nm[i] += sum[i] / n / 2;
        }
        elpis_cvec_mean_diff(pm, nm, L, E, back);
        for (int i = 0; i < L * E; i++) assert_true(fabsf(back[i] - d[i]) < 1e-5f);
        free(sum); free(pm); free(nm);
        elpis_ctx_free(c);
    }

    /* swapping the sets negates every direction exactly */
    elpis_cvec_build_params rev = { sad, 2, happy, 2, 2 };
    assert_int_equal(elpis_cvec_build(m, &rev, r, &err), ELPIS_OK);
    for (int i = 0; i < L * E; i++) assert_true(r[i] == -d[i]);

    /* written, it loads back for this model */
    const char *path = tmp_path("stories-happy.gguf");
    assert_int_equal(elpis_cvec_write(path, elpis_arch_name(m->hp.arch), L, E, d, 0, 0, &err), ELPIS_OK);
    memset(back, 0, (size_t)L * E * sizeof *back);   /* the loader adds */
    assert_int_equal(elpis_cvec_load(path, &m->hp, 1.0f, back, &err), ELPIS_OK);
    assert_memory_equal(back, d, (size_t)L * E * sizeof *d);

    /* and steering with it moves the next-token distribution */
    elpis_ctx_params p = elpis_ctx_default_params();
    p.n_ctx = 64;
    p.n_batch = 64;
    p.n_threads = 2;
    elpis_ctx *c = NULL;
    assert_int_equal(elpis_ctx_new(&c, m, &p, NULL), ELPIS_OK);
    float *sum = calloc((size_t)L * E, sizeof *sum), *logits = calloc((size_t)m->hp.n_vocab, sizeof *logits);
    int n;
    run_prompt(c, m, "Once upon a time", NULL, sum, &n);
    memcpy(logits, elpis_ctx_logits(c, 0), (size_t)m->hp.n_vocab * sizeof *logits);
    run_prompt(c, m, "Once upon a time", d, sum, &n);
    double max_diff = 0;
    for (int i = 0; i < m->hp.n_vocab; i++) max_diff = fmax(max_diff, fabs(logits[i] - elpis_ctx_logits(c, 0)[i]));
    assert_true(max_diff > 0.01);
    free(sum);
    free(logits);
    elpis_ctx_free(c);

    elpis_cvec_build_params empty = { happy, 2, sad, 0, 2 };
    assert_int_equal(elpis_cvec_build(m, &empty, r, &err), ELPIS_EINVAL);
    assert_contains(err.msg, "no negative prompts");
    free(d); free(r); free(back);
    elpis_model_free(m);
}

#else

static void test_capture_placement(void **unused) {
    (void)unused;
    fprintf(stderr, "SKIP: the engine has no layer capture (ELPIS_HAVE_LAYER_CAPTURE)\n");
    skip();
}

static void test_build_on_stories(void **unused) {
    (void)unused;
    float out[1];
    elpis_error err = { 0 };
    assert_int_equal(elpis_cvec_build(NULL, NULL, out, &err), ELPIS_EUNSUPPORTED);
    skip();
}

#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_load_roundtrip),
        cmocka_unit_test(test_write_layer_range),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_lenient),
        cmocka_unit_test(test_vectors_load),
        cmocka_unit_test(test_blend_arithmetic),
        cmocka_unit_test(test_mean_diff),
        cmocka_unit_test(test_capture_placement),
        cmocka_unit_test(test_build_on_stories),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
