/* eb_status.h: the one status enum of edgebayes, its messages, and the
 * error record that carries a sentence naming what went wrong.
 *
 * The codes and their short descriptions come from one X-macro list, so
 * eb_strerror() can never drift from the enum (libuv's UV_ERRNO_MAP idea).
 * Library functions return an eb_status and, when given a non-NULL
 * eb_error, fill it with a full sentence naming the file, field or flag at
 * fault. Library code never exits; main() decides. */
#ifndef EB_STATUS_H
#define EB_STATUS_H

#include <stddef.h>

#define EB_STATUS_MAP(X)                                              \
    X(OK, "success")                                                  \
    X(ERR_NOMEM, "out of memory")                                     \
    X(ERR_IO, "input/output error")                                   \
    X(ERR_FORMAT, "malformed input")                                  \
    X(ERR_ARG, "invalid argument")                                    \
    X(ERR_CHECKSUM, "checksum mismatch")                              \
    X(ERR_NET, "network transfer failed")                             \
    X(ERR_TIMEOUT, "operation timed out")                             \
    X(ERR_NOTFOUND, "not found")                                      \
    X(ERR_UNSUPPORTED, "unsupported")                                 \
    X(ERR_NUMERIC, "numerical failure")                               \
    X(ERR_INTERNAL, "internal error")

typedef enum eb_status {
#define EB_STATUS_ENUM_(name, text) EB_##name,
    EB_STATUS_MAP(EB_STATUS_ENUM_)
#undef EB_STATUS_ENUM_
    EB_STATUS_COUNT_
} eb_status;

/* Short fixed description of a code ("malformed input"); never NULL. */
const char *eb_strerror(eb_status code);
/* The code's name as written in the source ("EB_ERR_FORMAT"); never NULL. */
const char *eb_status_name(eb_status code);

#define EB_ERROR_MSG_MAX 1024

/* A status plus the sentence explaining it. Zero-initialise it, or call
 * eb_error_clear(). */
typedef struct eb_error {
    eb_status code;
    char msg[EB_ERROR_MSG_MAX];
} eb_error;

void eb_error_clear(eb_error *err);

/* Records code and a printf-formatted sentence in err (which may be NULL)
 * and returns code, so callers can write `return eb_error_set(...)`. */
eb_status eb_error_set(eb_error *err, eb_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prepends context ("loading bundle x.ebb: ") to the message already in err
 * and returns err->code (EB_OK if err is NULL). */
eb_status eb_error_prefix(eb_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The message in err, or the code's description when none was recorded. */
const char *eb_error_message(const eb_error *err);

#endif /* EB_STATUS_H */
