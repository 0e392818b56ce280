/* eb_bundle.h: the posterior bundle file, the deployable artefact of
 * edgebayes: an architecture spec, one posterior representation and the
 * caller's metadata in one little-endian, 64-byte-aligned file that is
 * mmapped and used in place. docs/bundle-format.md documents every byte.
 *
 * Reading: eb_bundle_open() maps a file and validates every field (header,
 * section table, bounds, overlaps, padding, CRC-32s, the posterior header,
 * tensor sizes, metadata syntax) before it returns a handle; a truncated,
 * corrupted or hostile file yields an error code and a sentence naming the
 * file and the field at fault, never an out-of-bounds read. The handle is a
 * read-only view; every accessor is then a plain field read, and several
 * threads may use one handle at once.
 *
 * Writing: an eb_bundle_writer collects the parts, then eb_bundle_write()
 * lays the file out deterministically (same content -> byte-identical
 * file) and commits it atomically through a temporary file.
 *
 * Only what is in this header is API; the format constants live in
 * methods/bundle_internal.h and in the documentation. */
#ifndef EB_BUNDLE_H
#define EB_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

/* The format version this code implements; it reads any file with this
 * major and any minor (higher minors only add what an older reader may
 * skip). The writer writes the lowest minor that describes the file: 2
 * for a file with static activation scales (ACTSCALES), 1 otherwise. */
#define EB_BUNDLE_FORMAT_MAJOR 1
#define EB_BUNDLE_FORMAT_MINOR 2

/* Posterior representations (the POSTERIOR section's `kind`). All four
 * are implemented by the file format (1.1); a file holding another one is
 * refused with EB_ERR_UNSUPPORTED. */
typedef enum eb_repr_kind {
    EB_REPR_SAMPLES = 1,   /* S members, S x K values (ensembles, MCMC, snapshots) */
    EB_REPR_GAUSSIAN = 2,  /* mean-field: mu[K], sigma[K] (VI), sampled at prediction */
    EB_REPR_DROPOUT = 3,   /* theta[K]; rates live in the architecture spec */
    EB_REPR_DISTILLED = 4  /* one student network theta[K] with its head (eb_head_kind) */
} eb_repr_kind;

/* How the values are stored (format 1.1 implements all five; see
 * docs/bundle-format.md for the sections each one uses). */
typedef enum eb_storage_kind {
    EB_STORE_F32 = 1,
    EB_STORE_F16 = 2,           /* IEEE binary16, round to nearest even */
    EB_STORE_INT8 = 3,          /* int8 values + one f32 scale per (row, group) */
    EB_STORE_SHARED_SPARSE = 4, /* one index set for all S members + S value rows */
    EB_STORE_CSR = 5            /* per-member compressed sparse rows */
} eb_storage_kind;

/* The head of a distilled student (the POSTERIOR section says which). */
typedef enum eb_head_kind {
    EB_HEAD_NONE = 0,        /* not a distilled bundle */
    EB_HEAD_CATEGORICAL = 1, /* C logits: the predictive (Bayesian Dark Knowledge) */
    EB_HEAD_GPED = 2,        /* C logits + 1 output for the expected data entropy */
    EB_HEAD_DIRICHLET = 3    /* C log-concentrations of a Dirichlet (EnD^2) */
} eb_head_kind;

/* "samples", "gaussian", "dropout", "distilled"; "unknown" otherwise. */
const char *eb_repr_name(eb_repr_kind kind);
/* "f32", "f16", "int8", "shared-sparse", "csr"; "unknown" otherwise. */
const char *eb_storage_name(eb_storage_kind kind);
/* "none", "categorical", "gped", "dirichlet"; "unknown" otherwise. */
const char *eb_head_name(eb_head_kind head);

/* ---- reading ---------------------------------------------------------- */

typedef struct eb_bundle eb_bundle; /* opaque, read-only, validated view */

/* Open flags. */
#define EB_BUNDLE_OPEN_DEFAULT 0u
/* Skip the CRC-32 and the finiteness scan of the tensor sections (PARAMS):
 * open() then touches only the header, table and small sections, which is
 * what a cold-load timing of the mmap path wants. Everything structural is
 * still checked, so the view stays memory-safe; only silent corruption of
 * parameter values goes unnoticed. */
#define EB_BUNDLE_SKIP_TENSOR_CHECK 1u

