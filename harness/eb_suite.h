/* eb_suite.h: suite files: what a benchmark run measures. A suite is an
 * INI file (parsed with inih): which seeds, architectures, methods with
 * their settings, device and its options, facets, and how each facet is
 * evaluated. Two suites are built in: `quick` (every method, mlp, one
 * seed: minutes) and `paper` (both architectures, 3 seeds, S up to 30).
 * docs/suites.md describes every section and key.
 *
 * A suite expands into jobs: seed x architecture x method. Each job has a
 * key, the SHA-256 of its canonical definition (method, settings,
 * architecture, seed, device and evaluation options, dataset choices), so
 * a rerun can skip finished jobs and two runs' jobs can be compared. */
#ifndef EB_SUITE_H
#define EB_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"
#include "methods/eb_methods.h"
#include "methods/eb_transform.h"

#define EB_SUITE_MAX_METHODS 32
#define EB_SUITE_MAX_SEEDS 16
#define EB_SUITE_MAX_ARCHS 4
#define EB_SUITE_MAX_LIST 16
#define EB_SUITE_NAME_MAX 64

/* Facets, as bits. */
enum {
    EB_FACET_QUALITY = 1 << 0,       /* accuracy, NLL, Brier */
    EB_FACET_CALIBRATION = 1 << 1,   /* ECE (equal width and mass), MCE, classwise ECE, bins */
    EB_FACET_OOD = 1 << 2,           /* AUROC, AUPR, FPR@95 by entropy, MI, 1 - max p */
    EB_FACET_MISCLASS = 1 << 3,      /* misclassification-detection AUROC */
    EB_FACET_SELECTIVE = 1 << 4,     /* accuracy-rejection curve and its area */
    EB_FACET_ADVERSARIAL = 1 << 5,   /* FGSM and PGD over an epsilon grid */
    EB_FACET_SHIFT = 1 << 6,         /* corruptions x severities */
    EB_FACET_LATENCY = 1 << 7,       /* single-stream latency, first prediction */
    EB_FACET_THROUGHPUT = 1 << 8,    /* offline throughput */
    EB_FACET_LOAD = 1 << 9,          /* cold and warm load time */
    EB_FACET_MEMORY = 1 << 10,       /* peak RSS per phase, model bytes */
    EB_FACET_STORAGE = 1 << 11,      /* bundle bytes on disk */
    EB_FACET_DIAGNOSTICS = 1 << 12,  /* split R-hat, ESS, member disagreement, HMC acceptance */
    EB_FACET_FIDELITY = 1 << 13,     /* agreement and TV against the reference posterior */
    EB_FACET_ALL = (1 << 14) - 1
};
/* "quality" -> EB_FACET_QUALITY; 0 if unknown. */
unsigned eb_facet_bit(const char *name);
const char *eb_facet_name(unsigned bit);

typedef struct eb_suite_method {
    char label[EB_SUITE_NAME_MAX]; /* the section's name: [method <label>] */
    const eb_method *method;       /* `method = <kind>`, default: the label */
    int n_archs;                   /* `arch = a, b`: only these (0: the suite's archs) */
    char archs[EB_SUITE_MAX_ARCHS][EB_SUITE_NAME_MAX];
    int n_sets;                    /* settings as written (validated) */
    char set_key[EB_SETTINGS_MAX * 2][EB_SUITE_NAME_MAX]; /* "epochs" or "cnn.epochs" */
    char set_value[EB_SETTINGS_MAX * 2][EB_SETTING_VALUE_MAX];
} eb_suite_method;

/* A [transform <label>] section: a transform with settings, usable as a
 * step of a chain by its label. */
typedef struct eb_suite_transform {
    char label[EB_SUITE_NAME_MAX];
    const eb_transform *transform; /* `transform = <kind>`, default: the label */
    int n_sets;
    char set_key[EB_SETTINGS_MAX][EB_SUITE_NAME_MAX];
    char set_value[EB_SETTINGS_MAX][EB_SETTING_VALUE_MAX];
} eb_suite_transform;

#define EB_SUITE_MAX_TRANSFORMS 16
#define EB_SUITE_MAX_CHAINS 64
#define EB_CHAIN_MAX_STEPS 4

/* One step of a chain: "prune:0.9" (a transform name or a [transform]
 * label, and an optional value for the transform's short key). */
typedef struct eb_chain_step {
    const eb_transform *transform;
    int section;                       /* index into suite transforms, -1: none */
    char value[EB_SETTING_VALUE_MAX];  /* "" when no ':value' */
} eb_chain_step;

/* A line of [chains]: `label = method -> step -> step`. */
typedef struct eb_suite_chain {
    char label[EB_SUITE_NAME_MAX];
    int method;                        /* index of the base [method] section */
    int n_steps;
    eb_chain_step steps[EB_CHAIN_MAX_STEPS];
    char text[256];                    /* canonical: "sgld -> prune:0.9 -> quantize:int8" */
} eb_suite_chain;

