/* chat.c -- chat-template detection and rendering, without Jinja.
 *
 * DESIGN
 * ------
 * Same approach as llama.cpp's llm_chat_detect_template and
 * llama_chat_apply_template (shared/docs/engine-facts.md section 4):
 *
 *   1. Detection. An exact llama.cpp template name wins. Otherwise the Jinja
 *      source is searched for tell-tale substrings IN llama.cpp's ORDER, first
 *      match wins. The order matters: a Phi-4 template also contains
 *      <|im_start|>, a Zephyr-looking one with <|assistant|> and <|user|> is
 *      claimed by the falcon3/glmedge rule first. So rules for families we do
 *      not render are kept (they return UNKNOWN) instead of being dropped,
 *      which would let a later rule claim the template wrongly.
 *   2. Rendering. One short function per format, writing through a `writer`
 *      that remembers the first allocation failure, so the format code reads
 *      as a straight list of strings.
 *
 * INVARIANTS
 *   - detect() returns only families apply() renders, or UNKNOWN.
 *   - apply() appends; on any error the buffer is cut back to its old length.
 *   - Messages are validated before anything is written.
 *
 * Not reproduced (as in llama.cpp): defaults a Jinja template injects by
 * itself, such as a built-in system prompt or <think> handling.
 */
#include "elpis/chat.h"

#include <string.h>

/* ---- names ------------------------------------------------------------------ */

