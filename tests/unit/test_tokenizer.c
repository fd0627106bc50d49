/* test_tokenizer.c -- tokenizer tests (cmocka).
 *
 * Golden data: ../shared/testdata/vocab/ggml-vocab-NAME.gguf with llama.cpp's
 * test strings (NAME.gguf.inp, separated by "\n__ggml_vocab_test__\n") and the
 * ids llama.cpp produces for them (NAME.gguf.out, one line each), tokenized
 * with add_special=false, parse_special=false. The shared directory comes from
 * $ELPIS_SHARED (default /work/main/../shared); missing files FAIL the test.
 *
 * Besides the golden ids we check: detokenizing the golden ids gives the
 * string back (SPM: after undoing the added space prefix), streaming output
 * is valid UTF-8 at every step, byte-level hold-back and U+FFFD replacement,
 * special-token parsing, BOS/EOS/EOG handling, bad metadata, lossless random
 * round trips, and tokenizing from two threads at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elpis/gguf.h"
#include "elpis/tokenizer.h"

/* ==== helpers ================================================================== */

static const char *shared_dir(void) {
    const char *s = getenv("ELPIS_SHARED");
    return s && *s ? s : "/work/main/../shared";
}

static char *vocab_path(const char *name, const char *suffix) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/testdata/vocab/ggml-vocab-%s.gguf%s", shared_dir(), name, suffix);
    return path;
}

static elpis_vocab *load_vocab(const char *name) {
    elpis_error err = { 0 };
    gguf_file *g = NULL;
    elpis_vocab *v = NULL;
    if (gguf_open(&g, vocab_path(name, ""), &err) != ELPIS_OK) fail_msg("open %s: %s", name, err.msg);
    if (elpis_vocab_load(&v, g, &err) != ELPIS_OK) fail_msg("load %s: %s", name, err.msg);
    gguf_close(g);                              /* the vocab must not depend on the mapping */
    return v;
}

typedef struct golden {
    char    *inp, *out;                         /* file contents (strings point into inp) */
    size_t   n;
    const char **str;
    size_t  *len;
    int32_t **ids;
    size_t  *n_ids;
} golden;

static char *read_all(const char *path, size_t *len) {
    elpis_error err = { 0 };
    char *buf = NULL;
    if (elpis_read_file(path, 64u << 20, &buf, len, &err) != ELPIS_OK) fail_msg("%s", err.msg);
    return buf;
}

static void parse_ids(golden *g, size_t i, char *line) {
    size_t cap = 8;
    g->ids[i] = malloc(cap * sizeof(int32_t));
    g->n_ids[i] = 0;
    for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
        if (g->n_ids[i] == cap) g->ids[i] = realloc(g->ids[i], (cap *= 2) * sizeof(int32_t));
        g->ids[i][g->n_ids[i]++] = (int32_t)strtol(tok, NULL, 10);
    }
}

static void load_golden(const char *name, golden *g) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t inp_len, out_len, cap = 64;
    memset(g, 0, sizeof *g);
    g->inp = read_all(vocab_path(name, ".inp"), &inp_len);
    g->out = read_all(vocab_path(name, ".out"), &out_len);
    g->str = malloc(cap * sizeof *g->str);
    g->len = malloc(cap * sizeof *g->len);
    for (char *p = g->inp, *end = g->inp + inp_len; p < end;) {
        char *s = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
        assert_non_null(s);                     /* the file ends with a separator line */
        if (g->n == cap) {
            g->str = realloc(g->str, (cap *= 2) * sizeof *g->str);
            g->len = realloc(g->len, cap * sizeof *g->len);
        }
        g->str[g->n] = p;
        g->len[g->n++] = (size_t)(s - p);
        p = s + sizeof sep - 1;
    }
    g->ids = calloc(g->n, sizeof *g->ids);
    g->n_ids = calloc(g->n, sizeof *g->n_ids);
    char *line = g->out;
    for (size_t i = 0; i < g->n; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);                    /* one .out line per test string */
        *nl = '\0';
        parse_ids(g, i, line);
        line = nl + 1;
    }
    assert_true(g->n >= 40);
}

