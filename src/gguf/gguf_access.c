/* gguf_access.c — typed accessors over a parsed GGUF file: metadata by index or key,
 * array elements, and tensor infos. The reader validated every offset, so accessors only
 * check the caller's indexes and the stored types. */
#include "gguf/gguf_internal.h"

#include "core/error.h"

#include <string.h>

uint32_t plumb_gguf_version(const plumb_gguf_t *g) { return g->version; }
uint64_t plumb_gguf_file_size(const plumb_gguf_t *g) { return g->size; }
bool plumb_gguf_is_file_mapping(const plumb_gguf_t *g) {
    /* a split model's: whether any of its files is mapped (each falls back to its mapping on
     * its own when it cannot be read into memory) */
    bool any = g->file_mapping;
    for (int i = 0; i < g->n_shards; i++) any = any || g->shards[i]->file_mapping;
    return any;
}
uint64_t plumb_gguf_alignment(const plumb_gguf_t *g) { return g->alignment; }
uint64_t plumb_gguf_data_offset(const plumb_gguf_t *g) { return g->data_offset; }
int64_t plumb_gguf_kv_count(const plumb_gguf_t *g) { return g->n_kv; }
int64_t plumb_gguf_tensor_count(const plumb_gguf_t *g) { return g->n_tensors; }

int64_t plumb_gguf_find_key(const plumb_gguf_t *g, const char *key) {
    if (!key || g->n_kv == 0) return -1;
    return plumb__gguf_index_find(&g->kv_index, (const char *const *)&g->kvs[0].key, sizeof g->kvs[0], key);
}

int64_t plumb_gguf_find_tensor(const plumb_gguf_t *g, const char *name) {
    if (!name || g->n_tensors == 0) return -1;
    return plumb__gguf_index_find(&g->tensor_index, (const char *const *)&g->tensors[0].name,
                                  sizeof g->tensors[0], name);
}

static const plumb__gguf_kv *kv_at(const plumb_gguf_t *g, int64_t i) {
    return (i >= 0 && i < g->n_kv) ? &g->kvs[i] : NULL;
}

const char *plumb_gguf_kv_key(const plumb_gguf_t *g, int64_t i) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    return kv ? kv->key : NULL;
}

plumb_gguf_type plumb_gguf_kv_type(const plumb_gguf_t *g, int64_t i) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    return kv ? (plumb_gguf_type)kv->type : PLUMB_GGUF_TYPE_COUNT;
}

plumb_gguf_type plumb_gguf_kv_array_type(const plumb_gguf_t *g, int64_t i) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    return kv ? (plumb_gguf_type)kv->arr_type : PLUMB_GGUF_TYPE_COUNT;
}

uint64_t plumb_gguf_kv_array_len(const plumb_gguf_t *g, int64_t i) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    return (kv && kv->type == PLUMB_GGUF_ARRAY) ? kv->arr_len : 0;
}

/* A decoded scalar: integers widened to int64/uint64 with a sign flag, floats to double. */
typedef struct scalar {
    bool is_int, is_float, is_bool, negative;
    uint64_t u;
    int64_t i;
    double f;
} scalar;

static scalar decode(const uint8_t *p, int type) {
    scalar s = {0};
    switch (type) {
    case PLUMB_GGUF_U8: s.u = p[0]; break;
    case PLUMB_GGUF_I8: { int8_t v; memcpy(&v, p, 1); s.i = v; s.negative = v < 0; break; }
    case PLUMB_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); s.u = v; break; }
    case PLUMB_GGUF_I16: { int16_t v; memcpy(&v, p, 2); s.i = v; s.negative = v < 0; break; }
    case PLUMB_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); s.u = v; break; }
    case PLUMB_GGUF_I32: { int32_t v; memcpy(&v, p, 4); s.i = v; s.negative = v < 0; break; }
    case PLUMB_GGUF_U64: memcpy(&s.u, p, 8); break;
    case PLUMB_GGUF_I64: memcpy(&s.i, p, 8); s.negative = s.i < 0; break;
    case PLUMB_GGUF_BOOL: s.is_bool = true; s.u = p[0]; break;
    case PLUMB_GGUF_F32: { float v; memcpy(&v, p, 4); s.is_float = true; s.f = v; return s; }
    case PLUMB_GGUF_F64: memcpy(&s.f, p, 8); s.is_float = true; return s;
    default: return s;
    }
    s.is_int = true;
    switch (type) { /* fill both views */
    case PLUMB_GGUF_I8: case PLUMB_GGUF_I16: case PLUMB_GGUF_I32: case PLUMB_GGUF_I64:
        s.u = (uint64_t)s.i; break;
    default: s.i = (int64_t)s.u; break;
    }
    s.f = s.negative ? (double)s.i : (double)s.u;
    return s;
}

