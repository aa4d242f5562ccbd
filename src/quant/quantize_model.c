/* quantize_model.c — plumb_quantize_model: one pass over a GGUF model that writes a copy
 * with its weights converted to a file type (the `plumb quantize` command). It does what
 * llama.cpp's llama_model_quantize does, so that the output is the same file byte for byte:
 * the metadata copied in order with general.quantization_version and general.file_type (and
 * the quantize.imatrix.* keys) set at the end, the tensors ordered by layer then name, each
 * given its type by the rules of quantize_rules.c and converted with the quantizers of
 * quantize_ggml.c.
 *
 * Every check that can fail on the input (types, requantizing, the importance matrix and
 * its fit to the model) runs before anything is written. The data then streams: a tensor is
 * converted a slab of rows at a time, its rows split between threads, and written to a
 * temporary file beside the output, renamed into place only once complete and flushed; a
 * failure removes it. Memory stays at a slab's worth, whatever the model's size. */
#include "quant/quantize_model.h"

#include "core/cpu_count.h"
#include "core/error.h"
#include "quant/quantize_ggml.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUANTIZATION_VERSION 2u /* general.quantization_version of the formats written */
#define SLAB_F32_BYTES ((size_t)64 << 20) /* float rows converted at once, per tensor */
#define MAX_THREADS 512

plumb_quantize_params plumb_quantize_default_params(void) {
    return (plumb_quantize_params){
        .ftype = 7, /* Q8_0 */
        .output_tensor_type = -1,
        .token_embedding_type = -1,
    };
}

/* ---- the model's shape -------------------------------------------------------------------- */

/* An integer hyperparameter "<arch>.<suffix>" (the first element of a per-layer array), or
 * dflt when absent or not a non-negative integer that fits. */
static int32_t hparam(const plumb_gguf_t *g, const char *arch, const char *suffix, int32_t dflt) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t i = plumb_gguf_find_key(g, key);
    if (i < 0) return dflt;
    int64_t v;
    plumb_status st = plumb_gguf_kv_type(g, i) == PLUMB_GGUF_ARRAY ? plumb_gguf_arr_int(g, i, 0, &v)
                                                                   : plumb_gguf_kv_int(g, i, &v);
    if (st || v < 0 || v > INT32_MAX) return dflt;
    return (int32_t)v;
}

static void model_info(const plumb_gguf_t *g, plumb__qz_model *m) {
    memset(m, 0, sizeof *m);
    plumb_str arch;
    if (plumb_gguf_get_str(g, "general.architecture", &arch) == PLUMB_OK && arch.len < sizeof m->arch) {
        memcpy(m->arch, arch.ptr, (size_t)arch.len);
        m->arch[arch.len] = '\0';
    }
    m->n_layer = hparam(g, m->arch, "block_count", 0);
    m->n_head = hparam(g, m->arch, "attention.head_count", 0);
    m->n_head_kv = hparam(g, m->arch, "attention.head_count_kv", m->n_head);
    m->n_expert = hparam(g, m->arch, "expert_count", 0);
}

/* Dimensions up to the last one above 1, as ggml counts them (a [640, 1] tensor is 1-D). */
static int dims_of(const int64_t *ne) {
    int n = PLUMB_GGUF_MAX_DIMS;
    while (n > 1 && ne[n - 1] == 1) n--;
    return n;
}

/* ---- one tensor's conversion ----------------------------------------------------------- */

typedef struct job {
    int src_type, dst_type;
    int64_t n_per_row;
    int64_t rows_per_expert;  /* ne[1]: an expert's rows share one imatrix slice */
    const float *imatrix;     /* NULL, or n_per_row weights per expert */
    const uint8_t *src;       /* the slab's source rows */
    size_t src_row_bytes, dst_row_bytes;
    float *f32;               /* [rows][n_per_row] scratch */
    uint8_t *dst;             /* [rows][dst_row_bytes] */
    int64_t first_row;        /* the slab's first row in the tensor */
    int64_t r0, r1;           /* this worker's rows of the slab */
    plumb_status st;
} job;