static const char *const family_names[ELPIS_CHAT_FAMILY_COUNT] = {
    [ELPIS_CHAT_UNKNOWN] = "unknown",
    [ELPIS_CHAT_CHATML] = "chatml",
    [ELPIS_CHAT_LLAMA2] = "llama2",
    [ELPIS_CHAT_LLAMA2_SYS] = "llama2-sys",
    [ELPIS_CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [ELPIS_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [ELPIS_CHAT_MISTRAL_V1] = "mistral-v1",
    [ELPIS_CHAT_MISTRAL_V3] = "mistral-v3",
    [ELPIS_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [ELPIS_CHAT_MISTRAL_V7] = "mistral-v7",
    [ELPIS_CHAT_LLAMA3] = "llama3",
    [ELPIS_CHAT_PHI3] = "phi3",
    [ELPIS_CHAT_PHI4] = "phi4",
    [ELPIS_CHAT_ZEPHYR] = "zephyr",
    [ELPIS_CHAT_GEMMA] = "gemma",
    [ELPIS_CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
};

/* llama.cpp's other template names. A template string equal to one of these is
 * a name, not Jinja: it must stop at UNKNOWN, not fall into the substring rules
 * (e.g. "mistral"-prefixed names would otherwise become llama2). */
static const char *const other_llama_cpp_names[] = {
    "falcon3", "monarch", "orion", "openchat", "vicuna", "vicuna-orca",
    "deepseek", "deepseek2", "deepseek3", "command-r", "chatglm3", "chatglm4",
    "glmedge", "minicpm", "exaone3", "exaone4", "rwkv-world", "granite",
    "gigachat", "megrez", "yandex", "bailing", "bailing-think", "bailing2",
    "llama4", "smolvlm", "hunyuan-moe", "gpt-oss", "hunyuan-dense", "kimi-k2",
    "seed_oss", "grok-2", "pangu-embedded",
};

const char *elpis_chat_family_name(elpis_chat_family f) {
    if ((unsigned)f >= ELPIS_CHAT_FAMILY_COUNT) return "unknown";
    return family_names[f];
}

elpis_chat_family elpis_chat_family_from_name(const char *name) {
    if (!name) return ELPIS_CHAT_UNKNOWN;
    for (int f = ELPIS_CHAT_UNKNOWN + 1; f < ELPIS_CHAT_FAMILY_COUNT; f++)
        if (strcmp(name, family_names[f]) == 0) return (elpis_chat_family)f;
    return ELPIS_CHAT_UNKNOWN;
}

bool elpis_chat_family_supported(elpis_chat_family f) {
    switch (f) {
    case ELPIS_CHAT_CHATML:
    case ELPIS_CHAT_LLAMA2:
    case ELPIS_CHAT_LLAMA2_SYS:
    case ELPIS_CHAT_LLAMA2_SYS_BOS:
    case ELPIS_CHAT_LLAMA2_SYS_STRIP:
    case ELPIS_CHAT_MISTRAL_V7:
    case ELPIS_CHAT_MISTRAL_V7_TEKKEN:
    case ELPIS_CHAT_LLAMA3:
    case ELPIS_CHAT_PHI3:
    case ELPIS_CHAT_ZEPHYR:
    case ELPIS_CHAT_GEMMA:
        return true;
    default:
        return false;
    }
}

/* ---- detection ---------------------------------------------------------------- */

static bool has(const char *t, const char *needle) { return strstr(t, needle) != NULL; }

static bool is_other_llama_cpp_name(const char *t) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(other_llama_cpp_names); i++)
        if (strcmp(t, other_llama_cpp_names[i]) == 0) return true;
    return false;
}

/* Rule 2: the [INST] families, in llama.cpp's order. */
static elpis_chat_family detect_inst(const char *t) {
    if (has(t, "[SYSTEM_PROMPT]")) return ELPIS_CHAT_MISTRAL_V7;
    /* llama.cpp chooses mistral v1, v3 or v3-tekken here; the choice and the
     * formats are not in our notes, so: recognised, not rendered. */
    if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) return ELPIS_CHAT_UNKNOWN;
    if (has(t, "content.strip()")) return ELPIS_CHAT_LLAMA2_SYS_STRIP;
    if (has(t, "bos_token + '[INST]")) return ELPIS_CHAT_LLAMA2_SYS_BOS;
    if (has(t, "<<SYS>>")) return ELPIS_CHAT_LLAMA2_SYS;
    return ELPIS_CHAT_LLAMA2;
}

/* The substring heuristic. Every rule is kept even when its family is not
 * rendered here (those return UNKNOWN), so that no later rule steals it. */
static elpis_chat_family detect_by_substrings(const char *t) {
    if (has(t, "<|im_start|>")) {
        if (has(t, "<|im_sep|>")) return ELPIS_CHAT_PHI4;
        if (has(t, "<end_of_utterance>")) return ELPIS_CHAT_UNKNOWN;          /* smolvlm */
        return ELPIS_CHAT_CHATML;
    }
    if (strncmp(t, "mistral", 7) == 0 || has(t, "[INST]")) return detect_inst(t);
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) return ELPIS_CHAT_PHI3;
    if (has(t, "[gMASK]<sop>")) return ELPIS_CHAT_UNKNOWN;                     /* chatglm4 */
    if (has(t, "<|assistant|>") && has(t, "<|user|>")) return ELPIS_CHAT_UNKNOWN; /* falcon3 / glmedge */
    if (has(t, "<|user|>") && has(t, "<|endoftext|>")) return ELPIS_CHAT_ZEPHYR;
    if (has(t, "bos_token + message['role']")) return ELPIS_CHAT_UNKNOWN;      /* monarch */
    if (has(t, "<start_of_turn>")) return ELPIS_CHAT_GEMMA;
    /* llama.cpp tests orion, openchat, vicuna, deepseek and command-r here;
     * their substrings are not in our notes. */
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return ELPIS_CHAT_LLAMA3;
    return ELPIS_CHAT_UNKNOWN;
}

elpis_chat_family elpis_chat_detect(const char *tmpl) {
    if (!tmpl) return ELPIS_CHAT_CHATML;
    elpis_chat_family f = elpis_chat_family_from_name(tmpl);
    if (f == ELPIS_CHAT_UNKNOWN && !is_other_llama_cpp_name(tmpl)) f = detect_by_substrings(tmpl);
    return elpis_chat_family_supported(f) ? f : ELPIS_CHAT_UNKNOWN;
}

/* ---- writing ------------------------------------------------------------------- */

/* Appends to a buffer, remembering the first failure so that format code does
 * not need an error check after every string. */
typedef struct writer {
    elpis_buf *b;
    elpis_status st;
} writer;

