/* work.c -- the psyche worker: one thread for everything that touches SQLite
 * or the embedder on behalf of HTTP requests.
 *
 * WHY A THREAD
 * ------------
 * The MHD thread must never wait: an fsync'ed COMMIT (synchronous=FULL),
 * embedding a text, or a consolidation run would stall every stream the
 * server is writing. So routes hand a srv_job to this thread and suspend
 * their connection (see PSYCHE JOBS in server_internal.h for the protocol),
 * and the end of a completion posts its response analysis here. One thread
 * is enough: the emotion object and the memory store each serialise their
 * calls anyway, and jobs are short.
 *
 * The same thread runs memory consolidation every consolidate_interval_s
 * (between jobs, never inside one), so consolidation never races a store
 * and a slow run only delays memory requests, never generation.
 *
 * It also drives the idle dream (dream.c): srv_dream_tick starts it when the
 * server has been idle long enough and moves its text as the scheduler
 * produces it (the request's notify wakes this thread); it is looked at
 * between jobs, like the consolidation timer.
 *
 * Jobs run in submission order. On stop the queue is run to the end (the
 * analyses of the last completions are committed), then the thread exits.
 */
#include "server_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct srv_worker {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;                /* guards the queue and quit */
    pthread_cond_t cv;
    srv_job *head, *tail;
    bool quit;
    bool kick;                         /* srv_work_wake: look at the timers now */
    int n_waiting;                     /* srv->lock: jobs a request waits for */
    double next_tick_ms;               /* next consolidation check (worker only) */
};

/* ---- jobs ---------------------------------------------------------------------------- */

srv_job *srv_job_new(srv_job_fn run) {
    srv_job *j = calloc(1, sizeof *j);
    if (j) j->run = run;
    return j;
}

void srv_job_free(srv_job *j) {
    if (!j) return;
    json_decref(j->args);
    free(j->text);
    elpis_buf_free(&j->body);
    free(j);
}

void srv_job_error(srv_job *j, unsigned status, const char *type, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    j->body.len = 0;
    j->status = status;
    srv_error_body(&j->body, type, NULL, code, msg);
}

void srv_job_json(srv_job *j, unsigned status, json_t *v) {
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(v);
    j->body.len = 0;
    if (!text || elpis_buf_puts(&j->body, text) != ELPIS_OK) {
        free(text);
        srv_job_error(j, 500, "server_error", NULL, "out of memory building the response");
        return;
    }
    free(text);
    j->status = status;
}

/* ---- the thread ----------------------------------------------------------------------- */

static double interval_ms(const elpis_server *s) { return s->cfg->consolidate_interval_s * 1000.0; }

/* Hand the result to the waiting request, or free a job nobody waits for. */
static void finish(elpis_server *s, srv_job *j) {
    pthread_mutex_lock(&s->lock);
    j->done = true;
    srv_req *r = j->r;
    if (r) {
        s->work->n_waiting--;
        srv_wake_locked(r);   /* r answers from j and frees it */
    }
    pthread_mutex_unlock(&s->lock);
    if (!r) srv_job_free(j);
}

/* The earliest timer: consolidation, or what the idle dream asked for (0: none). */
static double next_deadline(elpis_server *s, double dream_ms) {
    double d = interval_ms(s) > 0 ? s->work->next_tick_ms : 0;
    if (dream_ms > 0 && (d <= 0 || dream_ms < d)) d = dream_ms;
    return d;
}

/* Wait for a job, a timer, a wake or quit. NULL: quit with an empty queue. */
static srv_job *next_job(elpis_server *s, double dream_ms, bool *tick) {
    struct srv_worker *w = s->work;
    double deadline = next_deadline(s, dream_ms);
    *tick = false;
    pthread_mutex_lock(&w->mu);
    while (!w->head && !w->quit && !w->kick) {
        if (deadline <= 0) { pthread_cond_wait(&w->cv, &w->mu); continue; }
        double wait = deadline - elpis_now_ms();
        if (wait <= 0) { *tick = true; break; }
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        long long ns = (long long)dl.tv_nsec + (long long)(wait * 1e6);
        dl.tv_sec += (time_t)(ns / 1000000000LL);
        dl.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&w->cv, &w->mu, &dl);
    }
    if (w->kick) *tick = true;
    w->kick = false;
    srv_job *j = w->head;
    if (j && !(w->head = j->next)) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    return j;
}

static void *worker_main(void *arg) {
    elpis_server *s = arg;
    struct srv_worker *w = s->work;
    double dream_ms = 0;
    for (;;) {
        bool tick;
        srv_job *j = next_job(s, dream_ms, &tick);
        if (!j && !tick) break;
        if (j) {
            j->run(s, j);
            finish(s, j);
        }
        if (interval_ms(s) > 0 && elpis_now_ms() >= w->next_tick_ms) {
            srv_mem_consolidate_tick(s);
            w->next_tick_ms = elpis_now_ms() + interval_ms(s);
        }
        dream_ms = srv_dream_tick(s);
    }
    return NULL;
}

