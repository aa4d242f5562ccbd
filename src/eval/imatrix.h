/* imatrix.h — the importance matrix, as llama.cpp's llama-imatrix collects and stores it: for
 * every weight matrix a model multiplies activations with, the sum over the tokens seen of
 * each input column's squared activation, and how many activation rows were added.
 *
 * Collected (plumb_imatrix_observe, a scheduler observer) from the MUL_MAT nodes whose weight
 * is a layer's ("blk.*"; "output.weight" too with process_output) and that multiply at least
 * 16 rows, and from every MUL_MAT_ID node (mixture of experts: per expert, the rows routed to
 * it, in llama.cpp's order: slot by slot, token by token).
 *
 * Files: the GGUF form ("<name>.in_sum2" F32 [n_cols, n_mat] and "<name>.counts" F32 [1, n_mat]
 * per weight, names sorted; general.type "imatrix", imatrix.datasets, imatrix.chunk_count,
 * imatrix.chunk_size) and the legacy .dat form (i32 n_entries; per entry, names sorted: i32
 * length, the name, i32 ncall, i32 n_values, the f32 values sum / count * ncall; then i32
 * chunks and the i32-length-prefixed dataset name), both written aside and renamed when
 * complete; both read back and added to what is collected (plumb_imatrix_load). */
#ifndef PLUMB_EVAL_IMATRIX_H
#define PLUMB_EVAL_IMATRIX_H

#include "core/graph.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct plumb_imatrix_entry {
    char *name;        /* the weight's name ("blk.0.attn_q.weight") */
    float *sums;       /* [n_vals]: n_counts matrices of n_vals / n_counts columns */
    int64_t n_vals;
    int64_t *counts;   /* [n_counts]: rows added, per matrix (1: one count for all) */
    int64_t n_counts;
} plumb_imatrix_entry;

typedef struct plumb_imatrix {
    plumb_imatrix_entry *entries; /* in the order first seen */
    int64_t n_entries, cap_entries;
    int32_t chunk_size;   /* tokens per chunk (-c) */
    int32_t n_chunks;     /* chunks the sums cover, as llama-imatrix counts them */
    bool process_output;  /* collect output.weight too */
    char **datasets;      /* the texts of the files read, then the one this run reads */
    int32_t n_datasets;
    uint8_t *scratch;     /* host copies of a node's sources (grown as needed) */
    size_t scratch_cap;
} plumb_imatrix;

/* An empty collector for chunks of chunk_size tokens. */
void plumb_imatrix_init(plumb_imatrix *im, int32_t chunk_size, bool process_output);
void plumb_imatrix_free(plumb_imatrix *im);

/* The observer (plumb_sched_observer; user is the plumb_imatrix): 1 for a node it collects,
 * then, when ready, adds its activations. PLUMB_E_RANGE for non-finite sums or a weight whose
 * shape changed, PLUMB_E_NOMEM. */
int plumb_imatrix_observe(const plumb_tensor *node, bool ready, void *user);

/* Appends a dataset name (the text file read), copied. */
plumb_status plumb_imatrix_add_dataset(plumb_imatrix *im, const char *name);

/* Reads an imatrix file (GGUF, else the legacy form) and adds its sums, counts and datasets
 * to im, as llama-imatrix --in-file does (legacy values times chunk_size). PLUMB_E_FORMAT for
 * a file that is neither or does not match what im holds, PLUMB_E_IO. */
plumb_status plumb_imatrix_load(plumb_imatrix *im, const char *path);

/* Writes im to path in the GGUF (or legacy .dat) form: into path.part, renamed to path when
 * complete; on failure nothing is left and an existing path is untouched. PLUMB_E_IO. */
plumb_status plumb_imatrix_write_gguf(const plumb_imatrix *im, const char *path);
plumb_status plumb_imatrix_write_dat(const plumb_imatrix *im, const char *path);

#endif