static void to_f32(int type, const uint8_t *src, float *dst, int64_t n) {
    if (type == PLUMB_TYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    } else if (type == PLUMB_TYPE_F16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = plumb_fp16_to_fp32(h);
        }
    } else if (type == PLUMB_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = plumb_bf16_to_fp32(h);
        }
    } else {
        plumb_status st = plumb_dequantize_row(type, src, dst, n);
        PLUMB_ASSERT(st == PLUMB_OK); /* the type and row length were checked up front */
    }
}

static void *run_job(void *arg) {
    job *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++)
        to_f32(j->src_type, j->src + (size_t)r * j->src_row_bytes, j->f32 + r * j->n_per_row, j->n_per_row);
    /* quantize in runs that stay within one expert, each with its own imatrix slice */
    for (int64_t r = j->r0; r < j->r1;) {
        int64_t global = j->first_row + r;
        int64_t expert = global / j->rows_per_expert;
        int64_t n = (expert + 1) * j->rows_per_expert - global;
        if (n > j->r1 - r) n = j->r1 - r;
        const float *x = j->f32 + r * j->n_per_row;
        uint8_t *y = j->dst + (size_t)r * j->dst_row_bytes;
        if (j->dst_type == PLUMB_TYPE_F32) {
            memcpy(y, x, (size_t)(n * j->n_per_row) * sizeof *x);
        } else {
            const float *w = j->imatrix ? j->imatrix + expert * j->n_per_row : NULL;
            plumb_status st = plumb__quantize_rows(j->dst_type, x, y, n, j->n_per_row, w);
            if (st) {
                j->st = st;
                return NULL;
            }
        }
        r += n;
    }
    return NULL;
}

typedef struct writer {
    FILE *f;
    const char *path; /* the temporary file, for messages */
    uint64_t written;
    plumb_status st;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (w->st || n == 0) return;
    if (fwrite(p, 1, n, w->f) != n)
        w->st = plumb__fail(PLUMB_E_IO, "%s: write failed: %s", w->path, strerror(errno ? errno : EIO));
    else w->written += n;
}

static void pad_to(writer *w, uint64_t alignment) {
    static const uint8_t zeros[256];
    uint64_t pad = (alignment - w->written % alignment) % alignment;
    while (pad && !w->st) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        put(w, zeros, n);
        pad -= n;
    }
}

/* Converts tensor t (ne, rows of n_per_row) from its type to dst_type and writes it.
 * Buffers are grown in *f32 / *out as needed (owned by the caller). */