/* Locates the scalar for entry i (j < 0) or element j of array entry i. */
static plumb_status locate(const plumb_gguf_t *g, int64_t i, int64_t j, const uint8_t **p, int *type) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    if (!kv) return plumb__fail(PLUMB_E_RANGE, "%s: metadata index %" PRId64 " out of range", g->name, i);
    if (j < 0) {
        if (kv->type == PLUMB_GGUF_ARRAY || kv->type == PLUMB_GGUF_STRING)
            return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is a %s, not a number", g->name, kv->key,
                               plumb_gguf_type_name((int)kv->type));
        *p = g->data + kv->value_off;
        *type = (int)kv->type;
        return PLUMB_OK;
    }
    if (kv->type != PLUMB_GGUF_ARRAY)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is a %s, not an array", g->name, kv->key,
                           plumb_gguf_type_name((int)kv->type));
    if ((uint64_t)j >= kv->arr_len)
        return plumb__fail(PLUMB_E_RANGE, "%s: key '%s': index %" PRId64 " past the array's %" PRIu64 " elements",
                           g->name, kv->key, j, kv->arr_len);
    if (kv->arr_type == PLUMB_GGUF_STRING)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is an array of strings, not numbers", g->name, kv->key);
    *p = g->data + kv->arr_off + (uint64_t)j * plumb__gguf_value_size((int)kv->arr_type);
    *type = (int)kv->arr_type;
    return PLUMB_OK;
}

static plumb_status get_int(const plumb_gguf_t *g, int64_t i, int64_t j, int64_t *out) {
    const uint8_t *p = NULL;
    int type = PLUMB_GGUF_TYPE_COUNT;
    plumb_status st = locate(g, i, j, &p, &type);
    if (st) return st;
    scalar s = decode(p, type);
    if (!s.is_int) return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' holds %s, not an integer", g->name, g->kvs[i].key, plumb_gguf_type_name(type));
    if (!s.negative && s.u > (uint64_t)INT64_MAX)
        return plumb__fail(PLUMB_E_RANGE, "%s: key '%s': %" PRIu64 " does not fit int64", g->name, g->kvs[i].key, s.u);
    *out = s.i;
    return PLUMB_OK;
}

static plumb_status get_uint(const plumb_gguf_t *g, int64_t i, int64_t j, uint64_t *out) {
    const uint8_t *p = NULL;
    int type = PLUMB_GGUF_TYPE_COUNT;
    plumb_status st = locate(g, i, j, &p, &type);
    if (st) return st;
    scalar s = decode(p, type);
    if (!s.is_int) return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' holds %s, not an integer", g->name, g->kvs[i].key, plumb_gguf_type_name(type));
    if (s.negative) return plumb__fail(PLUMB_E_RANGE, "%s: key '%s': %" PRId64 " is negative", g->name, g->kvs[i].key, s.i);
    *out = s.u;
    return PLUMB_OK;
}

static plumb_status get_float(const plumb_gguf_t *g, int64_t i, int64_t j, double *out) {
    const uint8_t *p = NULL;
    int type = PLUMB_GGUF_TYPE_COUNT;
    plumb_status st = locate(g, i, j, &p, &type);
    if (st) return st;
    scalar s = decode(p, type);
    if (s.is_bool || (!s.is_int && !s.is_float))
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' holds %s, not a number", g->name, g->kvs[i].key, plumb_gguf_type_name(type));
    *out = s.f;
    return PLUMB_OK;
}

