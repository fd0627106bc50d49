/* ws_internal.h -- what the tool files (ws.c, ws_files.c, ws_search.c,
 * bash.c) share: the tool table's types and small argument helpers. */
#ifndef ELPIS_WS_INTERNAL_H
#define ELPIS_WS_INTERNAL_H

#include "chat_internal.h"

#include <stdarg.h>

typedef enum ws_arg_type { WS_STR, WS_INT, WS_BOOL } ws_arg_type;

typedef struct ws_arg {
    const char *name;
    ws_arg_type type;
    bool required;
    const char *desc;
} ws_arg;

/* A tool's failure: the outcome (FAILED: it ran; ERROR: it could not) and a message. */
typedef struct ws_err {
    elpis_tool_outcome outcome;
    char msg[512];
} ws_err;

/* A handler: the result object, or NULL with *e filled. Arguments are
 * already checked against the table (names and types). */
typedef json_t *(*ws_fn)(elpis_ws *w, json_t *args, ws_err *e);

typedef struct ws_tool {
    const char *name, *desc;
    bool confirm;   /* ask the user first (unless --yes) */
    const ws_arg *args;
    size_t n_args;
    ws_fn fn;
} ws_tool;

json_t *ws__fail(ws_err *e, elpis_tool_outcome o, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *ws__str(json_t *a, const char *k, const char *def);
long long ws__int(json_t *a, const char *k, long long def);
bool ws__bool(json_t *a, const char *k, bool def);
bool ws__inside(const elpis_ws *w, const char *real);
const char *ws__rel(const elpis_ws *w, const char *real);   /* "." for the root */

json_t *ws__read_file(elpis_ws *w, json_t *a, ws_err *e);
json_t *ws__create_file(elpis_ws *w, json_t *a, ws_err *e);
json_t *ws__edit_file(elpis_ws *w, json_t *a, ws_err *e);
json_t *ws__list_directory(elpis_ws *w, json_t *a, ws_err *e);
json_t *ws__search_codebase(elpis_ws *w, json_t *a, ws_err *e);
json_t *ws__execute_bash(elpis_ws *w, json_t *a, ws_err *e);

#endif
