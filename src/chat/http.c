/* http.c -- the client's HTTP side, on libcurl.
 *
 * One easy handle per client, reset before each request and reused, so the
 * connection to the server is kept alive between requests. Short requests
 * (health, emotion, memories) use curl_easy_perform with a 10 s timeout.
 *
 * The streaming chat request runs through a multi handle so the caller stays
 * in control while it waits: curl_multi_poll wakes at least every 50 ms and
 * whenever the caller's descriptor (the terminal) is readable, and the
 * caller's poll callback is asked each time. When it says stop, the easy
 * handle is removed from the multi handle at once: libcurl closes the
 * socket of an unfinished transfer, the server's watcher sees the hang-up
 * and cancels the generation (stream_cancelled reason=client_disconnect).
 *
 * Every request carries X-Session-Id (the conversation's id, so the server
 * supersedes a stale request of the same conversation) and, when an API key
 * was given, Authorization: Bearer KEY. Bodies are capped (16 MiB).
 */
#include "chat_internal.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BODY (16u << 20)

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void elpis_client_new_session(elpis_client *c) {
    char id[24];
    chat__call_id(id);   /* call_ + 12 hex: reuse its randomness */
    snprintf(c->session, sizeof c->session, "chat-%s", id + 5);
}

elpis_status elpis_client_init(elpis_client *c, const char *base, const char *api_key, elpis_error *err) {
    memset(c, 0, sizeof *c);
    pthread_once(&g_once, global_init);
    if (!base || (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0))
        return elpis_fail(err, ELPIS_EINVAL, "--server: '%s' is not an http:// or https:// URL", base ? base : "");
    c->base = strdup(base);
    c->api_key = api_key ? strdup(api_key) : NULL;
    c->curl = curl_easy_init();
    c->multi = curl_multi_init();
    c->timeout_ms = 10000;
    if (!c->base || (api_key && !c->api_key) || !c->curl || !c->multi) {
        elpis_client_free(c);
        return elpis_fail(err, ELPIS_ENOMEM, "HTTP client: out of memory");
    }
    size_t n = strlen(c->base);
    while (n > 8 && c->base[n - 1] == '/') c->base[--n] = 0;
    elpis_client_new_session(c);
    return ELPIS_OK;
}

void elpis_client_free(elpis_client *c) {
    if (c->curl) curl_easy_cleanup(c->curl);
    if (c->multi) curl_multi_cleanup(c->multi);
    free(c->base);
    free(c->api_key);
    memset(c, 0, sizeof *c);
}

/* ---- request setup ---------------------------------------------------------------------------- */

static struct curl_slist *headers_for(const elpis_client *c, bool json_body) {
    char line[600];
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    if (json_body) h = curl_slist_append(h, "Content-Type: application/json");
    snprintf(line, sizeof line, "X-Session-Id: %s", c->session);
    h = curl_slist_append(h, line);
    if (c->api_key) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", c->api_key);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* Reset the handle for METHOD base+path with an optional body (kept by the caller). */
static void setup(elpis_client *c, const char *method, const char *path, const char *body, struct curl_slist *h) {
    CURL *e = c->curl;
    char url[8192];
    snprintf(url, sizeof url, "%s%s", c->base, path);
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "elpis-chat/1");
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, body ? "POST" : "GET")) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
}

static size_t collect_cb(char *p, size_t sz, size_t n, void *ud) {
    elpis_buf *b = ud;
    if (b->len + sz * n > MAX_BODY || elpis_buf_append(b, p, sz * n) != ELPIS_OK) return 0;
    return sz * n;
}

static elpis_status transport_error(const elpis_client *c, CURLcode rc, const char *path, elpis_error *err) {
    return elpis_fail(err, ELPIS_EIO, "%s%s: %s", c->base, path, curl_easy_strerror(rc));
}

/* ---- short requests ------------------------------------------------------------------------------- */

elpis_status elpis_client_request(elpis_client *c, const char *method, const char *path, const json_t *body,
                                  long *status, json_t **out, elpis_error *err) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *h = headers_for(c, body != NULL);
    elpis_buf resp = { 0 };
    elpis_status st = ELPIS_OK;
    if ((body && !text) || !h) {
        st = elpis_fail(err, ELPIS_ENOMEM, "HTTP request: out of memory");
        goto done;
    }
    setup(c, method, path, text, h);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, collect_cb);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(c->curl);
    if (rc != CURLE_OK) {
        st = transport_error(c, rc, path, err);
        goto done;
    }
    long code = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
    if (status) *status = code;
    if (out) {
        json_error_t je;
        *out = resp.len ? json_loadb(resp.data, resp.len, 0, &je) : NULL;
    }
