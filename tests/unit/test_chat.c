/* test_chat.c -- chat template detection and rendering.
 *
 * Expected prompts are written out by hand from engine-facts.md section 4, for
 * one conversation: system + user + assistant + user, with and without the
 * generation prompt. Detection is checked against realistic template
 * fragments, including the order traps (Phi-4 also contains <|im_start|>; a
 * Zephyr-looking template with <|assistant|> is claimed by an earlier rule).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "elpis/chat.h"

static const elpis_chat_msg conv[] = {
    { "system", "You are a helpful assistant." },
    { "user", "Hello" },
    { "assistant", "Hi there" },
    { "user", "How are you?" },
};

/* Render `conv` and compare with `want`, printing both on a mismatch. */
static void check_render(elpis_chat_family f, const elpis_chat_msg *m, size_t n, bool add, const char *want) {
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    elpis_status st = elpis_chat_apply(f, m, n, add, &b, &err);
    if (st != ELPIS_OK) fail_msg("%s: %s", elpis_chat_family_name(f), err.msg);
    const char *got = b.data ? b.data : ""; /* nothing appended: never allocated */
    if (strcmp(got, want) != 0)
        fail_msg("%s (add=%d)\n got: [%s]\nwant: [%s]", elpis_chat_family_name(f), add, got, want);
    assert_int_equal(b.len, strlen(want));
    elpis_buf_free(&b);
}

static void check_both(elpis_chat_family f, const char *body, const char *gen) {
    char with[2048];
    snprintf(with, sizeof with, "%s%s", body, gen);
    check_render(f, conv, ELPIS_ARRAY_LEN(conv), false, body);
    check_render(f, conv, ELPIS_ARRAY_LEN(conv), true, with);
}

/* ---- formats -------------------------------------------------------------- */

static void test_chatml(void **state) {
    (void)state;
    check_both(ELPIS_CHAT_CHATML,
               "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
               "<|im_start|>user\nHello<|im_end|>\n"
               "<|im_start|>assistant\nHi there<|im_end|>\n"
               "<|im_start|>user\nHow are you?<|im_end|>\n",
               "<|im_start|>assistant\n");
}

