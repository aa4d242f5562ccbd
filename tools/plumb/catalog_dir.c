/* catalog_dir.c — `plumb serve --models-dir DIR`: the server's model catalog
 * (plumb_server_catalog, server.h) as the GGUF files in one directory. A model's id is its
 * file name without ".gguf"; only regular files (or symbolic links to them) directly in DIR
 * count, sub-directories are not searched, and names with bytes outside a plain set (letters,
 * digits, "._-+@:=,~") or starting with '.' are skipped, so an id is always safe to show and
 * never names a path outside DIR. The directory is read afresh on every call: a file copied
 * in while serving is listed by the next GET /v1/models. Thread-safe: the catalog only holds
 * the directory's name. */
#include "cli.h"

#include "server/server.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Whether name (NUL-terminated) may be a model id: 1 to 507 bytes of the plain set, not
 * starting with '.' (hidden files, "." and ".."). */
static bool plain_id(const char *name) {
    size_t n = 0;
    if (name[0] == '.' || name[0] == '\0') return false;
    for (const char *c = name; *c; c++, n++) {
        const unsigned char ch = (unsigned char)*c;
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        strchr("._-+@:=,~", ch) != NULL;
        if (!ok) return false;
    }
    return n < sizeof(((plumb_server_model_entry *)0)->id) - 5; /* room for ".gguf" in the file name */
}

/* The entry of model id when DIR/id.gguf is a regular file (after symbolic links): true with
 * *out filled. */
static bool entry_of(const cli_catalog_dir *d, const char *id, plumb_server_model_entry *out) {
    memset(out, 0, sizeof *out);
    const int n = snprintf(out->path, sizeof out->path, "%s/%s.gguf", d->dir, id);
    struct stat sb;
    if (n < 0 || (size_t)n >= sizeof out->path || stat(out->path, &sb) != 0 || !S_ISREG(sb.st_mode)) return false;
    snprintf(out->id, sizeof out->id, "%s", id);
    out->created = (int64_t)sb.st_mtime;
    out->size = (uint64_t)sb.st_size;
    return true;
}

static int by_id(const void *a, const void *b) {
    return strcmp(((const plumb_server_model_entry *)a)->id, ((const plumb_server_model_entry *)b)->id);
}

static int dir_list(void *user, plumb_server_model_entry *out, int max) {
    const cli_catalog_dir *d = user;
    DIR *dir = opendir(d->dir);
    if (!dir) return -1;
    int n = 0;
    struct dirent *de;
    char id[sizeof out->id];
    while (n < max && (de = readdir(dir)) != NULL) {
        const size_t len = strlen(de->d_name);
        if (len <= 5 || len - 5 >= sizeof id || strcmp(de->d_name + len - 5, ".gguf") != 0) continue;
        memcpy(id, de->d_name, len - 5);
        id[len - 5] = '\0';
        if (plain_id(id) && entry_of(d, id, &out[n])) n++;
    }
    closedir(dir);
    qsort(out, (size_t)n, sizeof *out, by_id); /* the order readdir gives is no order */
    return n;
}

static bool dir_resolve(void *user, const char *name, plumb_server_model_entry *out) {
    const cli_catalog_dir *d = user;
    char id[sizeof out->id];
    const size_t len = strlen(name);
    if (len >= sizeof id) return false;
    memcpy(id, name, len + 1);
    if (len > 5 && !strcmp(id + len - 5, ".gguf")) id[len - 5] = '\0'; /* the file's name is an alias */
    return plain_id(id) && entry_of(d, id, out);
}

int cli_catalog_dir_init(cli_catalog_dir *d, const char *dir, plumb_server_catalog *out) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--; /* "models/" names "models" */
    struct stat sb;
    if (len >= sizeof d->dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(d->dir, dir, len);
    d->dir[len] = '\0';
    if (stat(d->dir, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    DIR *probe = opendir(d->dir);
    if (!probe) return -1;
    closedir(probe);
    out->list = dir_list;
    out->resolve = dir_resolve;
    out->user = d;
    return 0;
}
