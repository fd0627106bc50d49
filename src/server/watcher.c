/* watcher.c -- what libmicrohttpd cannot see while a connection is suspended.
 *
 * A suspended connection is out of MHD's event loop, so a client that hangs
 * up while its request waits in the queue, prefills or pauses between tokens
 * would go unnoticed until the next write. Every WATCH_MS this thread:
 *   1. snapshots (under srv->lock) the sockets of all live completion
 *      requests, suspended or not, and asks poll() for POLLRDHUP/POLLHUP/
 *      POLLERR (no POLLIN: a pipelined next request is not a hang-up);
 *   2. on a hang-up: cancels the request (reason CLIENT, logged once as
 *      `stream_cancelled reason=client_disconnect`) and resumes the connection
 *      so MHD closes it and runs the completion callback;
 *   3. resumes suspended SSE streams that were silent for ping_interval
 *      (the reader then writes `: ping`), and any suspended request whose
 *      notified flag is set (the spin-limit safety net in stream.c);
 *   4. lets the session registry enforce wait deadlines and release requests
 *      whose HTTP side is gone (srv_session_sweep).
 * A socket number may be closed and reused while poll() runs without the
 * lock; results are applied only if the slot still holds the same request
 * (serial number), and a request's socket is not closed before its
 * completion callback has taken it out of the slot table.
 */
#include "server_internal.h"

#include <malloc.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

#define WATCH_MS 20

typedef struct watch_set {
    struct pollfd *fds;
    uint64_t *serial;
    int *slot;
    int n;
} watch_set;

static void on_hangup_locked(elpis_server *s, srv_req *r) {
    elpis_req_status st;
    r->hup = true;
    if (srv_req_pending_locked(r, &st)) {
        elpis_request_cancel(r->req, ELPIS_CANCEL_CLIENT);
        if (!r->logged_cancel) {
            srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", r->trace, elpis_cancel_reason_name(ELPIS_CANCEL_CLIENT));
            atomic_fetch_add(&s->client_disconnects, 1);
        }
        r->logged_cancel = true;
    }
    if (r->suspended) srv_wake_locked(r);
}

/* Step 1 and 3 (lock held). */
static void scan_locked(elpis_server *s, watch_set *w, double now) {
    double ping_ms = s->cfg->ping_interval_s * 1000.0;
    w->n = 0;
    for (int i = 0; i < s->n_slots; i++) {
        srv_req *r = s->slots[i].r;
        if (!r) continue;
        if (r->suspended && r->notified) srv_wake_locked(r);
        if (r->suspended && r->sse && ping_ms > 0 && now - r->idle_since_ms >= ping_ms) {
            r->ping_due = true;
            srv_wake_locked(r);
        }
        if (r->hup || r->fd < 0) continue;
        w->fds[w->n] = (struct pollfd){ .fd = r->fd, .events = POLLRDHUP };
        w->serial[w->n] = r->serial;
        w->slot[w->n] = i;
        w->n++;
    }
}

static void apply_locked(elpis_server *s, watch_set *w) {
    for (int k = 0; k < w->n; k++) {
        if (!(w->fds[k].revents & (POLLRDHUP | POLLHUP | POLLERR))) continue;
        srv_req *r = s->slots[w->slot[k]].r;
        if (r && r->serial == w->serial[k] && !r->hup) on_hangup_locked(s, r);
    }
}

static void *watcher_main(void *arg) {
    elpis_server *s = arg;
    watch_set w = { calloc((size_t)s->n_slots, sizeof *w.fds), calloc((size_t)s->n_slots, sizeof *w.serial),
                    calloc((size_t)s->n_slots, sizeof *w.slot), 0 };
    if (!w.fds || !w.serial || !w.slot) goto done;
    bool busy_since_trim = false;
    while (!atomic_load(&s->watcher_stop)) {
        pthread_mutex_lock(&s->lock);
        double now = elpis_now_ms();
        scan_locked(s, &w, now);
        srv_session_sweep(s, now);
        pthread_mutex_unlock(&s->lock);
        if (w.n == 0) {
            /* Idle after a burst: give freed heap back to the OS. A server
             * that runs for months otherwise keeps its high-water mark (and
             * glibc's fragmentation) resident forever. */
            if (busy_since_trim) { malloc_trim(0); busy_since_trim = false; }
            struct timespec ts = { 0, WATCH_MS * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        busy_since_trim = true;
        if (poll(w.fds, (nfds_t)w.n, WATCH_MS) <= 0) continue;
        pthread_mutex_lock(&s->lock);
        apply_locked(s, &w);
        pthread_mutex_unlock(&s->lock);
        struct timespec ts = { 0, WATCH_MS * 1000000L / 4 };   /* poll() returned early: do not spin */
        nanosleep(&ts, NULL);
    }
done:
    free(w.fds);
    free(w.serial);
    free(w.slot);
    return NULL;
}

elpis_status srv_watcher_start(elpis_server *s, elpis_error *err) {
    atomic_store(&s->watcher_stop, false);
    if (pthread_create(&s->watcher, NULL, watcher_main, s) != 0) return elpis_fail(err, ELPIS_ENOMEM, "cannot start the watcher thread");
    s->watcher_started = true;
    return ELPIS_OK;
}

void srv_watcher_stop(elpis_server *s) {
    if (!s->watcher_started) return;
    atomic_store(&s->watcher_stop, true);
    pthread_join(s->watcher, NULL);
    s->watcher_started = false;
}
