/* plain.c -- the line-mode front end (--plain, and whenever stdin or stdout
 * is not a terminal): for scripts, pipes and dumb terminals.
 *
 * Streams: the reply text and command output go to stdout; thoughts (with
 * /thoughts on), tool activity, prompts and errors go to stderr, so
 * `echo hi | elpis chat --plain` prints exactly the reply. Each reply ends
 * with a newline; an interrupted one ends with " [interrupted]".
 *
 * Input is read with read(2) on fd 0 (no stdio buffering, so a poll on fd 0
 * means what it says). Ctrl+C is counted by the SIGINT handler installed by
 * cmd_chat.c (app->sigint): during a reply or a command it interrupts; when
 * idle, a second Ctrl+C within 1.5 s quits. EOF on stdin ends the session
 * after the current turn (exit code 0).
 *
 * Dreams: only with an explicit --dream-delay (app->dream_delay_s > 0), so
 * a script never waits on one: after that long without input, once per
 * wait, the dream streams to stderr after "[dream] ". Input (stdin readable)
 * or Ctrl+C ends it at once; the input is then read as usual.
 *
 * Confirmations read the answer from the terminal (/dev/tty) when stdin is
 * a pipe; with no terminal at all, the action is refused ("use --yes").
 */
#include "chat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DOUBLE_TAP_MS 1500.0

typedef struct plain {
    elpis_chat_app *app;
    elpis_buf in;           /* bytes read from stdin, not yet a whole line */
    bool eof;
    sig_atomic_t seen_int;  /* SIGINTs already acted on */
    double last_int_ms;     /* when the last idle Ctrl+C came */
    bool at_line_start;     /* stdout */
    bool in_thought;        /* stderr is inside a "[thought]" run */
} plain;

/* ---- output ------------------------------------------------------------------------------------- */

static void out(plain *p, const char *s, size_t n) {
    if (!n) return;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    p->at_line_start = s[n - 1] == '\n';
}

static void end_line(plain *p) {
    if (!p->at_line_start) out(p, "\n", 1);
}

static void end_thought(plain *p) {
    if (!p->in_thought) return;
    fputc('\n', stderr);
    p->in_thought = false;
}

static void say(void *ud, const char *kind, const char *text) {
    plain *p = ud;
    end_thought(p);
    end_line(p);
    if (!strcmp(kind, "error")) fprintf(stderr, "%s\n", text);
    else {
        out(p, text, strlen(text));
        out(p, "\n", 1);
    }
}

/* ---- agent callbacks ------------------------------------------------------------------------------- */

static void ui_text(void *ud, bool thought, const char *t, size_t n) {
    plain *p = ud;
    if (!thought) {
        end_thought(p);
        out(p, t, n);
        return;
    }
    if (!p->app->show_thoughts) return;
    if (!p->in_thought) fputs("[thought] ", stderr);
    p->in_thought = true;
    fwrite(t, 1, n, stderr);
}

static void ui_reply_end(void *ud, const char *note) {
    plain *p = ud;
    end_thought(p);
    if (note && !strcmp(note, "[interrupted]")) {
        out(p, p->at_line_start ? "[interrupted]" : " [interrupted]", p->at_line_start ? 13 : 14);
    } else if (note) {
        end_line(p);
        fprintf(stderr, "elpis chat: %s\n", note);
    }
    end_line(p);
}

static void ui_tool(void *ud, const elpis_tool_call *c, elpis_tool_state st, elpis_tool_outcome o, const char *summary) {
    plain *p = ud;
    char d[128];
    end_thought(p);
    end_line(p);
    elpis_ws_describe(c->name, c->arguments, d, sizeof d);
    if (st == ELPIS_TOOL_RUNNING) fprintf(stderr, "[tool] %s ...\n", d);
    else fprintf(stderr, "[tool] %s %s%s%s\n", d, o == ELPIS_TOOL_OK ? "OK" : "!!", summary ? ": " : "", summary ? summary : "");
}

static void ui_emotion(void *ud, double v, double a, const char *q) {
    plain *p = ud;
    elpis_chat_set_emotion(p->app, v, a, q);
}

/* New SIGINTs since the last look: interrupt. */
static int ui_poll(void *ud) {
    plain *p = ud;
    sig_atomic_t n = *p->app->sigint;
    if (n == p->seen_int && !*p->app->sigterm) return 0;
    p->seen_int = n;
    return 1;
}

/* One line from the terminal, for a confirmation. */
static bool ui_confirm(void *ud, const char *tool, const char *detail) {
    plain *p = ud;
    end_line(p);
    int fd = isatty(0) ? 0 : open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "[tool] %s refused: no terminal to confirm on (use --yes)\n", tool);
        return false;
    }
    fprintf(stderr, "Allow %s: %s ? [y/N] ", tool, detail);
    fflush(stderr);
    char ans[16] = "";
    ssize_t n = read(fd, ans, sizeof ans - 1);
    if (fd != 0) close(fd);
    if (ui_poll(p)) return false;   /* Ctrl+C at the prompt: no */
    return n > 0 && (ans[0] == 'y' || ans[0] == 'Y');
}

