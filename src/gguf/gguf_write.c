/* gguf_write.c — GGUF v3 writer: collects metadata and tensors in memory, then writes the
 * header, the tensor infos, padding and the aligned data section in one pass; or hands out
 * the header alone to a caller that streams the data itself (`plumb quantize`). */
#include "gguf/gguf_internal.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

typedef struct wkv {
    char *key;
    wbuf value; /* encoded type-specific value bytes (after the u32 type) */
    uint32_t type;
} wkv;

typedef struct wtensor {
    char *name;
    int n_dims;
    int64_t ne[PLUMB_GGUF_MAX_DIMS];
    int type;
    uint64_t nbytes;
    const void *data;
} wtensor;

struct plumb_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t alignment;
};

static plumb_status put(wbuf *b, const void *src, size_t n) {
    if (n > SIZE_MAX - b->len) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: value too large");
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *grown = realloc(b->p, cap);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
        b->p = grown;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return PLUMB_OK;
}

static plumb_status put_u32(wbuf *b, uint32_t v) { return put(b, &v, 4); }
static plumb_status put_u64(wbuf *b, uint64_t v) { return put(b, &v, 8); }
static plumb_status put_str(wbuf *b, const char *s, uint64_t len) {
    plumb_status st = put_u64(b, len);
    return st ? st : put(b, s, (size_t)len);
}

plumb_status plumb_gguf_writer_create(plumb_gguf_writer_t **out) {
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: NULL argument");
    *out = calloc(1, sizeof **out);
    if (!*out) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
    (*out)->alignment = PLUMB_GGUF_DEFAULT_ALIGNMENT;
    return PLUMB_OK;
}

void plumb_gguf_writer_free(plumb_gguf_writer_t *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].value.p);
    }
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* Appends a new entry for key (refusing duplicates) and returns it. */
static plumb_status new_kv(plumb_gguf_writer_t *w, const char *key, uint32_t type, wkv **out) {
    if (!w || !key || !*key) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: missing key");
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: key '%s' set twice", key);
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *grown = realloc(w->kvs, cap * sizeof *grown);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
        w->kvs = grown;
        w->cap_kv = cap;
    }
    wkv *kv = &w->kvs[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    if (!kv->key) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
    kv->type = type;
    w->n_kv++;
    *out = kv;
    return PLUMB_OK;
}

/* Removes the entry just added by new_kv after a failure to encode its value. */
static plumb_status drop_last(plumb_gguf_writer_t *w, plumb_status st) {
    wkv *kv = &w->kvs[--w->n_kv];
    free(kv->key);
    free(kv->value.p);
    return st;
}

static bool is_scalar(int type) {
    return type >= 0 && type < PLUMB_GGUF_TYPE_COUNT && type != PLUMB_GGUF_STRING && type != PLUMB_GGUF_ARRAY;
}

plumb_status plumb_gguf_writer_set(plumb_gguf_writer_t *w, const char *key, plumb_gguf_type type, const void *value) {
    if (!is_scalar((int)type) || !value)
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: key '%s': type %d is not a scalar", key ? key : "", (int)type);
    if (type == PLUMB_GGUF_BOOL && *(const uint8_t *)value > 1)
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: key '%s': bool must be 0 or 1", key ? key : "");
    wkv *kv;
    plumb_status st = new_kv(w, key, (uint32_t)type, &kv);
    if (st) return st;
    st = put(&kv->value, value, plumb__gguf_value_size((int)type));
    return st ? drop_last(w, st) : PLUMB_OK;
}

plumb_status plumb_gguf_writer_set_str(plumb_gguf_writer_t *w, const char *key, const char *value, size_t len) {
    if (!value && len) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: NULL string");
    wkv *kv;
    plumb_status st = new_kv(w, key, PLUMB_GGUF_STRING, &kv);
    if (st) return st;
    st = put_str(&kv->value, value, len);
    return st ? drop_last(w, st) : PLUMB_OK;
}

