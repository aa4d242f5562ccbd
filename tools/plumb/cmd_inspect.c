/* cmd_inspect.c — `plumb inspect MODEL.gguf [--json] [--array-items N]`: the GGUF version,
 * architecture, the file type by name (general.file_type: Q4_K_M, ...), every metadata key with its type and value (long arrays summarized by type,
 * length and first items), the tensor table, totals by type, parameter count and file size.
 * --json prints the same as one JSON document (built with cJSON). */
#include "cli.h"
#include "options.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define STRING_PREVIEW 120 /* bytes of a long string shown in text mode */

typedef struct type_total {
    int64_t tensors;
    int64_t elements;
    uint64_t bytes;
} type_total;

typedef struct summary {
    type_total by_type[PLUMB_TYPE_COUNT];
    int64_t params;
    uint64_t tensor_bytes;
} summary;

static int64_t n_elements(const plumb_gguf_tensor_info *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->ne[d]; /* the reader checked for overflow */
    return n;
}

static void summarize(const plumb_gguf_t *g, summary *s) {
    memset(s, 0, sizeof *s);
    for (int64_t i = 0; i < plumb_gguf_tensor_count(g); i++) {
        plumb_gguf_tensor_info t;
        if (plumb_gguf_tensor(g, i, &t)) continue;
        int64_t n = n_elements(&t);
        s->by_type[t.type].tensors++;
        s->by_type[t.type].elements += n;
        s->by_type[t.type].bytes += t.nbytes;
        s->params += n;
        s->tensor_bytes += t.nbytes;
    }
}

static void shape_text(const plumb_gguf_tensor_info *t, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->n_dims && len < size; d++) {
        int n = snprintf(buf + len, size - len, "%s%" PRId64, d ? " x " : "", t->ne[d]);
        if (n < 0) break;
        len += (size_t)n;
    }
}

static void arch_of(const plumb_gguf_t *g, plumb_str *arch) {
    if (plumb_gguf_get_str(g, "general.architecture", arch) != PLUMB_OK) {
        arch->ptr = "(none)";
        arch->len = 6;
    }
}

/* ---- text ---------------------------------------------------------------------------- */

static void print_scalar(const plumb_gguf_t *g, int64_t i, int64_t j, int type) {
    int64_t iv;
    uint64_t uv;
    double fv;
    bool bv;
    plumb_str sv;
    bool arr = j >= 0;
    switch (type) {
    case PLUMB_GGUF_STRING:
        if ((arr ? plumb_gguf_arr_str(g, i, (uint64_t)j, &sv) : plumb_gguf_kv_str(g, i, &sv)) == PLUMB_OK)
            cli_print_quoted(stdout, sv.ptr, sv.len, STRING_PREVIEW);
        break;
    case PLUMB_GGUF_BOOL:
        if ((arr ? plumb_gguf_arr_bool(g, i, (uint64_t)j, &bv) : plumb_gguf_kv_bool(g, i, &bv)) == PLUMB_OK)
            fputs(bv ? "true" : "false", stdout);
        break;
    case PLUMB_GGUF_F32:
    case PLUMB_GGUF_F64:
        if ((arr ? plumb_gguf_arr_float(g, i, (uint64_t)j, &fv) : plumb_gguf_kv_float(g, i, &fv)) == PLUMB_OK)
            printf(type == PLUMB_GGUF_F32 ? "%.9g" : "%.17g", fv);
        break;
    case PLUMB_GGUF_U64:
        if ((arr ? plumb_gguf_arr_uint(g, i, (uint64_t)j, &uv) : plumb_gguf_kv_uint(g, i, &uv)) == PLUMB_OK)
            printf("%" PRIu64, uv);
        break;
    default:
        if ((arr ? plumb_gguf_arr_int(g, i, (uint64_t)j, &iv) : plumb_gguf_kv_int(g, i, &iv)) == PLUMB_OK)
            printf("%" PRId64, iv);
        break;
    }
}