static void free_golden(golden *g) {
    for (size_t i = 0; i < g->n; i++) free(g->ids[i]);
    free(g->ids); free(g->n_ids); free(g->str); free(g->len); free(g->inp); free(g->out);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static bool same_ids(const elpis_tokens *t, const int32_t *ids, size_t n) {
    return t->n == n && (n == 0 || memcmp(t->ids, ids, n * sizeof *ids) == 0);
}

static elpis_tokens tokenize(const elpis_vocab *v, const char *s, size_t n, bool add_special, bool parse_special) {
    elpis_tokens t = { 0 };
    elpis_error err = { 0 };
    if (elpis_tokenize(v, s, n, add_special, parse_special, &t, &err) != ELPIS_OK) fail_msg("tokenize: %s", err.msg);
    return t;
}

static bool utf8_ok(const char *s, size_t n) {            /* strict, independent of the code under test */
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i], k, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
        else return false;
        if (i + k >= n) return false;
        for (unsigned j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/* Stream ids through an elpis_detok; every push must emit valid UTF-8. */
static char *stream_decode(const elpis_vocab *v, const int32_t *ids, size_t n, bool special, bool strip, size_t *len) {
    size_t cap = elpis_detok_cap(v), o = 0;
    char *tmp = malloc(cap), *out = malloc(n * cap + cap + 1);
    elpis_detok d;
    elpis_detok_init(&d, v, special);
    d.strip_space_prefix = strip;
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? elpis_detok_push(&d, ids[i], tmp, cap) : elpis_detok_flush(&d, tmp, cap);
        assert_true(k <= cap);
        assert_true(utf8_ok(tmp, k));
        memcpy(out + o, tmp, k);
        o += k;
    }
    free(tmp);
    out[o] = '\0';
    *len = o;
    return out;
}

/* ==== golden ids + round trip ======================================================= */

static void check_golden(const char *name) {
    golden g;
    load_golden(name, &g);
    elpis_vocab *v = load_vocab(name);
    bool spm = elpis_vocab_kind_of(v) == ELPIS_VOCAB_SPM;
    int bad_ids = 0, bad_text = 0;
    for (size_t i = 0; i < g.n; i++) {
        elpis_tokens t = tokenize(v, g.str[i], g.len[i], false, false);
        if (!same_ids(&t, g.ids[i], g.n_ids[i])) {
            fprintf(stderr, "%s: case %zu \"%.*s\"\n", name, i, (int)g.len[i], g.str[i]);
            print_ids("expected", g.ids[i], g.n_ids[i]);
            print_ids("got     ", t.ids, t.n);
            bad_ids++;
        }
        elpis_tokens_free(&t);
        /* llama.cpp's detokenizer gives every test string back (SPM after
         * removing the space it prefixed), since all of them are valid UTF-8. */
        size_t n;
        char *s = stream_decode(v, g.ids[i], g.n_ids[i], false, spm, &n);
        if (n != g.len[i] || memcmp(s, g.str[i], n) != 0) {
            fprintf(stderr, "%s: case %zu decodes to \"%s\" instead of \"%.*s\"\n", name, i, s, (int)g.len[i], g.str[i]);
            bad_text++;
        }
        free(s);
    }
    elpis_vocab_free(v);
    free_golden(&g);
    assert_int_equal(bad_ids, 0);
    assert_int_equal(bad_text, 0);
}

static void test_golden_llama_spm(void **state) { (void)state; check_golden("llama-spm"); }
static void test_golden_llama_bpe(void **state) { (void)state; check_golden("llama-bpe"); }
static void test_golden_qwen2(void **state) { (void)state; check_golden("qwen2"); }
static void test_golden_gpt2(void **state) { (void)state; check_golden("gpt-2"); }
static void test_golden_phi3(void **state) { (void)state; check_golden("phi-3"); }

/* ==== metadata and accessors ========================================================= */

static void test_accessors(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm"), *l3 = load_vocab("llama-bpe"), *qw = load_vocab("qwen2"),
                *g2 = load_vocab("gpt-2");
    assert_int_equal(elpis_vocab_kind_of(spm), ELPIS_VOCAB_SPM);
    assert_int_equal(elpis_vocab_kind_of(l3), ELPIS_VOCAB_BPE);
    assert_string_equal(elpis_vocab_pre(l3), "llama-bpe");
    assert_string_equal(elpis_vocab_pre(qw), "qwen2");
    assert_int_equal(elpis_vocab_n_vocab(spm), 32000);
    assert_int_equal(elpis_vocab_n_vocab(qw), 151936);
    assert_int_equal(elpis_vocab_bos(spm), 1);
    assert_int_equal(elpis_vocab_eos(spm), 2);
    assert_int_equal(elpis_vocab_unk(spm), 0);
    assert_true(elpis_vocab_add_bos(spm) && !elpis_vocab_add_eos(spm) && elpis_vocab_add_space_prefix(spm));
    assert_true(elpis_vocab_add_bos(l3) && !elpis_vocab_add_space_prefix(l3));    /* llama3 pre adds BOS */
    assert_false(elpis_vocab_add_bos(qw));
    assert_false(elpis_vocab_add_bos(g2));
    assert_string_equal(elpis_vocab_text(spm, 1), "<s>");
    assert_string_equal(elpis_vocab_text(spm, -1), "");
    assert_string_equal(elpis_vocab_text(spm, 32000), "");
    assert_int_equal(elpis_vocab_type(spm, 1), ELPIS_TOKEN_CONTROL);
    assert_int_equal(elpis_vocab_type(spm, 13), ELPIS_TOKEN_BYTE);
    assert_int_equal(elpis_vocab_type(spm, 15043), ELPIS_TOKEN_NORMAL);
    assert_int_equal(elpis_vocab_type(spm, 99999), ELPIS_TOKEN_UNDEFINED);
    assert_int_equal(elpis_vocab_find(spm, "\xE2\x96\x81Hello"), 15043);
    assert_int_equal(elpis_vocab_find(spm, "no such token at all"), -1);
    assert_int_equal(elpis_vocab_find(spm, ""), -1);
    assert_int_equal(elpis_vocab_find(qw, "<|im_start|>"), 151644);
    assert_int_equal(elpis_vocab_find(g2, "\xC4\xA0"), 220);              /* "Ġ" */
    assert_true(elpis_vocab_score(spm, 15043) != 0.0f);
    assert_true(elpis_vocab_score(qw, 100) == 0.0f);
    elpis_vocab_free(spm); elpis_vocab_free(l3); elpis_vocab_free(qw); elpis_vocab_free(g2);
}

static void test_eog(void **state) {
    (void)state;
    elpis_vocab *l3 = load_vocab("llama-bpe"), *qw = load_vocab("qwen2"), *spm = load_vocab("llama-spm"),
                *g2 = load_vocab("gpt-2"), *phi = load_vocab("phi-3");
    assert_int_equal(elpis_vocab_eos(l3), 128001);
    assert_int_equal(elpis_vocab_eot(l3), elpis_vocab_find(l3, "<|eot_id|>"));
    assert_true(elpis_vocab_is_eog(l3, 128001));
    assert_true(elpis_vocab_is_eog(l3, elpis_vocab_find(l3, "<|eot_id|>")));
    assert_false(elpis_vocab_is_eog(l3, 9906));
    assert_false(elpis_vocab_is_eog(l3, 128000));                        /* BOS */
    assert_false(elpis_vocab_is_eog(l3, -3));
    assert_false(elpis_vocab_is_eog(l3, 1 << 30));
    assert_int_equal(elpis_vocab_eot(qw), 151645);                        /* <|im_end|> */
    assert_true(elpis_vocab_is_eog(qw, 151643) && elpis_vocab_is_eog(qw, 151645));
    assert_false(elpis_vocab_is_eog(qw, 151644));
    assert_int_equal(elpis_vocab_eot(spm), -1);
    assert_int_equal(elpis_vocab_eom(spm), -1);
    assert_true(elpis_vocab_is_eog(spm, 2));
    assert_false(elpis_vocab_is_eog(spm, 1));
    assert_int_equal(elpis_vocab_eot(g2), 50256);
    assert_true(elpis_vocab_is_eog(phi, elpis_vocab_find(phi, "<|end|>")));
    assert_true(elpis_vocab_is_eog(phi, 32000));
    elpis_vocab_free(l3); elpis_vocab_free(qw); elpis_vocab_free(spm); elpis_vocab_free(g2); elpis_vocab_free(phi);
}

/* ==== special tokens, BOS/EOS ========================================================== */

static void expect_ids(const elpis_vocab *v, const char *s, bool add_special, bool parse_special, const int32_t *ids,
                       size_t n) {
    elpis_tokens t = tokenize(v, s, strlen(s), add_special, parse_special);
    if (!same_ids(&t, ids, n)) {
        fprintf(stderr, "\"%s\" (add_special=%d parse_special=%d)\n", s, add_special, parse_special);
        print_ids("expected", ids, n);
        print_ids("got     ", t.ids, t.n);
        fail();
    }
    elpis_tokens_free(&t);
}
#define EXPECT(v, s, as, ps, ...)                                                              \
    do {                                                                                      \
        const int32_t ids_[] = { __VA_ARGS__ };                                               \
        expect_ids(v, s, as, ps, ids_, sizeof ids_ / sizeof ids_[0]);                          \
    } while (0)

static void test_special_parsing(void **state) {
    (void)state;
    elpis_vocab *qw = load_vocab("qwen2"), *l3 = load_vocab("llama-bpe"), *spm = load_vocab("llama-spm"),
                *phi = load_vocab("phi-3");
    int32_t user = elpis_vocab_find(qw, "user");
    assert_true(user >= 0);
    EXPECT(qw, "<|im_start|>user", false, true, 151644, user);
    /* without parse_special the control text is ordinary text */
    elpis_tokens t = tokenize(qw, "<|im_start|>user", 16, false, false);
    assert_true(t.n > 2 && t.ids[0] != 151644);
    elpis_tokens_free(&t);
    elpis_tokens mid = tokenize(qw, "\nhi", 3, false, false);
    assert_true(mid.n >= 1);
    t = tokenize(qw, "<|im_start|>user\nhi<|im_end|>", 29, false, true);
    assert_int_equal(t.n, mid.n + 3);
    assert_int_equal(t.ids[0], 151644);
    assert_int_equal(t.ids[1], user);
    assert_memory_equal(t.ids + 2, mid.ids, mid.n * sizeof *mid.ids);
    assert_int_equal(t.ids[t.n - 1], 151645);
    elpis_tokens_free(&t);
    elpis_tokens_free(&mid);
    EXPECT(l3, "<|begin_of_text|>Hello", false, true, 128000, 9906);
    EXPECT(l3, "<|begin_of_text|>Hello", true, true, 128000, 128000, 9906);   /* llama.cpp also doubles it */
    /* SPM: a fragment after a special token gets the space prefix again */
    EXPECT(spm, "<s>Hello", false, true, 1, 15043);
    EXPECT(spm, "Hello<s>Hello", false, true, 15043, 1, 15043);
    /* USER_DEFINED tokens (phi-3 "</s>") are matched even without parse_special */
    EXPECT(phi, "</s>", false, false, 2);
    elpis_vocab_free(qw); elpis_vocab_free(l3); elpis_vocab_free(spm); elpis_vocab_free(phi);
}

static void test_add_special(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm"), *l3 = load_vocab("llama-bpe"), *qw = load_vocab("qwen2");
    EXPECT(spm, "Hello world", true, false, 1, 15043, 3186);
    EXPECT(l3, "Hello world", true, false, 128000, 9906, 1917);
    EXPECT(qw, "Hello world", true, false, 9707, 1879);            /* qwen2 adds no BOS */
    EXPECT(spm, "", true, false, 1);
    elpis_tokens t = tokenize(spm, "", 0, false, false);
    assert_int_equal(t.n, 0);
    elpis_tokens_free(&t);
    /* appends to what is already there */
    t = tokenize(spm, "Hello", 5, true, false);
    elpis_error err = { 0 };
    assert_int_equal(elpis_tokenize(spm, " world", 6, false, false, &t, &err), ELPIS_OK);
    const int32_t want[] = { 1, 15043, 29871, 3186 };
    assert_true(same_ids(&t, want, 4));
    elpis_tokens_free(&t);
    assert_int_equal(elpis_tokenize(spm, NULL, 3, false, false, &t, &err), ELPIS_EINVAL);
    elpis_vocab_free(spm); elpis_vocab_free(l3); elpis_vocab_free(qw);
}

/* ==== detokenization ================================================================== */

static void test_token_to_piece(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm"), *g2 = load_vocab("gpt-2");
    char buf[64];
    memset(buf, 'x', sizeof buf);
    assert_int_equal(elpis_token_to_piece(spm, 15043, false, buf, sizeof buf), 6);
    assert_memory_equal(buf, " Hello", 6);
    assert_int_equal(elpis_token_to_piece(spm, 13, false, buf, sizeof buf), 1);   /* <0x0A> */
    assert_int_equal(buf[0], '\n');
    assert_int_equal(elpis_token_to_piece(spm, 1, false, buf, sizeof buf), 0);    /* <s> hidden */
    assert_int_equal(elpis_token_to_piece(spm, 1, true, buf, sizeof buf), 3);
    assert_memory_equal(buf, "<s>", 3);
    assert_int_equal(elpis_token_to_piece(spm, 0, false, buf, sizeof buf), 0);    /* <unk> hidden */
    assert_int_equal(elpis_token_to_piece(spm, -1, true, buf, sizeof buf), 0);
    assert_int_equal(elpis_token_to_piece(spm, 32000, true, buf, sizeof buf), 0);
    memset(buf, 'x', sizeof buf);
    assert_int_equal(elpis_token_to_piece(spm, 15043, false, buf, 3), 6);         /* too small: untouched */
    assert_int_equal(buf[0], 'x');
    assert_int_equal(elpis_token_to_piece(g2, 220, false, buf, sizeof buf), 1);   /* "Ġ" */
    assert_int_equal(buf[0], ' ');
    assert_int_equal(elpis_token_to_piece(g2, 198, false, buf, sizeof buf), 1);   /* "Ċ" */
    assert_int_equal(buf[0], '\n');
    assert_int_equal(elpis_token_to_piece(g2, 50256, false, buf, sizeof buf), 0);
    assert_int_equal(elpis_token_to_piece(g2, 50256, true, buf, sizeof buf), 13);
    assert_true(elpis_vocab_max_piece(g2) >= 13 && elpis_vocab_max_piece(g2) <= 256);
    elpis_vocab_free(spm); elpis_vocab_free(g2);
}

static void test_detok_holdback(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm");
    size_t cap = elpis_detok_cap(spm);
    char *out = malloc(cap);
    elpis_detok d;
    /* U+1F680 is F0 9F 9A 80, i.e. byte tokens 243 162 157 131 in this vocab */
    elpis_detok_init(&d, spm, false);
    assert_int_equal(elpis_detok_push(&d, 243, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 162, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 157, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 131, out, cap), 4);
    assert_memory_equal(out, "\xF0\x9F\x9A\x80", 4);
    assert_int_equal(elpis_detok_flush(&d, out, cap), 0);
    /* held bytes followed by something that cannot continue them: U+FFFD, then the text */
    assert_int_equal(elpis_detok_push(&d, 243, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 162, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 15043, out, cap), 9);
    assert_memory_equal(out, "\xEF\xBF\xBD Hello", 9);
    /* a lone continuation byte is replaced at once, not held */
    assert_int_equal(elpis_detok_push(&d, 131, out, cap), 3);
    assert_memory_equal(out, "\xEF\xBF\xBD", 3);
    /* a cut-off character at the end of the stream */
    assert_int_equal(elpis_detok_push(&d, 243, out, cap), 0);
    assert_int_equal(elpis_detok_flush(&d, out, cap), 3);
    assert_memory_equal(out, "\xEF\xBF\xBD", 3);
    assert_int_equal(elpis_detok_flush(&d, out, cap), 0);
    /* too small a buffer: the needed size comes back and nothing is consumed */
    assert_int_equal(elpis_detok_push(&d, 243, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 162, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 157, out, cap), 0);
    assert_int_equal(elpis_detok_push(&d, 131, out, 2), 4);
    assert_int_equal(elpis_detok_push(&d, 131, out, cap), 4);
    assert_memory_equal(out, "\xF0\x9F\x9A\x80", 4);
    /* generated pieces keep their leading space unless asked otherwise */
    elpis_detok_init(&d, spm, false);
    assert_int_equal(elpis_detok_push(&d, 15043, out, cap), 6);
    elpis_detok_init(&d, spm, false);
    d.strip_space_prefix = true;
    assert_int_equal(elpis_detok_push(&d, 1, out, cap), 0);              /* BOS does not use up the strip */
    assert_int_equal(elpis_detok_push(&d, 15043, out, cap), 5);
    assert_memory_equal(out, "Hello", 5);
    assert_int_equal(elpis_detok_push(&d, 3186, out, cap), 6);            /* only the first piece */
    free(out);
    elpis_vocab_free(spm);
}

/* A multi-byte character split over BPE tokens is held until complete. */
static void test_detok_bpe_split_char(void **state) {
    (void)state;
    elpis_vocab *g2 = load_vocab("gpt-2");
    const char *s = "\xF0\x9F\xA6\x99";                                 /* U+1F999 */
    elpis_tokens t = tokenize(g2, s, 4, false, false);
    assert_true(t.n >= 2);
    size_t cap = elpis_detok_cap(g2), total = 0;
    char *out = malloc(cap);
    elpis_detok d;
    elpis_detok_init(&d, g2, false);
    for (size_t i = 0; i < t.n; i++) {
        size_t k = elpis_detok_push(&d, t.ids[i], out, cap);
        if (i + 1 < t.n) assert_int_equal(k, 0);
        else { assert_int_equal(k, 4); assert_memory_equal(out, s, 4); }
        total += k;
    }
    assert_int_equal(total, 4);
    free(out);
    elpis_tokens_free(&t);
    elpis_vocab_free(g2);
}

static void test_detokenize_whole(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm");
    elpis_tokens t = tokenize(spm, "Hello world\n", 12, true, false);
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    assert_int_equal(elpis_detokenize(spm, t.ids, t.n, false, true, &b, &err), ELPIS_OK);
    assert_string_equal(b.data, "Hello world\n");
    b.len = 0;
    assert_int_equal(elpis_detokenize(spm, t.ids, t.n, true, false, &b, &err), ELPIS_OK);
    assert_string_equal(b.data, "<s> Hello world\n");
    elpis_buf_free(&b);
    elpis_tokens_free(&t);
    elpis_vocab_free(spm);
}

/* ==== robustness: random input, lossless round trips =================================== */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Random valid UTF-8 of up to cap bytes, mixing ASCII, spaces, digits and
 * characters of 2, 3 and 4 bytes -- but never U+2581, which SPM by design
 * decodes as a space. */
static size_t random_utf8(char *s, size_t cap) {
    size_t n = 0, want = rnd() % cap;
    while (n + 4 <= want) {
        uint32_t cp, r = rnd() % 8;
        if (r < 3) cp = 32 + rnd() % 95;
        else if (r == 3) cp = (uint32_t)" \n\t0123456789"[rnd() % 13];
        else if (r == 4) cp = 0x80 + rnd() % 0x780;
        else if (r == 5) { cp = 0x800 + rnd() % 0xF800; if ((cp >= 0xD800 && cp < 0xE000) || cp == 0x2581) cp = 0xFFFD; }
        else if (r == 6) cp = 0x10000 + rnd() % 0x100000;
        else cp = 0x1F600 + rnd() % 64;
        if (cp < 0x80) s[n++] = (char)cp;
        else if (cp < 0x800) { s[n++] = (char)(0xC0 | cp >> 6); s[n++] = (char)(0x80 | (cp & 63)); }
        else if (cp < 0x10000) {
            s[n++] = (char)(0xE0 | cp >> 12); s[n++] = (char)(0x80 | ((cp >> 6) & 63)); s[n++] = (char)(0x80 | (cp & 63));
        } else {
            s[n++] = (char)(0xF0 | cp >> 18); s[n++] = (char)(0x80 | ((cp >> 12) & 63));
            s[n++] = (char)(0x80 | ((cp >> 6) & 63)); s[n++] = (char)(0x80 | (cp & 63));
        }
    }
    return n;
}

/* Concatenated raw pieces of ids. */
static char *raw_pieces(const elpis_vocab *v, const elpis_tokens *t, size_t *len) {
    size_t cap = elpis_vocab_max_piece(v), o = 0;
    char *s = malloc(t->n * cap + 1);
    for (size_t i = 0; i < t->n; i++) o += elpis_token_to_piece(v, t->ids[i], false, s + o, cap);
    *len = o;
    return s;
}

static void test_random_bytes(void **state) {
    (void)state;
    elpis_vocab *spm = load_vocab("llama-spm"), *g2 = load_vocab("gpt-2"), *qw = load_vocab("qwen2");
    char text[200], want[202];
    for (int iter = 0; iter < 300; iter++) {
        size_t n = rnd() % sizeof text;
        if (iter % 3 == 2) n = random_utf8(text, sizeof text - 4);
        else
            for (size_t i = 0; i < n; i++) text[i] = (char)(iter & 1 ? rnd() : (rnd() % 96) + 32 - (rnd() % 4 == 0) * 22);
        /* SPM byte fallback is lossless for valid UTF-8: pieces give " " + text
         * back. (For invalid input a lead byte can swallow the 3 bytes of an
         * escaped space into one pseudo-character, which then falls back to
         * bytes E2 96 81 -- llama.cpp splits the same way.) */
        elpis_tokens t = tokenize(spm, text, n, false, false);
        size_t len;
        char *s = raw_pieces(spm, &t, &len);
        want[0] = ' ';
        memcpy(want + 1, text, n);
        if (utf8_ok(text, n)) {
            assert_int_equal(len, n ? n + 1 : 0);
            assert_memory_equal(s, want, len);
        }
        free(s);
        elpis_tokens_free(&t);
        /* BPE: every byte maps, so valid UTF-8 comes back exactly */
        for (int k = 0; k < 2; k++) {
            const elpis_vocab *v = k ? qw : g2;
            t = tokenize(v, text, n, false, false);
            s = raw_pieces(v, &t, &len);
            assert_true(utf8_ok(s, len));
            if (utf8_ok(text, n)) { assert_int_equal(len, n); assert_memory_equal(s, text, n); }
            free(s);
            elpis_tokens_free(&t);
        }
    }
    /* an invalid byte is tokenized as U+FFFD */
    elpis_tokens a = tokenize(g2, "a\xFF" "b", 3, false, false), b = tokenize(g2, "a\xEF\xBF\xBD" "b", 5, false, false);
    assert_true(a.n == b.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0);
    elpis_tokens_free(&a); elpis_tokens_free(&b);
    elpis_vocab_free(spm); elpis_vocab_free(g2); elpis_vocab_free(qw);
}

static void test_long_input(void **state) {
    (void)state;
    const char *names[] = { "llama-bpe", "qwen2", "gpt-2", "llama-spm" };
    size_t n = 200000;
    char *text = malloc(n + 2);
    for (size_t i = 0; i < n; i++) text[i] = i % 1000 == 999 ? '\n' : ' ';
    memcpy(text + n, "ab", 2);
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        elpis_vocab *v = load_vocab(names[k]);
        elpis_tokens t = tokenize(v, text, n + 2, false, false);
        size_t len;
        char *s = raw_pieces(v, &t, &len);
        bool spm = elpis_vocab_kind_of(v) == ELPIS_VOCAB_SPM;
        assert_int_equal(len, n + 2 + spm);
        assert_memory_equal(s + spm, text, n + 2);
        free(s);
        elpis_tokens_free(&t);
        elpis_vocab_free(v);
    }
    free(text);
}

