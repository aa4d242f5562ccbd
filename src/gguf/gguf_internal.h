/* gguf_internal.h — the parsed form of a GGUF file shared by the reader and its accessors.
 * Values are not copied: each entry records where its value lies in the mapping. */
#ifndef PLUMB_GGUF_INTERNAL_H
#define PLUMB_GGUF_INTERNAL_H

#include "plumb.h"

#include <inttypes.h>

typedef struct plumb__gguf_kv {
    char *key;          /* NUL-terminated copy (owned by the file's string list) */
    uint32_t type;      /* plumb_gguf_type */
    uint64_t value_off; /* offset of the value in the file */
    uint32_t arr_type;  /* arrays: element type; PLUMB_GGUF_TYPE_COUNT otherwise */
    uint64_t arr_len;   /* arrays: element count */
    uint64_t arr_off;   /* arrays: offset of the first element */
    uint64_t *str_offs; /* string arrays: offset of each element's length prefix [arr_len] */
} plumb__gguf_kv;

typedef struct plumb__gguf_tensor {
    char *name; /* NUL-terminated copy (owned by the file's string list) */
    int n_dims;
    int64_t ne[PLUMB_GGUF_MAX_DIMS];
    int type;
    uint64_t offset; /* relative to the data section (of the file holding it) */
    uint64_t nbytes;
    uint32_t shard; /* the file holding its data: 0 this one, k > 0 shards[k - 1] (split models) */
} plumb__gguf_tensor;

/* Open-addressing hash of entry indexes by name; slots hold -1 when empty. */
typedef struct plumb__gguf_index {
    int64_t *slots;
    uint64_t cap; /* power of two, at least twice the entries */
} plumb__gguf_index;

struct plumb_gguf {
    char *name; /* path or caller's name, for messages */
    const uint8_t *data;
    uint64_t size;
    void *map_base; /* NULL, or data lies in a mapping of map_size bytes here (file or anonymous) */
    size_t map_size;
    bool file_mapping; /* the mapping is the file's (not a copy read into memory) */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    plumb__gguf_kv *kvs;
    int64_t n_kv;
    size_t cap_kv;
    plumb__gguf_tensor *tensors;
    int64_t n_tensors;
    size_t cap_tensors;
    char **strings; /* every owned name */
    size_t n_strings, cap_strings;
    plumb__gguf_index kv_index, tensor_index;
    /* A split model (gguf_split.c): this is its first file, shards[] the others in order
     * (owned), whose tensors follow this file's own in tensors[] and tensor_index. */
    struct plumb_gguf **shards;
    int n_shards;
};

size_t plumb__gguf_value_size(int type);
uint64_t plumb__gguf_hash(const char *s);
/* Index of the entry whose name (a char* at names + i*stride) equals name, or -1. */
int64_t plumb__gguf_index_find(const plumb__gguf_index *ix, const char *const *names, size_t stride,
                               const char *name);

/* Allocates an empty index sized for n entries. */
plumb_status plumb__gguf_index_build(plumb__gguf_index *ix, int64_t n);
/* Inserts entry idx of names[]; returns the index already holding an equal name (and
 * inserts nothing), or -1 when idx was inserted. */
int64_t plumb__gguf_index_insert(plumb__gguf_index *ix, const char *const *names, size_t stride, int64_t idx);

#endif
