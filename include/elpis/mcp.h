/* mcp.h -- `elpis mcp`: a Model Context Protocol server over stdio.
 *
 * WIRE FORMAT
 * -----------
 *   1. JSON-RPC 2.0, UTF-8, one message per line ('\n'; a trailing '\r' is
 *      dropped). No batches (removed from MCP in 2025-06-18). Blank lines are
 *      ignored. A line longer than max_line bytes is discarded up to the next
 *      newline and answered with -32600.
 *   2. The output carries only protocol messages, one per line, written whole
 *      by one writer thread. Logs go to stderr (or the --log-file).
 *   3. Lifecycle: `initialize` (protocol versions 2025-06-18 and 2025-11-25;
 *      the client's is echoed when supported, else the latest), then
 *      `notifications/initialized`. `ping` works at any time. An unknown
 *      method gets -32601 at once, before or after initialisation.
 *   4. Methods: tools/list, tools/call, resources/list, resources/read,
 *      resources/templates/list; notifications/cancelled (a running
 *      generation stops within one decode step and gets no response).
 *   5. End of input (or elpis_mcp_stop) cancels in-flight work and returns.
 *
 * THREADS (see src/mcp/mcp_internal.h for the invariants)
 * -------
 *   reader      elpis_mcp_serve's caller: splits lines, parses, dispatches.
 *               Answers at once or starts a scheduler request; never waits
 *               for generation.
 *   completion  woken by the scheduler's notify callback: moves generated
 *               text into jobs, sends progress, answers finished generations,
 *               expires idle streams.
 *   writer      the only thread that writes to the output fd.
 *   scheduler   (not ours) computes; only signals the completion thread.
 */
#ifndef ELPIS_MCP_H
#define ELPIS_MCP_H

#include "elpis/base.h"
#include "elpis/sched.h"

struct elpis_emotion;
struct elpis_emotion_vectors;
struct elpis_memory_store;

typedef struct elpis_mcp_config {
    size_t  max_line;             /* bytes of one input message (default 4 MiB) */
    int32_t max_streams;          /* open generate_stream_* streams (default 100) */
    double  stream_ttl_s;         /* a stream unread this long is dropped (default 600) */
    double  progress_interval_ms; /* min gap between progress notifications of one call (default 50) */
    int32_t default_max_tokens;   /* max_tokens when a call gives none (default 2048) */
    double  temperature, top_p;   /* base sampling values before emotional modulation (0.7, 0.9) */
    const char *model_path;       /* reported by get_capabilities; may be NULL */
    const char *server_version;   /* serverInfo.version; may be NULL */
} elpis_mcp_config;

void elpis_mcp_config_default(elpis_mcp_config *c);

typedef struct elpis_mcp elpis_mcp;

/* A server over `sched` (NULL: no model; generation tools then fail with
 * isError) and `emotion` (not NULL; shared, thread safe). Neither is owned.
 * The config is copied (strings too). */
elpis_status elpis_mcp_new(elpis_mcp **out, const elpis_mcp_config *cfg, elpis_sched *sched,
                           struct elpis_emotion *emotion, elpis_error *err);

/* Optional parts; set them before elpis_mcp_serve. Neither is owned.
 * set_memory adds the eight memory tools of the original's memory server
 * (store_memory, search_memories, ...; src/mcp/mem.c) to tools/list.
 * set_steering makes generations carry the emotion steering blend of the
 * state they start in (NULL: none); the vectors must fit the model. */
elpis_status elpis_mcp_set_memory(elpis_mcp *m, struct elpis_memory_store *store, elpis_error *err);
void elpis_mcp_set_steering(elpis_mcp *m, const struct elpis_emotion_vectors *vectors);

/* Read messages from in_fd and write replies to out_fd until end of input or
 * elpis_mcp_stop(). On return every in-flight request has been cancelled,
 * the completion thread has stopped and the output is flushed (as far as the
 * peer reads it). ELPIS_EIO when reading fails; bad input is never an error.
 * Call once per server. */
elpis_status elpis_mcp_serve(elpis_mcp *m, int in_fd, int out_fd, elpis_error *err);

/* Make elpis_mcp_serve return soon. Async-signal-safe (one write(2)). */
void elpis_mcp_stop(elpis_mcp *m);

/* Free the server. The scheduler must already be freed (elpis_sched_free),
 * because requests call back into the server until the scheduler is gone.
 * NULL is fine. */
void elpis_mcp_free(elpis_mcp *m);

#endif