static void put_n(writer *w, const char *s, size_t n) {
    if (w->st == ELPIS_OK) w->st = elpis_buf_append(w->b, s, n);
}

static void put(writer *w, const char *s) { put_n(w, s, strlen(s)); }

/* ASCII whitespace only: locale-independent, and never splits a UTF-8 sequence. */
static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static void trimmed(const char *s, const char **start, size_t *len) {
    size_t n = strlen(s);
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    *start = s;
    *len = n;
}

static void put_trimmed(writer *w, const char *s) {
    const char *p;
    size_t n;
    trimmed(s, &p, &n);
    put_n(w, p, n);
}

static void put_content(writer *w, const char *s, bool trim) {
    if (trim) put_trimmed(w, s);
    else put(w, s);
}

static bool role_is(const elpis_chat_msg *m, const char *role) { return strcmp(m->role, role) == 0; }

/* ---- formats ----------------------------------------------------------------- */

static void render_chatml(writer *w, const elpis_chat_msg *m, size_t n, bool add_ass) {
    for (size_t i = 0; i < n; i++) {
        put(w, "<|im_start|>"); put(w, m[i].role); put(w, "\n");
        put(w, m[i].content); put(w, "<|im_end|>\n");
    }
    if (add_ass) put(w, "<|im_start|>assistant\n");
}

/* One open [INST] turn at a time: an assistant message closes it and the next
 * message reopens it. The format has no generation-prompt text. */
static void render_llama2(writer *w, elpis_chat_family f, const elpis_chat_msg *m, size_t n) {
    bool sys_tags = f != ELPIS_CHAT_LLAMA2;
    bool strip = f == ELPIS_CHAT_LLAMA2_SYS_STRIP;
    const char *reopen = f == ELPIS_CHAT_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ";
    bool in_turn = true;

    put(w, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) { put(w, reopen); in_turn = true; }
        if (role_is(&m[i], "system")) {
            if (sys_tags) put(w, "<<SYS>>\n");
            put_content(w, m[i].content, strip);
            put(w, sys_tags ? "\n<</SYS>>\n\n" : "\n");
        } else if (role_is(&m[i], "user")) {
            put_content(w, m[i].content, strip);
            put(w, " [/INST]");
        } else {
            put_content(w, m[i].content, strip);
            put(w, "</s>");
            in_turn = false;
        }
    }
}

static void render_mistral_v7(writer *w, bool tekken, const elpis_chat_msg *m, size_t n) {
    const char *sp = tekken ? "" : " ";
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) {
            put(w, "[SYSTEM_PROMPT]"); put(w, sp); put(w, m[i].content); put(w, "[/SYSTEM_PROMPT]");
        } else if (role_is(&m[i], "user")) {
            put(w, "[INST]"); put(w, sp); put(w, m[i].content); put(w, "[/INST]");
        } else {
            put(w, sp); put(w, m[i].content); put(w, "</s>");
        }
    }
}

static void render_llama3(writer *w, const elpis_chat_msg *m, size_t n, bool add_ass) {
    for (size_t i = 0; i < n; i++) {
        put(w, "<|start_header_id|>"); put(w, m[i].role); put(w, "<|end_header_id|>\n\n");
        put_trimmed(w, m[i].content); put(w, "<|eot_id|>");
    }
    if (add_ass) put(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* phi3 and zephyr: "<|role|>\n" content END "\n"; they differ only in END. */
static void render_role_tags(writer *w, const char *end, const elpis_chat_msg *m, size_t n, bool add_ass) {
    for (size_t i = 0; i < n; i++) {
        put(w, "<|"); put(w, m[i].role); put(w, "|>\n");
        put(w, m[i].content); put(w, end); put(w, "\n");
    }
    if (add_ass) put(w, "<|assistant|>\n");
}

/* Gemma has no system role: system messages since the last user turn are
 * written, trimmed and concatenated, at the start of the next user turn,
 * followed by a blank line (nothing at all if they are empty). */
static void put_held_system(writer *w, const elpis_chat_msg *m, size_t from, size_t to) {
    size_t total = 0;
    for (size_t i = from; i < to; i++) {
        const char *p;
        size_t len;
        if (!role_is(&m[i], "system")) continue;
        trimmed(m[i].content, &p, &len);
        put_n(w, p, len);
        total += len;
    }
    if (total) put(w, "\n\n");
}

static void render_gemma(writer *w, const elpis_chat_msg *m, size_t n, bool add_ass) {
    size_t held_from = 0; /* system messages in [held_from, i) are not yet written */
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) continue;
        bool model = role_is(&m[i], "assistant");
        put(w, "<start_of_turn>"); put(w, model ? "model" : m[i].role); put(w, "\n");
        if (role_is(&m[i], "user")) {
            put_held_system(w, m, held_from, i);
            held_from = i + 1;
        }
        put_trimmed(w, m[i].content); put(w, "<end_of_turn>\n");
    }
    if (add_ass) put(w, "<start_of_turn>model\n");
}

