/* chat_client.h -- `elpis chat`: the terminal client's building blocks.
 *
 * The client talks to `elpis serve` (or any OpenAI-compatible server) over
 * HTTP with libcurl, streams replies as server-sent events, keeps the
 * conversation locally (the full history goes with every request, as the
 * original Hermes client did) and runs the model's tool calls itself, inside
 * a workspace directory. The front ends (plain line mode, full-screen
 * ncursesw UI; src/chat/plain.c, src/chat/tui.c) sit on top of the agent.
 *
 * Layers, bottom up (each usable and tested on its own):
 *   elpis_sse      bytes -> SSE events (the `data:` payload of each event)
 *   elpis_reply    SSE events of /v1/chat/completions -> text deltas, OpenAI
 *                  tool_calls merged by index, finish_reason, error, the
 *                  server's emotion echo
 *   elpis_reason   text deltas -> answer text and thought text
 *                  (<reasoning>, <thinking>, <think> blocks), across chunk
 *                  boundaries
 *   elpis_tool_calls_from_text   ```tool_call fenced blocks -> tool calls
 *   elpis_ws       the workspace sandbox and the six local tools
 *   elpis_client   libcurl: short JSON requests and one interruptible stream
 *   elpis_agent    one user turn: stream, run tools, feed results back, up
 *                  to max_iterations requests; Ctrl+C keeps the partial reply
 *
 * Invariants:
 *   - Nothing here installs signal handlers or touches the terminal; front
 *     ends pass a poll callback (asked at least every 50 ms while waiting on
 *     the network or a command) whose non-zero answer interrupts.
 *   - An interrupted stream is aborted at the socket, so the server sees the
 *     client leave and cancels the generation (its log: client_disconnect).
 *   - Every workspace path is checked after symlinks are resolved; writes
 *     never follow a final symlink (O_NOFOLLOW / O_EXCL) and replace files by
 *     rename, so a path proven inside the workspace stays the one written.
 *   - All JSON is jansson; every function that can fail returns
 *     elpis_status and leaves its outputs untouched on failure.
 */
#ifndef ELPIS_CHAT_CLIENT_H
#define ELPIS_CHAT_CLIENT_H

#include "elpis/base.h"

#include <jansson.h>
#include <limits.h>
#include <signal.h>

/* ---- server-sent events ------------------------------------------------------------ */

#define ELPIS_SSE_MAX_EVENT (8u << 20)   /* bytes of one line or one event's data */

/* Called once per event that has data; `data` is the event's data lines
 * joined by '\n', NUL-terminated. A non-OK return stops the feed with it. */
typedef elpis_status (*elpis_sse_fn)(void *ud, const char *data, size_t len, elpis_error *err);

typedef struct elpis_sse {
    elpis_buf line;   /* the current, incomplete line */
    elpis_buf data;   /* data of the current event so far */
    bool has_data;    /* a data: field was seen in this event */
    bool after_cr;    /* the last byte was '\r': a '\n' right after it ends nothing */
} elpis_sse;

void elpis_sse_init(elpis_sse *p);
/* Feed any number of bytes (split anywhere). Lines end in \n, \r\n or \r;
 * `:` lines are comments; fields other than data are ignored; a blank line
 * dispatches. ELPIS_EFORMAT when a line or event exceeds ELPIS_SSE_MAX_EVENT. */
elpis_status elpis_sse_feed(elpis_sse *p, const char *bytes, size_t n, elpis_sse_fn fn, void *ud, elpis_error *err);
void elpis_sse_free(elpis_sse *p);

/* ---- tool calls ------------------------------------------------------------------------- */

typedef struct elpis_tool_call {
    char *id;          /* "call_" + 12 hex when the model gave none */
    char *name;
    char *arguments;   /* JSON object text ("{}" when absent) */
} elpis_tool_call;

typedef struct elpis_tool_calls {
    elpis_tool_call *v;
    size_t n, cap;
} elpis_tool_calls;

/* Append a copy (id NULL: a fresh one; args NULL: "{}"). */
elpis_status elpis_tool_calls_add(elpis_tool_calls *c, const char *id, const char *name, const char *args);
void elpis_tool_calls_free(elpis_tool_calls *c);

/* Every ```tool_call block of `text` (fence tag case-insensitive, body up to
 * the next ``` or, for a reply cut short, the end of the text), decoded as
 * {"name": string, "arguments": object or JSON string}. Blocks that are not
 * such JSON are skipped, as the original did. Appends to *out. */
elpis_status elpis_tool_calls_from_text(const char *text, elpis_tool_calls *out, elpis_error *err);
/* A bare {"name":..,"arguments":..} object at the start of `text` (after
 * blanks): appended to *out as a call, *consumed = its end; else nothing
 * and *consumed = 0. */
