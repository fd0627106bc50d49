/* server_internal.h -- what the files of src/server/ share. Not an API.
 *
 * THREADS AND LOCKS
 * -----------------
 *   MHD thread  (one, epoll): every HTTP callback; the only thread that
 *               reads request output, writes responses, suspends connections.
 *   scheduler   calls srv_notify() (stream.c) for each request event.
 *   watcher     watcher.c: hang-up polling, pings, session deadlines, sweep.
 *   psyche      work.c: every SQLite and embedder call of the emotion and
 *               memory routes, response analysis, timed consolidation.
 *   main        start, signal wait, shutdown.
 * One mutex, srv->lock, guards the slot table, the session registry and the
 * fields of srv_req marked "lock". It is held only for short bookkeeping and
 * for MHD_suspend_connection/MHD_resume_connection, never while computing or
 * doing I/O. Lock order: srv->lock, then a request's own mutex (taken inside
 * elpis_request_* calls). The scheduler never holds its locks while calling
 * notify, so there is no cycle.
 *
 * SUSPEND/RESUME INVARIANT
 * ------------------------
 * r->suspended mirrors libmicrohttpd's view exactly: it is set right after
 * MHD_suspend_connection and cleared right before MHD_resume_connection,
 * both under srv->lock. So a connection is resumed at most once per suspend,
 * never after it completed, and never while the daemon is being stopped
 * (shutdown sets srv->stopping under the lock, after which nothing suspends).
 * Lost wake-ups are prevented by r->notified: a waiter clears it before
 * looking for output and does not suspend if it was set meanwhile.
 *
 * PSYCHE JOBS
 * -----------
 * A route that needs the database or the embedder parses its input on the
 * MHD thread, hands a srv_job to the psyche worker and suspends (phase
 * WORK). The worker runs it, then under srv->lock marks it done and wakes the
 * request, which answers from the job. A job's `r` is the request waiting
 * for it (counted in n_waiting) or NULL (fire and forget, or the request is
 * gone); whoever sees the other side gone frees the job. Shutdown waits for
 * n_waiting to reach 0 before stopping the daemon, and no new job is taken
 * once srv->stopping is set, so no connection stays suspended.
 *
 * NOTIFY HANDLES
 * --------------
 * A request's notify argument is its slot (srv_slot *), not the srv_req: the
 * scheduler may notify after the HTTP side has gone. Slots live as long as the
 * server (freed after the scheduler thread has been joined); a notify for a
 * slot that now holds another request is a harmless spurious wake-up.
 */
#ifndef ELPIS_SERVER_INTERNAL_H
#define ELPIS_SERVER_INTERNAL_H

#include "elpis/base.h"
#include "elpis/chat.h"
#include "elpis/chat_client.h"
#include "elpis/memory.h"
#include "elpis/model.h"
#include "elpis/sched.h"
#include "elpis/server.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

typedef struct srv_req srv_req;
typedef struct srv_session srv_session;
typedef struct srv_job srv_job;
struct json_t;

/* ---- event log (evlog.c) ---------------------------------------------------- */
/* One line per event: "<UTC ISO-8601 time> <event> key=value ...". Lines are
 * written with a single write(2) on an O_APPEND descriptor, so concurrent
 * writers never interleave within a line. */
