/* server.c -- the server's life: start, memory budget, drain, stop, free.
 *
 * Start order (each step undone by elpis_server_free, which copes with a
 * partial start): check the listen address against the keys, open the
 * event log, load the model, check the memory budget BEFORE allocating the
 * KV cache, open the psyche (emotion state, steering vectors, memory store
 * and its embedder: psyche.h), start the scheduler, the slot table, the
 * watcher, the psyche worker, the daemon.
 *
 * Memory budget: weights (the mapped tensors) + the context the scheduler
 * will allocate (elpis_ctx_estimate_bytes: KV cache for ctx x parallel
 * sequences, every layer and KV head, plus scratch) + per-request output
 * buffers + per-connection HTTP buffers. It is logged, and the server refuses
 * to start when it exceeds --mem-limit or MemAvailable (/proc/meminfo).
 *
 * Shutdown (SIGTERM): stop admitting (new completions get 503), let the
 * scheduler end running requests with finish "length" so every stream gets
 * its finish chunk and [DONE], wait for the HTTP side to finish (bounded;
 * then cancel with reason SHUTDOWN), resume anything still suspended (MHD
 * must not be stopped with suspended connections; requests waiting for a
 * psyche job are let finish), stop the daemon, the watcher, and finally the
 * scheduler, then the psyche worker (it runs what is queued: the response
 * analyses of the last completions) and the psyche itself.
 */
#include "server_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define CONN_MEMORY (128 * 1024)   /* MHD_OPTION_CONNECTION_MEMORY_LIMIT in http.c */

/* ---- memory budget ------------------------------------------------------------------ */

static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static const char *mib(char *buf, uint64_t bytes) {
    sprintf(buf, "%" PRIu64 " bytes (%.1f MiB)", bytes, (double)bytes / (1024.0 * 1024.0));
    return buf;
}

/* The context parameters elpis_sched_new will use (sched.c check_params). */
static elpis_ctx_params ctx_params_for(const elpis_model *m, const elpis_sched_params *sp) {
    elpis_ctx_params cp = elpis_ctx_default_params();
    cp.n_ctx = sp->n_ctx > 0 ? sp->n_ctx : ELPIS_MIN(m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : 2048, 4096);
    cp.n_seq = sp->n_parallel;
    int32_t chunk = sp->prefill_chunk > 0 ? sp->prefill_chunk : 256;
    cp.n_batch = sp->n_batch < sp->n_parallel + 1 ? sp->n_parallel + chunk : sp->n_batch;
    cp.n_outputs = sp->n_parallel;
    cp.n_threads = sp->n_threads;
    cp.kv_type = sp->kv_type;
    return cp;
}

