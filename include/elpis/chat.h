/* chat.h -- chat templates without Jinja: detect a model's format, render a
 * conversation into the prompt text the model was trained on.
 *
 * A GGUF file carries its chat template as a Jinja program. Like llama.cpp's
 * llama_chat_apply_template we do not run it: we recognise the template by
 * substrings, then write the known format in C (facts: shared/docs/
 * engine-facts.md section 4).
 *
 * Contract for callers:
 *   - elpis_chat_detect() returns a family elpis_chat_apply() renders in its
 *     own format, or ELPIS_CHAT_UNKNOWN. On UNKNOWN, log it: apply() then
 *     renders ChatML, the fallback.
 *   - Some families are recognised (they have names and detection rules) but
 *     their exact strings are not in our reference notes, so we do not render
 *     them: mistral-v1, mistral-v3, mistral-v3-tekken, phi4. detect() reports
 *     templates of those families as UNKNOWN; apply() called with one of them
 *     explicitly fails with ELPIS_EUNSUPPORTED rather than guess.
 *   - The tokenizer adds BOS; no template here writes it at the start.
 */
#ifndef ELPIS_CHAT_H
#define ELPIS_CHAT_H

#include "elpis/base.h"

typedef enum elpis_chat_family {
    ELPIS_CHAT_UNKNOWN,
    ELPIS_CHAT_CHATML,            /* Qwen2/2.5/3 and many others */
    ELPIS_CHAT_LLAMA2,            /* system text without <<SYS>> */
    ELPIS_CHAT_LLAMA2_SYS,
    ELPIS_CHAT_LLAMA2_SYS_BOS,    /* later turns open with <s>[INST] */
    ELPIS_CHAT_LLAMA2_SYS_STRIP,  /* contents trimmed */
    ELPIS_CHAT_MISTRAL_V1,        /* recognised, not rendered */
    ELPIS_CHAT_MISTRAL_V3,        /* recognised, not rendered */
    ELPIS_CHAT_MISTRAL_V3_TEKKEN, /* recognised, not rendered */
    ELPIS_CHAT_MISTRAL_V7,
    ELPIS_CHAT_LLAMA3,
    ELPIS_CHAT_PHI3,
    ELPIS_CHAT_PHI4,              /* recognised, not rendered */
    ELPIS_CHAT_ZEPHYR,
    ELPIS_CHAT_GEMMA,
    ELPIS_CHAT_MISTRAL_V7_TEKKEN, /* mistral-v7 without the spaces */
    ELPIS_CHAT_FAMILY_COUNT
} elpis_chat_family;

typedef struct elpis_chat_msg {
    const char *role;     /* "system", "user", "assistant", or anything else */
    const char *content;  /* NUL-terminated UTF-8; NULL is an error */
} elpis_chat_msg;

/* Family of a template: `tmpl` is either a name ("chatml", "llama3", ...;
 * all of llama.cpp's names are known) or the Jinja source from the GGUF
 * metadata. NULL means "chatml". Returns ELPIS_CHAT_UNKNOWN when nothing
 * matches or when the match is a family we do not render. */
elpis_chat_family elpis_chat_detect(const char *tmpl);

/* llama.cpp's name of a family ("llama2-sys-bos"); "unknown" for UNKNOWN
 * and for values outside the enum. Never NULL. */
const char *elpis_chat_family_name(elpis_chat_family f);

/* Inverse of elpis_chat_family_name(): ELPIS_CHAT_UNKNOWN for NULL and for any
 * name that is not one of this enum's (e.g. "deepseek3"). Unlike detect(), it
 * returns the not-rendered families too, so a caller can say "not supported"
 * rather than "no such template". */
elpis_chat_family elpis_chat_family_from_name(const char *name);

/* True when elpis_chat_apply() writes `f` in its own format (UNKNOWN: false). */
bool elpis_chat_family_supported(elpis_chat_family f);

/* Render msgs[0..n) in family f, APPENDING to `out`. With
 * add_generation_prompt, also open the assistant's turn (families whose format
 * has no such text add nothing). UNKNOWN renders ChatML. Roles are written as
 * given; in formats that do not print roles (llama2, mistral-v7) any role other
 * than "system" and "user" is rendered as an assistant turn.
 * Errors: ELPIS_EINVAL for a NULL role or content (the message names the
 * index), ELPIS_EUNSUPPORTED for a recognised family we do not render,
 * ELPIS_ENOMEM. On error `out` holds what it held before the call. */
elpis_status elpis_chat_apply(elpis_chat_family f, const elpis_chat_msg *msgs, size_t n,
                              bool add_generation_prompt, elpis_buf *out, elpis_error *err);

#endif
