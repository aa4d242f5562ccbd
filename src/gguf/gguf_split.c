/* gguf_split.c — opening a model sharded over several GGUF files (gguf_split.h): finding the
 * shards by llama.cpp's naming convention or taking them from a list, checking their split
 * keys against each other, and merging their tensors into the first file's object.
 *
 * A single file costs one key lookup more than plumb_gguf_open_ex; a split model's files are
 * each opened (mapped or read) exactly as a single file is, so every tensor stays zero-copy in
 * its own file's memory. */
#include "gguf/gguf_split.h"

#include "core/error.h"
#include "gguf/gguf_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_NO "split.no"
#define KEY_COUNT "split.count"
#define KEY_TENSORS "split.tensors.count"

/* A file's split keys; has_* false where the key is absent. */
typedef struct split_keys {
    bool has_no, has_count, has_tensors;
    uint64_t no, count, tensors;
} split_keys;

static bool is_int_type(plumb_gguf_type t) {
    return t == PLUMB_GGUF_U8 || t == PLUMB_GGUF_I8 || t == PLUMB_GGUF_U16 || t == PLUMB_GGUF_I16 ||
           t == PLUMB_GGUF_U32 || t == PLUMB_GGUF_I32 || t == PLUMB_GGUF_U64 || t == PLUMB_GGUF_I64;
}

/* Reads split key `key` of g into *v (*has false, *v 0 when it is absent): an integer of any
 * width (llama.cpp writes u16 and i32) from 0 to max. */
static plumb_status read_key(const plumb_gguf_t *g, const char *key, uint64_t max, bool *has, uint64_t *v) {
    const int64_t i = plumb_gguf_find_key(g, key);
    *has = i >= 0;
    *v = 0;
    if (i < 0) return PLUMB_OK;
    const plumb_gguf_type t = plumb_gguf_kv_type(g, i);
    if (!is_int_type(t))
        return plumb__fail(PLUMB_E_FORMAT, "%s: %s holds a %s, not an integer", g->name, key, plumb_gguf_type_name((int)t));
    int64_t x;
    uint64_t u;
    if (plumb_gguf_kv_int(g, i, &x) == PLUMB_OK) {
        if (x < 0 || (uint64_t)x > max)
            return plumb__fail(PLUMB_E_FORMAT, "%s: %s is %" PRId64 ", out of range (0 to %" PRIu64 ")", g->name, key, x, max);
        *v = (uint64_t)x;
        return PLUMB_OK;
    }
    if (plumb_gguf_kv_uint(g, i, &u) != PLUMB_OK) u = 0;
    return plumb__fail(PLUMB_E_FORMAT, "%s: %s is %" PRIu64 ", out of range (0 to %" PRIu64 ")", g->name, key, u, max);
}

static plumb_status read_keys(const plumb_gguf_t *g, split_keys *k) {
    plumb_status st;
    if ((st = read_key(g, KEY_NO, PLUMB_SPLIT_MAX - 1, &k->has_no, &k->no)) ||
        (st = read_key(g, KEY_COUNT, PLUMB_SPLIT_MAX, &k->has_count, &k->count)) ||
        (st = read_key(g, KEY_TENSORS, INT32_MAX, &k->has_tensors, &k->tensors)))
        return st;
    return PLUMB_OK;
}

