/* mcp_internal.h -- the pieces of `elpis mcp` shared by the src/mcp sources and the
 * unit tests. Not an interface for other modules (that is elpis/mcp.h).
 *
 * INVARIANTS
 * ----------
 * - Only the writer thread writes to the output fd, and only whole lines.
 *   Everyone else hands it finished messages (mcp_writer_send).
 * - The reader thread owns the protocol state (initialised or not) and the
 *   line buffer. It never waits for a generation: a generating tool creates a
 *   job, submits its request and returns.
 * - Jobs live in one list guarded by jobs_mu. A job holds one reference to
 *   its elpis_request. The reader adds jobs and removes streams (read to the
 *   end, cancelled); the completion thread removes finished generate and
 *   function_call jobs and expired streams. Whoever unlinks a job frees it.
 * - The decision "answer this call" versus "it was cancelled: stay silent"
 *   is taken under jobs_mu, so a notifications/cancelled either finds the
 *   job (and no response is ever sent) or finds nothing (the answer is
 *   already on its way, which the spec allows).
 * - The scheduler's notify callback only sets a flag and signals ev_cv. It
 *   never takes jobs_mu and never writes.
 * - Lock order: jobs_mu, then a request's own lock (elpis_request_read), then
 *   the writer's mutex. ev_mu is never held with another lock.
 */
#ifndef ELPIS_MCP_INTERNAL_H
#define ELPIS_MCP_INTERNAL_H

#include "elpis/chat.h"
#include "elpis/emotion.h"
#include "elpis/mcp.h"

#include <jansson.h>
#include <pthread.h>

/* JSON-RPC and MCP error codes */
enum {
    MCP_PARSE_ERROR = -32700,
    MCP_INVALID_REQUEST = -32600,
    MCP_METHOD_NOT_FOUND = -32601,
    MCP_INVALID_PARAMS = -32602,
    MCP_INTERNAL_ERROR = -32603,
    MCP_RESOURCE_NOT_FOUND = -32002,
};

#define MCP_VERSION_LATEST "2025-11-25"

/* ---- line.c: split a byte stream into bounded lines ------------------------ */

typedef struct mcp_lines {
    char  *buf;          /* the partial line so far */
    size_t len, cap;
    size_t max;          /* longest line accepted, without its '\n' */
    bool   discarding;   /* inside an overlong line: drop bytes up to the next '\n' */
} mcp_lines;

typedef void (*mcp_line_fn)(void *arg, const char *line, size_t len);   /* no '\n'; not NUL-terminated */
typedef void (*mcp_overlong_fn)(void *arg, size_t max);

void mcp_lines_init(mcp_lines *l, size_t max);
void mcp_lines_free(mcp_lines *l);
/* Consume n bytes: on_line for every complete line, on_overlong once per line
 * that exceeds max (reported as soon as it is detected; the rest of it is
 * dropped). ELPIS_ENOMEM only when the partial-line buffer cannot grow. */
elpis_status mcp_lines_feed(mcp_lines *l, const char *data, size_t n, mcp_line_fn on_line,
                            mcp_overlong_fn on_overlong, void *arg);
/* End of input: a last line without '\n' is delivered too. */
void mcp_lines_finish(mcp_lines *l, mcp_line_fn on_line, void *arg);

/* ---- rpc.c: JSON-RPC envelopes ----------------------------------------------- */

typedef enum mcp_msg_kind {
    MCP_MSG_REQUEST,        /* method + id */
    MCP_MSG_NOTIFICATION,   /* method, no id: never answered */
    MCP_MSG_RESPONSE,       /* result/error + id: we send no requests, so ignored */
    MCP_MSG_INVALID,        /* answer with err_code/err_msg (id or null) */
} mcp_msg_kind;

typedef struct mcp_msg {
    mcp_msg_kind kind;
    json_t *root;           /* owned; NULL when the line did not parse */
    json_t *id;             /* borrowed from root; NULL: none or unusable */
    const char *method;     /* borrowed */
    json_t *params;         /* borrowed; NULL when absent */
    int err_code;
    char err_msg[256];
    json_t *err_data;       /* owned; may be NULL */
} mcp_msg;

/* Parse and classify one line. Never fails: problems become MCP_MSG_INVALID
 * with the JSON-RPC error to send (parse position, or the field at fault). */
void mcp_msg_parse(const char *line, size_t len, mcp_msg *out);
void mcp_msg_clear(mcp_msg *m);

/* Message builders; each steals the json_t it is given and returns NULL only
 * on OOM. An id of NULL is written as null. */
json_t *mcp_result(const json_t *id, json_t *result);
json_t *mcp_error(const json_t *id, int code, const char *msg, json_t *data);
json_t *mcp_notification(const char *method, json_t *params);
/* A JSON string of n bytes of possibly invalid UTF-8: bad sequences become
 * U+FFFD, so model output can always be sent. */
