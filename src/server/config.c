/* config.c -- `elpis serve` configuration: defaults, INI file, env, flags.
 *
 * One table (KEYS below) describes every setting once: its section and key
 * in the INI file, its flag, its type and its allowed range. The same setter
 * parses and validates a value whatever its source, so each value is checked
 * exactly once, when it is set, and an error always names the key, the value,
 * the allowed range and the source ("--port", "ELPIS_SERVER__PORT",
 * "serve.ini:12").
 *
 * Precedence (later wins): defaults < config file < environment < flags.
 * The environment name of a key is ELPIS_<SECTION>__<KEY> in upper case
 * (ELPIS_SERVER__PORT, ELPIS_MODEL__PATH); ELPIS_API_KEYS is also read, as a
 * comma-separated list. [emotion] and [memory] (and ELPIS_EMOTION__KEY,
 * ELPIS_MEMORY__KEY) go to the psyche's own setters (psyche.h), which check
 * them the same way; the relations between their keys are checked once all
 * sources are applied. Other sections belong to other modules and are
 * skipped; an unknown key inside a section of ours is an error (a typo
 * should not silently fall back to a default).
 */
#include "server_internal.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum cfg_type { CFG_STR, CFG_INT, CFG_BYTES, CFG_SECONDS, CFG_KEYS, CFG_NUM } cfg_type;

typedef struct cfg_key {
    const char *section, *key, *flag;
    cfg_type type;
    size_t off;
    double min, max;
    const char *help;
} cfg_key;

#define OFF(f) offsetof(elpis_server_config, f)
static const cfg_key KEYS[] = {
    { "server", "host", "host", CFG_STR, OFF(host), 0, 0, "address to listen on (default 127.0.0.1)" },
    { "server", "port", "port", CFG_INT, OFF(port), 0, 65535, "TCP port (default 8741; 0: any free port)" },
    { "server", "api_keys", "api-key", CFG_KEYS, OFF(api_keys), 0, 0, "API key(s), comma-separated" },
    { "server", "log_file", "log-file", CFG_STR, OFF(log_file), 0, 0, "event log (default logs/system.log)" },
    { "server", "parallel", "parallel", CFG_INT, OFF(parallel), 1, 256, "sequences generating at once" },
    { "server", "queue", "queue", CFG_INT, OFF(queue), 0, 100000, "requests waiting beyond --parallel (then 503)" },
    { "server", "mem_limit", "mem-limit", CFG_BYTES, OFF(mem_limit), 0, 1e15, "memory budget, e.g. 4G (0: MemAvailable)" },
    { "server", "body_limit", "body-limit", CFG_BYTES, OFF(body_limit), 1024, 1 << 30, "largest request body (default 1M)" },
    { "server", "ping_interval", "ping-interval", CFG_SECONDS, OFF(ping_interval_s), 0, 3600, "seconds of silence before ': ping' (0: off)" },
    { "server", "session_wait", "session-wait", CFG_SECONDS, OFF(session_wait_s), 0, 60, "seconds to wait for a superseded request" },
    { "server", "drain_timeout", "drain-timeout", CFG_SECONDS, OFF(drain_timeout_s), 0, 3600, "SIGTERM: seconds streams may take to end" },
    { "server", "stall_timeout", "stall-timeout", CFG_SECONDS, OFF(stall_timeout_s), 0, 3600, "cancel a client that stops reading (0: never)" },
    { "server", "max_connections", "max-connections", CFG_INT, OFF(max_connections), 4, 60000, "concurrent HTTP connections" },
    { "server", "data_dir", "data-dir", CFG_STR, OFF(psyche.data_dir), 0, 0, "emotion state and memories: DIR/elpis.db (default $XDG_DATA_HOME/elpis; :memory: keeps nothing)" },
    { "server", "consolidate_interval", "consolidate-interval", CFG_SECONDS, OFF(consolidate_interval_s), 0, 86400 * 7, "seconds between memory consolidation checks (0: never)" },
    { "server", "memory_context", "memory-context", CFG_INT, OFF(memory_context), 0, 1, "chat: inject relevant memories before the last user message (1, default; 0: off)" },
    { "server", "auto_store", "auto-store", CFG_INT, OFF(auto_store), 0, 1, "chat: store important exchanges and compacted messages (1, default; 0: off)" },
    { "server", "system_prompt", "system-prompt", CFG_STR, OFF(system_prompt), 0, 0, "chat: system prompt when the client sends none" },
    { "server", "dream_delay", "dream-delay", CFG_SECONDS, OFF(dream_delay_s), 0, 86400 * 7, "idle seconds before the server dreams (0: never; default 60 with --data-dir, else never)" },
    { "server", "dream_interval", "dream-interval", CFG_SECONDS, OFF(dream_interval_s), 0, 86400 * 7, "seconds between idle dreams (default 300)" },
    { "server", "upstream", "upstream", CFG_STR, OFF(upstream), 0, 0, "OpenAI-compatible base URL(s), comma-separated: generation goes there, not to the local engine" },
    { "server", "upstream_key", "upstream-key", CFG_STR, OFF(upstream_key), 0, 0, "bearer key for --upstream (never logged)" },
    { "server", "upstream_model", "upstream-model", CFG_STR, OFF(upstream_model), 0, 0, "model name sent to --upstream (default: the client's)" },
    { "server", "upstream_connect_timeout", "upstream-connect-timeout", CFG_SECONDS, OFF(upstream_connect_timeout_s), 0.1, 600, "seconds to connect to --upstream (then 504)" },
    { "server", "upstream_idle_timeout", "upstream-idle-timeout", CFG_SECONDS, OFF(upstream_idle_timeout_s), 0, 3600, "seconds without upstream data before 504 / an error event (0: never)" },
    { "model", "path", "model", CFG_STR, OFF(model_path), 0, 0, "GGUF model file (-m)" },
    { "model", "alias", "alias", CFG_STR, OFF(model_alias), 0, 0, "model id shown by /v1/models" },
    { "model", "ctx", "ctx", CFG_INT, OFF(ctx), 0, 1 << 20, "positions per sequence (0: model's, at most 4096)" },
    { "model", "threads", "threads", CFG_INT, OFF(threads), 0, 256, "compute threads (0: CPUs)" },
    { "model", "batch", "batch", CFG_INT, OFF(batch), 0, 65536, "max tokens per forward call (0: default)" },
    { "model", "prefill_chunk", "prefill-chunk", CFG_INT, OFF(prefill_chunk), 0, 65536, "prompt tokens per step (0: default)" },
    { "model", "temperature", "temperature", CFG_NUM, OFF(temperature), 0, 2, "base temperature before emotional modulation (default 0.7)" },
    { "model", "top_p", "top-p", CFG_NUM, OFF(top_p), 0, 1, "base top_p before emotional modulation (default 0.9)" },
    { "model", "embedding_model", "embedding-model", CFG_STR, OFF(psyche.embedding_model), 0, 0, "GGUF for memory embeddings (default: the model)" },
};
#define N_KEYS ((int)ELPIS_ARRAY_LEN(KEYS))

