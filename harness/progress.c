/* progress.c: progress reporting on stderr. */
#include <unistd.h>

#include "harness/eb_progress.h"

void eb_progress_out_init(eb_progress_out *o, FILE *fp, const char *label, int quiet)
{
    o->fp = fp;
    o->tty = isatty(fileno(fp));
    o->quiet = quiet;
    o->label = label;
    o->drawn = 0;
}

void eb_progress_report(void *ctx, const eb_progress *p)
{
    eb_progress_out *o = ctx;
    if (o->quiet)
        return;
    if (o->tty) {
        const int width = 24;
        int fill = (int)(p->fraction * width + 0.5);
        fprintf(o->fp, "\r%s %s [", o->label, p->phase);
        for (int i = 0; i < width; i++)
            fputc(i < fill ? '#' : '.', o->fp);
        fprintf(o->fp, "] %3.0f%% epoch %d/%d loss %.4f %.0f img/s ", 100.0 * p->fraction,
                p->epoch, p->epochs, p->loss, p->images_per_sec);
        o->drawn = 1;
        if (p->fraction >= 1.0) {
            fputc('\n', o->fp);
            o->drawn = 0;
        }
    } else if (p->epoch_done) {
        fprintf(o->fp, "%s %s: epoch %d/%d loss %.4f %.0f img/s (%.0f%%)\n", o->label, p->phase,
                p->epoch, p->epochs, p->loss, p->images_per_sec, 100.0 * p->fraction);
    }
    fflush(o->fp);
}

void eb_progress_out_finish(eb_progress_out *o)
{
    if (o->drawn && !o->quiet)
        fputc('\n', o->fp);
    o->drawn = 0;
}
