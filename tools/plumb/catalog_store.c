/* catalog_store.c — `plumb serve --store`: the server's model catalog (plumb_server_catalog,
 * server.h) as the models in plumb's store ($PLUMB_HOME). A model's id is its canonical
 * reference ("registry/ns/model:tag"); a request may name it in any form the reference
 * syntax allows ("ns/model", "localhost:5000/ns/model" for ":latest", ...@sha256:...), and
 * only models already in the store are served (nothing is pulled for a request). Read afresh
 * on every call, so a model pulled while serving is listed by the next GET /v1/models. */
#include "cli.h"
#include "oci/oci.h"

#include "server/server.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct list_ctx {
    const oci_store *s;
    plumb_server_model_entry *out;
    int n, max;
} list_ctx;

/* Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ"; 0 when t is not that. */
static int64_t rfc3339_utc(const char *t) {
    struct tm tm = {0};
    const char *end = strptime(t, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return end && !*end ? (int64_t)timegm(&tm) : 0;
}

/* The entry of the stored reference ref; false when its files are not all there. */
static bool entry_of(const oci_store *s, const char *ref, plumb_server_model_entry *out) {
    char digest[OCI_DIGEST_LEN + 1], pulled[32];
    oci_model_files mf;
    memset(out, 0, sizeof *out);
    if (strlen(ref) >= sizeof out->id || oci_store_index_entry(s, ref, digest, pulled) ||
        oci_store_model_files(s, digest, &mf) || strlen(mf.gguf) >= sizeof out->path)
        return false;
    snprintf(out->id, sizeof out->id, "%s", ref);
    snprintf(out->path, sizeof out->path, "%s", mf.gguf);
    out->created = rfc3339_utc(pulled);
    out->size = mf.size;
    return true;
}

static int list_one(const char *ref, const char *digest, void *u) {
    (void)digest;
    list_ctx *c = u;
    if (c->n < c->max && entry_of(c->s, ref, &c->out[c->n])) c->n++;
    return c->n == c->max;
}

static int store_list(void *user, plumb_server_model_entry *out, int max) {
    list_ctx c = {.s = user, .out = out, .max = max};
    return oci_store_index_each(c.s, list_one, &c) ? -1 : c.n;
}

/* A digest reference names whichever stored reference of the same repository has that
 * manifest. */
typedef struct by_digest {
    const oci_store *s;
    const oci_ref *want;
    plumb_server_model_entry *out;
    bool found;
} by_digest;

static int match_digest(const char *ref, const char *digest, void *u) {
    by_digest *b = u;
    oci_ref r;
    if (strcmp(digest, b->want->digest) != 0 || oci_ref_parse(ref, &r) || strcmp(r.registry, b->want->registry) != 0 ||
        strcmp(r.repo, b->want->repo) != 0)
        return 0;
    b->found = entry_of(b->s, ref, b->out);
    return b->found;
}

static bool store_resolve(void *user, const char *name, plumb_server_model_entry *out) {
    oci_ref ref;
    char canon[700];
    if (oci_ref_parse(name, &ref)) return false;
    oci_ref_format(&ref, canon, sizeof canon);
    if (entry_of(user, canon, out)) return true;
    by_digest b = {.s = user, .want = &ref, .out = out};
    if (ref.digest[0] && !oci_store_index_each(user, match_digest, &b) && b.found) return true;
    return false;
}

int cli_catalog_store_init(cli_catalog_store *c, plumb_server_catalog *out) {
    if (oci_store_open(&c->store)) return -1;
    out->list = store_list;
    out->resolve = store_resolve;
    out->user = &c->store;
    return 0;
}
