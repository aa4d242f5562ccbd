/* registry.c — the OCI distribution v1.1 client over libcurl: manifests by tag or digest,
 * blobs (redirects followed, verified while streaming, resumed with Range), HEAD, monolithic
 * upload (POST + PUT ?digest=), manifest PUT. Auth: anonymous, then on a 401 the challenge's
 * Bearer flow (realm, service, scope -> token) or Basic, with PLUMB_REGISTRY_USER/PASSWORD.
 * Credentials from ~/.docker/config.json's "auths" when the environment has none.
 * Plain HTTP only for loopback registries or --insecure. */
#include "oci/oci.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR_MAX 2048
#define ERRBODY_MAX 65536
#define TOKEN_MAX 16384

struct oci_client {
    CURL *curl;
    oci_ref ref;
    char base[600];      /* "https://host[:port]" */
    char scope[700];     /* "repository:ns/model:pull[,push]" */
    char *auth;          /* "Authorization: ..." or NULL */
    const char *user, *password; /* the environment's, or cred_* */
    bool insecure;
    char cred_user[256], cred_password[1024]; /* from ~/.docker/config.json */
};

/* ---- one response: headers we need, and a sink for the body ---- */
typedef struct resp {
    long code;
    char www_auth[HDR_MAX];
    char location[HDR_MAX];
    char content_digest[OCI_DIGEST_LEN + 1];
    /* body into memory (cap) or a file (hashed) */
    char *mem;
    size_t mem_len, mem_cap;
    FILE *file;
    oci_sha256 *hash;
    uint64_t file_len, file_cap;
    bool over;
    CURL *curl;
} resp;

static size_t on_header(char *p, size_t size, size_t n, void *u) {
    resp *r = u;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (after a redirect): reset */
        r->www_auth[0] = r->location[0] = r->content_digest[0] = 0;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon) return len;
    size_t kn = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vn = len - kn - 1;
    while (vn && (*v == ' ' || *v == '\t')) v++, vn--;
    while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' ')) vn--;
    char *dst = NULL;
    size_t cap = 0;
    if (kn == 16 && strncasecmp(p, "WWW-Authenticate", 16) == 0) dst = r->www_auth, cap = sizeof r->www_auth;
    else if (kn == 8 && strncasecmp(p, "Location", 8) == 0) dst = r->location, cap = sizeof r->location;
    else if (kn == 21 && strncasecmp(p, "Docker-Content-Digest", 21) == 0)
        dst = r->content_digest, cap = sizeof r->content_digest;
    if (dst && vn < cap) {
        memcpy(dst, v, vn);
        dst[vn] = 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *u) {
    resp *r = u;
    size_t len = size * n;
    long code = 0;
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &code);
    if (r->file && (code == 200 || code == 206)) {
        if (r->file_len + len > r->file_cap) {
            r->over = true;
            return 0; /* more than the descriptor's size: stop */
        }
        if (fwrite(p, 1, len, r->file) != len) return 0;
        oci_sha256_update(r->hash, p, len);
        r->file_len += len;
        return len;
    }
    size_t cap = r->mem_cap ? r->mem_cap : ERRBODY_MAX;
    if (r->mem_len + len > cap) {
        r->over = true;
        return 0;
    }
    char *m = realloc(r->mem, r->mem_len + len + 1);
    if (!m) return 0;
    memcpy(m + r->mem_len, p, len);
    r->mem = m;
    r->mem_len += len;
    m[r->mem_len] = 0;
    return len;
}

static void resp_reset(resp *r) {
    free(r->mem);
    r->mem = NULL;
    r->mem_len = 0;
    r->over = false;
    r->code = 0;
    r->www_auth[0] = r->location[0] = r->content_digest[0] = 0;
}

/* The registry's error ("MANIFEST_UNKNOWN: manifest unknown") from an OCI error body. */
static void error_text(const resp *r, char *buf, size_t n) {
    buf[0] = 0;
    cJSON *j = r->mem ? cJSON_ParseWithLength(r->mem, r->mem_len) : NULL;
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "errors"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (cJSON_IsString(msg)) {
        size_t k = 0;
        for (const char *p = msg->valuestring; *p && k + 1 < n && k < 200; p++) buf[k++] = (*p >= ' ' && *p < 0x7f) ? *p : '?';
        buf[k] = 0;
    } else if (cJSON_IsString(code)) {
        snprintf(buf, n, "%.100s", code->valuestring);
    }
    cJSON_Delete(j);
}

