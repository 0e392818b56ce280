/* eb_thread.h: a barrier for the data-parallel loops. Waiters spin
 * briefly (a training step lasts about a millisecond, so most waits end
 * within the spin) and then sleep on a condition variable, so an
 * oversubscribed machine does not burn its cores. Unlike
 * pthread_barrier_t, the participant count may be lowered before the
 * first wait completes, which lets a caller whose thread creation failed
 * release the threads it did start. */
#ifndef EB_THREAD_H
#define EB_THREAD_H

#include <pthread.h>

typedef struct eb_barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;             /* participants */
    int waiting;           /* arrived in this generation */
    volatile unsigned gen; /* completed generations (read while spinning) */
} eb_barrier;

int eb_barrier_init(eb_barrier *b, int count); /* 0 on success */
void eb_barrier_destroy(eb_barrier *b);
void eb_barrier_wait(eb_barrier *b);
/* Sets the participant count; completes the current generation if the
 * threads already waiting now make up the new count. */
void eb_barrier_set_count(eb_barrier *b, int count);

#endif /* EB_THREAD_H */
