/* sched_latency.c -- scheduler latency benchmark (not a test).
 *
 *   build/bench_sched_latency [MODEL] [TOKENS]
 *
 * For 1, 4 and 16 concurrent streams: time to first token and inter-token
 * latency (p50/p99) as a reader sees them, and cancellation latency: the
 * time from elpis_request_cancel() to the request being final (its slot and
 * KV cells are released just before that), compared with the decode step
 * time. The goal: cancel p99 below one decode step.
 */
#include "elpis/sched.h"
#include "elpis/tokenizer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS 16

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int events;
} waiter;

static void on_notify(void *arg) {
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->events++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static elpis_request *start(elpis_sched *s, const elpis_model *m, int k, waiter *w, int max_tokens) {
    static const char *prompts[] = { "Once upon a time", "The cat sat", "Lily went", "A big dog" };
    elpis_tokens t = { 0 };
    const char *p = prompts[k % 4];
    elpis_tokenize(m->vocab, p, strlen(p), true, false, &t, NULL);
    elpis_req_params rp = { .prompt = t.ids, .n_prompt = t.n, .sampling = elpis_sampler_defaults(),
                            .max_tokens = max_tokens, .ignore_eos = true };
    rp.sampling.temperature = 0;
    elpis_request *r = elpis_request_new(s, &rp, NULL);
    elpis_tokens_free(&t);
    if (!r) return NULL;
    elpis_request_set_notify(r, on_notify, w);
    if (elpis_sched_submit(s, r, NULL) != ELPIS_OK) { elpis_request_unref(r); return NULL; }
    return r;
}

/* Read all streams until each has n tokens; collect TTFT and gaps. */
static void run_latency(elpis_sched *s, const elpis_model *m, int n_streams, int n_tokens) {
    waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    elpis_request *r[MAX_STREAMS];
    double t0 = elpis_now_ms(), last[MAX_STREAMS] = { 0 };
    int seen[MAX_STREAMS] = { 0 }, n_gap = 0, n_ttft = 0, live = n_streams;
    double *gaps = calloc((size_t)n_streams * n_tokens + 1, sizeof *gaps), ttft[MAX_STREAMS];
    for (int k = 0; k < n_streams; k++) r[k] = start(s, m, k, &w, n_tokens);
    char buf[4096];
    while (live > 0) {
        pthread_mutex_lock(&w.mu);
        while (w.events == 0) pthread_cond_wait(&w.cv, &w.mu);
        w.events = 0;
        pthread_mutex_unlock(&w.mu);
        double now = elpis_now_ms();
        live = 0;
        for (int k = 0; k < n_streams; k++) {
            elpis_req_status st;
            while (elpis_request_read(r[k], buf, sizeof buf, &st) > 0) {}
            for (; seen[k] < st.n_generated; seen[k]++) {
                if (seen[k] == 0) ttft[n_ttft++] = now - t0;
                else gaps[n_gap++] = now - last[k];
                last[k] = now;
            }
            if (!elpis_req_state_final(st.state)) live++;
        }
    }
    double total = elpis_now_ms() - t0;
    printf("streams %2d: TTFT p50 %7.2f ms p99 %7.2f | ITL p50 %6.2f ms p99 %6.2f | %7.1f tok/s total\n", n_streams,
           pct(ttft, n_ttft, 0.5), pct(ttft, n_ttft, 0.99), pct(gaps, n_gap, 0.5), pct(gaps, n_gap, 0.99),
           n_streams * n_tokens / (total / 1e3));
    for (int k = 0; k < n_streams; k++) elpis_request_unref(r[k]);
    free(gaps);
}

/* Cancel a decoding stream at random moments; time until it is final. */
static void run_cancel(elpis_sched *s, const elpis_model *m, int n_streams, int trials) {
    waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    double *lat = calloc((size_t)trials, sizeof *lat);
    elpis_sched_stats a, b;
    elpis_sched_get_stats(s, &a);
    double t_start = elpis_now_ms();
    elpis_request *bg[MAX_STREAMS] = { 0 };
    for (int k = 1; k < n_streams; k++) bg[k] = start(s, m, k, &w, 1 << 20);
    for (int i = 0; i < trials; i++) {
        elpis_request *r = start(s, m, i, &w, 1 << 20);
        elpis_req_status st;
        char buf[4096];
        /* wait for the notify, never spin: a spinning reader would take a
         * core from the compute threads on a 2-core machine */
        for (;;) {
            elpis_request_read(r, buf, sizeof buf, &st);
            if (st.n_generated >= 3 + i % 7) break;
            pthread_mutex_lock(&w.mu);
            while (w.events == 0) pthread_cond_wait(&w.cv, &w.mu);
            w.events = 0;
            pthread_mutex_unlock(&w.mu);
        }
        elpis_request_cancel(r, ELPIS_CANCEL_CLIENT);
        elpis_request_wait(r, -1);
        elpis_request_read(r, buf, 0, &st);
        lat[i] = st.t_end_ms - st.t_cancel_ms;   /* scheduler side: cancel call -> slot released */
        elpis_request_unref(r);
        for (int k = 1; k < n_streams; k++) while (elpis_request_read(bg[k], buf, sizeof buf, NULL) > 0) {}
    }
    elpis_sched_get_stats(s, &b);
    double step_ms = (elpis_now_ms() - t_start) / (double)(b.steps - a.steps);
    for (int k = 1; k < n_streams; k++) { elpis_request_cancel(bg[k], ELPIS_CANCEL_USER); elpis_request_wait(bg[k], -1); elpis_request_unref(bg[k]); }
    printf("streams %2d: cancel->slot free p50 %6.3f ms p99 %6.3f ms | mean decode step %6.3f ms | p99/step %.2f\n",
           n_streams, pct(lat, trials, 0.5), pct(lat, trials, 0.99), step_ms, pct(lat, trials, 0.99) / step_ms);
    free(lat);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/models/stories260K.gguf";
    int n_tokens = argc > 2 ? atoi(argv[2]) : 200;
    elpis_error err = { 0 };
    elpis_model *m = NULL;
    elpis_sched *s = NULL;
    if (elpis_model_load(&m, path, &err) != ELPIS_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    elpis_sched_params p = elpis_sched_default_params();
    p.n_parallel = MAX_STREAMS;
    p.n_queue = MAX_STREAMS;
    p.n_ctx = 1024;
    if (elpis_sched_new(&s, m, &p, &err) != ELPIS_OK) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("model %s, %d tokens per stream\n", m->name, n_tokens);
    const int counts[] = { 1, 4, 16 };
    for (int i = 0; i < 3; i++) run_latency(s, m, counts[i], n_tokens);
    for (int i = 0; i < 3; i++) run_cancel(s, m, counts[i], 200);
    elpis_sched_free(s);
    elpis_model_free(m);
    return 0;
}
