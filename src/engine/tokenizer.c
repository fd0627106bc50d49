/* tokenizer.c -- SPM and byte-level BPE tokenizers, compatible with llama.cpp.
 *
 * DESIGN
 * ------
 * elpis_vocab_load copies the tokenizer.* metadata into flat arrays that are
 * never modified afterwards:
 *   - token texts in one NUL-separated blob (text/text_off), plus a decoded
 *     "piece" per token (piece/piece_off) computed once, so detokenizing is a
 *     table look-up;
 *   - an open-addressing hash (power-of-two table, linear probing, load <= 1/2)
 *     from token text to id, and for BPE one from merge pair to rank. Keys
 *     are never stored twice: a slot holds a 32-bit hash and an index into the
 *     blobs, so a look-up hashes the caller's bytes and compares in place --
 *     no allocation per look-up;
 *   - for BPE, the pre-tokenizer regexes compiled once with PCRE2 (UTF+UCP,
 *     JIT when available).
 *
 * elpis_tokenize follows llama.cpp's llama_tokenize step by step:
 *   1. Special-token partition (tokenizer_st_partition): the input is split on
 *      the literal text of CONTROL/UNKNOWN (only with parse_special) and
 *      USER_DEFINED (always) tokens, taking the tokens longest first, each one
 *      splitting every raw fragment left by the previous ones.
 *   2. Each raw fragment goes to SPM or BPE:
 *      SPM: optional " " prefix, ' ' -> U+2581, split into UTF-8 characters,
 *           repeatedly merge the adjacent pair whose concatenation is the
 *           vocab token with the highest score (ties: leftmost), then emit
 *           each symbol's token or its bytes as <0xXX> tokens.
 *      BPE: replace invalid UTF-8 by U+FFFD, split by each regex of the
 *           pre-tokenizer in turn (text a regex does not match stays a piece of
 *           its own, as in llama.cpp's unicode_regex_split), map every byte of
 *           a piece through GPT-2's bytes_to_unicode, then repeatedly merge the
 *           adjacent pair with the lowest merge rank (ties: leftmost).
 *   Both merge loops use a binary heap of candidate pairs with lazy deletion:
 *   symbols only ever grow by absorbing their right neighbour, so a stale pair
 *   is detected by its recorded byte size no longer matching left+right.
 *
 * INVARIANTS
 *   - The vocab is immutable after load; tokenization keeps every piece of
 *     mutable state (scratch arrays, PCRE2 match data) in a per-call tok_run,
 *     so concurrent calls on one vocab are safe. PCRE2 compiled code (and its
 *     JIT code, which uses a stack block on the calling thread's machine
 *     stack) may be shared between threads.
 *   - Every id stored in the vocab (bos, eos, specials, byte tokens, hash
 *     values) is in [0, n_vocab) or -1.
 *   - BPE subjects handed to PCRE2 are valid UTF-8 (we sanitize first), which
 *     is why matching can use PCRE2_NO_UTF_CHECK.
 *   - Merge ranks are < 2^24, so they are exact as floats; that lets SPM
 *     (key = -score) and BPE (key = rank) share one min-heap.
 *
 * KNOWN DIFFERENCES FROM llama.cpp (all outside its golden tests)
 *   - llama.cpp's per-model token attributes (e.g. rstrip on Phi-3 special
 *     tokens, lstrip on <mask>) are not in the GGUF and are not applied.
 *   - BPE: an invalid byte becomes one U+FFFD (llama.cpp agrees for bad lead
 *     or truncated sequences; it accepts overlong forms and surrogates, which
 *     we replace too). A final BPE symbol missing from the vocab is emitted as
 *     one token per mapped character (= per original byte); llama.cpp looks up
 *     its raw UTF-8 bytes, which only differs where it would drop bytes.
 *   - Detokenizing never applies clean_up_tokenization_spaces, and a mapped
 *     BPE character outside bytes_to_unicode is copied through unchanged.
 */
#include "elpis/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits far beyond any real vocabulary; anything larger is corrupt data. */
#define VOCAB_MAX   (1 << 24)        /* tokens */
#define MERGES_MAX  (1 << 24)        /* also keeps ranks exact in a float */
#define TEXT_MAX    ((size_t)1 << 30) /* bytes per elpis_tokenize call */
#define PRE_NAME_MAX 64
#define EOG_MAX     16

#define KEY_MODEL  "tokenizer.ggml.model"
#define KEY_PRE    "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES  "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

enum pre_type { PRE_DEFAULT, PRE_LLAMA3, PRE_QWEN2, PRE_GPT2 };

/* Open-addressing slot: the hash of the key and the index of the entry whose
 * text lives in one of the vocab's blobs. idx < 0 marks an empty slot. */
typedef struct hslot {
    uint32_t hash;
    int32_t  idx;
} hslot;

typedef struct htab {
    hslot   *slots;
    uint32_t mask;          /* n_slots - 1 */
} htab;

struct elpis_vocab {
    elpis_vocab_kind kind;
    int32_t   n;                   /* tokens */
    char     *text;                /* token texts, each NUL-terminated */
    uint32_t *text_off;            /* [n+1]: text i is text+text_off[i], length text_off[i+1]-text_off[i]-1 */
    float    *score;               /* [n] (SPM) or NULL */
    uint8_t  *type;                /* [n] elpis_token_type */
    char     *piece;               /* decoded bytes per token (see token_piece) */
    uint32_t *piece_off;           /* [n+1] */
    size_t    max_piece;
    htab      tok_index;           /* text -> id (last id wins on duplicates, like llama.cpp) */

    /* BPE merges: merge r is "left right"; we keep left+right concatenated in
     * merge_text at merge_off[r] with the split point merge_split[r]. */
    int32_t   n_merges;
    char     *merge_text;
    uint32_t *merge_off;           /* [n_merges+1] */
    uint32_t *merge_split;         /* [n_merges]; 0 = malformed entry, never matched */
    htab      merge_index;         /* (left,right) -> rank (first rank wins on duplicates) */
    bool      ignore_merges;       /* llama3: a piece that is a whole token skips merging */

    enum pre_type pre;
    char      pre_name[PRE_NAME_MAX];
    pcre2_code *re[4];
    int       n_re;

    /* GPT-2 bytes_to_unicode as UTF-8, and its inverse for code points < 0x144 */
    uint8_t   b2u[256][2];
    uint8_t   b2u_len[256];
    int16_t   u2b[0x144];

    int32_t  *special;             /* CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
    int32_t   n_special;
    int32_t   byte_tok[256];       /* SPM byte fallback: <0xXX>, else the 1-byte token, else -1 */

    int32_t   bos, eos, eot, eom, unk;
    bool      add_bos, add_eos, add_space_prefix;
    int32_t   eog[EOG_MAX];
    int       n_eog;
};

/* ==== Hashing ================================================================ */

