/* imatrix.c — the importance matrix: collecting it from a model's matmuls, and its two file
 * forms (imatrix.h). The sums are float, added token by token in llama-imatrix's order, so the
 * two tools agree to the bit when their activations do. */
#include "eval/imatrix.h"

#include "backend/backend.h"
#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME 4096            /* a legacy entry's name */
#define MAX_VALUES (1 << 28)     /* values of one entry in a file read */
#define MAX_ENTRIES (1 << 20)    /* entries of a legacy file */

void plumb_imatrix_init(plumb_imatrix *im, int32_t chunk_size, bool process_output) {
    memset(im, 0, sizeof *im);
    im->chunk_size = chunk_size > 0 ? chunk_size : 1;
    im->process_output = process_output;
}

void plumb_imatrix_free(plumb_imatrix *im) {
    for (int64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].sums);
        free(im->entries[i].counts);
    }
    free(im->entries);
    for (int32_t i = 0; i < im->n_datasets; i++) free(im->datasets[i]);
    free(im->datasets);
    free(im->scratch);
    memset(im, 0, sizeof *im);
}

plumb_status plumb_imatrix_add_dataset(plumb_imatrix *im, const char *name) {
    char **grown = realloc(im->datasets, (size_t)(im->n_datasets + 1) * sizeof *grown);
    if (!grown) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
    im->datasets = grown;
    if (!(im->datasets[im->n_datasets] = strdup(name))) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
    im->n_datasets++;
    return PLUMB_OK;
}

