/* quantize_model.h — the pieces behind plumb_quantize_model (include/plumb.h), internal to
 * src/quant: the file types and the per-tensor type rules (quantize_rules.c), and importance
 * matrices (imatrix.c). The model pass itself lives in quantize_model.c. */
#ifndef PLUMB_QUANT_QUANTIZE_MODEL_H
#define PLUMB_QUANT_QUANTIZE_MODEL_H

#include "plumb.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- file types and type rules (quantize_rules.c) ---------------------------------------- */

/* llama.cpp's general.file_type values that plumb writes. */
enum {
    PLUMB_FTYPE_F32 = 0,
    PLUMB_FTYPE_F16 = 1,
    PLUMB_FTYPE_Q4_0 = 2,
    PLUMB_FTYPE_Q4_1 = 3,
    PLUMB_FTYPE_Q8_0 = 7,
    PLUMB_FTYPE_Q5_0 = 8,
    PLUMB_FTYPE_Q5_1 = 9,
    PLUMB_FTYPE_Q2_K = 10,
    PLUMB_FTYPE_Q3_K_S = 11,
    PLUMB_FTYPE_Q3_K_M = 12,
    PLUMB_FTYPE_Q3_K_L = 13,
    PLUMB_FTYPE_Q4_K_S = 14,
    PLUMB_FTYPE_Q4_K_M = 15,
    PLUMB_FTYPE_Q5_K_S = 16,
    PLUMB_FTYPE_Q5_K_M = 17,
    PLUMB_FTYPE_Q6_K = 18,
    PLUMB_FTYPE_Q2_K_S = 21,
    PLUMB_FTYPE_BF16 = 32,
};

/* The tensor type a file type quantizes to by default, or -1 for an unknown file type. */
int plumb__ftype_default_type(int ftype);

/* What the rules need to know of a model (from its metadata). */
typedef struct plumb__qz_model {
    char arch[64];    /* general.architecture */
    int32_t n_layer;  /* <arch>.block_count (0 when absent) */
    int32_t n_head;   /* <arch>.attention.head_count (of layer 0) */
    int32_t n_head_kv; /* <arch>.attention.head_count_kv (of layer 0; n_head when absent) */
    int32_t n_expert; /* <arch>.expert_count (0 when absent) */
} plumb__qz_model;

/* One tensor, in the order the rules see them (plumb__qz_tensor_cmp). */
typedef struct plumb__qz_tensor {
    const char *name;
    int n_dims; /* dimensions up to the last one above 1 (at least 1) */
    int64_t ne[PLUMB_GGUF_MAX_DIMS];
    int type;
} plumb__qz_tensor;

typedef struct plumb__qz_rules {
    int ftype;
    int output_type;     /* -1: by the rules */
    int token_embd_type; /* -1: by the rules */
    bool pure;
    bool has_imatrix;
} plumb__qz_rules;

/* The order llama.cpp processes (and writes) tensors in: by the layer number of a
 * "blk.N." prefix (none counts as -1), then by name (bytewise). A qsort-style result. */
int plumb__qz_tensor_cmp(const char *a, const char *b);

/* Whether the tensor is one llama.cpp quantizes at all (2-D and 3-D weights, not norms,
 * position embeddings and the like). */
bool plumb__qz_allows_quantization(const plumb__qz_tensor *t);

/* The type of each of the n tensors t[] (in plumb__qz_tensor_cmp order) into types[], and
 * whether it needs an importance matrix into needs_imatrix[] (may be NULL). n_fallback (may
 * be NULL) counts tensors whose row length did not fit the chosen type. PLUMB_E_UNSUPPORTED
 * for a file type plumb does not write, PLUMB_E_FORMAT for a tensor name the rules cannot
 * place (a layer number outside the model). */
plumb_status plumb__qz_choose_types(const plumb__qz_model *m, const plumb__qz_rules *r, const plumb__qz_tensor *t,
                                    int64_t n, int *types, bool *needs_imatrix, int *n_fallback);

/* ---- importance matrices (imatrix.c) ------------------------------------------------------ */

typedef struct plumb__imatrix_entry {
    char *name;     /* the weight's tensor name */
    float *values;  /* n importance weights: per column, expert after expert */
    int64_t n;
    int64_t seq;    /* position in the file (settles duplicate names: the last wins) */
} plumb__imatrix_entry;

typedef struct plumb__imatrix {
    plumb__imatrix_entry *entries; /* sorted by name, unique */
    int64_t n_entries;
    char *dataset;       /* the first dataset named in the file, or NULL */
    int32_t chunk_count; /* chunks the statistics were gathered over (0: unknown) */
} plumb__imatrix;

/* Parses an importance matrix from size bytes at data: llama.cpp's imatrix GGUF (tensors
 * "<name>.in_sum2" and "<name>.counts", keys imatrix.datasets/chunk_count/chunk_size) or the
 * legacy .dat layout, and normalizes it as llama-quantize does (sums divided by the counts).
 * `name` is used in messages. Every count and size is checked: PLUMB_E_FORMAT on bad input
 * (including non-finite values). On success *out is owned by the caller
 * (plumb__imatrix_free). */
plumb_status plumb__imatrix_parse(const void *data, size_t size, const char *name, plumb__imatrix *out);
/* plumb__imatrix_parse of a file's contents. */
plumb_status plumb__imatrix_load(const char *path, plumb__imatrix *out);
void plumb__imatrix_free(plumb__imatrix *im);
/* The entry named `name`, or NULL. */
const plumb__imatrix_entry *plumb__imatrix_find(const plumb__imatrix *im, const char *name);

#endif