static uint32_t hash_bytes(const char *p, size_t n) {
    uint32_t h = 2166136261u;                 /* FNV-1a: short keys, simple, good enough */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

static elpis_status htab_init(htab *t, size_t n_keys) {
    size_t n = 16;
    while (n < 2 * n_keys) n *= 2;            /* load factor <= 1/2 keeps probes short */
    t->slots = malloc(n * sizeof *t->slots);
    if (!t->slots) return ELPIS_ENOMEM;
    for (size_t i = 0; i < n; i++) t->slots[i].idx = -1;
    t->mask = (uint32_t)(n - 1);
    return ELPIS_OK;
}

static size_t tok_len(const elpis_vocab *v, int32_t id) { return v->text_off[id + 1] - v->text_off[id] - 1; }
static const char *tok_text(const elpis_vocab *v, int32_t id) { return v->text + v->text_off[id]; }

static bool tok_eq(const elpis_vocab *v, int32_t id, const char *p, size_t n) {
    return tok_len(v, id) == n && memcmp(tok_text(v, id), p, n) == 0;
}

/* Returns the slot holding `p[0..n)` or the empty slot where it would go. */
static hslot *tok_slot(const elpis_vocab *v, const char *p, size_t n, uint32_t h) {
    for (uint32_t i = h & v->tok_index.mask;; i = (i + 1) & v->tok_index.mask) {
        hslot *s = &v->tok_index.slots[i];
        if (s->idx < 0 || (s->hash == h && tok_eq(v, s->idx, p, n))) return s;
    }
}

static int32_t tok_find(const elpis_vocab *v, const char *p, size_t n) {
    return tok_slot(v, p, n, hash_bytes(p, n))->idx;
}

/* The split point is part of the key: "ab"+"c" and "a"+"bc" are different merges. */
static uint32_t merge_hash(const char *p, size_t n, size_t split) {
    return hash_bytes(p, n) ^ ((uint32_t)split * 0x9E3779B1u);
}

static hslot *merge_slot(const elpis_vocab *v, const char *p, size_t n, size_t split, uint32_t h) {
    for (uint32_t i = h & v->merge_index.mask;; i = (i + 1) & v->merge_index.mask) {
        hslot *s = &v->merge_index.slots[i];
        if (s->idx < 0) return s;
        int32_t r = s->idx;
        if (s->hash == h && v->merge_split[r] == split && v->merge_off[r + 1] - v->merge_off[r] == n &&
            memcmp(v->merge_text + v->merge_off[r], p, n) == 0)
            return s;
    }
}

/* Rank of merging p[0..split) with p[split..n), or -1. */
static int32_t merge_rank(const elpis_vocab *v, const char *p, size_t n, size_t split) {
    return merge_slot(v, p, n, split, merge_hash(p, n, split))->idx;
}

/* ==== UTF-8 ================================================================== */

/* Length of a UTF-8 character from its first byte alone, as llama.cpp's
 * unicode_len_utf8: continuation and invalid bytes count as 1. */
static size_t utf8_lead_len(uint8_t c) {
    static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return len[c >> 4];
}

typedef enum { U8_OK, U8_SHORT, U8_BAD } u8res;

/* Strict decode of the character at s[0..n), n >= 1 (no overlongs, no
 * surrogates, <= U+10FFFF). *len receives the character length (U8_OK), the
 * length of the valid-but-cut-off prefix (U8_SHORT, == n), or the length of
 * the maximal ill-formed subpart to replace with one U+FFFD (U8_BAD). */
static u8res utf8_scan(const uint8_t *s, size_t n, size_t *len) {
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80) { *len = 1; return U8_OK; }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else { *len = 1; return U8_BAD; }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) { *len = i; return U8_SHORT; }
        uint8_t b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) { *len = i; return U8_BAD; }
    }
    *len = need + 1;
    return U8_OK;
}

static uint32_t utf8_decode(const uint8_t *s, size_t len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

static bool utf8_valid(const char *p, size_t n) {
    size_t len;
    for (size_t i = 0; i < n; i += len)
        if (utf8_scan((const uint8_t *)p + i, n - i, &len) != U8_OK) return false;
    return true;
}

static const char REPLACEMENT[3] = { (char)0xEF, (char)0xBF, (char)0xBD };   /* U+FFFD */

/* ==== Loading ================================================================ */

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other
 * 68 bytes to U+0100.. in increasing byte order (space -> U+0120 'Ġ'). */
static void init_byte_map(elpis_vocab *v) {
    int next = 0x100;
    for (int i = 0; i < 0x144; i++) v->u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = self ? b : next++;
        v->u2b[cp] = (int16_t)b;
        if (cp < 0x80) { v->b2u[b][0] = (uint8_t)cp; v->b2u_len[b] = 1; }
        else {
            v->b2u[b][0] = (uint8_t)(0xC0 | (cp >> 6));
            v->b2u[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
            v->b2u_len[b] = 2;
        }
    }
}

static elpis_status load_kind(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    gguf_str s;
    if (!gguf_get_str(g, KEY_MODEL, &s))
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is missing or not a string", g->path, KEY_MODEL);
    if (gguf_str_eq(s, "llama")) v->kind = ELPIS_VOCAB_SPM;
    else if (gguf_str_eq(s, "gpt2")) v->kind = ELPIS_VOCAB_BPE;
    else
        return elpis_fail(err, ELPIS_EUNSUPPORTED, "%s: %s \"%.*s\" is not supported (only \"llama\" and \"gpt2\")",
                          g->path, KEY_MODEL, (int)ELPIS_MIN(s.len, 64), s.ptr);
    return ELPIS_OK;
}

static elpis_status load_texts(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    const gguf_kv *kv = gguf_find(g, KEY_TOKENS);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is missing or not a string array", g->path, KEY_TOKENS);
    if (kv->arr_n == 0 || kv->arr_n > VOCAB_MAX)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s has %llu entries (allowed 1..%d)", g->path, KEY_TOKENS,
                          (unsigned long long)kv->arr_n, VOCAB_MAX);
    v->n = (int32_t)kv->arr_n;
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n; i++) total += kv->arr_str[i].len + 1;
    if (total > UINT32_MAX)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s holds %llu bytes of text (limit 4 GiB)", g->path, KEY_TOKENS,
                          (unsigned long long)total);
    v->text = malloc(total);
    v->text_off = malloc(((size_t)v->n + 1) * sizeof *v->text_off);
    if (!v->text || !v->text_off) return elpis_fail(err, ELPIS_ENOMEM, "%s: vocabulary text (%llu bytes)", g->path,
                                                    (unsigned long long)total);
    uint32_t off = 0;
    for (int32_t i = 0; i < v->n; i++) {
        v->text_off[i] = off;
        memcpy(v->text + off, kv->arr_str[i].ptr, kv->arr_str[i].len);
        off += (uint32_t)kv->arr_str[i].len;
        v->text[off++] = '\0';
    }
    v->text_off[v->n] = off;
    return ELPIS_OK;
}

static bool is_int_type(uint32_t t) {
    return t <= GGUF_INT32 || t == GGUF_UINT64 || t == GGUF_INT64;   /* types 0..5 are the small integers */
}

