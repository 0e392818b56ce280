/* cli.h: what the subcommand files share. */
#ifndef EB_CLI_H
#define EB_CLI_H

enum { EB_EXIT_OK = 0, EB_EXIT_FAIL = 1, EB_EXIT_USAGE = 2 };

typedef struct eb_cli_command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    const char *summary;
} eb_cli_command;

#endif /* EB_CLI_H */
