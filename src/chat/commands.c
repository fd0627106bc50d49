/* commands.c -- the slash commands, shared by the plain and full-screen
 * front ends (Hermes's commands.py, spec §8, plus memory and dreams).
 *
 *   /help  (h, ?)            this list
 *   /quit  (q, exit)         quit
 *   /clear (c, cls)          forget the conversation (a new session id)
 *   /status (s)              server, model, session, counts, workspace
 *   /emotion (e)             quadrant, trend, valence and arousal bars
 *   /thoughts [on|off] (t)   show the model's reasoning
 *   /memory search TEXT      GET /v1/memories?q=TEXT&n=5   (m)
 *   /memory stats            GET /v1/memories/stats
 *   /remember TEXT           POST /v1/memories (a semantic memory)
 *   /dream                   POST /v1/psyche/dream (dream now)
 *
 * Server features that are missing (404/405) are reported as "not available
 * on this server", never as failures of the client. Output goes through the
 * front end's say() so each front end decides where text appears.
 */
#include "chat_internal.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAY(kind, ...) do { elpis_buf b_ = { 0 }; elpis_buf_printf(&b_, __VA_ARGS__); say(ud, kind, b_.data ? b_.data : ""); elpis_buf_free(&b_); } while (0)

static const char HELP[] =
    "commands:\n"
    "  /help (h, ?)              this list\n"
    "  /quit (q, exit)           quit (also: Ctrl+C twice when idle)\n"
    "  /clear (c, cls)           forget the conversation\n"
    "  /status (s)               server, model, session and counts\n"
    "  /emotion (e)              the model's emotional state\n"
    "  /thoughts [on|off] (t)    show or hide the model's reasoning\n"
    "  /memory search TEXT (m)   search the model's memories\n"
    "  /memory stats             memory counts\n"
    "  /remember TEXT            store TEXT as a memory\n"
    "  /dream                    let the model dream now\n"
    "Ctrl+C while a reply streams interrupts it.";

void elpis_chat_bar(double v, double lo, double hi, int cells, char *buf, size_t n) {
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    int fill = (int)((v - lo) / (hi - lo) * cells + 0.5);
    size_t k = 0;
    if (n < (size_t)cells + 3) { if (n) buf[0] = 0; return; }
    buf[k++] = '[';
    for (int i = 0; i < cells; i++) buf[k++] = i < fill ? '#' : '-';
    buf[k++] = ']';
    buf[k] = 0;
}

/* ---- server state ----------------------------------------------------------------------------- */

void elpis_chat_set_emotion(elpis_chat_app *app, double valence, double arousal, const char *quadrant) {
    app->has_emotion = true;
    app->valence = valence;
    app->arousal = arousal;
    snprintf(app->quadrant, sizeof app->quadrant, "%s", quadrant ? quadrant : "");
}

bool elpis_chat_refresh_emotion(elpis_chat_app *app) {
    json_t *o = NULL;
    long status = 0;
    bool ok = false;
    if (elpis_client_request(&app->client, "GET", "/v1/psyche/emotion", NULL, &status, &o, NULL) == ELPIS_OK && status == 200) {
        json_t *v = json_object_get(o, "valence"), *a = json_object_get(o, "arousal"), *q = json_object_get(o, "quadrant");
        if ((ok = json_is_number(v) && json_is_number(a)))
            elpis_chat_set_emotion(app, json_number_value(v), json_number_value(a), json_string_value(q));
    }
    json_decref(o);
    o = NULL;
    if (ok && elpis_client_request(&app->client, "GET", "/v1/emotion", NULL, &status, &o, NULL) == ELPIS_OK && status == 200) {
        json_t *t = json_object_get(json_object_get(o, "trajectory"), "trend");
        snprintf(app->trend, sizeof app->trend, "%s", json_is_string(t) ? json_string_value(t) : "");
    }
    json_decref(o);
    return ok;
}

static void cmd_emotion(elpis_chat_app *app, elpis_say_fn say, void *ud) {
    char vb[16], ab[16];
    if (!elpis_chat_refresh_emotion(app)) {
        SAY("error", "emotion: not available on this server (GET /v1/psyche/emotion)");
        return;
    }
    elpis_chat_bar(app->valence, -1, 1, 10, vb, sizeof vb);
    elpis_chat_bar(app->arousal, 0, 1, 10, ab, sizeof ab);
    SAY("emotion", "quadrant: %s%s%s\nvalence  %s %+.2f\narousal  %s %+.2f", app->quadrant, app->trend[0] ? "   trend: " : "",
        app->trend, vb, app->valence, ab, app->arousal);
}

