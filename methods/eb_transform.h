/* eb_transform.h: bundle transforms. A transform takes a posterior bundle
 * (the parent) and produces a new posterior: pruned, quantized or
 * distilled. Like methods, transforms are entries of one const table, so
 * the CLI (`edgebayes transform`), suite chains (`sgld -> prune:0.9 ->
 * quantize:int8`) and the docs enumerate them from one place. The output
 * is an eb_trained (methods/eb_methods.h) whose `storage`, `groups` and
 * `head` fields tell the bundle writer how to store it; eb_transform_bundle
 * writes it with the parent recorded in the metadata. */
#ifndef EB_TRANSFORM_H
#define EB_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "harness/eb_data.h"
#include "methods/eb_bundle.h"
#include "methods/eb_methods.h"

/* What a transform works from. */
typedef struct eb_transform_request {
    const eb_bundle *parent;      /* the input bundle, open */
    const eb_posterior *posterior; /* its posterior view (decoded values) */
    const char *parent_path;
    const eb_dataset *train;      /* training data (fine-tuning, distillation, calibration) */
    const eb_settings *settings;  /* the transform's settings */
    uint64_t seed;
    int threads;
    eb_progress_fn progress;      /* may be NULL */
    void *progress_ctx;
} eb_transform_request;

typedef struct eb_transform {
    const char *name;    /* "prune", "quantize", "distill" */
    const char *summary;
    const eb_setting_spec *settings;
    /* The setting a chain step's short form sets: "prune:0.9" sets
     * sparsity=0.9, "quantize:int8" sets precision=int8. */
    const char *short_key;
    eb_status (*apply)(const eb_transform_request *req, eb_trained *out, eb_error *err);
    /* apply() reads req->train (fine-tuning, distillation); otherwise
     * req->train may be NULL and the runner does not load it. */
    int needs_train;
    /* Optional (NULL: needs_train decides): whether apply() reads
     * req->train under these settings (quantize: only to calibrate). */
    int (*needs_train_for)(const eb_settings *settings);
} eb_transform;

/* Whether t reads training data under these settings: what a caller
 * (the CLI, the runner) asks before loading it. */
int eb_transform_needs_train(const eb_transform *t, const eb_settings *settings);

/* Applies t to the bundle at parent_path (train: training data for
 * transforms that fine-tune or distil; may be NULL for those that do not)
 * and writes the result to path atomically. The new bundle keeps the
 * parent's metadata (its method, settings and provenance) and adds, for
 * this step d (1 for a transform of a trained bundle, parent's + 1
 * otherwise): transform.depth, transform.chain ("quantize:int8" steps
 * joined by " -> "), transform.<d>.name, .parent_sha256, .seed, .threads,
 * .code, and the settings as transform.<d>.hp.<key>; the transform's own
 * metadata entries (prune.sparsity, ...) replace the parent's of the same
 * key. Deterministic: the same parent, settings, seed and thread count
 * give the same bytes. *seconds (may be NULL): the time apply() took. */
eb_status eb_transform_bundle(const eb_transform *t, const char *parent_path,
                              const eb_dataset *train, const eb_settings *settings, uint64_t seed,
                              int threads, eb_progress_fn progress, void *progress_ctx,
                              const char *path, double *seconds, eb_error *err);

/* Settings with the transform's defaults. */
eb_status eb_transform_settings(const eb_transform *t, eb_settings *s, eb_error *err);

/* The transform table, terminated by a NULL name. */
extern const eb_transform *const eb_transforms[];
const eb_transform *eb_transform_find(const char *name);

#endif /* EB_TRANSFORM_H */
