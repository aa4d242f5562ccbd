/* oci.h — models as OCI artifacts (issue 19), internal to the plumb command: references,
 * the local content-addressed store, the registry client (OCI distribution v1.1 over
 * libcurl) and Docker Model Runner's artifact format. Built as its own library (plumb_oci)
 * so libplumb does not depend on libcurl or OpenSSL. Errors are plumb_status values with the
 * detail in plumb_last_error(). */
#ifndef PLUMB_OCI_H
#define PLUMB_OCI_H

#include "plumb.h"

#include <stdbool.h>
#include <stdio.h>
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
#define OCI_MT_CONFIG_V02 "application/vnd.docker.ai.model.config.v0.2+json" /* a layer per file */
/* CNCF ModelPack (model-spec v1) */
#define OCI_MT_MP_MANIFEST "application/vnd.cncf.model.manifest.v1+json" /* the manifest's artifactType */
#define OCI_MT_MP_CONFIG "application/vnd.cncf.model.config.v1+json"
#define OCI_MT_MP_WEIGHT_RAW "application/vnd.cncf.model.weight.v1.raw"
#define OCI_MT_MP_DOC_RAW "application/vnd.cncf.model.doc.v1.raw"
#define OCI_ANN_FILEPATH "org.cncf.model.filepath" /* a layer's file name (DMR v0.2, ModelPack) */

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
/* A file written and hashed on a second thread (hash_writer.c): the caller's f and h belong
 * to the writer from start to finish. start: NULL when memory or a thread is lacking (write
 * and hash inline then). put copies n bytes in (blocking while the writer is behind); false
 * once a write has failed. finish drains, joins and frees; false when a write failed. */
typedef struct oci_hash_writer oci_hash_writer;
oci_hash_writer *oci_hash_writer_start(FILE *f, oci_sha256 *h);
bool oci_hash_writer_put(oci_hash_writer *w, const void *p, size_t n);
bool oci_hash_writer_finish(oci_hash_writer *w);
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
 * the result is PLUMB_E_FORMAT ("digest mismatch"). hashed: the digest of the bytes computed
 * as they were written (then only the size is checked on disk), or NULL to hash the file. */
plumb_status oci_store_commit(const oci_store *s, const char *tmp, const char *digest, uint64_t size,
                              const char *hashed);
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
/* As oci_store_index_get, and when the reference was pulled ("" when not recorded) into
 * pulled (RFC 3339, UTC) unless it is NULL. */
plumb_status oci_store_index_entry(const oci_store *s, const char *ref, char digest[OCI_DIGEST_LEN + 1],
                                   char pulled[32]);
plumb_status oci_store_index_set(const oci_store *s, const char *ref, const char *digest);
plumb_status oci_store_index_remove(const oci_store *s, const char *ref);
/* Calls fn for each reference in the index in order; stops at a nonzero return. */
plumb_status oci_store_index_each(const oci_store *s, int (*fn)(const char *ref, const char *digest, void *u),
                                  void *u);
/* Removes blobs no reference's manifest uses; counts what was freed. Holds the "gc" lock
 * exclusively, so it waits for pulls in progress (they hold it shared). */
plumb_status oci_store_gc(const oci_store *s, uint64_t *n_blobs, uint64_t *n_bytes);

/* ---- manifests and configs (manifest.c) ---- */
/* What a layer is to plumb. */
typedef enum oci_layer_kind {
    OCI_LAYER_OTHER = 0, /* a known type plumb does not use (mmproj, safetensors, docs, code...):
                            not downloaded */
    OCI_LAYER_GGUF,      /* GGUF weights; several are the shards of a split model, in order */
    OCI_LAYER_LICENSE,
    OCI_LAYER_TEMPLATE,  /* a Jinja chat template */
} oci_layer_kind;

typedef enum oci_format {
    OCI_FORMAT_DMR = 0,   /* Docker Model Runner, config v0.1 (what plumb push writes) */
    OCI_FORMAT_DMR_V02,   /* Docker Model Runner, config v0.2: a layer per file, named by annotation */
    OCI_FORMAT_MODELPACK, /* CNCF ModelPack v1 */
} oci_format;

typedef struct oci_desc {
    char media_type[128];
    char digest[OCI_DIGEST_LEN + 1];
    uint64_t size;
    oci_layer_kind kind;
    char path[256]; /* the org.cncf.model.filepath annotation (printable ASCII), "" when none */
} oci_desc;

typedef struct oci_manifest {
    oci_format format;
    oci_desc config;
    int n_layers;
    int n_gguf;
    oci_desc layers[OCI_MAX_LAYERS];
} oci_manifest;

/* Parses untrusted manifest JSON: schemaVersion 2, the OCI manifest media type, a config of
 * DMR (v0.1, v0.2) or ModelPack (v1), layers of known types with valid digests and sizes, at
 * least one GGUF layer. Each layer gets its kind; an unknown layer type, a compressed or
 * archived GGUF, and an unknown config type are refused naming them (docs/oci.md has the
 * mapping). */
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
/* Reads architecture, quantization, parameters, size and context size from untrusted config
 * JSON of the given format (missing fields are left "" / 0); a format other than GGUF is
 * refused. */