typedef struct eb_suite {
    char name[EB_SUITE_NAME_MAX];
    char source[256];   /* file path, or "built-in:quick" */
    char sha256[65];    /* of the suite text */
    char description[256];
    int n_seeds;
    uint64_t seeds[EB_SUITE_MAX_SEEDS];
    int n_archs;
    char archs[EB_SUITE_MAX_ARCHS][EB_SUITE_NAME_MAX]; /* "mlp", "cnn" */
    unsigned facets;
    /* [data] */
    char train[64], test[64], ood[64]; /* "fashion-mnist/train", ... */
    size_t test_limit, ood_limit;      /* 0 = all */
    /* [evaluation] */
    uint32_t draws;     /* 0 = each posterior's default S */
    int bootstrap;      /* resamples for intervals (0 = none) */
    double ci_level;
    int store_predictions;
    /* [device] */
    char device[32];
    char strategy[32];          /* the cpu device's execution strategy ("auto") */
    int threads;                /* 0 = online CPUs */
    int latency_warmup, latency_min_queries;
    double latency_min_seconds;
    int throughput_batch;
    double throughput_min_seconds;
    /* [adversarial] */
    int n_eps;
    double eps[EB_SUITE_MAX_LIST];
    int fgsm, pgd;              /* which attacks */
    int pgd_steps;
    double pgd_step;            /* step size as a fraction of eps */
    int pgd_random_start;
    size_t adversarial_subset;
    /* [shift] */
    int n_corruptions;
    char corruptions[EB_SUITE_MAX_LIST][32];
    int n_severities;
    int severities[EB_SUITE_MAX_LIST];
    size_t shift_subset;
    /* [fidelity] */
    char fidelity_reference[EB_SUITE_NAME_MAX]; /* a method label, "" = none */
    /* [method ...] */
    int n_methods;
    eb_suite_method methods[EB_SUITE_MAX_METHODS];
    /* [transform ...] and [chains] */
    int n_transforms;
    eb_suite_transform transforms[EB_SUITE_MAX_TRANSFORMS];
    int n_chains;
    eb_suite_chain chains[EB_SUITE_MAX_CHAINS];
} eb_suite;

/* Parses suite text; `source` names it in messages ("suite.ini",
 * "built-in:quick"). Errors name the source, the line and the key. */
eb_status eb_suite_parse(const char *text, const char *source, eb_suite *s, eb_error *err);
/* Loads a suite by name (a built-in: "quick", "paper") or file path. */
eb_status eb_suite_load(const char *name_or_path, eb_suite *s, eb_error *err);
/* The text of a built-in suite, or NULL. */
const char *eb_suite_builtin(const char *name);

/* One unit of work. */
typedef struct eb_job {
    int index;                 /* in the suite's expansion order */
    const eb_suite_method *m;
    char arch[EB_SUITE_NAME_MAX];
    uint64_t seed;
    eb_settings settings;      /* the method's settings for this arch */
    /* A chain job: the base method's bundle, then each step's transform
     * with its settings. NULL for a plain method job. */
    const eb_suite_chain *chain;
    eb_settings step_settings[EB_CHAIN_MAX_STEPS];
    char name[160];            /* "ensemble/mlp/s1" */
    char key[65];              /* SHA-256 of the canonical definition */
} eb_job;

/* Expands the suite into jobs (seed-major, then arch, then each method,
 * then each chain whose base method runs on the arch). The
 * caller frees *jobs with eb_free. shard_index in [1, shard_count]: only
 * jobs with index % shard_count == shard_index - 1 are returned. */
eb_status eb_suite_jobs(const eb_suite *s, int shard_index, int shard_count, eb_job **jobs,
                        int *n_jobs, eb_error *err);

/* The canonical settings text of a job ("key=value;..." sorted), used in
 * keys, bundle hashes and the database. */
void eb_job_settings_text(const eb_job *j, char *buf, size_t len);
/* The same for settings of any spec (a chain step's). */
void eb_settings_text(const eb_settings *st, char *buf, size_t len);

/* Parses one chain text "method -> step -> ..." against the suite's
 * method and transform sections into *c (label left as is). Errors name
 * the part at fault. */
eb_status eb_suite_parse_chain(const eb_suite *s, const char *text, eb_suite_chain *c,
                               eb_error *err);
/* The settings of step i of a chain: the transform's defaults, its
 * [transform] section's keys, then the short value. */
eb_status eb_chain_step_settings(const eb_suite *s, const eb_chain_step *step,
                                 eb_settings *st, eb_error *err);

#endif /* EB_SUITE_H */
