/* stored_model.c — what a stored model is made of: from its manifest and config in the
 * store, the path to load (the GGUF blob; for a split model the first of its shards linked
 * under llama.cpp's names in models/<manifest hex>/, so the loader finds the others), the
 * chat template and license layers, and the config's metadata. */
#include "oci/oci.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* dir/model-<i>-of-<n>.gguf -> blob, made if missing (another process may have made it). */
static plumb_status link_shard(const char *dir, int i, int n, const char *blob, char *out, size_t cap) {
    if (snprintf(out, cap, "%s/model-%05d-of-%05d.gguf", dir, i + 1, n) >= (int)cap)
        return plumb__fail(PLUMB_E_INVALID_ARG, "store path too long");
    if (symlink(blob, out) == 0) return PLUMB_OK;
    char got[3300];
    ssize_t k = errno == EEXIST ? readlink(out, got, sizeof got - 1) : -1;
    if (k > 0) {
        got[k] = 0;
        if (strcmp(got, blob) == 0) return PLUMB_OK;
        if (unlink(out) == 0 && symlink(blob, out) == 0) return PLUMB_OK;
    }
    return plumb__fail(PLUMB_E_IO, "%s: %s", out, strerror(errno));
}

plumb_status oci_store_model_files(const oci_store *s, const char *mdigest, oci_model_files *out) {
    memset(out, 0, sizeof *out);
    if (!oci_digest_valid(mdigest)) return plumb__fail(PLUMB_E_INVALID_ARG, "bad manifest digest");
    memcpy(out->manifest_digest, mdigest, OCI_DIGEST_LEN + 1);
    char *b = NULL, *cfg = NULL;
    size_t n = 0, cn = 0;
    oci_manifest *m = malloc(sizeof *m);
    plumb_status st = m ? oci_store_read(s, mdigest, OCI_MANIFEST_MAX, &b, &n) : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    if (!st) st = oci_manifest_parse(b, n, m);
    if (!st) st = oci_store_read(s, m->config.digest, OCI_CONFIG_MAX, &cfg, &cn);
    if (!st) st = oci_config_parse(cfg, cn, m->format, &out->meta);
    char dir[3200] = "";
    if (!st && m->n_gguf > 1) {
        snprintf(dir, sizeof dir, "%s/models/%s", s->root, mdigest + 7);
        char parent[3200];
        snprintf(parent, sizeof parent, "%s/models", s->root);
        if ((mkdir(parent, 0755) != 0 && errno != EEXIST) || (mkdir(dir, 0755) != 0 && errno != EEXIST))
            st = plumb__fail(PLUMB_E_IO, "%s: %s", dir, strerror(errno));
    }
    int shard = 0;
    for (int i = 0; !st && i < m->n_layers; i++) {
        const oci_desc *d = &m->layers[i];
        if (d->kind == OCI_LAYER_OTHER) continue;
        char blob[3300];
        oci_store_blob_path(s, d->digest, blob, sizeof blob);
        if (!oci_store_has_blob(s, d->digest, (int64_t)d->size)) {
            st = plumb__fail(PLUMB_E_NOT_FOUND, "layer %s is missing from the store (pull the model again)", d->digest);
            break;
        }
        if (d->kind == OCI_LAYER_TEMPLATE) snprintf(out->chat_template, sizeof out->chat_template, "%s", blob);
        else if (d->kind == OCI_LAYER_LICENSE) snprintf(out->license, sizeof out->license, "%s", blob);
        else {
            out->size += d->size;
            if (m->n_gguf == 1) snprintf(out->gguf, sizeof out->gguf, "%s", blob);
            else {
                char link[3300];
                st = link_shard(dir, shard, m->n_gguf, blob, link, sizeof link);
                if (!st && shard == 0) snprintf(out->gguf, sizeof out->gguf, "%s", link);
            }
            shard++;
        }
    }
    if (!st) {
        out->format = m->format;
        out->n_gguf = m->n_gguf;
    }
    free(b);
    free(cfg);
    free(m);
    return st;
}
