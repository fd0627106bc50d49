/* cmd_memory.c -- `elpis memory`: look at and move the model's memories.
 *
 *   elpis memory [--data-dir DIR] [-m MODEL] [--no-model] COMMAND [ARGS]
 *     list [--status S] [-n N] [--json]   newest first (default 20; -n 0: all)
 *     search QUERY [-n N] [--no-hybrid] [--json]
 *     show ID                             the full record as JSON
 *     stats                               counts as JSON
 *     export [FILE]                       JSON Lines, oldest first (stdout by default)
 *     import FILE [--replace]             JSON Lines ("-" = stdin); all or nothing
 *     delete ID
 *     consolidate                         one consolidation run, report as JSON
 *     reembed                             recompute vectors from another model
 *
 * The database is DIR/elpis.db (default: elpis_default_data_dir()). The
 * model is loaded only by the commands that embed (search, import, reembed);
 * it must be the one the server embeds with, or vector search skips the
 * stored vectors (the store warns). Without a model those commands still
 * work: search by keywords only, import without vectors (reembed later).
 * Browsing from here does not count as retrieval (access counts unchanged).
 */
#include "cli.h"

#include "elpis/memory.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "memory"

static void mem_usage(FILE *f) {
    fprintf(f, "usage: elpis memory [--data-dir DIR] [-m MODEL] [--no-model] COMMAND [ARGS]\n"
               "commands:\n"
               "  list [--status short_term|long_term|archived] [-n N] [--json]\n"
               "  search QUERY [-n N] [--no-hybrid] [--json]\n"
               "  show ID\n"
               "  stats\n"
               "  export [FILE]\n"
               "  import FILE|- [--replace]\n"
               "  delete ID\n"
               "  consolidate\n"
               "  reembed\n");
}

typedef struct mem_cli {
    const char *data_dir, *model_flag;
    bool no_model;
    elpis_db *db;
    elpis_model *model;
    elpis_embedder *emb;
    elpis_memory_store *store;
} mem_cli;

/* Open the database (and the model, when `embed` and one is available). */
static int open_store(mem_cli *c, bool embed) {
    char dflt[PATH_MAX];
    elpis_error err = { 0 };
    const char *dir = c->data_dir ? c->data_dir : elpis_default_data_dir(dflt, sizeof dflt);
    if (!dir) {
        cli_error(CMD, "no data directory: pass --data-dir or set HOME");
        return CLI_EXIT_ERROR;
    }
    if (elpis_db_open(&c->db, dir, &err) != ELPIS_OK) goto fail;
    if (embed && !c->no_model) {
        const char *path = c->model_flag ? c->model_flag : cli_model_path(NULL, CMD);
        if (path && (elpis_model_load(&c->model, path, &err) != ELPIS_OK ||
                     elpis_embedder_new(&c->emb, c->model, 0, &err) != ELPIS_OK))
            goto fail;
        if (!path) cli_error(CMD, "continuing without a model: search by keywords only, import without vectors");
    }
    if (elpis_memory_store_open(&c->store, c->db, NULL, c->emb, &err) != ELPIS_OK) goto fail;
    return CLI_EXIT_OK;
fail:
    cli_error(CMD, "%s", err.msg);
    return CLI_EXIT_ERROR;
}

static void close_store(mem_cli *c) {
    elpis_memory_store_close(c->store);
    elpis_embedder_free(c->emb);
    elpis_model_free(c->model);
    elpis_db_close(c->db);
}

static void print_json(json_t *j, size_t flags) {
    char *s = j ? json_dumps(j, flags) : NULL;
    if (s) puts(s);
    free(s);
}

