/* registry.c — the OCI distribution v1.1 client over libcurl: manifests by tag or digest,
 * blobs (redirects followed, verified while streaming, resumed with Range), HEAD, uploads
 * (monolithic POST + PUT ?digest=, or chunked POST + PATCH... + PUT above a size),
 * cross-repository mounts (POST ?mount=&from=), manifest PUT, progress of blob transfers.
 * Auth: anonymous, then on a 401 the challenge's Bearer flow (realm, service, scope -> token)
 * or Basic, with PLUMB_REGISTRY_USER/PASSWORD, else Docker's config.json "auths".
 * Transport: HTTPS, trusting the system store plus extra CAs the way Docker does (certs.d);
 * a loopback registry is tried with HTTPS first and spoken to in plain HTTP only when its
 * port turns out to speak plain HTTP; --insecure is plain HTTP. */
#include "oci/oci.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR_MAX 2048
#define ERRBODY_MAX 65536
#define TOKEN_MAX 16384
#define CA_FILE_MAX (1u << 20)      /* one extra CA file */
#define CA_BUNDLE_MAX (64u << 20)   /* the system bundle */
#define CA_DIR_FILES 64             /* *.crt files read from one certs.d directory */
#define CHUNK_DEFAULT (64ull << 20)
#define CHUNK_MIN 1024ull
#define CHUNK_MAX (4ull << 30)

struct oci_client {
    CURL *curl;
    oci_ref ref;
    char host[300];      /* the API's host[:port] */
    char base[600];      /* "https://host[:port]" (or http:// after the loopback probe) */
    char scope[700];     /* "repository:ns/model:pull[,push]" */
    char *auth;          /* "Authorization: ..." or NULL */
    const char *user, *password; /* the environment's, or cred_* */
    bool insecure;
    bool probe, probed;  /* loopback: HTTPS or plain HTTP, found out by the first request */
    uint64_t chunk;      /* uploads above this size go in chunks of it */
    char *ca;            /* PEM: the system store and the extra CAs; NULL: curl's default store */
    size_t ca_len;
    char ca_hint[3420];  /* where a CA for this registry goes ($PLUMB_HOME/certs.d/host/ca.crt) */
    CURLcode last_rc;    /* of the last request that failed in transport */
    char errbuf[CURL_ERROR_SIZE];
    char cred_user[256], cred_password[1024]; /* from ~/.docker/config.json */
};

/* ---- one response: headers we need, and a sink for the body ---- */
typedef struct resp {
    long code;
    char www_auth[HDR_MAX];
    char location[HDR_MAX];
    char range[64];      /* an upload's Range: "0-<last byte>" */
    char content_digest[OCI_DIGEST_LEN + 1];
    /* body into memory (cap) or a file (hashed) */
    char *mem;
    size_t mem_len, mem_cap;
    FILE *file;
    oci_sha256 *hash;
    oci_hash_writer *writer; /* writes and hashes file on a second thread when not NULL */
    uint64_t file_len, file_cap;
    bool over;
    CURL *curl;
} resp;

static size_t on_header(char *p, size_t size, size_t n, void *u) {
    resp *r = u;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (after a redirect): reset */
        r->www_auth[0] = r->location[0] = r->range[0] = r->content_digest[0] = 0;
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
    else if (kn == 5 && strncasecmp(p, "Range", 5) == 0) dst = r->range, cap = sizeof r->range;
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
        if (r->writer) {
            if (!oci_hash_writer_put(r->writer, p, len)) return 0;
        } else {
            if (fwrite(p, 1, len, r->file) != len) return 0;
            oci_sha256_update(r->hash, p, len);
        }
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
    r->www_auth[0] = r->location[0] = r->range[0] = r->content_digest[0] = 0;
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

/* ---- TLS: which CAs are trusted, and what a failed handshake means ----
 * As Docker: the system store, plus every *.crt of $PLUMB_HOME/certs.d/<host:port>/ and
 * /etc/docker/certs.d/<host:port>/, plus the file named by PLUMB_REGISTRY_CA. With extra CAs
 * the system bundle and the extras go to curl as one PEM blob (CURLOPT_CAINFO replaces the
 * store rather than adding to it). */

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static bool sb_add(strbuf *b, const char *p, size_t n) {
    if (n > CA_BUNDLE_MAX || b->n > 2 * (size_t)CA_BUNDLE_MAX) return false;
    if (b->n + n + 2 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 2) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n++] = '\n';
    b->p[b->n] = 0;
    return true;
}

