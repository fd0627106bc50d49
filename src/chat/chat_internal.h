/* chat_internal.h -- helpers shared by the files of src/chat (not an interface). */
#ifndef ELPIS_CHAT_INTERNAL_H
#define ELPIS_CHAT_INTERNAL_H

#include "elpis/chat_client.h"

/* "call_" + 12 random hex digits, NUL-terminated (18 bytes). */
void chat__call_id(char out[24]);

/* *s = *s + add[0..n) (malloc'd; *s may be NULL). false on OOM, *s untouched. */
bool chat__str_append(char **s, const char *add, size_t n);

/* Case-insensitive: does s[0..n) start with the NUL-terminated `pre`?
 * *partial is set when s ends before pre does but agrees so far. */
bool chat__starts_ci(const char *s, size_t n, const char *pre, bool *partial);

/* Write text as valid UTF-8: invalid bytes become U+FFFD (Python's
 * errors="replace"). Appends to out. */
elpis_status chat__utf8_clean(const char *s, size_t n, elpis_buf *out);

/* Run argv-less `sh -c cmd` in dir with a timeout and output caps; used by
 * execute_bash (bash.c). exit_code is -1 when killed; timed_out / aborted
 * tell why. stdout/stderr are appended (capped at cap bytes each; the
 * *_dropped counts say how much more there was). */
typedef struct chat__proc_result {
    elpis_buf out, err;
    size_t out_dropped, err_dropped;
    int exit_code;
    bool timed_out, aborted;
} chat__proc_result;

elpis_status chat__run_shell(const char *cmd, const char *dir, double timeout_s, size_t cap, elpis_poll_fn poll,
                             void *ud, chat__proc_result *r, elpis_error *err);
void chat__proc_result_free(chat__proc_result *r);

#endif
