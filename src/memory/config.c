/* config.c -- the memory configuration: defaults, validation, and setting a
 * field by name (for TOML `[memory]` keys and ELPIS_MEMORY__KEY overrides).
 *
 * The field table below is the single list of keys; a key not in it is an
 * error naming the key, so a typo in a config file is never silently ignored.
 */
#include "elpis/memory.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

elpis_memory_config elpis_memory_default_config(void) {
    return (elpis_memory_config){
        .max_content_bytes = 65536,
        .summary_chars = 500,
        .emotion_weight = 0.3,
        .candidate_multiplier = 2,
        .vector_weight = 0.5,
        .bm25_weight = 0.5,
        .rrf_k = 60,
        .relevance_weight = 0.5,
        .recency_weight = 0.3,
        .importance_weight = 0.2,
        .recency_decay_rate = 0.995,
        .max_recency_hours = 720,
        .max_content_length = 500,
        /* The original multiplied by len/500 outright (length_weight 1). */
        .length_weight = 0.2,
        .semantic_type_factor = 1.2,
        .assistant_role_factor = 1.1,
        .user_role_factor = 0.9,
        .use_angular_similarity = false,
        .importance_threshold = 0.6,
        .similarity_threshold = 0.85,
        .min_age_hours = 1,
        .max_batch_size = 50,
        .load_limit = 100,
        .buffer_threshold = 100,
        /* The original's min_cluster_size=2 was never applied, so singletons
         * could be promoted; 1 keeps that behaviour while wiring the knob. */
        .min_cluster_size = 1,
    };
}

typedef enum { F_DOUBLE, F_INT, F_SIZE, F_BOOL } field_kind;

typedef struct field {
    const char *name;
    field_kind kind;
    size_t off;
    double min, max;
} field;

#define FD(name, lo, hi) { #name, F_DOUBLE, offsetof(elpis_memory_config, name), lo, hi }
#define FI(name, lo, hi) { #name, F_INT, offsetof(elpis_memory_config, name), lo, hi }
#define FS(name, lo, hi) { #name, F_SIZE, offsetof(elpis_memory_config, name), lo, hi }
#define FB(name) { #name, F_BOOL, offsetof(elpis_memory_config, name), 0, 1 }

static const field FIELDS[] = {
    FS(max_content_bytes, 1, 64.0 * 1024 * 1024),
    FS(summary_chars, 1, 1e6),
    FD(emotion_weight, 0, 1),
    FI(candidate_multiplier, 1, 100),
    FD(vector_weight, 0, 1e3),
    FD(bm25_weight, 0, 1e3),
    FD(rrf_k, 0, 1e6),
    FD(relevance_weight, 0, 1e3),
    FD(recency_weight, 0, 1e3),
    FD(importance_weight, 0, 1e3),
    FD(recency_decay_rate, 0, 1),
    FD(max_recency_hours, 0, 1e7),
    FD(max_content_length, 1, 1e9),
    FD(length_weight, 0, 1),
    FD(semantic_type_factor, 0, 10),
    FD(assistant_role_factor, 0, 10),
    FD(user_role_factor, 0, 10),
    FB(use_angular_similarity),
    FD(importance_threshold, 0, 1),
    FD(similarity_threshold, -1, 1),
    FD(min_age_hours, 0, 1e7),
    FI(max_batch_size, 1, 100000),
    FI(load_limit, 1, 1000000),
    FI(buffer_threshold, 1, 100000000),
    FI(min_cluster_size, 1, 100000),
};

const char *const *elpis_memory_config_keys(void) {
    static const char *names[ELPIS_ARRAY_LEN(FIELDS) + 1];
    if (!names[0])
        for (size_t i = 0; i < ELPIS_ARRAY_LEN(FIELDS); i++) names[i] = FIELDS[i].name;
    return names;
}

static double field_value(const elpis_memory_config *c, const field *f) {
    const char *p = (const char *)c + f->off;
    switch (f->kind) {
    case F_DOUBLE: return *(const double *)p;
    case F_INT: return *(const int *)p;
    case F_SIZE: return (double)*(const size_t *)p;
    case F_BOOL: return *(const bool *)p;
    }
    return 0;
}

elpis_status elpis_memory_config_validate(const elpis_memory_config *c, elpis_error *err) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(FIELDS); i++) {
        double v = field_value(c, &FIELDS[i]);
        if (!isfinite(v) || v < FIELDS[i].min || v > FIELDS[i].max)
            return elpis_fail(err, ELPIS_EINVAL, "memory config: %s = %g is outside %g..%g", FIELDS[i].name, v,
                              FIELDS[i].min, FIELDS[i].max);
    }
    if (c->relevance_weight + c->recency_weight + c->importance_weight <= 0)
        return elpis_fail(err, ELPIS_EINVAL, "memory config: relevance, recency and importance weights are all 0");
    if (c->vector_weight + c->bm25_weight <= 0)
        return elpis_fail(err, ELPIS_EINVAL, "memory config: vector_weight and bm25_weight are both 0");
    return ELPIS_OK;
}

static bool parse_bool(const char *s, bool *out) {
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) {
        *out = true;
        return true;
    }
    if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) {
        *out = false;
        return true;
    }
    return false;
}

elpis_status elpis_memory_config_set(elpis_memory_config *c, const char *key, const char *value, elpis_error *err) {
    const field *f = NULL;
    for (size_t i = 0; key && i < ELPIS_ARRAY_LEN(FIELDS); i++)
        if (strcmp(key, FIELDS[i].name) == 0) f = &FIELDS[i];
    if (!f) return elpis_fail(err, ELPIS_EINVAL, "memory config: unknown key '%s'", key ? key : "");
    char *p = (char *)c + f->off;
    if (f->kind == F_BOOL) {
        if (!value || !parse_bool(value, (bool *)p))
            return elpis_fail(err, ELPIS_EINVAL, "memory config: %s: '%s' is not true/false", key, value ? value : "");
        return ELPIS_OK;
    }
    char *end;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || errno || end == value || *end || !isfinite(v) || v < f->min || v > f->max ||
        (f->kind != F_DOUBLE && v != floor(v)))
        return elpis_fail(err, ELPIS_EINVAL, "memory config: %s: '%s' is not a %s in %g..%g", key,
                          value ? value : "", f->kind == F_DOUBLE ? "number" : "whole number", f->min, f->max);
    switch (f->kind) {
    case F_DOUBLE: *(double *)p = v; break;
    case F_INT: *(int *)p = (int)v; break;
    case F_SIZE: *(size_t *)p = (size_t)v; break;
    case F_BOOL: break;
    }
    return ELPIS_OK;
}
