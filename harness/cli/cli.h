/* cli.h: what the subcommand files share: exit codes, the command table
 * entry, argument parsing helpers, error reporting and JSON output. */
#ifndef EB_CLI_H
#define EB_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "common/eb_status.h"
#include "harness/eb_data.h"

enum { EB_EXIT_OK = 0, EB_EXIT_FAIL = 1, EB_EXIT_USAGE = 2 };

typedef struct eb_cli_command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    const char *summary;
} eb_cli_command;

int eb_cmd_train(int argc, char **argv);
int eb_cmd_inspect(int argc, char **argv);
int eb_cmd_predict(int argc, char **argv);
int eb_cmd_run(int argc, char **argv);
int eb_cmd_eval(int argc, char **argv);
int eb_cmd_merge(int argc, char **argv);
int eb_cmd_compare(int argc, char **argv);
int eb_cmd_report(int argc, char **argv);
int eb_cmd_transform(int argc, char **argv);

/* Prints "edgebayes CMD: <message>" and a hint to stderr; returns 2. */
int eb_cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints "edgebayes CMD: <error message>" to stderr; returns 1. */
int eb_cli_fail(const char *cmd, const eb_error *err);

/* Strict number parsing for flag values: the whole string, in range.
 * Return 0 on success. */
int eb_cli_parse_long(const char *s, long min, long max, long *out);
int eb_cli_parse_u64(const char *s, uint64_t *out);

/* Writes s as a JSON string literal (quoted, escaped). */
void eb_cli_json_string(FILE *fp, const char *s);
/* Writes a finite double as a JSON number, or null. */
void eb_cli_json_number(FILE *fp, double v);

/* Loads a dataset with the default data configuration. */
eb_status eb_cli_load_dataset(const char *name, const char *split, eb_dataset *ds,
                              eb_error *err);

#endif /* EB_CLI_H */