static void test_unknown_renders_chatml(void **state) {
    (void)state;
    check_render(ELPIS_CHAT_UNKNOWN, conv, 2, true,
                 "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
}

static void test_llama2(void **state) {
    (void)state;
    /* Plain llama2: system text without <<SYS>> tags; no generation prompt. */
    const char *plain = "[INST] You are a helpful assistant.\nHello [/INST]Hi there</s>[INST] How are you? [/INST]";
    check_both(ELPIS_CHAT_LLAMA2, plain, "");
    const char *sys = "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
                      "[INST] How are you? [/INST]";
    check_both(ELPIS_CHAT_LLAMA2_SYS, sys, "");
    check_both(ELPIS_CHAT_LLAMA2_SYS_STRIP, sys, "");
    check_both(ELPIS_CHAT_LLAMA2_SYS_BOS,
               "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST]Hi there</s>"
               "<s>[INST] How are you? [/INST]",
               "");
}

static void test_llama2_strip_trims_only_strip(void **state) {
    (void)state;
    const elpis_chat_msg m[] = { { "system", "  sys \n" }, { "user", "\thi  " } };
    check_render(ELPIS_CHAT_LLAMA2_SYS_STRIP, m, 2, false, "[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST]");
    check_render(ELPIS_CHAT_LLAMA2_SYS, m, 2, false, "[INST] <<SYS>>\n  sys \n\n<</SYS>>\n\n\thi   [/INST]");
}

static void test_mistral_v7(void **state) {
    (void)state;
    check_both(ELPIS_CHAT_MISTRAL_V7,
               "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>"
               "[INST] How are you?[/INST]",
               "");
    check_both(ELPIS_CHAT_MISTRAL_V7_TEKKEN,
               "[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT][INST]Hello[/INST]Hi there</s>"
               "[INST]How are you?[/INST]",
               "");
}

static void test_llama3(void **state) {
    (void)state;
    check_both(ELPIS_CHAT_LLAMA3,
               "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n");
    const elpis_chat_msg m[] = { { "user", " \n Hello \n\n" } };
    check_render(ELPIS_CHAT_LLAMA3, m, 1, false, "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>");
}

static void test_phi3_zephyr(void **state) {
    (void)state;
    check_both(ELPIS_CHAT_PHI3,
               "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n"
               "<|assistant|>\nHi there<|end|>\n<|user|>\nHow are you?<|end|>\n",
               "<|assistant|>\n");
    check_both(ELPIS_CHAT_ZEPHYR,
               "<|system|>\nYou are a helpful assistant.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
               "<|assistant|>\nHi there<|endoftext|>\n<|user|>\nHow are you?<|endoftext|>\n",
               "<|assistant|>\n");
}

static void test_gemma(void **state) {
    (void)state;
    check_both(ELPIS_CHAT_GEMMA,
               "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n"
               "<start_of_turn>model\nHi there<end_of_turn>\n"
               "<start_of_turn>user\nHow are you?<end_of_turn>\n",
               "<start_of_turn>model\n");
}

static void test_gemma_system_edge_cases(void **state) {
    (void)state;
    /* Trimmed; held across a model turn; an empty system adds no blank line. */
    const elpis_chat_msg held[] = { { "assistant", "Hi" }, { "system", "  Be brief. " }, { "user", " Q " } };
    check_render(ELPIS_CHAT_GEMMA, held, 3, false,
                 "<start_of_turn>model\nHi<end_of_turn>\n<start_of_turn>user\nBe brief.\n\nQ<end_of_turn>\n");
    const elpis_chat_msg empty[] = { { "system", "  " }, { "user", "Q" } };
    check_render(ELPIS_CHAT_GEMMA, empty, 2, false, "<start_of_turn>user\nQ<end_of_turn>\n");
}

static void test_unknown_role_passed_through(void **state) {
    (void)state;
    const elpis_chat_msg m[] = { { "tool", "42" } };
    check_render(ELPIS_CHAT_CHATML, m, 1, false, "<|im_start|>tool\n42<|im_end|>\n");
    check_render(ELPIS_CHAT_LLAMA3, m, 1, false, "<|start_header_id|>tool<|end_header_id|>\n\n42<|eot_id|>");
    check_render(ELPIS_CHAT_PHI3, m, 1, false, "<|tool|>\n42<|end|>\n");
    check_render(ELPIS_CHAT_GEMMA, m, 1, false, "<start_of_turn>tool\n42<end_of_turn>\n");
}

static void test_empty_conversation(void **state) {
    (void)state;
    check_render(ELPIS_CHAT_CHATML, NULL, 0, true, "<|im_start|>assistant\n");
    check_render(ELPIS_CHAT_LLAMA2, NULL, 0, true, "[INST] ");
    check_render(ELPIS_CHAT_MISTRAL_V7, NULL, 0, true, "");
}

/* ---- errors ----------------------------------------------------------------- */

static void test_null_content_names_index(void **state) {
    (void)state;
    const elpis_chat_msg m[] = { { "system", "s" }, { "user", "u" }, { "assistant", NULL } };
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    assert_int_equal(elpis_buf_puts(&b, "keep"), ELPIS_OK);
    assert_int_equal(elpis_chat_apply(ELPIS_CHAT_CHATML, m, 3, true, &b, &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "message 2"));
    assert_non_null(strstr(err.msg, "content"));
    assert_string_equal(b.data, "keep"); /* untouched */
    assert_int_equal(b.len, 4);

    const elpis_chat_msg r[] = { { NULL, "x" } };
    assert_int_equal(elpis_chat_apply(ELPIS_CHAT_LLAMA3, r, 1, false, &b, &err), ELPIS_EINVAL);
    assert_non_null(strstr(err.msg, "message 0"));
    assert_int_equal(elpis_chat_apply(ELPIS_CHAT_LLAMA3, NULL, 2, false, &b, &err), ELPIS_EINVAL);
    assert_string_equal(b.data, "keep");
    elpis_buf_free(&b);
}

static void test_apply_appends(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    assert_int_equal(elpis_buf_puts(&b, "X"), ELPIS_OK);
    assert_int_equal(elpis_chat_apply(ELPIS_CHAT_PHI3, conv + 1, 1, false, &b, NULL), ELPIS_OK);
    assert_string_equal(b.data, "X<|user|>\nHello<|end|>\n");
    elpis_buf_free(&b);
}

static void test_unsupported_family_is_an_error(void **state) {
    (void)state;
    elpis_buf b = { 0 };
    elpis_error err = { 0 };
    assert_int_equal(elpis_chat_apply(ELPIS_CHAT_MISTRAL_V3, conv, 2, true, &b, &err), ELPIS_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "mistral-v3"));
    assert_int_equal(b.len, 0);
    assert_int_equal(elpis_chat_apply((elpis_chat_family)999, conv, 2, true, &b, &err), ELPIS_EINVAL);
    elpis_buf_free(&b);
}