static elpis_status load_types(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    const gguf_kv *kv = gguf_find(g, KEY_TYPES);
    if (!(v->type = malloc((size_t)v->n))) return elpis_fail(err, ELPIS_ENOMEM, "%s: token types", g->path);
    if (!kv) {                                     /* optional, as in llama.cpp: all NORMAL */
        memset(v->type, ELPIS_TOKEN_NORMAL, (size_t)v->n);
        return ELPIS_OK;
    }
    if (kv->type != GGUF_ARRAY || !is_int_type(kv->arr_type))
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is not an integer array", g->path, KEY_TYPES);
    if (kv->arr_n != (uint64_t)v->n)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s has %llu entries but %s has %d", g->path, KEY_TYPES,
                          (unsigned long long)kv->arr_n, KEY_TOKENS, v->n);
    for (int32_t i = 0; i < v->n; i++) {
        int64_t t = gguf_arr_i64(kv, (uint64_t)i);
        v->type[i] = (uint8_t)(t >= 0 && t <= ELPIS_TOKEN_BYTE ? t : ELPIS_TOKEN_UNDEFINED);
    }
    return ELPIS_OK;
}

static elpis_status load_scores(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    const gguf_kv *kv = gguf_find(g, KEY_SCORES);
    if (v->kind != ELPIS_VOCAB_SPM) return ELPIS_OK;            /* BPE ranks come from merges */
    if (!kv || kv->type != GGUF_ARRAY || (kv->arr_type != GGUF_FLOAT32 && kv->arr_type != GGUF_FLOAT64))
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is missing or not a float array (needed by the SPM tokenizer)",
                          g->path, KEY_SCORES);
    if (kv->arr_n != (uint64_t)v->n)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s has %llu entries but %s has %d", g->path, KEY_SCORES,
                          (unsigned long long)kv->arr_n, KEY_TOKENS, v->n);
    if (!(v->score = malloc((size_t)v->n * sizeof *v->score)))
        return elpis_fail(err, ELPIS_ENOMEM, "%s: token scores", g->path);
    for (int32_t i = 0; i < v->n; i++) {
        float s = gguf_arr_f32(kv, (uint64_t)i);
        v->score[i] = isnan(s) ? -INFINITY : s;    /* NaN would break the heap order */
    }
    return ELPIS_OK;
}

static elpis_status index_tokens(elpis_vocab *v, elpis_error *err) {
    if (htab_init(&v->tok_index, (size_t)v->n)) return elpis_fail(err, ELPIS_ENOMEM, "token index");
    for (int32_t i = 0; i < v->n; i++) {
        size_t n = tok_len(v, i);
        if (n == 0) continue;                       /* an empty text can never be matched */
        uint32_t h = hash_bytes(tok_text(v, i), n);
        hslot *s = tok_slot(v, tok_text(v, i), n, h);
        s->hash = h;
        s->idx = i;                                 /* duplicates: the last id wins, as in llama.cpp */
    }
    return ELPIS_OK;
}

/* merges[i] is "left right", split at the first space after position 1 (so a
 * left part may itself be a single space); rank = i. */
static elpis_status load_merges(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    const gguf_kv *kv = gguf_find(g, KEY_MERGES);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is missing or not a string array (needed by the BPE tokenizer)",
                          g->path, KEY_MERGES);
    if (kv->arr_n > MERGES_MAX)
        return elpis_fail(err, ELPIS_EFORMAT, "%s: %s has %llu entries (limit %d)", g->path, KEY_MERGES,
                          (unsigned long long)kv->arr_n, MERGES_MAX);
    v->n_merges = (int32_t)kv->arr_n;
    uint64_t total = 0;
    for (int32_t i = 0; i < v->n_merges; i++) total += kv->arr_str[i].len;
    if (total > UINT32_MAX) return elpis_fail(err, ELPIS_EFORMAT, "%s: %s is too large", g->path, KEY_MERGES);
    v->merge_text = malloc(total ? total : 1);
    v->merge_off = malloc(((size_t)v->n_merges + 1) * sizeof *v->merge_off);
    v->merge_split = malloc(((size_t)v->n_merges + 1) * sizeof *v->merge_split);
    if (!v->merge_text || !v->merge_off || !v->merge_split || htab_init(&v->merge_index, (size_t)v->n_merges))
        return elpis_fail(err, ELPIS_ENOMEM, "%s: %d merges", g->path, v->n_merges);
    uint32_t off = 0;
    for (int32_t r = 0; r < v->n_merges; r++) {
        gguf_str s = kv->arr_str[r];
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        v->merge_off[r] = off;
        v->merge_split[r] = 0;
        if (!sp) continue;                          /* malformed: keep the rank slot, never match it */
        size_t split = (size_t)(sp - s.ptr), rlen = s.len - split - 1;
        memcpy(v->merge_text + off, s.ptr, split);
        memcpy(v->merge_text + off + split, sp + 1, rlen);
        v->merge_split[r] = (uint32_t)split;
        size_t n = split + rlen;
        off += (uint32_t)n;
        uint32_t h = merge_hash(v->merge_text + v->merge_off[r], n, split);
        v->merge_off[r + 1] = off;                  /* merge_slot reads the length of r */
        hslot *slot = merge_slot(v, v->merge_text + v->merge_off[r], n, split, h);
        if (slot->idx < 0) { slot->hash = h; slot->idx = r; }   /* duplicates: the lowest rank wins */
    }
    v->merge_off[v->n_merges] = off;
    return ELPIS_OK;
}

/* ---- pre-tokenizer ---------------------------------------------------------- */

#define RE_CONTRACTIONS_CI "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"

