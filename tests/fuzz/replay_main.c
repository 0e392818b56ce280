/* replay_main.c: feeds every file of a corpus directory (or the files named
 * on the command line) to a fuzz target's LLVMFuzzerTestOneInput, so the
 * committed corpus is replayed by CTest without libFuzzer. Exit status 0
 * means every input was handled without a crash (the sanitizers, when
 * enabled, turn any memory error into a failure). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/eb_alloc.h"
#include "common/eb_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    char *data;
    size_t len;
    eb_error err;

    if (eb_file_read_all(path, &data, &len, &err) != EB_OK) {
        fprintf(stderr, "replay: %s\n", eb_error_message(&err));
        return 1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    eb_free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, failures = 0;

    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot stat '%s'\n", argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            struct dirent **names;
            int n = scandir(argv[i], &names, NULL, alphasort);
            if (n < 0) {
                fprintf(stderr, "replay: cannot list '%s'\n", argv[i]);
                return 1;
            }
            for (int j = 0; j < n; j++) {
                char path[4096];
                if (names[j]->d_name[0] != '.') {
                    snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
                    failures += replay_file(path);
                    files++;
                }
                free(names[j]);
            }
            free(names);
        } else {
            failures += replay_file(argv[i]);
            files++;
        }
    }
    printf("replayed %d inputs, %d unreadable\n", files, failures);
    if (files == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return failures ? 1 : 0;
}