json_t *mcp_text(const char *s, size_t n);
/* Compact one-line serialisation used on the wire (malloc'd, NUL-terminated). */
char *mcp_dump(const json_t *j);

/* ---- writer.c: the one thread that writes the output ---------------------------- */

typedef enum mcp_send_mode {
    MCP_SEND_MUST,       /* always queued (responses) */
    MCP_SEND_WAIT,       /* reader only: wait while the queue is over its high water */
    MCP_SEND_OPTIONAL,   /* dropped when over high water (progress notifications) */
} mcp_send_mode;

typedef struct mcp_out_line mcp_out_line;
typedef struct mcp_writer {
    int fd;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* writer waits for lines */
    pthread_cond_t room;        /* MCP_SEND_WAIT senders wait for room */
    mcp_out_line *head, *tail;
    size_t queued_bytes, high_water;
    bool closing;               /* stop once the queue is empty */
    bool dead;                  /* the peer stopped reading (EPIPE): drop everything */
    uint64_t n_written, n_dropped;
} mcp_writer;

elpis_status mcp_writer_start(mcp_writer *w, int fd, size_t high_water, elpis_error *err);
/* Queue one message (stolen; NULL counts as a failed build and is dropped).
 * Returns false when it was dropped. */
bool mcp_writer_send(mcp_writer *w, json_t *msg, mcp_send_mode mode);
/* Write what is queued, then join the thread. Idempotent. */
void mcp_writer_stop(mcp_writer *w);

/* ---- schema.c: table JSON and a small JSON Schema checker --------------------------- */

/* Parse JSON written with ' in place of " (readable C literals for the tool
 * table). NULL on a syntax error, which is a programming error: logged. */
json_t *mcp_json_sq(const char *text);
/* Check `value` against the subset of JSON Schema our tables use: type
 * (string or list), properties, required, items, minimum, maximum, enum,
 * minItems, minLength. On failure writes "path: problem" into msg. */
bool mcp_schema_check(const json_t *schema, const json_t *value, const char *path, char *msg, size_t cap);

/* ---- emo.c: the emotion adapter ------------------------------------------------------ */

json_t *mcp_emo_state(struct elpis_emotion *e);                 /* the full state dict, now */
json_t *mcp_emo_events(void);                                   /* {name: [dv, da]} */
elpis_status mcp_emo_event(struct elpis_emotion *e, const char *type, double intensity, elpis_error *err);
elpis_status mcp_emo_reset(struct elpis_emotion *e, elpis_error *err);
/* Effective sampling values: a given temperature passes through (top_p stays
 * at the base); otherwise both are modulated when `modulate` is set. */
void mcp_emo_sampling(struct elpis_emotion *e, const elpis_mcp_config *cfg, bool t_set, double t, bool modulate,
                      double *t_out, double *p_out);
/* Response analysis after a generation (may fire one event). */
void mcp_emo_after_response(struct elpis_emotion *e, const char *text);
/* The steering blend for a generation starting now (malloc'd n_layer*n_embd
 * floats), or NULL when there is none; *oom when allocation failed. */
float *mcp_emo_steering(struct elpis_emotion *e, const elpis_emotion_vectors *v, bool *oom);

/* ---- mem.c: the memory tools --------------------------------------------------------- */

/* The input schema of memory tool `name`, or NULL (not a memory tool, or no store). */
const json_t *mcp_mem_schema(const elpis_mcp *m, const char *name);

/* ---- tools.c: the tool registry ------------------------------------------------------- */

typedef struct mcp_call {
    elpis_mcp *srv;
    const char *name;               /* the tool's name */
    const json_t *args;             /* validated against the tool's input schema */
    const json_t *id;               /* the JSON-RPC request id */
    const json_t *progress_token;   /* NULL when the call asked for no progress */
} mcp_call;

typedef struct mcp_tool_out {
    json_t *structured;             /* the result object (owned), or NULL on error */
    char error[ELPIS_ERROR_MAX];    /* when structured is NULL: isError with this message */
    bool deferred;                  /* a job will answer later; nothing to send now */
} mcp_tool_out;

typedef void (*mcp_tool_fn)(const mcp_call *c, mcp_tool_out *out);

typedef struct mcp_tool {
    const char *name;
    const char *title;
    const char *description;
    const char *input_schema;       /* JSON with ' for " (mcp_json_sq) */
    const char *output_schema;      /* the same; structuredContent conforms */
    mcp_tool_fn fn;
} mcp_tool;

const mcp_tool *mcp_tools(size_t *n);
/* {content:[{type:text, text}], structuredContent} / {content, isError:true}.
 * Steal their argument. */