static plumb_status http_fail(oci_client *c, const char *method, const char *what, const resp *r) {
    char et[256];
    error_text(r, et, sizeof et);
    char ref[700];
    oci_ref_format(&c->ref, ref, sizeof ref);
    plumb_status st = r->code == 404 ? PLUMB_E_NOT_FOUND : r->code == 401 || r->code == 403 ? PLUMB_E_INVALID_ARG : PLUMB_E_IO;
    if (r->code == 401 || r->code == 403)
        return plumb__fail(st, "%s: %s %s: access denied (HTTP %ld)%s%s%s", ref, method, what, r->code,
                           et[0] ? ": " : "", et,
                           !c->user ? "; set PLUMB_REGISTRY_USER and PLUMB_REGISTRY_PASSWORD"
                           : c->user == c->cred_user ? "; the registry refused the credentials from Docker's config.json"
                                                     : "; the registry refused PLUMB_REGISTRY_USER's credentials");
    return plumb__fail(st, "%s: %s %s: HTTP %ld%s%s", ref, method, what, r->code, et[0] ? ": " : "",
                       et[0] ? et : "");
}

/* ---- auth ---- */

/* key="value" from a challenge into out; false when absent. */
static bool challenge_param(const char *ch, const char *key, char *out, size_t n) {
    size_t kn = strlen(key);
    for (const char *p = ch; (p = strstr(p, key)) != NULL; p += kn) {
        if ((p != ch && p[-1] != ' ' && p[-1] != ',') || p[kn] != '=' || p[kn + 1] != '"') continue;
        const char *v = p + kn + 2, *e = strchr(v, '"');
        if (!e || (size_t)(e - v) >= n) return false;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = 0;
        return true;
    }
    return false;
}

static plumb_status set_auth(oci_client *c, const char *fmt, const char *val) {
    free(c->auth);
    size_t n = strlen(fmt) + strlen(val) + 1;
    c->auth = malloc(n);
    if (!c->auth) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    snprintf(c->auth, n, fmt, val);
    return PLUMB_OK;
}