elpis_status elpis_tool_call_bare(const char *text, elpis_tool_calls *out, size_t *consumed, elpis_error *err);
/* `text` from byte `skip` on, without its ```tool_call blocks, appended to *out. */
elpis_status elpis_tool_calls_strip(const char *text, size_t skip, elpis_buf *out);

/* ---- a streamed chat completion ---------------------------------------------------------- */

typedef void (*elpis_text_fn)(void *ud, const char *t, size_t n);

typedef struct elpis_reply {
    elpis_sse sse;
    elpis_buf content;         /* all delta.content so far */
    elpis_tool_calls calls;    /* delta.tool_calls, merged by index */
    char finish[32];           /* finish_reason of the last choice event ("" until then) */
    char error[512];           /* an {"error":{...}} event's message ("" if none) */
    bool done;                 /* data: [DONE] seen */
    bool has_emotion;          /* an "elpis":{"emotion":{...}} echo was seen */
    double valence, arousal;
    char quadrant[24];
    elpis_text_fn on_text;     /* each content delta, as it arrives (may be NULL) */
    elpis_text_fn on_reasoning;/* each delta.reasoning_content (a server that parsed the thoughts); may be NULL */
    void *ud;
} elpis_reply;

void elpis_reply_init(elpis_reply *r, elpis_text_fn on_text, void *ud);
/* Raw response bytes in. ELPIS_EFORMAT on a data payload that is not JSON. */
elpis_status elpis_reply_feed(elpis_reply *r, const char *bytes, size_t n, elpis_error *err);
/* One already-split event payload (what elpis_reply_feed calls per event). */
elpis_status elpis_reply_event(elpis_reply *r, const char *data, size_t len, elpis_error *err);
void elpis_reply_free(elpis_reply *r);

/* ---- reasoning blocks ---------------------------------------------------------------------- */

/* Receives the text split into runs; thought = inside a reasoning block. */
typedef void (*elpis_reason_fn)(void *ud, bool thought, const char *t, size_t n);

typedef struct elpis_reason {
    bool in_thought;
    bool had_thought;   /* a block was opened at least once */
    elpis_buf pending;  /* a tail that may be the start of a tag */
    elpis_reason_fn fn;
    void *ud;
} elpis_reason;

/* Tags (case-insensitive): <reasoning>, <thinking>, <think> open a thought;
 * any of the matching closers ends it. A tag split across feeds is held back
 * until it is decided (at most 12 bytes). */
void elpis_reason_init(elpis_reason *r, elpis_reason_fn fn, void *ud);
void elpis_reason_feed(elpis_reason *r, const char *t, size_t n);
void elpis_reason_flush(elpis_reason *r);   /* emit what is held back */
void elpis_reason_free(elpis_reason *r);
/* Whole text at once: answer without the blocks (trimmed), thought = the
 * blocks' contents joined by "\n\n" (trimmed). Either output may be NULL. */
elpis_status elpis_reason_split(const char *text, elpis_buf *answer, elpis_buf *thought);

/* ---- the workspace and its tools ------------------------------------------------------------ */

typedef enum elpis_tool_outcome {
    ELPIS_TOOL_OK,        /* ran and succeeded -> emotion event "success" */
    ELPIS_TOOL_FAILED,    /* ran and failed (exit code, no match, ...) -> "failure" */
    ELPIS_TOOL_ERROR,     /* could not run: bad arguments, outside the workspace, blocked -> "frustration" */
    ELPIS_TOOL_DECLINED,  /* the user said no -> no event */
} elpis_tool_outcome;

/* Asked before execute_bash, create_file and edit_file; true runs the tool. */
typedef bool (*elpis_confirm_fn)(void *ud, const char *tool, const char *detail);
/* Asked while a command runs (every 50 ms at least); non-zero kills it. */
typedef int (*elpis_poll_fn)(void *ud);

typedef struct elpis_ws {
    char root[PATH_MAX];        /* realpath of the workspace */
    double bash_timeout_s;      /* execute_bash: 30 */
    double search_timeout_s;    /* search_codebase and recursive listings: 30 */
    size_t output_cap;          /* bytes kept of a command's stdout and of its stderr: 64 KiB */
    size_t read_max_bytes;      /* read_file refuses bigger files: 1,000,000 */
    size_t write_max_bytes;     /* create_file / edit_file content: 1,000,000 */
    size_t result_max_chars;    /* a tool message's content is cut here: 16000 */
    size_t list_max_items;      /* list_directory: 1000 */
    size_t search_max_matches;  /* search_codebase: 200 */
    elpis_confirm_fn confirm;   /* NULL: everything is allowed (--yes) */
    void *confirm_ud;
    elpis_poll_fn poll;         /* NULL: commands run to completion or timeout */
    void *poll_ud;
} elpis_ws;

