/* cmd_push.c — `plumb push MODEL.gguf REF`: packages a GGUF (with its license and chat
 * template) as Docker Model Runner's OCI artifact and uploads it. The format and the registry
 * client live in src/oci/; this file reads the GGUF's metadata and drives the upload. */
#include "cli.h"
#include "oci/oci.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int fail(plumb_status st) {
    cli_error("push", st, NULL);
    return 1;
}

/* The GGUF's metadata through plumb's public GGUF API. */
static plumb_status meta_from_gguf(const char *path, oci_model_meta *out) {
    memset(out, 0, sizeof *out);
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open(path, &g);
    if (st) return st;
    plumb_str arch;
    if (plumb_gguf_get_str(g, "general.architecture", &arch) == PLUMB_OK && arch.len < sizeof out->architecture) {
        memcpy(out->architecture, arch.ptr, arch.len);
        out->architecture[arch.len] = 0;
        char key[128];
        snprintf(key, sizeof key, "%s.context_length", out->architecture);
        uint64_t ctx;
        if (plumb_gguf_get_count(g, key, &ctx) == PLUMB_OK && ctx <= INT64_MAX) out->context_length = (int64_t)ctx;
    }
    uint64_t ft;
    const char *qname = NULL;
    if (cli_file_type(g, &ft, &qname) && qname) snprintf(out->quantization, sizeof out->quantization, "%s", qname);
    int64_t n = 0;
    for (int64_t t = 0; t < plumb_gguf_tensor_count(g); t++) {
        plumb_gguf_tensor_info ti;
        if (plumb_gguf_tensor(g, t, &ti)) continue;
        int64_t e = 1;
        for (int d = 0; d < ti.n_dims; d++) e *= ti.ne[d];
        n += e;
    }
    if (n >= 1000000000) snprintf(out->parameters, sizeof out->parameters, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000) snprintf(out->parameters, sizeof out->parameters, "%.2f M", (double)n / 1e6);
    else snprintf(out->parameters, sizeof out->parameters, "%" PRId64, n);
    snprintf(out->size, sizeof out->size, "%" PRIu64, plumb_gguf_file_size(g));
    plumb_gguf_free(g);
    return PLUMB_OK;
}

static plumb_status push_blob(oci_client *c, const char *digest, const char *path, const void *data, size_t len) {
    bool have = false;
    plumb_status st = oci_client_has_blob(c, digest, &have);
    if (st || have) return st;
    return oci_client_put_blob(c, digest, path, data, len);
}

int cmd_push(int argc, char **argv) {
    const char *model = NULL, *refstr = NULL, *license = NULL, *tmpl = NULL;
    bool insecure = false;
    long long ctx = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: plumb push MODEL.gguf REF [--license FILE] [--chat-template FILE] [--context-size N] [--insecure]\n"
                   "  packages a GGUF as Docker Model Runner's OCI artifact and pushes it to REF\n"
                   "  --license FILE        add a license layer\n"
                   "  --chat-template FILE  add a Jinja chat template layer\n"
                   "  --context-size N      record a context size in the model config\n"
                   "  --insecure            plain HTTP to a registry that is not on loopback\n");
            return 0;
        }
        if (strcmp(a, "--insecure") == 0) insecure = true;
        else if ((strcmp(a, "--license") == 0 || strcmp(a, "--chat-template") == 0 || strcmp(a, "--context-size") == 0)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plumb push: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (a[2] == 'l') license = v;
            else if (a[3] == 'h') tmpl = v;
            else {
                char *end;
                ctx = strtoll(v, &end, 10);
                if (*end || ctx <= 0 || ctx > (1 << 30)) {
                    fprintf(stderr, "plumb push: --context-size '%s' is not a positive count\n", v);
                    return 2;
                }
            }
        } else if (a[0] == '-' || (model && refstr)) {
            fprintf(stderr, "plumb push: unexpected argument '%s' (see plumb push --help)\n", a);
            return 2;
        } else if (!model) model = a;
        else refstr = a;
    }
    if (!model || !refstr) {
        fprintf(stderr, "plumb push: needs MODEL.gguf and REF (see plumb push --help)\n");
        return 2;
    }
    oci_ref ref;
    plumb_status st = oci_ref_parse(refstr, &ref);
    if (st) return fail(st);
    if (!ref.tag[0]) {
        fprintf(stderr, "plumb push: %s: push needs a tag, not a digest\n", refstr);
        return 2;
    }
    ref.digest[0] = 0;
    oci_model_meta meta;
    if ((st = meta_from_gguf(model, &meta))) return fail(st);
    meta.context_size = ctx;
    oci_manifest *m = calloc(1, sizeof *m);
    if (!m) return fail(PLUMB_E_NOMEM);
    const char *paths[3] = {model, license, tmpl};
    const char *types[3] = {OCI_MT_GGUF, OCI_MT_LICENSE, OCI_MT_TEMPLATE};
    for (int i = 0; i < 3 && !st; i++) {
        if (!paths[i]) continue;
        oci_desc *d = &m->layers[m->n_layers];
        snprintf(d->media_type, sizeof d->media_type, "%s", types[i]);
        st = oci_sha256_file(paths[i], d->digest, &d->size);
        m->n_layers++;
    }
    char *cfg = st ? NULL : oci_config_write(&meta, m);
    if (!st && !cfg) st = PLUMB_E_NOMEM;
    if (!st) {
        snprintf(m->config.media_type, sizeof m->config.media_type, "%s", OCI_MT_CONFIG);
        oci_sha256_bytes(cfg, strlen(cfg), m->config.digest);
        m->config.size = strlen(cfg);
    }
    char *man = st ? NULL : oci_manifest_write(m);
    if (!st && !man) st = PLUMB_E_NOMEM;
    oci_client *c = NULL;
    if (!st) st = oci_client_create(&ref, insecure, true, &c);
    for (int i = 0, l = 0; i < 3 && !st; i++) {
        if (!paths[i]) continue;
        st = push_blob(c, m->layers[l].digest, paths[i], NULL, 0);
        l++;
    }
    if (!st) st = push_blob(c, m->config.digest, NULL, cfg, strlen(cfg));
    if (!st) st = oci_client_put_manifest(c, man, strlen(man));
    char mdigest[OCI_DIGEST_LEN + 1] = "";
    if (!st) oci_sha256_bytes(man, strlen(man), mdigest);
    oci_client_free(c);
    free(cfg);
    free(man);
    free(m);
    if (st) return fail(st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    printf("%s %s\n", name, mdigest);
    return 0;
}
