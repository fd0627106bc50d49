/* evlog.c -- the server's event log: key=value lines in a file.
 *
 * Format: "2025-11-23T13:20:00.123Z stream_start trace=... session=...".
 * The timestamp is wall-clock UTC with milliseconds, first on the line, so a
 * plain `sort` or `grep` keeps the order. Each line is formatted into a
 * stack buffer and written with one write(2) on an O_APPEND descriptor:
 * lines from different threads never interleave and there is no lock and no
 * stdio buffering to flush (tests read the file while the server runs).
 * A missing parent directory (the default logs/) is created.
 */
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* mkdir -p of the directory part of path (best effort; open() reports failures). */
static void make_parent_dirs(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(dir, 0755);
        *p = '/';
    }
    mkdir(dir, 0755);
}

elpis_status srv_evlog_open(srv_logfile *l, const char *path, elpis_error *err) {
    make_parent_dirs(path);
    l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (l->fd < 0) return elpis_fail(err, ELPIS_EIO, "log file %s: %s", path, strerror(errno));
    return ELPIS_OK;
}

void srv_evlog_close(srv_logfile *l) {
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
}

void srv_evlog(srv_logfile *l, const char *fmt, ...) {
    if (l->fd < 0) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    n = ELPIS_MIN(n + (size_t)k, sizeof line - 2);   /* truncated lines still end in \n */
    line[n++] = '\n';
    ssize_t w = write(l->fd, line, n);
    (void)w;   /* a full disk must not take the server down */
}