/* ---- names ---------------------------------------------------------------------- */

static void test_names_round_trip(void **state) {
    (void)state;
    for (int f = 1; f < ELPIS_CHAT_FAMILY_COUNT; f++) {
        const char *name = elpis_chat_family_name((elpis_chat_family)f);
        assert_int_equal(elpis_chat_family_from_name(name), f);
        elpis_chat_family d = elpis_chat_detect(name);
        assert_int_equal(d, elpis_chat_family_supported((elpis_chat_family)f) ? f : ELPIS_CHAT_UNKNOWN);
    }
    assert_string_equal(elpis_chat_family_name(ELPIS_CHAT_UNKNOWN), "unknown");
    assert_string_equal(elpis_chat_family_name((elpis_chat_family)-1), "unknown");
    assert_int_equal(elpis_chat_family_from_name("unknown"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_family_from_name(NULL), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_family_from_name("deepseek3"), ELPIS_CHAT_UNKNOWN);
    assert_string_equal(elpis_chat_family_name(ELPIS_CHAT_LLAMA2_SYS_BOS), "llama2-sys-bos");
    assert_string_equal(elpis_chat_family_name(ELPIS_CHAT_MISTRAL_V7), "mistral-v7");
}

static void test_detect_names(void **state) {
    (void)state;
    assert_int_equal(elpis_chat_detect(NULL), ELPIS_CHAT_CHATML);
    assert_int_equal(elpis_chat_detect("chatml"), ELPIS_CHAT_CHATML);
    assert_int_equal(elpis_chat_detect("llama2"), ELPIS_CHAT_LLAMA2);
    assert_int_equal(elpis_chat_detect("llama3"), ELPIS_CHAT_LLAMA3);
    assert_int_equal(elpis_chat_detect("phi3"), ELPIS_CHAT_PHI3);
    assert_int_equal(elpis_chat_detect("zephyr"), ELPIS_CHAT_ZEPHYR);
    assert_int_equal(elpis_chat_detect("gemma"), ELPIS_CHAT_GEMMA);
    assert_int_equal(elpis_chat_detect("mistral-v7"), ELPIS_CHAT_MISTRAL_V7);
    assert_int_equal(elpis_chat_detect("mistral-v7-tekken"), ELPIS_CHAT_MISTRAL_V7_TEKKEN);
    /* Known names we do not render stop at UNKNOWN; "mistral-v1" must not
     * fall through to the "starts with mistral" rule and become llama2. */
    assert_int_equal(elpis_chat_detect("mistral-v1"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect("mistral-v3-tekken"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect("phi4"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect("deepseek3"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect(""), ELPIS_CHAT_UNKNOWN);
}

/* ---- detection from Jinja fragments ----------------------------------------------- */

static const char qwen2_tmpl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char llama3_tmpl[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char llama2_sys_tmpl[] =
    "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
    "messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + system_message + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

static const char llama2_strip_tmpl[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}"
    "{% endif %}{% endfor %}";

static const char llama2_bos_tmpl[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% endif %}{% endfor %}";

static const char phi3_tmpl[] =
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

static const char zephyr_tmpl[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '<|endoftext|>\\n' }}{% else %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|endoftext|>\\n' }}{% endif %}{% endfor %}";

static const char gemma_tmpl[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

static void test_detect_templates(void **state) {
    (void)state;
    assert_int_equal(elpis_chat_detect(qwen2_tmpl), ELPIS_CHAT_CHATML);
    assert_int_equal(elpis_chat_detect(llama3_tmpl), ELPIS_CHAT_LLAMA3);
    assert_int_equal(elpis_chat_detect(llama2_sys_tmpl), ELPIS_CHAT_LLAMA2_SYS);
    assert_int_equal(elpis_chat_detect(llama2_strip_tmpl), ELPIS_CHAT_LLAMA2_SYS_STRIP);
    assert_int_equal(elpis_chat_detect(llama2_bos_tmpl), ELPIS_CHAT_LLAMA2_SYS_BOS);
    assert_int_equal(elpis_chat_detect("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), ELPIS_CHAT_LLAMA2);
    assert_int_equal(elpis_chat_detect(phi3_tmpl), ELPIS_CHAT_PHI3);
    assert_int_equal(elpis_chat_detect(zephyr_tmpl), ELPIS_CHAT_ZEPHYR);
    assert_int_equal(elpis_chat_detect(gemma_tmpl), ELPIS_CHAT_GEMMA);
    assert_int_equal(elpis_chat_detect("{{ '[SYSTEM_PROMPT]' + system + '[/SYSTEM_PROMPT]' }}{{ '[INST]' }}"),
                     ELPIS_CHAT_MISTRAL_V7);
    assert_int_equal(elpis_chat_detect("### Instruction:\n{{ prompt }}\n\n### Response:\n"), ELPIS_CHAT_UNKNOWN);
}

static void test_detect_order_traps(void **state) {
    (void)state;
    /* Phi-4: <|im_start|> with <|im_sep|> is phi4 (not rendered), never chatml. */
    assert_int_equal(elpis_chat_detect("{{'<|im_start|>' + message['role'] + '<|im_sep|>'}}"), ELPIS_CHAT_UNKNOWN);
    /* SmolVLM. */
    assert_int_equal(elpis_chat_detect("<|im_start|>{{ role }}<end_of_utterance>"), ELPIS_CHAT_UNKNOWN);
    /* <|im_start|> is tested before [INST]. */
    assert_int_equal(elpis_chat_detect("<|im_start|> [INST] <<SYS>>"), ELPIS_CHAT_CHATML);
    /* Mistral v1/v3 (tools or ' [INST] ' + system_message): recognised, not rendered. */
    assert_int_equal(elpis_chat_detect("{{ '[AVAILABLE_TOOLS]' }}{{ '[INST]' }}"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect("{{ bos_token + ' [INST] ' + system_message }}"), ELPIS_CHAT_UNKNOWN);
    /* Anything starting with "mistral" goes to the [INST] rules. */
    assert_int_equal(elpis_chat_detect("mistral-instruct"), ELPIS_CHAT_LLAMA2);
    /* A Zephyr-looking template that also has <|assistant|> is claimed first
     * by the falcon3/glmedge rule. */
    assert_int_equal(elpis_chat_detect("<|user|>\n{{ m }}<|endoftext|><|assistant|>\n"), ELPIS_CHAT_UNKNOWN);
    /* <|assistant|> + <|end|> is phi3 even with <|user|>. */
    assert_int_equal(elpis_chat_detect("<|user|><|assistant|><|end|>"), ELPIS_CHAT_PHI3);
    /* chatglm4 and monarch. */
    assert_int_equal(elpis_chat_detect("[gMASK]<sop>{% for m in messages %}"), ELPIS_CHAT_UNKNOWN);
    assert_int_equal(elpis_chat_detect("{{ bos_token + message['role'] + '\\n' }}<start_of_turn>"),
                     ELPIS_CHAT_UNKNOWN);
    /* Gemma is tested before llama3. */
    assert_int_equal(elpis_chat_detect("<start_of_turn><|start_header_id|><|end_header_id|>"), ELPIS_CHAT_GEMMA);
    /* llama3 needs both header tokens. */
    assert_int_equal(elpis_chat_detect("<|start_header_id|>"), ELPIS_CHAT_UNKNOWN);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),
        cmocka_unit_test(test_unknown_renders_chatml),
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_llama2_strip_trims_only_strip),
        cmocka_unit_test(test_mistral_v7),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_phi3_zephyr),
        cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_gemma_system_edge_cases),
        cmocka_unit_test(test_unknown_role_passed_through),
        cmocka_unit_test(test_empty_conversation),
        cmocka_unit_test(test_null_content_names_index),
        cmocka_unit_test(test_apply_appends),
        cmocka_unit_test(test_unsupported_family_is_an_error),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_detect_names),
        cmocka_unit_test(test_detect_templates),
        cmocka_unit_test(test_detect_order_traps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