void elpis_server_config_init(elpis_server_config *c) {
    memset(c, 0, sizeof *c);
    c->host = strdup("127.0.0.1");
    c->port = ELPIS_SERVER_DEFAULT_PORT;
    c->log_file = strdup("logs/system.log");
    c->parallel = 4;
    c->queue = 16;
    c->body_limit = 1 << 20;
    c->ping_interval_s = 10;
    c->session_wait_s = 2;
    c->drain_timeout_s = 10;
    c->stall_timeout_s = 30;
    c->max_connections = 256;
    c->consolidate_interval_s = 300;   /* the original's consolidation check_interval */
    c->memory_context = 1;
    c->auto_store = 1;
    c->dream_delay_s = -1;             /* dream.c: 60 s with --data-dir, else off */
    c->dream_interval_s = 300;         /* the original's dream_interval_seconds */
    c->temperature = 0.7;
    c->top_p = 0.9;
    c->upstream_connect_timeout_s = 10;
    c->upstream_idle_timeout_s = 120;
    elpis_psyche_config_init(&c->psyche);
}

static void free_keys(elpis_server_config *c) {
    for (size_t i = 0; i < c->n_api_keys; i++) free(c->api_keys[i]);
    free(c->api_keys);
    c->api_keys = NULL;
    c->n_api_keys = 0;
}

void elpis_server_config_free(elpis_server_config *c) {
    free(c->host);
    free(c->log_file);
    free(c->model_path);
    free(c->model_alias);
    free(c->upstream);
    free(c->system_prompt);
    free(c->upstream_key);
    free(c->upstream_model);
    elpis_psyche_config_free(&c->psyche);
    free_keys(c);
    memset(c, 0, sizeof *c);
}

/* ---- value parsers ----------------------------------------------------------- */

static bool parse_i64(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

/* "1048576", "512K", "4G", "1.5GiB": binary multiples. */
static bool parse_bytes(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) return false;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end) return false;
    *out = floor(v * mul);
    return true;
}

static bool parse_seconds(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v)) return false;
    if (*end == 's' && end[1] == 0) end++;
    else if (!strcmp(end, "ms")) { v /= 1000; end += 2; }
    if (*end) return false;
    *out = v;
    return true;
}