static void cmd_status(elpis_chat_app *app, elpis_say_fn say, void *ud) {
    json_t *h = NULL;
    long status = 0;
    elpis_error err = { 0 };
    elpis_buf b = { 0 };
    if (elpis_client_request(&app->client, "GET", "/health", NULL, &status, &h, &err) != ELPIS_OK)
        elpis_buf_printf(&b, "server: %s (unreachable: %s)\n", app->client.base, err.msg);
    else {
        json_t *st = json_object_get(h, "status");
        elpis_buf_printf(&b, "server: %s%s (%s, running %lld, queued %lld)\n", app->client.base,
                         app->in_process ? " (in-process)" : "", json_is_string(st) ? json_string_value(st) : "?",
                         json_integer_value(json_object_get(h, "running")), json_integer_value(json_object_get(h, "queued")));
    }
    json_decref(h);
    elpis_buf_printf(&b, "state: %s\nmodel: %s\nsession: %s\n", app->busy ? "busy" : "idle",
                     app->model_name ? app->model_name : "?", app->client.session);
    elpis_buf_printf(&b, "messages: %zu (replies %d, tool calls %d)\n", json_array_size(app->agent.messages),
                     app->agent.n_replies, app->agent.n_tool_calls);
    elpis_buf_printf(&b, "workspace: %s (tools %s, confirmations %s)\nthoughts: %s", app->ws.root, app->tools ? "on" : "off",
                     app->yes ? "off" : "on", app->show_thoughts ? "on" : "off");
    say(ud, "info", b.data ? b.data : "");
    elpis_buf_free(&b);
}

/* ---- memories ------------------------------------------------------------------------------------ */

static json_t *hits_of(json_t *o) {
    if (json_is_array(o)) return o;
    static const char *const keys[] = { "results", "memories", "data" };
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(keys); i++)
        if (json_is_array(json_object_get(o, keys[i]))) return json_object_get(o, keys[i]);
    return NULL;
}

static void say_hits(json_t *hits, elpis_say_fn say, void *ud) {
    elpis_buf b = { 0 };
    for (size_t i = 0; i < json_array_size(hits); i++) {
        json_t *m = json_array_get(hits, i), *type = json_object_get(m, "memory_type");
        const char *c = json_string_value(json_object_get(m, "content")), *s = json_string_value(json_object_get(m, "summary"));
        if (!c) continue;
        if (strlen(c) > 200 && s && *s) c = s;
        elpis_buf_printf(&b, "%s%zu. [%s] %.300s%s", b.len ? "\n" : "", i + 1, json_is_string(type) ? json_string_value(type) : "memory",
                         c, strlen(c) > 300 ? "..." : "");
    }
    say(ud, "info", b.len ? b.data : "no memories found");
    elpis_buf_free(&b);
}

static bool missing(long status) { return status == 404 || status == 405; }

static void cmd_memory(elpis_chat_app *app, const char *arg, elpis_say_fn say, void *ud) {
    json_t *o = NULL;
    long status = 0;
    elpis_error err = { 0 };
    char path[4200];
    bool stats = !*arg || !strcmp(arg, "stats");
    if (!stats && strncmp(arg, "search ", 7)) {
        SAY("error", "usage: /memory search TEXT | /memory stats");
        return;
    }
    if (stats) snprintf(path, sizeof path, "/v1/memories/stats");
    else {
        char *q = curl_easy_escape(app->client.curl, arg + 7, 0);
        snprintf(path, sizeof path, "/v1/memories?q=%.4096s&n=5", q ? q : "");
        curl_free(q);
    }
    if (elpis_client_request(&app->client, "GET", path, NULL, &status, &o, &err) != ELPIS_OK) SAY("error", "memory: %s", err.msg);
    else if (missing(status)) SAY("error", "memory: not available on this server");
    else if (status != 200) SAY("error", "memory: the server answered %ld", status);
    else if (stats)
        SAY("info", "memories: %lld (short-term %lld, long-term %lld)", json_integer_value(json_object_get(o, "total_memories")),
            json_integer_value(json_object_get(o, "short_term")), json_integer_value(json_object_get(o, "long_term")));
    else say_hits(hits_of(o), say, ud);
    json_decref(o);
}