/* Maps the file at `path` read-only and validates it. On success *out is a
 * new handle the caller frees with eb_bundle_close (which unmaps the file);
 * on failure *out is NULL and err says what is wrong. Codes:
 * EB_ERR_NOTFOUND (no such file), EB_ERR_IO, EB_ERR_FORMAT (malformed),
 * EB_ERR_CHECKSUM (a CRC-32 does not match), EB_ERR_UNSUPPORTED (a newer
 * major version, a representation, storage kind or required section this
 * reader does not implement), EB_ERR_NUMERIC (a parameter is NaN or
 * infinite), EB_ERR_NOMEM, EB_ERR_ARG (unknown flags).
 * The file must not be truncated by another process while it is open
 * (as with any mmap, the access would raise SIGBUS). */
eb_status eb_bundle_open(const char *path, unsigned flags, eb_bundle **out, eb_error *err);

/* The same over a caller's buffer, which is borrowed: it must stay valid
 * and unchanged until eb_bundle_close. `data` must be aligned to 64 bytes
 * (eb_malloc_aligned(64, len)) so the parameters can be handed out as
 * aligned floats; otherwise EB_ERR_ARG. `name` (may be NULL) is used in
 * messages and returned by eb_bundle_path; it is copied. */
eb_status eb_bundle_open_memory(const void *data, size_t len, const char *name, unsigned flags,
                                eb_bundle **out, eb_error *err);

/* Unmaps (for open) and frees everything; NULL is a no-op. Pointers
 * obtained from the handle are invalid afterwards. */
void eb_bundle_close(eb_bundle *b);

/* The path (or the memory name) the bundle was opened with. */
const char *eb_bundle_path(const eb_bundle *b);
/* Size of the whole file in bytes (the header's file_size, checked). */
uint64_t eb_bundle_file_size(const eb_bundle *b);
/* Format version found in the file. */
void eb_bundle_version(const eb_bundle *b, unsigned *major, unsigned *minor);

/* The architecture spec, NUL-terminated (a copy owned by the handle). */
const char *eb_bundle_arch(const eb_bundle *b);

eb_repr_kind eb_bundle_repr(const eb_bundle *b);
eb_storage_kind eb_bundle_storage(const eb_bundle *b);
/* S: the number of members (samples) or the default number of stochastic
 * draws (dropout, gaussian, distilled). Always >= 1. */
uint32_t eb_bundle_members(const eb_bundle *b);
/* K: parameters per member. Always >= 1. */
uint64_t eb_bundle_nparams(const eb_bundle *b);
/* Rows of eb_bundle_params: S for samples, 1 for dropout, gaussian and
 * distilled. */
uint32_t eb_bundle_param_rows(const eb_bundle *b);
/* The values, row-major (rows, K): (S, K) for samples, (1, K) for dropout
 * and distilled, the means mu (1, K) for gaussian. Points into the map (no
 * copy), aligned to 64 bytes, valid until close. Only for f32 storage:
 * NULL for every other storage kind (use eb_bundle_decode, or
 * eb_bundle_stored_view for the stored form). */
const float *eb_bundle_params(const eb_bundle *b);
/* gaussian with f32 storage: the standard deviations sigma (K), each >= 0
 * (unless opened with EB_BUNDLE_SKIP_TENSOR_CHECK), into the map like
 * params; NULL for other representations and other storage kinds. */
const float *eb_bundle_sigma(const eb_bundle *b);

/* The head of a distilled bundle (never EB_HEAD_NONE for one);
 * EB_HEAD_NONE for every other representation. */
eb_head_kind eb_bundle_head(const eb_bundle *b);

/* The tensors of a posterior: the values (params; mu for gaussian) and,
 * for gaussian only, sigma. */
enum { EB_TENSOR_PARAMS = 0 /* params, or mu for gaussian */, EB_TENSOR_SIGMA = 1 };

/* Decodes row `row` (< eb_bundle_param_rows) of a tensor into dst (K) as
 * dense f32, whatever the storage: f16 widened, int8 times its group's
 * scale, zeros where a sparse kind stores nothing. EB_ERR_ARG for a tensor
 * the representation lacks (SIGMA outside gaussian) or a row out of range.
 * Reads only validated sections, so it is safe on any opened bundle. */
eb_status eb_bundle_decode(const eb_bundle *b, int tensor, uint32_t row,
                           float *dst /* (K) */, eb_error *err);

/* The stored form of one tensor, for kernels that use it in place: every
 * pointer points into the map (valid until close) and was validated at
 * open. Fields a storage kind does not use are 0 / NULL. */
