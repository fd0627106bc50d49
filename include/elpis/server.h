/* server.h -- `elpis serve`: the OpenAI-compatible HTTP server.
 *
 * A front end over the scheduler (sched.h). libmicrohttpd runs ONE event
 * thread (epoll) that parses requests, renders prompts, submits them and
 * writes SSE; it never waits for inference. The scheduler thread wakes it
 * through each request's notify callback (which only resumes a suspended
 * connection). A watcher thread polls the sockets of requests that are
 * waiting (queued, prefilling, suspended streams) for a hang-up, drives the
 * keep-alive pings and the bounded same-session wait, and sweeps finished
 * session state.
 *
 * Configuration is one struct filled in order: built-in defaults, then the
 * INI file (--config; sections [server] and [model]), then the environment
 * (ELPIS_SECTION__KEY, and ELPIS_API_KEYS), then flags. Every value is
 * validated once, when it is set, with an error that names the key, the
 * value, the allowed range and where it came from.
 *
 * The psyche (psyche.h: emotional state, steering vectors, memory store)
 * lives in --data-dir; [emotion] and [memory] sections and ELPIS_EMOTION__KEY
 * / ELPIS_MEMORY__KEY configure it. Everything that touches SQLite or the
 * embedder runs on one psyche worker thread, never on the HTTP thread; the
 * same thread consolidates memories on a timer.
 *
 * With --upstream URL, completions go to an OpenAI-compatible engine
 * (URL/v1/chat/completions, streaming) through one libcurl-multi I/O thread
 * (src/server/upstream.c) instead of the scheduler; sessions, supersede,
 * auth, emotional modulation, metrics and logs are unchanged, and a cancel
 * (hang-up, supersede, shutdown) closes the upstream connection at once.
 * Upstream failures: unreachable 502, timeouts 504, the upstream's 4xx/5xx
 * passed on in our envelope, mid-stream an error event and [DONE].
 * /tokenize and /detokenize answer 501 and no steering is applied then.
 *
 * Endpoints (all JSON unless noted; errors use the OpenAI envelope
 * {"error":{"message","type","param","code"}}):
 *   POST /v1/chat/completions   stream (SSE) and non-stream; emotion-modulated
 *                               sampling and steering, echoed as "elpis":{...};
 *                               the agent loop (src/server/agent.c): memories,
 *                               compaction, reasoning_content, tool_calls
 *   POST /v1/completions        stream (SSE) and non-stream, text_completion
 *   GET  /v1/psyche/emotion     {valence, arousal, quadrant}
 *   POST /v1/psyche/emotion     {event_type, intensity?} -> the new state, once durable
 *   POST /v1/psyche/dream       {stream?, max_tokens?, theme?} -> a dream (dream.c); any
 *                               completion request cancels a running dream
 *   GET  /v1/emotion            the full state: trajectory, steering coefficients
 *   POST /v1/memories           store -> 201 {id, importance_score, status} after COMMIT
 *   GET  /v1/memories?q=&n=     hybrid search
 *   GET|DELETE /v1/memories/ID  one memory (404 when absent)
 *   GET  /v1/memories/stats     {total_memories, short_term, long_term, ...}
 *   POST /v1/embeddings         OpenAI format, the memory store's embedder
 *   GET  /v1/models
 *   GET  /health                open (no key needed); never waits on anything
 *   GET  /metrics               Prometheus text
 *   POST /tokenize  {content, add_special?, parse_special?} -> {tokens}
 *   POST /detokenize {tokens} -> {content}
 * With API keys configured every endpoint except /health needs
 * `Authorization: Bearer K` or `X-Api-Key: K`.
 */
#ifndef ELPIS_SERVER_H
#define ELPIS_SERVER_H

#include "elpis/base.h"
#include "elpis/psyche.h"

#define ELPIS_SERVER_DEFAULT_PORT 8741

typedef struct elpis_server_config {
    /* [server] */
    char    *host;              /* default "127.0.0.1" */
    int32_t  port;              /* 0..65535; 0 picks a free port (logged) */
    char   **api_keys;          /* NULL-terminated list; NULL/empty: no auth */
    size_t   n_api_keys;
    char    *log_file;          /* default "logs/system.log" */
    int32_t  parallel, queue;   /* scheduler slots and queue places */
    uint64_t mem_limit;         /* bytes; 0: only MemAvailable is checked */
    uint64_t body_limit;        /* bytes of a request body (413 beyond) */
    double   ping_interval_s;   /* ": ping" after this long without output; 0: never */
    double   session_wait_s;    /* bounded wait for a superseded request */
    double   drain_timeout_s;   /* SIGTERM: how long running streams may take */
    double   stall_timeout_s;   /* a client that stops reading is cancelled after this */
    int32_t  max_connections;
    double   consolidate_interval_s; /* memory consolidation check period; 0: never */
    int32_t  memory_context;    /* chat: inject relevant memories (1, default) or not (0) */
    int32_t  auto_store;        /* chat: store important exchanges and compacted messages (1) or not (0) */
    char    *system_prompt;     /* chat: used when the client sends no system message; NULL: none */
    double   dream_delay_s;     /* idle seconds before the server dreams; 0: never; < 0: 60 with --data-dir, else never */
    double   dream_interval_s;  /* seconds between idle dreams (300) */
    /* [model] */
    char    *model_path;
    char    *model_alias;       /* id shown by /v1/models; default the model's name */
    int32_t  ctx, threads, batch, prefill_chunk;
    double   temperature, top_p;/* base sampling values before emotional modulation (0.7, 0.9) */
    /* [server] upstream (upstream.c): generation on an OpenAI-compatible engine */
    char    *upstream;          /* base URL, e.g. http://gpu:8000; NULL: the local engine */
    char    *upstream_key;      /* bearer key for the upstream; never logged */
    char    *upstream_model;    /* "model" sent upstream; NULL: the client's */
    double   upstream_connect_timeout_s, upstream_idle_timeout_s;   /* -> 504 */
    /* [emotion], [memory], --data-dir (server.data_dir), --embedding-model (model.embedding_model) */
    elpis_psyche_config psyche;
} elpis_server_config;

/* Built-in defaults. Free with elpis_server_config_free. */
void elpis_server_config_init(elpis_server_config *c);
void elpis_server_config_free(elpis_server_config *c);

/* Fill c from `--config FILE` (if among argv), the environment and the
 * flags in argv (argv[0] is the command name). ELPIS_EINVAL with a message
 * naming the key, the value, the allowed range and its source on a bad
 * value or flag; *help is set when -h/--help was given. */
elpis_status elpis_server_config_load(elpis_server_config *c, int argc, char **argv, bool *help, elpis_error *err);
/* The flags, for --help. */
void elpis_server_config_usage(void *file);

typedef struct elpis_server elpis_server;

/* Check the configuration (no non-loopback address without a key), open the
 * event log, load the model, check the memory budget, start the scheduler,
 * the watcher and the HTTP daemon. c must outlive the server. */
elpis_status elpis_server_new(elpis_server **out, const elpis_server_config *c, elpis_error *err);
/* The port actually bound (useful with port 0). */
uint16_t elpis_server_port(const elpis_server *s);
/* SIGTERM path: refuse new requests (503), end running streams with
 * finish_reason "length" and [DONE], wait for them (bounded by
 * drain_timeout_s, then cancel with reason "shutdown"), stop the daemon.
 * Blocking; call from the main thread. Idempotent. */
void elpis_server_shutdown(elpis_server *s, const char *why);
/* Shut down if not yet done, then free everything. NULL is fine. */
void elpis_server_free(elpis_server *s);

#endif
