/* metrics.c -- GET /metrics in the Prometheus text format (version 0.0.4).
 *
 * Scheduler numbers come from elpis_sched_get_stats (atomic loads) and
 * elpis_sched_get_latency (a short copy under the histogram lock); HTTP
 * numbers from the server's own atomics. Latencies are exported in seconds,
 * as Prometheus convention asks; the scheduler's bucket bounds are in ms.
 * Names follow vLLM's where one exists (time_to_first_token_seconds,
 * inter_token_latency_seconds) so dashboards translate easily.
 */
#include "server_internal.h"

#include <stdio.h>

static void metric(elpis_buf *b, const char *name, const char *type, const char *help, double v) {
    elpis_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void histogram(elpis_buf *b, const char *name, const char *help, const elpis_histogram *h) {
    elpis_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < ELPIS_LAT_BUCKETS; i++) {
        cum += h->count[i];
        elpis_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, elpis_lat_bucket_ms[i] / 1000.0, (unsigned long long)cum);
    }
    cum += h->count[ELPIS_LAT_BUCKETS];
    elpis_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", name, (unsigned long long)cum, name,
                     h->sum / 1000.0, name, (unsigned long long)h->n);
}

static void scheduler_metrics(elpis_server *s, elpis_buf *b) {
    elpis_sched_stats st;
    elpis_sched_get_stats(s->sched, &st);
    metric(b, "elpis_requests_running", "gauge", "Requests holding a slot (prefill or decode).", st.n_running);
    metric(b, "elpis_requests_queued", "gauge", "Requests waiting for a slot.", st.n_queued);
    metric(b, "elpis_slots", "gauge", "Sequences that can generate at once (--parallel).", st.n_parallel);
    metric(b, "elpis_context_size", "gauge", "Positions per slot.", st.n_ctx);
    metric(b, "elpis_kv_cells_used", "gauge", "KV cells held by running requests.", (double)st.kv_cells_used);
    metric(b, "elpis_kv_cells_cached", "gauge", "KV cells kept for prefix reuse (reclaimable).", (double)st.kv_cells_cached);
    metric(b, "elpis_kv_cells_capacity", "gauge", "KV cells in total (slots x context).", (double)st.n_ctx * st.n_parallel);
    metric(b, "elpis_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", (double)st.tokens_prompt);
    metric(b, "elpis_prompt_tokens_cached_total", "counter", "Prompt tokens reused from the prefix cache.", (double)st.tokens_cached);
    metric(b, "elpis_generation_tokens_total", "counter", "Tokens generated.", (double)st.tokens_generated);
    metric(b, "elpis_decode_steps_total", "counter", "Batched forward steps.", (double)st.steps);
    metric(b, "elpis_decode_steps_abandoned_total", "counter", "Forward steps stopped between layers by a cancel and run again without it.", (double)st.steps_abandoned);
    elpis_buf_printf(b, "# HELP elpis_requests_finished_total Requests that ended, by outcome.\n"
                        "# TYPE elpis_requests_finished_total counter\n"
                        "elpis_requests_finished_total{outcome=\"done\"} %lld\n"
                        "elpis_requests_finished_total{outcome=\"failed\"} %lld\n",
                     (long long)st.requests_done, (long long)st.requests_failed);
    elpis_buf_printf(b, "# HELP elpis_requests_cancelled_total Requests cancelled, by reason.\n"
                        "# TYPE elpis_requests_cancelled_total counter\n");
    for (int i = 1; i < ELPIS_CANCEL_REASON_COUNT; i++)
        elpis_buf_printf(b, "elpis_requests_cancelled_total{reason=\"%s\"} %lld\n", elpis_cancel_reason_name((elpis_cancel_reason)i),
                         (long long)st.cancelled[i]);
    elpis_histogram ttft, itl;
    elpis_sched_get_latency(s->sched, &ttft, &itl);
    histogram(b, "elpis_time_to_first_token_seconds", "Submit to first generated token.", &ttft);
    histogram(b, "elpis_inter_token_latency_seconds", "Gap between consecutive tokens of a request.", &itl);
}

static void http_metrics(elpis_server *s, elpis_buf *b) {
    static const char *names[SRV_CODE_COUNT] = { "200", "201", "400", "401", "404", "405", "409", "413", "429", "500", "503", "other" };
    elpis_buf_printf(b, "# HELP elpis_http_responses_total HTTP responses, by status.\n# TYPE elpis_http_responses_total counter\n");
    for (int i = 0; i < SRV_CODE_COUNT; i++)
        elpis_buf_printf(b, "elpis_http_responses_total{code=\"%s\"} %lld\n", names[i], (long long)atomic_load(&s->http_codes[i]));
    pthread_mutex_lock(&s->lock);
    int live = s->n_live;
    pthread_mutex_unlock(&s->lock);
    metric(b, "elpis_http_completions_in_flight", "gauge", "Completion requests open on the HTTP side.", live);
    metric(b, "elpis_http_streams_total", "counter", "SSE streams started.", (double)atomic_load(&s->streams_started));
    metric(b, "elpis_http_client_disconnects_total", "counter", "Requests whose client left before the end.",
           (double)atomic_load(&s->client_disconnects));
    metric(b, "elpis_draining", "gauge", "1 while shutting down.", atomic_load(&s->draining) ? 1 : 0);
}

elpis_status srv_metrics_render(elpis_server *s, elpis_buf *b) {
    scheduler_metrics(s, b);
    http_metrics(s, b);
    srv_psyche_metrics(s, b);   /* emotion gauges, consolidation counters */
    return b->data ? ELPIS_OK : ELPIS_ENOMEM;
}
