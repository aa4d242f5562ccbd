/* store.c — the local content-addressed store under $PLUMB_HOME (default ~/.cache/plumb):
 *   blobs/sha256/<hex>   verified blobs (manifests, configs, layers)
 *   tmp/<hex>.partial    downloads in progress (kept for resuming)
 *   locks/<name>.lock    flock files: one per blob being fetched, "index" for the index,
 *                        "gc" (pulls hold it shared, so rm never frees blobs a pull has
 *                        fetched but not yet recorded)
 *   index.json           {"references": {"registry/repo:tag": {"manifest": "sha256:...",
 *                        "pulled": "<RFC 3339>"}}}, rewritten by temp + rename under the
 *                        index lock (a bare digest string is read as an entry too)
 *   models/<hex>/        for a split model: its shards linked under llama.cpp's names
 *                        (model-00001-of-00003.gguf ...), so loading the first finds the rest */
#include "oci/oci.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEX_MAX (16u << 20)

static plumb_status mkdirs(const char *path) {
    char tmp[3200];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return plumb__fail(PLUMB_E_INVALID_ARG, "store path too long");
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    return PLUMB_OK;
}

plumb_status oci_store_open(oci_store *s) {
    const char *home = getenv("PLUMB_HOME");
    int w;
    if (home && *home) {
        w = snprintf(s->root, sizeof s->root, "%s", home);
    } else {
        const char *h = getenv("HOME");
        if (!h || !*h) return plumb__fail(PLUMB_E_INVALID_ARG, "neither PLUMB_HOME nor HOME is set");
        w = snprintf(s->root, sizeof s->root, "%s/.cache/plumb", h);
    }
    if (w < 0 || (size_t)w >= sizeof s->root - 128) return plumb__fail(PLUMB_E_INVALID_ARG, "PLUMB_HOME too long");
    static const char *const sub[] = {"blobs/sha256", "tmp", "locks"};
    for (int i = 0; i < 3; i++) {
        char p[3200];
        snprintf(p, sizeof p, "%s/%s", s->root, sub[i]);
        plumb_status st = mkdirs(p);
        if (st) return st;
    }
    return PLUMB_OK;
}

void oci_store_blob_path(const oci_store *s, const char *digest, char *buf, size_t n) {
    PLUMB_ASSERT(oci_digest_valid(digest));
    snprintf(buf, n, "%s/blobs/sha256/%s", s->root, digest + 7);
}

void oci_store_tmp_path(const oci_store *s, const char *digest, char *buf, size_t n) {
    PLUMB_ASSERT(oci_digest_valid(digest));
    snprintf(buf, n, "%s/tmp/%s.partial", s->root, digest + 7);
}

bool oci_store_has_blob(const oci_store *s, const char *digest, int64_t size) {
    char p[3200];
    struct stat st;
    oci_store_blob_path(s, digest, p, sizeof p);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && (size < 0 || st.st_size == size);
}

plumb_status oci_store_commit(const oci_store *s, const char *tmp, const char *digest, uint64_t size,
                              const char *hashed) {
    char got[OCI_DIGEST_LEN + 1];
    uint64_t n = 0;
    struct stat sb;
    plumb_status st = PLUMB_OK;
    if (!hashed) st = oci_sha256_file(tmp, got, &n);
    else if (stat(tmp, &sb) != 0) st = plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    else {
        n = (uint64_t)sb.st_size;
        snprintf(got, sizeof got, "%s", hashed);
    }
    if (st) return st;
    if (n != size || strcmp(got, digest) != 0) {
        unlink(tmp);
        if (n != size)
            return plumb__fail(PLUMB_E_FORMAT, "blob %s: size mismatch (expected %llu bytes, got %llu); not stored",
                               digest, (unsigned long long)size, (unsigned long long)n);
        return plumb__fail(PLUMB_E_FORMAT, "blob %s: digest mismatch (got %s); not stored", digest, got);
    }
    char dst[3200];
    oci_store_blob_path(s, digest, dst, sizeof dst);
    if (rename(tmp, dst) != 0) return plumb__fail(PLUMB_E_IO, "%s: %s", dst, strerror(errno));
    return PLUMB_OK;
}

