/* registry.c -- the slot table and the session registry. Every function here
 * runs with srv->lock held.
 *
 * SLOTS
 * -----
 * Each completion request holds one slot while it exists on the HTTP side;
 * the slot is its notify handle (see server_internal.h). n_slots equals the
 * connection limit, so a slot is always free for a new request.
 *
 * SESSIONS (X-Session-Id)
 * -----------------------
 * A session entry remembers the session's last *submitted* request
 * (`active`, with a reference of its own, so it can be watched even after
 * its client is gone) and at most one *waiter*: the newest request that
 * must not start before `active` has ended. Protocol for a new request B:
 *
 *   claim:  an older waiter W is superseded at once (it never ran);
 *           if `active` A is still running it is cancelled (reason
 *           SUPERSEDED, logged `stream_cancelled reason=registry_new_stream`)
 *           and B becomes the waiter with a deadline (session_wait_s);
 *           otherwise B may run now.
 *   ready:  B may run once A is final (logged `prev_stream_finished_cleanly`)
 *           or the deadline passed (`prev_stream_timeout_on_cancel`; A is
 *           cancelled, so it produces nothing more even if the scheduler is
 *           slow to notice).
 *   set_active: after B is submitted it becomes `active`.
 *
 * Whoever first sees A final does the hand-off: A's own writer, B when it is
 * woken (A's notify also wakes B), or the watcher's sweep. Because A's
 * writer can only end A's stream after seeing A final, the hand-off line is
 * always logged before A's `stream_end`.
 *
 * Invariant: r->sess != NULL exactly when r is its session's waiter or
 * active_owner (or is between claim and set_active inside one lock hold).
 * An entry with neither an active request nor a waiter is freed.
 */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- slots ---------------------------------------------------------------------- */

bool srv_slot_acquire(elpis_server *s, srv_req *r) {
    if (s->free_head < 0) return false;
    int i = s->free_head;
    s->free_head = s->slots[i].next_free;
    s->slots[i].r = r;
    s->slots[i].next_free = -1;
    r->slot = i;
    return true;
}

void srv_slot_release(elpis_server *s, srv_req *r) {
    if (r->slot < 0) return;
    srv_slot *sl = &s->slots[r->slot];
    sl->r = NULL;
    sl->next_free = s->free_head;
    s->free_head = r->slot;
    r->slot = -1;
}

/* ---- entries ----------------------------------------------------------------------- */

static unsigned hash(const char *s) {
    unsigned h = 2166136261u;   /* FNV-1a */
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % SRV_SESSION_BUCKETS;
}

static srv_session *get_entry(elpis_server *s, const char *id, bool create) {
    unsigned h = hash(id);
    for (srv_session *e = s->sessions[h]; e; e = e->next)
        if (!strcmp(e->id, id)) return e;
    if (!create) return NULL;
    srv_session *e = calloc(1, sizeof *e);
    if (!e || !(e->id = strdup(id))) { free(e); return NULL; }
    e->next = s->sessions[h];
    s->sessions[h] = e;
    return e;
}

static void maybe_free(elpis_server *s, srv_session *e) {
    if (e->active || e->waiter || e->active_owner) return;
    srv_session **pp = &s->sessions[hash(e->id)];
    while (*pp && *pp != e) pp = &(*pp)->next;
    if (*pp) *pp = e->next;
    free(e->id);
    free(e);
}

/* Drop the reference on `active` and detach its owner. */
static void release_active(srv_session *e) {
    if (e->active_owner) e->active_owner->sess = NULL;
    e->active_owner = NULL;
    elpis_request_unref(e->active);
    e->active = NULL;
}

static bool active_final(srv_session *e) {
    elpis_req_status st;
    return !e->active || srv_status_of(e->active, &st);
}

/* `active` has ended: hand the session to the waiter, if any. */
static void hand_off(elpis_server *s, srv_session *e) {
    srv_req *w = e->waiter;
    if (w && !w->prev_done) {
        srv_evlog(&s->log, "prev_stream_finished_cleanly session=%s trace=%s", e->id, e->active_trace);
        w->prev_done = true;
        srv_wake_locked(w);
    }
    release_active(e);
}

