/* fuzz_manifest.c — libFuzzer harness for the OCI parsers of src/oci/: the first byte picks
 * one (0: model reference, 1: image manifest, 2: model config), the rest is its input. A
 * failure must leave a message; a parsed reference must be canonical and hold no "..", a
 * parsed manifest must satisfy its checks and survive a write + parse round trip. */
#include "oci/oci.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ref(const char *s) {
    oci_ref r;
    if (oci_ref_parse(s, &r) != PLUMB_OK) {
        if (!plumb_last_error()[0]) __builtin_trap();
        return;
    }
    if (strstr(r.repo, "..") || strstr(r.registry, "..") || strchr(r.repo, '\\')) __builtin_trap();
    if (r.digest[0] && !oci_digest_valid(r.digest)) __builtin_trap();
    if (!r.tag[0] && !r.digest[0]) __builtin_trap();
    char canon[800];
    oci_ref_format(&r, canon, sizeof canon);
    oci_ref again;
    if (oci_ref_parse(canon, &again) != PLUMB_OK || memcmp(&r, &again, sizeof r) != 0) __builtin_trap();
}

static void check_manifest(const char *s, size_t n) {
    oci_manifest *m = malloc(sizeof *m);
    if (!m) return;
    if (oci_manifest_parse(s, n, m) != PLUMB_OK) {
        if (!plumb_last_error()[0]) __builtin_trap();
        free(m);
        return;
    }
    if (m->n_layers < 1 || m->n_layers > OCI_MAX_LAYERS || !oci_digest_valid(m->config.digest)) __builtin_trap();
    for (int i = 0; i < m->n_layers; i++)
        if (!oci_digest_valid(m->layers[i].digest) || m->layers[i].size > OCI_BLOB_MAX) __builtin_trap();
    char *w = oci_manifest_write(m);
    oci_manifest *m2 = malloc(sizeof *m2);
    if (w && m2 && (oci_manifest_parse(w, strlen(w), m2) != PLUMB_OK || m2->n_layers != m->n_layers ||
                    m2->n_gguf != m->n_gguf || m2->format != m->format))
        __builtin_trap();
    free(w);
    free(m2);
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *s = malloc(size);
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0; /* the parsers take NUL-terminated (reference) or sized (JSON) input */
    switch (data[0] % 5) {
    case 0: check_ref(s); break;
    case 1: check_manifest(s, size - 1); break;
    default: { /* the three config formats */
        oci_model_meta meta;
        oci_format f = (oci_format)(data[0] % 5 - 2);
        if (oci_config_parse(s, size - 1, f, &meta) != PLUMB_OK && !plumb_last_error()[0]) __builtin_trap();
        break;
    }
    }
    free(s);
    return 0;
}