/* Answers a 401's challenge: gets a bearer token or sets basic credentials. */
static plumb_status authenticate(oci_client *c, const char *challenge) {
    char ref[700];
    oci_ref_format(&c->ref, ref, sizeof ref);
    if (strncasecmp(challenge, "Basic", 5) == 0) {
        if (!c->user) return plumb__fail(PLUMB_E_INVALID_ARG, "%s: the registry wants credentials (set PLUMB_REGISTRY_USER and PLUMB_REGISTRY_PASSWORD)", ref);
        if (c->auth) return plumb__fail(PLUMB_E_INVALID_ARG, "%s: the registry refused the credentials", ref);
        c->auth = strdup("basic"); /* marker: curl sends CURLOPT_USERNAME/PASSWORD */
        return c->auth ? PLUMB_OK : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    if (strncasecmp(challenge, "Bearer", 6) != 0)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: unsupported authentication challenge '%.60s'", ref, challenge);
    char realm[1024], service[256] = "", scope[700];
    if (!challenge_param(challenge, "realm", realm, sizeof realm))
        return plumb__fail(PLUMB_E_FORMAT, "%s: bearer challenge without a realm", ref);
    if (strncmp(realm, "https://", 8) != 0 && !c->insecure && !(strncmp(realm, "http://", 7) == 0 && oci_host_is_loopback(realm + 7)))
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: token realm '%.200s' is not HTTPS", ref, realm);
    challenge_param(challenge, "service", service, sizeof service);
    if (!challenge_param(challenge, "scope", scope, sizeof scope)) snprintf(scope, sizeof scope, "%s", c->scope);
    CURL *t = curl_easy_init();
    if (!t) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    char *es = curl_easy_escape(t, service, 0), *esc = curl_easy_escape(t, scope, 0);
    char url[2600];
    snprintf(url, sizeof url, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?", es ? es : "",
             esc ? esc : "");
    curl_free(es);
    curl_free(esc);
    resp r = {.curl = t, .mem_cap = TOKEN_MAX};
    curl_easy_setopt(t, CURLOPT_URL, url);
    curl_easy_setopt(t, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(t, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(t, CURLOPT_CONNECTTIMEOUT, 30L);
    if (c->user) {
        curl_easy_setopt(t, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(t, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    CURLcode rc = curl_easy_perform(t);
    curl_easy_getinfo(t, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_cleanup(t);
    plumb_status st = PLUMB_OK;
    if (rc != CURLE_OK) st = plumb__fail(PLUMB_E_IO, "%s: token request to %.200s: %s", ref, realm, curl_easy_strerror(rc));
    else if (r.code != 200) st = plumb__fail(PLUMB_E_INVALID_ARG, "%s: token request refused (HTTP %ld)%s", ref, r.code, c->user ? "; check the credentials" : "");
    if (!st) {
        cJSON *j = cJSON_ParseWithLength(r.mem ? r.mem : "", r.mem_len);
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
        if (!cJSON_IsString(tok)) tok = cJSON_GetObjectItemCaseSensitive(j, "access_token");
        bool ok = cJSON_IsString(tok) && tok->valuestring[0];
        for (const char *p = ok ? tok->valuestring : ""; *p; p++)
            if (*p <= ' ' || *p >= 0x7f) ok = false;
        st = ok ? set_auth(c, "Authorization: Bearer %s", tok->valuestring)
                : plumb__fail(PLUMB_E_FORMAT, "%s: token response without a token", ref);
        cJSON_Delete(j);
    }
    free(r.mem);
    return st;
}

/* ---- requests ---- */
typedef struct req {
    const char *method;    /* "GET", "HEAD", "POST", "PUT" */
    const char *url;       /* absolute */
    const char *accept;    /* NULL or an Accept header */
    const char *ctype;     /* NULL or a Content-Type header */
    const char *range;     /* NULL or "123-" */
    const void *data;      /* body from memory ... */
    size_t data_len;
    FILE *upload;          /* ... or from a file */
    uint64_t upload_len;
} req;

typedef struct membody {
    const char *p;
    size_t n, off;
} membody;

static size_t on_read(char *buf, size_t size, size_t n, void *u) {
    membody *m = u;
    size_t k = size * n;
    if (k > m->n - m->off) k = m->n - m->off;
    memcpy(buf, m->p + m->off, k);
    m->off += k;
    return k;
}

/* Performs q once more after an auth challenge. The body sink of r is kept across tries. */
static plumb_status perform(oci_client *c, const req *q, resp *r) {
    for (int attempt = 0; attempt < 2; attempt++) {
        CURL *h = c->curl;
        curl_easy_reset(h);
        r->curl = h;
        struct curl_slist *hs = NULL;
        char line[HDR_MAX + 32];
        if (q->accept) snprintf(line, sizeof line, "Accept: %s", q->accept), hs = curl_slist_append(hs, line);
        if (q->ctype) snprintf(line, sizeof line, "Content-Type: %s", q->ctype), hs = curl_slist_append(hs, line);
        if (c->auth && strcmp(c->auth, "basic") != 0) hs = curl_slist_append(hs, c->auth);
        if (c->auth && strcmp(c->auth, "basic") == 0) {
            curl_easy_setopt(h, CURLOPT_USERNAME, c->user);
            curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
        }
        hs = curl_slist_append(hs, "Expect:");
        curl_easy_setopt(h, CURLOPT_URL, q->url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "plumb/0.1");
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->insecure || strncmp(c->base, "http://", 7) == 0 ? "http,https" : "https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, c->insecure || strncmp(c->base, "http://", 7) == 0 ? "http,https" : "https");
        bool get_like = strcmp(q->method, "GET") == 0 || strcmp(q->method, "HEAD") == 0;
        /* blob GETs are redirected to storage; credentials are not sent there (curl drops
         * custom Authorization headers on a host change unless told otherwise) */
        if (get_like) curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L), curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
        if (strcmp(q->method, "HEAD") == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        if (q->range) curl_easy_setopt(h, CURLOPT_RANGE, q->range);
        membody mb = {.p = q->data, .n = q->data_len};
        if (strcmp(q->method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->data ? q->data : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->data_len);
        } else if (strcmp(q->method, "PUT") == 0) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            if (q->upload) {
                rewind(q->upload);
                curl_easy_setopt(h, CURLOPT_READDATA, q->upload);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->upload_len);
            } else {
                curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
                curl_easy_setopt(h, CURLOPT_READDATA, &mb);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->data_len);
            }
        }
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(hs);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->code);
        char ref[700];
        oci_ref_format(&c->ref, ref, sizeof ref);
        if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r->over)) {
            return plumb__fail(PLUMB_E_IO, "%s: %s %s: %s", ref, q->method, q->url, curl_easy_strerror(rc));
        }
        if (r->over && r->file) return plumb__fail(PLUMB_E_FORMAT, "%s: blob larger than its manifest says; not stored", ref);
        if (r->over) return plumb__fail(PLUMB_E_RANGE, "%s: %s %s: response too large", ref, q->method, q->url);
        if (r->code == 401 && attempt == 0 && r->www_auth[0]) {
            char ch[HDR_MAX];
            memcpy(ch, r->www_auth, sizeof ch);
            plumb_status st = authenticate(c, ch);
            if (st) return st;
            free(r->mem); /* the 401's body went to memory (never to a download's file) */
            r->mem = NULL;
            r->mem_len = 0;
            continue;
        }
        return PLUMB_OK;
    }
    return PLUMB_OK;
}

/* ---- credentials from Docker's config ($DOCKER_CONFIG/config.json, else
 * ~/.docker/config.json): auths["host"], ["https://host"] or ["http://host"] (Docker Hub:
 * "https://index.docker.io/v1/"), each {"auth": base64("user:password")}. Credential helpers
 * (credsStore) are not run. ---- */
static void docker_config_credentials(oci_client *c) {
    char path[2048];
    const char *dir = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
    if (dir && *dir) snprintf(path, sizeof path, "%s/config.json", dir);
    else if (home && *home) snprintf(path, sizeof path, "%s/.docker/config.json", home);
    else return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    bool whole = buf && feof(f);
    fclose(f);
    cJSON *j = whole ? cJSON_ParseWithLength(buf, n) : NULL;
    free(buf);
    const cJSON *auths = cJSON_GetObjectItemCaseSensitive(j, "auths");
    char keys[3][600];
    bool hub = strcmp(c->ref.registry, "index.docker.io") == 0 || strcmp(c->ref.registry, "docker.io") == 0;
    snprintf(keys[0], sizeof keys[0], "%s", hub ? "https://index.docker.io/v1/" : c->ref.registry);
    snprintf(keys[1], sizeof keys[1], "https://%s", c->ref.registry);
    snprintf(keys[2], sizeof keys[2], "http://%s", c->ref.registry);
    for (int i = 0; i < 3 && cJSON_IsObject(auths); i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(auths, keys[i]), "auth");
        if (!cJSON_IsString(a)) continue;
        size_t len = strlen(a->valuestring);
        if (len == 0 || len % 4 || len > 4 * 300) break;
        unsigned char dec[4 * 300];
        int dn = EVP_DecodeBlock(dec, (const unsigned char *)a->valuestring, (int)len);
        if (dn < 0) break;
        for (size_t k = len; k > 0 && a->valuestring[k - 1] == '='; k--) dn--;
        unsigned char *colon = memchr(dec, ':', (size_t)dn);
        size_t un = colon ? (size_t)(colon - dec) : 0, pn = colon ? (size_t)dn - un - 1 : 0;
        if (!colon || un == 0 || un >= sizeof c->cred_user || pn >= sizeof c->cred_password) break;
        memcpy(c->cred_user, dec, un);
        c->cred_user[un] = 0;
        memcpy(c->cred_password, colon + 1, pn);
        c->cred_password[pn] = 0;
        c->user = c->cred_user;
        c->password = c->cred_password;
        break;
    }
    cJSON_Delete(j);
}

