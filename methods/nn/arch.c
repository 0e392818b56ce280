/* arch.c: architecture specs: parsing, shape resolution, the reference
 * architectures, the dropout variant, and parameter initialisation. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/eb_alloc.h"
#include "methods/nn/eb_nn.h"

static const char *kind_name(eb_layer_kind k)
{
    switch (k) {
    case EB_LAYER_DENSE: return "dense";
    case EB_LAYER_CONV2D: return "conv2d";
    case EB_LAYER_MAXPOOL: return "maxpool";
    case EB_LAYER_RELU: return "relu";
    case EB_LAYER_DROPOUT: return "dropout";
    case EB_LAYER_FLATTEN: return "flatten";
    }
    return "?";
}

eb_status eb_arch_resolve(eb_arch *a, eb_error *err)
{
    int h = a->in_h, w = a->in_w, c = a->in_c;
    size_t off = 0, max_act;

    if (h < 1 || w < 1 || c < 1 || h > EB_ARCH_MAX_DIM || w > EB_ARCH_MAX_DIM ||
        c > EB_ARCH_MAX_UNITS)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture: input shape %dx%dx%d is outside 1..%d x 1..%d x 1..%d",
                            h, w, c, EB_ARCH_MAX_DIM, EB_ARCH_MAX_DIM, EB_ARCH_MAX_UNITS);
    if (a->n_layers < 1 || a->n_layers > EB_ARCH_MAX_LAYERS)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture: %d layers (need 1 to %d)", a->n_layers,
                            EB_ARCH_MAX_LAYERS);
    a->in_size = (size_t)h * (size_t)w * (size_t)c;
    max_act = a->in_size;
    for (int i = 0; i < a->n_layers; i++) {
        eb_layer *L = &a->layers[i];
        L->in_h = h;
        L->in_w = w;
        L->in_c = c;
        L->in_size = (size_t)h * (size_t)w * (size_t)c;
        L->n_weights = L->n_bias = 0;
        L->param_offset = off;
        switch (L->kind) {
        case EB_LAYER_DENSE:
            if (h != 1 || w != 1)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (dense): input is %dx%dx%d, not flat; "
                                    "add 'flatten' before it", i + 1, h, w, c);
            if (L->units < 1 || L->units > EB_ARCH_MAX_UNITS)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (dense): %d units (need 1 to %d)",
                                    i + 1, L->units, EB_ARCH_MAX_UNITS);
            L->n_weights = (size_t)L->units * L->in_size;
            L->n_bias = (size_t)L->units;
            c = L->units;
            break;
        case EB_LAYER_CONV2D:
            if (h < 3 || w < 3)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (conv2d): input %dx%d is smaller "
                                    "than the 3x3 kernel", i + 1, h, w);
            if (L->units < 1 || L->units > EB_ARCH_MAX_UNITS)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (conv2d): %d channels (need 1 to %d)",
                                    i + 1, L->units, EB_ARCH_MAX_UNITS);
            L->n_weights = (size_t)L->units * 9 * (size_t)c;
            L->n_bias = (size_t)L->units;
            h -= 2;
            w -= 2;
            c = L->units;
            break;
        case EB_LAYER_MAXPOOL:
            if (h < 2 || w < 2)
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (maxpool): input %dx%d is smaller "
                                    "than the 2x2 window", i + 1, h, w);
            h /= 2;
            w /= 2;
            break;
        case EB_LAYER_RELU:
            break;
        case EB_LAYER_DROPOUT:
            if (!(L->rate >= 0.0f && L->rate < 1.0f))
                return eb_error_set(err, EB_ERR_FORMAT,
                                    "architecture layer %d (dropout): rate %g is outside [0, 1)",
                                    i + 1, (double)L->rate);
            break;
        case EB_LAYER_FLATTEN:
            c = h * w * c;
            h = w = 1;
            break;
        default:
            return eb_error_set(err, EB_ERR_FORMAT, "architecture layer %d: unknown kind %d",
                                i + 1, (int)L->kind);
        }
        if (L->kind != EB_LAYER_DENSE && L->kind != EB_LAYER_CONV2D)
            L->units = 0;
        if (L->kind != EB_LAYER_DROPOUT)
            L->rate = 0.0f;
        L->out_h = h;
        L->out_w = w;
        L->out_c = c;
        L->out_size = (size_t)h * (size_t)w * (size_t)c;
        if (L->out_size > max_act)
            max_act = L->out_size;
        off += L->n_weights + L->n_bias;
        if (off > ((size_t)1 << 31))
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture: more than 2^31 parameters by layer %d", i + 1);
    }
    if (a->layers[a->n_layers - 1].kind != EB_LAYER_DENSE)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture: the last layer is %s; it must be dense (the class "
                            "logits)", kind_name(a->layers[a->n_layers - 1].kind));
    a->n_classes = a->layers[a->n_layers - 1].units;
    if (a->n_classes < 2 || a->n_classes > 255)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture: %d output classes (need 2 to 255)", a->n_classes);
    a->n_params = off;
    a->max_act = max_act;
    return EB_OK;
}

/* Parses a positive decimal int from s; returns -1 on anything else. */
static long parse_count(const char *s)
{
    char *end;
    long v;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 1000000)
        return -1;
    return v;
}