/* ---- protocol -------------------------------------------------------------------------- */

bool srv_session_claim(elpis_server *s, srv_req *r, bool *may_run) {
    srv_session *e = get_entry(s, r->session, true);
    if (!e) return false;
    r->sess = e;
    *may_run = true;
    if (e->waiter) {   /* a claimant that never ran: it ends now */
        srv_req *w = e->waiter;
        srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", w->trace, elpis_cancel_reason_name(ELPIS_CANCEL_SUPERSEDED));
        w->superseded = true;
        w->logged_cancel = true;
        w->sess = NULL;
        e->waiter = NULL;
        srv_wake_locked(w);
    }
    if (!e->active) return true;
    if (active_final(e)) { release_active(e); return true; }
    elpis_request_cancel(e->active, ELPIS_CANCEL_SUPERSEDED);
    if (!e->active_cancel_logged)
        srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", e->active_trace, elpis_cancel_reason_name(ELPIS_CANCEL_SUPERSEDED));
    e->active_cancel_logged = true;
    if (e->active_owner) e->active_owner->logged_cancel = true;
    e->waiter = r;
    r->deadline_ms = elpis_now_ms() + s->cfg->session_wait_s * 1000.0;
    *may_run = false;
    return true;
}

void srv_session_set_active(elpis_server *s, srv_req *r) {
    srv_session *e = r->sess;
    (void)s;
    if (!e) return;
    if (e->waiter == r) e->waiter = NULL;
    if (e->active) release_active(e);   /* only after a timed-out wait */
    elpis_request_ref(r->req);
    e->active = r->req;
    e->active_owner = r;
    e->active_cancel_logged = false;
    snprintf(e->active_trace, sizeof e->active_trace, "%s", r->trace);
}

bool srv_session_ready(elpis_server *s, srv_req *r, double now) {
    srv_session *e = r->sess;
    if (r->prev_done || !e || !e->active) return true;
    if (active_final(e)) { hand_off(s, e); return true; }
    if (now < r->deadline_ms) return false;
    srv_evlog(&s->log, "prev_stream_timeout_on_cancel session=%s trace=%s", e->id, e->active_trace);
    r->prev_done = true;
    release_active(e);
    return true;
}

void srv_session_on_final(elpis_server *s, srv_req *r) {
    srv_session *e = r->sess;
    if (!e || e->active != r->req) return;
    hand_off(s, e);
    maybe_free(s, e);
}

void srv_session_detach(elpis_server *s, srv_req *r) {
    srv_session *e = r->sess;
    if (!e) return;
    r->sess = NULL;
    if (e->waiter == r) e->waiter = NULL;
    if (e->active_owner == r) {
        e->active_owner = NULL;
        if (active_final(e)) hand_off(s, e);   /* else: still running; the next claimant waits for it */
    }
    maybe_free(s, e);
}

/* Watcher: hand-offs nobody else saw (the owner's client left), waiters'
 * deadlines, and entries whose last request ended unobserved. */
void srv_session_sweep(elpis_server *s, double now) {
    for (int h = 0; h < SRV_SESSION_BUCKETS; h++) {
        for (srv_session *e = s->sessions[h], *next; e; e = next) {
            next = e->next;
            if (e->waiter && (now >= e->waiter->deadline_ms || (e->active && active_final(e)))) srv_wake_locked(e->waiter);
            if (e->active && !e->active_owner && !e->waiter && active_final(e)) release_active(e);
            maybe_free(s, e);
        }
    }
}

void srv_sessions_free(elpis_server *s) {
    for (int h = 0; h < SRV_SESSION_BUCKETS; h++) {
        while (s->sessions[h]) {
            srv_session *e = s->sessions[h];
            s->sessions[h] = e->next;
            if (e->active_owner) e->active_owner->sess = NULL;
            if (e->waiter) e->waiter->sess = NULL;
            elpis_request_unref(e->active);
            free(e->id);
            free(e);
        }
    }
}