/* Reads a whole file of at most cap bytes; PLUMB_E_NOT_FOUND when it is absent. */
static plumb_status read_small(const char *path, size_t cap, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return plumb__fail(errno == ENOENT ? PLUMB_E_NOT_FOUND : PLUMB_E_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > cap) {
        fclose(f);
        return plumb__fail(PLUMB_E_IO, "%s: not a regular file of at most %zu bytes", path, cap);
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
    bool bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return plumb__fail(buf ? PLUMB_E_IO : PLUMB_E_NOMEM, "%s: read failed", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return PLUMB_OK;
}

static plumb_status add_ca_file(strbuf *b, const char *path, const char *why) {
    char *pem;
    size_t n;
    plumb_status st = read_small(path, CA_FILE_MAX, &pem, &n);
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", plumb_last_error());
        return plumb__fail(st, "%s%s", why, msg);
    }
    if (!strstr(pem, "-----BEGIN CERTIFICATE-----"))
        st = plumb__fail(PLUMB_E_FORMAT, "%s%s: not a PEM certificate", why, path);
    else if (!sb_add(b, pem, n)) st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
    free(pem);
    return st;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.crt files of dir (absent: none), in name order. */
static plumb_status add_ca_dir(strbuf *b, const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) return PLUMB_OK;
    char *names[CA_DIR_FILES];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < CA_DIR_FILES) {
        size_t l = strlen(e->d_name);
        if (l > 4 && e->d_name[0] != '.' && strcmp(e->d_name + l - 4, ".crt") == 0 && (names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    plumb_status st = PLUMB_OK;
    for (int i = 0; i < n; i++) {
        char path[4096];
        int w = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!st && (w < 0 || (size_t)w >= sizeof path)) st = plumb__fail(PLUMB_E_INVALID_ARG, "%s: path too long", dir);
        if (!st) st = add_ca_file(b, path, "");
        if (!st) (*count)++;
        free(names[i]);
    }
    return st;
}

static plumb_status load_cas(oci_client *c) {
    char home[3072] = "";
    const char *ph = getenv("PLUMB_HOME"), *h = getenv("HOME");
    if (ph && *ph) snprintf(home, sizeof home, "%s", ph);
    else if (h && *h) snprintf(home, sizeof home, "%s/.cache/plumb", h);
    char dirs[2][3400];
    int nd = 0;
    if (home[0]) snprintf(dirs[nd++], sizeof dirs[0], "%s/certs.d/%s", home, c->host);
    snprintf(dirs[nd++], sizeof dirs[0], "/etc/docker/certs.d/%s", c->host);
    snprintf(c->ca_hint, sizeof c->ca_hint, "%s/ca.crt", dirs[0]);

    strbuf extra = {0};
    int count = 0;
    plumb_status st = PLUMB_OK;
    const char *env = getenv("PLUMB_REGISTRY_CA");
    if (env && *env) {
        st = add_ca_file(&extra, env, "PLUMB_REGISTRY_CA=");
        count += !st;
    }
    for (int i = 0; i < nd && !st; i++) st = add_ca_dir(&extra, dirs[i], &count);
    if (st || count == 0) {
        free(extra.p);
        return st;
    }
    /* the system store first: SSL_CERT_FILE as OpenSSL reads it, else curl's bundle */
    const char *bundle = getenv("SSL_CERT_FILE");
#if LIBCURL_VERSION_NUM >= 0x075400 /* 7.84: CURLINFO_CAINFO */
    char *cainfo = NULL;
    if ((!bundle || !*bundle) && curl_easy_getinfo(c->curl, CURLINFO_CAINFO, &cainfo) == CURLE_OK && cainfo)
        bundle = cainfo;
#endif
    if (!bundle || !*bundle) bundle = "/etc/ssl/certs/ca-certificates.crt";
    char *sys = NULL;
    size_t sys_n = 0;
    strbuf all = {0};
    bool ok = true;
    if (read_small(bundle, CA_BUNDLE_MAX, &sys, &sys_n) == PLUMB_OK) ok = sb_add(&all, sys, sys_n);
    free(sys);
    plumb__clear_error();
    if (ok) ok = sb_add(&all, extra.p, extra.n);
    free(extra.p);
    if (!ok) {
        free(all.p);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    c->ca = all.p;
    c->ca_len = all.n;
    return PLUMB_OK;
}

/* Per handle, after curl_easy_reset: the trusted CAs and the error buffer. */
static void apply_tls(oci_client *c, CURL *h) {
    c->errbuf[0] = 0;
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    if (c->ca) {
        struct curl_blob blob = {.data = c->ca, .len = c->ca_len, .flags = CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
}

/* One line for a transfer that failed below HTTP: a certificate that is not trusted says
 * where its CA goes; other TLS failures carry curl's detail. */
static plumb_status curl_fail(oci_client *c, const char *method, const char *url, CURLcode rc) {
    char ref[700], detail[CURL_ERROR_SIZE];
    oci_ref_format(&c->ref, ref, sizeof ref);
    size_t k = 0;
    for (const char *p = c->errbuf; *p && k + 1 < sizeof detail; p++)
        if (*p >= ' ' && *p < 0x7f) detail[k++] = *p;
    detail[k] = 0;
    if (!detail[0]) snprintf(detail, sizeof detail, "%s", curl_easy_strerror(rc));
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
        return plumb__fail(PLUMB_E_IO,
                           "%s: the TLS certificate of %s is not trusted (%s); put the registry's CA certificate in "
                           "%s or name it with PLUMB_REGISTRY_CA",
                           ref, c->host, detail, c->ca_hint);
    if (rc == CURLE_SSL_CACERT_BADFILE)
        return plumb__fail(PLUMB_E_IO, "%s: the CA certificates could not be loaded (%s)", ref, detail);
    if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
        rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_CRL_BADFILE)
        return plumb__fail(PLUMB_E_IO, "%s: %s %s: TLS failed (%s)", ref, method, url, detail);
    return plumb__fail(PLUMB_E_IO, "%s: %s %s: %s", ref, method, url, curl_easy_strerror(rc));
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
    apply_tls(c, t);
    if (c->user) {
        curl_easy_setopt(t, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(t, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    CURLcode rc = curl_easy_perform(t);
    curl_easy_getinfo(t, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_cleanup(t);
    plumb_status st = PLUMB_OK;
    if (rc != CURLE_OK) {
        c->last_rc = rc;
        st = curl_fail(c, "GET", realm, rc);
    }
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
    const char *method;    /* "GET", "HEAD", "POST", "PUT", "PATCH" */
    const char *url;       /* absolute */
    const char *accept;    /* NULL or an Accept header */
    const char *ctype;     /* NULL or a Content-Type header */
    const char *crange;    /* NULL or a Content-Range header ("0-1023") */
    const char *range;     /* NULL or "123-" */
    const void *data;      /* body from memory ... */
    size_t data_len;
    FILE *upload;          /* ... or upload_len bytes of a file from upload_off */
    uint64_t upload_off, upload_len;
    oci_progress *prog;    /* NULL or the blob's progress; this request moves bytes from prog_base */
    uint64_t prog_base;
    bool noauth;           /* the transport probe: a 401 is an answer, not a challenge */
} req;

typedef struct membody {
    const char *p;
    size_t n, off;
} membody;

static size_t on_read(char *buf, size_t size, size_t n, void *u) {
    membody *m = u;
    size_t k = size * n;
    if (k > m->n - m->off) k = m->n - m->off;
    if (k) memcpy(buf, m->p + m->off, k);
    m->off += k;
    return k;
}

typedef struct filebody {
    FILE *f;
    uint64_t left;
} filebody;

static size_t on_read_file(char *buf, size_t size, size_t n, void *u) {
    filebody *b = u;
    size_t k = size * n;
    if (k > b->left) k = (size_t)b->left;
    if (k == 0) return 0;
    size_t got = fread(buf, 1, k, b->f);
    if (got == 0) return CURL_READFUNC_ABORT; /* the file shrank under us */
    b->left -= got;
    return got;
}

static int on_xfer(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal, (void)ultotal;
    const req *q = u;
    bool up = q->upload || q->data_len;
    curl_off_t n = up ? ulnow : dlnow;
    oci_progress_update(q->prog, q->prog_base + (uint64_t)(n > 0 ? n : 0));
    return 0;
}

/* Performs q, once more after an auth challenge. The body sink of r is kept across tries. */
static plumb_status perform(oci_client *c, const req *q, resp *r) {
    for (int attempt = 0; attempt < 2; attempt++) {
        CURL *h = c->curl;
        curl_easy_reset(h);
        r->curl = h;
        struct curl_slist *hs = NULL;
        char line[HDR_MAX + 32];
        if (q->accept) snprintf(line, sizeof line, "Accept: %s", q->accept), hs = curl_slist_append(hs, line);
        if (q->ctype) snprintf(line, sizeof line, "Content-Type: %s", q->ctype), hs = curl_slist_append(hs, line);
        if (q->crange) snprintf(line, sizeof line, "Content-Range: %s", q->crange), hs = curl_slist_append(hs, line);
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
        apply_tls(c, h);
        if (q->prog) {
            curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xfer);
            curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)q);
        }
        bool get_like = strcmp(q->method, "GET") == 0 || strcmp(q->method, "HEAD") == 0;
        /* blob GETs are redirected to storage; credentials are not sent there (curl drops
         * custom Authorization headers on a host change unless told otherwise) */
        if (get_like) curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L), curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
        if (strcmp(q->method, "HEAD") == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        if (q->range) curl_easy_setopt(h, CURLOPT_RANGE, q->range);
        membody mb = {.p = q->data, .n = q->data_len};
        filebody fb = {.f = q->upload, .left = q->upload_len};
        if (strcmp(q->method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->data ? q->data : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->data_len);
        } else if (strcmp(q->method, "PUT") == 0 || strcmp(q->method, "PATCH") == 0) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            if (q->method[1] == 'A') curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PATCH");
            if (q->upload) {
                if (fseeko(q->upload, (off_t)q->upload_off, SEEK_SET) != 0) {
                    curl_slist_free_all(hs);
                    return plumb__fail(PLUMB_E_IO, "seek in the upload failed: %s", strerror(errno));
                }
                curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read_file);
                curl_easy_setopt(h, CURLOPT_READDATA, &fb);
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
            c->last_rc = rc;
            return curl_fail(c, q->method, q->url, rc);
        }
        if (r->over && r->file) return plumb__fail(PLUMB_E_FORMAT, "%s: blob larger than its manifest says; not stored", ref);
        if (r->over) return plumb__fail(PLUMB_E_RANGE, "%s: %s %s: response too large", ref, q->method, q->url);
        if (r->code == 401 && attempt == 0 && r->www_auth[0] && !q->noauth) {
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

/* Which transport a loopback registry speaks, found by GET /v2/ (no credentials): HTTPS when
 * the handshake works; plain HTTP only when the handshake fails as it does against a plain
 * HTTP port (curl: SSL connect error, nothing received, connection reset) and the same port
 * then answers /v2/ in plain HTTP as a registry does (200, 401, 403 or 404 — a TLS port's
 * "plain HTTP to an HTTPS port" is a 400). A certificate error never falls back. */
static plumb_status ensure_transport(oci_client *c) {
    if (!c->probe || c->probed) return PLUMB_OK;
    c->probed = true;
    char url[700];
    snprintf(url, sizeof url, "https://%s/v2/", c->host);
    resp r = {0};
    req q = {.method = "GET", .url = url, .noauth = true};
    plumb_status st = perform(c, &q, &r);
    free(r.mem);
    if (!st) return PLUMB_OK;
    CURLcode rc = c->last_rc;
    if (rc != CURLE_SSL_CONNECT_ERROR && rc != CURLE_GOT_NOTHING && rc != CURLE_RECV_ERROR && rc != CURLE_SEND_ERROR)
        return st;
    char why[1024];
    snprintf(why, sizeof why, "%s", plumb_last_error());
    snprintf(c->base, sizeof c->base, "http://%s", c->host);
    snprintf(url, sizeof url, "%s/v2/", c->base);
    resp r2 = {0};
    st = perform(c, &q, &r2);
    free(r2.mem);
    if (!st && (r2.code == 200 || r2.code == 401 || r2.code == 403 || r2.code == 404)) return PLUMB_OK;
    snprintf(c->base, sizeof c->base, "https://%s", c->host);
    return plumb__fail(PLUMB_E_IO, "%s", why);
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

/* PLUMB_UPLOAD_CHUNK: bytes with an optional k/m/g suffix (powers of 1024). */
static plumb_status chunk_size(uint64_t *out) {
    *out = CHUNK_DEFAULT;
    const char *e = getenv("PLUMB_UPLOAD_CHUNK");
    if (!e || !*e) return PLUMB_OK;
    char *end;
    errno = 0;
    unsigned long long v = e[0] >= '0' && e[0] <= '9' ? strtoull(e, &end, 10) : 0;
    uint64_t mult = 1;
    if (v && !errno) {
        if (*end == 'k' || *end == 'K') mult = 1ull << 10, end++;
        else if (*end == 'm' || *end == 'M') mult = 1ull << 20, end++;
        else if (*end == 'g' || *end == 'G') mult = 1ull << 30, end++;
    }
    if (!v || errno || *end || v > CHUNK_MAX / mult || v * mult < CHUNK_MIN)
        return plumb__fail(PLUMB_E_INVALID_ARG, "PLUMB_UPLOAD_CHUNK='%.40s' is not a size from 1k to 4g (bytes, or with k, m or g)", e);
    *out = v * mult;
    return PLUMB_OK;
}

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
    snprintf(c->host, sizeof c->host, "%s", oci_ref_api_host(ref));
    c->probe = !insecure && oci_host_is_loopback(c->host);
    snprintf(c->base, sizeof c->base, "%s://%s", insecure ? "http" : "https", c->host);
    snprintf(c->scope, sizeof c->scope, "repository:%s:%s", ref->repo, push ? "pull,push" : "pull");
    c->user = getenv("PLUMB_REGISTRY_USER");
    c->password = getenv("PLUMB_REGISTRY_PASSWORD");
    if (c->user && !*c->user) c->user = NULL;
    if (!c->user) docker_config_credentials(c);
    c->curl = curl_easy_init();
    plumb_status st = c->curl ? PLUMB_OK : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    if (!st && push) st = chunk_size(&c->chunk);
    if (!st && !insecure) st = load_cas(c);
    if (st) {
        oci_client_free(c);
        return st;
    }
    *out = c;
    return PLUMB_OK;
}

void oci_client_free(oci_client *c) {
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c->auth);
    free(c->ca);
    free(c);
}

plumb_status oci_client_get_manifest(oci_client *c, char **body, size_t *len, char digest[OCI_DIGEST_LEN + 1]) {
    plumb_status st = ensure_transport(c);
    if (st) return st;
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/manifests/%s", c->base, c->ref.repo, c->ref.digest[0] ? c->ref.digest : c->ref.tag);
    resp r = {.mem_cap = OCI_MANIFEST_MAX};
    req q = {.method = "GET", .url = url, .accept = OCI_MT_MANIFEST};
    st = perform(c, &q, &r);
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
    plumb_status st = ensure_transport(c);
    if (st) return st;
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
    if (!r.hash) st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
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
        if (r.file) fseeko(r.file, (off_t)have, SEEK_SET);
    }
    if (!st && !r.file) {
        have = 0;
        r.file = fopen(tmp, "wb");
        if (!r.file) st = plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
    }
    r.file_len = have;
    r.file_cap = d->size;
    /* progress for layers; the config is a few hundred bytes */
    bool show = strstr(d->media_type, ".config.") == NULL;
    oci_progress prog = {0}; /* mode 0: off until begun */
    if (!st && show) oci_progress_begin(&prog, "pull", d->media_type, d->digest, d->size, have);
    if (!st) r.writer = oci_hash_writer_start(r.file, r.hash);
    if (!st) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)have);
        req q = {.method = "GET", .url = url, .range = have ? range : NULL, .prog = show ? &prog : NULL,
                 .prog_base = have};
        st = perform(c, &q, &r);
        if (!st && have && r.code == 200) { /* the server ignored the range: start over */
            if (r.writer) oci_hash_writer_finish(r.writer);
            r.writer = NULL;
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
                r.writer = oci_hash_writer_start(r.file, r.hash);
                if (show) oci_progress_begin(&prog, "pull", d->media_type, d->digest, d->size, 0);
                req q2 = {.method = "GET", .url = url, .prog = show ? &prog : NULL};
                st = perform(c, &q2, &r);
            }
        }
        if (!st && r.code != 200 && r.code != 206) st = http_fail(c, "GET", d->digest, &r);
    }
    if (r.writer && !oci_hash_writer_finish(r.writer) && !st) st = plumb__fail(PLUMB_E_IO, "%s: write failed", tmp);
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
            st = oci_store_commit(s, tmp, d->digest, d->size, got); /* hashed as written */
        }
    } else if (st == PLUMB_E_FORMAT) {
        unlink(tmp);
    }
    oci_progress_end(&prog, st == PLUMB_OK);
    oci_store_unlock(lock);
    return st;
}