static eb_status parse_line(eb_arch *a, int *seen_input, char *line, int lineno, eb_error *err)
{
    char *words[4];
    int nw = 0;
    char *p = line;

    while (*p && nw < 4) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        words[nw++] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p)
            *p++ = '\0';
    }
    while (isspace((unsigned char)*p))
        p++;
    if (nw == 0)
        return EB_OK;
    if (*p)
        return eb_error_set(err, EB_ERR_FORMAT, "architecture item %d: too many words",
                            lineno);
    if (!strcmp(words[0], "input")) {
        int h, w, c, used = 0;
        if (*seen_input)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture item %d: a second 'input' line", lineno);
        if (nw != 2 || sscanf(words[1], "%dx%dx%d%n", &h, &w, &c, &used) != 3 ||
            words[1][used] != '\0')
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture item %d: 'input' needs a shape HxWxC, e.g. "
                                "'input 28x28x1'", lineno);
        a->in_h = h;
        a->in_w = w;
        a->in_c = c;
        *seen_input = 1;
        return EB_OK;
    }
    if (!*seen_input)
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture item %d: the first item must be 'input HxWxC'", lineno);
    if (a->n_layers >= EB_ARCH_MAX_LAYERS)
        return eb_error_set(err, EB_ERR_FORMAT, "architecture: more than %d layers",
                            EB_ARCH_MAX_LAYERS);
    eb_layer *L = &a->layers[a->n_layers];
    memset(L, 0, sizeof *L);
    if (!strcmp(words[0], "dense") || !strcmp(words[0], "conv2d")) {
        long units = nw == 2 ? parse_count(words[1]) : -1;
        if (units < 1 || units > EB_ARCH_MAX_UNITS)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture item %d: '%s' needs a unit count from 1 to %d",
                                lineno, words[0], EB_ARCH_MAX_UNITS);
        L->kind = words[0][0] == 'd' ? EB_LAYER_DENSE : EB_LAYER_CONV2D;
        L->units = (int)units;
    } else if (!strcmp(words[0], "dropout")) {
        char *end;
        double r;
        if (nw != 2)
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture item %d: 'dropout' needs a rate, e.g. 'dropout 0.2'",
                                lineno);
        errno = 0;
        r = strtod(words[1], &end);
        if (errno || *end || !(r >= 0.0 && r < 1.0))
            return eb_error_set(err, EB_ERR_FORMAT,
                                "architecture item %d: dropout rate '%s' is not a number in "
                                "[0, 1)", lineno, words[1]);
        L->kind = EB_LAYER_DROPOUT;
        L->rate = (float)r;
    } else if (!strcmp(words[0], "maxpool") || !strcmp(words[0], "relu") ||
               !strcmp(words[0], "flatten")) {
        if (nw != 1)
            return eb_error_set(err, EB_ERR_FORMAT, "architecture item %d: '%s' takes no value",
                                lineno, words[0]);
        L->kind = words[0][0] == 'm' ? EB_LAYER_MAXPOOL
                  : words[0][0] == 'r' ? EB_LAYER_RELU
                                       : EB_LAYER_FLATTEN;
    } else {
        return eb_error_set(err, EB_ERR_FORMAT,
                            "architecture item %d: unknown layer '%s' (known: input, dense, "
                            "conv2d, maxpool, relu, dropout, flatten)", lineno, words[0]);
    }
    a->n_layers++;
    return EB_OK;
}