plumb_status oci_store_put(const oci_store *s, const void *p, size_t n, const char *digest, char *out_digest) {
    char d[OCI_DIGEST_LEN + 1];
    oci_sha256_bytes(p, n, d);
    if (digest && strcmp(d, digest) != 0)
        return plumb__fail(PLUMB_E_FORMAT, "blob %s: digest mismatch (got %s); not stored", digest, d);
    if (out_digest) memcpy(out_digest, d, sizeof d);
    if (oci_store_has_blob(s, d, (int64_t)n)) return PLUMB_OK;
    char tmp[3200], dst[3200];
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.%ld.put", s->root, d + 7, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    bool ok = fwrite(p, 1, n, f) == n;
    ok = (fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    oci_store_blob_path(s, d, dst, sizeof dst);
    if (!ok || rename(tmp, dst) != 0) {
        unlink(tmp);
        return plumb__fail(PLUMB_E_IO, "%s: write failed: %s", dst, strerror(errno));
    }
    return PLUMB_OK;
}

static plumb_status read_file(const char *path, size_t max, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return plumb__fail(errno == ENOENT ? PLUMB_E_NOT_FOUND : PLUMB_E_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > max) {
        fclose(f);
        return plumb__fail(PLUMB_E_RANGE, "%s: larger than %zu bytes", path, max);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory reading %s", path);
    }
    size_t r = fread(b, 1, n, f);
    fclose(f);
    if (r != n) {
        free(b);
        return plumb__fail(PLUMB_E_IO, "%s: short read", path);
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return PLUMB_OK;
}

plumb_status oci_store_read(const oci_store *s, const char *digest, size_t max, char **out, size_t *len) {
    char p[3200];
    oci_store_blob_path(s, digest, p, sizeof p);
    return read_file(p, max, out, len);
}

int oci_store_lock(const oci_store *s, const char *name) {
    return oci_store_lock_mode(s, name, false);
}

int oci_store_lock_mode(const oci_store *s, const char *name, bool shared) {
    char p[3200];
    snprintf(p, sizeof p, "%s/locks/%s.lock", s->root, name);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        plumb__fail(PLUMB_E_IO, "%s: %s", p, strerror(errno));
        return -1;
    }
    while (flock(fd, shared ? LOCK_SH : LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        plumb__fail(PLUMB_E_IO, "%s: flock: %s", p, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void oci_store_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing releases the flock */
}

/* The index as a cJSON object (an empty one when there is no index yet). */
static plumb_status index_load(const oci_store *s, cJSON **out) {
    char p[3200];
    snprintf(p, sizeof p, "%s/index.json", s->root);
    char *b = NULL;
    size_t n = 0;
    plumb_status st = read_file(p, INDEX_MAX, &b, &n);
    if (st == PLUMB_E_NOT_FOUND) {
        *out = cJSON_CreateObject();
        if (!*out || !cJSON_AddObjectToObject(*out, "references")) {
            cJSON_Delete(*out);
            return plumb__fail(PLUMB_E_NOMEM, "out of memory");
        }
        return PLUMB_OK;
    }
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(b, n);
    free(b);
    cJSON *refs = j ? cJSON_GetObjectItemCaseSensitive(j, "references") : NULL;
    if (!cJSON_IsObject(refs)) {
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_FORMAT, "%s: not a plumb index (no \"references\" object)", p);
    }
    *out = j;
    return PLUMB_OK;
}

static plumb_status index_save(const oci_store *s, cJSON *j) {
    char p[3200], tmp[3200];
    snprintf(p, sizeof p, "%s/index.json", s->root);
    snprintf(tmp, sizeof tmp, "%s/tmp/index.json.%ld", s->root, (long)getpid());
    char *text = cJSON_Print(j);
    if (!text) return plumb__fail(PLUMB_E_NOMEM, "out of memory writing the index");
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(text);
        return plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    }
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    free(text);
    ok = fflush(f) == 0 && ok && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, p) != 0) {
        unlink(tmp);
        return plumb__fail(PLUMB_E_IO, "%s: write failed: %s", p, strerror(errno));
    }
    return PLUMB_OK;
}

