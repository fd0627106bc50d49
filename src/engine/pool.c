/* pool.c -- worker pool (see pool.h for the contract).
 *
 * A job is published by bumping `generation` (release); workers that see a
 * new generation run their chunk and decrement `pending` (acq_rel). The owner
 * runs chunk 0 and then spins on `pending` reaching 0. Workers spin for a
 * while on `generation` before sleeping, because the gap between two matmuls
 * of one decode step is microseconds and a futex wake costs about as much.
 */
#include "elpis/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SPIN 20000

struct elpis_pool {
    int n;                      /* threads including the owner */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint generation;
    atomic_int pending;
    atomic_bool stop;
    /* current job (written by the owner before bumping generation) */
    elpis_pool_fn fn;
    void *ctx;
    int64_t n_items;
};

typedef struct { elpis_pool *p; int tid; } worker_arg;

int elpis_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    return 1;
}

static void run_chunk(elpis_pool *p, int tid) {
    int64_t n = p->n_items, per = (n + p->n - 1) / p->n;
    int64_t b = per * tid, e = b + per < n ? b + per : n;
    if (b < e) p->fn(p->ctx, b, e, tid);
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    elpis_pool *p = wa->p;
    int tid = wa->tid;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            if (++spins < POOL_SPIN) continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_chunk(p, tid);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
}

elpis_status elpis_pool_new(elpis_pool **out, int n_threads, elpis_error *err) {
    if (n_threads <= 0) n_threads = elpis_cpu_count();
    if (n_threads > 256) return elpis_fail(err, ELPIS_EINVAL, "threads: %d is out of range 1..256", n_threads);
    elpis_pool *p = calloc(1, sizeof *p);
    if (!p) return elpis_fail(err, ELPIS_ENOMEM, "thread pool");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) { elpis_pool_free(p); return elpis_fail(err, ELPIS_ENOMEM, "thread pool"); }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa ? (wa->p = p, wa->tid = i, wa) : NULL) != 0) {
            free(wa);
            p->n = i; /* only join the ones that started */
            elpis_pool_free(p);
            return elpis_fail(err, ELPIS_ENOMEM, "thread pool: cannot start thread %d", i);
        }
    }
    *out = p;
    return ELPIS_OK;
}

void elpis_pool_free(elpis_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->threads && p->threads[i]) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int elpis_pool_size(const elpis_pool *p) { return p ? p->n : 1; }

void elpis_pool_for(elpis_pool *p, int64_t n, elpis_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) { fn(ctx, 0, n, 0); return; }
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) { /* spin: chunks are short */ }
}