size_t plumb__gguf_split_path(char *buf, size_t cap, const char *prefix, size_t prefix_len, int no, int count) {
    if (prefix_len > INT_MAX || cap == 0) return 0;
    const int n = snprintf(buf, cap, "%.*s-%05d-of-%05d.gguf", (int)prefix_len, prefix, no + 1, count);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t plumb__gguf_split_prefix(const char *path, int no, int count) {
    char post[48];
    const int n = snprintf(post, sizeof post, "-%05d-of-%05d.gguf", no + 1, count);
    const size_t len = strlen(path);
    if (n <= 0 || (size_t)n >= sizeof post || len <= (size_t)n) return 0;
    return memcmp(path + len - (size_t)n, post, (size_t)n) == 0 ? len - (size_t)n : 0;
}

int plumb__gguf_n_files(const plumb_gguf_t *g) { return 1 + g->n_shards; }

uint64_t plumb__gguf_total_size(const plumb_gguf_t *g) {
    uint64_t size = g->size;
    for (int i = 0; i < g->n_shards; i++) size += g->shards[i]->size;
    return size;
}

/* The name of the file holding tensor t of merged g. */
static const char *file_of(const plumb_gguf_t *g, const plumb__gguf_tensor *t) {
    return t->shard ? g->shards[t->shard - 1]->name : g->name;
}

/* Checks shard s, found at place `no` of the count files of the split model whose first file
 * is g (split.tensors.count n_tensors): its split keys must agree with g's. */
static plumb_status check_shard(const plumb_gguf_t *g, const plumb_gguf_t *s, int no, uint64_t count,
                                uint64_t n_tensors, bool listed) {
    split_keys k;
    plumb_status st = read_keys(s, &k);
    if (st) return st;
    if (!k.has_no || !k.has_count)
        return plumb__fail(PLUMB_E_FORMAT, "%s: no %s key: not shard %d of %" PRIu64 " of the split model %s", s->name,
                           k.has_no ? KEY_COUNT : KEY_NO, no + 1, count, g->name);
    if (k.no != (uint64_t)no)
        return plumb__fail(PLUMB_E_FORMAT,
                           "%s: split.no is %" PRIu64 ", but shard %d of %" PRIu64 " (%s) of the split model %s must have %d: "
                           "shards out of order, or of another model",
                           s->name, k.no, no + 1, count, listed ? "by its place in the list" : "by its name", g->name, no);
    if (k.count != count)
        return plumb__fail(PLUMB_E_FORMAT, "%s: split.count is %" PRIu64 " but the first shard %s has %" PRIu64
                           ": shards of different models", s->name, k.count, g->name, count);
    if (k.has_tensors && k.tensors != n_tensors)
        return plumb__fail(PLUMB_E_FORMAT, "%s: split.tensors.count is %" PRIu64 " but the first shard %s has %" PRIu64
                           ": shards of different models", s->name, k.tensors, g->name, n_tensors);
    return PLUMB_OK;
}

/* Appends the tensors of g's shards to its own and indexes them all; a tensor name in two
 * files is an error naming both. */
static plumb_status merge(plumb_gguf_t *g) {
    int64_t total = g->n_tensors;
    for (int i = 0; i < g->n_shards; i++) total += g->shards[i]->n_tensors;
    if ((size_t)total > g->cap_tensors) {
        plumb__gguf_tensor *grown = realloc(g->tensors, (size_t)total * sizeof *grown);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for the tensors of its shards", g->name);
        g->tensors = grown;
        g->cap_tensors = (size_t)total;
    }
    for (int i = 0; i < g->n_shards; i++) {
        const plumb_gguf_t *s = g->shards[i];
        for (int64_t j = 0; j < s->n_tensors; j++) {
            plumb__gguf_tensor *t = &g->tensors[g->n_tensors++];
            *t = s->tensors[j];
            t->shard = (uint32_t)i + 1;
        }
    }
    plumb__gguf_index ix = {0};
    plumb_status st = plumb__gguf_index_build(&ix, g->n_tensors);
    if (st) return plumb__fail(st, "%s: out of memory for the tensor index of its shards", g->name);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const int64_t dup = plumb__gguf_index_insert(&ix, (const char *const *)&g->tensors[0].name, sizeof g->tensors[0], i);
        if (dup >= 0) {
            free(ix.slots);
            return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s' is also in %s: each tensor of a split model is in one shard",
                               file_of(g, &g->tensors[i]), g->tensors[i].name, file_of(g, &g->tensors[dup]));
        }
    }
    free(g->tensor_index.slots);
    g->tensor_index = ix;
    return PLUMB_OK;
}

/* Opens shards 1 to count - 1 of the split model whose first file is g (split.tensors.count
 * n_tensors), checks each, and merges them into g, which owns each as soon as it is open.
 * Shard i is at paths[i], or (paths NULL) at the convention's name from prefix[prefix_len]. */
static plumb_status open_rest(plumb_gguf_t *g, uint64_t count, uint64_t n_tensors, const char *const *paths,
                              const char *prefix, size_t prefix_len, unsigned flags) {
    g->shards = calloc((size_t)count - 1, sizeof *g->shards);
    if (!g->shards) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for %" PRIu64 " shards", g->name, count);
    const size_t cap = prefix_len + 32;
    char *buf = paths ? NULL : malloc(cap);
    if (!paths && !buf) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", g->name);
    plumb_status st = PLUMB_OK;
    for (int i = 1; i < (int)count && !st; i++) {
        const char *path = paths ? paths[i] : buf;
        if (!paths) {
            const size_t len = plumb__gguf_split_path(buf, cap, prefix, prefix_len, i, (int)count);
            PLUMB_ASSERT(len > 0); /* cap holds the prefix and the longest suffix */
        }
        plumb_gguf_t *s;
        if ((st = plumb_gguf_open_ex(path, flags, &s))) {
            /* the reader's message names the file; say which model wanted it */
            char detail[768];
            snprintf(detail, sizeof detail, "%s", plumb_last_error());
            st = plumb__fail(st, "%s (shard %d of %" PRIu64 " of the split model %s)", detail, i + 1, count, g->name);
            break;
        }
        g->shards[g->n_shards++] = s;
        st = check_shard(g, s, i, count, n_tensors, paths != NULL);
    }
    free(buf);
    if (st || (st = merge(g))) return st;
    if ((uint64_t)g->n_tensors != n_tensors)
        return plumb__fail(PLUMB_E_FORMAT, "%s: split.tensors.count is %" PRIu64 " but its %" PRIu64 " shards hold %" PRId64
                           " tensors: a shard of another model, or a damaged one", g->name, n_tensors, count, g->n_tensors);
    return PLUMB_OK;
}