typedef struct srv_logfile { int fd; } srv_logfile;
elpis_status srv_evlog_open(srv_logfile *l, const char *path, elpis_error *err);
void srv_evlog_close(srv_logfile *l);
void srv_evlog(srv_logfile *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- auth (auth.c) ---------------------------------------------------------------- */
bool srv_auth_ok(const elpis_server_config *c, struct MHD_Connection *conn);
/* Resolve c->host:port into *ss; *loopback tells whether it is 127/8 or ::1. */
elpis_status srv_resolve_host(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len,
                              bool *loopback, elpis_error *err);

/* ---- wire format (sse.c) ------------------------------------------------------------ */
typedef enum srv_kind { SRV_CHAT, SRV_TEXT } srv_kind;

/* The fixed parts of every event of one response. */
typedef struct srv_wire {
    srv_kind kind;
    const char *id;          /* "chatcmpl-<trace>" or "cmpl-<trace>" */
    const char *model;       /* raw model id (escaped when written) */
    long long created;       /* unix seconds, the same in every chunk */
    bool include_usage;
    const char *elpis;       /* the "elpis" echo object (JSON text) for the last chunk / body; NULL: none */
} srv_wire;

elpis_status srv_json_str(elpis_buf *b, const char *s, size_t n);   /* "..." escaped */
elpis_status srv_sse_role(elpis_buf *b, const srv_wire *w);
elpis_status srv_sse_text(elpis_buf *b, const srv_wire *w, const char *t, size_t n);
elpis_status srv_sse_finish(elpis_buf *b, const srv_wire *w, const char *finish_reason);
elpis_status srv_sse_usage(elpis_buf *b, const srv_wire *w, int32_t n_prompt, int32_t n_gen, int32_t n_cached);
elpis_status srv_sse_error(elpis_buf *b, const char *type, const char *code, const char *msg);
elpis_status srv_sse_done(elpis_buf *b);
elpis_status srv_sse_ping(elpis_buf *b);
/* {"error":{"message":..,"type":..,"param":..|null,"code":..|null}} */
elpis_status srv_error_body(elpis_buf *b, const char *type, const char *param, const char *code, const char *msg);
/* delta {"<field>": t} (field: "content" or "reasoning_content"). */
elpis_status srv_sse_delta(elpis_buf *b, const srv_wire *w, const char *field, const char *t, size_t n);
/* The finish chunk with a delta (JSON object text, "{}" for none). */
elpis_status srv_sse_finish_delta(elpis_buf *b, const srv_wire *w, const char *delta_json, const char *finish_reason);
/* What a chat message carries besides its content (agent.c). */
typedef struct srv_extra {
    const char *reasoning;             /* message.reasoning_content, or NULL */
    size_t n_reasoning;
    const char *tool_calls;            /* message.tool_calls (a JSON array's text), or NULL; content null if empty */
} srv_extra;
/* The whole non-stream body (chat.completion or text_completion); x may be NULL. */
elpis_status srv_final_body(elpis_buf *b, const srv_wire *w, const char *text, size_t n, const srv_extra *x,
                            const char *finish, int32_t n_prompt, int32_t n_gen, int32_t n_cached);

/* ---- request parsing (api.c) --------------------------------------------------------- */
typedef struct srv_api_error {
    unsigned status;
    const char *type, *param, *code;   /* static strings or arena copies */
    char msg[400];
} srv_api_error;

typedef struct srv_gen {
    srv_kind kind;
    bool stream, include_usage, ignore_eos;
    int32_t max_tokens;                /* <= 0: up to the context */
    elpis_sampler_params sp;
    const char **stop;                 /* arena */
    size_t n_stop;
    elpis_tokens prompt;               /* malloc'd; freed with the srv_req */
    bool t_set, p_set;                 /* the request gave temperature / top_p */
    bool modulate;                     /* "emotional_modulation" (default true): sampling and steering */
    float *steering;                   /* malloc'd blend for this request, or NULL; freed with the srv_req */
    const char *echo;                  /* "elpis":{...} object text (arena), or NULL */
    bool keep_text;                    /* streams: keep the text for response analysis */
} srv_gen;

/* r->body as a JSON object (jansson; caller decrefs); NULL and *e on a client error. */
struct json_t *srv_body_json(srv_req *r, srv_api_error *e);
/* Parse a completion body (JSON in r->body) into r->gen, prompt tokens
 * included. false and *e filled on a client error. */
bool srv_parse_gen(srv_req *r, srv_kind kind, srv_api_error *e);
/* Chat `messages` (or a `prompt` string) into arena copies; tool results
 * and assistant tool_calls are written in the text format of spec §5.4/§6. */
bool srv_chat_messages(srv_req *r, struct json_t *o, elpis_chat_msg **m, size_t *n, srv_api_error *e);
/* Tokenize the rendered prompt into r->gen.prompt; caps max_tokens by the room left. */
bool srv_tokenize_prompt(srv_req *r, const elpis_buf *text, bool parse_special, srv_api_error *e);
/* Bodies of /tokenize and /detokenize; false and *e on a client error. */
bool srv_api_tokenize(srv_req *r, elpis_buf *out, srv_api_error *e);
bool srv_api_detokenize(srv_req *r, elpis_buf *out, srv_api_error *e);

/* ---- the agent loop (agent.c) ---------------------------------------------------------------- */
/* Per chat request: what the server adds around the model (memories,
 * compaction, the tool section) and reads out of its text (reasoning,
 * tool calls). Everything is arena memory except the marked fields. */
typedef struct srv_agent {
    bool out;                          /* a chat request: its reply is parsed (reasoning, tool calls) */
    bool on;                           /* ... on the local engine: memories, compaction, tool section too */
    bool parse_reasoning;              /* "reasoning_format": "parsed" (default) */
    bool tools;                        /* the request had `tools`: parse tool calls */
    bool recall, store;                /* memory retrieval before / auto-storage after */
    elpis_chat_msg *msgs;              /* the conversation (system prompt and tool section included) */
    size_t n_msgs;
    size_t last_user;                  /* index of the last user message; n_msgs: none */
    const char *memories;              /* "[Relevant memories]\n..." or NULL */
    int n_memories;
    size_t n_compacted;                /* messages replaced by the summary */
    elpis_reason split;                /* stream: the reasoning splitter (malloc'd pending bytes) */
    bool split_init;
    bool stored;                       /* auto-storage queued (once) */
} srv_agent;

/* Test seam: the pure steps, no server needed. */
typedef bool (*srv_fits_fn)(void *ud, const elpis_chat_msg *m, size_t n);
typedef struct srv_compaction {
    elpis_chat_msg *msgs;              /* arena: system prompt, summary, kept messages */
    size_t n;
    size_t first_dropped, n_dropped;   /* in[first_dropped .. +n_dropped) were replaced */
    bool fit;                          /* false: even the sliding window is too long */
    const elpis_chat_msg *dropped;     /* in + first_dropped */
} srv_compaction;
/* Fit in[0..n) (in[0] is kept when it is a system message) by replacing the
 * oldest messages with one "[Previous conversation summary]" system message
 * (at most summary_max bytes), keeping the last `keep`. *out is `in` itself
 * when it already fits; when even the most compacted form does not fit, the
 * summary is left out (a sliding window) and out->fit tells whether that fits. */
elpis_status srv_compact(elpis_arena *a, const elpis_chat_msg *in, size_t n, size_t keep, size_t summary_max,
                         srv_fits_fn fits, void *ud, srv_compaction *out);
/* Spec §5.3: "[Relevant memories]\n1. [type] text" (summary when the content
 * is over 200 chars, cut at 300 + "..."). malloc'd; NULL when no hits. */
char *srv_format_memories(const elpis_memory_results *res);
/* ```tool_call blocks and a bare leading {"name":..} object of `text` into
 * *calls; *stripped (may be NULL) gets the text without them. */
elpis_status srv_parse_tool_calls(const char *text, elpis_tool_calls *calls, elpis_buf *stripped, elpis_error *err);
/* Should this exchange be stored? (§5.2: >= 0.6, or the user asked to remember.) */
bool srv_should_store(const char *user, const char *answer, double valence, double arousal);

bool srv_agent_parse(srv_req *r, struct json_t *o, srv_api_error *e);   /* MHD: body -> r->agent */
bool srv_agent_render(srv_req *r, srv_api_error *e);                   /* memories + compaction + tokens */
enum MHD_Result srv_agent_recall(srv_req *r);                          /* queue the retrieval; then launch */
void srv_agent_prepared(srv_req *r);                                   /* after srv_emo_prepare: echo, keep_text */
void srv_agent_stream_text(srv_req *r, const char *t, size_t n);       /* a text piece -> SSE deltas */
void srv_agent_stream_finish(srv_req *r, const char *finish);          /* the finish chunk (tool_calls) */
elpis_status srv_agent_final_body(srv_req *r, elpis_buf *b, const char *finish, const elpis_req_status *st);
void srv_agent_final(srv_req *r);                                      /* final seen: queue the auto-storage */
void srv_agent_free(srv_req *r);

/* ---- slots, sessions (registry.c) ------------------------------------------------------- */
typedef struct srv_slot {
    elpis_server *srv;
    srv_req *r;                        /* lock; NULL: free */
    int next_free;                     /* lock */
} srv_slot;

struct srv_session {                   /* all fields: lock */
    srv_session *next;                 /* hash chain */
    char *id;
    elpis_request *active;             /* last submitted request; a reference; NULL: none */
    srv_req *active_owner;             /* its HTTP side while that exists */
    char active_trace[24];
    bool active_cancel_logged;
    srv_req *waiter;                   /* newest claimant waiting for `active` to end */
};

#define SRV_SESSION_BUCKETS 256

/* Slot table (lock held). */
bool srv_slot_acquire(elpis_server *s, srv_req *r);
void srv_slot_release(elpis_server *s, srv_req *r);
/* Session registry (lock held). See registry.c for the protocol. */
bool srv_session_claim(elpis_server *s, srv_req *r, bool *may_run);
void srv_session_set_active(elpis_server *s, srv_req *r);
bool srv_session_ready(elpis_server *s, srv_req *r, double now);
void srv_session_on_final(elpis_server *s, srv_req *r);
void srv_session_detach(elpis_server *s, srv_req *r);
void srv_session_sweep(elpis_server *s, double now);
void srv_sessions_free(elpis_server *s);

/* ---- per HTTP request ---------------------------------------------------------------------- */
typedef enum srv_phase {
    SRV_PH_BODY,        /* receiving the upload */
    SRV_PH_WAIT_PREV,   /* waiting for the session's previous request to end */
    SRV_PH_RUN,         /* submitted: streaming, or collecting (non-stream) */
    SRV_PH_WORK,        /* waiting for a psyche job (work.c) */
    SRV_PH_DONE,        /* a response has been queued */
} srv_phase;

typedef struct srv_route srv_route;

/* A generation that is not an OpenAI completion on the wire (dream.c):
 * stream.c calls these at its ends; every member may be NULL. */
typedef struct srv_gen_hooks {
    void (*on_final)(srv_req *r);                    /* once, when the request is seen final */
    void (*stream_tail)(srv_req *r, elpis_buf *out); /* a normal end: events before [DONE] */
    enum MHD_Result (*respond)(srv_req *r);          /* a normal end without stream: the whole answer */
} srv_gen_hooks;

struct srv_req {
    elpis_server *srv;
    struct MHD_Connection *conn;
    uint64_t serial;                   /* unique; validates watcher look-ups */
    const srv_route *route;
    elpis_arena arena;                 /* parse and render scratch; freed at the end */
    elpis_buf body;
    bool body_too_large;
    char trace[24];
    char id[40];                       /* chatcmpl-/cmpl- + trace */
    double t_start;
    long long created;
    srv_phase phase;

    /* generation (MHD thread) */
    srv_gen gen;
    srv_wire wire;
    elpis_request *req;                /* our reference */
    char *session;                     /* X-Session-Id (arena) or NULL */
    int slot;                          /* -1: none */
    int fd;                            /* the socket, for the watcher */
    bool logged_start, counted_live, final_seen;
    elpis_req_status st;               /* last status read */
    elpis_buf out;                     /* SSE bytes not yet handed to MHD */
    size_t out_off;
    bool ended;                        /* all events are in `out` */
    elpis_buf text;                    /* the completion text (streams too: response analysis) */
    const char *path_arg;              /* prefix routes: the rest of the path (arena), e.g. a memory id */
    srv_job *job;                      /* phase WORK: the psyche job (see PSYCHE JOBS) */
    bool analysed;                     /* response analysis queued (once) */
    srv_agent agent;                   /* chat: the agent loop's state (agent.c) */
    const srv_gen_hooks *hooks;        /* NULL: an OpenAI completion */
    void *hook_data;                   /* the hooks' state (arena) */
    bool activity;                     /* counted in the dream idle clock (dream.c) */

    /* lock */
    srv_session *sess;
    bool suspended, notified, hup, ping_due, prev_done, superseded, logged_cancel;
    bool sse;                          /* an SSE response is queued (pings apply) */
    bool submitted;                    /* handed to the scheduler */
    double deadline_ms, idle_since_ms;
};

/* ---- the server ------------------------------------------------------------------------------- */
enum { SRV_CODE_200, SRV_CODE_201, SRV_CODE_400, SRV_CODE_401, SRV_CODE_404, SRV_CODE_405, SRV_CODE_409, SRV_CODE_413,
       SRV_CODE_429, SRV_CODE_500, SRV_CODE_503, SRV_CODE_OTHER, SRV_CODE_COUNT };

struct elpis_server {
    const elpis_server_config *cfg;
    elpis_model *model;
    elpis_sched *sched;
    elpis_chat_family chat_family;
    const char *model_id;
    struct MHD_Daemon *mhd;
    uint16_t port;
    srv_logfile log;
    long long started;

    pthread_mutex_t lock;
    bool lock_init;
    srv_slot *slots;                   /* [n_slots] */
    int n_slots, free_head;
    int n_live;                        /* lock: requests holding a slot */
    srv_session *sessions[SRV_SESSION_BUCKETS];
    bool stopping;                     /* lock: the daemon is going down; never suspend */

    pthread_t watcher;
    bool watcher_started;
    atomic_bool watcher_stop;
    atomic_bool draining;
    bool shut_down;

    struct srv_upstream *up;           /* --upstream: generation goes there (upstream.c); NULL: local */
    elpis_psyche *psyche;              /* emotion, steering vectors, memory store */
    struct srv_worker *work;           /* the psyche worker (work.c) */
    struct srv_emo_view *emo_view;     /* the last committed emotional state (psyche_api.c) */
    atomic_llong consolidations, memories_promoted, memories_archived, psyche_failures;

    atomic_ullong next_serial;
    uint64_t trace_base;
    atomic_llong http_codes[SRV_CODE_COUNT];
    atomic_llong streams_started, client_disconnects;
    struct srv_dreams *dreams;         /* dream.c: running dreams, the idle clock */
};

/* stream.c: completion requests */
enum MHD_Result srv_gen_start(srv_req *r, srv_kind kind);
/* After parsing (and the memory retrieval): modulate, make, submit. */
enum MHD_Result srv_gen_launch(srv_req *r);
/* After parsing and srv_emo_prepare: create, submit and answer (r->gen is complete). */
enum MHD_Result srv_gen_submit(srv_req *r, srv_kind kind);
enum MHD_Result srv_gen_resume(srv_req *r);
void srv_gen_completed(srv_req *r, enum MHD_RequestTerminationCode toe);
void srv_wake_locked(srv_req *r);
void srv_notify(void *arg);

/* http.c: responses and counters */
enum MHD_Result srv_respond(srv_req *r, unsigned status, const char *ctype, const char *body, size_t len);
enum MHD_Result srv_respond_error(srv_req *r, unsigned status, const char *type, const char *param, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
enum MHD_Result srv_respond_api_error(srv_req *r, const srv_api_error *e);
void srv_count_status(elpis_server *s, unsigned status);
elpis_status srv_http_start(elpis_server *s, elpis_error *err);

/* watcher.c */
elpis_status srv_watcher_start(elpis_server *s, elpis_error *err);
void srv_watcher_stop(elpis_server *s);

/* metrics.c */
elpis_status srv_metrics_render(elpis_server *s, elpis_buf *b);

/* ---- the psyche worker (work.c) ---------------------------------------------------------------- */
typedef void (*srv_job_fn)(elpis_server *s, srv_job *j);   /* worker thread; fills status and body */
typedef enum MHD_Result (*srv_job_then)(srv_req *r, srv_job *j);   /* MHD thread: carry on instead of answering */

struct srv_job {
    srv_job *next;
    srv_job_fn run;
    srv_req *r;                        /* lock: the waiting request, or NULL */
    bool done;                         /* lock */
    struct json_t *args;               /* input (owned) */
    char *text;                        /* input (owned) */
    char key[64];                      /* input: an id, a name */
    unsigned status;                   /* output: HTTP status */
    int count;                         /* output: what a continuation needs counted (agent.c: memories) */
    elpis_buf body;                    /* output: JSON body (an error envelope when status >= 400) */
    /* MHD thread, when the job is done with status < 400: continue the
     * request instead of answering with body (j is freed after it
     * returns). NULL: answer. */
    srv_job_then then;
};

srv_job *srv_job_new(srv_job_fn run);  /* NULL on OOM */
void srv_job_free(srv_job *j);
/* Helpers for job functions: fill j->body with an error envelope / a jansson value (stolen). */
void srv_job_error(srv_job *j, unsigned status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void srv_job_json(srv_job *j, unsigned status, struct json_t *v);

elpis_status srv_work_start(elpis_server *s, elpis_error *err);
/* Hand j to the worker and wait for it (suspended); answers 503 while stopping. */
enum MHD_Result srv_work_submit(srv_req *r, srv_job *j);
enum MHD_Result srv_work_resume(srv_req *r);
/* Fire and forget (response analysis); the worker frees j. */
void srv_work_post(elpis_server *s, srv_job *j);
/* MHD completion callback: let go of r's job (freed now, or by the worker if it still runs). */
void srv_work_detach(srv_req *r);
/* Shutdown, lock not held: wait (bounded) until no request waits for a job. */
void srv_work_quiesce(elpis_server *s);
/* Run what is queued, stop the timer, join. Idempotent. */
void srv_work_stop(elpis_server *s);
/* Any thread: make the worker look at its timers (and the idle dream) now. */
void srv_work_wake(elpis_server *s);

/* ---- dreams (dream.c) ------------------------------------------------------------------------------ */
elpis_status srv_dream_open(elpis_server *s, elpis_error *err);
void srv_dream_close(elpis_server *s);                /* after the worker and the scheduler stopped */
void srv_dream_stop(elpis_server *s);                 /* shutdown: no new dream; cancel the idle one */
enum MHD_Result srv_h_dream(srv_req *r);              /* POST /v1/psyche/dream */
/* MHD thread, a completion request arrived: cancel every running dream. */
void srv_dream_interrupt(elpis_server *s);
/* http.c: a request begins / ends (the idle clock; r->activity says whether it counts). */
void srv_dream_request_begin(srv_req *r, const char *url, const char *method);
void srv_dream_request_end(srv_req *r);
/* Worker thread: drive the idle dream; returns when to look again (ms clock, 0: no need). */
double srv_dream_tick(elpis_server *s);

/* ---- emotion (psyche_api.c) ------------------------------------------------------------------------ */
/* The MHD thread reads the emotional state from a view the worker publishes
 * after each commit, never from the emotion object (whose mutex is held
 * across an fsync). */
elpis_status srv_emo_view_open(elpis_server *s, elpis_error *err);
void srv_emo_view_close(elpis_server *s);
/* Before make_request: modulated sampling, the steering blend, the "elpis" echo. */
bool srv_emo_prepare(srv_req *r, srv_api_error *e);
/* After the request ended (any way): queue the response analysis of its text, once. */
void srv_emo_after(srv_req *r);
void srv_psyche_metrics(elpis_server *s, elpis_buf *b);
enum MHD_Result srv_h_emotion_get(srv_req *r);     /* GET  /v1/psyche/emotion */
enum MHD_Result srv_h_emotion_post(srv_req *r);    /* POST /v1/psyche/emotion */
enum MHD_Result srv_h_emotion_full(srv_req *r);    /* GET  /v1/emotion */

/* ---- memories and embeddings (memory_api.c) ---------------------------------------------------------- */
enum MHD_Result srv_h_mem_store(srv_req *r);       /* POST   /v1/memories */
enum MHD_Result srv_h_mem_search(srv_req *r);      /* GET    /v1/memories?q=&n= */
enum MHD_Result srv_h_mem_stats(srv_req *r);       /* GET    /v1/memories/stats */
enum MHD_Result srv_h_mem_get(srv_req *r);         /* GET    /v1/memories/{id} */
enum MHD_Result srv_h_mem_delete(srv_req *r);      /* DELETE /v1/memories/{id} */
enum MHD_Result srv_h_embeddings(srv_req *r);      /* POST   /v1/embeddings */
/* The worker's timer: should_consolidate -> consolidate, logged. */
void srv_mem_consolidate_tick(elpis_server *s);

/* ---- upstream backend (upstream.c) ------------------------------------------------------------------ */
/* With --upstream, completion requests are elpis_requests written by the
 * upstream I/O thread instead of the scheduler; same read/notify/cancel. */
typedef struct srv_upstream srv_upstream;
elpis_status srv_up_new(srv_upstream **out, elpis_server *s, elpis_error *err);
void srv_up_drain(srv_upstream *u);    /* SIGTERM: end transfers (finish "length"), refuse new ones */
void srv_up_free(srv_upstream *u);     /* cancel what is left (shutdown), join; NULL is fine */
/* MHD thread: the request for r (the body sent upstream is built now). NULL and *e on failure. */
elpis_request *srv_up_request_new(srv_req *r, srv_api_error *e);
/* Lock held is fine: never blocks. ERANGE: full (503); ECANCELLED: draining. */
elpis_status srv_up_submit(srv_upstream *u, elpis_request *q, elpis_error *err);
/* q FAILED before any output: the status, type and code to answer with. */
bool srv_up_failure(elpis_request *q, unsigned *status, const char **type, const char **code);

/* small shared helpers */

/* Lock held. The request still matters to someone: it was submitted and is
 * not final, or it waits for its session. A request that was refused (503)
 * or never got that far is not pending, so its end is no cancellation. */
static inline bool srv_req_pending_locked(srv_req *r, elpis_req_status *st) {
    if (!r->req) return false;
    if (!r->submitted && r->sess && r->sess->waiter == r) return true;
    char dummy;
    elpis_request_read(r->req, &dummy, 0, st);
    return r->submitted && !elpis_req_state_final(st->state);
}

static inline bool srv_status_of(elpis_request *q, elpis_req_status *st) {
    char dummy;
    elpis_request_read(q, &dummy, 0, st);   /* cap 0: status only, moves nothing */
    return elpis_req_state_final(st->state);
}

#endif
