/* test_conventions.c: the convention ids exposed as EB_CONV_* constants
 * are distinct and each appears, with its constant's name, in the table
 * of docs/metrics.md, the document the results database refers to; so
 * the header and the document cannot drift apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/eb_shift.h"
#include "metrics/eb_metrics.h"

#define CONV(name) {#name, name}
static const struct {
    const char *constant, *id;
} conventions[] = {
    CONV(EB_CONV_ACCURACY),        CONV(EB_CONV_NLL),          CONV(EB_CONV_BRIER),
    CONV(EB_CONV_UNCERTAINTY),     CONV(EB_CONV_ECE),          CONV(EB_CONV_MCE),
    CONV(EB_CONV_ECE_ADAPTIVE),    CONV(EB_CONV_ECE_CLASSWISE), CONV(EB_CONV_RELIABILITY),
    CONV(EB_CONV_AUROC),           CONV(EB_CONV_AUPR),         CONV(EB_CONV_FPR95),
    CONV(EB_CONV_ROC),             CONV(EB_CONV_OOD_SCORES),   CONV(EB_CONV_MISCLASSIFICATION),
    CONV(EB_CONV_REJECTION),       CONV(EB_CONV_BOOTSTRAP),    CONV(EB_CONV_FGSM),
    CONV(EB_CONV_PGD),             CONV(EB_CONV_SHIFT),
};
#define N_CONV (sizeof conventions / sizeof conventions[0])

static void test_ids_documented(void **state)
{
    char path[4096], row[512], *doc;
    FILE *f;
    long len;
    (void)state;
    snprintf(path, sizeof path, "%s/docs/metrics.md", EB_SOURCE_DIR);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    doc = malloc((size_t)len + 1);
    assert_non_null(doc);
    assert_int_equal(fread(doc, 1, (size_t)len, f), (size_t)len);
    doc[len] = '\0';
    fclose(f);
    for (size_t i = 0; i < N_CONV; i++) {
        snprintf(row, sizeof row, "| `%s` | `%s` |", conventions[i].id, conventions[i].constant);
        if (!strstr(doc, row))
            fail_msg("docs/metrics.md has no table row \"%s\"", row);
        for (size_t j = i + 1; j < N_CONV; j++)
            if (strcmp(conventions[i].id, conventions[j].id) == 0)
                fail_msg("%s and %s share the id %s", conventions[i].constant,
                         conventions[j].constant, conventions[i].id);
    }
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