static void print_text(const char *path, const plumb_gguf_t *g, uint64_t max_items) {
    summary s;
    summarize(g, &s);
    plumb_str arch;
    arch_of(g, &arch);
    printf("file:         %s\n", path);
    printf("file size:    %" PRIu64 " bytes (%.2f MiB)\n", plumb_gguf_file_size(g),
           (double)plumb_gguf_file_size(g) / (1024.0 * 1024.0));
    printf("gguf version: %u\n", plumb_gguf_version(g));
    printf("architecture: ");
    cli_print_quoted(stdout, arch.ptr, arch.len, STRING_PREVIEW);
    uint64_t ftype;
    const char *ftype_name;
    if (cli_file_type(g, &ftype, &ftype_name))
        printf("\nfile type:    %s (general.file_type %" PRIu64 ")", ftype_name ? ftype_name : "unknown", ftype);
    printf("\nalignment:    %" PRIu64 "\n", plumb_gguf_alignment(g));
    printf("data offset:  %" PRIu64 "\n", plumb_gguf_data_offset(g));
    printf("parameters:   %" PRId64 " (%.2f M)\n", s.params, (double)s.params / 1e6);
    printf("tensor bytes: %" PRIu64 " (%.2f bits per parameter)\n", s.tensor_bytes,
           s.params ? 8.0 * (double)s.tensor_bytes / (double)s.params : 0.0);

    int64_t n_kv = plumb_gguf_kv_count(g);
    printf("\nmetadata: %" PRId64 " keys\n", n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        int type = plumb_gguf_kv_type(g, i);
        printf("  %-44s ", plumb_gguf_kv_key(g, i));
        if (type == PLUMB_GGUF_ARRAY) {
            int et = plumb_gguf_kv_array_type(g, i);
            uint64_t n = plumb_gguf_kv_array_len(g, i);
            char tname[32];
            snprintf(tname, sizeof tname, "array[%s]", plumb_gguf_type_name(et));
            printf("%-14s len %" PRIu64 " [", tname, n);
            uint64_t show = n < max_items ? n : max_items;
            for (uint64_t j = 0; j < show; j++) {
                if (j) fputs(", ", stdout);
                print_scalar(g, i, (int64_t)j, et);
            }
            printf("%s]\n", show < n ? ", ..." : "");
        } else {
            printf("%-14s ", plumb_gguf_type_name(type));
            print_scalar(g, i, -1, type);
            putchar('\n');
        }
    }

    int64_t n_t = plumb_gguf_tensor_count(g);
    printf("\ntensors: %" PRId64 "\n", n_t);
    printf("  %5s  %-40s %-6s %-24s %12s %12s\n", "#", "name", "type", "shape", "bytes", "offset");
    for (int64_t i = 0; i < n_t; i++) {
        plumb_gguf_tensor_info t;
        if (plumb_gguf_tensor(g, i, &t)) continue;
        char shape[96];
        shape_text(&t, shape, sizeof shape);
        printf("  %5" PRId64 "  %-40s %-6s %-24s %12" PRIu64 " %12" PRIu64 "\n", i, t.name, plumb_type_name(t.type),
               shape, t.nbytes, t.offset);
    }

    printf("\ntotals by type:\n");
    printf("  %-6s %8s %14s %14s\n", "type", "tensors", "parameters", "bytes");
    for (int ty = 0; ty < PLUMB_TYPE_COUNT; ty++) {
        const type_total *tt = &s.by_type[ty];
        if (!tt->tensors) continue;
        printf("  %-6s %8" PRId64 " %14" PRId64 " %14" PRIu64 "\n", plumb_type_name(ty), tt->tensors, tt->elements,
               tt->bytes);
    }
    printf("  %-6s %8" PRId64 " %14" PRId64 " %14" PRIu64 "\n", "total", n_t, s.params, s.tensor_bytes);
}

/* ---- JSON ---------------------------------------------------------------------------- */

static cJSON *json_str(const char *s, uint64_t len) {
    char *clean = cli_utf8_sanitize(s, len);
    if (!clean) return NULL;
    cJSON *v = cJSON_CreateString(clean);
    free(clean);
    return v;
}

/* Numbers are formatted here and handed to cJSON as raw text: cJSON prints a double with 15
 * significant digits whenever that reads back within a relative epsilon, which loses digits
 * (2^53 came out as 9.00719925474099e+15, DBL_MAX as a number above it). */