/* The entry named name[0..len), made empty when new; NULL when out of memory. */
static plumb_imatrix_entry *entry(plumb_imatrix *im, const char *name, size_t len) {
    for (int64_t i = 0; i < im->n_entries; i++)
        if (strlen(im->entries[i].name) == len && !memcmp(im->entries[i].name, name, len)) return &im->entries[i];
    if (im->n_entries == im->cap_entries) {
        const int64_t cap = im->cap_entries ? 2 * im->cap_entries : 64;
        plumb_imatrix_entry *grown = realloc(im->entries, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        im->entries = grown, im->cap_entries = cap;
    }
    plumb_imatrix_entry *e = &im->entries[im->n_entries];
    memset(e, 0, sizeof *e);
    if (!(e->name = malloc(len + 1))) return NULL;
    memcpy(e->name, name, len);
    e->name[len] = 0;
    im->n_entries++;
    return e;
}

/* Sizes an empty entry: n_vals zero sums and n_counts zero counts. */
static plumb_status entry_size(plumb_imatrix_entry *e, int64_t n_vals, int64_t n_counts) {
    e->sums = calloc((size_t)n_vals, sizeof *e->sums);
    e->counts = calloc((size_t)n_counts, sizeof *e->counts);
    if (!e->sums || !e->counts) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix of %s", e->name);
    e->n_vals = n_vals, e->n_counts = n_counts;
    return PLUMB_OK;
}

/* Gives the entry n counts, each the one it has (an old file's single count per matrix). */
static plumb_status entry_spread_counts(plumb_imatrix_entry *e, int64_t n) {
    int64_t *c = realloc(e->counts, (size_t)n * sizeof *c);
    if (!c) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix of %s", e->name);
    for (int64_t i = e->n_counts; i < n; i++) c[i] = c[0];
    e->counts = c, e->n_counts = n;
    return PLUMB_OK;
}

static void count_chunks(plumb_imatrix *im, int64_t count) {
    const int64_t n = count / im->chunk_size;
    if (n > im->n_chunks) im->n_chunks = (int32_t)n;
}

static bool all_finite(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return false;
    return true;
}

/* The weight a matmul reads: its source, through the scheduler's copies. */
static const plumb_tensor *weight_of(const plumb_tensor *node) {
    const plumb_tensor *w = node->src[0];
    while (w->op == PLUMB_OP_COPY || w->op == PLUMB_OP_VIEW) w = w->src[0];
    return w;
}

static bool wanted(const plumb_imatrix *im, const plumb_tensor *node) {
    if (node->op == PLUMB_OP_MUL_MAT_ID) return true;
    if (node->op != PLUMB_OP_MUL_MAT) return false;
    const plumb_tensor *x = node->src[1], *w = weight_of(node);
    if (x->ne[1] < 16 || x->type != PLUMB_TYPE_F32 || !w->name) return false; /* llama-imatrix skips small batches */
    return !strncmp(w->name, "blk.", 4) || (im->process_output && !strcmp(w->name, "output.weight"));
}

/* t's data on the host: its own when the host can read it, else a copy in the scratch at
 * byte `at` (which must fit). */
static plumb_status host_data(plumb_imatrix *im, const plumb_tensor *t, size_t at, const void **out) {
    if (t->data) {
        *out = t->data;
        return PLUMB_OK;
    }
    *out = im->scratch + at;
    return plumb_tensor_get(t, 0, im->scratch + at, plumb_tensor_nbytes(t));
}

static plumb_status reserve(plumb_imatrix *im, size_t n) {
    if (n <= im->scratch_cap) return PLUMB_OK;
    uint8_t *p = realloc(im->scratch, n);
    if (!p) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix (%zu bytes)", n);
    im->scratch = p, im->scratch_cap = n;
    return PLUMB_OK;
}

/* x [K, B, T] F32 routed by ids [k, T] into the experts of w [K, N, E]: per slot, per token,
 * the squares of the row it reads into its expert's sums. */
static plumb_status collect_experts(plumb_imatrix *im, const plumb_tensor *node, plumb_imatrix_entry *e) {
    const plumb_tensor *w = weight_of(node), *x = node->src[1], *ids = node->src[2];
    const int64_t K = x->ne[0], B = x->ne[1], T = x->ne[2], k = ids->ne[0], n_as = w->ne[2];
    PLUMB_ASSERT(ids->ne[1] == T && x->ne[3] == 1 && x->nb[0] == sizeof(float) && ids->nb[0] == sizeof(int32_t));
    const size_t nx = plumb_tensor_nbytes(x), ni = plumb_tensor_nbytes(ids);
    plumb_status st = reserve(im, nx + ni + (size_t)n_as);
    const void *xd, *id;
    if (st || (st = host_data(im, x, 0, &xd)) || (st = host_data(im, ids, nx, &id))) return st;
    if (e->n_counts == 1 && n_as > 1 && (st = entry_spread_counts(e, n_as))) return st;
    if (!e->sums && (st = entry_size(e, K * n_as, n_as))) return st;
    if (e->n_vals != K * n_as || e->n_counts != n_as)
        return plumb__fail(PLUMB_E_RANGE, "imatrix: %s has %lld values in %lld matrices, not %lld in %lld", e->name,
                           (long long)e->n_vals, (long long)e->n_counts, (long long)(K * n_as), (long long)n_as);
    uint8_t *touched = im->scratch + nx + ni;
    memset(touched, 0, (size_t)n_as);
    for (int64_t s = 0; s < k; s++)
        for (int64_t t = 0; t < T; t++) {
            const int32_t ex = *(const int32_t *)((const uint8_t *)id + (size_t)t * ids->nb[1] + (size_t)s * ids->nb[0]);
            PLUMB_ASSERT(ex >= 0 && ex < n_as);
            const float *row = (const float *)((const uint8_t *)xd + (size_t)(s % B) * x->nb[1] + (size_t)t * x->nb[2]);
            float *acc = e->sums + (size_t)ex * (size_t)K;
            e->counts[ex]++;
            touched[ex] = 1;
            for (int64_t j = 0; j < K; j++) acc[j] += row[j] * row[j];
        }
    for (int64_t ex = 0; ex < n_as; ex++)
        if (touched[ex] && !all_finite(e->sums + ex * K, K))
            return plumb__fail(PLUMB_E_RANGE, "imatrix: non-finite values in %s", e->name);
    for (int64_t ex = 0; ex < n_as; ex++) count_chunks(im, e->counts[ex]);
    return PLUMB_OK;
}

/* x [K, rows...] F32 into w's sums: the squares of every row, added row by row. */
static plumb_status collect_dense(plumb_imatrix *im, const plumb_tensor *node, plumb_imatrix_entry *e) {
    const plumb_tensor *w = weight_of(node), *x = node->src[1];
    const int64_t K = x->ne[0], n_mat = w->ne[2] * w->ne[3];
    PLUMB_ASSERT(x->nb[0] == sizeof(float));
    plumb_status st = reserve(im, plumb_tensor_nbytes(x));
    const void *xd;
    if (st || (st = host_data(im, x, 0, &xd))) return st;
    if (e->n_counts > 1) { /* one count for a dense weight when an old file's are all equal */
        bool equal = true;
        for (int64_t i = 1; i < e->n_counts; i++) equal = equal && e->counts[i] == e->counts[0];
        if (equal) e->n_counts = 1;
    }
    if (!e->sums && (st = entry_size(e, K * n_mat, 1))) return st;
    if (e->n_vals != K * n_mat)
        return plumb__fail(PLUMB_E_RANGE, "imatrix: %s has %lld values, not %lld", e->name, (long long)e->n_vals,
                           (long long)(K * n_mat));
    for (int64_t i3 = 0; i3 < x->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < x->ne[2]; i2++) {
            const int64_t mat = (i3 % w->ne[3]) * w->ne[2] + i2 % w->ne[2];
            float *acc = e->sums + (size_t)mat * (size_t)K;
            for (int64_t r = 0; r < x->ne[1]; r++) {
                const float *row =
                    (const float *)((const uint8_t *)xd + (size_t)r * x->nb[1] + (size_t)i2 * x->nb[2] + (size_t)i3 * x->nb[3]);
                for (int64_t j = 0; j < K; j++) acc[j] += row[j] * row[j];
            }
        }
    if (!all_finite(e->sums, e->n_vals)) return plumb__fail(PLUMB_E_RANGE, "imatrix: non-finite values in %s", e->name);
    const int64_t rows = x->ne[1] * x->ne[2] * x->ne[3];
    for (int64_t i = 0; i < e->n_counts; i++) {
        e->counts[i] += rows / n_mat;
        count_chunks(im, e->counts[i]);
    }
    return PLUMB_OK;
}

int plumb_imatrix_observe(const plumb_tensor *node, bool ready, void *user) {
    plumb_imatrix *im = user;
    if (!wanted(im, node)) return 0;
    if (!ready) return 1;
    const char *name = weight_of(node)->name ? weight_of(node)->name : "";
    plumb_imatrix_entry *e = entry(im, name, strlen(name));
    if (!e) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
    return node->op == PLUMB_OP_MUL_MAT_ID ? collect_experts(im, node, e) : collect_dense(im, node, e);
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Adds a GGUF file's entry (sums[n_vals], counts[n_counts]) as llama-imatrix does. */
static plumb_status merge(plumb_imatrix *im, const char *name, size_t len, const float *sums, int64_t n_vals,
                          const float *counts, int64_t n_counts) {
    plumb_imatrix_entry *e = entry(im, name, len);
    plumb_status st = PLUMB_OK;
    if (!e) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
    if (!e->sums) st = entry_size(e, n_vals, n_counts);
    else if (e->n_vals != n_vals)
        return plumb__fail(PLUMB_E_FORMAT, "imatrix: %s has %lld values here and %lld before", e->name, (long long)n_vals,
                           (long long)e->n_vals);
    else if (e->n_counts == 1 && n_counts > 1) st = entry_spread_counts(e, n_counts);
    else if (e->n_counts != n_counts)
        return plumb__fail(PLUMB_E_FORMAT, "imatrix: %s has %lld counts here and %lld before", e->name, (long long)n_counts,
                           (long long)e->n_counts);
    if (st) return st;
    for (int64_t j = 0; j < n_vals; j++) e->sums[j] += sums[j];
    for (int64_t j = 0; j < n_counts; j++) e->counts[j] += lroundf(counts[j]);
    return PLUMB_OK;
}

static bool ends_with(const char *s, const char *suffix, size_t *stem) {
    const size_t n = strlen(s), m = strlen(suffix);
    if (n <= m || strcmp(s + n - m, suffix)) return false;
    *stem = n - m;
    return true;
}

static plumb_status load_gguf(plumb_imatrix *im, const char *path) {
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open(path, &g);
    if (st) return st;
    const int64_t n = plumb_gguf_tensor_count(g);
    if (n < 1) st = plumb__fail(PLUMB_E_FORMAT, "%s: no imatrix data in the file", path);
    const int64_t ds = plumb_gguf_find_key(g, "imatrix.datasets");
    if (!st && ds >= 0 && plumb_gguf_kv_type(g, ds) == PLUMB_GGUF_ARRAY && plumb_gguf_kv_array_type(g, ds) == PLUMB_GGUF_STRING)
        for (uint64_t j = 0; j < plumb_gguf_kv_array_len(g, ds) && !st; j++) {
            plumb_str s;
            char *copy = NULL;
            if (!(st = plumb_gguf_arr_str(g, ds, j, &s)) && !(copy = strndup(s.ptr, (size_t)s.len)))
                st = plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
            if (!st) st = plumb_imatrix_add_dataset(im, copy);
            free(copy);
        }
    for (int64_t i = 0; i < n && !st; i++) { /* each ".in_sum2" with its ".counts" */
        plumb_gguf_tensor_info t, c;
        size_t stem;
        if ((st = plumb_gguf_tensor(g, i, &t))) break;
        if (ends_with(t.name, ".counts", &stem)) {
            char want[512];
            snprintf(want, sizeof want, "%.*s.in_sum2", (int)stem, t.name);
            if (plumb_gguf_find_tensor(g, want) < 0) st = plumb__fail(PLUMB_E_FORMAT, "%s: %s has no sums", path, t.name);
            continue;
        }
        if (!ends_with(t.name, ".in_sum2", &stem)) continue;
        char want[512];
        snprintf(want, sizeof want, "%.*s.counts", (int)stem, t.name);
        const int64_t ci = plumb_gguf_find_tensor(g, want);
        if (ci < 0) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: %s has no counts", path, t.name);
            break;
        }
        if ((st = plumb_gguf_tensor(g, ci, &c))) break;
        if (t.type != PLUMB_TYPE_F32 || c.type != PLUMB_TYPE_F32) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: the sums and counts of %.*s must be F32", path, (int)stem, t.name);
            break;
        }
        const int64_t nv = (int64_t)(t.nbytes / sizeof(float)), nc = (int64_t)(c.nbytes / sizeof(float));
        if (nv < 1 || nc < 1 || nv > MAX_VALUES || nv % nc) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: %.*s has %lld sums for %lld counts", path, (int)stem, t.name, (long long)nv,
                             (long long)nc);
            break;
        }
        st = merge(im, t.name, stem, t.data, nv, c.data, nc);
    }
    plumb_gguf_free(g);
    return st;
}