/* ==== threads ============================================================================ */

typedef struct thread_job {
    const elpis_vocab *v;
    const golden *g;
    int failures;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    for (int rep = 0; rep < 20; rep++)
        for (size_t i = 0; i < j->g->n; i++) {
            elpis_tokens t = { 0 };
            if (elpis_tokenize(j->v, j->g->str[i], j->g->len[i], false, false, &t, NULL) != ELPIS_OK ||
                !same_ids(&t, j->g->ids[i], j->g->n_ids[i]))
                j->failures++;
            elpis_tokens_free(&t);
        }
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    const char *names[] = { "qwen2", "llama-spm" };
    for (size_t k = 0; k < 2; k++) {
        golden g;
        load_golden(names[k], &g);
        elpis_vocab *v = load_vocab(names[k]);
        thread_job jobs[2] = { { v, &g, 0 }, { v, &g, 0 } };
        pthread_t th[2];
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        assert_int_equal(jobs[0].failures, 0);
        assert_int_equal(jobs[1].failures, 0);
        elpis_vocab_free(v);
        free_golden(&g);
    }
}

/* ==== bad metadata (GGUF built in memory) ================================================ */

typedef struct gbuild { elpis_buf body; uint64_t n_kv; } gbuild;

static void put(elpis_buf *b, const void *p, size_t n) { assert_int_equal(elpis_buf_append(b, p, n), ELPIS_OK); }
static void put_u32(elpis_buf *b, uint32_t x) { put(b, &x, 4); }
static void put_u64(elpis_buf *b, uint64_t x) { put(b, &x, 8); }
static void put_str(elpis_buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void kv_head(gbuild *g, const char *key, uint32_t type) { put_str(&g->body, key); put_u32(&g->body, type); g->n_kv++; }
static void kv_str(gbuild *g, const char *key, const char *val) { kv_head(g, key, GGUF_STRING); put_str(&g->body, val); }
static void kv_u32(gbuild *g, const char *key, uint32_t val) { kv_head(g, key, GGUF_UINT32); put_u32(&g->body, val); }
static void kv_arr_head(gbuild *g, const char *key, uint32_t et, size_t n) {
    kv_head(g, key, GGUF_ARRAY);
    put_u32(&g->body, et);
    put_u64(&g->body, n);
}
static void kv_strs(gbuild *g, const char *key, const char *const *s, size_t n) {
    kv_arr_head(g, key, GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) put_str(&g->body, s[i]);
}
static void kv_f32s(gbuild *g, const char *key, const float *x, size_t n) {
    kv_arr_head(g, key, GGUF_FLOAT32, n);
    put(&g->body, x, n * 4);
}
static void kv_i32s(gbuild *g, const char *key, const int32_t *x, size_t n) {
    kv_arr_head(g, key, GGUF_INT32, n);
    put(&g->body, x, n * 4);
}

/* Parse the built file and load a vocab from it; returns the status. */
static elpis_status build_and_load(gbuild *g, elpis_vocab **v, elpis_error *err) {
    elpis_buf file = { 0 };
    gguf_file *f = NULL;
    put(&file, "GGUF", 4);
    put_u32(&file, 3);
    put_u64(&file, 0);
    put_u64(&file, g->n_kv);
    put(&file, g->body.data, g->body.len);
    elpis_error perr = { 0 };
    if (gguf_parse(&f, file.data, file.len, "mem.gguf", &perr) != ELPIS_OK) fail_msg("gguf_parse: %s", perr.msg);
    *v = NULL;
    elpis_status st = elpis_vocab_load(v, f, err);
    gguf_close(f);
    elpis_buf_free(&file);
    elpis_buf_free(&g->body);
    return st;
}

static const char *const TINY_TOKENS[] = { "<unk>", "<s>", "</s>", ("\xE2\x96\x81" "a"), "a", "<0x62>" };
static const float TINY_SCORES[] = { 0, 0, 0, -1, -2, 0 };
static const int32_t TINY_TYPES[] = { 2, 3, 3, 1, 1, 6 };

static void expect_load_error(gbuild *g, elpis_status want, const char *needle) {
    elpis_vocab *v = NULL;
    elpis_error err = { 0 };
    elpis_status st = build_and_load(g, &v, &err);
    if (st != want || !strstr(err.msg, needle)) fail_msg("status %d, message \"%s\" (wanted %d, \"%s\")", st, err.msg, want, needle);
    assert_null(v);
}

static void test_bad_metadata(void **state) {
    (void)state;
    gbuild g = { 0 };
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.model");

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "bert");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    expect_load_error(&g, ELPIS_EUNSUPPORTED, "bert");

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.tokens");

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.scores");        /* SPM needs scores */

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    kv_f32s(&g, "tokenizer.ggml.scores", TINY_SCORES, 5);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.scores");        /* wrong length */

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    kv_f32s(&g, "tokenizer.ggml.scores", TINY_SCORES, 6);
    kv_i32s(&g, "tokenizer.ggml.token_type", TINY_TYPES, 4);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.token_type");

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 0);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.tokens");        /* empty vocabulary */

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.merges");        /* BPE needs merges */

    g = (gbuild){ 0 };
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    kv_u32(&g, "tokenizer.ggml.merges", 7);
    expect_load_error(&g, ELPIS_EFORMAT, "tokenizer.ggml.merges");        /* wrong type */
}

