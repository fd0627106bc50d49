/* fuzz_http_body.c -- request bodies of the OpenAI API through the server's
 * own parser: srv_parse_gen for chat and text completions (JSON, sampling
 * fields, stop strings, chat rendering, tokenization), and the /tokenize and
 * /detokenize bodies. Every input must yield either a parsed request or a
 * client error with a message -- never a crash, a leak or UB.
 * The stories260K model (ELPIS_SHARED or ../shared) provides the vocabulary. */
#include "../../src/server/server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static elpis_server g_srv;
static elpis_server_config g_cfg;   /* defaults, as `serve` with no flags */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    char path[1024];
    const char *shared = getenv("ELPIS_SHARED");
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    elpis_error err = { 0 };
    elpis_sched_params sp = elpis_sched_default_params();
    sp.n_parallel = 1;
    sp.n_ctx = 512;
    sp.n_threads = 1;
    if (elpis_model_load(&g_srv.model, path, &err) != ELPIS_OK ||
        elpis_sched_new(&g_srv.sched, g_srv.model, &sp, &err) != ELPIS_OK) {
        fprintf(stderr, "fuzz_http_body: %s\n", err.msg);
        exit(1);
    }
    elpis_server_config_init(&g_cfg);
    g_srv.cfg = &g_cfg;
    g_srv.chat_family = elpis_chat_detect(g_srv.model->chat_template);
    g_srv.model_id = "stories260K";
    return 0;
}

static void one(const uint8_t *data, size_t size, int which) {
    srv_req r;
    memset(&r, 0, sizeof r);
    r.srv = &g_srv;
    elpis_arena_init(&r.arena, 4096);
    elpis_buf_append(&r.body, data, size);
    srv_api_error e;
    memset(&e, 0, sizeof e);
    elpis_buf out = { 0 };
    bool ok = which == 0 ? srv_parse_gen(&r, SRV_CHAT, &e)
            : which == 1 ? srv_parse_gen(&r, SRV_TEXT, &e)
            : which == 2 ? srv_api_tokenize(&r, &out, &e)
                         : srv_api_detokenize(&r, &out, &e);
    if (!ok && !e.msg[0]) abort();   /* a client error must say what is wrong */
    elpis_buf_free(&out);
    elpis_tokens_free(&r.gen.prompt);
    elpis_buf_free(&r.body);
    elpis_arena_free(&r.arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int which = 0; which < 4; which++) one(data, size, which);
    return 0;
}