static bool read_i32(FILE *f, int32_t *v) { return fread(v, sizeof *v, 1, f) == 1; }

static plumb_status load_dat(plumb_imatrix *im, const char *path, FILE *f) {
    int32_t n_entries, len, ncall, nval;
    if (!read_i32(f, &n_entries) || n_entries < 1 || n_entries > MAX_ENTRIES)
        return plumb__fail(PLUMB_E_FORMAT, "%s: not an imatrix file (neither GGUF nor the legacy form)", path);
    char *name = malloc(MAX_NAME + 1);
    float *vals = NULL;
    plumb_status st = name ? PLUMB_OK : plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
    for (int32_t i = 0; i < n_entries && !st; i++) {
        if (!read_i32(f, &len) || len < 1 || len > MAX_NAME || fread(name, 1, (size_t)len, f) != (size_t)len ||
            !read_i32(f, &ncall) || !read_i32(f, &nval) || nval < 1 || nval > MAX_VALUES) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: entry %d of %d is cut short or malformed", path, i + 1, n_entries);
            break;
        }
        float *grown = realloc(vals, (size_t)nval * sizeof *vals);
        if (!grown) {
            st = plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
            break;
        }
        vals = grown;
        if (fread(vals, sizeof *vals, (size_t)nval, f) != (size_t)nval) {
            st = plumb__fail(PLUMB_E_FORMAT, "%s: the values of entry %d are cut short", path, i + 1);
            break;
        }
        /* the file holds sum / count * ncall with counts {ncall}: back to sums over chunk_size
         * tokens per call */
        plumb_imatrix_entry *e = entry(im, name, (size_t)len);
        if (!e) st = plumb__fail(PLUMB_E_NOMEM, "out of memory for the imatrix");
        else if (!e->sums) st = entry_size(e, nval, 1);
        else if (e->n_vals != nval)
            st = plumb__fail(PLUMB_E_FORMAT, "imatrix: %s has %d values here and %lld before", e->name, nval,
                             (long long)e->n_vals);
        if (st) break;
        for (int32_t j = 0; j < nval; j++) e->sums[j] += vals[j] * (float)im->chunk_size;
        for (int64_t j = 0; j < e->n_counts; j++) e->counts[j] += (int64_t)ncall * im->chunk_size;
    }
    int32_t chunks;
    if (!st && read_i32(f, &chunks) && read_i32(f, &len) && len > 0 && len <= MAX_NAME && fread(name, 1, (size_t)len, f) == (size_t)len) {
        name[len] = 0;
        st = plumb_imatrix_add_dataset(im, name);
    }
    free(vals);
    free(name);
    return st;
}

