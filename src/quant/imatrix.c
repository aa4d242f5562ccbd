/* imatrix.c — importance matrices for quantization, as llama-imatrix writes them and
 * llama-quantize reads them: a GGUF file holding, per weight, "<name>.in_sum2" (sums of
 * squared activations, per column and expert) and "<name>.counts" (how many activations went
 * into each expert's sums), or the legacy .dat layout (per weight: name, call count, values).
 * The values handed to the quantizers are the sums divided by their counts, computed in the
 * same float operations as llama-quantize so that the quantized bytes match. Everything in
 * the file is untrusted: each count and size is checked before use. */
#include "quant/quantize_model.h"

#include "core/error.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Files larger than this are refused (the largest models' matrices are far smaller). */
#define IMATRIX_MAX_BYTES ((uint64_t)4 << 30)

void plumb__imatrix_free(plumb__imatrix *im) {
    if (!im) return;
    for (int64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    memset(im, 0, sizeof *im);
}

/* Appends an entry (taking name and values); duplicates are settled once sorted. */
static plumb_status add_entry(plumb__imatrix *im, size_t *cap, char *name, float *values, int64_t n) {
    if ((size_t)im->n_entries == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        plumb__imatrix_entry *grown = realloc(im->entries, nc * sizeof *grown);
        if (!grown) {
            free(name);
            free(values);
            return plumb__fail(PLUMB_E_NOMEM, "imatrix: out of memory");
        }
        im->entries = grown;
        *cap = nc;
    }
    im->entries[im->n_entries] = (plumb__imatrix_entry){.name = name, .values = values, .n = n, .seq = im->n_entries};
    im->n_entries++;
    return PLUMB_OK;
}

/* By name, then file order. */
static int entry_cmp(const void *a, const void *b) {
    const plumb__imatrix_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts the entries by name, keeping the last of equal names (a later entry replaces an
 * earlier one, as in llama.cpp's map). */
static void sort_unique(plumb__imatrix *im) {
    qsort(im->entries, (size_t)im->n_entries, sizeof *im->entries, entry_cmp);
    int64_t w = 0;
    for (int64_t i = 0; i < im->n_entries; i++) {
        if (i + 1 < im->n_entries && strcmp(im->entries[i].name, im->entries[i + 1].name) == 0) {
            free(im->entries[i].name);
            free(im->entries[i].values);
            continue;
        }
        im->entries[w++] = im->entries[i];
    }
    im->n_entries = w;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- legacy .dat ----------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
} rd;

static bool rd_i32(rd *r, int32_t *v) {
    if (r->size - r->pos < 4) return false;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return true;
}

static plumb_status parse_legacy(const uint8_t *data, size_t size, const char *fname, plumb__imatrix *im) {
    rd r = {data, size, 0};
    size_t cap = 0;
    int32_t n_entries;
    if (!rd_i32(&r, &n_entries) || n_entries < 1)
        return plumb__fail(PLUMB_E_FORMAT, "%s: not an importance matrix (no entries)", fname);
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len, ncall, nval;
        if (!rd_i32(&r, &len) || len < 0 || (size_t)len > r.size - r.pos)
            return plumb__fail(PLUMB_E_FORMAT, "%s: entry %d: bad name length at offset %zu", fname, (int)i, r.pos);
        const char *np = (const char *)r.p + r.pos;
        /* the name ends at its first NUL, as a C string read back from it would */
        const char *nul = memchr(np, 0, (size_t)len);
        size_t name_len = nul ? (size_t)(nul - np) : (size_t)len;
        r.pos += (size_t)len;
        if (!rd_i32(&r, &ncall) || !rd_i32(&r, &nval) || nval < 1)
            return plumb__fail(PLUMB_E_FORMAT, "%s: entry %d: bad value count at offset %zu", fname, (int)i, r.pos);
        if ((size_t)nval > (r.size - r.pos) / 4)
            return plumb__fail(PLUMB_E_FORMAT, "%s: entry %d: %d values run past the end of the file", fname, (int)i,
                               (int)nval);
        char *name = dup_n(np, name_len);
        float *v = malloc((size_t)nval * sizeof *v);
        if (!name || !v) {
            free(name);
            free(v);
            return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
        }
        memcpy(v, r.p + r.pos, (size_t)nval * 4);
        r.pos += (size_t)nval * 4;
        /* the sums were stored as averages times the call count */
        if (ncall > 0)
            for (int32_t j = 0; j < nval; j++) v[j] = v[j] / (float)ncall;
        plumb_status st = add_entry(im, &cap, name, v, nval);
        if (st) return st;
    }
    /* optional trailer: the chunk count and the dataset's name */
    int32_t n_calls, dlen;
    if (r.pos < r.size && rd_i32(&r, &n_calls)) {
        im->chunk_count = n_calls;
        if (rd_i32(&r, &dlen) && dlen > 0 && (size_t)dlen <= r.size - r.pos) {
            const char *dp = (const char *)r.p + r.pos;
            const char *nul = memchr(dp, 0, (size_t)dlen);
            im->dataset = dup_n(dp, nul ? (size_t)(nul - dp) : (size_t)dlen);
            if (!im->dataset) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
        }
    }
    return PLUMB_OK;
}

/* ---- GGUF ---------------------------------------------------------------------------------- */

static bool strip_suffix(const char *name, const char *suffix, size_t *base_len) {
    size_t n = strlen(name), s = strlen(suffix);
    if (n < s || strcmp(name + n - s, suffix) != 0) return false;
    *base_len = n - s;
    return true;
}

static plumb_status get_u32_key(const plumb_gguf_t *g, const char *fname, const char *key, int32_t *out) {
    int64_t i = plumb_gguf_find_key(g, key);
    uint64_t v;
    if (plumb_gguf_kv_type(g, i) != PLUMB_GGUF_U32 || plumb_gguf_kv_uint(g, i, &v) != PLUMB_OK)
        return plumb__fail(PLUMB_E_FORMAT, "%s: %s must be a u32", fname, key);
    *out = (int32_t)(uint32_t)v;
    return PLUMB_OK;
}

static plumb_status parse_gguf(const uint8_t *data, size_t size, const char *fname, plumb__imatrix *im) {
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open_memory(data, size, fname, &g);
    if (st) return st;
    size_t cap = 0;
    int64_t nt = plumb_gguf_tensor_count(g);
    int64_t kd = plumb_gguf_find_key(g, "imatrix.datasets");
    if (nt < 1) {
        st = plumb__fail(PLUMB_E_FORMAT, "%s: the importance matrix has no entries", fname);
        goto done;
    }
    if (kd < 0 || plumb_gguf_find_key(g, "imatrix.chunk_count") < 0 || plumb_gguf_find_key(g, "imatrix.chunk_size") < 0) {
        st = plumb__fail(PLUMB_E_FORMAT, "%s: not an importance matrix: imatrix.datasets, imatrix.chunk_count or "
                                         "imatrix.chunk_size is missing", fname);
        goto done;
    }
    int32_t chunk_size;
    if ((st = get_u32_key(g, fname, "imatrix.chunk_count", &im->chunk_count))) goto done;
    if ((st = get_u32_key(g, fname, "imatrix.chunk_size", &chunk_size))) goto done;
    if (plumb_gguf_kv_type(g, kd) == PLUMB_GGUF_ARRAY && plumb_gguf_kv_array_type(g, kd) == PLUMB_GGUF_STRING &&
        plumb_gguf_kv_array_len(g, kd) > 0) {
        plumb_str s;
        if ((st = plumb_gguf_arr_str(g, kd, 0, &s))) goto done;
        const char *nul = memchr(s.ptr, 0, (size_t)s.len);
        im->dataset = dup_n(s.ptr, nul ? (size_t)(nul - s.ptr) : (size_t)s.len);
        if (!im->dataset) {
            st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
            goto done;
        }
    }
    for (int64_t i = 0; i < nt; i++) {
        plumb_gguf_tensor_info sums;
        size_t base;
        if ((st = plumb_gguf_tensor(g, i, &sums))) goto done;
        if (!strip_suffix(sums.name, ".in_sum2", &base)) {
            if (strip_suffix(sums.name, ".counts", &base)) {
                char *want = malloc(base + sizeof ".in_sum2");
                if (!want) {
                    st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
                    goto done;
                }
                memcpy(want, sums.name, base);
                memcpy(want + base, ".in_sum2", sizeof ".in_sum2");
                bool found = plumb_gguf_find_tensor(g, want) >= 0;
                free(want);
                if (!found) {
                    st = plumb__fail(PLUMB_E_FORMAT, "%s: %s has no matching .in_sum2", fname, sums.name);
                    goto done;
                }
            }
            continue;
        }
        char *cname = malloc(base + sizeof ".counts");
        if (!cname) {
            st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
            goto done;
        }
        memcpy(cname, sums.name, base);
        memcpy(cname + base, ".counts", sizeof ".counts");
        int64_t ci = plumb_gguf_find_tensor(g, cname);
        free(cname);
        plumb_gguf_tensor_info counts;
        if (ci < 0) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: %s has no matching .counts", fname, sums.name);
            goto done;
        }
        if ((st = plumb_gguf_tensor(g, ci, &counts))) goto done;
        if (sums.type != PLUMB_TYPE_F32 || counts.type != PLUMB_TYPE_F32) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: sums and counts of %.*s must be F32", fname, (int)base, sums.name);
            goto done;
        }
        int64_t nval = (int64_t)(sums.nbytes / 4), ncounts = (int64_t)(counts.nbytes / 4);
        if (nval < 1 || ncounts < 1 || ncounts > nval) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: %.*s: %" PRId64 " sums for %" PRId64 " counts", fname, (int)base,
                             sums.name, nval, ncounts);
            goto done;
        }
        char *name = dup_n(sums.name, base);
        float *v = calloc((size_t)nval, sizeof *v);
        if (!name || !v) {
            free(name);
            free(v);
            st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", fname);
            goto done;
        }
        const uint8_t *sp = sums.data, *cp = counts.data;
        int64_t ne0 = nval / ncounts;
        for (int64_t j = 0; j < ncounts && !st; j++) {
            float cf;
            memcpy(&cf, cp + j * 4, 4);
            if (!(fabsf(cf) < 9.0e15f)) {
                st = plumb__fail(PLUMB_E_FORMAT, "%s: %s.counts: count %" PRId64 " is not a finite count", fname,
                                 name, j);
                break;
            }
            /* counts are whole numbers stored as floats: rounded to an integer, then used as a
             * float divisor (an expert no token reached gets weights of 1) */
            float count = (float)(int64_t)lroundf(cf);
            for (int64_t k = 0; k < ne0; k++) {
                float s;
                memcpy(&s, sp + (j * ne0 + k) * 4, 4);
                v[j * ne0 + k] = count > 0.0f ? s / count : 1.0f;
            }
        }
        if (st) {
            free(name);
            free(v);
            goto done;
        }
        if ((st = add_entry(im, &cap, name, v, nval))) goto done;
    }
