/* tokenizer.h -- text <-> token ids for GGUF vocabularies (llama.cpp-compatible).
 *
 * Two tokenizer kinds are supported, chosen by `tokenizer.ggml.model`:
 *   "llama" -> ELPIS_VOCAB_SPM: SentencePiece-style score-priority merging with
 *              byte fallback (<0xXX> tokens).
 *   "gpt2"  -> ELPIS_VOCAB_BPE: byte-level BPE with a regex pre-tokenizer
 *              chosen by `tokenizer.ggml.pre` and merge ranks from
 *              `tokenizer.ggml.merges`.
 * The goal is id-for-id agreement with llama.cpp's llama_tokenize(); the
 * golden tests in tests/unit/test_tokenizer.c hold us to it.
 *
 * Ownership and threads:
 *   - elpis_vocab_load copies everything it needs out of the GGUF file, so the
 *     gguf_file may be closed right after it returns.
 *   - A loaded vocab is immutable. Every function taking `const elpis_vocab *`
 *     is safe to call from any number of threads at once (tokenization keeps
 *     all scratch state, including regex match data, per call).
 *   - An elpis_detok is a small caller-owned state for ONE stream; use one per
 *     stream and do not share it between threads without a lock.
 *
 * Token ids are int32_t; -1 means "none" everywhere.
 */
#ifndef ELPIS_TOKENIZER_H
#define ELPIS_TOKENIZER_H

#include "elpis/base.h"
#include "elpis/gguf.h"

typedef struct elpis_vocab elpis_vocab;

typedef enum elpis_vocab_kind {
    ELPIS_VOCAB_SPM,   /* tokenizer.ggml.model = "llama" */
    ELPIS_VOCAB_BPE,   /* tokenizer.ggml.model = "gpt2"  */
} elpis_vocab_kind;

/* Values of tokenizer.ggml.token_type (out-of-range values load as UNDEFINED). */
typedef enum elpis_token_type {
    ELPIS_TOKEN_UNDEFINED    = 0,
    ELPIS_TOKEN_NORMAL       = 1,
    ELPIS_TOKEN_UNKNOWN      = 2,
    ELPIS_TOKEN_CONTROL      = 3,
    ELPIS_TOKEN_USER_DEFINED = 4,
    ELPIS_TOKEN_UNUSED       = 5,
    ELPIS_TOKEN_BYTE         = 6,
} elpis_token_type;

/* ---- loading ----------------------------------------------------------------
 * Reads the tokenizer.* keys of `g`. Fails (ELPIS_EFORMAT, message naming the
 * key) on a missing or malformed token list, a scores/token_type array whose
 * length differs from the token list, missing scores (SPM) or merges (BPE);
 * ELPIS_EUNSUPPORTED for other tokenizer models ("bert", "t5", ...).
 * Special-token ids that are out of range are ignored (with a warning), as
 * llama.cpp does, and the accessor then returns -1. */
elpis_status elpis_vocab_load(elpis_vocab **out, const gguf_file *g, elpis_error *err);
void elpis_vocab_free(elpis_vocab *v);                       /* NULL is fine */

/* ---- accessors (all O(1) except find) --------------------------------------- */
elpis_vocab_kind elpis_vocab_kind_of(const elpis_vocab *v);
const char *elpis_vocab_pre(const elpis_vocab *v);           /* tokenizer.ggml.pre, "default" if absent */
int32_t elpis_vocab_n_vocab(const elpis_vocab *v);
int32_t elpis_vocab_bos(const elpis_vocab *v);               /* -1 if none */
int32_t elpis_vocab_eos(const elpis_vocab *v);               /* -1 if none */
/* eot: tokenizer.ggml.eot_token_id, else the first of <|eot_id|>, <|im_end|>,
 * <|end|>, <end_of_turn>, <|endoftext|>, <EOT> present in the vocab; -1 if none. */
int32_t elpis_vocab_eot(const elpis_vocab *v);
int32_t elpis_vocab_eom(const elpis_vocab *v);               /* eom_token_id, else <|eom_id|>, else -1 */
int32_t elpis_vocab_unk(const elpis_vocab *v);               /* -1 if none */
bool elpis_vocab_add_bos(const elpis_vocab *v);
bool elpis_vocab_add_eos(const elpis_vocab *v);
bool elpis_vocab_add_space_prefix(const elpis_vocab *v);     /* SPM only; false for BPE */
/* End of generation: eos, eot, eom, and any token whose text is one of
 * <|eot_id|> <|im_end|> <|end|> <end_of_turn> <|endoftext|> <|eom_id|> <EOT>
 * <|end_of_text|>. False for out-of-range ids. */
bool elpis_vocab_is_eog(const elpis_vocab *v, int32_t id);
/* The token's stored text (NUL-terminated; "" for an out-of-range id). For
 * BPE this is the byte-mapped form ("Ġ" for a space); use
 * elpis_token_to_piece for the bytes it stands for. */
