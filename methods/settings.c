/* settings.c: typed, validated key=value method settings. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "methods/eb_methods.h"

static int find(const eb_settings *s, const char *key)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->spec[i].key, key))
            return i;
    return -1;
}

static void known_keys(const eb_settings *s, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->n && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", s->spec[i].key);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* Validates value for spec; writes the canonical text into out. */
static eb_status check_value(const eb_setting_spec *sp, const char *value, char *out,
                             eb_error *err)
{
    char *end;
    if (strlen(value) >= EB_SETTING_VALUE_MAX)
        return eb_error_set(err, EB_ERR_ARG, "setting '%s': value '%.40s...' is too long",
                            sp->key, value);
    switch (sp->type) {
    case EB_SET_INT: {
        long v;
        errno = 0;
        v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < sp->min || v > sp->max)
            return eb_error_set(err, EB_ERR_ARG,
                                "setting '%s': '%s' is not a whole number from %.0f to %.0f",
                                sp->key, value, sp->min, sp->max);
        snprintf(out, EB_SETTING_VALUE_MAX, "%ld", v);
        return EB_OK;
    }
    case EB_SET_FLOAT: {
        double v;
        errno = 0;
        v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || v < sp->min || v > sp->max)
            return eb_error_set(err, EB_ERR_ARG,
                                "setting '%s': '%s' is not a number from %g to %g", sp->key,
                                value, sp->min, sp->max);
        /* %.9g round-trips a float and keeps metadata canonical */
        snprintf(out, EB_SETTING_VALUE_MAX, "%.9g", v);
        return EB_OK;
    }
    case EB_SET_CHOICE: {
        const char *p = sp->choices;
        size_t n = strlen(value);
        while (p && *p) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && !strncmp(p, value, n)) {
                memcpy(out, value, n + 1);
                return EB_OK;
            }
            /* "prefix*": any value that starts with prefix and goes on
             * in printable characters without spaces (the owner of the
             * setting checks the rest: distill's student=mlp:64,64) */
            if (len > 1 && p[len - 1] == '*' && n >= len && !strncmp(p, value, len - 1)) {
                size_t k = len - 1;
                while (k < n && value[k] > ' ' && value[k] < 0x7f)
                    k++;
                if (k == n) {
                    memcpy(out, value, n + 1);
                    return EB_OK;
                }
            }
            p = bar ? bar + 1 : NULL;
        }
        return eb_error_set(err, EB_ERR_ARG, "setting '%s': '%s' is not one of %s", sp->key,
                            value, sp->choices);
    }
    }
    return eb_error_set(err, EB_ERR_INTERNAL, "setting '%s' has an unknown type", sp->key);
}

eb_status eb_settings_init(eb_settings *s, const eb_setting_spec *spec, eb_error *err)
{
    memset(s, 0, sizeof *s);
    s->spec = spec;
    for (int i = 0; spec[i].key; i++) {
        eb_status st;
        if (i >= EB_SETTINGS_MAX)
            return eb_error_set(err, EB_ERR_INTERNAL, "more than %d settings", EB_SETTINGS_MAX);
        st = check_value(&spec[i], spec[i].def, s->value[i], err);
        if (st)
            return eb_error_prefix(err, "default of ");
        s->n = i + 1;
    }
    return EB_OK;
}

eb_status eb_settings_set(eb_settings *s, const char *key, const char *value, eb_error *err)
{
    int i = find(s, key);
    char canon[EB_SETTING_VALUE_MAX];
    if (i < 0) {
        char keys[512];
        known_keys(s, keys, sizeof keys);
        return eb_error_set(err, EB_ERR_ARG, "unknown setting '%s' (known: %s)", key, keys);
    }
    if (check_value(&s->spec[i], value, canon, err))
        return err ? err->code : EB_ERR_ARG;
    memcpy(s->value[i], canon, sizeof canon);
    s->explicit_[i] = 1;
    return EB_OK;
}

eb_status eb_settings_assign(eb_settings *s, const char *assignment, eb_error *err)
{
    char key[EB_SETTING_VALUE_MAX];
    const char *eq = strchr(assignment, '=');
    size_t n;
    if (!eq || eq == assignment)
        return eb_error_set(err, EB_ERR_ARG, "'%s' is not of the form key=value", assignment);
    n = (size_t)(eq - assignment);
    if (n >= sizeof key)
        return eb_error_set(err, EB_ERR_ARG, "setting name in '%.40s' is too long", assignment);
    memcpy(key, assignment, n);
    key[n] = '\0';
    return eb_settings_set(s, key, eq + 1, err);
}

eb_status eb_settings_assign_list(eb_settings *s, const char *list, eb_error *err)
{
    const char *p = list;
    while (*p) {
        char one[2 * EB_SETTING_VALUE_MAX + 2];
        size_t len = strcspn(p, " ");
        eb_status st;
        if (len == 0) {
            p++;
            continue;
        }
        if (len >= sizeof one)
            return eb_error_set(err, EB_ERR_ARG, "setting '%.40s...' is too long", p);
        memcpy(one, p, len);
        one[len] = '\0';
        if ((st = eb_settings_assign(s, one, err)))
            return st;
        p += len;
    }
    return EB_OK;
}

long eb_settings_int(const eb_settings *s, const char *key)
{
    int i = find(s, key);
    return i < 0 ? 0 : strtol(s->value[i], NULL, 10);
}

double eb_settings_float(const eb_settings *s, const char *key)
{
    int i = find(s, key);
    return i < 0 ? 0.0 : strtod(s->value[i], NULL);
}

const char *eb_settings_str(const eb_settings *s, const char *key)
{
    int i = find(s, key);
    return i < 0 ? "" : s->value[i];
}

eb_status eb_settings_to_meta(const eb_settings *s, eb_bundle_writer *w, eb_error *err)
{
    for (int i = 0; i < s->n; i++) {
        char key[80];
        eb_status st;
        snprintf(key, sizeof key, "hp.%s", s->spec[i].key);
        st = eb_bundle_writer_meta(w, key, s->value[i], err);
        if (st)
            return st;
    }
    return EB_OK;
}