/* ---- the client ---- */
plumb_status oci_client_create(const oci_ref *ref, bool insecure, bool push, oci_client **out) {
    *out = NULL;
    static bool inited;
    if (!inited) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return plumb__fail(PLUMB_E_IO, "libcurl failed to start");
        inited = true;
    }
    oci_client *c = calloc(1, sizeof *c);
    if (!c) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    c->ref = *ref;
    c->insecure = insecure;
    const char *host = oci_ref_api_host(ref);
    snprintf(c->base, sizeof c->base, "%s://%s", insecure || oci_host_is_loopback(host) ? "http" : "https", host);
    snprintf(c->scope, sizeof c->scope, "repository:%s:%s", ref->repo, push ? "pull,push" : "pull");
    c->user = getenv("PLUMB_REGISTRY_USER");
    c->password = getenv("PLUMB_REGISTRY_PASSWORD");
    if (c->user && !*c->user) c->user = NULL;
    if (!c->user) docker_config_credentials(c);
    c->curl = curl_easy_init();
    if (!c->curl) {
        free(c);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    *out = c;
    return PLUMB_OK;
}

void oci_client_free(oci_client *c) {
    if (!c) return;
    curl_easy_cleanup(c->curl);
    free(c->auth);
    free(c);
}

plumb_status oci_client_get_manifest(oci_client *c, char **body, size_t *len, char digest[OCI_DIGEST_LEN + 1]) {
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/manifests/%s", c->base, c->ref.repo, c->ref.digest[0] ? c->ref.digest : c->ref.tag);
    resp r = {.mem_cap = OCI_MANIFEST_MAX};
    req q = {.method = "GET", .url = url, .accept = OCI_MT_MANIFEST};
    plumb_status st = perform(c, &q, &r);
    if (!st && r.code != 200) st = http_fail(c, "GET", "manifest", &r);
    if (st) {
        free(r.mem);
        return st;
    }
    oci_sha256_bytes(r.mem ? r.mem : "", r.mem_len, digest);
    char ref[700];
    oci_ref_format(&c->ref, ref, sizeof ref);
    if (c->ref.digest[0] && strcmp(digest, c->ref.digest) != 0) st = plumb__fail(PLUMB_E_FORMAT, "%s: manifest digest mismatch (got %s)", ref, digest);
    else if (r.content_digest[0] && oci_digest_valid(r.content_digest) && strcmp(r.content_digest, digest) != 0)
        st = plumb__fail(PLUMB_E_FORMAT, "%s: manifest digest mismatch (registry says %s, bytes are %s)", ref, r.content_digest, digest);
    if (st || !r.mem) {
        free(r.mem);
        return st ? st : plumb__fail(PLUMB_E_FORMAT, "%s: empty manifest", ref);
    }
    *body = r.mem;
    *len = r.mem_len;
    return PLUMB_OK;
}