/* A tiny but valid SPM vocab: bad ids are ignored, missing byte tokens fall
 * back to <unk>, and nothing crashes. */
static void test_tiny_spm(void **state) {
    (void)state;
    gbuild g = { 0 };
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", TINY_TOKENS, 6);
    kv_f32s(&g, "tokenizer.ggml.scores", TINY_SCORES, 6);
    kv_i32s(&g, "tokenizer.ggml.token_type", TINY_TYPES, 6);
    kv_u32(&g, "tokenizer.ggml.bos_token_id", 1000);                      /* out of range: default stays */
    kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    elpis_vocab *v = NULL;
    elpis_error err = { 0 };
    assert_int_equal(build_and_load(&g, &v, &err), ELPIS_OK);
    assert_int_equal(elpis_vocab_bos(v), 1);
    assert_int_equal(elpis_vocab_eot(v), -1);
    EXPECT(v, "a", true, false, 1, 3);
    EXPECT(v, "ab", false, false, 3, 5);                                  /* 'b' via <0x62> */
    EXPECT(v, "c", false, false, 0, 0, 0, 0);                             /* "▁" and "c" have no byte tokens */
    EXPECT(v, "<s>", false, true, 1);
    elpis_vocab_free(v);
    elpis_vocab_free(NULL);
}