plumb_status oci_client_has_blob(oci_client *c, const char *digest, bool *exists) {
    *exists = false;
    plumb_status st = ensure_transport(c);
    if (st) return st;
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/blobs/%s", c->base, c->ref.repo, digest);
    resp r = {0};
    req q = {.method = "HEAD", .url = url};
    st = perform(c, &q, &r);
    if (!st && r.code != 200 && r.code != 404) st = http_fail(c, "HEAD", digest, &r);
    *exists = !st && r.code == 200;
    free(r.mem);
    return st;
}

/* An upload Location (absolute, or a path on the registry) with query appended. */
static plumb_status location_url(const oci_client *c, const char *loc, const char *query, char *out, size_t n) {
    bool abs = strncmp(loc, "http://", 7) == 0 || strncmp(loc, "https://", 8) == 0;
    int w = snprintf(out, n, "%s%s%s%s", abs ? "" : c->base, loc, query ? (strchr(loc, '?') ? "&" : "?") : "",
                     query ? query : "");
    if (loc[0] != '/' && !abs) return plumb__fail(PLUMB_E_FORMAT, "blob upload: the registry gave a bad Location");
    if (w < 0 || (size_t)w >= n) return plumb__fail(PLUMB_E_FORMAT, "blob upload: the registry's Location is too long");
    return PLUMB_OK;
}