plumb_status oci_client_fetch_blob(oci_client *c, const oci_store *s, const oci_desc *d) {
    if (oci_store_has_blob(s, d->digest, (int64_t)d->size)) return PLUMB_OK;
    int lock = oci_store_lock(s, d->digest + 7);
    if (lock < 0) return PLUMB_E_IO;
    if (oci_store_has_blob(s, d->digest, (int64_t)d->size)) { /* another process fetched it */
        oci_store_unlock(lock);
        return PLUMB_OK;
    }
    char tmp[3200], url[1400], range[32];
    oci_store_tmp_path(s, d->digest, tmp, sizeof tmp);
    snprintf(url, sizeof url, "%s/v2/%s/blobs/%s", c->base, c->ref.repo, d->digest);
    resp r = {0};
    r.hash = oci_sha256_new();
    plumb_status st = r.hash ? PLUMB_OK : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    /* resume: hash what an earlier run left, then ask for the rest */
    struct stat sb;
    uint64_t have = 0;
    if (!st && stat(tmp, &sb) == 0 && sb.st_size > 0 && (uint64_t)sb.st_size < d->size) {
        r.file = fopen(tmp, "r+b");
        enum { BUF = 1 << 20 };
        unsigned char *buf = malloc(BUF); /* on the heap: a thread-local buffer would grow every thread's stack */
        size_t n;
        while (buf && r.file && have < (uint64_t)sb.st_size && (n = fread(buf, 1, BUF, r.file)) > 0) {
            oci_sha256_update(r.hash, buf, n);
            have += n;
        }
        free(buf);
        if (r.file) fseek(r.file, (long)have, SEEK_SET);
    }
    if (!st && !r.file) {
        have = 0;
        r.file = fopen(tmp, "wb");
        if (!r.file) st = plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    }
    r.file_len = have;
    r.file_cap = d->size;
    if (!st) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
        req q = {.method = "GET", .url = url, .range = have ? range : NULL};
        st = perform(c, &q, &r);
        if (!st && have && r.code == 200) { /* the server ignored the range: start over */
            fclose(r.file);
            free(r.mem);
            r.mem = NULL;
            r.mem_len = 0;
            oci_sha256_final(r.hash, (char[OCI_DIGEST_LEN + 1]){0});
            r.hash = oci_sha256_new();
            r.file = fopen(tmp, "wb");
            r.file_len = 0;
            if (!r.hash || !r.file) st = plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
            else {
                req q2 = {.method = "GET", .url = url};
                st = perform(c, &q2, &r);
            }
        }
        if (!st && r.code != 200 && r.code != 206) st = http_fail(c, "GET", d->digest, &r);
    }
    if (r.file && fclose(r.file) != 0 && !st) st = plumb__fail(PLUMB_E_IO, "%s: write failed", tmp);
    char got[OCI_DIGEST_LEN + 1] = "";
    if (r.hash) oci_sha256_final(r.hash, got);
    free(r.mem);
    if (!st) {
        if (r.file_len != d->size) {
            st = plumb__fail(PLUMB_E_FORMAT, "blob %s: got %llu of %llu bytes", d->digest,
                             (unsigned long long)r.file_len, (unsigned long long)d->size);
        } else if (strcmp(got, d->digest) != 0) {
            unlink(tmp);
            st = plumb__fail(PLUMB_E_FORMAT, "blob %s: digest mismatch (the registry sent bytes hashing to %s); not stored",
                             d->digest, got);
        } else {
            st = oci_store_commit(s, tmp, d->digest, d->size); /* verifies again from disk */
        }
    } else if (st == PLUMB_E_FORMAT) {
        unlink(tmp);
    }
    oci_store_unlock(lock);
    return st;
}