/* The default pre-tokenizer (an unknown tokenizer.ggml.pre) applies four
 * regexes in turn, each splitting the pieces of the previous one, and text a
 * regex does not match stays a piece of its own. With the gpt-2 vocabulary
 * relabelled, "Hello, world! 12345" must split into Hello | , | " world" | ! |
 * " " | 123 | 45, each then tokenized as the gpt-2 regex would leave it. */
static void kv_gstrs(gbuild *g, const char *key, const gguf_kv *src) {
    kv_arr_head(g, key, GGUF_STRING, src->arr_n);
    for (uint64_t i = 0; i < src->arr_n; i++) {
        put_u64(&g->body, src->arr_str[i].len);
        put(&g->body, src->arr_str[i].ptr, src->arr_str[i].len);
    }
}

static void test_default_pre(void **state) {
    (void)state;
    elpis_error err = { 0 };
    gguf_file *f = NULL;
    if (gguf_open(&f, vocab_path("gpt-2", ""), &err) != ELPIS_OK) fail_msg("%s", err.msg);
    gbuild g = { 0 };
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_str(&g, "tokenizer.ggml.pre", "no-such-pre");
    kv_gstrs(&g, "tokenizer.ggml.tokens", gguf_find(f, "tokenizer.ggml.tokens"));
    kv_gstrs(&g, "tokenizer.ggml.merges", gguf_find(f, "tokenizer.ggml.merges"));
    gguf_close(f);
    elpis_vocab *dflt = NULL, *g2 = load_vocab("gpt-2");
    assert_int_equal(build_and_load(&g, &dflt, &err), ELPIS_OK);
    assert_string_equal(elpis_vocab_pre(dflt), "no-such-pre");
    const char *pieces[] = { "Hello", ",", " world", "!", " ", "123", "45" };
    elpis_tokens want = { 0 };
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++)
        assert_int_equal(elpis_tokenize(g2, pieces[i], strlen(pieces[i]), false, false, &want, &err), ELPIS_OK);
    expect_ids(dflt, "Hello, world! 12345", false, false, want.ids, want.n);
    /* and the plain gpt-2 pre-tokenizer keeps " 12345" together */
    elpis_tokens a = tokenize(g2, "Hello, world! 12345", 19, false, false);
    assert_false(same_ids(&a, want.ids, want.n));
    elpis_tokens_free(&a);
    elpis_tokens_free(&want);
    elpis_vocab_free(dflt);
    elpis_vocab_free(g2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_llama_spm),
        cmocka_unit_test(test_golden_llama_bpe),
        cmocka_unit_test(test_golden_qwen2),
        cmocka_unit_test(test_golden_gpt2),
        cmocka_unit_test(test_golden_phi3),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_eog),
        cmocka_unit_test(test_special_parsing),
        cmocka_unit_test(test_add_special),
        cmocka_unit_test(test_token_to_piece),
        cmocka_unit_test(test_detok_holdback),
        cmocka_unit_test(test_detok_bpe_split_char),
        cmocka_unit_test(test_detokenize_whole),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_tiny_spm),
        cmocka_unit_test(test_default_pre),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