static elpis_status check_budget(elpis_server *s, const elpis_sched_params *sp, elpis_error *err) {
    const elpis_hparams *hp = &s->model->hp;
    elpis_ctx_params cp = ctx_params_for(s->model, sp);
    uint64_t weights = s->model->weight_bytes;
    uint64_t ctx = elpis_ctx_estimate_bytes(s->model, &cp);
    uint64_t kv = 2ull * (uint64_t)hp->n_layer * (uint64_t)cp.n_ctx * (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim *
                  (cp.kv_type == ELPIS_F32 ? 4u : 2u) * (uint64_t)cp.n_seq;
    uint64_t scratch = ctx > kv ? ctx - kv : 0;
    uint64_t buffers = (uint64_t)(sp->n_parallel + sp->n_queue) * sp->out_capacity + (uint64_t)s->cfg->max_connections * CONN_MEMORY;
    uint64_t total = weights + ELPIS_MAX(ctx, kv) + buffers;
    uint64_t limit = s->cfg->mem_limit, avail = mem_available();
    srv_evlog(&s->log,
              "memory_budget weights=%" PRIu64 " kv=%" PRIu64 " scratch=%" PRIu64 " buffers=%" PRIu64 " total=%" PRIu64
              " limit=%" PRIu64 " available=%" PRIu64 " ctx=%d parallel=%d",
              weights, kv, scratch, buffers, total, limit, avail, cp.n_ctx, cp.n_seq);
    const char *what = NULL;
    uint64_t cap = 0;
    if (limit && total > limit) { what = "--mem-limit"; cap = limit; }
    else if (avail && total > avail) { what = "available memory (MemAvailable)"; cap = avail; }
    if (!what) return ELPIS_OK;
    char a[64], b[64], c[64], d[64], e[64], f[64];
    return elpis_fail(err, ELPIS_ENOMEM,
                      "memory budget %s exceeds %s of %s: weights %s + KV cache %s (ctx %d x parallel %d, %d layers x %d KV "
                      "heads x %d dims, %s) + scratch %s + buffers %s",
                      mib(a, total), what, mib(b, cap), mib(c, weights), mib(d, kv), cp.n_ctx, cp.n_seq, hp->n_layer,
                      hp->n_head_kv, hp->head_dim, cp.kv_type == ELPIS_F32 ? "f32" : "f16", mib(e, scratch), mib(f, buffers));
}

/* ---- start ------------------------------------------------------------------------------- */

static elpis_sched_params sched_params(const elpis_server_config *c) {
    elpis_sched_params p = elpis_sched_default_params();
    p.n_parallel = c->parallel;
    p.n_queue = c->queue;
    p.n_ctx = c->ctx;
    p.n_threads = c->threads;
    if (c->batch > 0) p.n_batch = c->batch;
    if (c->prefill_chunk > 0) p.prefill_chunk = c->prefill_chunk;
    p.stall_ms = c->stall_timeout_s * 1000.0;
    return p;
}

static elpis_status check_listen(const elpis_server_config *c, elpis_error *err) {
    struct sockaddr_storage ss;
    socklen_t len;
    bool loopback;
    elpis_status st = srv_resolve_host(c->host, c->port, &ss, &len, &loopback, err);
    if (st != ELPIS_OK) return st;
    if (!loopback && c->n_api_keys == 0)
        return elpis_fail(err, ELPIS_EINVAL,
                          "server.host: refusing to listen on non-loopback address '%s' without an API key "
                          "(set --api-key, ELPIS_API_KEYS or server.api_keys)", c->host);
    return ELPIS_OK;
}

static elpis_status init_slots(elpis_server *s, elpis_error *err) {
    s->n_slots = s->cfg->max_connections;
    if (!(s->slots = calloc((size_t)s->n_slots, sizeof *s->slots))) return elpis_fail(err, ELPIS_ENOMEM, "slot table");
    for (int i = 0; i < s->n_slots; i++) s->slots[i] = (srv_slot){ s, NULL, i + 1 < s->n_slots ? i + 1 : -1 };
    s->free_head = 0;
    return ELPIS_OK;
}

static uint64_t random_base(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) v = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
    return v & ~0xffffffull;   /* low bits count requests: ids stay readable and unique */
}

static elpis_status open_psyche(elpis_server *s, elpis_error *err) {
    const elpis_server_config *c = s->cfg;
    elpis_status st = elpis_psyche_open(&s->psyche, &c->psyche, s->model, c->threads, err);
    if (st == ELPIS_OK) st = srv_emo_view_open(s, err);
    if (st != ELPIS_OK) return st;
    const elpis_psyche *p = s->psyche;
    srv_evlog(&s->log, "psyche_open data_dir=%s steering=%s embedding_dim=%d embedding_model=%s consolidate_interval=%g",
              p->data_dir, p->vectors && elpis_emotion_config_steering(&c->psyche.emotion) ? "on" : "off",
              elpis_embedder_dim(p->embedder), c->psyche.embedding_model ? c->psyche.embedding_model : "-",
              c->consolidate_interval_s);
    return ELPIS_OK;
}

