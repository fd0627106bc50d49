/* writer.c -- the single writer of the protocol output.
 *
 * Messages are serialised by the thread that sends them (so the writer does
 * nothing but write(2)) and queued as finished lines; the writer thread pops
 * them in order and writes each whole, retrying short writes, so two
 * messages never interleave. Responses can come from the reader and the
 * completion thread in any order; each is one line.
 *
 * Back-pressure: when the peer reads slowly the queue grows. Above
 * `high_water` bytes, the reader (MCP_SEND_WAIT) waits, which stops it
 * reading more input, and progress notifications (MCP_SEND_OPTIONAL) are
 * dropped; responses (MCP_SEND_MUST) are always queued, and their number is
 * bounded by the calls in flight. A write error (EPIPE: the peer is gone)
 * marks the writer dead and everything after is dropped.
 */
#include "mcp_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct mcp_out_line {
    mcp_out_line *next;
    size_t len;
    char data[];       /* the message and its '\n' */
};

static void *writer_main(void *arg) {
    mcp_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->closing) pthread_cond_wait(&w->cv, &w->mu);
        mcp_out_line *l = w->head;
        if (!l) break;   /* closing and drained */
        w->head = l->next;
        if (!w->head) w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        bool ok = !w->dead && elpis_write_all(w->fd, l->data, l->len);
        int e = errno;
        pthread_mutex_lock(&w->mu);
        if (!ok && !w->dead) {
            w->dead = true;
            elpis_log(ELPIS_LOG_WARN, "mcp event=output_closed error=\"%s\"", strerror(e));
        }
        if (ok) w->n_written++;
        else w->n_dropped++;
        w->queued_bytes -= l->len;
        pthread_cond_broadcast(&w->room);
        free(l);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

elpis_status mcp_writer_start(mcp_writer *w, int fd, size_t high_water, elpis_error *err) {
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->high_water = high_water;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_cond_init(&w->room, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->room);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return elpis_fail(err, ELPIS_ENOMEM, "mcp: cannot start the writer thread");
    }
    w->started = true;
    return ELPIS_OK;
}

static mcp_out_line *make_line(json_t *msg) {
    char *text = mcp_dump(msg);
    json_decref(msg);
    if (!text) return NULL;
    size_t n = strlen(text);
    mcp_out_line *l = malloc(sizeof *l + n + 1);
    if (l) {
        memcpy(l->data, text, n);
        l->data[n] = '\n';
        l->len = n + 1;
        l->next = NULL;
    }
    free(text);
    return l;
}

bool mcp_writer_send(mcp_writer *w, json_t *msg, mcp_send_mode mode) {
    mcp_out_line *l = msg ? make_line(msg) : NULL;
    if (!l) {
        elpis_log(ELPIS_LOG_ERROR, "mcp event=send_failed reason=out_of_memory");
        return false;
    }
    pthread_mutex_lock(&w->mu);
    if (mode == MCP_SEND_WAIT)
        while (w->queued_bytes > w->high_water && !w->dead && !w->closing) pthread_cond_wait(&w->room, &w->mu);
    bool drop = w->dead || (mode == MCP_SEND_OPTIONAL && w->queued_bytes > w->high_water);
    if (!drop) {
        if (w->tail) w->tail->next = l;
        else w->head = l;
        w->tail = l;
        w->queued_bytes += l->len;
        pthread_cond_signal(&w->cv);
    } else {
        w->n_dropped++;
    }
    pthread_mutex_unlock(&w->mu);
    if (drop) free(l);
    return !drop;
}

void mcp_writer_stop(mcp_writer *w) {
    if (!w->started) return;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    pthread_cond_broadcast(&w->cv);
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->started = false;
    pthread_cond_destroy(&w->room);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}