plumb_status plumb_imatrix_load(plumb_imatrix *im, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return plumb__fail(PLUMB_E_IO, "cannot read %s: %s", path, strerror(errno));
    char magic[4] = {0};
    const bool gguf = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    plumb_status st;
    if (gguf) {
        fclose(f);
        st = load_gguf(im, path);
    } else {
        rewind(f);
        st = load_dat(im, path, f);
        fclose(f);
    }
    if (st) return st;
    int64_t max = 0; /* llama-imatrix's chunk count after a load: the largest count's */
    for (int64_t i = 0; i < im->n_entries; i++)
        for (int64_t j = 0; j < im->entries[i].n_counts; j++)
            if (im->entries[i].counts[j] > max) max = im->entries[i].counts[j];
    im->n_chunks = (int32_t)(max / im->chunk_size);
    return PLUMB_OK;
}

/* ---- writing --------------------------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp((*(const plumb_imatrix_entry *const *)a)->name, (*(const plumb_imatrix_entry *const *)b)->name);
}

/* The entries sorted by name (a new array the caller frees), NULL when out of memory. */
static const plumb_imatrix_entry **sorted(const plumb_imatrix *im) {
    const plumb_imatrix_entry **v = malloc((size_t)(im->n_entries ? im->n_entries : 1) * sizeof *v);
    if (!v) return NULL;
    for (int64_t i = 0; i < im->n_entries; i++) v[i] = &im->entries[i];
    qsort(v, (size_t)im->n_entries, sizeof *v, by_name);
    return v;
}