typedef struct eb_bundle_stored {
    eb_storage_kind kind; uint32_t rows; uint64_t k;
    const void *values;      /* f32, f16 (uint16_t bits) or int8_t, per kind:
                              * dense kinds (rows, K); SHARED_SPARSE (rows, N);
                              * CSR (nnz), row r at [rowptr[r], rowptr[r+1]) */
    const float *scales;     /* INT8: (rows, n_groups) */
    const uint64_t *groups;  /* INT8: n_groups + 1 offsets, 0 .. K, increasing */
    uint64_t n_groups;
    const uint32_t *index;   /* SHARED_SPARSE: N; CSR: nnz */
    uint64_t n_index;
    const uint64_t *rowptr;  /* CSR: rows + 1 */
    /* INT8 samples or distilled with an ACTSCALES section (1.2), tensor
     * PARAMS only: (rows, n_act) static activation scales, one per row
     * and weighted layer, each finite and > 0; NULL and 0 otherwise (the
     * int8 kernels then quantize activations dynamically). The bundle
     * does not parse the architecture: that n_act is its count of
     * weighted layers is checked by eb_posterior_from_bundle. */
    const float *act_scales;
    uint64_t n_act;
} eb_bundle_stored;
/* Fills *out for tensor EB_TENSOR_PARAMS or EB_TENSOR_SIGMA; for a tensor
 * the representation lacks, *out is all zero (kind 0, values NULL). */
void eb_bundle_stored_view(const eb_bundle *b, int tensor, eb_bundle_stored *out);

/* Metadata, sorted by key (bytewise), keys unique. meta_get returns the
 * value or NULL if absent. Strings are owned by the handle. */
const char *eb_bundle_meta_get(const eb_bundle *b, const char *key);
size_t eb_bundle_meta_count(const eb_bundle *b);
/* i < eb_bundle_meta_count(b). */
void eb_bundle_meta_at(const eb_bundle *b, size_t i, const char **key, const char **value);

/* One row of the section table, in table order (for `edgebayes inspect`). */
typedef struct eb_bundle_section {
    uint32_t type;          /* section type number */
    const char *type_name;  /* "META", "ARCH", "POSTERIOR", "PARAMS", "MU", "SIGMA",
                             * "SCALES", "INDEX", "HEAD", "GROUPS", "ROWPTR", "ACTSCALES"
                             * or "unknown" */
    uint32_t dtype;         /* element type of the payload */
    const char *dtype_name; /* "bytes", "f32", "f16", "i8", "u32", "u64" or "unknown" */
    uint32_t flags;         /* bit 0: required */
    uint64_t offset;        /* from the start of the file; a multiple of 64 */
    uint64_t size;          /* payload bytes, padding excluded */
    uint32_t crc32;         /* zlib CRC-32 of the payload, as stored (verified) */
} eb_bundle_section;

size_t eb_bundle_section_count(const eb_bundle *b);
/* i < eb_bundle_section_count(b); fills *info (its strings are static). */
void eb_bundle_section_info(const eb_bundle *b, size_t i, eb_bundle_section *info);

/* ---- writing ---------------------------------------------------------- */

typedef struct eb_bundle_writer eb_bundle_writer;

/* A new, empty writer; the caller frees it with eb_bundle_writer_free. */
eb_status eb_bundle_writer_new(eb_bundle_writer **out, eb_error *err);

/* Sets the architecture spec (copied): non-empty UTF-8 without NUL, at most
 * EB_BUNDLE_ARCH_MAX bytes. At most once per writer. */
#define EB_BUNDLE_ARCH_MAX (1u << 20)
eb_status eb_bundle_writer_arch(eb_bundle_writer *w, const char *arch_text, eb_error *err);

/* Adds one metadata entry (both copied). key: 1..EB_BUNDLE_META_KEY_MAX
 * characters of [a-z0-9_.]; value: UTF-8 without NUL, '\n' or '\r'. A key
 * may be given once; EB_ERR_ARG otherwise. Entries are written sorted by
 * key, so the order of calls does not change the file. The META section
 * as a whole is limited to EB_BUNDLE_META_MAX bytes. */
#define EB_BUNDLE_META_KEY_MAX 64u
#define EB_BUNDLE_META_MAX (1u << 20)
eb_status eb_bundle_writer_meta(eb_bundle_writer *w, const char *key, const char *value,
                                eb_error *err);

