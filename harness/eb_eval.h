/* eb_eval.h: the evaluation the `predict` and `run` commands print:
 * predictions of a posterior on the in-distribution test set and on the
 * out-of-distribution set, scored with metrics/. (The full facet set,
 * stored in SQLite, is the evaluation stage's job.) */
#ifndef EB_EVAL_H
#define EB_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "harness/eb_data.h"
#include "methods/eb_methods.h"

typedef struct eb_eval_result {
    uint32_t draws;          /* S used */
    size_t n_test;
    double accuracy, nll, brier;
    double test_entropy;     /* mean total entropy on the test set */
    double test_mi;          /* mean mutual information on the test set */
    size_t n_ood;            /* 0 when no OOD set was given */
    double ood_entropy, ood_mi;
    double auroc_entropy;    /* OOD (positive) vs test by total entropy */
    double auroc_mi;         /* ... by mutual information */
    double predict_seconds;  /* wall time of all predictions */
} eb_eval_result;

/* ood may be NULL. S = 0: the posterior's default. */
eb_status eb_evaluate(const eb_posterior *p, const eb_dataset *test, const eb_dataset *ood,
                      uint32_t S, uint64_t seed, eb_eval_result *r, eb_error *err);

#endif /* EB_EVAL_H */
