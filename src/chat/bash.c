/* bash.c -- execute_bash: the blocklist, and running `sh -c` under a
 * timeout with capped output.
 *
 * BLOCKLIST (spec §5.5): the original's 18 substrings, matched without
 * regard to case on the command with runs of blanks collapsed to one space
 * (so "rm  -rf   /" is caught too). It is a guard rail against accidents,
 * not a security boundary: the confirmation prompt is the real gate.
 * Redirects: the original refused any command containing '>' together with
 * "/dev/" or ending in "> /". We look at each redirect's target instead, so
 * the everyday `2>/dev/null` still works: a target under /dev/ other than
 * /dev/null, /dev/stdout, /dev/stderr, or the target "/" itself, is refused.
 *
 * RUNNING
 *   fork; the child makes its own process group, resets signal dispositions
 *   and mask (the client ignores SIGPIPE and may block signals), reads
 *   /dev/null, writes two pipes, and execs /bin/sh -c CMD in the workspace.
 *   The parent polls the pipes every 50 ms, keeps at most `cap` bytes of
 *   each stream (counting the rest), and kills the whole group with SIGKILL
 *   at the deadline or when the poll callback asks (Ctrl+C). When the shell
 *   exits, what is already in the pipes is drained for up to 200 ms; a
 *   background job that keeps the pipes open is left running, not waited for.
 */
#include "ws_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- blocklist ------------------------------------------------------------------------- */

static const char *const BLOCKED[] = {
    "rm -rf /", "rm -rf ~", "rm -rf *", "mkfs", ":(){ :|:& };:", "dd if=/dev/zero", "mv / ", "chmod -R 777 /",
    "> /dev/sda", "wget http", "curl http", "sudo ", "chown -R", "shutdown", "reboot", "poweroff", "init 0", "init 6",
};

static bool contains_ci(const char *hay, const char *needle) {
    for (; *hay; hay++)
        if (chat__starts_ci(hay, strlen(hay), needle, NULL)) return true;
    return false;
}

/* A redirect target that is refused, or NULL. */
static const char *bad_redirect(const char *c) {
    static const char *const OK_DEV[] = { "/dev/null", "/dev/stdout", "/dev/stderr" };
    for (const char *p = strchr(c, '>'); p; p = strchr(p + 1, '>')) {
        const char *t = p + 1;
        while (*t == '>' || *t == '&' || *t == '|' || *t == ' ') t++;
        size_t n = strcspn(t, " ;|&<>()\n");
        if (n == 1 && t[0] == '/') return "redirect to /";
        if (n < 5 || strncmp(t, "/dev/", 5)) continue;
        bool ok = false;
        for (size_t i = 0; i < ELPIS_ARRAY_LEN(OK_DEV); i++) ok = ok || (strlen(OK_DEV[i]) == n && !strncmp(t, OK_DEV[i], n));
        if (!ok) return "redirect to a device under /dev/";
    }
    return NULL;
}

const char *elpis_ws_bash_blocked(const char *cmd) {
    size_t n = strlen(cmd);
    char *c = malloc(n + 1), *o = c;
    if (!c) return "out of memory";
    for (const char *p = cmd; *p; p++) {   /* collapse blanks; tabs and newlines count as blanks */
        bool blank = *p == ' ' || *p == '\t';
        if (blank && o > c && o[-1] == ' ') continue;
        *o++ = blank ? ' ' : *p;
    }
    *o = 0;
    const char *hit = NULL;
    for (size_t i = 0; !hit && i < ELPIS_ARRAY_LEN(BLOCKED); i++)
        if (contains_ci(c, BLOCKED[i])) hit = BLOCKED[i];
    if (!hit) hit = bad_redirect(c);
    free(c);
    return hit;
}

/* ---- running a shell command ------------------------------------------------------------------ */

void chat__proc_result_free(chat__proc_result *r) {
    elpis_buf_free(&r->out);
    elpis_buf_free(&r->err);
}

static void child(const char *cmd, const char *dir, int out_w, int err_w) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    setpgid(0, 0);
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0 || chdir(dir) != 0) _exit(126);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
}

/* Read what is there; keep up to cap bytes. false at EOF or error. */
static bool drain(int fd, elpis_buf *b, size_t cap, size_t *dropped) {
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n <= 0) return false;
        size_t keep = b->len < cap ? ELPIS_MIN((size_t)n, cap - b->len) : 0;
        if (keep && elpis_buf_append(b, buf, keep) != ELPIS_OK) keep = 0;
        *dropped += (size_t)n - keep;
    }
}

typedef struct proc {
    pid_t pid;
    int fd[2];   /* stdout, stderr read ends (-1 once closed) */
    int status;
    bool exited;
} proc;