/* Resolve `dir` (realpath; must be a directory) and set the defaults above. */
elpis_status elpis_ws_init(elpis_ws *w, const char *dir, elpis_error *err);

/* A workspace path -> an absolute path proven inside the workspace.
 * Refused: empty paths, any ".." component, absolute paths outside the root,
 * and paths whose existing part resolves (through symlinks) outside it.
 * must_exist: the path must exist (out = its realpath). Otherwise the
 * deepest existing ancestor must be a directory inside the root and out =
 * that ancestor's realpath + the rest; a dangling symlink is refused. */
elpis_status elpis_ws_resolve(const elpis_ws *w, const char *path, bool must_exist, char out[PATH_MAX], elpis_error *err);

/* The original's dangerous-command blocklist (spec §5.5), matched on the
 * command with runs of blanks collapsed. Returns the matched rule or NULL. */
const char *elpis_ws_bash_blocked(const char *cmd);

/* Run tool `name` with `args_json`. Returns the original's envelope
 * {"tool_call_id","success","result"|"error","duration_ms"} (never NULL
 * unless out of memory) and sets *outcome. Unknown argument names are an
 * error (the original's pydantic models forbid extras). */
json_t *elpis_ws_run(elpis_ws *w, const char *name, const char *args_json, const char *call_id,
                     elpis_tool_outcome *outcome);

/* The six tools as an OpenAI `tools` array (a new reference). */
json_t *elpis_ws_tools_json(void);

/* One line for the activity list: "Reading src/a.c", "$ make", ... (args
 * capped at 40 characters), written into buf. */
void elpis_ws_describe(const char *name, const char *args_json, char *buf, size_t n);

/* ---- HTTP --------------------------------------------------------------------------------- */

typedef struct elpis_client {
    char *base;          /* "http://host:port", no trailing slash */
    char *api_key;       /* sent as Authorization: Bearer; NULL: none */
    char session[48];    /* X-Session-Id of the conversation */
    void *curl;          /* CURL *, reused so the connection is kept alive */
    void *multi;         /* CURLM * for the interruptible stream */
    long timeout_ms;     /* short requests: 10 s */
} elpis_client;

/* curl_global_init happens here once. A fresh session id is drawn. */
elpis_status elpis_client_init(elpis_client *c, const char *base, const char *api_key, elpis_error *err);
void elpis_client_free(elpis_client *c);
void elpis_client_new_session(elpis_client *c);

/* A short request: body (may be NULL) sent as JSON; *out gets the parsed
 * JSON answer when it is JSON (else NULL); *status the HTTP status.
 * ELPIS_EIO when the server cannot be reached. Non-2xx is not an error here. */
elpis_status elpis_client_request(elpis_client *c, const char *method, const char *path, const json_t *body,
                                  long *status, json_t **out, elpis_error *err);

/* POST a streaming chat request; the response goes through elpis_reply.
 * poll is asked every 50 ms (and whenever poll_fd, if >= 0, is readable):
 * non-zero aborts the transfer and the call returns ELPIS_ECANCELLED.
 * A non-200 answer: ELPIS_EIO with the server's error message. */
elpis_status elpis_client_stream(elpis_client *c, const char *path, const json_t *body, elpis_reply *reply,
                                 int poll_fd, elpis_poll_fn poll, void *ud, elpis_error *err);

/* ---- the agent: one user turn -------------------------------------------------------------- */

typedef enum elpis_tool_state { ELPIS_TOOL_RUNNING, ELPIS_TOOL_DONE } elpis_tool_state;

/* What a front end implements. Any member may be NULL. */
typedef struct elpis_agent_ui {
    void (*reply_begin)(void *ud);                                  /* an assistant reply starts streaming */
    void (*text)(void *ud, bool thought, const char *t, size_t n);  /* streamed answer / thought text */
    void (*reply_end)(void *ud, const char *note);                  /* note: NULL, "[interrupted]", an error */
    void (*tool)(void *ud, const elpis_tool_call *c, elpis_tool_state st, elpis_tool_outcome o, const char *summary);
    void (*emotion)(void *ud, double valence, double arousal, const char *quadrant);
    elpis_confirm_fn confirm;
    elpis_poll_fn poll;   /* non-zero: interrupt the reply or the command */
    int poll_fd;          /* woken on input (-1: none) */
    void *ud;
} elpis_agent_ui;

typedef struct elpis_agent {
    elpis_client *client;
    elpis_ws *ws;              /* NULL: no tools offered */
    json_t *messages;          /* the conversation (OpenAI messages) */
    json_t *params;            /* extra request fields (max_tokens, temperature, ...) */
    char *system;              /* optional system prompt (first message), NULL: none */
    int max_iterations;        /* requests per user turn: 10 */
    bool emotion_route;        /* POST /v1/psyche/emotion answers; cleared on 404 */
    int n_tool_calls;          /* statistics for /status */
    int n_replies;
} elpis_agent;

