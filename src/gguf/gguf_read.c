/* gguf_read.c — bounds-checked GGUF (v2, v3) reader over a read-only mapping.
 *
 * Every byte of the file is hostile until checked: each read is bounded by the file size,
 * each count is compared with the bytes that remain before anything is sized from it, each
 * product is overflow-checked, and memory grows only as entries are actually parsed, so the
 * allocation is proportional to the file and never to a count read from it. A bad file
 * yields a status and one message naming the file, the offset or field and what is wrong.
 */
#include "gguf/gguf_internal.h"

#include "core/error.h"
#include "core/huge_map.h"
#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Smallest encodings, used to reject counts the remaining bytes cannot hold. */
#define MIN_KV_BYTES 13     /* u64 key len + 1 key byte + u32 type + (>= 0 value bytes) */
#define MIN_TENSOR_BYTES 33 /* u64 name len + 1 name byte + u32 n_dims + u64 ne + u32 type + u64 off */
#define MAX_NAME_LEN 63     /* tensor names: GGML_MAX_NAME (64) including the NUL */

static const size_t value_sizes[PLUMB_GGUF_TYPE_COUNT] = {
    [PLUMB_GGUF_U8] = 1,  [PLUMB_GGUF_I8] = 1,  [PLUMB_GGUF_U16] = 2, [PLUMB_GGUF_I16] = 2,
    [PLUMB_GGUF_U32] = 4, [PLUMB_GGUF_I32] = 4, [PLUMB_GGUF_F32] = 4, [PLUMB_GGUF_BOOL] = 1,
    [PLUMB_GGUF_U64] = 8, [PLUMB_GGUF_I64] = 8, [PLUMB_GGUF_F64] = 8,
};

size_t plumb__gguf_value_size(int type) {
    return (type >= 0 && type < PLUMB_GGUF_TYPE_COUNT) ? value_sizes[type] : 0;
}