static const char *const RE_LLAMA3[] = {
    RE_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
/* Qwen2: the LLAMA3 expression with digits taken one at a time. */
static const char *const RE_QWEN2[] = {
    RE_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
static const char *const RE_GPT2_LIST[] = { RE_GPT2 };
static const char *const RE_DEFAULT[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]",
};

static const struct { const char *name; enum pre_type pre; } PRE_NAMES[] = {
    { "llama3", PRE_LLAMA3 }, { "llama-v3", PRE_LLAMA3 }, { "llama-bpe", PRE_LLAMA3 },
    { "falcon3", PRE_LLAMA3 }, { "pixtral", PRE_LLAMA3 },
    { "qwen2", PRE_QWEN2 }, { "deepseek-r1-qwen", PRE_QWEN2 }, { "kormo", PRE_QWEN2 },
    { "gpt-2", PRE_GPT2 }, { "phi-2", PRE_GPT2 },
    { "default", PRE_DEFAULT },
};

static void load_pre_name(elpis_vocab *v, const gguf_file *g) {
    gguf_str s;
    if (!gguf_get_str(g, KEY_PRE, &s) || s.len == 0) { strcpy(v->pre_name, "default"); return; }
    size_t n = ELPIS_MIN(s.len, (uint64_t)PRE_NAME_MAX - 1);
    memcpy(v->pre_name, s.ptr, n);
    v->pre_name[n] = '\0';
}

static elpis_status compile_pre(elpis_vocab *v, const gguf_file *g, elpis_error *err) {
    const char *const *list = RE_DEFAULT;
    int n = (int)ELPIS_ARRAY_LEN(RE_DEFAULT);
    size_t k = 0;
    while (k < ELPIS_ARRAY_LEN(PRE_NAMES) && strcmp(PRE_NAMES[k].name, v->pre_name) != 0) k++;
    v->pre = k < ELPIS_ARRAY_LEN(PRE_NAMES) ? PRE_NAMES[k].pre : PRE_DEFAULT;
    if (k == ELPIS_ARRAY_LEN(PRE_NAMES))            /* llama.cpp refuses; its ollama fork warns (so do we) */
        elpis_log(ELPIS_LOG_WARN, "%s: unknown pre-tokenizer \"%s\", using the default regexes", g->path, v->pre_name);
    if (v->pre == PRE_LLAMA3) { list = RE_LLAMA3; n = 1; v->ignore_merges = true; }
    if (v->pre == PRE_QWEN2) { list = RE_QWEN2; n = 1; }
    if (v->pre == PRE_GPT2) { list = RE_GPT2_LIST; n = 1; }
    for (int i = 0; i < n; i++) {
        int ec;
        PCRE2_SIZE eo;
        v->re[i] = pcre2_compile((PCRE2_SPTR)list[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!v->re[i]) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return elpis_fail(err, ELPIS_EUNSUPPORTED, "pre-tokenizer regex %d: %s at %zu", i, (char *)msg, (size_t)eo);
        }
        v->n_re = i + 1;
        (void)pcre2_jit_compile(v->re[i], PCRE2_JIT_COMPLETE);   /* optional: pcre2_match falls back to the interpreter */
    }
    return ELPIS_OK;
}

/* ---- special ids, flags, lists -------------------------------------------- */

/* A special id from `key`; like llama.cpp an out-of-range value is ignored
 * (the default stays), and a default outside the vocab becomes -1. */
static int32_t read_id(const elpis_vocab *v, const gguf_file *g, const char *key, int32_t dflt) {
    int64_t x;
    if (gguf_find(g, key)) {
        if (gguf_get_i64(g, key, &x) && x >= 0 && x < v->n) return (int32_t)x;
        elpis_log(ELPIS_LOG_WARN, "%s: %s is not a token id of this vocabulary; ignored", g->path, key);
    }
    return dflt >= 0 && dflt < v->n ? dflt : -1;
}

static int32_t find_first(const elpis_vocab *v, const char *const *texts, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok_find(v, texts[i], strlen(texts[i]));
        if (id >= 0) return id;
    }
    return -1;
}

static void add_eog(elpis_vocab *v, int32_t id) {
    if (id < 0 || v->n_eog == EOG_MAX) return;
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return;
    v->eog[v->n_eog++] = id;
}

static const char *const EOT_TEXTS[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>" };
static const char *const EOG_TEXTS[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                         "<|eom_id|>", "<EOT>", "<|end_of_text|>" };

static void load_special_ids(elpis_vocab *v, const gguf_file *g) {
    bool spm = v->kind == ELPIS_VOCAB_SPM;
    static const char *const eom_text[] = { "<|eom_id|>" };
    v->bos = read_id(v, g, "tokenizer.ggml.bos_token_id", spm ? 1 : 11);
    v->eos = read_id(v, g, "tokenizer.ggml.eos_token_id", spm ? 2 : 11);
    v->unk = read_id(v, g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    v->eot = read_id(v, g, "tokenizer.ggml.eot_token_id", -1);
    v->eom = read_id(v, g, "tokenizer.ggml.eom_token_id", -1);
    if (v->eot < 0) v->eot = find_first(v, EOT_TEXTS, ELPIS_ARRAY_LEN(EOT_TEXTS));
    if (v->eom < 0) v->eom = find_first(v, eom_text, 1);
    v->add_bos = spm || v->pre == PRE_LLAMA3;
    v->add_eos = false;
    v->add_space_prefix = spm;
    gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos);
    gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos);
    if (spm) gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
    add_eog(v, v->eos);
    add_eog(v, v->eot);
    add_eog(v, v->eom);
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(EOG_TEXTS); i++)
        add_eog(v, tok_find(v, EOG_TEXTS[i], strlen(EOG_TEXTS[i])));
}

static bool is_special_type(uint8_t t) {
    return t == ELPIS_TOKEN_CONTROL || t == ELPIS_TOKEN_USER_DEFINED || t == ELPIS_TOKEN_UNKNOWN;
}

typedef struct len_id { size_t len; int32_t id; } len_id;

static int cmp_len_id(const void *a, const void *b) {
    const len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;   /* longest first */
    return (x->id > y->id) - (x->id < y->id);                /* then by id, so the order is deterministic */
}

/* The tokens the partition step looks for, longest text first. */
static elpis_status load_specials(elpis_vocab *v, elpis_error *err) {
    int32_t n = 0;
    for (int32_t i = 0; i < v->n; i++) n += is_special_type(v->type[i]) && tok_len(v, i) > 0;
    len_id *tmp = malloc(((size_t)n + 1) * sizeof *tmp);
    v->special = malloc(((size_t)n + 1) * sizeof *v->special);
    if (!tmp || !v->special) { free(tmp); return elpis_fail(err, ELPIS_ENOMEM, "special token list"); }
    for (int32_t i = 0; i < v->n; i++)
        if (is_special_type(v->type[i]) && tok_len(v, i) > 0) tmp[v->n_special++] = (len_id){ tok_len(v, i), i };
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_len_id);
    for (int32_t k = 0; k < n; k++) v->special[k] = tmp[k].id;
    free(tmp);
    return ELPIS_OK;
}

static void load_byte_tokens(elpis_vocab *v) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[7] = { '<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0 };
        char raw = (char)b;
        int32_t id = tok_find(v, name, 6);
        v->byte_tok[b] = id >= 0 ? id : tok_find(v, &raw, 1);
    }
}

/* ---- decoded pieces ---------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Writes token id's bytes to dst (room for tok_len bytes always suffices:
 * every rule below shrinks or keeps the length) and returns their count. */