static plumb_status get_bool(const plumb_gguf_t *g, int64_t i, int64_t j, bool *out) {
    const uint8_t *p = NULL;
    int type = PLUMB_GGUF_TYPE_COUNT;
    plumb_status st = locate(g, i, j, &p, &type);
    if (st) return st;
    if (type != PLUMB_GGUF_BOOL)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' holds %s, not a bool", g->name, g->kvs[i].key, plumb_gguf_type_name(type));
    *out = p[0] != 0;
    return PLUMB_OK;
}

plumb_status plumb_gguf_kv_int(const plumb_gguf_t *g, int64_t i, int64_t *out) { return get_int(g, i, -1, out); }
plumb_status plumb_gguf_kv_uint(const plumb_gguf_t *g, int64_t i, uint64_t *out) { return get_uint(g, i, -1, out); }
plumb_status plumb_gguf_kv_float(const plumb_gguf_t *g, int64_t i, double *out) { return get_float(g, i, -1, out); }
plumb_status plumb_gguf_kv_bool(const plumb_gguf_t *g, int64_t i, bool *out) { return get_bool(g, i, -1, out); }

static plumb_status check_index(const plumb_gguf_t *g, uint64_t j) {
    if (j > (uint64_t)INT64_MAX) return plumb__fail(PLUMB_E_RANGE, "%s: array index %" PRIu64 " out of range", g->name, j);
    return PLUMB_OK;
}

plumb_status plumb_gguf_arr_int(const plumb_gguf_t *g, int64_t i, uint64_t j, int64_t *out) {
    plumb_status st = check_index(g, j);
    return st ? st : get_int(g, i, (int64_t)j, out);
}
plumb_status plumb_gguf_arr_uint(const plumb_gguf_t *g, int64_t i, uint64_t j, uint64_t *out) {
    plumb_status st = check_index(g, j);
    return st ? st : get_uint(g, i, (int64_t)j, out);
}
plumb_status plumb_gguf_arr_float(const plumb_gguf_t *g, int64_t i, uint64_t j, double *out) {
    plumb_status st = check_index(g, j);
    return st ? st : get_float(g, i, (int64_t)j, out);
}
plumb_status plumb_gguf_arr_bool(const plumb_gguf_t *g, int64_t i, uint64_t j, bool *out) {
    plumb_status st = check_index(g, j);
    return st ? st : get_bool(g, i, (int64_t)j, out);
}

static plumb_str str_at(const plumb_gguf_t *g, uint64_t off) {
    plumb_str s;
    memcpy(&s.len, g->data + off, 8);
    s.ptr = (const char *)g->data + off + 8;
    return s;
}

plumb_status plumb_gguf_kv_str(const plumb_gguf_t *g, int64_t i, plumb_str *out) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    if (!kv) return plumb__fail(PLUMB_E_RANGE, "%s: metadata index %" PRId64 " out of range", g->name, i);
    if (kv->type != PLUMB_GGUF_STRING)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is a %s, not a string", g->name, kv->key, plumb_gguf_type_name((int)kv->type));
    *out = str_at(g, kv->value_off);
    return PLUMB_OK;
}

plumb_status plumb_gguf_arr_str(const plumb_gguf_t *g, int64_t i, uint64_t j, plumb_str *out) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    if (!kv) return plumb__fail(PLUMB_E_RANGE, "%s: metadata index %" PRId64 " out of range", g->name, i);
    if (kv->type != PLUMB_GGUF_ARRAY || kv->arr_type != PLUMB_GGUF_STRING)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is not an array of strings", g->name, kv->key);
    if (j >= kv->arr_len)
        return plumb__fail(PLUMB_E_RANGE, "%s: key '%s': index %" PRIu64 " past the array's %" PRIu64 " elements",
                           g->name, kv->key, j, kv->arr_len);
    *out = str_at(g, kv->str_offs[j]);
    return PLUMB_OK;
}

