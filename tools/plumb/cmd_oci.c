/* cmd_oci.c — models as OCI artifacts: `plumb pull REF`, `plumb push MODEL.gguf REF`,
 * `plumb list`, `plumb rm REF`. The store, the registry client and the format live in
 * src/oci/ (library plumb_oci); this file parses arguments, reads the GGUF's metadata for
 * push, and prints. */
#include "cli.h"
#include "oci/oci.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

static int fail(const char *cmd, plumb_status st) {
    (void)st;
    const char *e = plumb_last_error();
    fprintf(stderr, "plumb %s: %s\n", cmd, e && *e ? e : plumb_status_message(st));
    return 1;
}

static bool is_help(const char *a) {
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* ---- pull ---- */
static int pull(const char *refstr, bool insecure) {
    oci_ref ref;
    oci_store s;
    plumb_status st = oci_ref_parse(refstr, &ref);
    if (st || (st = oci_store_open(&s))) return fail("pull", st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    int gc = oci_store_lock_mode(&s, "gc", true); /* no rm frees what this pull fetches */
    if (gc < 0) return fail("pull", PLUMB_E_IO);
    oci_client *c;
    if ((st = oci_client_create(&ref, insecure, false, &c))) {
        oci_store_unlock(gc);
        return fail("pull", st);
    }
    char *body = NULL;
    size_t len = 0;
    char mdigest[OCI_DIGEST_LEN + 1];
    oci_manifest *m = malloc(sizeof *m);
    char *cfg = NULL;
    size_t cfg_len = 0;
    if (!m) st = PLUMB_E_NOMEM;
    if (!st) st = oci_client_get_manifest(c, &body, &len, mdigest);
    if (!st) st = oci_manifest_parse(body, len, m);
    if (!st) { /* refuse what the disk cannot hold before downloading */
        uint64_t need = m->config.size;
        for (int i = 0; i < m->n_layers; i++)
            if (!oci_store_has_blob(&s, m->layers[i].digest, (int64_t)m->layers[i].size)) need += m->layers[i].size;
        struct statvfs vf;
        if (statvfs(s.root, &vf) == 0 && (uint64_t)vf.f_bavail * vf.f_frsize < need) {
            fprintf(stderr, "plumb pull: %s needs %" PRIu64 " bytes but %s has %" PRIu64 " free\n", name, need, s.root,
                    (uint64_t)vf.f_bavail * vf.f_frsize);
            free(body), free(m), oci_client_free(c);
            oci_store_unlock(gc);
            return 1;
        }
    }
    if (!st) st = oci_client_fetch_blob(c, &s, &m->config);
    if (!st) st = oci_store_read(&s, m->config.digest, OCI_CONFIG_MAX, &cfg, &cfg_len);
    oci_model_meta meta;
    if (!st) st = oci_config_parse(cfg, cfg_len, &meta);
    for (int i = 0; !st && i < m->n_layers; i++) st = oci_client_fetch_blob(c, &s, &m->layers[i]);
    if (!st) st = oci_store_put(&s, body, len, mdigest, NULL);
    if (!st) st = oci_store_index_set(&s, name, mdigest);
    oci_store_unlock(gc);
    oci_client_free(c);
    free(body);
    free(cfg);
    if (st) {
        free(m);
        return fail("pull", st);
    }
    char path[3200];
    for (int i = 0; i < m->n_layers; i++)
        if (strcmp(m->layers[i].media_type, OCI_MT_GGUF) == 0) {
            oci_store_blob_path(&s, m->layers[i].digest, path, sizeof path);
            break;
        }
    printf("%s %s\n%s\n", name, mdigest, path);
    free(m);
    return 0;
}

int cmd_pull(int argc, char **argv) {
    const char *ref = NULL;
    bool insecure = false;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: plumb pull REF [--insecure]\n"
                   "  downloads a model (registry/ns/model:tag, ns/model, or ...@sha256:DIGEST) into the\n"
                   "  store ($PLUMB_HOME, default ~/.cache/plumb), verifying every blob; prints the\n"
                   "  reference, the manifest digest and the GGUF's path\n"
                   "  --insecure   plain HTTP to a registry that is not on loopback\n");
            return 0;
        }
        if (strcmp(argv[i], "--insecure") == 0) insecure = true;
        else if (argv[i][0] == '-' || ref) {
            fprintf(stderr, "plumb pull: unexpected argument '%s' (see plumb pull --help)\n", argv[i]);
            return 2;
        } else ref = argv[i];
    }
    if (!ref) {
        fprintf(stderr, "plumb pull: no reference given (see plumb pull --help)\n");
        return 2;
    }
    return pull(ref, insecure);
}

