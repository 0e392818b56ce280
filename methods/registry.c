/* registry.c: the method table, per-architecture defaults, and the
 * train-to-bundle path that adds provenance metadata. */
#include <stdio.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "common/eb_version.h"
#include "methods/eb_methods.h"

extern const eb_method eb_method_map, eb_method_ensemble, eb_method_dropout;
/* the Bayesian methods: sgmcmc.c, hmc.c, vi.c, snapshot.c */
extern const eb_method eb_method_sgld, eb_method_sghmc, eb_method_csgld, eb_method_csghmc,
    eb_method_hmc, eb_method_vi, eb_method_snapshot;

const eb_method *const eb_methods[] = {&eb_method_map,    &eb_method_ensemble, &eb_method_dropout,
                                       &eb_method_sgld,   &eb_method_sghmc,    &eb_method_csgld,
                                       &eb_method_csghmc, &eb_method_hmc,      &eb_method_vi,
                                       &eb_method_snapshot, NULL};

const eb_method *eb_method_find(const char *name)
{
    for (int i = 0; eb_methods[i]; i++)
        if (!strcmp(eb_methods[i]->name, name))
            return eb_methods[i];
    return NULL;
}

eb_status eb_method_settings(const eb_method *m, const char *arch_name, eb_settings *s,
                             eb_error *err)
{
    eb_status st = eb_settings_init(s, m->settings, err);
    if (st || !m->arch_defaults || !arch_name)
        return st;
    for (int i = 0; m->arch_defaults[i]; i++) {
        const char *line = m->arch_defaults[i];
        const char *colon = strchr(line, ':');
        char buf[256];
        char *tok, *save = NULL;
        if (!colon || (size_t)(colon - line) != strlen(arch_name) ||
            strncmp(line, arch_name, (size_t)(colon - line)))
            continue;
        snprintf(buf, sizeof buf, "%s", colon + 1);
        for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
            st = eb_settings_assign(s, tok, err);
            if (st)
                return st;
            /* a default, not the user's choice */
            for (int k = 0; k < s->n; k++)
                if (!strncmp(s->spec[k].key, tok, strlen(s->spec[k].key)) &&
                    tok[strlen(s->spec[k].key)] == '=')
                    s->explicit_[k] = 0;
        }
    }
    return EB_OK;
}

eb_status eb_trained_alloc(eb_trained *t, const eb_arch *arch, eb_repr_kind repr,
                           uint32_t members, uint32_t rows, eb_error *err)
{
    size_t bytes;
    memset(t, 0, sizeof *t);
    if (eb_size_mul((size_t)rows, arch->n_params * sizeof(float), &bytes))
        return eb_error_set(err, EB_ERR_ARG, "%u x %zu parameters overflow memory", rows,
                            arch->n_params);
    t->params = eb_malloc_aligned(64, bytes);
    if (!t->params)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for %u x %zu parameters", rows,
                            arch->n_params);
    t->arch = *arch;
    t->repr = repr;
    t->members = members;
    t->rows = rows;
    return EB_OK;
}

void eb_trained_free(eb_trained *t)
{
    eb_free_aligned(t->params);
    t->params = NULL;
    eb_free(t->meta);
    t->meta = NULL;
    eb_free(t->groups);
    t->groups = NULL;
    t->n_groups = 0;
    eb_free(t->act_scales);
    t->act_scales = NULL;
    t->n_act = 0;
    t->meta_len = t->meta_cap = 0;
}

eb_status eb_trained_meta(eb_trained *t, const char *key, const char *value, eb_error *err)
{
    const size_t kl = strlen(key), vl = strlen(value);
    size_t need;
    if (eb_size_add(t->meta_len, kl + vl + 3, &need))
        return eb_error_set(err, EB_ERR_NOMEM, "metadata '%s' is too large", key);
    if (need > t->meta_cap) {
        size_t cap = t->meta_cap ? t->meta_cap : 1024;
        char *m;
        while (cap < need)
            cap *= 2;
        m = eb_realloc(t->meta, cap);
        if (!m)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata '%s'", key);
        t->meta = m;
        t->meta_cap = cap;
    }
    /* "key=value\n"; the writer validates the syntax of both */
    memcpy(t->meta + t->meta_len, key, kl);
    t->meta[t->meta_len + kl] = '=';
    memcpy(t->meta + t->meta_len + kl + 1, value, vl);
    t->meta[t->meta_len + kl + 1 + vl] = '\n';
    t->meta[t->meta_len + kl + 2 + vl] = '\0';
    t->meta_len += kl + vl + 2;
    return EB_OK;
}

/* Hands the method's metadata lines to the writer. A key or value with a
 * '=' or newline of its own cannot come from eb_trained_meta's callers
 * (keys are ours; values are numbers), but a line without '=' would be
 * refused here rather than written wrongly. */
