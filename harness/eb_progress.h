/* eb_progress.h: progress of long runs on stderr: a bar redrawn in place
 * when stderr is a terminal, one plain line per finished epoch otherwise
 * (logs and CI). */
#ifndef EB_PROGRESS_H
#define EB_PROGRESS_H

#include <stdio.h>

#include "methods/eb_methods.h"

typedef struct eb_progress_out {
    FILE *fp;
    int tty;
    int quiet;
    const char *label; /* e.g. the method name */
    int drawn;         /* a bar is on the current line */
} eb_progress_out;

/* Sets up reporting to fp (stderr normally); quiet suppresses output. */
void eb_progress_out_init(eb_progress_out *o, FILE *fp, const char *label, int quiet);
/* The eb_progress_fn to hand to training; ctx is an eb_progress_out. */
void eb_progress_report(void *ctx, const eb_progress *p);
/* Ends a bar line, if one is drawn. */
void eb_progress_out_finish(eb_progress_out *o);

#endif /* EB_PROGRESS_H */
