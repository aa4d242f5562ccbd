/* pull.c — pulling a model into the store: the manifest (checked against a digest
 * reference), a refusal before any download when the disk cannot hold the missing layers,
 * the config, the layers plumb uses (GGUF weights, license, chat template), then the
 * manifest blob, and only then the reference in the index. Blobs are verified as they
 * arrive (registry.c); a failed pull records no reference. */
#include "oci/oci.h"

#include "core/error.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* The bytes of m's wanted layers the store does not hold yet. */
static uint64_t missing_bytes(const oci_store *s, const oci_manifest *m) {
    uint64_t need = oci_store_has_blob(s, m->config.digest, (int64_t)m->config.size) ? 0 : m->config.size;
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind != OCI_LAYER_OTHER && !oci_store_has_blob(s, m->layers[i].digest, (int64_t)m->layers[i].size))
            need += m->layers[i].size;
    return need;
}

static plumb_status check_space(const oci_store *s, const char *name, uint64_t need) {
    struct statvfs vf;
    if (statvfs(s->root, &vf) != 0) return PLUMB_OK; /* unknown: the download itself will tell */
    uint64_t avail = (uint64_t)vf.f_bavail * vf.f_frsize;
    if (avail >= need) return PLUMB_OK;
    return plumb__fail(PLUMB_E_RANGE, "%s needs %" PRIu64 " bytes but %s has %" PRIu64 " free", name, need, s->root, avail);
}

plumb_status oci_pull(const oci_store *s, const oci_ref *ref, bool insecure, char mdigest[OCI_DIGEST_LEN + 1]) {
    char name[700];
    oci_ref_format(ref, name, sizeof name);
    int gc = oci_store_lock_mode(s, "gc", true); /* no rm frees what this pull fetches */
    if (gc < 0) return PLUMB_E_IO;
    oci_client *c = NULL;
    char *body = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    oci_manifest *m = malloc(sizeof *m);
    oci_model_meta meta;
    plumb_status st = m ? oci_client_create(ref, insecure, false, &c) : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    if (!st) st = oci_client_get_manifest(c, &body, &len, mdigest);
    if (!st) st = oci_manifest_parse(body, len, m);
    if (!st) st = check_space(s, name, missing_bytes(s, m));
    if (!st) st = oci_client_fetch_blob(c, s, &m->config);
    if (!st) st = oci_store_read(s, m->config.digest, OCI_CONFIG_MAX, &cfg, &cfg_len);
    if (!st) st = oci_config_parse(cfg, cfg_len, m->format, &meta);
    for (int i = 0; !st && i < m->n_layers; i++)
        if (m->layers[i].kind != OCI_LAYER_OTHER) st = oci_client_fetch_blob(c, s, &m->layers[i]);
    if (!st) st = oci_store_put(s, body, len, mdigest, NULL);
    if (!st) st = oci_store_index_set(s, name, mdigest);
    oci_store_unlock(gc);
    oci_client_free(c);
    free(body);
    free(cfg);
    free(m);
    return st;
}