plumb_status plumb_gguf_writer_set_arr(plumb_gguf_writer_t *w, const char *key, plumb_gguf_type elem_type,
                                       const void *data, uint64_t n) {
    if (!is_scalar((int)elem_type) || (!data && n))
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: key '%s': bad array element type or data", key ? key : "");
    size_t sz = plumb__gguf_value_size((int)elem_type);
    if (n > SIZE_MAX / sz) return plumb__fail(PLUMB_E_RANGE, "gguf writer: array too large");
    if (elem_type == PLUMB_GGUF_BOOL)
        for (uint64_t j = 0; j < n; j++)
            if (((const uint8_t *)data)[j] > 1)
                return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: key '%s': bool must be 0 or 1", key ? key : "");
    wkv *kv;
    plumb_status st = new_kv(w, key, PLUMB_GGUF_ARRAY, &kv);
    if (st) return st;
    if (!st) st = put_u32(&kv->value, (uint32_t)elem_type);
    if (!st) st = put_u64(&kv->value, n);
    if (!st) st = put(&kv->value, data, (size_t)(n * sz));
    return st ? drop_last(w, st) : PLUMB_OK;
}

plumb_status plumb_gguf_writer_set_arr_str(plumb_gguf_writer_t *w, const char *key, const plumb_str *items, uint64_t n) {
    if (!items && n) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: NULL items");
    wkv *kv;
    plumb_status st = new_kv(w, key, PLUMB_GGUF_ARRAY, &kv);
    if (st) return st;
    if (!st) st = put_u32(&kv->value, PLUMB_GGUF_STRING);
    if (!st) st = put_u64(&kv->value, n);
    for (uint64_t j = 0; !st && j < n; j++) st = put_str(&kv->value, items[j].ptr, items[j].len);
    return st ? drop_last(w, st) : PLUMB_OK;
}

plumb_status plumb_gguf_writer_set_alignment(plumb_gguf_writer_t *w, uint32_t alignment) {
    if (!w || alignment == 0 || (alignment & (alignment - 1)))
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: alignment %u is not a power of two", alignment);
    plumb_status st = plumb_gguf_writer_set(w, "general.alignment", PLUMB_GGUF_U32, &alignment);
    if (st) return st;
    w->alignment = alignment;
    return PLUMB_OK;
}

plumb_status plumb_gguf_writer_add_tensor(plumb_gguf_writer_t *w, const char *name, int type, int n_dims,
                                          const int64_t *ne, const void *data) {
    if (!w || !name || !*name || strlen(name) > 63 || !ne || n_dims < 1 || n_dims > PLUMB_GGUF_MAX_DIMS)
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: bad tensor name or dims");
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: tensor '%s' added twice", name);
    int64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || (ne[d] && nel > INT64_MAX / ne[d]))
            return plumb__fail(PLUMB_E_RANGE, "gguf writer: tensor '%s': bad dimension", name);
        nel *= ne[d];
    }
    if (ne[0] % (plumb_type_block_size(type) ? plumb_type_block_size(type) : 1) != 0 || !plumb_type_is_known(type))
        return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: tensor '%s': bad type or ne[0]", name);
    uint64_t nbytes;
    plumb_status st = plumb_type_row_bytes(type, nel, &nbytes);
    if (st) return st;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        wtensor *grown = realloc(w->tensors, cap * sizeof *grown);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
        w->tensors = grown;
        w->cap_tensors = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return plumb__fail(PLUMB_E_NOMEM, "gguf writer: out of memory");
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->type = type;
    t->nbytes = nbytes;
    t->data = data;
    w->n_tensors++;
    return PLUMB_OK;
}