elpis_status elpis_server_new(elpis_server **out, const elpis_server_config *c, elpis_error *err) {
    elpis_status st;
    elpis_server *s = calloc(1, sizeof *s);
    if (!s) return elpis_fail(err, ELPIS_ENOMEM, "server");
    s->cfg = c;
    s->log.fd = -1;
    s->started = (long long)time(NULL);
    s->trace_base = random_base();
    atomic_init(&s->next_serial, 1);
    pthread_mutex_init(&s->lock, NULL);
    s->lock_init = true;
    if ((st = check_listen(c, err)) != ELPIS_OK) goto fail;
    if (!c->model_path) { st = elpis_fail(err, ELPIS_EINVAL, "model.path: no model (pass -m MODEL.gguf)"); goto fail; }
    if ((st = srv_evlog_open(&s->log, c->log_file, err)) != ELPIS_OK) goto fail;
    if ((st = elpis_model_load(&s->model, c->model_path, err)) != ELPIS_OK) goto fail;
    s->model_id = c->model_alias ? c->model_alias : s->model->name ? s->model->name : "elpis";
    s->chat_family = elpis_chat_detect(s->model->chat_template);
    if (s->chat_family == ELPIS_CHAT_UNKNOWN) srv_evlog(&s->log, "chat_template_unknown fallback=chatml");
    elpis_sched_params sp = sched_params(c);
    if ((st = check_budget(s, &sp, err)) != ELPIS_OK) goto fail;
    if ((st = open_psyche(s, err)) != ELPIS_OK) goto fail;
    if ((st = elpis_sched_new(&s->sched, s->model, &sp, err)) != ELPIS_OK) goto fail;
    if (c->upstream && (st = srv_up_new(&s->up, s, err)) != ELPIS_OK) goto fail;
    if ((st = init_slots(s, err)) != ELPIS_OK) goto fail;
    if ((st = srv_watcher_start(s, err)) != ELPIS_OK) goto fail;
    if ((st = srv_dream_open(s, err)) != ELPIS_OK) goto fail;
    if ((st = srv_work_start(s, err)) != ELPIS_OK) goto fail;
    if ((st = srv_http_start(s, err)) != ELPIS_OK) goto fail;
    srv_evlog(&s->log, "server_start host=%s port=%u model=%s parallel=%d queue=%d ctx=%d auth=%s", c->host, s->port,
              s->model_id, sp.n_parallel, sp.n_queue, elpis_sched_params_of(s->sched)->n_ctx, c->n_api_keys ? "on" : "off");
    *out = s;
    return ELPIS_OK;
fail:
    if (s->log.fd >= 0) srv_evlog(&s->log, "server_start_failed error=\"%s\"", err ? err->msg : "");
    elpis_server_free(s);
    return st;
}

uint16_t elpis_server_port(const elpis_server *s) { return s->port; }

/* ---- shutdown ------------------------------------------------------------------------------- */

static int live_count(elpis_server *s) {
    pthread_mutex_lock(&s->lock);
    int n = s->n_live;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Wait until no completion request is open on the HTTP side. */
static bool wait_live(elpis_server *s, double timeout_ms) {
    double end = elpis_now_ms() + timeout_ms;
    struct timespec ts = { 0, 10 * 1000000L };
    while (live_count(s) > 0) {
        if (elpis_now_ms() >= end) return false;
        nanosleep(&ts, NULL);
    }
    return true;
}

static void cancel_all(elpis_server *s) {
    elpis_req_status st;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n_slots; i++) {
        srv_req *r = s->slots[i].r;
        if (!r || !r->req || srv_status_of(r->req, &st)) continue;
        elpis_request_cancel(r->req, ELPIS_CANCEL_SHUTDOWN);
        if (!r->logged_cancel)
            srv_evlog(&s->log, "stream_cancelled trace=%s reason=%s", r->trace, elpis_cancel_reason_name(ELPIS_CANCEL_SHUTDOWN));
        r->logged_cancel = true;
    }
    pthread_mutex_unlock(&s->lock);
}

/* From here on nothing suspends; wake everything that is suspended. */
static void stop_suspending(elpis_server *s) {
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].r && s->slots[i].r->suspended) srv_wake_locked(s->slots[i].r);
    pthread_mutex_unlock(&s->lock);
}

void elpis_server_shutdown(elpis_server *s, const char *why) {
    if (!s || s->shut_down) return;
    s->shut_down = true;
    if (s->mhd) {
        srv_evlog(&s->log, "shutdown_begin signal=%s in_flight=%d", why ? why : "-", live_count(s));
        atomic_store(&s->draining, true);
        srv_dream_stop(s);
        elpis_sched_drain(s->sched);
        srv_up_drain(s->up);
        if (!wait_live(s, s->cfg->drain_timeout_s * 1000.0)) {
            cancel_all(s);
            wait_live(s, 2000);
        }
        stop_suspending(s);
        wait_live(s, 2000);
        srv_work_quiesce(s);   /* nothing new is taken once stopping; the last jobs answer */
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
    srv_watcher_stop(s);
    if (s->log.fd >= 0) srv_evlog(&s->log, "shutdown_done");
}

void elpis_server_free(elpis_server *s) {
    if (!s) return;
    if (s->mhd || s->watcher_started) elpis_server_shutdown(s, "free");
    elpis_sched_free(s->sched);   /* joins the scheduler thread: no notify after this */
    srv_up_free(s->up);           /* joins the upstream thread: likewise */
    if (s->lock_init) {
        pthread_mutex_lock(&s->lock);
        srv_sessions_free(s);
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_destroy(&s->lock);
    }
    free(s->slots);
    srv_work_stop(s);             /* runs the queued analyses, joins */
    srv_dream_close(s);
    srv_emo_view_close(s);
    elpis_psyche_close(s->psyche);
    elpis_model_free(s->model);
    srv_evlog_close(&s->log);
    free(s);
}