plumb_status oci_client_has_blob(oci_client *c, const char *digest, bool *exists) {
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/blobs/%s", c->base, c->ref.repo, digest);
    resp r = {0};
    req q = {.method = "HEAD", .url = url};
    plumb_status st = perform(c, &q, &r);
    if (!st && r.code != 200 && r.code != 404) st = http_fail(c, "HEAD", digest, &r);
    *exists = !st && r.code == 200;
    free(r.mem);
    return st;
}

plumb_status oci_client_put_blob(oci_client *c, const char *digest, const char *path, const void *data, size_t len) {
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/blobs/uploads/", c->base, c->ref.repo);
    resp r = {0};
    req q = {.method = "POST", .url = url};
    plumb_status st = perform(c, &q, &r);
    if (!st && r.code != 202) st = http_fail(c, "POST", "blob upload", &r);
    if (!st && !r.location[0]) st = plumb__fail(PLUMB_E_FORMAT, "blob upload: the registry gave no Location");
    if (st) {
        free(r.mem);
        return st;
    }
    char put[HDR_MAX + 1500];
    if (strncmp(r.location, "http://", 7) == 0 || strncmp(r.location, "https://", 8) == 0)
        snprintf(put, sizeof put, "%s%sdigest=%s", r.location, strchr(r.location, '?') ? "&" : "?", digest);
    else
        snprintf(put, sizeof put, "%s%s%sdigest=%s", c->base, r.location, strchr(r.location, '?') ? "&" : "?", digest);
    FILE *f = NULL;
    uint64_t flen = len;
    if (path) {
        struct stat sb;
        f = fopen(path, "rb");
        if (!f || fstat(fileno(f), &sb) != 0) {
            if (f) fclose(f);
            free(r.mem);
            return plumb__fail(PLUMB_E_IO, "%s: %s", path, strerror(errno));
        }
        flen = (uint64_t)sb.st_size;
    }
    resp_reset(&r);
    req p = {.method = "PUT", .url = put, .ctype = "application/octet-stream", .data = data, .data_len = len,
             .upload = f, .upload_len = flen};
    st = perform(c, &p, &r);
    if (!st && r.code != 201) st = http_fail(c, "PUT", digest, &r);
    if (f) fclose(f);
    free(r.mem);
    return st;
}

plumb_status oci_client_put_manifest(oci_client *c, const char *body, size_t len) {
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/manifests/%s", c->base, c->ref.repo, c->ref.tag[0] ? c->ref.tag : c->ref.digest);
    resp r = {0};
    req q = {.method = "PUT", .url = url, .ctype = OCI_MT_MANIFEST, .data = body, .data_len = len};
    plumb_status st = perform(c, &q, &r);
    if (!st && r.code != 201) st = http_fail(c, "PUT", "manifest", &r);
    free(r.mem);
    return st;
}
