/* gnuplot.c: runs gnuplot on the plot scripts, and the quoting the
 * scripts and data files need.
 *
 * gnuplot runs as a child process (posix_spawnp, no shell), one per
 * script and all at once, each in the plots directory so the scripts'
 * relative paths hold, with stdin and stdout on /dev/null (a stray
 * `pause` cannot hang the report) and stderr in a file read afterwards
 * (files, unlike pipes, cannot fill and block a child while we wait on
 * another). A non-zero exit is an error that quotes stderr.
 *
 * Determinism: cairo 1.16 (Debian 12) stamps the current time into each
 * PDF's /CreationDate and ignores SOURCE_DATE_EPOCH, so after gnuplot
 * finishes the date is rewritten to the latest selected run's start time
 * (a date stored in the database), keeping its length and so the PDF's
 * byte offsets. SOURCE_DATE_EPOCH is also set for the child, which newer
 * cairo versions honour. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "reports/report_internal.h"

extern char **environ;

void rp_gp_string(FILE *fp, const char *s)
{
    fputc('\'', fp);
    for (; s && *s; s++) {
        if (*s == '\'')
            fputc('\'', fp); /* '' is a quote inside '...' */
        fputc((unsigned char)*s < 0x20 ? ' ' : *s, fp);
    }
    fputc('\'', fp);
}

void rp_dat_string(FILE *fp, const char *s)
{
    /* gnuplot's data files have no escape inside "...". */
    fputc('"', fp);
    for (; s && *s; s++)
        fputc(*s == '"' ? '\'' : (unsigned char)*s < 0x20 ? ' ' : *s, fp);
    fputc('"', fp);
}