/* ---- dreams -------------------------------------------------------------------------------------- */

static void dream_text(void *ud, const char *t, size_t n) {
    (void)ud;
    fwrite(t, 1, n, stderr);
}

/* Input waiting on stdin, or a Ctrl+C, ends the dream. */
static int dream_poll(void *ud) {
    struct pollfd pf = { 0, POLLIN, 0 };
    return ui_poll(ud) || poll(&pf, 1, 0) > 0;
}

static void idle_dream(plain *p) {
    elpis_error err = { 0 };
    end_line(p);
    fputs("[dream] ", stderr);
    elpis_status st = elpis_chat_dream(p->app, dream_text, dream_poll, 0, p, NULL, &err);
    if (st == ELPIS_ECANCELLED) fputs(" [dream interrupted]", stderr);
    else if (st != ELPIS_OK) fprintf(stderr, " [dream ended: %s]", err.msg);
    if (st != ELPIS_OK && (strstr(err.msg, "answered 404") || strstr(err.msg, "answered 405"))) p->app->dream_delay_s = 0;
    fputc('\n', stderr);
}

/* ---- input --------------------------------------------------------------------------------------- */

/* Ctrl+C while idle: the second one within 1.5 s quits. */
static bool idle_interrupt_quits(plain *p) {
    double now = elpis_now_ms();
    bool quit = p->last_int_ms > 0 && now - p->last_int_ms < DOUBLE_TAP_MS;
    p->last_int_ms = now;
    if (!quit) fprintf(stderr, "\n(press Ctrl+C again to quit)\n");
    return quit;
}

/* Next line (malloc'd, without '\n') or NULL at EOF / quit. */
static char *read_line(plain *p) {
    double idle_since = elpis_now_ms();
    bool dreamed = false;
    for (;;) {
        char *nl = p->in.len ? memchr(p->in.data, '\n', p->in.len) : NULL;
        if (nl || (p->eof && p->in.len)) {
            size_t n = nl ? (size_t)(nl - p->in.data) : p->in.len;
            char *line = strndup(p->in.data, n);
            size_t used = nl ? n + 1 : n;
            memmove(p->in.data, p->in.data + used, p->in.len - used);
            p->in.len -= used;
            return line;
        }
        if (p->eof || *p->app->sigterm) return NULL;
        if (*p->app->sigint != p->seen_int) {
            p->seen_int = *p->app->sigint;
            if (idle_interrupt_quits(p)) return NULL;
        }
        if (p->app->dream_delay_s > 0 && !dreamed && elpis_now_ms() - idle_since >= p->app->dream_delay_s * 1000.0) {
            idle_dream(p);
            dreamed = true;
        }
        struct pollfd pf = { 0, POLLIN, 0 };
        if (poll(&pf, 1, 100) <= 0) continue;
        char buf[4096];
        ssize_t k = read(0, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) p->eof = true;
        else elpis_buf_append(&p->in, buf, (size_t)k);
    }
}

int elpis_chat_run_plain(elpis_chat_app *app) {
    plain p = { .app = app, .seen_int = *app->sigint, .at_line_start = true };
    elpis_agent_ui ui = { NULL, ui_text, ui_reply_end, ui_tool, ui_emotion, ui_confirm, ui_poll, -1, &p };
    bool tty = isatty(0);
    app->ws.confirm = app->yes ? NULL : ui_confirm;
    app->ws.confirm_ud = &p;
    int rc = 0;
    for (;;) {
        if (tty) fputs("> ", stderr);
        char *line = read_line(&p);
        if (!line) break;
        elpis_cmd_result r = elpis_chat_command(app, line, say, &p);
        if (r == ELPIS_CMD_QUIT) { free(line); break; }
        if (r == ELPIS_CMD_NOT_A_COMMAND && line[strspn(line, " \t\r")]) {
            elpis_error err = { 0 };
            app->busy = true;
            p.seen_int = *app->sigint;
            elpis_status st = elpis_agent_send(&app->agent, line, &ui, &err);
            app->busy = false;
            p.last_int_ms = 0;
            if (st != ELPIS_OK && st != ELPIS_ECANCELLED && st != ELPIS_ERANGE) rc = 1;
            if (st == ELPIS_ERANGE) fprintf(stderr, "elpis chat: %s\n", err.msg);
        }
        free(line);
    }
    end_line(&p);
    elpis_buf_free(&p.in);
    return rc;
}