/* POST .../blobs/uploads/ (with ?mount=&from= when from is not NULL): *mounted on a 201 to a
 * mount, else the upload session's Location in loc. */
static plumb_status start_upload(oci_client *c, const char *digest, const char *from, bool *mounted, char *loc) {
    *mounted = false;
    char url[2400];
    if (from) {
        char *ef = curl_easy_escape(c->curl, from, 0);
        if (!ef) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
        snprintf(url, sizeof url, "%s/v2/%s/blobs/uploads/?mount=%s&from=%s", c->base, c->ref.repo, digest, ef);
        curl_free(ef);
    } else {
        snprintf(url, sizeof url, "%s/v2/%s/blobs/uploads/", c->base, c->ref.repo);
    }
    resp r = {0};
    req q = {.method = "POST", .url = url};
    plumb_status st = perform(c, &q, &r);
    if (!st && from && r.code == 201) *mounted = true;
    else if (!st && r.code != 202) st = http_fail(c, "POST", from ? "blob mount" : "blob upload", &r);
    else if (!st && !r.location[0]) st = plumb__fail(PLUMB_E_FORMAT, "blob upload: the registry gave no Location");
    if (!st && !*mounted) memcpy(loc, r.location, HDR_MAX);
    free(r.mem);
    return st;
}