static size_t decode_piece(const elpis_vocab *v, int32_t id, char *dst) {
    const char *t = tok_text(v, id);
    size_t n = tok_len(v, id), o = 0, len;
    switch (v->type[id]) {
    case ELPIS_TOKEN_CONTROL:
    case ELPIS_TOKEN_UNKNOWN:
    case ELPIS_TOKEN_USER_DEFINED:
        memcpy(dst, t, n);
        return n;
    case ELPIS_TOKEN_BYTE:
        if (n == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>' && hexval(t[3]) >= 0 && hexval(t[4]) >= 0) {
            dst[0] = (char)(hexval(t[3]) * 16 + hexval(t[4]));
            return 1;
        }
        return 0;
    case ELPIS_TOKEN_NORMAL:
        break;
    default:
        return 0;                                   /* UNUSED / UNDEFINED render as nothing */
    }
    for (size_t i = 0; i < n; i += len) {
        const uint8_t *s = (const uint8_t *)t + i;
        if (utf8_scan(s, n - i, &len) != U8_OK) { dst[o++] = t[i]; len = 1; continue; }
        uint32_t cp = utf8_decode(s, len);
        if (v->kind == ELPIS_VOCAB_SPM && cp == 0x2581) dst[o++] = ' ';
        else if (v->kind == ELPIS_VOCAB_BPE && cp < 0x144 && v->u2b[cp] >= 0) dst[o++] = (char)v->u2b[cp];
        else { memcpy(dst + o, s, len); o += len; }
    }
    return o;
}

static elpis_status load_pieces(elpis_vocab *v, elpis_error *err) {
    v->piece = malloc(v->text_off[v->n]);
    v->piece_off = malloc(((size_t)v->n + 1) * sizeof *v->piece_off);
    if (!v->piece || !v->piece_off) return elpis_fail(err, ELPIS_ENOMEM, "token pieces");
    uint32_t off = 0;
    for (int32_t i = 0; i < v->n; i++) {
        v->piece_off[i] = off;
        size_t n = decode_piece(v, i, v->piece + off);
        off += (uint32_t)n;
        if (n > v->max_piece) v->max_piece = n;
    }
    v->piece_off[v->n] = off;
    return ELPIS_OK;
}

elpis_status elpis_vocab_load(elpis_vocab **out, const gguf_file *g, elpis_error *err) {
    elpis_status st;
    if (!out || !g) return elpis_fail(err, ELPIS_EINVAL, "elpis_vocab_load: NULL argument");
    elpis_vocab *v = calloc(1, sizeof *v);
    if (!v) return elpis_fail(err, ELPIS_ENOMEM, "vocab");
    init_byte_map(v);
    load_pre_name(v, g);
    if ((st = load_kind(v, g, err)) || (st = load_texts(v, g, err)) || (st = load_types(v, g, err)) ||
        (st = load_scores(v, g, err)) || (st = index_tokens(v, err)))
        goto fail;
    if (v->kind == ELPIS_VOCAB_BPE && ((st = load_merges(v, g, err)) || (st = compile_pre(v, g, err))))
        goto fail;
    load_special_ids(v, g);
    load_byte_tokens(v);
    if ((st = load_specials(v, err)) || (st = load_pieces(v, err))) goto fail;
    *out = v;
    return ELPIS_OK;
fail:
    elpis_vocab_free(v);
    return st;
}

void elpis_vocab_free(elpis_vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->n_re; i++) pcre2_code_free(v->re[i]);
    free(v->text); free(v->text_off); free(v->score); free(v->type);
    free(v->piece); free(v->piece_off); free(v->tok_index.slots);
    free(v->merge_text); free(v->merge_off); free(v->merge_split); free(v->merge_index.slots);
    free(v->special);
    free(v);
}

/* ==== Accessors ============================================================== */

static bool valid_id(const elpis_vocab *v, int32_t id) { return v && id >= 0 && id < v->n; }

elpis_vocab_kind elpis_vocab_kind_of(const elpis_vocab *v) { return v->kind; }
const char *elpis_vocab_pre(const elpis_vocab *v) { return v->pre_name; }
int32_t elpis_vocab_n_vocab(const elpis_vocab *v) { return v->n; }
int32_t elpis_vocab_bos(const elpis_vocab *v) { return v->bos; }
int32_t elpis_vocab_eos(const elpis_vocab *v) { return v->eos; }
int32_t elpis_vocab_eot(const elpis_vocab *v) { return v->eot; }
int32_t elpis_vocab_eom(const elpis_vocab *v) { return v->eom; }
int32_t elpis_vocab_unk(const elpis_vocab *v) { return v->unk; }
bool elpis_vocab_add_bos(const elpis_vocab *v) { return v->add_bos; }
bool elpis_vocab_add_eos(const elpis_vocab *v) { return v->add_eos; }
bool elpis_vocab_add_space_prefix(const elpis_vocab *v) { return v->add_space_prefix; }
size_t elpis_vocab_max_piece(const elpis_vocab *v) { return v->max_piece; }

bool elpis_vocab_is_eog(const elpis_vocab *v, int32_t id) {
    if (!valid_id(v, id)) return false;
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return true;
    return false;
}

const char *elpis_vocab_text(const elpis_vocab *v, int32_t id) { return valid_id(v, id) ? tok_text(v, id) : ""; }

elpis_token_type elpis_vocab_type(const elpis_vocab *v, int32_t id) {
    return valid_id(v, id) ? (elpis_token_type)v->type[id] : ELPIS_TOKEN_UNDEFINED;
}

float elpis_vocab_score(const elpis_vocab *v, int32_t id) { return valid_id(v, id) && v->score ? v->score[id] : 0.0f; }

int32_t elpis_vocab_find_n(const elpis_vocab *v, const char *text, size_t len) {
    if (!v || !text || len == 0) return -1;
    return tok_find(v, text, len);
}

int32_t elpis_vocab_find(const elpis_vocab *v, const char *text) {
    return text ? elpis_vocab_find_n(v, text, strlen(text)) : -1;
}

/* ==== Per-call scratch ======================================================= */

typedef struct frag {        /* a piece of the input: raw text (id < 0) or one special token */
    size_t  off, len;
    int32_t id;
} frag;

typedef struct span { size_t off, len; } span;

typedef struct symbol {      /* a run of bytes in the working string, linked to its neighbours */
    int32_t  prev, next;
    uint32_t off, n;         /* n == 0: merged into its left neighbour */
    int32_t  id;             /* SPM: token of this text or -1 */
} symbol;

typedef struct bigram {      /* a candidate merge of symbols left and right */
    float    key;            /* lower first: -score (SPM) or rank (BPE) */
    int32_t  left, right;
    uint32_t size;           /* bytes of left+right when queued; a mismatch later means stale */
    int32_t  id;             /* SPM: the merged token */
} bigram;

typedef struct tok_run {     /* everything one elpis_tokenize call mutates */
    const elpis_vocab *v;
    elpis_tokens *out;
    frag   *frags, *frags2;
    size_t  n_frag, cap_frag, cap_frag2;
    span   *spans, *spans2;
    size_t  n_span, cap_span, cap_span2;
    char   *buf;  size_t cap_buf;       /* SPM escaped text, BPE mapped piece */
    char   *clean; size_t cap_clean;    /* BPE text with invalid UTF-8 replaced */
    symbol *sym;  size_t cap_sym;
    bigram *heap; size_t n_heap, cap_heap;
    pcre2_match_data *md;
} tok_run;

/* Make room for `need` elements of `elem` bytes in *p (contents kept). */
static elpis_status reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return ELPIS_OK;
    size_t n = ELPIS_MAX(need, *cap * 2);
    if (n > SIZE_MAX / elem) return ELPIS_ENOMEM;
    void *q = realloc(*p, n * elem);
    if (!q) return ELPIS_ENOMEM;
    *p = q;
    *cap = n;
    return ELPIS_OK;
}