static elpis_status set_keys(elpis_server_config *c, const char *v, elpis_error *err) {
    free_keys(c);
    size_t n = 1;
    for (const char *p = v; *p; p++) n += *p == ',';
    if (!(c->api_keys = calloc(n + 1, sizeof *c->api_keys))) return elpis_fail(err, ELPIS_ENOMEM, "api keys");
    for (const char *p = v; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) { p++; len--; }
        while (len && isspace((unsigned char)p[len - 1])) len--;
        if (len && !(c->api_keys[c->n_api_keys++] = strndup(p, len))) return elpis_fail(err, ELPIS_ENOMEM, "api keys");
        if (!e) break;
        p = e + 1;
    }
    return ELPIS_OK;
}

/* Parse, check and store one value. `src` says where it came from. */
static elpis_status set_value(elpis_server_config *c, const cfg_key *k, const char *v, const char *src, elpis_error *err) {
    void *field = (char *)c + k->off;
    long long i;
    double d;
    switch (k->type) {
    case CFG_STR: {
        if (!*v) return elpis_fail(err, ELPIS_EINVAL, "%s.%s: empty value (%s)", k->section, k->key, src);
        char *copy = strdup(v);
        if (!copy) return elpis_fail(err, ELPIS_ENOMEM, "config");
        free(*(char **)field);
        *(char **)field = copy;
        return ELPIS_OK;
    }
    case CFG_KEYS: return set_keys(c, v, err);
    case CFG_INT:
        if (!parse_i64(v, &i) || i < (long long)k->min || i > (long long)k->max)
            return elpis_fail(err, ELPIS_EINVAL, "%s.%s: '%s' is not an integer in %.0f..%.0f (%s)", k->section, k->key, v,
                              k->min, k->max, src);
        *(int32_t *)field = (int32_t)i;
        return ELPIS_OK;
    case CFG_BYTES:
        if (!parse_bytes(v, &d) || d < k->min || d > k->max)
            return elpis_fail(err, ELPIS_EINVAL, "%s.%s: '%s' is not a byte size in %.0f..%.0f (e.g. 512M, 4G) (%s)",
                              k->section, k->key, v, k->min, k->max, src);
        *(uint64_t *)field = (uint64_t)d;
        return ELPIS_OK;
    case CFG_SECONDS:
        if (!parse_seconds(v, &d) || d < k->min || d > k->max)
            return elpis_fail(err, ELPIS_EINVAL, "%s.%s: '%s' is not a number of seconds in %g..%g (%s)", k->section,
                              k->key, v, k->min, k->max, src);
        *(double *)field = d;
        return ELPIS_OK;
    case CFG_NUM: {
        char *end;
        d = strtod(v, &end);
        if (end == v || *end || !isfinite(d) || d < k->min || d > k->max)
            return elpis_fail(err, ELPIS_EINVAL, "%s.%s: '%s' is not a number in %g..%g (%s)", k->section, k->key, v,
                              k->min, k->max, src);
        *(double *)field = d;
        return ELPIS_OK;
    }
    }
    return ELPIS_OK;
}

static const cfg_key *find_key(const char *section, const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].key, key)) return &KEYS[i];
    return NULL;
}

/* ---- INI file ------------------------------------------------------------------ */

/* One line of the file; *section is updated by [headers]. */
static elpis_status ini_line(elpis_server_config *c, char *line, char *section, size_t sec_cap, const char *path,
                             int lineno, elpis_error *err) {
    char src[512];
    snprintf(src, sizeof src, "%s:%d", path, lineno);
    char *key, *val;
    elpis_status st = elpis_ini_line(line, section, sec_cap, src, &key, &val, err);
    if (st != ELPIS_OK || !key) return st;
    if (elpis_psyche_section(section)) return elpis_psyche_config_set(&c->psyche, section, key, val, src, err);
    if (strcmp(section, "server") && strcmp(section, "model")) return ELPIS_OK;   /* another module's section */
    const cfg_key *k = find_key(section, key);
    if (!k) return elpis_fail(err, ELPIS_EINVAL, "%s: unknown key %s.%s", src, section, key);
    return set_value(c, k, val, src, err);
}

static elpis_status load_file(elpis_server_config *c, const char *path, elpis_error *err) {
    char *text = NULL;
    size_t len = 0;
    elpis_status st = elpis_read_file(path, 1 << 20, &text, &len, err);
    if (st != ELPIS_OK) return st;
    char section[64] = "";
    int lineno = 0;
    for (char *line = text, *next; line && st == ELPIS_OK; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        st = ini_line(c, line, section, sizeof section, path, ++lineno, err);
    }
    free(text);
    return st;
}

/* ---- environment ------------------------------------------------------------------ */

