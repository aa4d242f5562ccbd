/* oci.h — models as OCI artifacts (issue 19), internal to the plumb command: references,
 * the local content-addressed store, the registry client (OCI distribution v1.1 over
 * libcurl) and Docker Model Runner's artifact format. Built as its own library (plumb_oci)
 * so libplumb does not depend on libcurl or OpenSSL. Errors are plumb_status values with the
 * detail in plumb_last_error(). */
#ifndef PLUMB_OCI_H
#define PLUMB_OCI_H

#include "plumb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OCI_DIGEST_LEN 71               /* "sha256:" + 64 hex digits */
#define OCI_MANIFEST_MAX (4u << 20)     /* manifests and indexes are small JSON */
#define OCI_CONFIG_MAX (1u << 20)       /* model configs too */
#define OCI_BLOB_MAX (1ull << 40)       /* 1 TiB: a larger layer is refused */
#define OCI_MAX_LAYERS 256

#define OCI_MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_MT_CONFIG "application/vnd.docker.ai.model.config.v0.1+json"
#define OCI_MT_GGUF "application/vnd.docker.ai.gguf.v3"
#define OCI_MT_LICENSE "application/vnd.docker.ai.license"
#define OCI_MT_TEMPLATE "application/vnd.docker.ai.chat.template.jinja"

/* ---- references (reference.c) ---- */
typedef struct oci_ref {
    char registry[256]; /* host[:port] as written ("index.docker.io" by default) */
    char repo[256];     /* "ns/model" (Docker Hub: "library/x" for a one-part name) */
    char tag[129];      /* "" when only a digest is given */
    char digest[OCI_DIGEST_LEN + 1]; /* "" or "sha256:<64 hex>" */
} oci_ref;

/* Parses s strictly: [registry/]component(/component)*[:tag][@sha256:<64 hex>]. Components
 * are lowercase alphanumerics joined by single '.', '_' or '-' (two '_' allowed), so ".." and
 * other path tricks are refused; lengths are capped. The tag defaults to "latest" when there
 * is no digest. PLUMB_E_INVALID_ARG with the reason in plumb_last_error(). */
plumb_status oci_ref_parse(const char *s, oci_ref *out);
/* "registry/repo:tag" or "registry/repo@digest" into buf (always NUL-terminated). */
void oci_ref_format(const oci_ref *r, char *buf, size_t n);
/* The host the API is reached at ("registry-1.docker.io" for Docker Hub). */
const char *oci_ref_api_host(const oci_ref *r);
/* Loopback hosts (localhost, 127.0.0.0/8, [::1]) with any port. */
bool oci_host_is_loopback(const char *host);
bool oci_digest_valid(const char *d);

/* ---- hashing (digest.c) ---- */
typedef struct oci_sha256 oci_sha256;
oci_sha256 *oci_sha256_new(void);
void oci_sha256_update(oci_sha256 *h, const void *p, size_t n);
/* Writes "sha256:<hex>" into out and frees h. */
void oci_sha256_final(oci_sha256 *h, char out[OCI_DIGEST_LEN + 1]);
void oci_sha256_bytes(const void *p, size_t n, char out[OCI_DIGEST_LEN + 1]);
/* The digest and size of a file; PLUMB_E_IO naming it. */
plumb_status oci_sha256_file(const char *path, char out[OCI_DIGEST_LEN + 1], uint64_t *size);

/* ---- the store (store.c) ---- */
typedef struct oci_store {
    char root[3072];
} oci_store;

/* $PLUMB_HOME, else $HOME/.cache/plumb; creates blobs/sha256, tmp and locks under it. */
plumb_status oci_store_open(oci_store *s);
void oci_store_blob_path(const oci_store *s, const char *digest, char *buf, size_t n);
/* true when the blob is in the store with this size (size < 0: any). */
bool oci_store_has_blob(const oci_store *s, const char *digest, int64_t size);
/* A temp path in the store for a download of digest (kept between runs for resuming). */
void oci_store_tmp_path(const oci_store *s, const char *digest, char *buf, size_t n);
/* Verifies tmp (size, sha256) and renames it to the blob; on a mismatch tmp is removed and
 * the result is PLUMB_E_FORMAT ("digest mismatch"). */
plumb_status oci_store_commit(const oci_store *s, const char *tmp, const char *digest, uint64_t size);
/* Adds bytes as a blob (verified against digest when digest is not NULL); *out_digest gets
 * its digest when not NULL. */
