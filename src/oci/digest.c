/* digest.c — SHA-256 digests ("sha256:<hex>") through OpenSSL's EVP interface. */
#include "oci/oci.h"

#include "core/error.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct oci_sha256 {
    EVP_MD_CTX *ctx;
};

oci_sha256 *oci_sha256_new(void) {
    oci_sha256 *h = malloc(sizeof *h);
    if (!h) return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void oci_sha256_update(oci_sha256 *h, const void *p, size_t n) {
    if (n) EVP_DigestUpdate(h->ctx, p, n);
}

void oci_sha256_final(oci_sha256 *h, char out[OCI_DIGEST_LEN + 1]) {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, md, &n);
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++) snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void oci_sha256_bytes(const void *p, size_t n, char out[OCI_DIGEST_LEN + 1]) {
    unsigned char md[32];
    unsigned int mn = 0;
    EVP_Digest(p, n, md, &mn, EVP_sha256(), NULL);
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++) snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

plumb_status oci_sha256_file(const char *path, char out[OCI_DIGEST_LEN + 1], uint64_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return plumb__fail(PLUMB_E_IO, "%s: %s", path, strerror(errno));
    oci_sha256 *h = oci_sha256_new();
    if (!h) {
        fclose(f);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory hashing %s", path);
    }
    enum { BUF = 1 << 20 };
    unsigned char *buf = malloc(BUF); /* on the heap: a thread-local buffer would grow every thread's stack */
    uint64_t total = 0;
    size_t n;
    while (buf && (n = fread(buf, 1, BUF, f)) > 0) {
        oci_sha256_update(h, buf, n);
        total += n;
    }
    bool err = !buf || ferror(f);
    free(buf);
    fclose(f);
    oci_sha256_final(h, out);
    if (err) return plumb__fail(PLUMB_E_IO, "%s: read error", path);
    if (size) *size = total;
    return PLUMB_OK;
}
