/* dream.c -- the client's side of dreaming (issue #8): POST
 * /v1/psyche/dream {"stream": true} read through the chat-completion reply
 * parser, so the dream arrives as the same chunks a reply does and the
 * server's summary event ({"object":"elpis.dream", ...}) is simply not a
 * choice. The request is interruptible like a reply: the poll callback's
 * non-zero answer aborts the transfer at the socket and the server cancels
 * the dream (client_disconnect). max_tokens and ignore_eos follow the
 * conversation's request fields (--max-tokens, --param), so one knob bounds
 * replies and dreams alike.
 */
#include "chat_internal.h"

#include <stdio.h>
#include <string.h>

static json_t *dream_body(const elpis_chat_app *app) {
    json_t *body = json_pack("{s:b}", "stream", 1);
    static const char *const copied[] = { "max_tokens", "ignore_eos" };
    for (size_t i = 0; body && i < ELPIS_ARRAY_LEN(copied); i++) {
        json_t *v = json_object_get(app->agent.params, copied[i]);
        if (v) json_object_set(body, copied[i], v);
    }
    return body;
}

elpis_status elpis_chat_dream(elpis_chat_app *app, elpis_text_fn on_text, elpis_poll_fn poll, int poll_fd, void *ud,
                              elpis_buf *text, elpis_error *err) {
    elpis_reply reply;
    json_t *body = dream_body(app);
    if (!body) return elpis_fail(err, ELPIS_ENOMEM, "dream: out of memory");
    elpis_reply_init(&reply, on_text, ud);
    elpis_status st = elpis_client_stream(&app->client, "/v1/psyche/dream", body, &reply, poll_fd, poll, ud, err);
    if (st == ELPIS_OK && reply.error[0]) st = elpis_fail(err, ELPIS_EIO, "%s", reply.error);
    else if (st == ELPIS_OK && !reply.done) st = elpis_fail(err, ELPIS_EIO, "the dream stream ended early");
    if (text && reply.content.len) elpis_buf_append(text, reply.content.data, reply.content.len);
    elpis_reply_free(&reply);
    json_decref(body);
    return st;
}
