/* psyche.c -- configure and open the emotion state + memory store pair
 * (see psyche.h for the design: two connections, an embedder of its own).
 *
 * Open order, each step undone by elpis_psyche_close (which copes with a
 * partial open): resolve the data directory, emotion connection and state,
 * steering vectors (they need the model's shape), embedding model and
 * embedder, memory connection and store. The memory store is last because
 * loading its vector cache is the slowest step; a bad vector file should
 * fail before it.
 */
#include "elpis/psyche.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* ---- configuration ------------------------------------------------------------------ */

void elpis_psyche_config_init(elpis_psyche_config *c) {
    memset(c, 0, sizeof *c);
    elpis_emotion_config_default(&c->emotion);
    c->memory = elpis_memory_default_config();
}

void elpis_psyche_config_free(elpis_psyche_config *c) {
    free(c->data_dir);
    free(c->embedding_model);
    c->data_dir = c->embedding_model = NULL;
}

bool elpis_psyche_section(const char *section) {
    return section && (!strcmp(section, "emotion") || !strcmp(section, "memory"));
}

elpis_status elpis_psyche_config_set(elpis_psyche_config *c, const char *section, const char *key, const char *value,
                                     const char *source, elpis_error *err) {
    const char *src = source ? source : "configuration";
    if (section && !strcmp(section, "emotion")) return elpis_emotion_config_set(&c->emotion, key, value, src, err);
    if (!section || strcmp(section, "memory"))
        return elpis_fail(err, ELPIS_EINVAL, "%s: unknown section [%s]", src, section ? section : "");
    elpis_error e = { 0 };
    if (elpis_memory_config_set(&c->memory, key, value, &e) == ELPIS_OK) return ELPIS_OK;
    /* the memory module does not know where the value came from: say it */
    return elpis_fail(err, e.code, "%s: %s", src, e.msg);
}

/* "DECAY_RATE" -> "decay_rate" into buf; false when it does not fit. */
static bool lower_key(const char *s, size_t n, char *buf, size_t cap) {
    if (n == 0 || n >= cap) return false;
    for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)s[i]);
    buf[n] = 0;
    return true;
}

elpis_status elpis_psyche_config_env(elpis_psyche_config *c, elpis_error *err) {
    static const struct { const char *prefix, *section; } P[] = {
        { "ELPIS_EMOTION__", "emotion" }, { "ELPIS_MEMORY__", "memory" },
    };
    for (char **e = environ; e && *e; e++) {
        for (size_t i = 0; i < ELPIS_ARRAY_LEN(P); i++) {
            size_t pn = strlen(P[i].prefix);
            const char *eq = strchr(*e, '=');
            if (!eq || strncmp(*e, P[i].prefix, pn) || eq < *e + pn) continue;
            char name[160], key[128];
            snprintf(name, sizeof name, "%.*s", (int)(eq - *e), *e);
            if (!lower_key(*e + pn, (size_t)(eq - *e) - pn, key, sizeof key))
                return elpis_fail(err, ELPIS_EINVAL, "%s: no key after the prefix, or a key that is too long", name);
            elpis_status st = elpis_psyche_config_set(c, P[i].section, key, eq + 1, name, err);
            if (st != ELPIS_OK) return st;
        }
    }
    return ELPIS_OK;
}

/* One INI line; *section follows the [headers]. Sections of others are skipped. */
static elpis_status ini_line(elpis_psyche_config *c, char *line, char *section, size_t cap, const char *src,
                             elpis_error *err) {
    char *key, *val;
    elpis_status st = elpis_ini_line(line, section, cap, src, &key, &val, err);
    if (st != ELPIS_OK || !key) return st;
    if (!elpis_psyche_section(section)) return ELPIS_OK;
    return elpis_psyche_config_set(c, section, key, val, src, err);
}

elpis_status elpis_psyche_config_file(elpis_psyche_config *c, const char *path, elpis_error *err) {
    char *text = NULL, section[64] = "", src[512];
    size_t len = 0;
    elpis_status st = elpis_read_file(path, 1 << 20, &text, &len, err);
    int lineno = 0;
    for (char *line = text, *next; st == ELPIS_OK && line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        snprintf(src, sizeof src, "%s:%d", path, ++lineno);
        st = ini_line(c, line, section, sizeof section, src, err);
    }
    free(text);
    return st;
}

