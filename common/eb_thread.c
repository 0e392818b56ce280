/* eb_thread.c: the spin-then-sleep barrier. */
#include "common/eb_thread.h"

int eb_barrier_init(eb_barrier *b, int count)
{
    b->count = count;
    b->waiting = 0;
    b->gen = 0;
    if (pthread_mutex_init(&b->mu, NULL) != 0)
        return -1;
    if (pthread_cond_init(&b->cv, NULL) != 0) {
        pthread_mutex_destroy(&b->mu);
        return -1;
    }
    return 0;
}

void eb_barrier_destroy(eb_barrier *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

static void release_locked(eb_barrier *b)
{
    b->waiting = 0;
    __atomic_add_fetch(&b->gen, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&b->cv);
}

void eb_barrier_wait(eb_barrier *b)
{
    unsigned g;
    pthread_mutex_lock(&b->mu);
    g = b->gen;
    if (++b->waiting >= b->count) {
        release_locked(b);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    pthread_mutex_unlock(&b->mu);
    /* spin a little: the other shard usually arrives within microseconds */
    for (int i = 0; i < 20000; i++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != g)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&b->mu);
    while (b->gen == g)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

void eb_barrier_set_count(eb_barrier *b, int count)
{
    pthread_mutex_lock(&b->mu);
    b->count = count;
    if (b->waiting > 0 && b->waiting >= count)
        release_locked(b);
    pthread_mutex_unlock(&b->mu);
}