plumb_status plumb_imatrix_write_gguf(const plumb_imatrix *im, const char *path) {
    const plumb_imatrix_entry **v = sorted(im);
    plumb_str *ds = calloc((size_t)im->n_datasets + 1, sizeof *ds);
    float **counts = calloc((size_t)im->n_entries + 1, sizeof *counts);
    plumb_gguf_writer_t *w = NULL;
    plumb_status st = v && ds && counts ? plumb_gguf_writer_create(&w) : plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < im->n_datasets; i++) ds[i] = (plumb_str){im->datasets[i], strlen(im->datasets[i])};
    const uint32_t chunks = (uint32_t)im->n_chunks, size = (uint32_t)im->chunk_size;
    if (!st) st = plumb_gguf_writer_set_str(w, "general.type", "imatrix", 7);
    if (!st) st = plumb_gguf_writer_set_arr_str(w, "imatrix.datasets", ds, (uint64_t)im->n_datasets);
    if (!st) st = plumb_gguf_writer_set(w, "imatrix.chunk_count", PLUMB_GGUF_U32, &chunks);
    if (!st) st = plumb_gguf_writer_set(w, "imatrix.chunk_size", PLUMB_GGUF_U32, &size);
    for (int64_t i = 0; i < im->n_entries && !st; i++) {
        const plumb_imatrix_entry *e = v[i];
        if (e->n_vals < 1 || e->n_counts < 1) continue;
        if (!(counts[i] = malloc((size_t)e->n_counts * sizeof **counts))) {
            st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
            break;
        }
        for (int64_t j = 0; j < e->n_counts; j++) counts[i][j] = (float)e->counts[j];
        /* dimensions as ggml stores them: trailing ones dropped */
        const int64_t ne_s[2] = {e->n_vals / e->n_counts, e->n_counts}, ne_c[2] = {1, e->n_counts};
        const int nd = e->n_counts > 1 ? 2 : 1;
        char name[128];
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        st = plumb_gguf_writer_add_tensor(w, name, PLUMB_TYPE_F32, nd, ne_s, e->sums);
        snprintf(name, sizeof name, "%s.counts", e->name);
        if (!st) st = plumb_gguf_writer_add_tensor(w, name, PLUMB_TYPE_F32, nd, ne_c, counts[i]);
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.part", path);
    if (!st && (st = plumb_gguf_writer_write(w, tmp))) remove(tmp);
    if (!st && rename(tmp, path)) {
        st = plumb__fail(PLUMB_E_IO, "cannot write %s: %s", path, strerror(errno));
        remove(tmp);
    }
    for (int64_t i = 0; counts && i < im->n_entries; i++) free(counts[i]);
    free(counts);
    plumb_gguf_writer_free(w);
    free(ds);
    free(v);
    return st;
}

