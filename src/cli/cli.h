/* cli.h -- shared pieces of the `elpis` subcommands.
 *
 * Conventions for every subcommand: stdout carries data only, diagnostics go
 * to stderr as "elpis CMD: message", and the exit code is 0 on success, 1 on
 * a runtime error, 2 on a usage error.
 */
#ifndef ELPIS_CLI_H
#define ELPIS_CLI_H

#include "elpis/base.h"

#define CLI_EXIT_OK    0
#define CLI_EXIT_ERROR 1
#define CLI_EXIT_USAGE 2

typedef int (*cli_cmd_fn)(int argc, char **argv);

int cmd_run(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_mcp(int argc, char **argv);
int cmd_vectors(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int cmd_chat(int argc, char **argv);

/* The model path: -m if given, else $ELPIS_MODEL, else the shared default
 * model (../shared/models/stories260K.gguf next to the checkout). Returns NULL
 * and prints an error when none exists. */
const char *cli_model_path(const char *flag_value, const char *cmd);

/* Strict number parsing for flags; print "elpis CMD: --flag: ..." on error. */
bool cli_parse_int(const char *cmd, const char *flag, const char *s, long min, long max, long *out);
bool cli_parse_float(const char *cmd, const char *flag, const char *s, double min, double max, double *out);

void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
