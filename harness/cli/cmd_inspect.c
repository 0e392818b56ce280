/* cmd_inspect.c: `edgebayes inspect`: what a bundle holds. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "methods/eb_bundle.h"
#include "methods/eb_methods.h"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: edgebayes inspect FILE [--json]\n"
                "\n"
                "Validates a bundle and prints its architecture, representation (with the\n"
                "head of a distilled one), storage (int8 scale groups, kept indices N of\n"
                "shared-sparse, nonzeros of csr), S, K, bytes per section and metadata.\n"
                "\n"
                "  --json      machine-readable output\n"
                "  -h, --help  this help\n");
}

int eb_cmd_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int json = 0, c;
    eb_bundle *b;
    eb_posterior post;
    eb_error err;
    eb_bundle_stored sv;
    unsigned major, minor;
    char arch_text[EB_ARCH_TEXT_MAX];

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return EB_EXIT_OK;
        default: return eb_cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return eb_cli_usage_error("inspect", "expected exactly one bundle file");
    if (eb_bundle_open(argv[optind], EB_BUNDLE_OPEN_DEFAULT, &b, &err))
        return eb_cli_fail("inspect", &err);
    if (eb_posterior_from_bundle(b, &post, &err)) {
        eb_bundle_close(b);
        return eb_cli_fail("inspect", &err);
    }
    eb_bundle_version(b, &major, &minor);
    eb_bundle_stored_view(b, EB_TENSOR_PARAMS, &sv);
    if (eb_arch_format(&post.arch, arch_text, sizeof arch_text, &err)) {
        eb_posterior_release(&post);
        eb_bundle_close(b);
        return eb_cli_fail("inspect", &err);
    }
    if (json) {
        printf("{\"file\": ");
        eb_cli_json_string(stdout, argv[optind]);
        printf(", \"format\": \"%u.%u\", \"bytes\": %llu, \"representation\": ", major, minor,
               (unsigned long long)eb_bundle_file_size(b));
        eb_cli_json_string(stdout, eb_repr_name(post.repr));
        printf(", \"storage\": ");
        eb_cli_json_string(stdout, eb_storage_name(eb_bundle_storage(b)));
        printf(", \"head\": ");
        eb_cli_json_string(stdout, eb_head_name(eb_bundle_head(b)));
        if (sv.kind == EB_STORE_INT8)
            printf(", \"groups\": %llu", (unsigned long long)sv.n_groups);
        if (sv.kind == EB_STORE_SHARED_SPARSE)
            printf(", \"N\": %llu", (unsigned long long)sv.n_index);
        if (sv.kind == EB_STORE_CSR)
            printf(", \"nnz\": %llu", (unsigned long long)sv.n_index);
        printf(", \"S\": %u, \"K\": %zu, \"classes\": %d, \"architecture\": ", post.members,
               post.k, post.arch.n_classes);
        eb_cli_json_string(stdout, arch_text);
        printf(", \"sections\": [");
        for (size_t i = 0; i < eb_bundle_section_count(b); i++) {
            eb_bundle_section s;
            eb_bundle_section_info(b, i, &s);
            printf("%s{\"type\": ", i ? ", " : "");
            eb_cli_json_string(stdout, s.type_name);
            printf(", \"dtype\": ");
            eb_cli_json_string(stdout, s.dtype_name);
            printf(", \"offset\": %llu, \"bytes\": %llu, \"crc32\": \"%08x\"}",
                   (unsigned long long)s.offset, (unsigned long long)s.size, s.crc32);
        }
        printf("], \"metadata\": {");
        for (size_t i = 0; i < eb_bundle_meta_count(b); i++) {
            const char *k, *v;
            eb_bundle_meta_at(b, i, &k, &v);
            printf("%s", i ? ", " : "");
            eb_cli_json_string(stdout, k);
            printf(": ");
            eb_cli_json_string(stdout, v);
        }
        printf("}}\n");
    } else {
        printf("bundle          %s\n", argv[optind]);
        printf("format          %u.%u, %llu bytes\n", major, minor,
               (unsigned long long)eb_bundle_file_size(b));
        printf("representation  %s", eb_repr_name(post.repr));
        if (post.repr == EB_REPR_DISTILLED)
            printf(", head %s", eb_head_name(eb_bundle_head(b)));
        printf("\nstorage         %s", eb_storage_name(eb_bundle_storage(b)));
        if (sv.kind == EB_STORE_INT8)
            printf(", %llu scale groups per row", (unsigned long long)sv.n_groups);
        else if (sv.kind == EB_STORE_SHARED_SPARSE)
            printf(", N = %llu kept of %zu (%.1f%%)", (unsigned long long)sv.n_index, post.k,
                   100.0 * (double)sv.n_index / (double)post.k);
        else if (sv.kind == EB_STORE_CSR)
            printf(", nnz = %llu of %llu (%.1f%%)", (unsigned long long)sv.n_index,
                   (unsigned long long)sv.rows * post.k,
                   100.0 * (double)sv.n_index / ((double)sv.rows * (double)post.k));
        printf("\n");
        printf("S               %u %s\n", post.members,
               post.repr == EB_REPR_SAMPLES ? "members" : "draws by default");
        printf("K               %zu parameters per member\n", post.k);
        printf("architecture    ");
        for (const char *p = arch_text; *p; p++) {
            putchar(*p == '\n' && p[1] ? ';' : *p);
            if (*p == '\n' && p[1])
                putchar(' ');
        }
        printf("sections\n");
        for (size_t i = 0; i < eb_bundle_section_count(b); i++) {
            eb_bundle_section s;
            eb_bundle_section_info(b, i, &s);
            printf("  %-10s %-5s offset %10llu  %12llu bytes  crc32 %08x\n", s.type_name,
                   s.dtype_name, (unsigned long long)s.offset, (unsigned long long)s.size,
                   s.crc32);
        }
        printf("metadata\n");
        for (size_t i = 0; i < eb_bundle_meta_count(b); i++) {
            const char *k, *v;
            eb_bundle_meta_at(b, i, &k, &v);
            printf("  %-16s %s\n", k, v);
        }
    }
    eb_posterior_release(&post);
    eb_bundle_close(b);
    return EB_EXIT_OK;
}
