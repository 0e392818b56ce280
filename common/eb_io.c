/* eb_io.c: temporary-file commits, whole-file reads, mkdir -p. */
#include "common/eb_io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/eb_alloc.h"

eb_status eb_tmpfile_open(eb_tmpfile *t, const char *final_path, eb_error *err)
{
    int fd;
    size_t n = strlen(final_path);

    memset(t, 0, sizeof *t);
    if (n == 0 || n + 64 >= sizeof t->tmp_path)
        return eb_error_set(err, EB_ERR_ARG, "output path '%s' is empty or too long",
                            final_path);
    memcpy(t->final_path, final_path, n + 1);
    /* open(O_EXCL) with mode 0666 rather than mkstemp (which makes 0600):
     * the file ends with the permissions the user's umask gives any new
     * file, since bundles and datasets are meant to be shared. */
    fd = -1;
    for (unsigned attempt = 0; attempt < 100 && fd < 0; attempt++) {
        static unsigned long counter;
        unsigned long tag = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        snprintf(t->tmp_path, sizeof t->tmp_path, "%s.tmp.%ld.%lu", final_path, (long)getpid(),
                 tag);
        fd = open(t->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return eb_error_set(err, EB_ERR_IO, "cannot create a temporary file next to '%s': %s",
                            final_path, strerror(errno));
    t->fp = fdopen(fd, "wb");
    if (!t->fp) {
        int e = errno;
        close(fd);
        unlink(t->tmp_path);
        return eb_error_set(err, EB_ERR_IO, "cannot open '%s': %s", t->tmp_path, strerror(e));
    }
    return EB_OK;
}

eb_status eb_tmpfile_commit(eb_tmpfile *t, eb_error *err)
{
    int failed = 0, e = 0;

    if (!t->fp)
        return eb_error_set(err, EB_ERR_ARG, "no temporary file is open for '%s'",
                            t->final_path);
    if (fflush(t->fp) != 0 || ferror(t->fp)) {
        failed = 1;
        e = errno;
    } else if (fsync(fileno(t->fp)) != 0) {
        failed = 1;
        e = errno;
    }
    if (fclose(t->fp) != 0 && !failed) {
        failed = 1;
        e = errno;
    }
    t->fp = NULL;
    if (!failed && rename(t->tmp_path, t->final_path) != 0) {
        failed = 1;
        e = errno;
    }
    if (failed) {
        unlink(t->tmp_path);
        return eb_error_set(err, EB_ERR_IO, "cannot write '%s': %s", t->final_path,
                            strerror(e));
    }
    /* Make the rename itself durable (best effort: some file systems
     * refuse fsync on a directory). */
    {
        char dir[sizeof t->final_path];
        int dfd;
        memcpy(dir, t->final_path, sizeof dir);
        dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    return EB_OK;
}

void eb_tmpfile_abort(eb_tmpfile *t)
{
    if (t->fp) {
        fclose(t->fp);
        t->fp = NULL;
    }
    if (t->tmp_path[0])
        unlink(t->tmp_path);
    t->tmp_path[0] = '\0';
}

eb_status eb_file_read_all(const char *path, char **data, size_t *len, eb_error *err)
{
    FILE *fp;
    char *buf = NULL;
    size_t cap = 0, n = 0;

    *data = NULL;
    *len = 0;
    fp = fopen(path, "rb");
    if (!fp)
        return eb_error_set(err, errno == ENOENT ? EB_ERR_NOTFOUND : EB_ERR_IO,
                            "cannot open '%s': %s", path, strerror(errno));
    for (;;) {
        size_t got;
        if (cap - n < 65536) {
            size_t ncap = cap ? cap * 2 : 65536 + 1;
            char *nb = eb_realloc(buf, ncap);
            if (!nb) {
                eb_free(buf);
                fclose(fp);
                return eb_error_set(err, EB_ERR_NOMEM, "out of memory reading '%s'", path);
            }
            buf = nb;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(fp)) {
        eb_free(buf);
        fclose(fp);
        return eb_error_set(err, EB_ERR_IO, "cannot read '%s'", path);
    }
    fclose(fp);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return EB_OK;
}

eb_status eb_mkdirs(const char *path, eb_error *err)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof buf)
        return eb_error_set(err, EB_ERR_ARG, "directory path '%s' is empty or too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return eb_error_set(err, EB_ERR_IO, "cannot create directory '%s': %s", buf,
                                    strerror(errno));
            buf[i] = c;
        }
    }
    return EB_OK;
}

int eb_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
