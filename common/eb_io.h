/* eb_io.h: small file-system helpers shared by every stage that writes a
 * file: write-to-temporary-then-rename (so a reader never sees a partial
 * file and a failed write leaves nothing behind), whole-file reads, and
 * directory creation. */
#ifndef EB_IO_H
#define EB_IO_H

#include <stddef.h>
#include <stdio.h>

#include "common/eb_status.h"

/* A file being written next to its final path. */
typedef struct eb_tmpfile {
    FILE *fp;
    char tmp_path[4096];
    char final_path[4096];
} eb_tmpfile;

/* Creates a uniquely named temporary file in final_path's directory. */
eb_status eb_tmpfile_open(eb_tmpfile *t, const char *final_path, eb_error *err);
/* Flushes, fsyncs, closes and renames the temporary file over final_path.
 * On failure the temporary file is removed. */
eb_status eb_tmpfile_commit(eb_tmpfile *t, eb_error *err);
/* Closes and removes the temporary file; final_path is untouched. */
void eb_tmpfile_abort(eb_tmpfile *t);

/* Reads a whole file; the caller frees *data with eb_free. A NUL byte is
 * appended after the data (not counted in *len) so text can be parsed in
 * place. */
eb_status eb_file_read_all(const char *path, char **data, size_t *len,
                           eb_error *err);

/* mkdir -p. */
eb_status eb_mkdirs(const char *path, eb_error *err);

/* 1 if path names an existing regular file. */
int eb_file_exists(const char *path);

#endif /* EB_IO_H */