elpis_status elpis_agent_init(elpis_agent *a, elpis_client *c, elpis_ws *ws, elpis_error *err);
void elpis_agent_free(elpis_agent *a);
void elpis_agent_clear(elpis_agent *a);   /* forget the conversation (keeps the system prompt) */

/* Send one user message and run the tool loop. ELPIS_ECANCELLED when the
 * user interrupted (the partial reply is kept, marked "[interrupted]");
 * ELPIS_EIO when the server failed: what came is kept, marked "[error]",
 * and if nothing came at all the user message is dropped again;
 * ELPIS_ERANGE after max_iterations requests. */
elpis_status elpis_agent_send(elpis_agent *a, const char *text, const elpis_agent_ui *ui, elpis_error *err);

/* Run the tool calls of one reply, appending tool messages to the
 * conversation (exposed for tests: a fake reply's calls run for real). */
void elpis_agent_run_tools(elpis_agent *a, const elpis_tool_calls *calls, const elpis_agent_ui *ui);

/* POST /v1/psyche/emotion {event_type, intensity}; quietly disables itself
 * when the server has no such route. */
void elpis_agent_emotion_event(elpis_agent *a, const char *event, double intensity, const elpis_agent_ui *ui);

/* ---- the application: state shared by the front ends and the commands ------------------------- */

typedef struct elpis_chat_app {
    elpis_client client;
    elpis_ws ws;
    elpis_agent agent;
    bool tools;                      /* tools offered to the model (--no-tools: false) */
    bool yes;                        /* --yes: no confirmation prompts */
    bool show_thoughts;              /* /thoughts on|off */
    const char *model_name;          /* from GET /v1/models, for /status */
    bool in_process;                 /* -m: the server runs inside this process */
    volatile sig_atomic_t *sigint;   /* SIGINTs received (the front end compares with what it saw) */
    volatile sig_atomic_t *sigterm;  /* non-zero: quit */
    bool has_emotion;                /* the last known emotional state */
    double valence, arousal;
    char quadrant[24], trend[24];
    bool busy;                       /* a turn is running */
    double dream_delay_s;            /* idle seconds before the client dreams (--dream-delay); 0: never */
    sig_atomic_t dream_seen_int;     /* *sigint when the running /dream began */
} elpis_chat_app;

/* Record the last known emotional state (a reply's echo or a poll). */
void elpis_chat_set_emotion(elpis_chat_app *app, double valence, double arousal, const char *quadrant);

/* What a command prints: kind is "info", "error", "thought" (dreams) or
 * "emotion"; text may span lines. */
typedef void (*elpis_say_fn)(void *ud, const char *kind, const char *text);

typedef enum elpis_cmd_result {
    ELPIS_CMD_NOT_A_COMMAND,   /* the line is a message for the model */
    ELPIS_CMD_DONE,
    ELPIS_CMD_QUIT,
    ELPIS_CMD_CLEARED,         /* the conversation was cleared: clear the view */
    ELPIS_CMD_THOUGHTS,        /* show_thoughts changed */
} elpis_cmd_result;

/* Run `line` if it is a slash command (/help /quit /clear /status /emotion
 * /thoughts /memory /remember /dream, with the original's aliases). */
elpis_cmd_result elpis_chat_command(elpis_chat_app *app, const char *line, elpis_say_fn say, void *ud);

/* Dream now: POST /v1/psyche/dream as a stream (src/chat/dream.c). on_text
 * gets the dream's text as it arrives; poll works as in elpis_client_stream
 * (non-zero aborts: ELPIS_ECANCELLED, and the server cancels the dream);
 * the whole text is appended to *text (may be NULL). A server without the
 * route or one that cancelled the dream: ELPIS_EIO with its message. */
elpis_status elpis_chat_dream(elpis_chat_app *app, elpis_text_fn on_text, elpis_poll_fn poll, int poll_fd, void *ud,
                              elpis_buf *text, elpis_error *err);

/* GET /v1/psyche/emotion (and /v1/emotion for the trend) into app; false if
 * the server has no emotional state. */
bool elpis_chat_refresh_emotion(elpis_chat_app *app);

/* "[####|-----]" style bar of v in [lo, hi] over `cells` cells (ASCII). */
void elpis_chat_bar(double v, double lo, double hi, int cells, char *buf, size_t n);

/* The front ends. Both return a CLI exit code. */
int elpis_chat_run_plain(elpis_chat_app *app);
int elpis_chat_run_tui(elpis_chat_app *app);

#endif