static void render(writer *w, elpis_chat_family f, const elpis_chat_msg *m, size_t n, bool add_ass) {
    switch (f) {
    case ELPIS_CHAT_LLAMA2:
    case ELPIS_CHAT_LLAMA2_SYS:
    case ELPIS_CHAT_LLAMA2_SYS_BOS:
    case ELPIS_CHAT_LLAMA2_SYS_STRIP: render_llama2(w, f, m, n); break;
    case ELPIS_CHAT_MISTRAL_V7:       render_mistral_v7(w, false, m, n); break;
    case ELPIS_CHAT_MISTRAL_V7_TEKKEN: render_mistral_v7(w, true, m, n); break;
    case ELPIS_CHAT_LLAMA3:           render_llama3(w, m, n, add_ass); break;
    case ELPIS_CHAT_PHI3:             render_role_tags(w, "<|end|>", m, n, add_ass); break;
    case ELPIS_CHAT_ZEPHYR:           render_role_tags(w, "<|endoftext|>", m, n, add_ass); break;
    case ELPIS_CHAT_GEMMA:            render_gemma(w, m, n, add_ass); break;
    default:                          render_chatml(w, m, n, add_ass); break; /* CHATML, UNKNOWN */
    }
}

/* ---- entry point ------------------------------------------------------------- */

static elpis_status check_messages(const elpis_chat_msg *m, size_t n, elpis_error *err) {
    if (n && !m) return elpis_fail(err, ELPIS_EINVAL, "chat: %zu messages but the array is NULL", n);
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role) return elpis_fail(err, ELPIS_EINVAL, "chat message %zu: role is NULL", i);
        if (!m[i].content)
            return elpis_fail(err, ELPIS_EINVAL, "chat message %zu (role \"%s\"): content is NULL", i, m[i].role);
    }
    return ELPIS_OK;
}

elpis_status elpis_chat_apply(elpis_chat_family f, const elpis_chat_msg *msgs, size_t n,
                              bool add_generation_prompt, elpis_buf *out, elpis_error *err) {
    if (!out) return elpis_fail(err, ELPIS_EINVAL, "chat: output buffer is NULL");
    if ((unsigned)f >= ELPIS_CHAT_FAMILY_COUNT)
        return elpis_fail(err, ELPIS_EINVAL, "chat: %d is not a chat template family", (int)f);
    if (f != ELPIS_CHAT_UNKNOWN && !elpis_chat_family_supported(f))
        return elpis_fail(err, ELPIS_EUNSUPPORTED,
                          "chat template %s: recognised but not implemented; use another template (e.g. chatml)",
                          elpis_chat_family_name(f));
    elpis_status st = check_messages(msgs, n, err);
    if (st != ELPIS_OK) return st;

    size_t mark = out->len;
    writer w = { .b = out, .st = ELPIS_OK };
    render(&w, f, msgs, n, add_generation_prompt);
    if (w.st != ELPIS_OK) {
        out->len = mark; /* leave the buffer as the caller gave it */
        if (out->data) out->data[mark] = 0;
        return elpis_fail(err, w.st, "chat: out of memory rendering %zu messages as %s", n,
                          elpis_chat_family_name(f));
    }
    return ELPIS_OK;
}