/* Sets the posterior (at most one per writer). The values are BORROWED,
 * not copied (they may be hundreds of megabytes): `theta` must stay valid
 * and unchanged until eb_bundle_write returns or the writer is freed.
 * S >= 1, K >= 1, every value finite (EB_ERR_NUMERIC names the first
 * offender), S x K x 4 bytes representable. */
eb_status eb_bundle_writer_samples(eb_bundle_writer *w, uint32_t S, uint64_t K,
                                   const float *theta /* (S, K) */, eb_error *err);
/* Dropout: theta (K) plus the default number of stochastic draws. */
eb_status eb_bundle_writer_dropout(eb_bundle_writer *w, uint32_t default_draws, uint64_t K,
                                   const float *theta /* (K) */, eb_error *err);

/* Mean-field gaussian: mu (K) and sigma (K), both borrowed like theta,
 * every value finite and every sigma >= 0 (EB_ERR_NUMERIC / EB_ERR_ARG
 * name the first offender), plus the default number of draws. */
eb_status eb_bundle_writer_gaussian(eb_bundle_writer *w, uint32_t default_draws, uint64_t K,
                                    const float *mu /* (K) */, const float *sigma /* (K) */,
                                    eb_error *err);

/* Distilled: one student theta (K) with its head; default_draws as for
 * dropout (the S a prediction uses by default). theta is borrowed like the
 * others' values, finite; head is CATEGORICAL, GPED or DIRICHLET (EB_ERR_ARG
 * otherwise). */
eb_status eb_bundle_writer_distilled(eb_bundle_writer *w, eb_head_kind head, uint32_t default_draws,
                                     uint64_t K, const float *theta /* (K) */, eb_error *err);

/* Chooses how the posterior's values are stored (default F32); call after
 * the posterior setter, before eb_bundle_write. groups: for INT8 only (NULL
 * otherwise), n_groups + 1 increasing offsets from 0 to K; each run
 * [groups[g], groups[g+1]) shares one scale per row. The groups are copied.
 * May be called again to choose another kind. Errors: EB_ERR_ARG (no
 * posterior yet, unknown kind, bad groups, a sparse kind with a nonzero at
 * an index >= 2^32), EB_ERR_NUMERIC (F16: a finite value beyond the f16
 * range, named by row and index). Each row of each tensor (gaussian: mu and
 * sigma) is stored with the kind:
 *   F16: round to nearest even;
 *   INT8: scale(row, g) = max |v| over the run / 127 (0 if all zero),
 *         q = round(v / scale) clamped to [-127, 127];
 *   SHARED_SPARSE: one index set, the positions nonzero in any row of any
 *         tensor, and (rows, N) values;
 *   CSR: per row, the nonzero positions and their values (gaussian: one
 *         pattern for mu and sigma, the positions where either is nonzero).
 * -0.0 counts as zero for the sparse kinds (it decodes as +0.0). */
eb_status eb_bundle_writer_storage(eb_bundle_writer *w, eb_storage_kind kind,
                                   const uint64_t *groups, size_t n_groups, eb_error *err);

/* Static activation scales for the int8 kernels (format 1.2, section
 * ACTSCALES): act (rows, n_act), one scale per posterior row (samples: S
 * members; distilled: the student) and weighted layer, each finite and
 * > 0; copied. Call after the posterior setter. The posterior must be
 * samples or distilled and, by eb_bundle_write, stored as int8
 * (EB_ERR_ARG otherwise). n_act is the architecture's count of weighted
 * layers (dense and conv2d), which this module does not check (it does
 * not parse the architecture); eb_posterior_from_bundle does. act NULL
 * with n_act 0 removes them. */
eb_status eb_bundle_writer_act_scales(eb_bundle_writer *w, const float *act, size_t n_act,
                                      eb_error *err);

/* Writes the bundle to `path` through a temporary file in the same
 * directory, fsynced, then renamed over `path`: on any failure no partial
 * file is left and an existing file at `path` is untouched. Requires an
 * architecture and a posterior (EB_ERR_ARG otherwise). The writer may be
 * written again (same bytes) and must still be freed. */
eb_status eb_bundle_write(eb_bundle_writer *w, const char *path, eb_error *err);

/* Frees the writer and its copies (not the borrowed theta, mu or sigma);
 * NULL is a no-op. */
void eb_bundle_writer_free(eb_bundle_writer *w);

#endif /* EB_BUNDLE_H */