const char *eb_trained_meta_get(const eb_trained *t, const char *key, char *buf, size_t len)
{
    const size_t kl = strlen(key);
    const char *line = t->meta_len ? t->meta : NULL;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        const size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        if (ll > kl && !strncmp(line, key, kl) && line[kl] == '=') {
            snprintf(buf, len, "%.*s", (int)(ll - kl - 1), line + kl + 1);
            return buf;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

eb_status eb_trained_meta_each(const eb_trained *t, eb_trained_meta_fn fn, void *ctx,
                               eb_error *err)
{
    size_t pos = 0;
    char *buf;
    eb_status st = EB_OK;
    if (!t->meta_len)
        return EB_OK;
    buf = eb_malloc(t->meta_len + 1);
    if (!buf)
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory reading metadata");
    memcpy(buf, t->meta, t->meta_len + 1);
    while (pos < t->meta_len && !st) {
        char *line = buf + pos, *nl = strchr(line, '\n'), *eq = strchr(line, '=');
        *nl = '\0';
        if (!eq || eq > nl) {
            st = eb_error_set(err, EB_ERR_INTERNAL, "metadata line '%.40s' has no '='", line);
            break;
        }
        *eq = '\0';
        st = fn(ctx, line, eq + 1, err);
        pos = (size_t)(nl - buf) + 1;
    }
    eb_free(buf);
    return st;
}

static eb_status to_writer(void *w, const char *key, const char *value, eb_error *err)
{
    return eb_bundle_writer_meta(w, key, value, err);
}

eb_status eb_trained_write_meta(const eb_trained *t, eb_bundle_writer *w, eb_error *err)
{
    return eb_trained_meta_each(t, to_writer, w, err);
}

eb_status eb_trained_to_writer(const eb_trained *t, eb_bundle_writer *w, eb_error *err)
{
    char arch_text[EB_ARCH_TEXT_MAX];
    eb_status st = eb_arch_format(&t->arch, arch_text, sizeof arch_text, err);
    if (!st)
        st = eb_bundle_writer_arch(w, arch_text, err);
    if (st)
        return st;
    switch (t->repr) {
    case EB_REPR_SAMPLES:
        st = eb_bundle_writer_samples(w, t->rows, t->arch.n_params, t->params, err);
        break;
    case EB_REPR_DROPOUT:
        st = eb_bundle_writer_dropout(w, t->members, t->arch.n_params, t->params, err);
        break;
    case EB_REPR_GAUSSIAN:
        if (t->rows != 2)
            return eb_error_set(err, EB_ERR_INTERNAL, "a gaussian posterior has 2 rows, not %u",
                                t->rows);
        st = eb_bundle_writer_gaussian(w, t->members, t->arch.n_params, t->params,
                                       t->params + t->arch.n_params, err);
        break;
    case EB_REPR_DISTILLED:
        st = eb_bundle_writer_distilled(w, (eb_head_kind)t->head, t->members, t->arch.n_params,
                                        t->params, err);
        break;
    default:
        return eb_error_set(err, EB_ERR_INTERNAL, "representation %d cannot be written",
                            (int)t->repr);
    }
    if (!st && t->storage && t->storage != EB_STORE_F32)
        st = eb_bundle_writer_storage(w, t->storage, t->groups, t->n_groups, err);
    if (!st && t->act_scales)
        st = eb_bundle_writer_act_scales(w, t->act_scales, t->n_act, err);
    return st;
}

static eb_status meta_u64(eb_bundle_writer *w, const char *key, uint64_t v, eb_error *err)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return eb_bundle_writer_meta(w, key, buf, err);
}

eb_status eb_method_train_bundle(const eb_method *m, const eb_train_request *req,
                                 const char *path, eb_error *err)
{
    eb_bundle_writer *w = NULL;
    eb_trained t;
    eb_status st;
    int threads = eb_nn_set_threads(req->threads);

    memset(&t, 0, sizeof t);
    st = eb_bundle_writer_new(&w, err);
    if (st)
        return st;
    /* Provenance first, so `inspect` lists it in a stable order. No
     * timestamps: the same request must give the same bytes. */
    st = eb_bundle_writer_meta(w, "method", m->name, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "arch", req->arch_name, err);
    if (!st)
        st = meta_u64(w, "seed", req->seed, err);
    if (!st)
        st = meta_u64(w, "threads", (uint64_t)threads, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "data.name", req->train->name, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "data.split", req->train->split, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "data.sha256", req->train->digest, err);
    if (!st)
        st = meta_u64(w, "data.n", req->train->n, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "code.version", eb_version(), err);
    if (!st)
        st = eb_bundle_writer_meta(w, "code.commit", eb_version_commit(), err);
    if (!st)
        st = eb_bundle_writer_meta(w, "code.compiler", __VERSION__, err);
    if (!st)
        st = eb_bundle_writer_meta(w, "code.blas", eb_nn_blas_info(), err);
    if (!st)
        st = eb_settings_to_meta(req->settings, w, err);
    if (!st)
        st = m->train(req, &t, err);
    if (!st)
        st = eb_trained_write_meta(&t, w, err);
    if (!st)
        st = eb_trained_to_writer(&t, w, err);
    if (!st)
        st = eb_bundle_write(w, path, err);
    eb_bundle_writer_free(w);
    eb_trained_free(&t);
    return st;
}
