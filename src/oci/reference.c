/* reference.c — parsing model references ("registry:5000/ns/model:tag", "ns/model",
 * "...@sha256:<hex>") strictly, so no reference can name a path outside the store. */
#include "oci/oci.h"

#include "core/error.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_REGISTRY "index.docker.io"
#define REF_MAX 512

bool oci_digest_valid(const char *d) {
    if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != OCI_DIGEST_LEN) return false;
    for (const char *p = d + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

/* [a-z0-9]+ joined by '.', '_', '__' or '-'+ (the distribution spec's path component). */
static bool component_valid(const char *p, size_t n) {
    if (n == 0 || n > 128) return false;
    if (!islower((unsigned char)p[0]) && !isdigit((unsigned char)p[0])) return false;
    if (!islower((unsigned char)p[n - 1]) && !isdigit((unsigned char)p[n - 1])) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (islower(c) || isdigit(c) || c == '-') continue;
        if (c == '.' && p[i + 1] != '.' && p[i + 1] != '_') continue;
        if (c == '_' && p[i + 1] != '.') {
            if (p[i + 1] == '_' && (i + 2 >= n || p[i + 2] == '_' || p[i + 2] == '.')) return false;
            continue;
        }
        return false;
    }
    return true;
}

static bool host_valid(const char *p, size_t n) {
    if (n == 0 || n > 255) return false;
    size_t i = 0;
    if (p[0] == '[') { /* [v6]: hex digits and colons */
        while (i < n && p[i] != ']') i++;
        if (i == n || i < 3) return false;
        for (size_t j = 1; j < i; j++)
            if (!isxdigit((unsigned char)p[j]) && p[j] != ':') return false;
        i++;
    } else {
        while (i < n && p[i] != ':') {
            unsigned char c = (unsigned char)p[i];
            if (!isalnum(c) && c != '.' && c != '-') return false;
            if (c == '.' && (i == 0 || p[i - 1] == '.')) return false;
            i++;
        }
        if (i == 0 || p[i - 1] == '.' || p[0] == '-') return false;
    }
    if (i < n) {
        if (p[i] != ':' || i + 1 == n || n - i - 1 > 5) return false;
        for (size_t j = i + 1; j < n; j++)
            if (!isdigit((unsigned char)p[j])) return false;
    }
    return true;
}

plumb_status oci_ref_parse(const char *s, oci_ref *out) {
    memset(out, 0, sizeof *out);
    size_t len = strlen(s);
    if (len == 0) return plumb__fail(PLUMB_E_INVALID_ARG, "empty model reference");
    if (len > REF_MAX) return plumb__fail(PLUMB_E_INVALID_ARG, "model reference longer than %d bytes", REF_MAX);
    char buf[REF_MAX + 1];
    memcpy(buf, s, len + 1);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] <= ' ' || (unsigned char)buf[i] >= 0x7f)
            return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': control, space or non-ASCII byte", s);
    if (strstr(buf, "..")) /* no host, path component, tag or digest holds it */
        return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': '..' is not allowed", s);
    char *at = strchr(buf, '@');
    if (at) {
        *at = 0;
        if (!oci_digest_valid(at + 1))
            return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': bad digest (want sha256: and 64 lowercase hex digits)", s);
        memcpy(out->digest, at + 1, OCI_DIGEST_LEN + 1);
    }
    /* registry: the first component when it has '.', ':' or is localhost, and more follow */
    char *name = buf;
    char *slash = strchr(buf, '/');
    if (slash && (memchr(buf, '.', (size_t)(slash - buf)) || memchr(buf, ':', (size_t)(slash - buf)) ||
                  (slash - buf == 9 && memcmp(buf, "localhost", 9) == 0) || buf[0] == '[')) {
        if (!host_valid(buf, (size_t)(slash - buf)))
            return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': bad registry host", s);
        memcpy(out->registry, buf, (size_t)(slash - buf));
        name = slash + 1;
    } else {
        strcpy(out->registry, DEFAULT_REGISTRY);
    }
    /* tag: after the last ':' of the name part */
    char *colon = strrchr(name, ':');
    if (colon) {
        *colon = 0;
        const char *t = colon + 1;
        size_t tn = strlen(t);
        if (tn == 0 || tn > 128 || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
            return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': bad tag", s);
        for (size_t i = 0; i < tn; i++)
            if (!isalnum((unsigned char)t[i]) && t[i] != '_' && t[i] != '.' && t[i] != '-')
                return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': bad tag", s);
        memcpy(out->tag, t, tn + 1);
    } else if (!out->digest[0]) {
        strcpy(out->tag, "latest");
    }
    /* the repository path */
    size_t nn = strlen(name);
    if (nn == 0) return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': no repository name", s);
    for (char *c = name; *c;) {
        char *e = strchr(c, '/');
        size_t cn = e ? (size_t)(e - c) : strlen(c);
        if (!component_valid(c, cn))
            return plumb__fail(PLUMB_E_INVALID_ARG,
                               "reference '%s': bad path component '%.*s' (lowercase letters, digits and single . _ - between them)",
                               s, (int)(cn > 64 ? 64 : cn), c);
        if (!e) break;
        c = e + 1;
        if (!*c) return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': empty path component", s);
    }
    bool hub = strcmp(out->registry, DEFAULT_REGISTRY) == 0 || strcmp(out->registry, "docker.io") == 0;
    int w = snprintf(out->repo, sizeof out->repo, "%s%s", hub && !strchr(name, '/') ? "library/" : "", name);
    if (w < 0 || (size_t)w >= sizeof out->repo)
        return plumb__fail(PLUMB_E_INVALID_ARG, "reference '%s': repository name too long", s);
    return PLUMB_OK;
}

void oci_ref_format(const oci_ref *r, char *buf, size_t n) {
    if (r->tag[0] && r->digest[0])
        snprintf(buf, n, "%s/%s:%s@%s", r->registry, r->repo, r->tag, r->digest);
    else if (r->digest[0])
        snprintf(buf, n, "%s/%s@%s", r->registry, r->repo, r->digest);
    else
        snprintf(buf, n, "%s/%s:%s", r->registry, r->repo, r->tag);
}

const char *oci_ref_api_host(const oci_ref *r) {
    if (strcmp(r->registry, DEFAULT_REGISTRY) == 0 || strcmp(r->registry, "docker.io") == 0)
        return "registry-1.docker.io";
    return r->registry;
}

bool oci_host_is_loopback(const char *host) {
    size_t n = strcspn(host, ":");
    if (host[0] == '[') return strncmp(host, "[::1]", 5) == 0 && (host[5] == 0 || host[5] == ':');
    if (n == 9 && strncmp(host, "localhost", 9) == 0) return true;
    if (strncmp(host, "127.", 4) != 0) return false;
    int parts = 2; /* "127." and what follows */
    for (size_t i = 4; i < n; i++) {
        if (host[i] == '.') parts++;
        else if (!isdigit((unsigned char)host[i])) return false;
    }
    return parts == 4;
}
