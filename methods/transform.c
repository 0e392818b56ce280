/* transform.c: the transform table and the path from a parent bundle to
 * a transformed one, with the lineage recorded in the metadata. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_version.h"
#include "methods/eb_transform.h"

extern const eb_transform eb_transform_prune, eb_transform_quantize, eb_transform_distill;

const eb_transform *const eb_transforms[] = {&eb_transform_prune, &eb_transform_quantize,
                                             &eb_transform_distill, NULL};

const eb_transform *eb_transform_find(const char *name)
{
    for (int i = 0; eb_transforms[i]; i++)
        if (!strcmp(eb_transforms[i]->name, name))
            return eb_transforms[i];
    return NULL;
}

eb_status eb_transform_settings(const eb_transform *t, eb_settings *s, eb_error *err)
{
    return eb_settings_init(s, t->settings, err);
}

/* The child's own metadata, before the parent's is merged in: a growing
 * list of owned key/value pairs. */
typedef struct meta_list {
    size_t n, cap;
    char **key, **value;
} meta_list;

static void meta_list_free(meta_list *m)
{
    for (size_t i = 0; i < m->n; i++) {
        eb_free(m->key[i]);
        eb_free(m->value[i]);
    }
    eb_free(m->key);
    eb_free(m->value);
    memset(m, 0, sizeof *m);
}

static int meta_list_has(const meta_list *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key))
            return 1;
    return 0;
}

/* Adds key=value, replacing an earlier value of the same key. */
static eb_status meta_list_put(meta_list *m, const char *key, const char *value, eb_error *err)
{
    char *k, *v;
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) {
            v = eb_strdup(value);
            if (!v)
                return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata");
            eb_free(m->value[i]);
            m->value[i] = v;
            return EB_OK;
        }
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 32;
        char **nk = eb_realloc(m->key, cap * sizeof *nk);
        if (!nk)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata");
        m->key = nk;
        char **nv = eb_realloc(m->value, cap * sizeof *nv);
        if (!nv)
            return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata");
        m->value = nv;
        m->cap = cap;
    }
    k = eb_strdup(key);
    v = eb_strdup(value);
    if (!k || !v) {
        eb_free(k);
        eb_free(v);
        return eb_error_set(err, EB_ERR_NOMEM, "out of memory for metadata");
    }
    m->key[m->n] = k;
    m->value[m->n] = v;
    m->n++;
    return EB_OK;
}

static eb_status put_entry(void *m, const char *key, const char *value, eb_error *err)
{
    return meta_list_put(m, key, value, err);
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int eb_transform_needs_train(const eb_transform *t, const eb_settings *settings)
{
    return t->needs_train_for ? t->needs_train_for(settings) : t->needs_train;
}

eb_status eb_transform_bundle(const eb_transform *t, const char *parent_path,
                              const eb_dataset *train, const eb_settings *settings, uint64_t seed,
                              int threads, eb_progress_fn progress, void *progress_ctx,
                              const char *path, double *seconds, eb_error *err)
{
    eb_bundle *parent = NULL;
    eb_bundle_writer *w = NULL;
    eb_posterior post;
    eb_trained out;
    eb_transform_request req;
    meta_list child;
    char parent_sha[65], key[96], value[512];
    const char *chain, *depth_text;
    long depth;
    double t0;
    eb_status st;
    int nthreads = eb_nn_set_threads(threads);

    memset(&out, 0, sizeof out);
    memset(&child, 0, sizeof child);
    memset(&post, 0, sizeof post);
    if (seconds)
        *seconds = 0.0;
    if ((st = eb_sha256_file(parent_path, parent_sha, err)) ||
        (st = eb_bundle_open(parent_path, EB_BUNDLE_OPEN_DEFAULT, &parent, err)))
        return st;
    if ((st = eb_posterior_from_bundle(parent, &post, err)))
        goto done;

    memset(&req, 0, sizeof req);
    req.parent = parent;
    req.posterior = &post;
    req.parent_path = parent_path;
    req.train = train;
    req.settings = settings;
    req.seed = seed;
    req.threads = nthreads;
    req.progress = progress;
    req.progress_ctx = progress_ctx;
    t0 = now_sec();
    st = t->apply(&req, &out, err);
    if (seconds)
        *seconds = now_sec() - t0;
    if (st) {
        eb_error_prefix(err, "%s of '%s': ", t->name, parent_path);
        goto done;
    }

    /* the lineage of this step */
    depth_text = eb_bundle_meta_get(parent, "transform.depth");
    depth = depth_text ? strtol(depth_text, NULL, 10) + 1 : 1;
    if (depth < 1 || depth > 99) {
        st = eb_error_set(err, EB_ERR_FORMAT, "%s: metadata transform.depth '%s' is not 0..98",
                          parent_path, depth_text);
        goto done;
    }
    chain = eb_bundle_meta_get(parent, "transform.chain");
    {
        const char *sv = t->short_key ? eb_settings_str(settings, t->short_key) : NULL;
        snprintf(value, sizeof value, "%s%s%s%s%s", chain ? chain : "", chain ? " -> " : "",
                 t->name, sv ? ":" : "", sv ? sv : "");
    }
    snprintf(key, sizeof key, "%ld", depth);
    if (!(st = meta_list_put(&child, "transform.depth", key, err)))
        st = meta_list_put(&child, "transform.chain", value, err);
#define PUT(suffix, val)                                                   \
    if (!st) {                                                             \
        snprintf(key, sizeof key, "transform.%ld.%s", depth, suffix);      \
        st = meta_list_put(&child, key, val, err);                         \
    }
    PUT("name", t->name);
    PUT("parent_sha256", parent_sha);
    snprintf(value, sizeof value, "%llu", (unsigned long long)seed);
    PUT("seed", value);
    snprintf(value, sizeof value, "%d", nthreads);
    PUT("threads", value);
    snprintf(value, sizeof value, "%s %s", eb_version(), eb_version_commit());
    PUT("code", value);
#undef PUT
    for (int i = 0; i < settings->n && !st; i++) {
        snprintf(key, sizeof key, "transform.%ld.hp.%s", depth, settings->spec[i].key);
        st = meta_list_put(&child, key, settings->value[i], err);
    }
    if (!st)
        st = eb_trained_meta_each(&out, put_entry, &child, err);

    /* parent's entries first (those the child does not replace), then the child's */
    if (!st)
        st = eb_bundle_writer_new(&w, err);
    for (size_t i = 0; i < eb_bundle_meta_count(parent) && !st; i++) {
        const char *k, *v;
        eb_bundle_meta_at(parent, i, &k, &v);
        if (!meta_list_has(&child, k))
            st = eb_bundle_writer_meta(w, k, v, err);
    }
    for (size_t i = 0; i < child.n && !st; i++)
        st = eb_bundle_writer_meta(w, child.key[i], child.value[i], err);
    if (!st)
        st = eb_trained_to_writer(&out, w, err);
    if (!st)
        st = eb_bundle_write(w, path, err);
done:
    eb_bundle_writer_free(w);
    meta_list_free(&child);
    eb_trained_free(&out);
    eb_posterior_release(&post);
    eb_bundle_close(parent);
    return st;
}