/* The manifest digest of an index entry (an object, or a bare digest string); NULL when the
 * entry is neither. */
static const char *entry_digest(const cJSON *e) {
    const cJSON *d = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "manifest") : e;
    return cJSON_IsString(d) && oci_digest_valid(d->valuestring) ? d->valuestring : NULL;
}

plumb_status oci_store_index_entry(const oci_store *s, const char *ref, char digest[OCI_DIGEST_LEN + 1],
                                   char pulled[32]) {
    cJSON *j;
    plumb_status st = index_load(s, &j);
    if (st) return st;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "references"), ref);
    const char *d = entry_digest(e);
    if (!d) {
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_NOT_FOUND, "%s: not in the store", ref);
    }
    memcpy(digest, d, OCI_DIGEST_LEN + 1);
    if (pulled) {
        const cJSON *t = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "pulled") : NULL;
        snprintf(pulled, 32, "%s", cJSON_IsString(t) && strlen(t->valuestring) < 32 ? t->valuestring : "");
        for (char *c = pulled; *c; c++)
            if (*c < ' ' || *c >= 0x7f) *c = '?';
    }
    cJSON_Delete(j);
    return PLUMB_OK;
}

plumb_status oci_store_index_get(const oci_store *s, const char *ref, char digest[OCI_DIGEST_LEN + 1]) {
    return oci_store_index_entry(s, ref, digest, NULL);
}

static plumb_status index_update(const oci_store *s, const char *ref, const char *digest) {
    int fd = oci_store_lock(s, "index");
    if (fd < 0) return PLUMB_E_IO;
    cJSON *j;
    plumb_status st = index_load(s, &j);
    if (st) {
        oci_store_unlock(fd);
        return st;
    }
    cJSON *refs = cJSON_GetObjectItemCaseSensitive(j, "references");
    if (digest) {
        char now[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
        cJSON *v = cJSON_CreateObject();
        if (!v || !cJSON_AddStringToObject(v, "manifest", digest) || !cJSON_AddStringToObject(v, "pulled", now)) {
            cJSON_Delete(v);
            st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
        } else if (cJSON_GetObjectItemCaseSensitive(refs, ref)) cJSON_ReplaceItemInObjectCaseSensitive(refs, ref, v);
        else cJSON_AddItemToObject(refs, ref, v);
    } else if (!cJSON_GetObjectItemCaseSensitive(refs, ref)) {
        st = plumb__fail(PLUMB_E_NOT_FOUND, "%s: not in the store", ref);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(refs, ref);
    }
    if (!st) st = index_save(s, j);
    cJSON_Delete(j);
    oci_store_unlock(fd);
    return st;
}

plumb_status oci_store_index_set(const oci_store *s, const char *ref, const char *digest) {
    return index_update(s, ref, digest);
}

plumb_status oci_store_index_remove(const oci_store *s, const char *ref) {
    return index_update(s, ref, NULL);
}

plumb_status oci_store_index_each(const oci_store *s, int (*fn)(const char *ref, const char *digest, void *u),
                                  void *u) {
    cJSON *j;
    plumb_status st = index_load(s, &j);
    if (st) return st;
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "references")) {
        const char *d = entry_digest(e);
        if (!d || !e->string) continue;
        if (fn(e->string, d, u)) break;
    }
    cJSON_Delete(j);
    return PLUMB_OK;
}

/* ---- garbage collection: the set of digests reachable from the index ---- */
typedef struct keep_set {
    char (*d)[OCI_DIGEST_LEN + 1];
    size_t n, cap;
    const oci_store *s;
    plumb_status st;
} keep_set;

