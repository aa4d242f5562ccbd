/* gguf_split.h — models sharded over several GGUF files, as llama.cpp's gguf-split and
 * gguf-py's writer lay them out: every file carries split.no (u16, its 0-based place),
 * split.count (u16, the number of files) and split.tensors.count (i32, the tensors of all
 * files together); the first file holds all the other metadata, and each file its share of the
 * tensors. The files are merged into one plumb_gguf_t: the first file's metadata and the
 * tensors of every file (each with data in its own file), so the model code looks weights up
 * as it does in a single file. */
#ifndef PLUMB_GGUF_SPLIT_H
#define PLUMB_GGUF_SPLIT_H

#include "plumb.h"

/* The largest split.count (the key is a u16). */
#define PLUMB_SPLIT_MAX 65535

/* Opens the model file at path (flags as plumb_gguf_open_ex). A file with no split.count, or
 * one of at most 1, is opened exactly as plumb_gguf_open_ex opens it. The first shard of a
 * split model, named <prefix>-00001-of-<count>.gguf (5 digits each, llama.cpp's
 * "%s-%05d-of-%05d.gguf"), is opened with its siblings <prefix>-0000k-of-<count>.gguf and
 * merged (plumb__gguf_open_shards' checks). Another shard is PLUMB_E_INVALID_ARG, with a
 * message naming the first shard; a first shard whose name does not follow the convention is
 * PLUMB_E_FORMAT. On success *out owns every file. */
plumb_status plumb__gguf_open_model(const char *path, unsigned flags, plumb_gguf_t **out);

/* Opens the n files of a split model from paths[0..n), in order, whatever their names (n 1
 * and a file that is not split: plumb_gguf_open_ex). Checks: paths[0] has split.no 0 and
 * split.count n (else PLUMB_E_INVALID_ARG: the list does not match the files); every other
 * file has split.no equal to its place and the same split.count (else PLUMB_E_FORMAT); the
 * files together hold split.tensors.count tensors and no tensor name twice (PLUMB_E_FORMAT).
 * A file that cannot be read or parsed fails as plumb_gguf_open_ex does. Every message names a
 * file. paths are borrowed for the call. */
plumb_status plumb__gguf_open_shards(const char *const *paths, int n, unsigned flags, plumb_gguf_t **out);

/* The number of files g spans (1 unless it is a merged split model). */
int plumb__gguf_n_files(const plumb_gguf_t *g);
/* The bytes of all the files g spans. */
uint64_t plumb__gguf_total_size(const plumb_gguf_t *g);

/* Writes "<prefix>-<no + 1>-of-<count>.gguf" (5-digit numbers) into buf[cap]: the name of
 * shard no (0-based) of count, llama.cpp's llama_split_path. Returns its length, or 0 when it
 * does not fit. */
size_t plumb__gguf_split_path(char *buf, size_t cap, const char *prefix, size_t prefix_len, int no, int count);
/* The length of the prefix of path when path names shard no (0-based) of count by the
 * convention above and the prefix is not empty (llama.cpp's llama_split_prefix), else 0. */
size_t plumb__gguf_split_prefix(const char *path, int no, int count);

#endif