plumb_status oci_config_parse(const char *json, size_t len, oci_format format, oci_model_meta *out);

/* ---- transfer progress on stderr (progress.c) ---- */
/* One blob's transfer. On a terminal (stderr a TTY) a line redrawn with \r at most 10 times a
 * second (bytes, percent, rate, ETA) that ends as a summary; otherwise plain lines only: a
 * summary when the blob is done (and a line per 10% step, at most every 10 s, for long
 * transfers), never \r. PLUMB_PROGRESS=0 silences it. Fields are private to progress.c; a
 * zeroed oci_progress is off (update and end do nothing). */
typedef struct oci_progress {
    int mode;
    const char *verb; /* "pull" or "push": "pulling"/"pulled" */
    char label[64];   /* "gguf     0123456789ab" */
    uint64_t total, start_done, done;
    double t0, t_draw, t_line;
    int decile;
    bool shown, ended;
} oci_progress;

/* Starts p for a blob of total bytes, done of which are already there (a resumed download). */
void oci_progress_begin(oci_progress *p, const char *verb, const char *media_type, const char *digest,
                        uint64_t total, uint64_t done);
void oci_progress_update(oci_progress *p, uint64_t done);
/* Ends the line: the summary at 100% when ok; after a failure only a newline on a terminal. */
void oci_progress_end(oci_progress *p, bool ok);
/* One line "<kind> <12 hex digits of digest> <text>" on stderr (unless silenced). */
void oci_progress_note(const char *media_type, const char *digest, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool oci_progress_enabled(void);
/* "gguf", "license", "template", "config", "manifest" or "blob". */
const char *oci_media_kind(const char *media_type);

/* ---- the registry client (registry.c) ---- */
typedef struct oci_client oci_client;

/* A client for ref's registry. Transport: HTTPS; a loopback host (not --insecure) is tried
 * with HTTPS first and falls back to plain HTTP only when the TLS handshake fails and the
 * port then answers plain HTTP (never after a certificate error); insecure: plain HTTP.
 * Extra CAs, trusted besides the system store: $PLUMB_REGISTRY_CA (a PEM file),
 * $PLUMB_HOME/certs.d/<host:port>/<name>.crt and /etc/docker/certs.d/<host:port>/<name>.crt.
 * Credentials come from PLUMB_REGISTRY_USER / PLUMB_REGISTRY_PASSWORD, else from Docker's
 * config.json "auths" ($DOCKER_CONFIG or ~/.docker). push asks tokens for push too, and
 * reads PLUMB_UPLOAD_CHUNK (the chunked-upload threshold and chunk size, bytes with an
 * optional k/m/g suffix; default 64m). */
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
typedef enum oci_push_how {
    OCI_PUSH_EXISTS,   /* the registry had it (HEAD) */
    OCI_PUSH_MOUNTED,  /* cross-repository mount from from_repo */
    OCI_PUSH_UPLOADED,
} oci_push_how;

/* Pushes the blob d unless the registry has it: HEAD; then, when from_repo is not NULL (a
 * repository of the same registry known to hold it), POST ?mount=<digest>&from=<from_repo>:
 * 201 is done, 202 (declined) continues with an upload in the session it opened; else POST.
 * The upload is monolithic (PUT ?digest= with the body) up to the chunk size and chunked
 * above it (PATCH per chunk with Content-Range, each answered Range checked, following each
 * Location, then PUT ?digest=). The body is the file at path (its size must be d->size; a
 * progress line is shown for it) or data/len when path is NULL. *how says what happened. */
plumb_status oci_client_push_blob(oci_client *c, const oci_desc *d, const char *from_repo, const char *path,
                                  const void *data, size_t len, oci_push_how *how);
plumb_status oci_client_put_manifest(oci_client *c, const char *body, size_t len);

/* ---- pulling (pull.c) and stored models (stored_model.c) ---- */
/* Pulls ref into the store: the manifest (its digest into mdigest), then, unless the disk
 * cannot hold the missing bytes (PLUMB_E_RANGE, before any download), the config and every
 * layer plumb uses, each verified; records the reference last. Holds the "gc" lock shared. */
plumb_status oci_pull(const oci_store *s, const oci_ref *ref, bool insecure, char mdigest[OCI_DIGEST_LEN + 1]);

typedef struct oci_model_files {
    char manifest_digest[OCI_DIGEST_LEN + 1];
    oci_format format;
    oci_model_meta meta;      /* from the config */
    int n_gguf;               /* GGUF layers: shards when more than one */
    uint64_t size;            /* bytes of the GGUF layers */
    char gguf[3300];          /* the path to load: the GGUF blob, or the first shard's link */
    char chat_template[3300]; /* the chat template layer's blob, "" when there is none */
    char license[3300];       /* the license layer's blob, "" when there is none */
} oci_model_files;

/* The files of the stored model whose manifest is mdigest; links the shards of a split
 * model into models/<hex>/. PLUMB_E_NOT_FOUND when a layer is missing. */
plumb_status oci_store_model_files(const oci_store *s, const char *mdigest, oci_model_files *out);

#endif