json_t *mcp_tool_result(json_t *structured);
json_t *mcp_tool_error(const char *msg);
void mcp_out_error(mcp_tool_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* handlers that answer at once (tools.c) */
void mcp_tool_update_emotion(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_reset_emotion(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_get_emotion(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_get_capabilities(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_memory(const mcp_call *c, mcp_tool_out *out);   /* mem.c: every memory tool */
/* generation handlers (gen.c) */
void mcp_tool_generate(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_function_call(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_stream_start(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_stream_read(const mcp_call *c, mcp_tool_out *out);
void mcp_tool_stream_cancel(const mcp_call *c, mcp_tool_out *out);

/* ---- toolcall.c: function calling over plain text ------------------------------------- */

/* The system text that teaches the ```tool_call format and lists `tools`
 * (OpenAI format: [{type:"function", function:{name, description, parameters}}]).
 * Appended to `out`. */
elpis_status mcp_toolcall_prompt(const json_t *tools, elpis_buf *out, elpis_error *err);
/* Tool calls found in model output: ```tool_call fences and <tool_call> tags
 * holding {"name", "arguments"}; as a fallback a whole reply that is such an
 * object. OpenAI format [{id, type:"function", function:{name, arguments:
 * JSON string}}], or NULL when there is none. *content (may be NULL) gets the
 * text with the blocks removed. */
json_t *mcp_toolcall_parse(const char *text, char **content);

/* ---- gen.c: jobs ------------------------------------------------------------------------- */

typedef enum mcp_job_kind { MCP_JOB_GENERATE, MCP_JOB_FUNCTION_CALL, MCP_JOB_STREAM } mcp_job_kind;

typedef struct mcp_job {
    struct mcp_job *next;
    mcp_job_kind kind;
    elpis_request *req;          /* our reference */
    json_t *id;                  /* generate/function_call: the call to answer (owned) */
    json_t *progress_token;      /* owned; NULL: no progress wanted */
    char stream_id[40];          /* streams: uuid4 */
    elpis_buf text;              /* everything generated so far */
    size_t read_cursor;          /* streams: bytes already returned */
    size_t progress_cursor;      /* bytes already sent as progress */
    int32_t progress_sent;       /* last `progress` value sent */
    double last_progress_ms;
    elpis_req_status st;         /* as of the last pump */
    bool final;                  /* st is final and all text is in `text` */
    bool client_cancelled;       /* notifications/cancelled: never answer */
    bool analysed;               /* response analysis done (once) */
    double temperature, top_p;   /* effective sampling values */
    int32_t max_tokens;
    double last_access_ms;       /* streams: creation or last read (TTL) */
} mcp_job;

elpis_status mcp_jobs_start(elpis_mcp *m, elpis_error *err);   /* the completion thread */
/* Cancel every job (reason CLIENT), stop the completion thread, free jobs. */
void mcp_jobs_stop(elpis_mcp *m);
/* notifications/cancelled for request `id`: true when a running call was found. */
bool mcp_jobs_cancel_call(elpis_mcp *m, const json_t *id);
/* True when a generate/function_call with this id is still running. */
bool mcp_jobs_id_busy(elpis_mcp *m, const json_t *id);

/* ---- the server object ----------------------------------------------------------------- */

struct elpis_mcp {
    elpis_mcp_config cfg;            /* strings point into the copies below */
    char *model_path, *server_version;
    elpis_sched *sched;              /* NULL: no model */
    const elpis_model *model;
    elpis_chat_family chat_family;   /* how prompts are rendered */
    struct elpis_emotion *emo;
    const elpis_emotion_vectors *vectors;   /* steering for generations; NULL: none */
    struct elpis_memory_store *mem;         /* NULL: no memory tools */
    json_t *mem_inputs;                     /* memory tool name -> parsed input schema */
    mcp_writer writer;
    mcp_lines lines;
    int wake[2];                     /* self-pipe: elpis_mcp_stop */
    bool served;

    /* protocol state: reader thread only */
    bool initialized;                /* initialize answered */
    bool client_ready;               /* notifications/initialized seen */
    char version[16];                /* negotiated protocol version */

    /* the tool table, parsed once */
    const mcp_tool *tools;
    size_t n_tools;
    json_t **tool_input;             /* parsed input schemas, [n_tools] */
    json_t *tools_list;              /* the tools/list result */

    /* jobs (gen.c) */
    pthread_mutex_t jobs_mu;
    mcp_job *jobs;
    int32_t n_streams;

    /* completion thread (gen.c) */
    pthread_t done_thread;
    bool done_started;
    pthread_mutex_t ev_mu;
    pthread_cond_t ev_cv;
    bool ev_dirty, ev_quit;
};

/* Dispatch one line (server.c); the unit tests call it directly too. */
void mcp_handle_line(elpis_mcp *m, const char *line, size_t len);

#endif