const char *plumb_gguf_type_name(int type) {
    static const char *const names[PLUMB_GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return (type >= 0 && type < PLUMB_GGUF_TYPE_COUNT) ? names[type] : "?";
}

/* ---- hash index of names (keys, tensor names) -------------------------------------------- */

uint64_t plumb__gguf_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int64_t plumb__gguf_index_insert(plumb__gguf_index *ix, const char *const *names, size_t stride, int64_t idx) {
    const char *name = *(const char *const *)((const char *)names + (size_t)idx * stride);
    uint64_t mask = ix->cap - 1;
    for (uint64_t h = plumb__gguf_hash(name) & mask;; h = (h + 1) & mask) {
        int64_t cur = ix->slots[h];
        if (cur < 0) {
            ix->slots[h] = idx;
            return -1;
        }
        const char *other = *(const char *const *)((const char *)names + (size_t)cur * stride);
        if (strcmp(other, name) == 0) return cur;
    }
}

plumb_status plumb__gguf_index_build(plumb__gguf_index *ix, int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return plumb__fail(PLUMB_E_NOMEM, "out of memory for a name index of %" PRId64 " entries", n);
    memset(ix->slots, 0xff, cap * sizeof *ix->slots); /* all -1 */
    ix->cap = cap;
    return PLUMB_OK;
}

int64_t plumb__gguf_index_find(const plumb__gguf_index *ix, const char *const *names,
                               size_t stride, const char *name) {
    if (!ix->slots) return -1;
    uint64_t mask = ix->cap - 1;
    for (uint64_t h = plumb__gguf_hash(name) & mask;; h = (h + 1) & mask) {
        int64_t cur = ix->slots[h];
        if (cur < 0) return -1;
        const char *other = *(const char *const *)((const char *)names + (size_t)cur * stride);
        if (strcmp(other, name) == 0) return cur;
    }
}

/* ---- the cursor ------------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
    const char *file;
} cursor;

static plumb_status bad(const cursor *c, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static plumb_status bad(const cursor *c, uint64_t at, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return plumb__fail(PLUMB_E_FORMAT, "%s: offset %" PRIu64 ": %s", c->file, at, what);
}

static uint64_t remaining(const cursor *c) { return c->size - c->pos; }

static plumb_status need(cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c))
        return bad(c, c->pos, "file truncated: %s needs %" PRIu64 " bytes, %" PRIu64 " remain (file size %" PRIu64 ")",
                   what, n, remaining(c), c->size);
    return PLUMB_OK;
}

static plumb_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    plumb_status st = need(c, 4, what);
    if (st) return st;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return PLUMB_OK;
}

static plumb_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    plumb_status st = need(c, 8, what);
    if (st) return st;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return PLUMB_OK;
}

/* Reads a length-prefixed string; *off is the offset of its first byte. */
static plumb_status rd_str(cursor *c, uint64_t *off, uint64_t *len, const char *what) {
    uint64_t at = c->pos;
    plumb_status st = rd_u64(c, len, what);
    if (st) return st;
    if (*len > remaining(c))
        return bad(c, at, "%s: string length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes remain)",
                   what, *len, remaining(c));
    *off = c->pos;
    c->pos += *len;
    return PLUMB_OK;
}

/* ---- parsing ----------------------------------------------------------------------------- */

static char *arena_strdup(plumb_gguf_t *g, const uint8_t *s, uint64_t len) {
    char *out = malloc(len + 1);
    if (!out) return NULL;
    memcpy(out, s, len);
    out[len] = '\0';
    if (g->n_strings == g->cap_strings) {
        size_t cap = g->cap_strings ? g->cap_strings * 2 : 64;
        char **grown = realloc(g->strings, cap * sizeof *grown);
        if (!grown) {
            free(out);
            return NULL;
        }
        g->strings = grown;
        g->cap_strings = cap;
    }
    g->strings[g->n_strings++] = out;
    return out;
}

static plumb_status parse_name(plumb_gguf_t *g, cursor *c, const char *what, uint64_t max_len,
                               char **out) {
    uint64_t at = c->pos, off = 0, len = 0;
    plumb_status st = rd_str(c, &off, &len, what);
    if (st) return st;
    if (len == 0) return bad(c, at, "%s is empty", what);
    if (len > max_len)
        return bad(c, at, "%s is %" PRIu64 " bytes long (at most %" PRIu64 ")", what, len, max_len);
    if (memchr(c->p + off, 0, len)) return bad(c, at, "%s contains a NUL byte", what);
    *out = arena_strdup(g, c->p + off, len);
    if (!*out) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory reading %s", c->file, what);
    return PLUMB_OK;
}

/* Validates one value of scalar type `type` at the cursor and steps over it. */
static plumb_status parse_scalar(cursor *c, int type, const char *key) {
    size_t sz = value_sizes[type];
    uint64_t at = c->pos;
    plumb_status st = need(c, sz, "a metadata value");
    if (st) return st;
    if (type == PLUMB_GGUF_BOOL && c->p[c->pos] > 1)
        return bad(c, at, "key '%s': bool value %u is neither 0 nor 1", key, c->p[c->pos]);
    c->pos += sz;
    return PLUMB_OK;
}

static plumb_status parse_value(cursor *c, plumb__gguf_kv *kv) {
    uint64_t at = c->pos;
    plumb_status st;
    kv->value_off = c->pos;
    if (kv->type == PLUMB_GGUF_STRING) {
        uint64_t off, len;
        return rd_str(c, &off, &len, "a string value");
    }
    if (kv->type != PLUMB_GGUF_ARRAY) return parse_scalar(c, (int)kv->type, kv->key);

    uint32_t et;
    uint64_t n;
    if ((st = rd_u32(c, &et, "an array element type"))) return st;
    if ((st = rd_u64(c, &n, "an array length"))) return st;
    if (et == PLUMB_GGUF_ARRAY) return bad(c, at, "key '%s': arrays of arrays are not allowed", kv->key);
    if (et >= PLUMB_GGUF_TYPE_COUNT)
        return bad(c, at, "key '%s': unknown array element type %u", kv->key, et);
    kv->arr_type = et;
    kv->arr_len = n;
    kv->arr_off = c->pos;
    if (et == PLUMB_GGUF_STRING) {
        /* every element has at least its 8-byte length */
        if (n > remaining(c) / 8)
            return bad(c, at, "key '%s': array of %" PRIu64 " strings cannot fit in the %" PRIu64 " bytes that remain",
                       kv->key, n, remaining(c));
        kv->str_offs = malloc((n ? n : 1) * sizeof *kv->str_offs);
        if (!kv->str_offs) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for array '%s'", c->file, kv->key);
        for (uint64_t j = 0; j < n; j++) {
            uint64_t off, len;
            kv->str_offs[j] = c->pos;
            if ((st = rd_str(c, &off, &len, "an array string"))) return st;
        }
        return PLUMB_OK;
    }
    size_t sz = value_sizes[et];
    if (n > remaining(c) / sz)
        return bad(c, at, "key '%s': array of %" PRIu64 " %s values (%" PRIu64 " bytes each) runs past the end of the file",
                   kv->key, n, plumb_gguf_type_name((int)et), (uint64_t)sz);
    if (et == PLUMB_GGUF_BOOL) {
        for (uint64_t j = 0; j < n; j++)
            if (c->p[c->pos + j] > 1)
                return bad(c, c->pos + j, "key '%s': bool element %" PRIu64 " is %u, neither 0 nor 1", kv->key, j,
                           c->p[c->pos + j]);
    }
    c->pos += n * sz;
    return PLUMB_OK;
}

static plumb_status parse_kvs(plumb_gguf_t *g, cursor *c, uint64_t n_kv) {
    plumb_status st;
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((size_t)g->n_kv == g->cap_kv) {
            size_t cap = g->cap_kv ? g->cap_kv * 2 : 32;
            plumb__gguf_kv *grown = realloc(g->kvs, cap * sizeof *grown);
            if (!grown) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for metadata", c->file);
            g->kvs = grown;
            g->cap_kv = cap;
        }
        plumb__gguf_kv *kv = &g->kvs[g->n_kv];
        memset(kv, 0, sizeof *kv);
        kv->arr_type = PLUMB_GGUF_TYPE_COUNT;
        char what[64];
        snprintf(what, sizeof what, "metadata key %" PRIu64, i);
        if ((st = parse_name(g, c, what, 65535, &kv->key))) return st;
        g->n_kv++; /* owns kv->str_offs from here on */
        uint32_t type;
        if ((st = rd_u32(c, &type, "a value type"))) return st;
        if (type >= PLUMB_GGUF_TYPE_COUNT)
            return bad(c, c->pos - 4, "key '%s': unknown value type %u", kv->key, type);
        kv->type = type;
        if ((st = parse_value(c, kv))) return st;
    }
    if ((st = plumb__gguf_index_build(&g->kv_index, g->n_kv))) return st;
    for (int64_t i = 0; i < g->n_kv; i++) {
        int64_t dup = plumb__gguf_index_insert(&g->kv_index, (const char *const *)&g->kvs[0].key, sizeof g->kvs[0], i);
        if (dup >= 0)
            return plumb__fail(PLUMB_E_FORMAT, "%s: metadata key '%s' appears twice (entries %" PRId64 " and %" PRId64 ")",
                               c->file, g->kvs[i].key, dup, i);
    }
    return PLUMB_OK;
}