/* The child's environment: ours with SOURCE_DATE_EPOCH replaced. */
static char **child_env(const char *stamp, char *slot, size_t cap)
{
    struct tm tm;
    size_t n = 0, k = 0;
    char **env;
    long long epoch = 0;

    memset(&tm, 0, sizeof tm);
    if (sscanf(stamp, "%4d%2d%2d%2d%2d%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) == 6) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        epoch = (long long)timegm(&tm);
        if (epoch < 0)
            epoch = 0;
    }
    snprintf(slot, cap, "SOURCE_DATE_EPOCH=%lld", epoch);
    while (environ && environ[n])
        n++;
    env = eb_malloc((n + 2) * sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SOURCE_DATE_EPOCH=", 18) != 0)
            env[k++] = environ[i];
    env[k++] = slot;
    env[k] = NULL;
    return env;
}

typedef struct child {
    pid_t pid;
    char errpath[4096];
} child;

/* Spawns `program name.gp` in dir. */
static eb_status spawn_one(child *c, const char *program, const char *dir, const char *name,
                           char **env, eb_error *err)
{
    posix_spawn_file_actions_t fa;
    char script[256], errname[256];
    char *argv[3];
    int rc;
    eb_status s;

    c->pid = -1;
    snprintf(script, sizeof script, "%s.gp", name);
    snprintf(errname, sizeof errname, ".%s.stderr", name);
    if ((s = rp_path(c->errpath, sizeof c->errpath, dir, errname, err)) != EB_OK)
        return s;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory starting gnuplot");
    /* The stderr file is opened before the chdir, so its path is ours. */
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_addopen(&fa, 2, c->errpath,
                                              O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (!rc)
        rc = posix_spawn_file_actions_addchdir_np(&fa, dir);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return eb_error_set(err, EB_ERR_NOMEM, "cannot prepare to run gnuplot: %s",
                            strerror(rc));
    }
    argv[0] = (char *)program;
    argv[1] = script;
    argv[2] = NULL;
    rc = posix_spawnp(&c->pid, program, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
        c->pid = -1;
        unlink(c->errpath);
        if (rc == ENOENT)
            return eb_error_set(err, EB_ERR_NOTFOUND,
                                "gnuplot ('%s') was not found%s; install it (Debian: apt-get"
                                " install gnuplot-nox) or name the program to run",
                                program, strchr(program, '/') ? "" : " on PATH");
        return eb_error_set(err, EB_ERR_IO, "cannot run gnuplot ('%s') in '%s': %s", program,
                            dir, strerror(rc));
    }
    return EB_OK;
}

/* Waits for the child; its stderr (trimmed) goes to *text. */
static int wait_one(child *c, char **text)
{
    int status = 0;
    size_t len;
    char *data = NULL;

    *text = NULL;
    while (waitpid(c->pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    if (eb_file_read_all(c->errpath, &data, &len, NULL) == EB_OK) {
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == ' '))
            data[--len] = '\0';
        if (len > 0)
            *text = data;
        else
            eb_free(data);
    }
    unlink(c->errpath);
    c->pid = -1;
    return status;
}

eb_status rp_gnuplot_render(const char *program, const char *dir, rp_plot *plots, size_t n,
                            const char *stamp, eb_error *err)
{
    child *kids = NULL;
    char **env = NULL;
    char slot[64], resolved[PATH_MAX];
    eb_status s = EB_OK;

    /* A relative path with a slash would be looked up from the plots
     * directory after the chdir: make it absolute first. */
    if (strchr(program, '/') && program[0] != '/') {
        if (!realpath(program, resolved))
            return eb_error_set(err, EB_ERR_NOTFOUND, "gnuplot ('%s') was not found: %s",
                                program, strerror(errno));
        program = resolved;
    }
    kids = eb_calloc(n ? n : 1, sizeof *kids);
    env = child_env(stamp, slot, sizeof slot);
    if (!kids || !env) {
        s = eb_error_set(err, EB_ERR_NOMEM, "out of memory starting gnuplot");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        kids[i].pid = -1;
    for (size_t i = 0; i < n && s == EB_OK; i++)
        if (plots[i].written)
            s = spawn_one(&kids[i], program, dir, plots[i].name, env, err);
    /* Every started child is waited for, also after a failure. */
    for (size_t i = 0; i < n; i++) {
        char *text;
        int status;
        if (kids[i].pid < 0)
            continue;
        status = wait_one(&kids[i], &text);
        if (s == EB_OK && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            if (status != -1 && WIFSIGNALED(status))
                s = eb_error_set(err, EB_ERR_IO, "gnuplot was killed by signal %d on %s/%s.gp%s%s",
                                 WTERMSIG(status), dir, plots[i].name, text ? ": " : "",
                                 text ? text : "");
            else
                s = eb_error_set(err, EB_ERR_IO,
                                 "gnuplot failed on %s/%s.gp (exit status %d): %s", dir,
                                 plots[i].name, status == -1 ? -1 : WEXITSTATUS(status),
                                 text ? text : "(no message)");
            eb_free(text);
        } else if (text) {
            eb_free(plots[i].warnings);
            plots[i].warnings = text;
        }
    }
    for (size_t i = 0; i < n && s == EB_OK; i++) {
        char pdf[4096], fn[160];
        if (!plots[i].written)
            continue;
        snprintf(fn, sizeof fn, "%s.pdf", plots[i].name);
        if ((s = rp_path(pdf, sizeof pdf, dir, fn, err)) == EB_OK)
            s = rp_pdf_set_date(pdf, stamp, err);
    }
out:
    eb_free(kids);
    eb_free(env);
    return s;
}

eb_status rp_pdf_set_date(const char *path, const char *stamp, eb_error *err)
{
    static const char *const keys[] = {"/CreationDate (D:", "/ModDate (D:"};
    char *data = NULL;
    size_t len = 0;
    int changed = 0;
    eb_tmpfile t;
    eb_status s;

    if (strlen(stamp) != 14)
        return eb_error_set(err, EB_ERR_ARG, "PDF date stamp '%s' is not 14 digits", stamp);
    if ((s = eb_file_read_all(path, &data, &len, err)) != EB_OK)
        return s;
    if (len < 5 || memcmp(data, "%PDF-", 5) != 0) {
        eb_free(data);
        return eb_error_set(err, EB_ERR_FORMAT, "gnuplot wrote '%s', which is not a PDF", path);
    }
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        size_t kl = strlen(keys[k]);
        char *p = memmem(data, len, keys[k], kl);
        size_t digits = 0;
        if (!p)
            continue;
        p += kl;
        while ((size_t)(p - data) + digits < len && digits < 14 && p[digits] >= '0' &&
               p[digits] <= '9')
            digits++;
        if (digits == 14 && memcmp(p, stamp, 14) != 0) {
            memcpy(p, stamp, 14);
            changed = 1;
        }
    }
    if (!changed) {
        eb_free(data);
        return EB_OK;
    }
    if ((s = eb_tmpfile_open(&t, path, err)) != EB_OK) {
        eb_free(data);
        return s;
    }
    if (fwrite(data, 1, len, t.fp) != len) {
        eb_tmpfile_abort(&t);
        eb_free(data);
        return eb_error_set(err, EB_ERR_IO, "cannot rewrite '%s'", path);
    }
    eb_free(data);
    return eb_tmpfile_commit(&t, err);
}