static void run_free(tok_run *r) {
    free(r->frags); free(r->frags2); free(r->spans); free(r->spans2);
    free(r->buf); free(r->clean); free(r->sym); free(r->heap);
    pcre2_match_data_free(r->md);                  /* NULL is fine */
}

static elpis_status emit(tok_run *r, int32_t id) { return elpis_tokens_push(r->out, id); }

/* ---- heap of bigrams (min on key, then leftmost) ----------------------------- */

static bool bigram_before(const bigram *a, const bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(tok_run *r, bigram b) {   /* capacity reserved by the caller */
    size_t i = r->n_heap++;
    while (i > 0 && bigram_before(&b, &r->heap[(i - 1) / 2])) {
        r->heap[i] = r->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    r->heap[i] = b;
}

static bigram heap_pop(tok_run *r) {
    bigram top = r->heap[0], last = r->heap[--r->n_heap];
    size_t i = 0, n = r->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&r->heap[c + 1], &r->heap[c])) c++;
        if (!bigram_before(&r->heap[c], &last)) break;
        r->heap[i] = r->heap[c];
        i = c;
    }
    if (n) r->heap[i] = last;
    return top;
}

/* Split buf[0..n) into one symbol per UTF-8 character (lead-byte length,
 * clipped at the end) and reserve the heap: n-1 initial pairs plus at most
 * two per merge. Returns the symbol count or -1 on ENOMEM. */
static int32_t split_symbols(tok_run *r, const char *s, size_t n) {
    if (reserve((void **)&r->sym, &r->cap_sym, n, sizeof *r->sym) ||
        reserve((void **)&r->heap, &r->cap_heap, 3 * n + 1, sizeof *r->heap))
        return -1;
    int32_t k = 0;
    for (size_t off = 0; off < n; k++) {
        size_t len = ELPIS_MIN(utf8_lead_len((uint8_t)s[off]), n - off);
        r->sym[k] = (symbol){ .prev = k - 1, .next = off + len == n ? -1 : k + 1, .off = (uint32_t)off,
                              .n = (uint32_t)len, .id = -1 };
        off += len;
    }
    r->n_heap = 0;
    return k;
}

/* Merge symbol b.right into b.left if the pair is still current. */
static bool merge_pair(tok_run *r, const bigram *b) {
    symbol *l = &r->sym[b->left], *rt = &r->sym[b->right];
    if (l->n == 0 || rt->n == 0 || l->n + rt->n != b->size) return false;   /* stale */
    l->n += rt->n;
    l->id = b->id;
    rt->n = 0;
    l->next = rt->next;
    if (rt->next >= 0) r->sym[rt->next].prev = b->left;
    return true;
}

/* ==== Special-token partition ================================================= */

static elpis_status push_frag(frag **a, size_t *n, size_t *cap, frag f) {
    if (reserve((void **)a, cap, *n + 1, sizeof **a)) return ELPIS_ENOMEM;
    (*a)[(*n)++] = f;
    return ELPIS_OK;
}

/* Split every raw fragment on occurrences of token `id` (leftmost first). */
static elpis_status split_on(tok_run *r, const char *text, int32_t id) {
    const char *t = tok_text(r->v, id);
    size_t tl = tok_len(r->v, id), n2 = 0;
    for (size_t i = 0; i < r->n_frag; i++) {
        frag f = r->frags[i];
        while (f.id < 0 && f.len >= tl) {
            const char *hit = memmem(text + f.off, f.len, t, tl);
            if (!hit) break;
            size_t pre = (size_t)(hit - (text + f.off));
            if ((pre && push_frag(&r->frags2, &n2, &r->cap_frag2, (frag){ f.off, pre, -1 })) ||
                push_frag(&r->frags2, &n2, &r->cap_frag2, (frag){ f.off + pre, tl, id }))
                return ELPIS_ENOMEM;
            f.off += pre + tl;
            f.len -= pre + tl;
        }
        if ((f.id >= 0 || f.len > 0) && push_frag(&r->frags2, &n2, &r->cap_frag2, f)) return ELPIS_ENOMEM;
    }
    frag *tmp = r->frags; r->frags = r->frags2; r->frags2 = tmp;
    size_t c = r->cap_frag; r->cap_frag = r->cap_frag2; r->cap_frag2 = c;
    r->n_frag = n2;
    return ELPIS_OK;
}

static bool has_raw_fragment(const tok_run *r, const char *text, const char *t, size_t tl) {
    for (size_t i = 0; i < r->n_frag; i++)
        if (r->frags[i].id < 0 && r->frags[i].len >= tl && memmem(text + r->frags[i].off, r->frags[i].len, t, tl))
            return true;
    return false;
}