plumb_status plumb_gguf_arr_data(const plumb_gguf_t *g, int64_t i, const void **out) {
    const plumb__gguf_kv *kv = kv_at(g, i);
    if (!kv) return plumb__fail(PLUMB_E_RANGE, "%s: metadata index %" PRId64 " out of range", g->name, i);
    if (kv->type != PLUMB_GGUF_ARRAY || kv->arr_type == PLUMB_GGUF_STRING)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' is not a numeric array", g->name, kv->key);
    *out = g->data + kv->arr_off;
    return PLUMB_OK;
}

/* ---- by key -------------------------------------------------------------------------------- */

static plumb_status find(const plumb_gguf_t *g, const char *key, int64_t *i) {
    *i = plumb_gguf_find_key(g, key);
    if (*i < 0) return plumb__fail(PLUMB_E_NOT_FOUND, "%s: metadata key '%s' not found", g->name, key ? key : "(null)");
    return PLUMB_OK;
}

plumb_status plumb_gguf_get_u32(const plumb_gguf_t *g, const char *key, uint32_t *out) {
    int64_t i;
    uint64_t v = 0;
    plumb_status st = find(g, key, &i);
    if (!st) st = get_uint(g, i, -1, &v);
    if (st) return st;
    if (v > UINT32_MAX) return plumb__fail(PLUMB_E_RANGE, "%s: key '%s': %" PRIu64 " does not fit u32", g->name, key, v);
    *out = (uint32_t)v;
    return PLUMB_OK;
}

plumb_status plumb_gguf_get_i64(const plumb_gguf_t *g, const char *key, int64_t *out) {
    int64_t i;
    plumb_status st = find(g, key, &i);
    return st ? st : get_int(g, i, -1, out);
}

plumb_status plumb_gguf_get_count(const plumb_gguf_t *g, const char *key, uint64_t *out) {
    int64_t i;
    plumb_status st = find(g, key, &i);
    if (st) return st;
    if (g->kvs[i].type == PLUMB_GGUF_BOOL)
        return plumb__fail(PLUMB_E_TYPE, "%s: key '%s' holds a bool, not a count", g->name, key);
    return get_uint(g, i, -1, out);
}

plumb_status plumb_gguf_get_f32(const plumb_gguf_t *g, const char *key, float *out) {
    int64_t i;
    double v = 0;
    plumb_status st = find(g, key, &i);
    if (!st) st = get_float(g, i, -1, &v);
    if (st) return st;
    *out = (float)v;
    return PLUMB_OK;
}

plumb_status plumb_gguf_get_bool(const plumb_gguf_t *g, const char *key, bool *out) {
    int64_t i;
    plumb_status st = find(g, key, &i);
    return st ? st : get_bool(g, i, -1, out);
}

plumb_status plumb_gguf_get_str(const plumb_gguf_t *g, const char *key, plumb_str *out) {
    int64_t i;
    plumb_status st = find(g, key, &i);
    return st ? st : plumb_gguf_kv_str(g, i, out);
}

plumb_status plumb_gguf_tensor(const plumb_gguf_t *g, int64_t i, plumb_gguf_tensor_info *out) {
    if (i < 0 || i >= g->n_tensors)
        return plumb__fail(PLUMB_E_RANGE, "%s: tensor index %" PRId64 " out of range", g->name, i);
    const plumb__gguf_tensor *t = &g->tensors[i];
    out->name = t->name;
    out->n_dims = t->n_dims;
    memcpy(out->ne, t->ne, sizeof out->ne);
    out->type = t->type;
    out->offset = t->offset;
    out->nbytes = t->nbytes;
    const plumb_gguf_t *f = t->shard ? g->shards[t->shard - 1] : g; /* the file holding its data */
    out->data = f->data + f->data_offset + t->offset;
    return PLUMB_OK;
}