plumb_status plumb_imatrix_write_dat(const plumb_imatrix *im, const char *path) {
    const plumb_imatrix_entry **v = sorted(im);
    if (!v) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.part", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(v);
        return plumb__fail(PLUMB_E_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    int32_t n = 0; /* entries with data: those with some count */
    for (int64_t i = 0; i < im->n_entries; i++) {
        bool any = false;
        for (int64_t j = 0; j < v[i]->n_counts; j++) any = any || v[i]->counts[j];
        if (any) v[n++] = v[i];
    }
    fwrite(&n, sizeof n, 1, f);
    float *tmpv = NULL;
    plumb_status st = PLUMB_OK;
    for (int32_t i = 0; i < n && !st; i++) {
        const plumb_imatrix_entry *e = v[i];
        const int32_t len = (int32_t)strlen(e->name), nval = (int32_t)e->n_vals, nmat = (int32_t)e->n_counts;
        int64_t max = 0;
        for (int64_t j = 0; j < e->n_counts; j++) max = e->counts[j] > max ? e->counts[j] : max;
        const int32_t ncall = (int32_t)((max + im->chunk_size - 1) / im->chunk_size); /* rounded up: never 0 */
        fwrite(&len, sizeof len, 1, f);
        fwrite(e->name, 1, (size_t)len, f);
        fwrite(&ncall, sizeof ncall, 1, f);
        fwrite(&nval, sizeof nval, 1, f);
        float *grown = realloc(tmpv, (size_t)nval * sizeof *tmpv);
        if (!grown) {
            st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
            break;
        }
        tmpv = grown;
        for (int32_t j = 0; j < nval; j++) {
            float count = (float)e->counts[j / (nval / nmat)], value = e->sums[j];
            if (count == 0.0f) value = 1.0f, count = 1.0f; /* an expert never routed to */
            tmpv[j] = value / count * (float)ncall;
        }
        fwrite(tmpv, sizeof *tmpv, (size_t)nval, f);
    }
    free(tmpv);
    free(v);
    const char *dataset = im->n_datasets ? im->datasets[im->n_datasets - 1] : "";
    const int32_t dlen = (int32_t)strlen(dataset);
    fwrite(&im->n_chunks, sizeof im->n_chunks, 1, f);
    fwrite(&dlen, sizeof dlen, 1, f);
    fwrite(dataset, 1, (size_t)dlen, f);
    const bool ok = fflush(f) == 0 && !ferror(f);
    const int err = errno;
    if (fclose(f) && ok && !st) st = plumb__fail(PLUMB_E_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (!st && !ok) st = plumb__fail(PLUMB_E_IO, "cannot write %s: %s", tmp, strerror(err));
    if (!st && rename(tmp, path)) st = plumb__fail(PLUMB_E_IO, "cannot write %s: %s", path, strerror(errno));
    if (st) remove(tmp);
    return st;
}