static plumb_status parse_alignment(plumb_gguf_t *g, const cursor *c) {
    g->alignment = PLUMB_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = plumb_gguf_find_key(g, "general.alignment");
    if (i < 0) return PLUMB_OK;
    const plumb__gguf_kv *kv = &g->kvs[i];
    if (kv->type != PLUMB_GGUF_U32)
        return bad(c, kv->value_off, "general.alignment has type %s; it must be u32", plumb_gguf_type_name((int)kv->type));
    uint32_t a;
    memcpy(&a, c->p + kv->value_off, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return bad(c, kv->value_off, "general.alignment is %u; it must be a non-zero power of two", a);
    g->alignment = a;
    return PLUMB_OK;
}

static plumb_status parse_tensor_infos(plumb_gguf_t *g, cursor *c, uint64_t n_tensors) {
    plumb_status st;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((size_t)g->n_tensors == g->cap_tensors) {
            size_t cap = g->cap_tensors ? g->cap_tensors * 2 : 64;
            plumb__gguf_tensor *grown = realloc(g->tensors, cap * sizeof *grown);
            if (!grown) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for tensor infos", c->file);
            g->tensors = grown;
            g->cap_tensors = cap;
        }
        plumb__gguf_tensor *t = &g->tensors[g->n_tensors];
        memset(t, 0, sizeof *t);
        uint64_t at = c->pos;
        char what[64];
        snprintf(what, sizeof what, "name of tensor %" PRIu64, i);
        if ((st = parse_name(g, c, what, MAX_NAME_LEN, &t->name))) return st;
        g->n_tensors++;
        uint32_t n_dims;
        if ((st = rd_u32(c, &n_dims, "a tensor's n_dims"))) return st;
        if (n_dims == 0 || n_dims > PLUMB_GGUF_MAX_DIMS)
            return bad(c, c->pos - 4, "tensor '%s': n_dims is %u (must be 1 to %d)", t->name, n_dims, PLUMB_GGUF_MAX_DIMS);
        t->n_dims = (int)n_dims;
        int64_t nel = 1;
        for (int d = 0; d < PLUMB_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne;
            if ((st = rd_u64(c, &ne, "a tensor dimension"))) return st;
            if (ne > (uint64_t)INT64_MAX)
                return bad(c, c->pos - 8, "tensor '%s': dimension %u is %" PRIu64 " (negative as int64)", t->name, d, ne);
            t->ne[d] = (int64_t)ne;
            if (ne != 0 && nel > INT64_MAX / (int64_t)ne)
                return bad(c, c->pos - 8, "tensor '%s': element count overflows (dims %" PRId64 " x %" PRIu64 " ...)",
                           t->name, nel, ne);
            nel *= (int64_t)ne;
        }
        uint32_t type;
        if ((st = rd_u32(c, &type, "a tensor type"))) return st;
        const plumb_type_traits *tr = plumb__type_traits((int)type);
        if (!tr) return bad(c, c->pos - 4, "tensor '%s': unknown tensor type id %u", t->name, type);
        t->type = (int)type;
        if (t->ne[0] % tr->block_size != 0)
            return bad(c, at, "tensor '%s': ne[0] = %" PRId64 " is not a multiple of %s's block size %" PRId64,
                       t->name, t->ne[0], tr->name, tr->block_size);
        uint64_t blocks = (uint64_t)nel / (uint64_t)tr->block_size;
        if (blocks != 0 && tr->block_bytes > UINT64_MAX / blocks)
            return bad(c, at, "tensor '%s': byte size overflows", t->name);
        t->nbytes = blocks * tr->block_bytes;
        if ((st = rd_u64(c, &t->offset, "a tensor offset"))) return st;
        if (t->offset % g->alignment != 0)
            return bad(c, c->pos - 8, "tensor '%s': data offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                       t->name, t->offset, g->alignment);
    }
    if ((st = plumb__gguf_index_build(&g->tensor_index, g->n_tensors))) return st;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        int64_t dup = plumb__gguf_index_insert(&g->tensor_index, (const char *const *)&g->tensors[0].name, sizeof g->tensors[0], i);
        if (dup >= 0)
            return plumb__fail(PLUMB_E_FORMAT, "%s: tensor name '%s' appears twice (tensors %" PRId64 " and %" PRId64 ")",
                               c->file, g->tensors[i].name, dup, i);
    }
    return PLUMB_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const plumb__gguf_tensor *ts = ctx;
    uint64_t x = ts[*(const int64_t *)a].offset, y = ts[*(const int64_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Checks that every tensor's bytes lie inside the data section and no two overlap. */
static plumb_status check_tensor_data(plumb_gguf_t *g, const cursor *c) {
    if (g->n_tensors == 0) return PLUMB_OK;
    if (g->data_offset > c->size)
        return plumb__fail(PLUMB_E_FORMAT, "%s: data section would start at offset %" PRIu64 ", past the end of the file (%" PRIu64 " bytes)",
                           c->file, g->data_offset, c->size);
    uint64_t data_size = c->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const plumb__gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return plumb__fail(PLUMB_E_FORMAT,
                               "%s: tensor '%s': data at offset %" PRIu64 " + %" PRIu64 " bytes runs past the end of the file "
                               "(data section holds %" PRIu64 " bytes from offset %" PRIu64 ")",
                               c->file, t->name, t->offset, t->nbytes, data_size, g->data_offset);
    }
    int64_t *order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", c->file);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = i;
    qsort_r(order, (size_t)g->n_tensors, sizeof *order, cmp_by_offset, g->tensors);
    plumb_status st = PLUMB_OK;
    /* Tensors of zero bytes occupy nothing (writers give them the next tensor's offset), so
     * each tensor is compared with the last non-empty one before it in offset order. */
    const plumb__gguf_tensor *a = NULL;
    for (int64_t k = 0; k < g->n_tensors; k++) {
        const plumb__gguf_tensor *b = &g->tensors[order[k]];
        if (b->nbytes == 0) continue;
        if (a && a->offset + a->nbytes > b->offset) {
            st = plumb__fail(PLUMB_E_FORMAT,
                             "%s: tensors '%s' (offset %" PRIu64 ", %" PRIu64 " bytes) and '%s' (offset %" PRIu64 ") overlap",
                             c->file, a->name, a->offset, a->nbytes, b->name, b->offset);
            break;
        }
        a = b;
    }
    free(order);
    return st;
}

static plumb_status parse(plumb_gguf_t *g) {
    cursor c = {g->data, g->size, 0, g->name};
    plumb_status st;
    if (g->size == 0) return bad(&c, 0, "file is empty");
    if (g->size < 4 || memcmp(g->data, "GGUF", 4) != 0) {
        if ((st = need(&c, 4, "the magic"))) return st;
        return bad(&c, 0, "bad magic %02x %02x %02x %02x (not a GGUF file)", g->data[0], g->data[1], g->data[2],
                   g->data[3]);
    }
    c.pos = 4;
    uint32_t version;
    if ((st = rd_u32(&c, &version, "the version"))) return st;
    if ((version & 0xFFFF) == 0 && version != 0)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: offset 4: version field 0x%08x looks byte-swapped: big-endian GGUF files are not supported",
                           g->name, version);
    if (version != 2 && version != 3)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: offset 4: GGUF version %u is not supported (plumb reads versions 2 and 3)",
                           g->name, version);
    g->version = version;
    uint64_t n_tensors, n_kv;
    if ((st = rd_u64(&c, &n_tensors, "the tensor count"))) return st;
    if ((st = rd_u64(&c, &n_kv, "the metadata count"))) return st;
    if (n_kv > remaining(&c) / MIN_KV_BYTES)
        return bad(&c, 16, "metadata count %" PRIu64 " is more than the %" PRIu64 " remaining bytes can hold", n_kv,
                   remaining(&c));
    if (n_tensors > remaining(&c) / MIN_TENSOR_BYTES)
        return bad(&c, 8, "tensor count %" PRIu64 " is more than the %" PRIu64 " remaining bytes can hold", n_tensors,
                   remaining(&c));
    if ((st = parse_kvs(g, &c, n_kv))) return st;
    if ((st = parse_alignment(g, &c))) return st;
    if (n_tensors > remaining(&c) / MIN_TENSOR_BYTES)
        return bad(&c, 8, "tensor count %" PRIu64 " is more than the %" PRIu64 " bytes after the metadata can hold",
                   n_tensors, remaining(&c));
    if ((st = parse_tensor_infos(g, &c, n_tensors))) return st;
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    return check_tensor_data(g, &c);
}

