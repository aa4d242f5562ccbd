/* cmd_oci.c — models as OCI artifacts: `plumb pull REF`, `plumb list`, `plumb rm REF`
 * (`plumb push`: cmd_push.c). The store, the registry client and the format live in src/oci/
 * (library plumb_oci); this file parses arguments and prints. */
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