/* "0-123" or "bytes=0-123": the last byte the registry holds, -1 when unreadable. */
static int64_t range_end(const char *s) {
    if (strncmp(s, "bytes=", 6) == 0) s += 6;
    if (s[0] != '0' || s[1] != '-' || s[2] < '0' || s[2] > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s + 2, &end, 10);
    return errno || *end || v > INT64_MAX ? -1 : (int64_t)v;
}

/* The body into the session at loc: monolithic (PUT ?digest= with it) up to c->chunk bytes,
 * else PATCHes of c->chunk bytes (the answered Range must end at the chunk's last byte; each
 * answer's Location is the next request's) and an empty PUT ?digest=. */
static plumb_status upload(oci_client *c, const char *media_type, const char *digest, uint64_t want, const char *loc0,
                           const char *path, const void *data, size_t len) {
    char loc[HDR_MAX], url[HDR_MAX + 1500], dq[OCI_DIGEST_LEN + 8];
    memcpy(loc, loc0, HDR_MAX);
    snprintf(dq, sizeof dq, "digest=%s", digest);
    FILE *f = NULL;
    uint64_t total = len;
    if (path) {
        struct stat sb;
        f = fopen(path, "rb");
        if (!f || fstat(fileno(f), &sb) != 0) {
            plumb_status st = plumb__fail(PLUMB_E_IO, "%s: %s", path, strerror(errno));
            if (f) fclose(f);
            return st;
        }
        total = (uint64_t)sb.st_size;
        if (want != UINT64_MAX && total != want) {
            fclose(f);
            return plumb__fail(PLUMB_E_IO, "%s: changed while it was pushed (%" PRIu64 " bytes, was %" PRIu64 ")", path,
                               total, want);
        }
    }
    oci_progress prog;
    if (f) oci_progress_begin(&prog, "push", media_type, digest, total, 0);
    resp r = {0};
    plumb_status st = PLUMB_OK;
    if (f && total > c->chunk) {
        for (uint64_t off = 0; off < total && !st; off += c->chunk) {
            uint64_t n = total - off < c->chunk ? total - off : c->chunk;
            char cr[64];
            snprintf(cr, sizeof cr, "%" PRIu64 "-%" PRIu64, off, off + n - 1);
            st = location_url(c, loc, NULL, url, sizeof url);
            if (st) break;
            resp_reset(&r);
            req q = {.method = "PATCH", .url = url, .ctype = "application/octet-stream", .crange = cr, .upload = f,
                     .upload_off = off, .upload_len = n, .prog = &prog, .prog_base = off};
            st = perform(c, &q, &r);
            if (!st && r.code != 202) st = http_fail(c, "PATCH", digest, &r);
            if (!st && r.range[0] && range_end(r.range) != (int64_t)(off + n - 1))
                st = plumb__fail(PLUMB_E_IO, "blob %s: after the chunk %s the registry holds %.60s", digest, cr, r.range);
            if (!st && r.location[0]) memcpy(loc, r.location, HDR_MAX);
        }
        if (!st) st = location_url(c, loc, dq, url, sizeof url);
        if (!st) {
            resp_reset(&r);
            req q = {.method = "PUT", .url = url, .ctype = "application/octet-stream"};
            st = perform(c, &q, &r);
        }
    } else {
        st = location_url(c, loc, dq, url, sizeof url);
        if (!st) {
            req q = {.method = "PUT", .url = url, .ctype = "application/octet-stream", .data = data, .data_len = len,
                     .upload = f, .upload_len = total, .prog = f ? &prog : NULL};
            st = perform(c, &q, &r);
        }
    }
    if (!st && r.code != 201) st = http_fail(c, "PUT", digest, &r);
    if (f) {
        oci_progress_end(&prog, st == PLUMB_OK);
        fclose(f);
    }
    free(r.mem);
    return st;
}