static plumb_status convert_tensor(writer *w, const plumb_gguf_tensor_info *t, int dst_type, const float *imatrix,
                                   int n_threads, float **f32, size_t *f32_cap, uint8_t **out, size_t *out_cap,
                                   uint64_t *bytes_out) {
    const int64_t n_per_row = t->ne[0];
    const int64_t rows_per_expert = t->ne[1];
    const int64_t nrows = t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t src_rb, dst_rb;
    plumb_status st = plumb_type_row_bytes(t->type, n_per_row, &src_rb);
    if (!st) st = plumb_type_row_bytes(dst_type, n_per_row, &dst_rb);
    if (st) return st;
    *bytes_out = 0;
    if (nrows == 0 || n_per_row == 0) return PLUMB_OK;
    int64_t slab = (int64_t)(SLAB_F32_BYTES / ((size_t)n_per_row * sizeof(float)));
    if (slab < 1) slab = 1;
    if (slab > nrows) slab = nrows;
    size_t need_f32 = (size_t)slab * (size_t)n_per_row, need_out = (size_t)slab * (size_t)dst_rb;
    if (need_f32 > *f32_cap) {
        float *p = realloc(*f32, need_f32 * sizeof *p);
        if (!p) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for %zu floats", t->name, need_f32);
        *f32 = p;
        *f32_cap = need_f32;
    }
    if (need_out > *out_cap) {
        uint8_t *p = realloc(*out, need_out);
        if (!p) return plumb__fail(PLUMB_E_NOMEM, "%s: out of memory for %zu bytes", t->name, need_out);
        *out = p;
        *out_cap = need_out;
    }
    job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    for (int64_t ir = 0; ir < nrows && !w->st; ir += slab) {
        int64_t n = nrows - ir < slab ? nrows - ir : slab;
        int nth = n_threads;
        if (nth > n) nth = (int)n;
        int started = 0;
        for (int k = 0; k < nth; k++) {
            jobs[k] = (job){
                .src_type = t->type,
                .dst_type = dst_type,
                .n_per_row = n_per_row,
                .rows_per_expert = rows_per_expert,
                .imatrix = imatrix,
                .src = (const uint8_t *)t->data + (size_t)ir * src_rb,
                .src_row_bytes = (size_t)src_rb,
                .dst_row_bytes = (size_t)dst_rb,
                .f32 = *f32,
                .dst = *out,
                .first_row = ir,
                .r0 = n * k / nth,
                .r1 = n * (k + 1) / nth,
            };
        }
        for (int k = 1; k < nth; k++) {
            if (pthread_create(&tids[k], NULL, run_job, &jobs[k]) != 0) break;
            started = k;
        }
        run_job(&jobs[0]); /* workers that could not be started run here too */
        for (int k = started + 1; k < nth; k++) run_job(&jobs[k]);
        for (int k = 1; k <= started; k++) pthread_join(tids[k], NULL);
        for (int k = 0; k < nth; k++)
            if (jobs[k].st) return jobs[k].st;
        put(w, *out, (size_t)n * (size_t)dst_rb);
        *bytes_out += (uint64_t)n * dst_rb;
    }
    return w->st;
}

/* ---- the pass --------------------------------------------------------------------------------- */

typedef struct plan_tensor {
    int64_t index; /* in the input */
    plumb__qz_tensor qt;
    int new_type;
    bool needs_imatrix;
    const plumb__imatrix_entry *im; /* the importance weights it is quantized with, or NULL */
} plan_tensor;

static int plan_cmp(const void *a, const void *b) {
    return plumb__qz_tensor_cmp(((const plan_tensor *)a)->qt.name, ((const plan_tensor *)b)->qt.name);
}

static bool is_quantized(int type) { return plumb_type_block_size(type) > 1; }

static bool can_read(int type) {
    return type == PLUMB_TYPE_F32 || type == PLUMB_TYPE_F16 || type == PLUMB_TYPE_BF16 ||
           (is_quantized(type) && type != PLUMB_TYPE_Q8_K);
}

static bool can_write(int type) { return type == PLUMB_TYPE_F32 || plumb__quantize_rows_supports(type); }

static plumb_status check_params(const plumb_quantize_params *p) {
    if (plumb__ftype_default_type(p->ftype) < 0)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "file type %d is not one plumb writes (%s)", p->ftype,
                           plumb_quantize_ftype_list());
    if (p->output_tensor_type >= 0 && !can_write(p->output_tensor_type))
        return plumb__fail(PLUMB_E_UNSUPPORTED, "output tensor type %d is not one plumb writes", p->output_tensor_type);
    if (p->token_embedding_type >= 0 && !can_write(p->token_embedding_type))
        return plumb__fail(PLUMB_E_UNSUPPORTED, "token embedding type %d is not one plumb writes",
                           p->token_embedding_type);
    return PLUMB_OK;
}

