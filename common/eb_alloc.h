/* eb_alloc.h: the project's allocator, swappable so tests can make an
 * allocation fail on purpose (the idea of Lua's ltests.c and curl's torture
 * tests). Library code allocates through these, never malloc directly. */
#ifndef EB_ALLOC_H
#define EB_ALLOC_H

#include <stddef.h>

/* Same contracts as malloc/calloc/realloc/free. eb_malloc(0) returns a
 * unique pointer or NULL; callers treat NULL from a non-zero size as
 * EB_ERR_NOMEM. */
void *eb_malloc(size_t size);
void *eb_calloc(size_t count, size_t size);
void *eb_realloc(void *ptr, size_t size);
void eb_free(void *ptr);
/* A copy of the string s through eb_malloc; NULL when out of memory. */
char *eb_strdup(const char *s);

/* Memory aligned to `align` bytes (a power of two, at least
 * sizeof(void *)); freed with eb_free_aligned. */
void *eb_malloc_aligned(size_t align, size_t size);
void eb_free_aligned(void *ptr);

/* Test hook: the n-th allocation from now (1 = the next one) fails, then
 * allocation works again. n = 0 disarms. Not thread-safe; tests only. */
void eb_alloc_fail_at(long n);
/* Number of allocations made through eb_* since the process started. */
long eb_alloc_count(void);

/* Overflow-checked size arithmetic: returns 0 and stores a*b in *out, or
 * returns -1 when the product does not fit in size_t. */
int eb_size_mul(size_t a, size_t b, size_t *out);
int eb_size_add(size_t a, size_t b, size_t *out);

#endif /* EB_ALLOC_H */