/* ---- push ---- */

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
        if (is_help(a)) {
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
    if (st) return fail("push", st);
    if (!ref.tag[0]) {
        fprintf(stderr, "plumb push: %s: push needs a tag, not a digest\n", refstr);
        return 2;
    }
    ref.digest[0] = 0;
    oci_model_meta meta;
    if ((st = meta_from_gguf(model, &meta))) return fail("push", st);
    meta.context_size = ctx;
    oci_manifest *m = calloc(1, sizeof *m);
    if (!m) return fail("push", PLUMB_E_NOMEM);
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
    if (st) return fail("push", st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    printf("%s %s\n", name, mdigest);
    return 0;
}

/* ---- list ---- */
typedef struct list_ctx {
    const oci_store *s;
    int n;
} list_ctx;

static int list_one(const char *ref, const char *digest, void *u) {
    list_ctx *lc = u;
    char *b = NULL, *cfg = NULL;
    size_t n = 0, cn = 0;
    oci_manifest *m = malloc(sizeof *m);
    oci_model_meta meta = {0};
    uint64_t size = 0;
    const char *note = "";
    if (!m || oci_store_read(lc->s, digest, OCI_MANIFEST_MAX, &b, &n) || oci_manifest_parse(b, n, m)) {
        note = " (manifest missing or unreadable)";
    } else {
        for (int i = 0; i < m->n_layers; i++) size += m->layers[i].size;
        if (oci_store_read(lc->s, m->config.digest, OCI_CONFIG_MAX, &cfg, &cn) || oci_config_parse(cfg, cn, &meta))
            note = " (config missing or unreadable)";
    }
    printf("%-50s %-19.19s %12" PRIu64 "  %-10s %-8s%s\n", ref, digest, size, meta.architecture[0] ? meta.architecture : "-",
           meta.quantization[0] ? meta.quantization : "-", note);
    lc->n++;
    free(b);
    free(cfg);
    free(m);
    return 0;
}

int cmd_list(int argc, char **argv) {
    if (argc > 1 && is_help(argv[1])) {
        printf("usage: plumb list\n  the models in the store: reference, manifest digest, size, architecture, quantization\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "plumb list: unexpected argument '%s' (plumb list takes none)\n", argv[1]);
        return 2;
    }
    oci_store s;
    plumb_status st = oci_store_open(&s);
    if (st) return fail("list", st);
    printf("%-50s %-19s %12s  %-10s %-8s\n", "REFERENCE", "DIGEST", "SIZE", "ARCH", "QUANT");
    list_ctx lc = {.s = &s};
    if ((st = oci_store_index_each(&s, list_one, &lc))) return fail("list", st);
    return 0;
}

/* ---- rm ---- */
int cmd_rm(int argc, char **argv) {
    if (argc > 1 && is_help(argv[1])) {
        printf("usage: plumb rm REF\n  removes a reference from the store and frees the blobs no reference uses\n");
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "plumb rm: needs one reference (see plumb rm --help)\n");
        return 2;
    }
    oci_ref ref;
    oci_store s;
    plumb_status st = oci_ref_parse(argv[1], &ref);
    if (st || (st = oci_store_open(&s))) return fail("rm", st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    if ((st = oci_store_index_remove(&s, name))) return fail("rm", st);
    uint64_t nb, bytes;
    if ((st = oci_store_gc(&s, &nb, &bytes))) return fail("rm", st);
    printf("removed %s; freed %" PRIu64 " blobs (%" PRIu64 " bytes)\n", name, nb, bytes);
    return 0;
}