const char *elpis_vocab_text(const elpis_vocab *v, int32_t id);
elpis_token_type elpis_vocab_type(const elpis_vocab *v, int32_t id);   /* UNDEFINED if out of range */
float elpis_vocab_score(const elpis_vocab *v, int32_t id);             /* 0 for BPE / out of range */
int32_t elpis_vocab_find(const elpis_vocab *v, const char *text);      /* exact text -> id, -1 if absent */
int32_t elpis_vocab_find_n(const elpis_vocab *v, const char *text, size_t len);
size_t elpis_vocab_max_piece(const elpis_vocab *v);          /* longest elpis_token_to_piece result */

/* ---- tokenization -----------------------------------------------------------
 * Appends the ids of text[0..len) to `out` (the text need not be
 * NUL-terminated and may contain any bytes).
 *   add_special:   prepend BOS if add_bos, append EOS if add_eos.
 *   parse_special: also recognise the text of CONTROL and UNKNOWN tokens
 *                  (e.g. "<|im_start|>") as those tokens. USER_DEFINED tokens
 *                  are always recognised. Matching is longest token first.
 *                  Chat prompts need parse_special=true; user-supplied text
 *                  that must not inject control tokens needs false.
 * SPM prefixes each text fragment that starts the input or follows a special
 * token with a space when add_space_prefix is set (so "Hello" becomes
 * "▁Hello"), exactly as llama.cpp does.
 * BPE replaces each byte that is not part of valid UTF-8 by U+FFFD before
 * pre-tokenizing (llama.cpp does the same for truncated sequences).
 * On failure (ENOMEM, or an internal regex error) `out` is left as it was. */
elpis_status elpis_tokenize(const elpis_vocab *v, const char *text, size_t len, bool add_special,
                            bool parse_special, elpis_tokens *out, elpis_error *err);

/* ---- detokenization ---------------------------------------------------------
 * The raw bytes a token stands for: SPM "▁" -> ' ', <0xXX> byte tokens -> that
 * byte, BPE mapped characters -> their bytes. CONTROL and UNKNOWN tokens give
 * their text only if `special`, else nothing; USER_DEFINED tokens always give
 * their text; UNUSED/UNDEFINED and out-of-range ids give nothing.
 * Returns the piece length n; the bytes are written only if n <= cap (no NUL
 * is added), so `n > cap` means "buffer too small, nothing written".
 * A piece may be an incomplete UTF-8 sequence (byte tokens, BPE fragments of
 * a multi-byte character): use elpis_detok to print text. */
size_t elpis_token_to_piece(const elpis_vocab *v, int32_t id, bool special, char *buf, size_t cap);

/* Streaming decoder that only ever emits complete, valid UTF-8.
 * Bytes of a character split across tokens are held back (at most 3) until the
 * character completes; an invalid sequence (or one cut off by flush) becomes
 * U+FFFD (one per maximal ill-formed subpart, as Unicode recommends), so
 * nothing is held forever.
 *
 * Leading space: SPM adds a space before the first word of a prompt
 * ("Hello" -> "▁Hello"). Generated tokens must keep their spaces (`elpis run`
 * prints the prompt verbatim and then streams the pieces), so by default
 * nothing is stripped. Set `strip_space_prefix` after init to undo the added
 * space when decoding a whole tokenized prompt: then the first token that is
 * not BOS loses one leading ' ' (only for vocabs with add_space_prefix; this
 * is what llama.cpp's llama_detokenize does with remove_special). */
typedef struct elpis_detok {
    const elpis_vocab *vocab;
    bool    special;             /* render CONTROL/UNKNOWN token text */
    bool    strip_space_prefix;  /* see above; default false */
    bool    started;             /* internal: a non-BOS token was pushed */
    uint8_t n_held;              /* internal: bytes in held[] */
    uint8_t held[4];             /* internal: valid prefix of an incomplete character */
} elpis_detok;

void elpis_detok_init(elpis_detok *d, const elpis_vocab *v, bool special);
/* Output bytes never exceed this for one push or flush; a buffer this large
 * always suffices (3 * (max_piece + 3): each pending byte may become U+FFFD). */
size_t elpis_detok_cap(const elpis_vocab *v);
/* Decode one token. Returns the number of bytes of complete UTF-8 now ready in
 * out. If the result needs more than `cap` bytes, nothing is written, the
 * state is unchanged, and the needed size (> cap) is returned. */
size_t elpis_detok_push(elpis_detok *d, int32_t id, char *out, size_t cap);
/* End of stream: held bytes become U+FFFD (0 or 3 bytes; same cap rule). */
size_t elpis_detok_flush(elpis_detok *d, char *out, size_t cap);

/* Whole-sequence convenience: decode ids[0..n) through an elpis_detok and
 * append valid UTF-8 to `out` (NUL-terminated by elpis_buf). */
elpis_status elpis_detokenize(const elpis_vocab *v, const int32_t *ids, size_t n, bool special,
                              bool strip_space_prefix, elpis_buf *out, elpis_error *err);

#endif