/* Plans every tensor: its new type, the checks on converting it, its importance weights. */
static plumb_status plan_tensors(const plumb_gguf_t *g, const char *in, const plumb_quantize_params *p,
                                 const plumb__imatrix *im, plan_tensor *plan, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        plumb_gguf_tensor_info ti;
        plumb_status st = plumb_gguf_tensor(g, i, &ti);
        if (st) return st;
        plan[i].index = i;
        plan[i].qt.name = ti.name;
        plan[i].qt.type = ti.type;
        memcpy(plan[i].qt.ne, ti.ne, sizeof ti.ne);
        plan[i].qt.n_dims = dims_of(ti.ne);
    }
    qsort(plan, (size_t)n, sizeof *plan, plan_cmp);

    plumb__qz_model m;
    model_info(g, &m);
    plumb__qz_rules r = {
        .ftype = p->ftype,
        .output_type = p->output_tensor_type,
        .token_embd_type = p->token_embedding_type,
        .pure = p->pure,
        .has_imatrix = im != NULL,
    };
    plumb__qz_tensor *qt = malloc((size_t)(n ? n : 1) * sizeof *qt);
    int *types = malloc((size_t)(n ? n : 1) * sizeof *types);
    bool *needs = malloc((size_t)(n ? n : 1) * sizeof *needs);
    plumb_status st = PLUMB_OK;
    if (!qt || !types || !needs) st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", in);
    for (int64_t i = 0; !st && i < n; i++) qt[i] = plan[i].qt;
    if (!st) st = plumb__qz_choose_types(&m, &r, qt, n, types, needs, NULL);
    for (int64_t i = 0; !st && i < n; i++) {
        plan[i].new_type = types[i];
        plan[i].needs_imatrix = needs[i];
    }
    free(qt);
    free(types);
    free(needs);
    if (st) return st;

    int64_t looked_up = 0, matched = 0;
    for (int64_t i = 0; i < n; i++) {
        plan_tensor *t = &plan[i];
        const char *name = t->qt.name;
        if (!im && t->needs_imatrix && plumb__qz_allows_quantization(&t->qt))
            return plumb__fail(PLUMB_E_INVALID_ARG, "%s: file type %s needs an importance matrix (--imatrix) for %s",
                               in, plumb_quantize_ftype_name(p->ftype), name);
        if (t->new_type == t->qt.type) continue;
        const char *from = plumb_type_name(t->qt.type), *to = plumb_type_name(t->new_type);
        if (!can_read(t->qt.type))
            return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: tensor %s: cannot convert from type %s", in, name, from);
        if (!can_write(t->new_type))
            return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: tensor %s: cannot quantize to type %s", in, name, to);
        if (t->qt.ne[3] != 1)
            return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: tensor %s: cannot convert a 4-D tensor", in, name);
        if (t->qt.ne[0] % plumb_type_block_size(t->new_type) != 0)
            return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: tensor %s: rows of %" PRId64 " do not fit type %s (blocks of %" PRId64 ")",
                               in, name, t->qt.ne[0], to, plumb_type_block_size(t->new_type));
        if (is_quantized(t->qt.type) && !p->allow_requantize)
            return plumb__fail(PLUMB_E_UNSUPPORTED,
                               "%s: tensor %s is already quantized (%s); converting it to %s loses precision "
                               "twice over: quantize from an F32/F16/BF16 model, or pass --allow-requantize",
                               in, name, from, to);
        if (im) {
            looked_up++;
            const plumb__imatrix_entry *e = plumb__imatrix_find(im, name);
            if (e) {
                matched++;
                bool token_embd = strcmp(name, "token_embd.weight") == 0 ||
                                  strcmp(name, "per_layer_token_embd.weight") == 0;
                if (e->n == t->qt.ne[0] * t->qt.ne[2]) t->im = e;
                else if (!token_embd)
                    return plumb__fail(PLUMB_E_FORMAT,
                                       "importance matrix %s: %" PRId64 " values for %s, which has %" PRId64
                                       " columns x %" PRId64 " experts: the matrix is for another model",
                                       p->imatrix, e->n, name, t->qt.ne[0], t->qt.ne[2]);
            }
            if (!t->im && t->needs_imatrix)
                return plumb__fail(PLUMB_E_FORMAT, "importance matrix %s has no entry for %s, which %s needs", p->imatrix,
                                   name, to);
        }
    }
    if (im && looked_up > 0 && matched == 0)
        return plumb__fail(PLUMB_E_FORMAT, "importance matrix %s has no entry for any tensor of %s: it is for another model",
                           p->imatrix, in);
    return PLUMB_OK;
}