/* ---- open / free ------------------------------------------------------------------------- */

static plumb_status open_common(plumb_gguf_t *g) {
    plumb__clear_error();
    plumb_status st = parse(g);
    return st;
}

plumb_status plumb_gguf_open_memory(const void *data, size_t size, const char *name, plumb_gguf_t **out) {
    if (!out || (!data && size)) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_gguf_open_memory: NULL argument");
    *out = NULL;
    plumb_gguf_t *g = calloc(1, sizeof *g);
    if (!g) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    g->name = strdup(name ? name : "<memory>");
    g->data = data;
    g->size = size;
    if (!g->name) {
        free(g);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    plumb_status st = open_common(g);
    if (st) {
        plumb_gguf_free(g);
        return st;
    }
    *out = g;
    return PLUMB_OK;
}

/* MemAvailable of /proc/meminfo in bytes (reclaimable page cache included); 0 if unknown. */
static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

/* The file's bytes in anonymous memory aligned to 2 MiB and advised for transparent huge
 * pages: weights streamed from there read faster than from a file mapping's scattered 4 KiB
 * page-cache pages (plumb bench, tg128 on 2 threads: ~10% on one test machine). Returns
 * PLUMB_E_NOMEM when the memory is not there (the caller maps the file instead). */
static plumb_status read_into_memory(plumb_gguf_t *g, int fd, const char *path) {
    const size_t size = (size_t)g->size;
    /* private memory is not reclaimable: a file that would not fit with room to spare stays
     * mapped (whose pages the kernel can drop) rather than risk the OOM killer */
    const uint64_t avail = mem_available();
    if (avail == 0 || g->size + ((uint64_t)256 << 20) > avail / 10 * 9) return PLUMB_E_NOMEM;
    void *m;
    size_t span;
    uint8_t *base = plumb__huge_map(size, &m, &span);
    if (!base) return PLUMB_E_NOMEM;
    /* fault every page in before reading: pread into pages it must fault itself runs several
     * times slower (0.5 s against 0.1 s for 253 MB from the page cache, measured) */
    for (size_t off = 0; off < size; off += 4096) base[off] = 0;
    for (size_t done = 0; done < size;) {
        const size_t want = size - done < ((size_t)1 << 30) ? size - done : ((size_t)1 << 30);
        const ssize_t got = pread(fd, base + done, want, (off_t)done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            const int e = got < 0 ? errno : 0;
            munmap(m, span);
            return plumb__fail(PLUMB_E_IO, "%s: cannot read byte %zu of %zu: %s", path, done, size,
                               e ? strerror(e) : "the file shrank while being read");
        }
        done += (size_t)got;
    }
    if (mprotect(m, span, PROT_READ) != 0) { /* the weights are never written */
        munmap(m, span);
        return PLUMB_E_NOMEM;
    }
    g->data = base;
    g->map_base = m;
    g->map_size = span;
    return PLUMB_OK;
}

plumb_status plumb_gguf_open(const char *path, plumb_gguf_t **out) { return plumb_gguf_open_ex(path, 0, out); }

plumb_status plumb_gguf_open_ex(const char *path, unsigned flags, plumb_gguf_t **out) {
    if (!out || !path) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_gguf_open: NULL argument");
    *out = NULL;
    /* A FIFO or a device would block in open() or read() for as long as its other side
     * likes: refuse anything that is not a regular file before opening, and open without
     * blocking in case the path was swapped in between (checked again on the descriptor). */
    struct stat sb;
    if (stat(path, &sb) != 0) return plumb__fail(PLUMB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return plumb__fail(PLUMB_E_IO, "%s: not a regular file", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return plumb__fail(PLUMB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || fcntl(fd, F_SETFL, 0) != 0) {
        int e = errno;
        close(fd);
        return S_ISREG(sb.st_mode) ? plumb__fail(PLUMB_E_IO, "%s: cannot open: %s", path, strerror(e))
                                   : plumb__fail(PLUMB_E_IO, "%s: not a regular file", path);
    }
    plumb_gguf_t *g = calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    g->name = strdup(path);
    g->size = (uint64_t)sb.st_size;
    if (!g->name) {
        close(fd);
        free(g);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    plumb_status rd = PLUMB_E_NOMEM;
    if (g->size > 0 && (flags & PLUMB_GGUF_OPEN_READ) && (rd = read_into_memory(g, fd, path)) == PLUMB_E_IO) {
        close(fd);
        plumb_gguf_free(g);
        return rd;
    }
    if (g->size > 0 && rd != PLUMB_OK) {
        void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            plumb_gguf_free(g);
            return plumb__fail(PLUMB_E_IO, "%s: cannot map %" PRIu64 " bytes: %s", path, (uint64_t)sb.st_size, strerror(e));
        }
        g->data = m;
        g->map_base = m;
        g->map_size = (size_t)g->size;
        g->file_mapping = true;
    } else if (g->size == 0) {
        g->data = (const uint8_t *)"";
    }
    close(fd);
    plumb_status st = open_common(g);
    if (st) {
        plumb_gguf_free(g);
        return st;
    }
    *out = g;
    return PLUMB_OK;
}

void plumb_gguf_free(plumb_gguf_t *g) {
    if (!g) return;
    if (g->map_base) munmap(g->map_base, g->map_size);
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kvs[i].str_offs);
    for (size_t i = 0; i < g->n_strings; i++) free(g->strings[i]);
    free(g->strings);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    for (int i = 0; i < g->n_shards; i++) plumb_gguf_free(g->shards[i]);
    free(g->shards);
    free(g->name);
    free(g);
}