plumb_status plumb_gguf_writer_copy_kv(plumb_gguf_writer_t *w, const plumb_gguf_t *g, int64_t i) {
    if (!w || !g || i < 0 || i >= g->n_kv) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: no entry %" PRId64, i);
    const plumb__gguf_kv *src = &g->kvs[i];
    /* The value's bytes as stored: the reader has checked that they lie inside the file. */
    uint64_t start = src->value_off, end;
    uint64_t len;
    if (src->type == PLUMB_GGUF_STRING) {
        memcpy(&len, g->data + start, 8);
        end = start + 8 + len;
    } else if (src->type != PLUMB_GGUF_ARRAY) {
        end = start + plumb__gguf_value_size((int)src->type);
    } else if (src->arr_type == PLUMB_GGUF_STRING) {
        end = src->arr_off;
        if (src->arr_len) {
            uint64_t last = src->str_offs[src->arr_len - 1];
            memcpy(&len, g->data + last, 8);
            end = last + 8 + len;
        }
    } else {
        end = src->arr_off + src->arr_len * plumb__gguf_value_size((int)src->arr_type);
    }
    wkv *kv;
    plumb_status st = new_kv(w, src->key, src->type, &kv);
    if (st) return st;
    st = put(&kv->value, g->data + start, (size_t)(end - start));
    return st ? drop_last(w, st) : PLUMB_OK;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static const uint8_t zeros[4096];

plumb_status plumb_gguf_writer_header(const plumb_gguf_writer_t *w, void **out, size_t *out_len) {
    if (!w || !out || !out_len) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: NULL argument");
    wbuf h = {0};
    plumb_status st = put(&h, "GGUF", 4);
    if (!st) st = put_u32(&h, 3);
    if (!st) st = put_u64(&h, w->n_tensors);
    if (!st) st = put_u64(&h, w->n_kv);
    for (size_t i = 0; !st && i < w->n_kv; i++) {
        st = put_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
        if (!st) st = put_u32(&h, w->kvs[i].type);
        if (!st) st = put(&h, w->kvs[i].value.p, w->kvs[i].value.len);
    }
    uint64_t off = 0;
    for (size_t i = 0; !st && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        st = put_str(&h, t->name, strlen(t->name));
        if (!st) st = put_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; !st && d < t->n_dims; d++) st = put_u64(&h, (uint64_t)t->ne[d]);
        if (!st) st = put_u32(&h, (uint32_t)t->type);
        if (!st) st = put_u64(&h, off);
        off = align_up(off + t->nbytes, w->alignment);
    }
    for (uint64_t pad = align_up(h.len, w->alignment) - h.len; !st && pad;) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        st = put(&h, zeros, n);
        pad -= n;
    }
    if (st) {
        free(h.p);
        return st;
    }
    *out = h.p;
    *out_len = h.len;
    return PLUMB_OK;
}

plumb_status plumb_gguf_writer_write(plumb_gguf_writer_t *w, const char *path) {
    if (!w || !path) return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: NULL argument");
    for (size_t i = 0; i < w->n_tensors; i++)
        if (w->tensors[i].nbytes && !w->tensors[i].data)
            return plumb__fail(PLUMB_E_INVALID_ARG, "gguf writer: tensor '%s': no data", w->tensors[i].name);
    void *hp;
    size_t hlen;
    plumb_status st = plumb_gguf_writer_header(w, &hp, &hlen);
    if (st) return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hp);
        return plumb__fail(PLUMB_E_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    bool ok = fwrite(hp, 1, hlen, f) == hlen;
    free(hp);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        ok = fwrite(t->data, 1, (size_t)t->nbytes, f) == t->nbytes;
        uint64_t pad = align_up(t->nbytes, w->alignment) - t->nbytes;
        while (ok && pad) {
            size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
            ok = fwrite(zeros, 1, n, f) == n;
            pad -= n;
        }
    }
    if (fclose(f) != 0) ok = false;
    if (!ok) return plumb__fail(PLUMB_E_IO, "%s: write failed: %s", path, strerror(errno));
    return PLUMB_OK;
}