plumb_status oci_store_put(const oci_store *s, const void *p, size_t n, const char *digest,
                           char *out_digest);
/* Reads a blob of at most max bytes; the caller frees *out (NUL-terminated). */
plumb_status oci_store_read(const oci_store *s, const char *digest, size_t max, char **out, size_t *len);
/* Exclusive flock on locks/<name>.lock: a file descriptor, or -1 after setting the error. */
int oci_store_lock(const oci_store *s, const char *name);
/* As oci_store_lock, shared (LOCK_SH) when shared is true. */
int oci_store_lock_mode(const oci_store *s, const char *name, bool shared);
void oci_store_unlock(int fd);
/* The index (references -> manifest digests): get into digest (PLUMB_E_NOT_FOUND when
 * absent), set, remove. set/remove rewrite index.json atomically (temp + rename) under the
 * index lock. */
plumb_status oci_store_index_get(const oci_store *s, const char *ref, char digest[OCI_DIGEST_LEN + 1]);
plumb_status oci_store_index_set(const oci_store *s, const char *ref, const char *digest);
plumb_status oci_store_index_remove(const oci_store *s, const char *ref);
/* Calls fn for each reference in the index in order; stops at a nonzero return. */
plumb_status oci_store_index_each(const oci_store *s, int (*fn)(const char *ref, const char *digest, void *u),
                                  void *u);
/* Removes blobs no reference's manifest uses; counts what was freed. Holds the "gc" lock
 * exclusively, so it waits for pulls in progress (they hold it shared). */
plumb_status oci_store_gc(const oci_store *s, uint64_t *n_blobs, uint64_t *n_bytes);

/* ---- manifests and configs (manifest.c) ---- */
typedef struct oci_desc {
    char media_type[128];
    char digest[OCI_DIGEST_LEN + 1];
    uint64_t size;
} oci_desc;

typedef struct oci_manifest {
    oci_desc config;
    int n_layers;
    oci_desc layers[OCI_MAX_LAYERS];
} oci_manifest;

/* Parses untrusted manifest JSON: schemaVersion 2, OCI manifest media type, DMR's config
 * type, layers of known types with valid digests and sizes, at least one GGUF layer. */
plumb_status oci_manifest_parse(const char *json, size_t len, oci_manifest *out);
/* Manifest JSON for m; the caller frees. NULL when out of memory. */
char *oci_manifest_write(const oci_manifest *m);

typedef struct oci_model_meta {
    char architecture[64];
    char quantization[32];
    char parameters[32];
    char size[32];
    int64_t context_length; /* from the GGUF, 0 when absent */
    int64_t context_size;   /* runtime override (--context-size), 0 when absent */
} oci_model_meta;

/* DMR's config JSON for meta and the layers' digests; the caller frees. */
char *oci_config_write(const oci_model_meta *meta, const oci_manifest *m);
/* Reads architecture, quantization, parameters and size from untrusted config JSON
 * (missing fields are left ""). */
plumb_status oci_config_parse(const char *json, size_t len, oci_model_meta *out);

/* ---- the registry client (registry.c) ---- */
typedef struct oci_client oci_client;

/* A client for ref's registry (HTTPS unless the host is loopback or insecure). Credentials
 * come from PLUMB_REGISTRY_USER / PLUMB_REGISTRY_PASSWORD, else from Docker's config.json
 * "auths" ($DOCKER_CONFIG or ~/.docker). push asks tokens for push too. */
plumb_status oci_client_create(const oci_ref *ref, bool insecure, bool push, oci_client **out);
void oci_client_free(oci_client *c);
/* GET the manifest of ref (its digest when it has one, else its tag) into *body (caller
 * frees) and its computed digest; a digest reference must match. */
plumb_status oci_client_get_manifest(oci_client *c, char **body, size_t *len, char digest[OCI_DIGEST_LEN + 1]);
/* Downloads a blob into the store (resuming a temp file left by an interrupted run) and
 * verifies it; holds the blob's lock so two processes download it once. */
plumb_status oci_client_fetch_blob(oci_client *c, const oci_store *s, const oci_desc *d);
/* Whether the registry has the blob. */
plumb_status oci_client_has_blob(oci_client *c, const char *digest, bool *exists);
/* Monolithic upload (POST then PUT ?digest=) from a file or from memory (path NULL). */
plumb_status oci_client_put_blob(oci_client *c, const char *digest, const char *path, const void *data,
                                 size_t len);
plumb_status oci_client_put_manifest(oci_client *c, const char *body, size_t len);

#endif