/* One line per memory: id, status, type, time, content (first 80 chars, one line). */
static void print_line(const elpis_memory *m, const double *score) {
    char iso[32];
    elpis_memory_iso_time(m->created_at, iso);
    char *preview = elpis_utf8_prefix(m->content, 80);
    for (char *p = preview; p && *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    if (score) printf("%.4f  ", *score);
    printf("%s  %-10s  %-10s  %s  %s%s\n", m->id, elpis_memory_status_name(m->status), elpis_memory_type_name(m->type),
           iso, preview ? preview : "", elpis_utf8_chars(m->content) > 80 ? "..." : "");
    free(preview);
}

/* Sub-command options: only the ones each command accepts. */
typedef struct sub_opts {
    long n;
    int status;
    bool json, no_hybrid, replace;
} sub_opts;

static int parse_sub(int argc, char **argv, const char *allowed, sub_opts *o) {
    static const struct option opts[] = {
        { "status", required_argument, 0, 's' }, { "json", no_argument, 0, 'j' },
        { "no-hybrid", no_argument, 0, 'H' },    { "replace", no_argument, 0, 'r' },
        { 0, 0, 0, 0 },
    };
    int ch;
    optind = 0;   /* 0, not 1: glibc re-initialises after the "+" scan of cmd_memory */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        if (ch == '?' || ch == ':') {
            cli_error(CMD, "%s %s: unknown option or missing value", argv[0], argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (!strchr(allowed, ch)) {
            cli_error(CMD, "%s %s: option not accepted here", argv[0], argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        switch (ch) {
        case 'n':
            if (!cli_parse_int(CMD, "-n", optarg, 0, 1000000, &o->n)) return CLI_EXIT_USAGE;
            break;
        case 's': {
            elpis_memory_status st;
            if (!elpis_memory_status_parse(optarg, &st)) {
                cli_error(CMD, "--status: '%s' is not short_term, long_term or archived", optarg);
                return CLI_EXIT_USAGE;
            }
            o->status = (int)st;
            break;
        }
        case 'j': o->json = true; break;
        case 'H': o->no_hybrid = true; break;
        case 'r': o->replace = true; break;
        }
    }
    return CLI_EXIT_OK;
}

/* ---- commands ----------------------------------------------------------------- */

static int do_list(mem_cli *c, const sub_opts *o) {
    elpis_memory_list l = { 0 };
    elpis_error err = { 0 };
    if (elpis_memory_list_all(c->store, o->status, (int)o->n, 0, &l, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (o->json) {
            json_t *j = elpis_memory_to_json(&l.items[i]);
            print_json(j, JSON_COMPACT);
            json_decref(j);
        } else {
            print_line(&l.items[i], NULL);
        }
    }
    elpis_memory_list_free(&l);
    return CLI_EXIT_OK;
}

static int do_search(mem_cli *c, const char *query, const sub_opts *o) {
    elpis_memory_query q = { .query = query, .n_results = (int)(o->n > 0 ? o->n : 10), .use_hybrid = !o->no_hybrid,
                             .emotion_weight = -1, .no_access_bump = true };
    elpis_memory_results r = { 0 };
    elpis_error err = { 0 };
    if (elpis_memory_search(c->store, &q, &r, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < r.n; i++) {
        if (o->json) {
            json_t *j = elpis_memory_hit_to_json(&r.hits[i]);
            print_json(j, JSON_COMPACT);
            json_decref(j);
        } else {
            double score = r.hits[i].has_relevance ? r.hits[i].relevance : r.hits[i].cosine;
            print_line(&r.hits[i].mem, &score);
        }
    }
    elpis_memory_results_free(&r);
    return CLI_EXIT_OK;
}

static int do_show(mem_cli *c, const char *id) {
    elpis_memory m;
    bool found;
    elpis_error err = { 0 };
    if (elpis_memory_get(c->store, id, &m, &found, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    if (!found) {
        cli_error(CMD, "no memory with id %s", id);
        return CLI_EXIT_ERROR;
    }
    json_t *j = elpis_memory_to_json(&m);
    print_json(j, JSON_INDENT(2));
    json_decref(j);
    elpis_memory_clear(&m);
    return CLI_EXIT_OK;
}

static int do_stats(mem_cli *c) {
    elpis_memory_stats st;
    elpis_error err = { 0 };
    if (elpis_memory_stats_get(c->store, &st, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    json_t *j = elpis_memory_stats_to_json(&st);
    print_json(j, JSON_INDENT(2));
    json_decref(j);
    return CLI_EXIT_OK;
}

/* Export to FILE through a temporary file renamed at the end, so a failed
 * export never leaves a truncated file under the requested name. */
static int do_export(mem_cli *c, const char *path) {
    elpis_error err = { 0 };
    size_t n = 0;
    if (!path || !strcmp(path, "-")) {
        if (elpis_memory_export(c->store, stdout, &n, &err) != ELPIS_OK) goto fail;
        fprintf(stderr, "elpis memory: exported %zu memories\n", n);
        return CLI_EXIT_OK;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        cli_error(CMD, "%s: %s", tmp, strerror(errno));
        return CLI_EXIT_ERROR;
    }
    elpis_status st = elpis_memory_export(c->store, f, &n, &err);
    if (fclose(f) != 0 && st == ELPIS_OK) st = elpis_fail(&err, ELPIS_EIO, "%s: %s", tmp, strerror(errno));
    if (st == ELPIS_OK && rename(tmp, path) != 0) st = elpis_fail(&err, ELPIS_EIO, "%s: %s", path, strerror(errno));
    if (st != ELPIS_OK) {
        unlink(tmp);
        goto fail;
    }
    fprintf(stderr, "elpis memory: exported %zu memories to %s\n", n, path);
    return CLI_EXIT_OK;
fail:
    cli_error(CMD, "%s", err.msg);
    return CLI_EXIT_ERROR;
}

static int do_import(mem_cli *c, const char *path, bool replace) {
    elpis_error err = { 0 };
    size_t imported = 0, skipped = 0;
    bool is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        cli_error(CMD, "%s: %s", path, strerror(errno));
        return CLI_EXIT_ERROR;
    }
    elpis_status st = elpis_memory_import(c->store, f, replace, &imported, &skipped, &err);
    if (!is_stdin) fclose(f);
    if (st != ELPIS_OK) {
        cli_error(CMD, "%s: %s", path, err.msg);
        return CLI_EXIT_ERROR;
    }
    fprintf(stderr, "elpis memory: imported %zu memories, skipped %zu already present\n", imported, skipped);
    return CLI_EXIT_OK;
}

static int do_delete(mem_cli *c, const char *id) {
    elpis_error err = { 0 };
    bool deleted;
    if (elpis_memory_delete(c->store, id, &deleted, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    if (!deleted) {
        cli_error(CMD, "no memory with id %s", id);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static int do_consolidate(mem_cli *c) {
    elpis_consolidation_report r;
    elpis_error err = { 0 };
    if (elpis_memory_consolidate(c->store, -1, -1, &r, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    json_t *j = elpis_consolidation_report_to_json(&r);
    print_json(j, JSON_INDENT(2));
    json_decref(j);
    elpis_consolidation_report_free(&r);
    return CLI_EXIT_OK;
}

static int do_reembed(mem_cli *c) {
    elpis_error err = { 0 };
    size_t n = 0;
    if (elpis_memory_reembed(c->store, &n, &err) != ELPIS_OK) {
        cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_ERROR;
    }
    fprintf(stderr, "elpis memory: re-embedded %zu memories\n", n);
    return CLI_EXIT_OK;
}

/* ---- dispatch ------------------------------------------------------------------- */

typedef struct sub_cmd {
    const char *name;
    int n_args;            /* positional arguments: exact, or -1 for "0 or 1" */
    const char *options;   /* getopt chars accepted */
    bool embeds;           /* needs the model */
} sub_cmd;

static const sub_cmd SUBS[] = {
    { "list", 0, "nsj", false },    { "search", 1, "njH", true }, { "show", 1, "", false },
    { "stats", 0, "", false },      { "export", -1, "", false },  { "import", 1, "r", true },
    { "delete", 1, "", false },     { "consolidate", 0, "", false }, { "reembed", 0, "", true },
};

static int run_sub(mem_cli *c, const sub_cmd *sc, int argc, char **argv) {
    sub_opts o = { .n = 20, .status = -1 };
    int rc = parse_sub(argc, argv, sc->options, &o);
    if (rc != CLI_EXIT_OK) return rc;
    int n_pos = argc - optind;
    if (sc->n_args >= 0 ? n_pos != sc->n_args : n_pos > 1) {
        mem_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *arg = n_pos ? argv[optind] : NULL;
    if ((rc = open_store(c, sc->embeds)) != CLI_EXIT_OK) return rc;
    if (!strcmp(sc->name, "list")) rc = do_list(c, &o);
    else if (!strcmp(sc->name, "search")) rc = do_search(c, arg, &o);
    else if (!strcmp(sc->name, "show")) rc = do_show(c, arg);
    else if (!strcmp(sc->name, "stats")) rc = do_stats(c);
    else if (!strcmp(sc->name, "export")) rc = do_export(c, arg);
    else if (!strcmp(sc->name, "import")) rc = do_import(c, arg, o.replace);
    else if (!strcmp(sc->name, "delete")) rc = do_delete(c, arg);
    else if (!strcmp(sc->name, "consolidate")) rc = do_consolidate(c);
    else rc = do_reembed(c);
    return rc;
}

int cmd_memory(int argc, char **argv) {
    static const struct option opts[] = {
        { "data-dir", required_argument, 0, 'd' }, { "model", required_argument, 0, 'm' },
        { "no-model", no_argument, 0, 'N' },       { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    mem_cli c = { 0 };
    int ch;
    optind = 1;
    /* "+": stop at the sub-command, whose options are parsed separately */
    while ((ch = getopt_long(argc, argv, "+m:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': c.data_dir = optarg; break;
        case 'm': c.model_flag = optarg; break;
        case 'N': c.no_model = true; break;
        case 'h': mem_usage(stdout); return CLI_EXIT_OK;
        default: mem_usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        mem_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[optind];
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(SUBS); i++) {
        if (strcmp(name, SUBS[i].name) != 0) continue;
        int rc = run_sub(&c, &SUBS[i], argc - optind, argv + optind);
        close_store(&c);
        return rc;
    }
    cli_error(CMD, "unknown command '%s'", name);
    mem_usage(stderr);
    return CLI_EXIT_USAGE;
}