elpis_status elpis_psyche_config_validate(const elpis_psyche_config *c, elpis_error *err) {
    elpis_status st = elpis_emotion_config_validate(&c->emotion, err);
    return st != ELPIS_OK ? st : elpis_memory_config_validate(&c->memory, err);
}

/* ---- open and close ---------------------------------------------------------------------- */

static elpis_status open_db(elpis_db **out, const char *dir, elpis_error *err) {
    if (!strcmp(dir, ELPIS_PSYCHE_IN_MEMORY)) return elpis_db_open_file(out, ":memory:", err);
    return elpis_db_open(out, dir, err);
}

static bool any_vector(const elpis_emotion_config *ec) {
    for (int q = 0; q < ELPIS_QUADRANT_COUNT; q++)
        if (ec->vectors[q][0]) return true;
    return false;
}

static elpis_status resolve_dir(elpis_psyche *p, const elpis_psyche_config *c, elpis_error *err) {
    char buf[PATH_MAX];
    const char *dir = c->data_dir ? c->data_dir : elpis_default_data_dir(buf, sizeof buf);
    if (!dir) return elpis_fail(err, ELPIS_EINVAL, "no data directory: pass --data-dir DIR or set XDG_DATA_HOME or HOME");
    if (!(p->data_dir = strdup(dir))) return elpis_fail(err, ELPIS_ENOMEM, "data dir");
    return ELPIS_OK;
}

static elpis_status open_embedder(elpis_psyche *p, const elpis_psyche_config *c, const elpis_model *m,
                                  int32_t n_threads, elpis_error *err) {
    elpis_status st;
    if (c->embedding_model) {
        if ((st = elpis_model_load(&p->embed_model, c->embedding_model, err)) != ELPIS_OK) return st;
        m = p->embed_model;
    }
    return elpis_embedder_new(&p->embedder, m, n_threads, err);
}

elpis_status elpis_psyche_open(elpis_psyche **out, const elpis_psyche_config *c, const elpis_model *m,
                               int32_t n_threads, elpis_error *err) {
    elpis_status st;
    elpis_psyche *p = calloc(1, sizeof *p);
    if (!p) return elpis_fail(err, ELPIS_ENOMEM, "psyche");
    if ((st = elpis_psyche_config_validate(c, err)) != ELPIS_OK) goto fail;
    if ((st = resolve_dir(p, c, err)) != ELPIS_OK) goto fail;
    if ((st = open_db(&p->emotion_db, p->data_dir, err)) != ELPIS_OK) goto fail;
    if ((st = elpis_emotion_new(&p->emotion, &c->emotion, p->emotion_db, elpis_emotion_now(), err)) != ELPIS_OK)
        goto fail;
    if (any_vector(&c->emotion) &&
        (st = elpis_emotion_vectors_load(&p->vectors, &c->emotion, &m->hp, err)) != ELPIS_OK)
        goto fail;
    if ((st = open_embedder(p, c, m, n_threads, err)) != ELPIS_OK) goto fail;
    if ((st = open_db(&p->memory_db, p->data_dir, err)) != ELPIS_OK) goto fail;
    if ((st = elpis_memory_store_open(&p->memory, p->memory_db, &c->memory, p->embedder, err)) != ELPIS_OK) goto fail;
    *out = p;
    return ELPIS_OK;
fail:
    elpis_psyche_close(p);
    return st;
}

void elpis_psyche_close(elpis_psyche *p) {
    if (!p) return;
    elpis_memory_store_close(p->memory);   /* before its embedder and connection */
    elpis_db_close(p->memory_db);
    elpis_embedder_free(p->embedder);
    elpis_model_free(p->embed_model);
    elpis_emotion_vectors_free(p->vectors);
    elpis_emotion_free(p->emotion);        /* before its connection */
    elpis_db_close(p->emotion_db);
    free(p->data_dir);
    free(p);
}

float *elpis_psyche_steering(const elpis_psyche *p, const elpis_emotion_state *s, bool *oom) {
    *oom = false;
    if (!p->vectors || !elpis_emotion_config_steering(elpis_emotion_config_of(p->emotion))) return NULL;
    size_t n = (size_t)p->vectors->n_layer * (size_t)p->vectors->n_embd;
    float *v = malloc(n * sizeof *v);
    if (!v) {
        *oom = true;
        return NULL;
    }
    if (elpis_emotion_steering(p->vectors, s, elpis_emotion_config_of(p->emotion), v)) return v;
    free(v);
    return NULL;
}