static void cmd_remember(elpis_chat_app *app, const char *text, elpis_say_fn say, void *ud) {
    json_t *o = NULL, *body = json_pack("{s:s, s:s, s:[s, s]}", "content", text, "memory_type", "semantic", "tags", "user", "remember");
    long status = 0;
    elpis_error err = { 0 };
    if (!*text) SAY("error", "usage: /remember TEXT");
    else if (elpis_client_request(&app->client, "POST", "/v1/memories", body, &status, &o, &err) != ELPIS_OK) SAY("error", "remember: %s", err.msg);
    else if (missing(status)) SAY("error", "remember: memories are not available on this server");
    else if (status != 200 && status != 201) SAY("error", "remember: the server answered %ld", status);
    else {
        json_t *id = json_object_get(o, "id");
        SAY("info", "remembered%s%s", json_is_string(id) ? " as " : "", json_is_string(id) ? json_string_value(id) : "");
    }
    json_decref(o);
    json_decref(body);
}

/* Ctrl+C (a SIGINT since the dream began) interrupts a /dream. */
static int dream_poll(void *ud) {
    const elpis_chat_app *app = ud;
    return *app->sigint != app->dream_seen_int || *app->sigterm;
}

/* The whole dream at once (the full-screen UI streams /dream itself). */
static void cmd_dream(elpis_chat_app *app, elpis_say_fn say, void *ud) {
    elpis_buf text = { 0 };
    elpis_error err = { 0 };
    app->dream_seen_int = *app->sigint;
    elpis_status st = elpis_chat_dream(app, NULL, dream_poll, -1, app, &text, &err);
    if (st == ELPIS_OK) SAY("thought", "[dream] %.*s", (int)text.len, text.data ? text.data : "");
    else if (st == ELPIS_ECANCELLED) SAY("info", "dream interrupted");
    else if (strstr(err.msg, "answered 404") || strstr(err.msg, "answered 405")) SAY("error", "dream: not available on this server");
    else SAY("error", "dream: %s", err.msg);
    elpis_buf_free(&text);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

static bool is(const char *word, size_t n, const char *names) {   /* names: "help h ?" */
    for (const char *p = names; *p;) {
        size_t k = strcspn(p, " ");
        if (k == n && !strncmp(word, p, n)) return true;
        p += k;
        while (*p == ' ') p++;
    }
    return false;
}

static elpis_cmd_result cmd_thoughts(elpis_chat_app *app, const char *arg, elpis_say_fn say, void *ud) {
    if (!strcmp(arg, "on") || !strcmp(arg, "true") || !strcmp(arg, "1")) app->show_thoughts = true;
    else if (!strcmp(arg, "off") || !strcmp(arg, "false") || !strcmp(arg, "0")) app->show_thoughts = false;
    else if (!*arg) app->show_thoughts = !app->show_thoughts;
    else {
        SAY("error", "usage: /thoughts [on|off]");
        return ELPIS_CMD_DONE;
    }
    SAY("info", "thoughts: %s", app->show_thoughts ? "on" : "off");
    return ELPIS_CMD_THOUGHTS;
}

elpis_cmd_result elpis_chat_command(elpis_chat_app *app, const char *line, elpis_say_fn say, void *ud) {
    while (isspace((unsigned char)*line)) line++;
    if (line[0] != '/') return ELPIS_CMD_NOT_A_COMMAND;
    const char *w = line + 1;
    size_t n = strcspn(w, " \t");
    const char *arg = w + n;
    while (isspace((unsigned char)*arg)) arg++;
    char a[4096];
    snprintf(a, sizeof a, "%s", arg);
    for (size_t k = strlen(a); k && isspace((unsigned char)a[k - 1]);) a[--k] = 0;
    if (is(w, n, "help h ?")) say(ud, "info", HELP);
    else if (is(w, n, "quit q exit")) return ELPIS_CMD_QUIT;
    else if (is(w, n, "clear c cls")) {
        elpis_agent_clear(&app->agent);
        SAY("info", "conversation cleared (session %s)", app->client.session);
        return ELPIS_CMD_CLEARED;
    } else if (is(w, n, "status s")) cmd_status(app, say, ud);
    else if (is(w, n, "emotion e")) cmd_emotion(app, say, ud);
    else if (is(w, n, "thoughts t")) return cmd_thoughts(app, a, say, ud);
    else if (is(w, n, "memory m")) cmd_memory(app, a, say, ud);
    else if (is(w, n, "remember")) cmd_remember(app, a, say, ud);
    else if (is(w, n, "dream")) cmd_dream(app, say, ud);
    else SAY("error", "unknown command /%.*s (try /help)", (int)n, w);
    return ELPIS_CMD_DONE;
}
