/* eb_status.c: messages for eb_status and the eb_error helpers. */
#include "common/eb_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_text[] = {
#define EB_STATUS_TEXT_(name, text) text,
    EB_STATUS_MAP(EB_STATUS_TEXT_)
#undef EB_STATUS_TEXT_
};

static const char *const status_names[] = {
#define EB_STATUS_NAME_(name, text) "EB_" #name,
    EB_STATUS_MAP(EB_STATUS_NAME_)
#undef EB_STATUS_NAME_
};

const char *eb_strerror(eb_status code)
{
    if ((int)code < 0 || code >= EB_STATUS_COUNT_)
        return "unknown status";
    return status_text[code];
}

const char *eb_status_name(eb_status code)
{
    if ((int)code < 0 || code >= EB_STATUS_COUNT_)
        return "EB_UNKNOWN";
    return status_names[code];
}

void eb_error_clear(eb_error *err)
{
    if (err) {
        err->code = EB_OK;
        err->msg[0] = '\0';
    }
}

eb_status eb_error_set(eb_error *err, eb_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

eb_status eb_error_prefix(eb_error *err, const char *fmt, ...)
{
    char head[EB_ERROR_MSG_MAX];
    char old[EB_ERROR_MSG_MAX];
    va_list ap;

    if (!err)
        return EB_OK;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    if (old[0] == '\0')
        snprintf(old, sizeof old, "%s", eb_strerror(err->code));
    if (snprintf(err->msg, sizeof err->msg, "%s%s", head, old) >= (int)sizeof err->msg)
        memcpy(err->msg + sizeof err->msg - 4, "...", 4); /* mark the cut */
    return err->code;
}

const char *eb_error_message(const eb_error *err)
{
    if (!err)
        return "";
    if (err->msg[0] == '\0')
        return eb_strerror(err->code);
    return err->msg;
}
