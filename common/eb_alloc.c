/* eb_alloc.c: allocation with an injectable failure for tests. */
#include "common/eb_alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static long fail_countdown; /* 0 = disarmed */
static long alloc_total;

static int should_fail(void)
{
    alloc_total++;
    if (fail_countdown > 0 && --fail_countdown == 0)
        return 1;
    return 0;
}

void *eb_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *eb_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        return calloc(1, 1);
    return calloc(count, size);
}

char *eb_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = eb_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void *eb_realloc(void *ptr, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

void eb_free(void *ptr)
{
    free(ptr);
}

void *eb_malloc_aligned(size_t align, size_t size)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    if (posix_memalign(&p, align, size ? size : 1) != 0)
        return NULL;
    return p;
}

void eb_free_aligned(void *ptr)
{
    free(ptr);
}

void eb_alloc_fail_at(long n)
{
    fail_countdown = n > 0 ? n : 0;
}

long eb_alloc_count(void)
{
    return alloc_total;
}

int eb_size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

int eb_size_add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return -1;
    *out = a + b;
    return 0;
}