static bool is_replaced_key(const char *key, const plumb__imatrix *im) {
    static const char *const always[] = {"general.quantization_version", "general.file_type", "split.no", "split.count",
                                         "split.tensors.count"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (strcmp(key, always[i]) == 0) return true;
    if (im) {
        if (strcmp(key, "quantize.imatrix.file") == 0 || strcmp(key, "quantize.imatrix.entries_count") == 0) return true;
        if (im->dataset && strcmp(key, "quantize.imatrix.dataset") == 0) return true;
        if (im->chunk_count > 0 && strcmp(key, "quantize.imatrix.chunks_count") == 0) return true;
    }
    return false;
}

/* A string value as llama-quantize records it: at most 127 bytes. */
static plumb_status set_short_str(plumb_gguf_writer_t *w, const char *key, const char *s) {
    size_t n = strlen(s);
    return plumb_gguf_writer_set_str(w, key, s, n > 127 ? 127 : n);
}

/* The output's metadata and tensor infos (data added later, streamed). */
static plumb_status build_header(const plumb_gguf_t *g, const plumb_quantize_params *p, const plumb__imatrix *im,
                                 const plan_tensor *plan, int64_t n, plumb_gguf_writer_t *w, uint64_t *alignment) {
    plumb_status st = PLUMB_OK;
    *alignment = PLUMB_GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; !st && i < plumb_gguf_kv_count(g); i++) {
        const char *key = plumb_gguf_kv_key(g, i);
        if (is_replaced_key(key, im)) continue;
        if (strcmp(key, "general.alignment") == 0) {
            /* the reader has checked it is a u32 power of two; the data follows it */
            *alignment = plumb_gguf_alignment(g);
            st = plumb_gguf_writer_set_alignment(w, (uint32_t)*alignment);
        } else {
            st = plumb_gguf_writer_copy_kv(w, g, i);
        }
    }
    uint32_t qv = QUANTIZATION_VERSION, ft = (uint32_t)p->ftype;
    if (!st) st = plumb_gguf_writer_set(w, "general.quantization_version", PLUMB_GGUF_U32, &qv);
    if (!st) st = plumb_gguf_writer_set(w, "general.file_type", PLUMB_GGUF_U32, &ft);
    if (!st && im) {
        uint32_t entries = (uint32_t)im->n_entries, chunks = (uint32_t)im->chunk_count;
        st = set_short_str(w, "quantize.imatrix.file", p->imatrix);
        if (!st && im->dataset) st = set_short_str(w, "quantize.imatrix.dataset", im->dataset);
        if (!st) st = plumb_gguf_writer_set(w, "quantize.imatrix.entries_count", PLUMB_GGUF_U32, &entries);
        if (!st && im->chunk_count > 0) st = plumb_gguf_writer_set(w, "quantize.imatrix.chunks_count", PLUMB_GGUF_U32, &chunks);
    }
    for (int64_t i = 0; !st && i < n; i++)
        st = plumb_gguf_writer_add_tensor(w, plan[i].qt.name, plan[i].new_type, plan[i].qt.n_dims, plan[i].qt.ne, NULL);
    return st;
}

/* Whether a and b name the same existing file. */
static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Streams the data of every tensor into w (after the header). */
static plumb_status write_data(writer *w, const plumb_gguf_t *g, const plumb_quantize_params *p, const plan_tensor *plan,
                               int64_t n, uint64_t alignment, int n_threads) {
    float *f32 = NULL;
    uint8_t *out = NULL;
    size_t f32_cap = 0, out_cap = 0;
    plumb_status st = PLUMB_OK;
    for (int64_t i = 0; !st && i < n; i++) {
        const plan_tensor *t = &plan[i];
        plumb_gguf_tensor_info ti;
        if ((st = plumb_gguf_tensor(g, t->index, &ti))) break;
        uint64_t bytes_to = ti.nbytes;
        if (t->new_type == ti.type) {
            put(w, ti.data, (size_t)ti.nbytes);
            st = w->st;
        } else {
            st = convert_tensor(w, &ti, t->new_type, t->im ? t->im->values : NULL, n_threads, &f32, &f32_cap, &out,
                                &out_cap, &bytes_to);
        }
        pad_to(w, alignment);
        if (!st) st = w->st;
        if (!st && p->progress) {
            plumb_quantize_progress pr = {
                .index = i + 1,
                .count = n,
                .name = ti.name,
                .n_dims = t->qt.n_dims,
                .type_from = ti.type,
                .type_to = t->new_type,
                .bytes_from = ti.nbytes,
                .bytes_to = bytes_to,
            };
            memcpy(pr.ne, ti.ne, sizeof pr.ne);
            p->progress(&pr, p->progress_user);
        }
    }
    free(f32);
    free(out);
    return st;
}