done:
    curl_slist_free_all(h);
    free(text);
    elpis_buf_free(&resp);
    return st;
}

/* ---- the stream ------------------------------------------------------------------------------------ */

typedef struct stream_ctx {
    elpis_client *c;
    elpis_reply *reply;
    elpis_buf errbody;      /* a non-200 answer's body */
    long status;
    elpis_error ferr;       /* why feeding failed */
    bool feed_failed;
} stream_ctx;

static size_t stream_cb(char *p, size_t sz, size_t n, void *ud) {
    stream_ctx *s = ud;
    if (!s->status) curl_easy_getinfo(s->c->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200) return collect_cb(p, sz, n, &s->errbody);
    if (elpis_reply_feed(s->reply, p, sz * n, &s->ferr) != ELPIS_OK) {
        s->feed_failed = true;
        return 0;
    }
    return sz * n;
}

/* "message" of an OpenAI error body, or the body itself. */
static void error_message(const elpis_buf *b, char *out, size_t n) {
    json_error_t je;
    json_t *o = b->len ? json_loadb(b->data, b->len, 0, &je) : NULL;
    json_t *m = json_object_get(json_object_get(o, "error"), "message");
    if (!json_is_string(m)) m = json_object_get(o, "detail");
    snprintf(out, n, "%s", json_is_string(m) ? json_string_value(m) : b->len ? b->data : "(empty body)");
    json_decref(o);
}

/* Drive the transfer until it ends or poll says stop. */
static elpis_status run_multi(elpis_client *c, int poll_fd, elpis_poll_fn poll, void *ud, CURLcode *result) {
    CURLM *m = c->multi;
    struct curl_waitfd extra = { poll_fd, CURL_WAIT_POLLIN, 0 };
    int running = 1;
    *result = CURLE_OK;
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK) break;
        if (poll && poll(ud)) return ELPIS_ECANCELLED;
        if (!running) break;
        curl_multi_poll(m, poll_fd >= 0 ? &extra : NULL, poll_fd >= 0 ? 1u : 0u, 50, NULL);
    }
    int left;
    for (CURLMsg *msg; (msg = curl_multi_info_read(m, &left));)
        if (msg->msg == CURLMSG_DONE) *result = msg->data.result;
    return ELPIS_OK;
}

elpis_status elpis_client_stream(elpis_client *c, const char *path, const json_t *body, elpis_reply *reply,
                                 int poll_fd, elpis_poll_fn poll, void *ud, elpis_error *err) {
    char *text = json_dumps(body, JSON_COMPACT);
    struct curl_slist *h = headers_for(c, true);
    stream_ctx s = { .c = c, .reply = reply };
    elpis_status st = ELPIS_OK;
    CURLcode rc = CURLE_OK;
    if (!text || !h) {
        st = elpis_fail(err, ELPIS_ENOMEM, "HTTP request: out of memory");
        goto done;
    }
    setup(c, "POST", path, text, h);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, stream_cb);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
    curl_multi_add_handle(c->multi, c->curl);
    st = run_multi(c, poll_fd, poll, ud, &rc);
    curl_multi_remove_handle(c->multi, c->curl);   /* an unfinished transfer's connection is closed here */
    if (!s.status) curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &s.status);   /* a body-less answer */
    if (st == ELPIS_ECANCELLED) {
        elpis_fail(err, st, "interrupted");
        goto done;
    }
    if (s.feed_failed) {
        st = elpis_fail(err, s.ferr.code ? s.ferr.code : ELPIS_EFORMAT, "%s", s.ferr.msg);
    } else if (rc != CURLE_OK) {
        st = transport_error(c, rc, path, err);
    } else if (s.status != 200) {
        char msg[400];
        error_message(&s.errbody, msg, sizeof msg);
        st = elpis_fail(err, ELPIS_EIO, "server answered %ld: %s", s.status, msg);
    }
done:
    curl_slist_free_all(h);
    free(text);
    elpis_buf_free(&s.errbody);
    return st;
}