elpis_status srv_work_start(elpis_server *s, elpis_error *err) {
    struct srv_worker *w = calloc(1, sizeof *w);
    if (!w) return elpis_fail(err, ELPIS_ENOMEM, "psyche worker");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->next_tick_ms = elpis_now_ms() + interval_ms(s);
    s->work = w;
    if (pthread_create(&w->thread, NULL, worker_main, s) != 0)
        return elpis_fail(err, ELPIS_ENOMEM, "cannot start the psyche worker thread");
    w->started = true;
    return ELPIS_OK;
}

static void enqueue(struct srv_worker *w, srv_job *j) {
    pthread_mutex_lock(&w->mu);
    j->next = NULL;
    if (w->tail) w->tail->next = j;
    else w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void srv_work_wake(elpis_server *s) {
    struct srv_worker *w = s->work;
    if (!w || !w->started) return;
    pthread_mutex_lock(&w->mu);
    w->kick = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void srv_work_post(elpis_server *s, srv_job *j) {
    if (!s->work || !s->work->started) { srv_job_free(j); return; }
    enqueue(s->work, j);
}

/* ---- the waiting request (MHD thread) ----------------------------------------------------- */

static enum MHD_Result answer(srv_req *r) {
    srv_job *j = r->job;
    r->job = NULL;
    /* a step of a longer request (agent.c's memory retrieval, dream.c's
     * gathering); a job that failed (status >= 400) answers with its error */
    if (j->then && j->status < 400) {
        enum MHD_Result ret = j->then(r, j);
        srv_job_free(j);
        return ret;
    }
    enum MHD_Result ret = srv_respond(r, j->status ? j->status : 500, "application/json",
                                      j->body.data ? j->body.data : "{}", j->body.data ? j->body.len : 2);
    srv_job_free(j);
    return ret;
}

/* Lock held: suspend unless the job is done. true: answer now. */
static bool wait_locked(srv_req *r) {
    if (r->job->done) return true;
    r->notified = false;
    MHD_suspend_connection(r->conn);
    r->suspended = true;
    r->idle_since_ms = elpis_now_ms();
    return false;
}

enum MHD_Result srv_work_submit(srv_req *r, srv_job *j) {
    elpis_server *s = r->srv;
    if (!j) return srv_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
    pthread_mutex_lock(&s->lock);
    if (s->stopping || !s->work || !s->work->started) {
        pthread_mutex_unlock(&s->lock);
        srv_job_free(j);
        return srv_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable_error", NULL, "shutting_down",
                                 "the server is shutting down");
    }
    r->job = j;
    j->r = r;
    r->phase = SRV_PH_WORK;
    s->work->n_waiting++;
    pthread_mutex_unlock(&s->lock);
    enqueue(s->work, j);
    pthread_mutex_lock(&s->lock);
    bool now = wait_locked(r);
    pthread_mutex_unlock(&s->lock);
    return now ? answer(r) : MHD_YES;
}

enum MHD_Result srv_work_resume(srv_req *r) {
    elpis_server *s = r->srv;
    pthread_mutex_lock(&s->lock);
    bool now = r->job && wait_locked(r);
    pthread_mutex_unlock(&s->lock);
    if (!r->job) return MHD_NO;
    return now ? answer(r) : MHD_YES;
}

void srv_work_detach(srv_req *r) {
    srv_job *j = r->job;
    if (!j) return;
    r->job = NULL;
    elpis_server *s = r->srv;
    pthread_mutex_lock(&s->lock);
    bool running = !j->done;
    if (running && s->work) {   /* the worker frees it when it is done */
        j->r = NULL;
        s->work->n_waiting--;
    }
    pthread_mutex_unlock(&s->lock);
    if (!running) srv_job_free(j);
}

/* ---- shutdown ----------------------------------------------------------------------------- */

void srv_work_quiesce(elpis_server *s) {
    if (!s->work) return;
    double end = elpis_now_ms() + 10000.0;   /* jobs are short; this only bounds a hung disk */
    struct timespec ts = { 0, 5 * 1000000L };
    for (;;) {
        pthread_mutex_lock(&s->lock);
        int n = s->work->n_waiting;
        pthread_mutex_unlock(&s->lock);
        if (n == 0) return;
        if (elpis_now_ms() >= end) {
            srv_evlog(&s->log, "psyche_jobs_stuck waiting=%d", n);
            return;
        }
        nanosleep(&ts, NULL);
    }
}

void srv_work_stop(elpis_server *s) {
    struct srv_worker *w = s->work;
    if (!w) return;
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->quit = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        w->started = false;
    }
    while (w->head) {   /* only if the thread never started */
        srv_job *j = w->head;
        w->head = j->next;
        srv_job_free(j);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    s->work = NULL;
}