plumb_status plumb_quantize_model(const char *in, const char *out, const plumb_quantize_params *params) {
    if (!in || !out || !params) return plumb__fail(PLUMB_E_INVALID_ARG, "quantize: NULL argument");
    plumb_status st = check_params(params);
    if (st) return st;
    if (same_file(in, out))
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: the output would overwrite the input", out);

    plumb_gguf_t *g = NULL;
    plumb__imatrix im = {0};
    bool have_im = false;
    plan_tensor *plan = NULL;
    plumb_gguf_writer_t *w = NULL;
    void *header = NULL;
    size_t header_len = 0;
    char *tmp = NULL;
    int fd = -1;
    FILE *f = NULL;

    if ((st = plumb_gguf_open(in, &g))) goto done;
    if (params->imatrix) {
        if ((st = plumb__imatrix_load(params->imatrix, &im))) goto done;
        have_im = true;
    }
    int64_t n = plumb_gguf_tensor_count(g);
    plan = calloc((size_t)(n ? n : 1), sizeof *plan);
    if (!plan) {
        st = plumb__fail(PLUMB_E_NOMEM, "%s: out of memory", in);
        goto done;
    }
    if ((st = plan_tensors(g, in, params, have_im ? &im : NULL, plan, n))) goto done;
    if ((st = plumb_gguf_writer_create(&w))) goto done;
    uint64_t alignment;
    if ((st = build_header(g, params, have_im ? &im : NULL, plan, n, w, &alignment))) goto done;
    if ((st = plumb_gguf_writer_header(w, &header, &header_len))) goto done;

    int n_threads = params->n_threads;
    if (n_threads <= 0) {
        plumb_cpu_count cc;
        plumb__cpu_count(&cc);
        n_threads = cc.n;
    }
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;

    size_t out_len = strlen(out);
    tmp = malloc(out_len + sizeof ".tmp-XXXXXX");
    if (!tmp) {
        st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
        goto done;
    }
    memcpy(tmp, out, out_len);
    memcpy(tmp + out_len, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    fd = mkstemp(tmp);
    if (fd < 0) {
        st = plumb__fail(PLUMB_E_IO, "%s: cannot create the output: %s", out, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    (void)fchmod(fd, 0644);
    f = fdopen(fd, "wb");
    if (!f) {
        st = plumb__fail(PLUMB_E_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    writer wr = {.f = f, .path = out};
    put(&wr, header, header_len);
    st = wr.st ? wr.st : write_data(&wr, g, params, plan, n, alignment, n_threads);
    if (!st && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = plumb__fail(PLUMB_E_IO, "%s: write failed: %s", out, strerror(errno));
    if (fclose(f) != 0 && !st) st = plumb__fail(PLUMB_E_IO, "%s: write failed: %s", out, strerror(errno));
    f = NULL;
    if (!st && rename(tmp, out) != 0) st = plumb__fail(PLUMB_E_IO, "%s: cannot rename into place: %s", out, strerror(errno));
    if (!st) {
        free(tmp);
        tmp = NULL;
    }

done:
    if (f) fclose(f);
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(header);
    plumb_gguf_writer_free(w);
    free(plan);
    if (have_im) plumb__imatrix_free(&im);
    plumb_gguf_free(g);
    return st;
}