static void keep_add(keep_set *k, const char *d) {
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        void *p = realloc(k->d, cap * sizeof *k->d);
        if (!p) {
            k->st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
            return;
        }
        k->d = p;
        k->cap = cap;
    }
    memcpy(k->d[k->n++], d, OCI_DIGEST_LEN + 1);
}

static int keep_ref(const char *ref, const char *digest, void *u) {
    (void)ref;
    keep_set *k = u;
    if (!oci_digest_valid(digest)) return 0;
    keep_add(k, digest);
    char *b;
    size_t n;
    if (oci_store_read(k->s, digest, OCI_MANIFEST_MAX, &b, &n)) return 0; /* manifest gone: keep nothing more */
    oci_manifest *m = malloc(sizeof *m);
    if (m && oci_manifest_parse(b, n, m) == PLUMB_OK) {
        keep_add(k, m->config.digest);
        for (int i = 0; i < m->n_layers; i++) keep_add(k, m->layers[i].digest);
    }
    free(m);
    free(b);
    return k->st != PLUMB_OK;
}

/* "sha256:<name>" into dg when name is 64 lowercase hex digits. */
static bool digest_of_name(const char *name, char dg[OCI_DIGEST_LEN + 1]) {
    if (strlen(name) != 64) return false;
    memcpy(dg, "sha256:", 7);
    memcpy(dg + 7, name, 65);
    return oci_digest_valid(dg);
}

static bool keep_has(const keep_set *k, const char *dg) {
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->d[i], dg) == 0) return true;
    return false;
}

/* Removes models/<hex>/ (a split model's shard links) of manifests no reference keeps. */
static void unlink_model_dirs(const oci_store *s, const keep_set *k) {
    char dir[3200];
    snprintf(dir, sizeof dir, "%s/models", s->root);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char dg[OCI_DIGEST_LEN + 1];
        if (!digest_of_name(e->d_name, dg) || keep_has(k, dg)) continue;
        char sub[3300];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        DIR *sd = opendir(sub);
        struct dirent *f;
        while (sd && (f = readdir(sd)) != NULL) {
            if (f->d_name[0] == '.') continue;
            char p[3600];
            snprintf(p, sizeof p, "%s/%s", sub, f->d_name);
            unlink(p);
        }
        if (sd) closedir(sd);
        rmdir(sub);
    }
    if (d) closedir(d);
}

plumb_status oci_store_gc(const oci_store *s, uint64_t *n_blobs, uint64_t *n_bytes) {
    *n_blobs = *n_bytes = 0;
    int gc = oci_store_lock(s, "gc"); /* waits for pulls, which hold it shared */
    if (gc < 0) return PLUMB_E_IO;
    int fd = oci_store_lock(s, "index");
    if (fd < 0) {
        oci_store_unlock(gc);
        return PLUMB_E_IO;
    }
    keep_set k = {.s = s};
    plumb_status st = oci_store_index_each(s, keep_ref, &k);
    if (!st) st = k.st;
    char dir[3200];
    snprintf(dir, sizeof dir, "%s/blobs/sha256", s->root);
    DIR *d = st ? NULL : opendir(dir);
    if (!st && !d) st = plumb__fail(PLUMB_E_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char dg[OCI_DIGEST_LEN + 1];
        if (!digest_of_name(e->d_name, dg) || keep_has(&k, dg)) continue;
        char p[3300];
        struct stat sb;
        oci_store_blob_path(s, dg, p, sizeof p);
        if (stat(p, &sb) == 0 && unlink(p) == 0) {
            (*n_blobs)++;
            *n_bytes += (uint64_t)sb.st_size;
        }
    }
    if (d) closedir(d);
    if (!st) unlink_model_dirs(s, &k);
    free(k.d);
    oci_store_unlock(fd);
    oci_store_unlock(gc);
    return st;
}