/* Checks the split keys of g, the first file of a split model (k->count > 1), apart from
 * split.no, which the callers check with their own message. */
static plumb_status check_first(const plumb_gguf_t *g, const split_keys *k) {
    if (!k->has_no)
        return plumb__fail(PLUMB_E_FORMAT, "%s: split.count is %" PRIu64 " but there is no split.no key", g->name, k->count);
    if (!k->has_tensors)
        return plumb__fail(PLUMB_E_FORMAT, "%s: split.count is %" PRIu64 " but there is no split.tensors.count key", g->name,
                           k->count);
    return PLUMB_OK;
}

plumb_status plumb__gguf_open_model(const char *path, unsigned flags, plumb_gguf_t **out) {
    *out = NULL;
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open_ex(path, flags, &g);
    if (st) return st;
    if (plumb_gguf_find_key(g, KEY_COUNT) < 0) { /* a single file: nothing more */
        *out = g;
        return PLUMB_OK;
    }
    split_keys k;
    if ((st = read_keys(g, &k))) goto fail;
    if (k.count <= 1) {
        *out = g;
        return PLUMB_OK;
    }
    if ((st = check_first(g, &k))) goto fail;
    if (k.no != 0) {
        const size_t pre = plumb__gguf_split_prefix(path, (int)k.no, (int)k.count);
        if (pre)
            st = plumb__fail(PLUMB_E_INVALID_ARG,
                             "%s: this is shard %" PRIu64 " of %" PRIu64 " of a split model: "
                             "load its first shard, %.*s-00001-of-%05d.gguf",
                             path, k.no + 1, k.count, (int)(pre > 4096 ? 4096 : pre), path, (int)k.count);
        else
            st = plumb__fail(PLUMB_E_INVALID_ARG,
                             "%s: this is shard %" PRIu64 " of %" PRIu64 " of a split model: "
                             "load its first shard (split.no 0)",
                             path, k.no + 1, k.count);
        goto fail;
    }
    const size_t pre = plumb__gguf_split_prefix(path, 0, (int)k.count);
    if (!pre) {
        st = plumb__fail(PLUMB_E_FORMAT,
                         "%s: the first of %" PRIu64 " shards of a split model, but its name does not end in "
                         "-00001-of-%05d.gguf, so the others cannot be found (name the shards "
                         "<prefix>-0000k-of-%05d.gguf as gguf-split does, or load them as a list with "
                         "plumb_model_load_shards)",
                         path, k.count, (int)k.count, (int)k.count);
        goto fail;
    }
    if ((st = open_rest(g, k.count, k.tensors, NULL, path, pre, flags))) goto fail;
    *out = g;
    return PLUMB_OK;
fail:
    plumb_gguf_free(g);
    return st;
}

plumb_status plumb__gguf_open_shards(const char *const *paths, int n, unsigned flags, plumb_gguf_t **out) {
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_model_load_shards: NULL argument");
    *out = NULL;
    if (!paths || n < 1 || n > PLUMB_SPLIT_MAX)
        return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_model_load_shards: %s",
                           !paths ? "NULL list of paths" : "the number of paths must be 1 to 65535");
    for (int i = 0; i < n; i++)
        if (!paths[i]) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_model_load_shards: path %d is NULL", i);
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open_ex(paths[0], flags, &g);
    if (st) return st;
    split_keys k = {0};
    if (plumb_gguf_find_key(g, KEY_COUNT) >= 0 && (st = read_keys(g, &k))) goto fail;
    if (k.count <= 1) {
        if (n == 1) {
            *out = g;
            return PLUMB_OK;
        }
        if (k.has_count)
            st = plumb__fail(PLUMB_E_INVALID_ARG, "%s: not a split model (split.count is %" PRIu64 "), but %d files were given",
                             paths[0], k.count, n);
        else
            st = plumb__fail(PLUMB_E_INVALID_ARG, "%s: not a split model (no split.count key), but %d files were given",
                             paths[0], n);
        goto fail;
    }
    if ((st = check_first(g, &k))) goto fail;
    if (k.no != 0) {
        st = plumb__fail(PLUMB_E_INVALID_ARG,
                         "%s: this is shard %" PRIu64 " of %" PRIu64 " of a split model, not the first: "
                         "list the shards in order (split.no 0, 1, ...)",
                         paths[0], k.no + 1, k.count);
        goto fail;
    }
    if (k.count != (uint64_t)n) {
        st = plumb__fail(PLUMB_E_INVALID_ARG, "%s: split.count is %" PRIu64 " but %d file%s given", paths[0], k.count, n,
                         n == 1 ? " was" : "s were");
        goto fail;
    }
    if ((st = open_rest(g, k.count, k.tensors, paths, NULL, 0, flags))) goto fail;
    *out = g;
    return PLUMB_OK;
fail:
    plumb_gguf_free(g);
    return st;
}