eb_status eb_arch_parse(const char *text, eb_arch *a, eb_error *err)
{
    char buf[EB_ARCH_TEXT_MAX];
    size_t n = strlen(text);
    int seen_input = 0, item = 0;
    char *p;

    memset(a, 0, sizeof *a);
    if (n >= sizeof buf)
        return eb_error_set(err, EB_ERR_FORMAT, "architecture text is %zu bytes (at most %d)", n,
                            EB_ARCH_TEXT_MAX - 1);
    memcpy(buf, text, n + 1);
    p = buf;
    while (p) {
        char *next = strpbrk(p, ";\n");
        char *hash;
        eb_status st;
        if (next)
            *next++ = '\0';
        hash = strchr(p, '#');
        if (hash)
            *hash = '\0';
        item++;
        st = parse_line(a, &seen_input, p, item, err);
        if (st)
            return st;
        p = next;
    }
    if (!seen_input)
        return eb_error_set(err, EB_ERR_FORMAT, "architecture has no 'input HxWxC' item");
    return eb_arch_resolve(a, err);
}

eb_status eb_arch_format(const eb_arch *a, char *buf, size_t len, eb_error *err)
{
    size_t used = 0;
    int w = snprintf(buf, len, "input %dx%dx%d\n", a->in_h, a->in_w, a->in_c);
    if (w < 0 || (size_t)w >= len)
        goto full;
    used = (size_t)w;
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        if (L->kind == EB_LAYER_DENSE || L->kind == EB_LAYER_CONV2D)
            w = snprintf(buf + used, len - used, "%s %d\n", kind_name(L->kind), L->units);
        else if (L->kind == EB_LAYER_DROPOUT)
            w = snprintf(buf + used, len - used, "dropout %.9g\n", (double)L->rate);
        else
            w = snprintf(buf + used, len - used, "%s\n", kind_name(L->kind));
        if (w < 0 || (size_t)w >= len - used)
            goto full;
        used += (size_t)w;
    }
    return EB_OK;
full:
    return eb_error_set(err, EB_ERR_ARG, "architecture text needs more than %zu bytes", len);
}

/* Reads the comma-separated widths of a sized architecture name `name`
 * (the text after "mlp:" or "cnn:") into w; *n gets their count. Every
 * error names the whole name and the part at fault. */
static eb_status sized_widths(const char *name, const char *list, int max_n, int *w, int *n,
                              eb_error *err)
{
    const char *p = list;
    *n = 0;
    for (;;) {
        const char *start = p;
        long v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (v <= EB_ARCH_MAX_WIDTH)
                v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (!digits || (*p && *p != ','))
            return eb_error_set(err, EB_ERR_ARG,
                                "architecture '%s': width %d '%.*s' is not a whole number "
                                "(widths are comma-separated, e.g. 'mlp:256,256')", name, *n + 1,
                                (int)strcspn(start, ","), start);
        if (*n >= max_n)
            return eb_error_set(err, EB_ERR_ARG,
                                "architecture '%s': more than %d widths", name, max_n);
        if (v < 1 || v > EB_ARCH_MAX_WIDTH)
            return eb_error_set(err, EB_ERR_ARG,
                                "architecture '%s': width %d is %.*s; widths are from 1 to %d",
                                name, *n + 1, digits, start, EB_ARCH_MAX_WIDTH);
        w[(*n)++] = (int)v;
        if (!*p)
            return EB_OK;
        p++; /* the comma; a trailing one leaves an empty width, refused above */
    }
}

/* The sized forms: "mlp:W1,...,Wn" (flatten, then dense Wi + relu for
 * each width, then dense 10) and "cnn:C1,C2,D" (the cnn's shape with
 * those channels and dense width). */
static eb_status arch_sized(const char *name, eb_arch *a, eb_error *err)
{
    const int is_mlp = !strncmp(name, "mlp:", 4);
    int w[EB_ARCH_MAX_HIDDEN], n;
    char text[EB_ARCH_TEXT_MAX];
    size_t used;
    eb_status st;

    st = sized_widths(name, name + 4, is_mlp ? EB_ARCH_MAX_HIDDEN : 3, w, &n, err);
    if (st)
        return st;
    if (is_mlp) {
        used = (size_t)snprintf(text, sizeof text, "input 28x28x1; flatten");
        for (int i = 0; i < n; i++)
            used += (size_t)snprintf(text + used, sizeof text - used, "; dense %d; relu", w[i]);
        snprintf(text + used, sizeof text - used, "; dense 10");
    } else {
        if (n != 3)
            return eb_error_set(err, EB_ERR_ARG,
                                "architecture '%s': a sized cnn takes 3 widths (conv channels "
                                "C1, C2 and dense width D: 'cnn:32,64,128'), not %d", name, n);
        snprintf(text, sizeof text,
                 "input 28x28x1; conv2d %d; relu; maxpool; conv2d %d; relu; maxpool; flatten; "
                 "dense %d; relu; dense 10", w[0], w[1], w[2]);
    }
    st = eb_arch_parse(text, a, err);
    if (st)
        return eb_error_prefix(err, "architecture '%s': ", name);
    return EB_OK;
}