static cJSON *json_f64(double v) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) { /* the shortest form that reads back exactly */
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

/* Integers beyond 2^53 do not survive a double: those are written as decimal strings. */
static cJSON *json_u64(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return v <= (1ull << 53) ? cJSON_CreateRaw(buf) : cJSON_CreateString(buf);
}

static cJSON *json_i64(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return (v >= -(1ll << 53) && v <= (1ll << 53)) ? cJSON_CreateRaw(buf) : cJSON_CreateString(buf);
}

static cJSON *json_scalar(const plumb_gguf_t *g, int64_t i, int64_t j, int type) {
    int64_t iv;
    uint64_t uv;
    double fv;
    bool bv;
    plumb_str sv;
    bool arr = j >= 0;
    switch (type) {
    case PLUMB_GGUF_STRING:
        if ((arr ? plumb_gguf_arr_str(g, i, (uint64_t)j, &sv) : plumb_gguf_kv_str(g, i, &sv)) == PLUMB_OK)
            return json_str(sv.ptr, sv.len);
        break;
    case PLUMB_GGUF_BOOL:
        if ((arr ? plumb_gguf_arr_bool(g, i, (uint64_t)j, &bv) : plumb_gguf_kv_bool(g, i, &bv)) == PLUMB_OK)
            return cJSON_CreateBool(bv);
        break;
    case PLUMB_GGUF_F32:
    case PLUMB_GGUF_F64:
        if ((arr ? plumb_gguf_arr_float(g, i, (uint64_t)j, &fv) : plumb_gguf_kv_float(g, i, &fv)) == PLUMB_OK) {
            if (fv != fv) return cJSON_CreateString("nan"); /* JSON has no NaN or infinity */
            if (fv > 1.7976931348623157e308) return cJSON_CreateString("inf");
            if (fv < -1.7976931348623157e308) return cJSON_CreateString("-inf");
            return json_f64(fv);
        }
        break;
    case PLUMB_GGUF_U64:
        if ((arr ? plumb_gguf_arr_uint(g, i, (uint64_t)j, &uv) : plumb_gguf_kv_uint(g, i, &uv)) == PLUMB_OK)
            return json_u64(uv);
        break;
    default:
        if ((arr ? plumb_gguf_arr_int(g, i, (uint64_t)j, &iv) : plumb_gguf_kv_int(g, i, &iv)) == PLUMB_OK)
            return json_i64(iv);
        break;
    }
    return cJSON_CreateNull();
}

static cJSON *build_json(const char *path, const plumb_gguf_t *g, uint64_t max_items) {
    summary s;
    summarize(g, &s);
    plumb_str arch;
    arch_of(g, &arch);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "file", json_str(path, strlen(path)));
    cJSON_AddItemToObject(root, "file_size", json_u64(plumb_gguf_file_size(g)));
    cJSON_AddNumberToObject(root, "gguf_version", plumb_gguf_version(g));
    cJSON_AddItemToObject(root, "architecture", json_str(arch.ptr, arch.len));
    uint64_t ftype;
    const char *ftype_name = NULL;
    const bool has_ftype = cli_file_type(g, &ftype, &ftype_name);
    /* the name, or null when the file has none or plumb does not know the value */
    cJSON_AddItemToObject(root, "file_type", ftype_name ? cJSON_CreateString(ftype_name) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "file_type_id", has_ftype ? json_u64(ftype) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "alignment", json_u64(plumb_gguf_alignment(g)));
    cJSON_AddItemToObject(root, "data_offset", json_u64(plumb_gguf_data_offset(g)));
    cJSON_AddItemToObject(root, "parameters", json_i64(s.params));
    cJSON_AddItemToObject(root, "tensor_bytes", json_u64(s.tensor_bytes));

    cJSON *meta = cJSON_AddArrayToObject(root, "metadata");
    for (int64_t i = 0; i < plumb_gguf_kv_count(g); i++) {
        const char *key = plumb_gguf_kv_key(g, i);
        int type = plumb_gguf_kv_type(g, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "key", json_str(key, strlen(key)));
        cJSON_AddStringToObject(e, "type", plumb_gguf_type_name(type));
        if (type == PLUMB_GGUF_ARRAY) {
            int et = plumb_gguf_kv_array_type(g, i);
            uint64_t n = plumb_gguf_kv_array_len(g, i);
            uint64_t show = n < max_items ? n : max_items;
            cJSON_AddStringToObject(e, "element_type", plumb_gguf_type_name(et));
            cJSON_AddItemToObject(e, "length", json_u64(n));
            cJSON *items = cJSON_AddArrayToObject(e, "items");
            for (uint64_t j = 0; j < show; j++) cJSON_AddItemToArray(items, json_scalar(g, i, (int64_t)j, et));
            cJSON_AddBoolToObject(e, "truncated", show < n);
        } else {
            cJSON_AddItemToObject(e, "value", json_scalar(g, i, -1, type));
        }
        cJSON_AddItemToArray(meta, e);
    }

    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (int64_t i = 0; i < plumb_gguf_tensor_count(g); i++) {
        plumb_gguf_tensor_info t;
        if (plumb_gguf_tensor(g, i, &t)) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "name", json_str(t.name, strlen(t.name)));
        cJSON_AddStringToObject(e, "type", plumb_type_name(t.type));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t.n_dims; d++) cJSON_AddItemToArray(shape, json_i64(t.ne[d]));
        cJSON_AddItemToObject(e, "elements", json_i64(n_elements(&t)));
        cJSON_AddItemToObject(e, "bytes", json_u64(t.nbytes));
        cJSON_AddItemToObject(e, "offset", json_u64(t.offset));
        cJSON_AddItemToArray(tensors, e);
    }

    cJSON *totals = cJSON_AddObjectToObject(root, "totals_by_type");
    for (int ty = 0; ty < PLUMB_TYPE_COUNT; ty++) {
        const type_total *tt = &s.by_type[ty];
        if (!tt->tensors) continue;
        cJSON *e = cJSON_AddObjectToObject(totals, plumb_type_name(ty));
        cJSON_AddItemToObject(e, "tensors", json_i64(tt->tensors));
        cJSON_AddItemToObject(e, "parameters", json_i64(tt->elements));
        cJSON_AddItemToObject(e, "bytes", json_u64(tt->bytes));
    }
    cJSON_AddNumberToObject(root, "tensor_count", (double)plumb_gguf_tensor_count(g));
    cJSON_AddNumberToObject(root, "kv_count", (double)plumb_gguf_kv_count(g));
    return root;
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    uint64_t max_items = 8;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (options_is(argv[i], "--array-items", NULL)) {
            const char *v = options_value("inspect", argc, argv, &i);
            long n;
            if (!v) return 2;
            if (!options_parse_long(v, 0, LONG_MAX, &n)) {
                fprintf(stderr, "plumb inspect: --array-items needs a number, 0 or more, not '%s'\n", v);
                return 2;
            }
            max_items = (uint64_t)n;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: plumb inspect MODEL.gguf|REF [--json] [--array-items N]\n");
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "plumb inspect: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "plumb inspect: more than one file given\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: plumb inspect MODEL.gguf|REF [--json] [--array-items N]\n");
        return 2;
    }
    cli_model_src src;
    if (cli_model_source("inspect", path, &src)) return 1;
    path = src.path;
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open(path, &g);
    if (st) {
        cli_error("inspect", st, NULL);
        return 1;
    }
    int rc = 0;
    if (json) {
        cJSON *root = build_json(path, g, max_items);
        if (root && src.ref[0]) { /* a model from the store: which artifact it is */
            cJSON_AddStringToObject(root, "reference", src.ref);
            cJSON_AddStringToObject(root, "manifest", src.manifest_digest);
        }
        char *text = root ? cJSON_PrintUnformatted(root) : NULL;
        if (text) {
            puts(text);
            free(text);
        } else {
            fprintf(stderr, "plumb inspect: out of memory building JSON\n");
            rc = 1;
        }
        cJSON_Delete(root);
    } else {
        if (src.ref[0]) printf("reference:    %s\nmanifest:     %s\n", src.ref, src.manifest_digest);
        print_text(path, g, max_items);
    }
    plumb_gguf_free(g);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