done:
    plumb_gguf_free(g);
    return st;
}

plumb_status plumb__imatrix_parse(const void *data, size_t size, const char *name, plumb__imatrix *out) {
    if (!out || (!data && size)) return plumb__fail(PLUMB_E_INVALID_ARG, "imatrix: NULL argument");
    memset(out, 0, sizeof *out);
    if (!name) name = "imatrix";
    plumb_status st = size >= 4 && memcmp(data, "GGUF", 4) == 0 ? parse_gguf(data, size, name, out)
                                                               : parse_legacy(data, size, name, out);
    if (!st && out->n_entries == 0) st = plumb__fail(PLUMB_E_FORMAT, "%s: the importance matrix has no entries", name);
    for (int64_t i = 0; !st && i < out->n_entries; i++) {
        const plumb__imatrix_entry *e = &out->entries[i];
        for (int64_t j = 0; j < e->n; j++)
            if (!isfinite(e->values[j])) {
                st = plumb__fail(PLUMB_E_FORMAT, "%s: %s: value %" PRId64 " is not finite", name, e->name, j);
                break;
            }
    }
    if (st) {
        plumb__imatrix_free(out);
        return st;
    }
    sort_unique(out);
    return PLUMB_OK;
}

plumb_status plumb__imatrix_load(const char *path, plumb__imatrix *out) {
    if (!path || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "imatrix: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return plumb__fail(PLUMB_E_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    plumb_status st = PLUMB_OK;
    for (;;) {
        if (len == cap) {
            if (cap >= IMATRIX_MAX_BYTES) {
                st = plumb__fail(PLUMB_E_FORMAT, "%s: larger than %" PRIu64 " bytes", path, IMATRIX_MAX_BYTES);
                break;
            }
            size_t nc = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = realloc(buf, nc);
            if (!grown) {
                st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = grown;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) st = plumb__fail(PLUMB_E_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!st) st = plumb__imatrix_parse(buf, len, path, out);
    free(buf);
    return st;
}

const plumb__imatrix_entry *plumb__imatrix_find(const plumb__imatrix *im, const char *name) {
    int64_t lo = 0, hi = im->n_entries - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(im->entries[mid].name, name);
        if (c == 0) return &im->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}