eb_status eb_arch_named(const char *name, eb_arch *a, eb_error *err)
{
    static const char mlp[] =
        "input 28x28x1; flatten; dense 256; relu; dense 256; relu; dense 10";
    static const char cnn[] =
        "input 28x28x1; conv2d 32; relu; maxpool; conv2d 64; relu; maxpool; flatten; "
        "dense 128; relu; dense 10";
    if (!strcmp(name, "mlp"))
        return eb_arch_parse(mlp, a, err);
    /* a small MLP for full-batch HMC, the reference posterior of small
     * models and data subsets */
    static const char mlp_small[] = "input 28x28x1; flatten; dense 32; relu; dense 10";
    if (!strcmp(name, "cnn"))
        return eb_arch_parse(cnn, a, err);
    if (!strcmp(name, "mlp-small"))
        return eb_arch_parse(mlp_small, a, err);
    if (!strncmp(name, "mlp:", 4) || !strncmp(name, "cnn:", 4))
        return arch_sized(name, a, err);
    return eb_error_set(err, EB_ERR_ARG, "unknown architecture '%s' (known: mlp, cnn, mlp-small, "
                        "mlp:W1[,W2,...], cnn:C1,C2,D)", name);
}

eb_status eb_arch_with_dropout(const eb_arch *in, float rate, eb_arch *out, eb_error *err)
{
    eb_arch a;
    int n = 0;

    if (!(rate >= 0.0f && rate < 1.0f))
        return eb_error_set(err, EB_ERR_ARG, "dropout rate %g is outside [0, 1)", (double)rate);
    memset(&a, 0, sizeof a);
    a.in_h = in->in_h;
    a.in_w = in->in_w;
    a.in_c = in->in_c;
    for (int i = 0; i < in->n_layers; i++) {
        const eb_layer *L = &in->layers[i];
        int after_relu;
        if (L->kind == EB_LAYER_DROPOUT)
            continue;
        if (n >= EB_ARCH_MAX_LAYERS)
            goto too_many;
        a.layers[n] = *L;
        a.layers[n++].rate = 0.0f;
        /* Dropout goes after a hidden ReLU, or after the pool that
         * directly follows one, so each mask covers one layer's units. */
        after_relu = L->kind == EB_LAYER_RELU &&
                     !(i + 1 < in->n_layers && in->layers[i + 1].kind == EB_LAYER_MAXPOOL);
        after_relu |= L->kind == EB_LAYER_MAXPOOL && i > 0 &&
                      in->layers[i - 1].kind == EB_LAYER_RELU;
        if (after_relu) {
            if (n >= EB_ARCH_MAX_LAYERS)
                goto too_many;
            memset(&a.layers[n], 0, sizeof a.layers[n]);
            a.layers[n].kind = EB_LAYER_DROPOUT;
            a.layers[n++].rate = rate;
        }
    }
    a.n_layers = n;
    if (eb_arch_resolve(&a, err))
        return err ? err->code : EB_ERR_FORMAT;
    *out = a;
    return EB_OK;
too_many:
    return eb_error_set(err, EB_ERR_ARG, "adding dropout makes more than %d layers",
                        EB_ARCH_MAX_LAYERS);
}

int eb_arch_has_dropout(const eb_arch *a)
{
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == EB_LAYER_DROPOUT && a->layers[i].rate > 0.0f)
            return 1;
    return 0;
}

void eb_arch_init_params(const eb_arch *a, float *theta, eb_rng *rng)
{
    for (int i = 0; i < a->n_layers; i++) {
        const eb_layer *L = &a->layers[i];
        size_t fan_in;
        double sd;
        if (!L->n_weights)
            continue;
        fan_in = L->n_weights / (size_t)L->units;
        /* The output layer feeds the softmax, not a ReLU: LeCun scaling. */
        sd = sqrt((i == a->n_layers - 1 ? 1.0 : 2.0) / (double)fan_in);
        for (size_t j = 0; j < L->n_weights; j++)
            theta[L->param_offset + j] = (float)(sd * eb_rng_normal(rng));
        memset(theta + L->param_offset + L->n_weights, 0, L->n_bias * sizeof(float));
    }
}