static elpis_status load_env(elpis_server_config *c, elpis_error *err) {
    const char *keys = getenv("ELPIS_API_KEYS");
    if (keys && *keys && set_keys(c, keys, err) != ELPIS_OK) return ELPIS_ENOMEM;
    for (int i = 0; i < N_KEYS; i++) {
        char name[96];
        int n = snprintf(name, sizeof name, "ELPIS_%s__%s", KEYS[i].section, KEYS[i].key);
        for (int j = 0; j < n; j++) name[j] = (char)toupper((unsigned char)name[j]);
        const char *v = getenv(name);
        if (!v || !*v) continue;
        elpis_status st = set_value(c, &KEYS[i], v, name, err);
        if (st != ELPIS_OK) return st;
    }
    return elpis_psyche_config_env(&c->psyche, err);
}

/* ---- flags -------------------------------------------------------------------------- */

enum { OPT_CONFIG = 1000, OPT_HELP, OPT_KEY0 = 2000 };

void elpis_server_config_usage(void *file) {
    FILE *f = file;
    fprintf(f, "usage: elpis serve -m MODEL [options]\n\noptions (config key in brackets; env ELPIS_SECTION__KEY):\n");
    fprintf(f, "  %-22s %s\n", "--config FILE", "INI file with [server], [model], [emotion] and [memory] sections");
    for (int i = 0; i < N_KEYS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s %s", KEYS[i].flag, KEYS[i].type == CFG_STR ? "S" : KEYS[i].type == CFG_KEYS ? "K" : "N");
        fprintf(f, "  %-22s %s [%s.%s]\n", flag, KEYS[i].help, KEYS[i].section, KEYS[i].key);
    }
    fprintf(f, "\nAPI keys also come from ELPIS_API_KEYS (comma-separated). Without a key the server\n"
               "only listens on loopback. /health is always open; everything else needs the key.\n"
               "[emotion] and [memory] keys (e.g. decay_rate, steering_strength, vectors_excited,\n"
               "max_content_bytes) also come from ELPIS_EMOTION__KEY and ELPIS_MEMORY__KEY.\n");
}

typedef struct flag_val { int key; const char *val; } flag_val;

/* Collect the flags first (so --config can be applied before them). */
static elpis_status scan_flags(int argc, char **argv, flag_val *vals, int *n_vals, const char **config, bool *help,
                               elpis_error *err) {
    struct option opts[N_KEYS + 3];
    for (int i = 0; i < N_KEYS; i++) opts[i] = (struct option){ KEYS[i].flag, required_argument, NULL, OPT_KEY0 + i };
    opts[N_KEYS] = (struct option){ "config", required_argument, NULL, OPT_CONFIG };
    opts[N_KEYS + 1] = (struct option){ "help", no_argument, NULL, OPT_HELP };
    opts[N_KEYS + 2] = (struct option){ 0, 0, 0, 0 };
    int c;
    optind = 0;   /* glibc: full re-initialisation */
    opterr = 0;
    *n_vals = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        if (c == 'm') c = OPT_KEY0 + (int)(find_key("model", "path") - KEYS);
        if (c == 'h' || c == OPT_HELP) { *help = true; continue; }
        if (c == OPT_CONFIG) { *config = optarg; continue; }
        if (c >= OPT_KEY0 && c < OPT_KEY0 + N_KEYS) { vals[(*n_vals)++] = (flag_val){ c - OPT_KEY0, optarg }; continue; }
        if (c == ':') return elpis_fail(err, ELPIS_EINVAL, "%s needs a value", argv[optind - 1]);
        return elpis_fail(err, ELPIS_EINVAL, "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return elpis_fail(err, ELPIS_EINVAL, "unexpected argument '%s'", argv[optind]);
    return ELPIS_OK;
}

elpis_status elpis_server_config_load(elpis_server_config *c, int argc, char **argv, bool *help, elpis_error *err) {
    flag_val *vals = calloc((size_t)argc + 1, sizeof *vals);
    if (!vals) return elpis_fail(err, ELPIS_ENOMEM, "flags");
    const char *config = NULL;
    int n_vals = 0;
    *help = false;
    elpis_status st = scan_flags(argc, argv, vals, &n_vals, &config, help, err);
    if (st == ELPIS_OK && *help) goto done;
    if (st == ELPIS_OK && config) st = load_file(c, config, err);
    if (st == ELPIS_OK) st = load_env(c, err);
    for (int i = 0; st == ELPIS_OK && i < n_vals; i++) {
        char src[80];
        snprintf(src, sizeof src, "--%s", KEYS[vals[i].key].flag);
        st = set_value(c, &KEYS[vals[i].key], vals[i].val, src, err);
    }
    if (st == ELPIS_OK) st = elpis_psyche_config_validate(&c->psyche, err);   /* relations between keys */
done:
    free(vals);
    return st;
}