static void pump(proc *p, chat__proc_result *r, size_t cap, int timeout_ms) {
    struct pollfd pf[2];
    int n = 0;
    for (int i = 0; i < 2; i++)
        if (p->fd[i] >= 0) pf[n++] = (struct pollfd){ p->fd[i], POLLIN, 0 };
    if (n == 0) return;
    if (poll(pf, (nfds_t)n, timeout_ms) <= 0) return;
    for (int i = 0; i < n; i++) {
        if (!pf[i].revents) continue;
        bool is_out = pf[i].fd == p->fd[0];
        if (!drain(pf[i].fd, is_out ? &r->out : &r->err, cap, is_out ? &r->out_dropped : &r->err_dropped)) {
            close(pf[i].fd);
            p->fd[is_out ? 0 : 1] = -1;
        }
    }
}

static void reap(proc *p, bool block) {
    if (p->exited) return;
    pid_t k;
    while ((k = waitpid(p->pid, &p->status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {}
    if (k == p->pid) p->exited = true;
}

static elpis_status spawn(const char *cmd, const char *dir, proc *p, elpis_error *err) {
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) != 0) return elpis_fail(err, ELPIS_EIO, "pipe: %s", strerror(errno));
    if (pipe2(e, O_CLOEXEC) != 0) {
        close(o[0]);
        close(o[1]);
        return elpis_fail(err, ELPIS_EIO, "pipe: %s", strerror(errno));
    }
    p->pid = fork();
    if (p->pid == 0) child(cmd, dir, o[1], e[1]);
    close(o[1]);
    close(e[1]);
    if (p->pid < 0) {
        close(o[0]);
        close(e[0]);
        return elpis_fail(err, ELPIS_EIO, "fork: %s", strerror(errno));
    }
    setpgid(p->pid, p->pid);   /* also in the parent: no race with the kill below */
    p->fd[0] = o[0];
    p->fd[1] = e[0];
    fcntl(o[0], F_SETFL, O_NONBLOCK);
    fcntl(e[0], F_SETFL, O_NONBLOCK);
    return ELPIS_OK;
}

elpis_status chat__run_shell(const char *cmd, const char *dir, double timeout_s, size_t cap, elpis_poll_fn poll_cb,
                             void *ud, chat__proc_result *r, elpis_error *err) {
    proc p = { .fd = { -1, -1 } };
    memset(r, 0, sizeof *r);
    elpis_status st = spawn(cmd, dir, &p, err);
    if (st != ELPIS_OK) return st;
    double deadline = elpis_now_ms() + timeout_s * 1000.0, drain_until = 0;
    while (p.fd[0] >= 0 || p.fd[1] >= 0 || !p.exited) {
        pump(&p, r, cap, 50);
        reap(&p, false);
        double now = elpis_now_ms();
        if (!p.exited && (now > deadline || (poll_cb && poll_cb(ud)))) {
            r->timed_out = now > deadline;
            r->aborted = !r->timed_out;
            kill(-p.pid, SIGKILL);
            reap(&p, true);
        }
        if (p.exited && drain_until == 0) drain_until = now + 200;
        if (p.exited && now > drain_until) break;
    }
    for (int i = 0; i < 2; i++)
        if (p.fd[i] >= 0) close(p.fd[i]);
    r->exit_code = WIFEXITED(p.status) ? WEXITSTATUS(p.status) : -1;
    return ELPIS_OK;
}

/* ---- the tool ---------------------------------------------------------------------------------- */

static json_t *stream_json(const elpis_buf *b, size_t dropped) {
    elpis_buf s = { 0 };
    if (chat__utf8_clean(b->data ? b->data : "", b->len, &s) != ELPIS_OK) return NULL;
    if (dropped) elpis_buf_printf(&s, "\n[... %zu more bytes not shown]", dropped);
    json_t *j = json_stringn(s.data ? s.data : "", s.len);
    elpis_buf_free(&s);
    return j;
}

json_t *ws__execute_bash(elpis_ws *w, json_t *a, ws_err *e) {
    const char *cmd = ws__str(a, "command", "");
    chat__proc_result r;
    elpis_error err = { 0 };
    if (!*cmd) return ws__fail(e, ELPIS_TOOL_ERROR, "execute_bash: command must not be empty");
    if (strlen(cmd) > 10000) return ws__fail(e, ELPIS_TOOL_ERROR, "execute_bash: command is over 10000 characters");
    if (chat__run_shell(cmd, w->root, w->bash_timeout_s, w->output_cap, w->poll, w->poll_ud, &r, &err) != ELPIS_OK)
        return ws__fail(e, ELPIS_TOOL_ERROR, "execute_bash: %s", err.msg);
    json_t *res = NULL;
    if (r.timed_out) ws__fail(e, ELPIS_TOOL_FAILED, "Timed out after %.1fs", w->bash_timeout_s);
    else if (r.aborted) ws__fail(e, ELPIS_TOOL_FAILED, "Interrupted by the user");
    else {
        res = json_pack("{s:o, s:o, s:i, s:s}", "stdout", stream_json(&r.out, r.out_dropped), "stderr",
                        stream_json(&r.err, r.err_dropped), "exit_code", r.exit_code, "command", cmd);
        if (!res) ws__fail(e, ELPIS_TOOL_ERROR, "execute_bash: out of memory");
        else if (r.exit_code != 0) ws__fail(e, ELPIS_TOOL_FAILED, "exit code %d", r.exit_code);
    }
    chat__proc_result_free(&r);
    return res;
}