plumb_status oci_client_push_blob(oci_client *c, const oci_desc *d, const char *from_repo, const char *path,
                                  const void *data, size_t len, oci_push_how *how) {
    *how = OCI_PUSH_UPLOADED;
    bool have = false;
    plumb_status st = oci_client_has_blob(c, d->digest, &have);
    if (st || have) {
        *how = OCI_PUSH_EXISTS;
        return st;
    }
    if (from_repo && strcmp(from_repo, c->ref.repo) == 0) from_repo = NULL;
    char loc[HDR_MAX];
    bool mounted;
    st = start_upload(c, d->digest, from_repo, &mounted, loc);
    if (!st && mounted) {
        *how = OCI_PUSH_MOUNTED;
        return PLUMB_OK;
    }
    if (!st) st = upload(c, d->media_type, d->digest, path ? d->size : UINT64_MAX, loc, path, data, len);
    return st;
}

plumb_status oci_client_put_manifest(oci_client *c, const char *body, size_t len) {
    plumb_status st = ensure_transport(c);
    if (st) return st;
    char url[1400];
    snprintf(url, sizeof url, "%s/v2/%s/manifests/%s", c->base, c->ref.repo, c->ref.tag[0] ? c->ref.tag : c->ref.digest);
    resp r = {0};
    req q = {.method = "PUT", .url = url, .ctype = OCI_MT_MANIFEST, .data = body, .data_len = len};
    st = perform(c, &q, &r);
    if (!st && r.code != 201) st = http_fail(c, "PUT", "manifest", &r);
    free(r.mem);
    return st;
}