static elpis_status partition(tok_run *r, const char *text, size_t len, bool parse_special) {
    const elpis_vocab *v = r->v;
    r->n_frag = 0;
    if (push_frag(&r->frags, &r->n_frag, &r->cap_frag, (frag){ 0, len, -1 })) return ELPIS_ENOMEM;
    for (int32_t k = 0; k < v->n_special; k++) {
        int32_t id = v->special[k];
        if (!parse_special && v->type[id] != ELPIS_TOKEN_USER_DEFINED) continue;
        /* most specials never occur: look first, rebuild the list only on a hit */
        if (has_raw_fragment(r, text, tok_text(v, id), tok_len(v, id)) && split_on(r, text, id)) return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

/* ==== SPM ====================================================================== */

static void spm_try_pair(tok_run *r, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const symbol *l = &r->sym[left];
    uint32_t size = l->n + r->sym[right].n;
    int32_t id = tok_find(r->v, r->buf + l->off, size);
    if (id < 0) return;
    heap_push(r, (bigram){ .key = -r->v->score[id], .left = left, .right = right, .size = size, .id = id });
}

/* Emit one final symbol: its token, else each byte as a byte token. Every
 * merged symbol is a vocab token by construction, so llama.cpp's resegment
 * recursion into recorded merges never has anything to do here; only single
 * characters can be missing. */
static elpis_status spm_emit(tok_run *r, const symbol *s) {
    if (s->id >= 0) return emit(r, s->id);
    for (uint32_t j = 0; j < s->n; j++) {
        int32_t id = r->v->byte_tok[(uint8_t)r->buf[s->off + j]];
        if (id < 0) id = r->v->unk;                /* no byte fallback at all: llama.cpp would throw */
        if (id >= 0 && emit(r, id)) return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

static elpis_status spm_fragment(tok_run *r, const char *text, size_t len, bool space_prefix) {
    size_t n = 0;
    if (reserve((void **)&r->buf, &r->cap_buf, 3 * len + 3, 1)) return ELPIS_ENOMEM;
    for (size_t i = 0; i < len + space_prefix; i++) {
        char c = space_prefix ? (i == 0 ? ' ' : text[i - 1]) : text[i];
        if (c == ' ') { memcpy(r->buf + n, "\xE2\x96\x81", 3); n += 3; }   /* U+2581 "▁" */
        else r->buf[n++] = c;
    }
    int32_t n_sym = split_symbols(r, r->buf, n);
    if (n_sym < 0) return ELPIS_ENOMEM;
    for (int32_t i = 0; i < n_sym; i++) r->sym[i].id = tok_find(r->v, r->buf + r->sym[i].off, r->sym[i].n);
    for (int32_t i = 1; i < n_sym; i++) spm_try_pair(r, i - 1, i);
    while (r->n_heap > 0) {
        bigram b = heap_pop(r);
        if (!merge_pair(r, &b)) continue;
        spm_try_pair(r, r->sym[b.left].prev, b.left);
        spm_try_pair(r, b.left, r->sym[b.left].next);
    }
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = r->sym[i].next)
        if (spm_emit(r, &r->sym[i])) return ELPIS_ENOMEM;
    return ELPIS_OK;
}

/* ==== BPE ====================================================================== */

/* Return text as valid UTF-8: unchanged if it is, else a copy in r->clean with
 * each byte that does not belong to a valid character replaced by U+FFFD. */
static const char *sanitize(tok_run *r, const char *text, size_t len, size_t *out_len) {
    size_t o = 0, n;
    *out_len = len;
    if (utf8_valid(text, len)) return text;
    if (reserve((void **)&r->clean, &r->cap_clean, 3 * len, 1)) return NULL;
    for (size_t i = 0; i < len; i += n) {
        if (utf8_scan((const uint8_t *)text + i, len - i, &n) == U8_OK) { memcpy(r->clean + o, text + i, n); o += n; }
        else { memcpy(r->clean + o, REPLACEMENT, 3); o += 3; n = 1; }
    }
    *out_len = o;
    return r->clean;
}

static elpis_status push_span(span **a, size_t *n, size_t *cap, size_t off, size_t len) {
    if (reserve((void **)a, cap, *n + 1, sizeof **a)) return ELPIS_ENOMEM;
    (*a)[(*n)++] = (span){ off, len };
    return ELPIS_OK;
}

/* One pcre2_match; retries without JIT if the JIT's fixed 32 KiB stack runs out. */
static int re_match(const pcre2_code *re, const char *s, size_t n, size_t start, pcre2_match_data *md) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    return rc;
}

/* Split each current span by regex `re`: every match becomes a span, and so
 * does every stretch of text between matches. The regex sees only the span
 * (so lookaheads stop at its end), as in llama.cpp. */
static elpis_status regex_split(tok_run *r, const pcre2_code *re, const char *s, elpis_error *err) {
    size_t n2 = 0;
    for (size_t k = 0; k < r->n_span; k++) {
        const char *p = s + r->spans[k].off;
        size_t len = r->spans[k].len, pos = 0, last = 0, base = r->spans[k].off;
        while (pos < len) {
            int rc = re_match(re, p, len, pos, r->md);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return elpis_fail(err, ELPIS_EINVAL, "tokenize: pre-tokenizer regex failed: %s", (char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { pos = ms + utf8_lead_len((uint8_t)p[ms < len ? ms : 0]); continue; }  /* empty match: step over a char */
            if ((ms > last && push_span(&r->spans2, &n2, &r->cap_span2, base + last, ms - last)) ||
                push_span(&r->spans2, &n2, &r->cap_span2, base + ms, me - ms))
                return elpis_fail(err, ELPIS_ENOMEM, "tokenize: pieces");
            last = pos = me;
        }
        if (last < len && push_span(&r->spans2, &n2, &r->cap_span2, base + last, len - last))
            return elpis_fail(err, ELPIS_ENOMEM, "tokenize: pieces");
    }
    span *tmp = r->spans; r->spans = r->spans2; r->spans2 = tmp;
    size_t c = r->cap_span; r->cap_span = r->cap_span2; r->cap_span2 = c;
    r->n_span = n2;
    return ELPIS_OK;
}

static void bpe_try_pair(tok_run *r, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const symbol *l = &r->sym[left];
    uint32_t size = l->n + r->sym[right].n;
    int32_t rank = merge_rank(r->v, r->buf + l->off, size, l->n);
    if (rank < 0) return;
    heap_push(r, (bigram){ .key = (float)rank, .left = left, .right = right, .size = size, .id = -1 });
}

/* Emit a final symbol: its token, else one token per mapped character. */
static elpis_status bpe_emit(tok_run *r, const symbol *s) {
    const char *t = r->buf + s->off;
    int32_t id = tok_find(r->v, t, s->n);
    if (id >= 0) return emit(r, id);
    for (uint32_t j = 0, cl; j < s->n; j += cl) {
        cl = (uint32_t)ELPIS_MIN(utf8_lead_len((uint8_t)t[j]), s->n - j);
        id = tok_find(r->v, t + j, cl);
        if (id >= 0 && emit(r, id)) return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

/* Tokenize one pre-tokenized piece w[0..n). */
static elpis_status bpe_word(tok_run *r, const char *w, size_t n) {
    const elpis_vocab *v = r->v;
    size_t m = 0;
    if (reserve((void **)&r->buf, &r->cap_buf, 2 * n, 1)) return ELPIS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)w[i];
        memcpy(r->buf + m, v->b2u[b], v->b2u_len[b]);
        m += v->b2u_len[b];
    }
    if (v->ignore_merges) {
        int32_t id = tok_find(v, r->buf, m);
        if (id >= 0) return emit(r, id);
    }
    int32_t n_sym = split_symbols(r, r->buf, m);
    if (n_sym < 0) return ELPIS_ENOMEM;
    for (int32_t i = 1; i < n_sym; i++) bpe_try_pair(r, i - 1, i);
    while (r->n_heap > 0) {
        bigram b = heap_pop(r);
        if (!merge_pair(r, &b)) continue;
        bpe_try_pair(r, r->sym[b.left].prev, b.left);
        bpe_try_pair(r, b.left, r->sym[b.left].next);
    }
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = r->sym[i].next)
        if (bpe_emit(r, &r->sym[i])) return ELPIS_ENOMEM;
    return ELPIS_OK;
}

static elpis_status bpe_fragment(tok_run *r, const char *text, size_t len, elpis_error *err) {
    size_t n;
    elpis_status st;
    const char *s = sanitize(r, text, len, &n);
    if (!s) return elpis_fail(err, ELPIS_ENOMEM, "tokenize: %zu bytes", len);
    if (!r->md && !(r->md = pcre2_match_data_create(1, NULL))) return elpis_fail(err, ELPIS_ENOMEM, "tokenize: match data");
    r->n_span = 0;
    if (push_span(&r->spans, &r->n_span, &r->cap_span, 0, n)) return elpis_fail(err, ELPIS_ENOMEM, "tokenize: pieces");
    for (int i = 0; i < r->v->n_re; i++)
        if ((st = regex_split(r, r->v->re[i], s, err))) return st;
    for (size_t k = 0; k < r->n_span; k++)
        if (bpe_word(r, s + r->spans[k].off, r->spans[k].len))
            return elpis_fail(err, ELPIS_ENOMEM, "tokenize: %zu bytes", len);
    return ELPIS_OK;
}

/* ==== Tokenize ================================================================= */

static elpis_status tokenize_fragments(tok_run *r, const char *text, elpis_error *err) {
    const elpis_vocab *v = r->v;
    bool prev_special = true;                     /* the start counts as "after a special token" */
    for (size_t i = 0; i < r->n_frag; i++) {
        frag f = r->frags[i];
        elpis_status st = ELPIS_OK;
        if (f.id >= 0) st = emit(r, f.id);
        else if (v->kind == ELPIS_VOCAB_SPM) st = spm_fragment(r, text + f.off, f.len, v->add_space_prefix && prev_special);
        else st = bpe_fragment(r, text + f.off, f.len, err);
        if (st) return st == ELPIS_ENOMEM ? elpis_fail(err, st, "tokenize: out of memory") : st;
        prev_special = f.id >= 0;
    }
    return ELPIS_OK;
}

elpis_status elpis_tokenize(const elpis_vocab *v, const char *text, size_t len, bool add_special,
                            bool parse_special, elpis_tokens *out, elpis_error *err) {
    if (!v || !out || (!text && len)) return elpis_fail(err, ELPIS_EINVAL, "tokenize: NULL argument");
    if (len >= TEXT_MAX) return elpis_fail(err, ELPIS_EINVAL, "tokenize: text of %zu bytes is too long", len);
    tok_run r = { .v = v, .out = out };
    size_t n0 = out->n;
    elpis_status st = ELPIS_OK;
    if (add_special && v->add_bos && v->bos >= 0 && (st = emit(&r, v->bos))) goto oom;
    if (len > 0) {
        if ((st = partition(&r, text, len, parse_special))) goto oom;
        if ((st = tokenize_fragments(&r, text, err))) goto fail;
    }
    if (add_special && v->add_eos && v->eos >= 0 && (st = emit(&r, v->eos))) goto oom;
    run_free(&r);
    return ELPIS_OK;
oom:
    st = elpis_fail(err, ELPIS_ENOMEM, "tokenize: out of memory");
fail:
    out->n = n0;                                  /* outputs untouched on failure */
    run_free(&r);
    return st;
}

/* ==== Detokenize =============================================================== */

/* The bytes of token id (empty for specials unless `special`). */
static const char *token_piece(const elpis_vocab *v, int32_t id, bool special, size_t *len) {
    *len = 0;
    if (!valid_id(v, id)) return "";
    uint8_t t = v->type[id];
    if (!special && (t == ELPIS_TOKEN_CONTROL || t == ELPIS_TOKEN_UNKNOWN)) return "";
    *len = v->piece_off[id + 1] - v->piece_off[id];
    return v->piece + v->piece_off[id];
}

size_t elpis_token_to_piece(const elpis_vocab *v, int32_t id, bool special, char *buf, size_t cap) {
    size_t n;
    const char *p = token_piece(v, id, special, &n);
    if (n <= cap && n) memcpy(buf, p, n);
    return n;
}

void elpis_detok_init(elpis_detok *d, const elpis_vocab *v, bool special) {
    *d = (elpis_detok){ .vocab = v, .special = special };
}

size_t elpis_detok_cap(const elpis_vocab *v) { return 3 * (v->max_piece + 3); }

/* Run the UTF-8 filter over held[] followed by p[0..n). With out == NULL only
 * count; otherwise write and update the held bytes. `final` turns a cut-off
 * character into U+FFFD instead of holding it. Returns the output size. */
static size_t detok_run(elpis_detok *d, const uint8_t *p, size_t n, bool final, char *out) {
    uint8_t head[8];                              /* held bytes + the first bytes of p */
    size_t h = d->n_held, t = ELPIS_MIN(n, (size_t)4), total = h + n, o = 0, len;
    memcpy(head, d->held, h);
    if (t) memcpy(head + h, p, t);
    for (size_t i = 0; i < total; i += len) {
        /* a character starting in held[] ends within head: it has >= 4 bytes after i, or all of p */
        const uint8_t *s = i < h ? head + i : p + (i - h);
        size_t avail = i < h ? h + t - i : total - i;
        u8res res = utf8_scan(s, avail, &len);
        if (res == U8_SHORT && !final) {          /* keep the incomplete tail (<= 3 bytes) for later */
            if (out) { memmove(d->held, s, len); d->n_held = (uint8_t)len; }
            return o;
        }
        if (res == U8_OK) { if (out) memcpy(out + o, s, len); o += len; }
        else { if (out) memcpy(out + o, REPLACEMENT, 3); o += 3; }
    }
    if (out) d->n_held = 0;
    return o;
}

size_t elpis_detok_push(elpis_detok *d, int32_t id, char *out, size_t cap) {
    const elpis_vocab *v = d->vocab;
    size_t n;
    const char *p = token_piece(v, id, d->special, &n);
    bool first = !d->started && id != v->bos;
    if (first && d->strip_space_prefix && v->add_space_prefix && n > 0 && p[0] == ' ') { p++; n--; }
    size_t need = detok_run(d, (const uint8_t *)p, n, false, NULL);
    if (need > cap) return need;                  /* nothing consumed: the caller retries with more room */
    if (first) d->started = true;
    return detok_run(d, (const uint8_t *)p, n, false, out);
}

size_t elpis_detok_flush(elpis_detok *d, char *out, size_t cap) {
    size_t need = detok_run(d, NULL, 0, true, NULL);
    if (need > cap) return need;
    return detok_run(d, NULL, 0, true, out);
}

elpis_status elpis_detokenize(const elpis_vocab *v, const int32_t *ids, size_t n, bool special,
                              bool strip_space_prefix, elpis_buf *out, elpis_error *err) {
    if (!v || !out || (!ids && n)) return elpis_fail(err, ELPIS_EINVAL, "detokenize: NULL argument");
    size_t cap = elpis_detok_cap(v), len0 = out->len;
    char *tmp = malloc(cap);
    elpis_detok d;
    elpis_status st = ELPIS_OK;
    if (!tmp) return elpis_fail(err, ELPIS_ENOMEM, "detokenize: %zu bytes", cap);
    elpis_detok_init(&d, v, special);
    d.strip_space_prefix = strip_space_prefix;
    for (size_t i = 0; i <= n && st == ELPIS_OK; i++) {
        size_t k = i < n ? elpis_detok_push(&d, ids[i], tmp, cap) : elpis_detok_flush(&d, tmp, cap);
        st = elpis_buf_append(out, tmp, k);
    }
    free(tmp);
    if (st) {
        out->len = len0;
        if (out->data) out->data[len0] = '\0';
        return elpis_fail(err, st, "detokenize: out of memory");
    }
    return ELPIS_OK;
}
