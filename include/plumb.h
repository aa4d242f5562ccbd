/* plumb.h — the public interface of libplumb, a local LLM inference engine.
 *
 * This is the only header the plumb command, the server and outside users include.
 * Conventions:
 *   - functions are named plumb_<module>_<verb>;
 *   - every fallible call returns a plumb_status: PLUMB_OK (0) or a negative code; details
 *     (which file, field or offset) are in plumb_last_error() on the calling thread;
 *   - objects are opaque (plumb_x_t) with a create/open and a free; whoever creates frees;
 *   - pointers handed out by an object are borrowed and stay valid until that object is freed.
 * The library never exits the process and never aborts on bad input.
 */
#ifndef PLUMB_H
#define PLUMB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PLUMB_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define PLUMB_API __attribute__((visibility("default")))
#else
#define PLUMB_API
#endif

/* ---------------------------------------------------------------------------------------- */
/* Status codes                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* X(name, value, message): one table gives every status its name and message. */
#define PLUMB_STATUS_LIST(X)                                                    \
    X(PLUMB_OK, 0, "success")                                                   \
    X(PLUMB_E_INVALID_ARG, -1, "invalid argument")                              \
    X(PLUMB_E_NOMEM, -2, "out of memory")                                       \
    X(PLUMB_E_IO, -3, "input/output error")                                     \
    X(PLUMB_E_FORMAT, -4, "malformed file")                                     \
    X(PLUMB_E_UNSUPPORTED, -5, "unsupported feature")                           \
    X(PLUMB_E_NOT_FOUND, -6, "not found")                                       \
    X(PLUMB_E_TYPE, -7, "type mismatch")                                        \
    X(PLUMB_E_RANGE, -8, "value out of range")                                 \
    X(PLUMB_E_DEVICE, -9, "device unavailable")

typedef enum plumb_status {
#define PLUMB_STATUS_ENUM_(name, value, msg) name = value,
    PLUMB_STATUS_LIST(PLUMB_STATUS_ENUM_)
#undef PLUMB_STATUS_ENUM_
} plumb_status;

/* "PLUMB_E_FORMAT" for PLUMB_E_FORMAT; "PLUMB_E_UNKNOWN" for a value not in the table. */
PLUMB_API const char *plumb_status_name(plumb_status st);
/* A short human message for the code ("malformed file"). Never NULL. */
PLUMB_API const char *plumb_status_message(plumb_status st);
/* The detail of the last failure on this thread ("model.gguf: offset 24: ..."), or "". The
 * string is owned by the library and valid until the next failing call on this thread. */
PLUMB_API const char *plumb_last_error(void);

/* ---------------------------------------------------------------------------------------- */
/* Version and CPU features                                                                 */
/* ---------------------------------------------------------------------------------------- */

PLUMB_API const char *plumb_version(void);

typedef struct plumb_cpu_features {
    bool sse3, ssse3, sse41, sse42, avx, f16c, fma, avx2, bmi2;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16, avx512fp16, avx512vbmi;
    bool avxvnni, amx_tile, amx_int8;
    char vendor[13];
    char brand[49];
} plumb_cpu_features;

/* Features of the CPU running this process, detected once with cpuid (all false when not
 * on x86). The returned pointer is static. */
PLUMB_API const plumb_cpu_features *plumb_cpu_get(void);
/* Space-separated list of present features ("AVX2 FMA AVX512F ..."), written into buf
 * (always NUL-terminated when size > 0). Returns buf. */
PLUMB_API char *plumb_cpu_describe(char *buf, size_t size);

/* ---------------------------------------------------------------------------------------- */
/* Tensor types                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* Ids as stored in GGUF files. */
typedef enum plumb_type {
    PLUMB_TYPE_F32 = 0,
    PLUMB_TYPE_F16 = 1,
    PLUMB_TYPE_Q4_0 = 2,
    PLUMB_TYPE_Q4_1 = 3,
    PLUMB_TYPE_Q5_0 = 6,
    PLUMB_TYPE_Q5_1 = 7,
    PLUMB_TYPE_Q8_0 = 8,
    PLUMB_TYPE_Q2_K = 10,
    PLUMB_TYPE_Q3_K = 11,
    PLUMB_TYPE_Q4_K = 12,
    PLUMB_TYPE_Q5_K = 13,
    PLUMB_TYPE_Q6_K = 14,
    PLUMB_TYPE_Q8_K = 15,
    PLUMB_TYPE_BF16 = 30,
    PLUMB_TYPE_COUNT = 31 /* one past the largest id; not every id below it is a type */
} plumb_type;

/* true when id names a type plumb knows (has traits for). */
PLUMB_API bool plumb_type_is_known(int id);
/* "Q4_K"; NULL for an unknown id. */
PLUMB_API const char *plumb_type_name(int id);
/* The type whose name is `name` (case-insensitive), or -1. */
PLUMB_API int plumb_type_from_name(const char *name);
/* Elements per block (1 for F32/F16/BF16); 0 for an unknown id. */
PLUMB_API int64_t plumb_type_block_size(int id);
/* Bytes per block; 0 for an unknown id. */
PLUMB_API size_t plumb_type_block_bytes(int id);
/* Bytes of a row of n elements into *out. PLUMB_E_RANGE when n is negative, not a multiple
 * of the block size, or the size overflows; PLUMB_E_UNSUPPORTED for an unknown id. */
PLUMB_API plumb_status plumb_type_row_bytes(int id, int64_t n, uint64_t *out);

/* Dequantize n elements (a multiple of the block size) from src into dst (scalar reference). */
PLUMB_API plumb_status plumb_dequantize_row(int id, const void *src, float *dst, int64_t n);
/* Quantize n elements (a multiple of the block size) from src into dst, which holds
 * plumb_type_row_bytes(id, n) bytes (scalar reference). */
PLUMB_API plumb_status plumb_quantize_row(int id, const float *src, void *dst, int64_t n);

/* IEEE half and bfloat16 conversions (round to nearest even; subnormals, inf and NaN kept). */
PLUMB_API float plumb_fp16_to_fp32(uint16_t h);
PLUMB_API uint16_t plumb_fp32_to_fp16(float f);
PLUMB_API float plumb_bf16_to_fp32(uint16_t h);
PLUMB_API uint16_t plumb_fp32_to_bf16(float f);

/* ---------------------------------------------------------------------------------------- */
/* GGUF files                                                                               */
/* ---------------------------------------------------------------------------------------- */

/* Metadata value types as stored in GGUF. */
typedef enum plumb_gguf_type {
    PLUMB_GGUF_U8 = 0,
    PLUMB_GGUF_I8 = 1,
    PLUMB_GGUF_U16 = 2,
    PLUMB_GGUF_I16 = 3,
    PLUMB_GGUF_U32 = 4,
    PLUMB_GGUF_I32 = 5,
    PLUMB_GGUF_F32 = 6,
    PLUMB_GGUF_BOOL = 7,
    PLUMB_GGUF_STRING = 8,
    PLUMB_GGUF_ARRAY = 9,
    PLUMB_GGUF_U64 = 10,
    PLUMB_GGUF_I64 = 11,
    PLUMB_GGUF_F64 = 12,
    PLUMB_GGUF_TYPE_COUNT = 13
} plumb_gguf_type;

/* "u32", "string", ...; "?" for an unknown value. */
PLUMB_API const char *plumb_gguf_type_name(int type);

/* A string inside a GGUF file: not NUL-terminated; borrowed from the file. */
typedef struct plumb_str {
    const char *ptr;
    uint64_t len;
} plumb_str;

typedef struct plumb_gguf plumb_gguf_t;

#define PLUMB_GGUF_MAX_DIMS 4
#define PLUMB_GGUF_DEFAULT_ALIGNMENT 32

typedef struct plumb_gguf_tensor_info {
    const char *name; /* NUL-terminated, borrowed */
    int n_dims;
    int64_t ne[PLUMB_GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims are 1 */
    int type;                        /* a plumb_type id */
    uint64_t offset;                 /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* into the mapping, borrowed */
} plumb_gguf_tensor_info;

/* Open and validate a GGUF file (v2 or v3) by mapping it read-only. Every count, size,
 * offset and type is checked; a bad file gives PLUMB_E_FORMAT (or _UNSUPPORTED for a
 * version or type plumb does not read) and a plumb_last_error() naming the file, the
 * offset or field, and what is wrong. On success *out owns the mapping. */
PLUMB_API plumb_status plumb_gguf_open(const char *path, plumb_gguf_t **out);
/* Read the whole file into memory (anonymous, huge pages where the kernel gives them) instead
 * of mapping it: faster to stream weights from, at the cost of that memory and of reading the
 * file at open. Falls back to mapping when the file does not fit in the memory available
 * (MemAvailable) with room to spare, or the memory cannot be had. */
#define PLUMB_GGUF_OPEN_READ 1u
/* As plumb_gguf_open, with PLUMB_GGUF_OPEN_* flags. */
PLUMB_API plumb_status plumb_gguf_open_ex(const char *path, unsigned flags, plumb_gguf_t **out);
/* Whether the data is the file's own mapping (false: read into memory, or bytes in memory). */
PLUMB_API bool plumb_gguf_is_file_mapping(const plumb_gguf_t *g);
/* As plumb_gguf_open over bytes in memory. `data` is borrowed and must outlive the object;
 * `name` is used in messages. */
PLUMB_API plumb_status plumb_gguf_open_memory(const void *data, size_t size, const char *name,
                                              plumb_gguf_t **out);
PLUMB_API void plumb_gguf_free(plumb_gguf_t *g);

PLUMB_API uint32_t plumb_gguf_version(const plumb_gguf_t *g);
PLUMB_API uint64_t plumb_gguf_file_size(const plumb_gguf_t *g);
PLUMB_API uint64_t plumb_gguf_alignment(const plumb_gguf_t *g);
PLUMB_API uint64_t plumb_gguf_data_offset(const plumb_gguf_t *g);

/* Metadata entries, in file order. */
PLUMB_API int64_t plumb_gguf_kv_count(const plumb_gguf_t *g);
/* Index of `key`, or -1. */
PLUMB_API int64_t plumb_gguf_find_key(const plumb_gguf_t *g, const char *key);
PLUMB_API const char *plumb_gguf_kv_key(const plumb_gguf_t *g, int64_t i);
PLUMB_API plumb_gguf_type plumb_gguf_kv_type(const plumb_gguf_t *g, int64_t i);
/* For an array entry: its element type and length (0 and PLUMB_GGUF_TYPE_COUNT otherwise). */
PLUMB_API plumb_gguf_type plumb_gguf_kv_array_type(const plumb_gguf_t *g, int64_t i);
PLUMB_API uint64_t plumb_gguf_kv_array_len(const plumb_gguf_t *g, int64_t i);

/* Scalar values of entry i (or array element j of entry i with the _arr_ forms).
 * _int accepts every integer type (and bool), _float every float and integer type.
 * PLUMB_E_TYPE when the stored type does not fit, PLUMB_E_RANGE for an index past the end. */
PLUMB_API plumb_status plumb_gguf_kv_int(const plumb_gguf_t *g, int64_t i, int64_t *out);
PLUMB_API plumb_status plumb_gguf_kv_uint(const plumb_gguf_t *g, int64_t i, uint64_t *out);
PLUMB_API plumb_status plumb_gguf_kv_float(const plumb_gguf_t *g, int64_t i, double *out);
PLUMB_API plumb_status plumb_gguf_kv_bool(const plumb_gguf_t *g, int64_t i, bool *out);
PLUMB_API plumb_status plumb_gguf_kv_str(const plumb_gguf_t *g, int64_t i, plumb_str *out);
PLUMB_API plumb_status plumb_gguf_arr_int(const plumb_gguf_t *g, int64_t i, uint64_t j, int64_t *out);
PLUMB_API plumb_status plumb_gguf_arr_uint(const plumb_gguf_t *g, int64_t i, uint64_t j, uint64_t *out);
PLUMB_API plumb_status plumb_gguf_arr_float(const plumb_gguf_t *g, int64_t i, uint64_t j, double *out);
PLUMB_API plumb_status plumb_gguf_arr_bool(const plumb_gguf_t *g, int64_t i, uint64_t j, bool *out);
PLUMB_API plumb_status plumb_gguf_arr_str(const plumb_gguf_t *g, int64_t i, uint64_t j, plumb_str *out);
/* Raw little-endian bytes of a numeric array's elements (unaligned; borrowed). */
PLUMB_API plumb_status plumb_gguf_arr_data(const plumb_gguf_t *g, int64_t i, const void **out);

/* Typed getters by key: PLUMB_E_NOT_FOUND when the key is absent, PLUMB_E_TYPE when its
 * type does not fit, PLUMB_E_RANGE when the value does not fit the output. get_count accepts
 * any non-negative integer type, as counts in GGUF files are stored in many widths. */
PLUMB_API plumb_status plumb_gguf_get_u32(const plumb_gguf_t *g, const char *key, uint32_t *out);
PLUMB_API plumb_status plumb_gguf_get_i64(const plumb_gguf_t *g, const char *key, int64_t *out);
PLUMB_API plumb_status plumb_gguf_get_count(const plumb_gguf_t *g, const char *key, uint64_t *out);
PLUMB_API plumb_status plumb_gguf_get_f32(const plumb_gguf_t *g, const char *key, float *out);
PLUMB_API plumb_status plumb_gguf_get_bool(const plumb_gguf_t *g, const char *key, bool *out);
PLUMB_API plumb_status plumb_gguf_get_str(const plumb_gguf_t *g, const char *key, plumb_str *out);

/* Tensors, in file order. */
PLUMB_API int64_t plumb_gguf_tensor_count(const plumb_gguf_t *g);
PLUMB_API int64_t plumb_gguf_find_tensor(const plumb_gguf_t *g, const char *name);
PLUMB_API plumb_status plumb_gguf_tensor(const plumb_gguf_t *g, int64_t i, plumb_gguf_tensor_info *out);

/* GGUF writer: collects metadata and tensors, then writes a v3 file. Keys and values are
 * copied; tensor data is borrowed until plumb_gguf_writer_write returns (NULL data is for a
 * caller that writes the data itself after plumb_gguf_writer_header). Adding a key or a
 * tensor name twice is PLUMB_E_INVALID_ARG. */
typedef struct plumb_gguf_writer plumb_gguf_writer_t;

PLUMB_API plumb_status plumb_gguf_writer_create(plumb_gguf_writer_t **out);
PLUMB_API void plumb_gguf_writer_free(plumb_gguf_writer_t *w);
/* A scalar of any non-string, non-array type; `value` points at that type's C value
 * (bool as one byte 0/1). */
PLUMB_API plumb_status plumb_gguf_writer_set(plumb_gguf_writer_t *w, const char *key,
                                             plumb_gguf_type type, const void *value);
PLUMB_API plumb_status plumb_gguf_writer_set_str(plumb_gguf_writer_t *w, const char *key,
                                                 const char *value, size_t len);
/* An array of n scalars of elem_type stored contiguously at `data`. */
PLUMB_API plumb_status plumb_gguf_writer_set_arr(plumb_gguf_writer_t *w, const char *key,
                                                 plumb_gguf_type elem_type, const void *data,
                                                 uint64_t n);
PLUMB_API plumb_status plumb_gguf_writer_set_arr_str(plumb_gguf_writer_t *w, const char *key,
                                                     const plumb_str *items, uint64_t n);
/* Sets general.alignment too. Must be a power of two. */
PLUMB_API plumb_status plumb_gguf_writer_set_alignment(plumb_gguf_writer_t *w, uint32_t alignment);
PLUMB_API plumb_status plumb_gguf_writer_add_tensor(plumb_gguf_writer_t *w, const char *name,
                                                    int type, int n_dims, const int64_t *ne,
                                                    const void *data);
PLUMB_API plumb_status plumb_gguf_writer_write(plumb_gguf_writer_t *w, const char *path);
/* Copies entry i of g (key, type and value, arrays included) into w, as the writer's next
 * entry. PLUMB_E_INVALID_ARG when w already has the key or i is out of range. */
PLUMB_API plumb_status plumb_gguf_writer_copy_kv(plumb_gguf_writer_t *w, const plumb_gguf_t *g, int64_t i);
/* For writers that stream tensor data themselves (tensors added with data NULL, which
 * plumb_gguf_writer_write refuses): the header, tensor infos and the padding up to the
 * aligned data section, in a new buffer of *len bytes (the caller frees). The data of tensor
 * k then starts at its offset in the order added, each padded to the alignment. */
PLUMB_API plumb_status plumb_gguf_writer_header(const plumb_gguf_writer_t *w, void **out, size_t *len);

/* ---------------------------------------------------------------------------------------- */
/* Quantizing model files (plumb quantize)                                                  */
/* ---------------------------------------------------------------------------------------- */

/* File types: the values of general.file_type, with llama-quantize's names ("Q4_K_M", "Q8_0",
 * "F16"; "Q4_K", "Q3_K" and "Q5_K" are aliases of their _M mixture). A file type names a
 * default tensor type and, for the mixtures, the rules that keep some tensors at higher
 * precision (llama.cpp's, by architecture and layer position). */
/* The file type named `name` (case-insensitive), or -1. */
PLUMB_API int plumb_quantize_ftype_from_name(const char *name);
/* The name of file type ftype ("Q4_K_M"), or NULL for one plumb does not write. */
PLUMB_API const char *plumb_quantize_ftype_name(int ftype);
/* Every name plumb_quantize_ftype_from_name accepts, comma-separated (static). */
PLUMB_API const char *plumb_quantize_ftype_list(void);

/* One tensor written, for the progress callback. Pointers are borrowed for the call. */
typedef struct plumb_quantize_progress {
    int64_t index, count; /* 1-based index of this tensor; tensors in all */
    const char *name;
    int n_dims;
    int64_t ne[PLUMB_GGUF_MAX_DIMS];
    int type_from, type_to;           /* plumb_type ids */
    uint64_t bytes_from, bytes_to;    /* the tensor's data before and after */
} plumb_quantize_progress;

typedef void (*plumb_quantize_progress_fn)(const plumb_quantize_progress *p, void *user);

typedef struct plumb_quantize_params {
    int ftype;                /* a file type (plumb_quantize_ftype_from_name) */
    int output_tensor_type;   /* output.weight's type (a plumb_type id); -1: by the rules */
    int token_embedding_type; /* token_embd.weight's type; -1: by the rules */
    bool pure;                /* every quantized tensor of the default type, no mixture rules */
    bool allow_requantize;    /* allow converting tensors that are already quantized */
    const char *imatrix;      /* importance matrix file (llama.cpp's imatrix GGUF or legacy
                                 .dat), or NULL; recorded as given in quantize.imatrix.file */
    int32_t n_threads;        /* <= 0: the CPUs this process may use */
    plumb_quantize_progress_fn progress; /* NULL, or called after each tensor is written */
    void *progress_user;
} plumb_quantize_params;

/* Q8_0, no overrides, no imatrix, all CPUs, no callback. */
PLUMB_API plumb_quantize_params plumb_quantize_default_params(void);

/* Writes the model `in` with its tensors converted as llama.cpp's llama_model_quantize would
 * (the same bytes: metadata copied with general.quantization_version and general.file_type
 * set, tensors ordered by layer then name, the same type per tensor and the same quantized
 * data; with an importance matrix, the quantize.imatrix.* keys too). The output is written
 * to a temporary file next to `out` and renamed to `out` only when complete: on any failure
 * nothing is left behind and an existing `out` is untouched; `in` is only read.
 * PLUMB_E_INVALID_ARG: bad params, `out` naming `in`; PLUMB_E_UNSUPPORTED: a file type or
 * tensor type plumb does not quantize, or requantizing without allow_requantize;
 * PLUMB_E_FORMAT: a bad input or importance matrix, or one that does not fit the model;
 * PLUMB_E_IO: reading or writing failed (a full disk, an unwritable directory). Details in
 * plumb_last_error(). The result does not depend on n_threads. */
PLUMB_API plumb_status plumb_quantize_model(const char *in, const char *out, const plumb_quantize_params *params);

/* ---------------------------------------------------------------------------------------- */
/* Vocabulary and tokenizers                                                                */
/* ---------------------------------------------------------------------------------------- */

/* A model's vocabulary and tokenizer, read from the tokenizer.ggml.* keys of a GGUF file.
 * Token ids are int32_t; -1 means "none". A vocabulary is immutable once created, so one
 * may be used from many threads at once. */
typedef struct plumb_vocab plumb_vocab_t;

typedef enum plumb_vocab_type {
    PLUMB_VOCAB_SPM = 1, /* tokenizer.ggml.model "llama": SentencePiece, scores, byte fallback */
    PLUMB_VOCAB_BPE = 2, /* tokenizer.ggml.model "gpt2": byte-level BPE with merges */
} plumb_vocab_type;

/* Reads the vocabulary of g: model, pre, tokens, scores, token_type, merges, the
 * bos/eos/unknown/padding/eot/eom token ids, add_bos_token, add_eos_token and
 * add_space_prefix (defaults as llama.cpp's: SPM adds BOS and a space prefix; BPE adds BOS
 * only for the llama3 pre-tokenizer). Every count, id and type is checked: missing or bad
 * data is PLUMB_E_FORMAT, a model or pre-tokenizer plumb does not implement is
 * PLUMB_E_UNSUPPORTED; plumb_last_error() names the key. What is needed is copied: g may be
 * freed afterwards. On success *out is owned by the caller (plumb_vocab_free). */
PLUMB_API plumb_status plumb_vocab_create(const plumb_gguf_t *g, plumb_vocab_t **out);
PLUMB_API void plumb_vocab_free(plumb_vocab_t *v);

PLUMB_API plumb_vocab_type plumb_vocab_get_type(const plumb_vocab_t *v);
PLUMB_API int32_t plumb_vocab_n_tokens(const plumb_vocab_t *v);
/* Special token ids, -1 when the vocabulary has none. eot is the file's eot_token_id, or
 * else the token whose text is <end_of_turn>, <|eot_id|>, <|im_end|>, ... */
PLUMB_API int32_t plumb_vocab_bos(const plumb_vocab_t *v);
PLUMB_API int32_t plumb_vocab_eos(const plumb_vocab_t *v);
PLUMB_API int32_t plumb_vocab_eot(const plumb_vocab_t *v);
/* Fill-in-the-middle tokens: prefix, suffix, middle (the model writes the middle after them),
 * pad, repository name and file separator. */
typedef enum plumb_vocab_fim_kind {
    PLUMB_FIM_PRE = 0,
    PLUMB_FIM_SUF = 1,
    PLUMB_FIM_MID = 2,
    PLUMB_FIM_PAD = 3,
    PLUMB_FIM_REP = 4,
    PLUMB_FIM_SEP = 5,
} plumb_vocab_fim_kind;
/* The id of a fill-in-the-middle token: the file's tokenizer.ggml.fim_*_token_id, else the
 * token whose text is the family's (<|fim_prefix|>, <fim-prefix>, <PRE>, ...); -1 when the
 * vocabulary has none. The pad, repository and file-separator tokens end generation. */
PLUMB_API int32_t plumb_vocab_fim(const plumb_vocab_t *v, plumb_vocab_fim_kind k);
/* Whether plumb_tokenize(add_special = true) prepends BOS / appends EOS for this model. */
PLUMB_API bool plumb_vocab_add_bos(const plumb_vocab_t *v);
PLUMB_API bool plumb_vocab_add_eos(const plumb_vocab_t *v);
/* true when generating id ends generation: EOS, the eot/eom ids, and the tokens whose text
 * is <end_of_turn>, <|eot_id|>, <|im_end|>, <|endoftext|>, <|end_of_text|> or <|eom_id|>.
 * false for an id out of range. */
PLUMB_API bool plumb_vocab_is_eog(const plumb_vocab_t *v, int32_t id);
/* true for control tokens (<bos>, <start_of_turn>, ...; every end-of-generation token is one);
 * false for an id out of range. */
PLUMB_API bool plumb_vocab_is_control(const plumb_vocab_t *v, int32_t id);
/* The stored text of token id (SPM texts keep U+2581 for spaces, BPE texts are byte-level
 * code points); borrowed from v. PLUMB_E_RANGE for an id out of range. */
PLUMB_API plumb_status plumb_vocab_token_text(const plumb_vocab_t *v, int32_t id, plumb_str *out);
/* The id of the token whose stored text is text[0..len) exactly, or -1. */
PLUMB_API int32_t plumb_vocab_find(const plumb_vocab_t *v, const char *text, size_t len);

/* Tokenizes text[0..len) (any bytes) into ids[0..cap) as llama.cpp's llama_tokenize does.
 * add_special: prepend BOS / append EOS when the model asks for them. parse_special: texts
 * such as "<start_of_turn>" become that control token (user-defined tokens are matched as
 * whole texts either way). *n_out receives the number of ids. When cap is too small the
 * first cap ids are written, *n_out is the number needed and the result is PLUMB_E_RANGE.
 * PLUMB_E_INVALID_ARG for NULL arguments or text over 256 MiB; PLUMB_E_NOMEM. */
PLUMB_API plumb_status plumb_tokenize(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                      bool parse_special, int32_t *ids, size_t cap, size_t *n_out);
/* A byte range [off, off + len) of a text. */
typedef struct plumb_span {
    size_t off, len;
} plumb_span;
/* As plumb_tokenize with parse_special, except that a control token is recognized only where
 * its whole text lies inside one of marks[0..n_marks) (sorted by off, not overlapping): text
 * outside the marks is tokenized as text even where it spells a control token. */
PLUMB_API plumb_status plumb_tokenize_marked(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                             const plumb_span *marks, size_t n_marks, int32_t *ids, size_t cap,
                                             size_t *n_out);

/* The bytes token id stands for, written to buf[0..cap) (not NUL-terminated). SPM: U+2581
 * becomes a space and <0xXX> byte tokens give that raw byte; BPE: byte-level code points
 * become the bytes they stand for. Control and unknown tokens give nothing unless special
 * (then their text); unused tokens give nothing. Returns the number of bytes written, or
 * minus the number needed when cap is too small (nothing written); 0 for an id out of range.
 * A piece may be part of a UTF-8 character: stream text with plumb_detok_push. */
PLUMB_API int plumb_token_to_piece(const plumb_vocab_t *v, int32_t id, char *buf, size_t cap, bool special);

/* Streaming detokenizer state: the bytes of a UTF-8 character not yet complete. Zero it
 * (plumb_detok d = {0};) before the first token. */
typedef struct plumb_detok {
    uint8_t pending[8];
    size_t n_pending;
} plumb_detok;

/* Adds token id's piece (special = false) and writes to out the text that is now complete:
 * always valid UTF-8, never half a character (an incomplete character at the end waits in d
 * for the next token; invalid bytes become U+FFFD). Returns the number of bytes written.
 * When cap is too small nothing is written, d is unchanged and the return value is larger
 * than cap: call again with a buffer of at least that many bytes. */
PLUMB_API size_t plumb_detok_push(const plumb_vocab_t *v, plumb_detok *d, int32_t id, char *out, size_t cap);
/* Ends the stream: an incomplete character still waiting is written to out as U+FFFD (3
 * bytes) and d is reset. Returns the bytes written (0 or 3); when cap < 3 and something is
 * waiting, writes nothing, leaves d unchanged and returns 3. */
PLUMB_API size_t plumb_detok_flush(plumb_detok *d, char *out, size_t cap);


/* ---------------------------------------------------------------------------------------- */
/* Models, contexts and decoding                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct plumb_model plumb_model_t;
typedef struct plumb_context plumb_context_t;

typedef struct plumb_model_info {
    const char *arch; /* "llama", "gemma3" */
    const char *name; /* general.name (up to a NUL byte in it), or "" */
    int64_t n_params;
    uint64_t file_size;
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int32_t pooling; /* how the model's embeddings are pooled ({arch}.pooling_type, a
                        plumb_pooling), -1 when the file does not say */
} plumb_model_info;

/* How token hidden states become one embedding (the values of GGUF's {arch}.pooling_type). */
typedef enum plumb_pooling {
    PLUMB_POOLING_NONE = 0, /* one vector per token */
    PLUMB_POOLING_MEAN = 1,
    PLUMB_POOLING_CLS = 2,  /* the first token's */
    PLUMB_POOLING_LAST = 3, /* the last token's */
} plumb_pooling;

/* Loads a model: reads the GGUF file into memory (plumb_model_params), checks the architecture, every hyperparameter and the
 * presence, type and shape of every weight, and loads the vocabulary. Weights stay as stored
 * (quantized). An unsupported architecture is PLUMB_E_UNSUPPORTED with a
 * message listing the supported ones; a missing or misshapen tensor is PLUMB_E_FORMAT
 * naming it. */
PLUMB_API plumb_status plumb_model_load(const char *path, plumb_model_t **out);

typedef struct plumb_model_params {
    /* true: weights stay in a read-only mapping of the file (pages come in as they are first
     * used, shared with other processes, no copy); false (default): the file is read into
     * anonymous memory with huge pages at load, which decodes faster (streaming the weights is
     * what bounds generation) and costs the file's size in private memory and its read time. */
    bool use_mmap;
    /* where the offloaded layers run: NULL or "cpu" (everything on the CPU), "opencl" or
     * "opencl:N" (plumb_device_get lists the devices), "remote:HOST:PORT" (a `plumb
     * rpc-server`); an unknown device or one that does not exist is PLUMB_E_NOT_FOUND naming
     * the devices there are */
    const char *device;
    /* how many layers run on the device, counted from the last one, like llama.cpp's
     * n_gpu_layers: n_layer + 1 (or more, or -1, the default) puts every layer and the output
     * head there; the token embeddings stay on the CPU. Ignored for the CPU. */
    int32_t n_offload;
    /* for "remote:HOST:PORT": the file holding the key shared with that `plumb rpc-server`
     * (readable by its owner only); NULL: the environment's PLUMB_REMOTE_KEY_FILE */
    const char *remote_key_file;
} plumb_model_params;
PLUMB_API plumb_model_params plumb_model_default_params(void);

/* The devices plumb can compute on, the CPU first (`plumb info`, --device). */
typedef struct plumb_device_desc {
    char spec[32];     /* what --device takes: "cpu", "opencl:0" */
    char name[128];    /* the device's name */
    char driver[128];  /* its driver or platform and version */
    uint64_t memory;   /* bytes of memory it can allocate (0: unknown) */
} plumb_device_desc;
/* How many devices there are; plumb_device_get fills *out for device i (0-based). */
PLUMB_API int plumb_device_count(void);
PLUMB_API plumb_status plumb_device_get(int i, plumb_device_desc *out);
/* For a kind of backend that has no device here (no OpenCL platform, ...): false and, in
 * *why, the reason (static). True when spec names an existing device or is NULL/"cpu". */
PLUMB_API bool plumb_device_available(const char *spec, const char **why);
/* PLUMB_OK when spec (NULL: the CPU) names a device that exists, else PLUMB_E_NOT_FOUND with
 * a message naming the devices there are (what loading a model with it would say). */
PLUMB_API plumb_status plumb_device_check(const char *spec);
/* The kinds of device plumb was built with ("cpu", "opencl"), i from 0; NULL past the last. */
PLUMB_API const char *plumb_device_kind(int i);
/* `plumb rpc-server`: serves a backend of this host to remote clients (--device
 * remote:HOST:PORT on theirs) over TCP, with the authenticated protocol of
 * docs/remote-protocol.md. */
typedef struct plumb_rpc_server_params {
    const char *host;       /* the address to listen on (default "127.0.0.1") */
    int port;               /* 0: any free port (ready says which) */
    const char *key_file;   /* the shared key (required; readable by its owner only) */
    const char *device;     /* the backend served: NULL/"cpu" (default) or "opencl[:N]" */
    int n_threads;          /* the CPU backend's threads (0: the CPUs this process may use) */
    uint64_t mem_limit;     /* bytes of buffers one connection may hold (0: 8 GiB) */
    int max_connections;    /* at once; more are closed at once (0: 8) */
    int timeout_ms;         /* a request's deadline once it has begun (0: 30000) */
    const char *cache_dir;  /* weights kept by content (SHA-256) across runs (NULL: none) */
    int idle_timeout_ms;    /* an authenticated connection with no request for this long is
                               closed (0: never; dead peers are found by TCP keepalive) */
} plumb_rpc_server_params;
PLUMB_API plumb_rpc_server_params plumb_rpc_server_default_params(void);
/* Serves until *stop becomes non-zero (checked every 200 ms), then closes every connection;
 * ready(port, ctx) is called once listening. A bad key file, device or address is an error
 * before anything listens. Each connection's end (and why) is one line on stderr. */
PLUMB_API plumb_status plumb_rpc_server_run(const plumb_rpc_server_params *p, volatile int *stop,
                                            void (*ready)(int port, void *ctx), void *ctx);
/* Where m computes: the device's spec ("cpu", "opencl:0"), and the layers it runs there. */
PLUMB_API const char *plumb_model_device(const plumb_model_t *m, int32_t *n_layers_offloaded);
/* What m's device has exchanged with this host so far (a remote device: authenticated
 * frames over the network, headers included; requests answered); all zero for a local one. */
typedef struct plumb_device_traffic {
    uint64_t bytes_sent, bytes_received, round_trips;
} plumb_device_traffic;
PLUMB_API void plumb_model_device_traffic(const plumb_model_t *m, plumb_device_traffic *out);
/* plumb_model_load with parameters (NULL: the defaults). */
PLUMB_API plumb_status plumb_model_load_params(const char *path, const plumb_model_params *params,
                                               plumb_model_t **out);
/* Split models (llama.cpp's gguf-split layout): a model sharded over N GGUF files, each with
 * split.no (its 0-based place), split.count (N) and split.tensors.count (the tensors of all
 * files); the first file holds all the other metadata, each file its share of the tensors.
 * plumb_model_load(_params) given the first shard, named <prefix>-00001-of-<N>.gguf (5 digits
 * each), opens the others by that convention in the same directory; given another shard it
 * fails with PLUMB_E_INVALID_ARG naming the first. Each shard is mapped or read as a single
 * file is (plumb_model_params), its weights used where they lie.
 *
 * plumb_model_load_shards loads one from the n paths given in order, whatever the files are
 * named (blobs named by digest): paths[i] must hold split.no i and split.count n (n 1 with a
 * file that is not split loads it as plumb_model_load_params does). For both: every shard
 * must agree on split.count, the shards together must hold split.tensors.count tensors, no
 * tensor name twice; a list that does not match the files (count, order) is
 * PLUMB_E_INVALID_ARG, shards that disagree PLUMB_E_FORMAT, a file that cannot be read
 * PLUMB_E_IO; plumb_last_error() names the file. paths are borrowed for the call only. Of the
 * loaded model, plumb_model_get_info's file_size is the sum of the files', and
 * plumb_model_gguf() gives the first file's metadata with the tensors of every file (each
 * tensor's offset is into the data section of its own file; plumb_gguf_file_size is the first
 * file's size, plumb_gguf_is_file_mapping whether any file is mapped). */
PLUMB_API plumb_status plumb_model_load_shards(const char *const *paths, int n, const plumb_model_params *params,
                                               plumb_model_t **out);
PLUMB_API void plumb_model_free(plumb_model_t *m);
/* Fills *out with m's architecture, name, parameter count, file size and hyperparameters. Its
 * strings (arch, name) are borrowed from the model: valid until plumb_model_free(m), whatever
 * else is called in between, on any thread. */
PLUMB_API void plumb_model_get_info(const plumb_model_t *m, plumb_model_info *out);
/* Borrowed from the model. */
PLUMB_API const plumb_vocab_t *plumb_model_vocab(const plumb_model_t *m);
PLUMB_API const plumb_gguf_t *plumb_model_gguf(const plumb_model_t *m);
/* The Jinja chat template stored in the file (tokenizer.chat_template); PLUMB_E_NOT_FOUND
 * when there is none. Borrowed. */
PLUMB_API plumb_status plumb_model_chat_template(const plumb_model_t *m, plumb_str *out);
/* Comma-separated names of the supported architectures. */
PLUMB_API const char *plumb_model_supported_archs(void);

typedef struct plumb_context_params {
    int32_t n_ctx;     /* positions per sequence; 0: min(model context, 4096) */
    int32_t n_batch;   /* tokens computed in one forward pass; a larger batch is split */
    int32_t n_threads; /* compute threads; 0: the CPUs this process may use (its affinity
                          mask, at most its cgroup v2 CPU quota rounded up; `plumb info`
                          shows the count), not every online CPU */
    int32_t n_seq;     /* independent sequences (server slots) sharing the context */
    bool embeddings;   /* decodes give each wanted token's final hidden state (after the output
                          norm, [n_embd]: plumb_get_embeddings) instead of its logits */
    bool no_repack;    /* matmuls read the weights in their file layout only, instead of
                          interleaving 16 rows at a time for the CPU's register-tiled GEMM
                          (where its kernel set has one) and keeping a copy of the Q4_0, Q5_0
                          and Q8_0 ones in that layout (plumb_context_repacked_bytes): the same
                          results, slower prompts and batches, less memory */
    bool fast_gemm;    /* that GEMM sums each block's products (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K) as one
                          integer (the portable kernels' order) instead of llama.cpp's x86 order:
                          faster prompts, logits no longer bit-identical to llama.cpp's (KL
                          divergence in docs/backends.md); off by default; only the AVX-512
                          VNNI kernels have it */
} plumb_context_params;

PLUMB_API plumb_context_params plumb_context_default_params(void);
/* Creates a context: KV cache for n_seq sequences of n_ctx positions, compute buffers and
 * threads. The model must outlive the context. */
PLUMB_API plumb_status plumb_context_create(plumb_model_t *m, const plumb_context_params *p, plumb_context_t **out);
PLUMB_API void plumb_context_free(plumb_context_t *c);
PLUMB_API int32_t plumb_context_n_ctx(const plumb_context_t *c);
PLUMB_API int32_t plumb_context_n_batch(const plumb_context_t *c);
/* Bytes of host memory the context keeps for weights in the CPU GEMM's interleaved layout
 * (beside the file's; 0 with no_repack or where the kernel set keeps none): the matmuls of
 * those weights read them. */
PLUMB_API uint64_t plumb_context_repacked_bytes(const plumb_context_t *c);

/* A batch of tokens: token i goes into sequence seq[i] (seq NULL: every token in sequence 0)
 * at position pos[i] (pos NULL: the next position of its sequence, i.e. the sequence's
 * current length plus its tokens earlier in this batch, so the batch continues each sequence
 * where it ended); logits[i] asks for its next-token logits (NULL: only the last token's). */
typedef struct plumb_batch {
    int32_t n_tokens;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *seq;
    const bool *logits;
} plumb_batch;

/* Runs the model over the batch (split into forward passes of n_batch tokens), writing the
 * tokens' keys and values into the cache. Checks every token id, sequence id and position:
 * a sequence's positions must continue from its current length (or overwrite earlier
 * ones); a position at or past n_ctx is PLUMB_E_RANGE ("context full"). On failure the
 * cache of the affected sequences is unspecified beyond their previous length. */
PLUMB_API plumb_status plumb_decode(plumb_context_t *c, const plumb_batch *b);
/* Logits of the j-th token that asked for them in the last decode, [n_vocab] floats, or
 * NULL when j is out of range. Valid until the next decode. */
PLUMB_API const float *plumb_get_logits(const plumb_context_t *c, int32_t j);
PLUMB_API int32_t plumb_n_logits(const plumb_context_t *c);
/* In an embeddings context: the final hidden state [n_embd] of the j-th token that asked for
 * output (the logits flags) in the last decode, or NULL when j is out of range or the context
 * computes logits. Valid until the next decode. plumb_n_logits counts them. */
PLUMB_API const float *plumb_get_embeddings(const plumb_context_t *c, int32_t j);
/* Current length (next position) of sequence seq. */
PLUMB_API int32_t plumb_seq_len(const plumb_context_t *c, int32_t seq);
/* Makes sequence dst hold the first len positions of sequence src (their keys and values
 * copied; dst's own are dropped): a prompt decoded once can start several continuations.
 * PLUMB_E_RANGE when src holds fewer than len positions. */
PLUMB_API plumb_status plumb_seq_copy(plumb_context_t *c, int32_t src, int32_t dst, int32_t len);
/* Forgets positions >= len of sequence seq (len 0 clears it). */
PLUMB_API plumb_status plumb_seq_truncate(plumb_context_t *c, int32_t seq, int32_t len);


/* ---------------------------------------------------------------------------------------- */
/* Sampling                                                                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct plumb_sampler_params {
    float temperature;       /* <= 0: greedy (argmax, ties to the lowest id) */
    int32_t top_k;           /* keep the k most likely; <= 0: off */
    float top_p;             /* nucleus: smallest set with mass >= top_p; >= 1: off */
    float min_p;             /* drop tokens below min_p * p(max); <= 0: off */
    float repeat_penalty;    /* llama.cpp-style: logit / p if > 0 else * p, for the last
                                repeat_last_n tokens; 1: off */
    int32_t repeat_last_n;   /* history window for all penalties; 0: off, -1: whole history */
    float presence_penalty;  /* subtract once for any token in the window (OpenAI); 0: off */
    float frequency_penalty; /* subtract count * f for tokens in the window (OpenAI); 0: off */
    uint64_t seed;           /* same seed, same logits: same choices */
} plumb_sampler_params;

typedef struct plumb_sampler plumb_sampler_t;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, penalties off (repeat_last_n 64),
 * seed 0xC0FFEE. */
PLUMB_API plumb_sampler_params plumb_sampler_default_params(void);
/* All buffers are sized for n_vocab here; sampling allocates nothing. */
PLUMB_API plumb_status plumb_sampler_create(const plumb_sampler_params *p, int32_t n_vocab, plumb_sampler_t **out);
PLUMB_API void plumb_sampler_free(plumb_sampler_t *s);
/* Picks the next token from logits [n_vocab] (not modified): penalties from the accepted
 * history, then temperature, top-k, top-p, min-p, and a draw from the seeded generator. */
PLUMB_API int32_t plumb_sampler_sample(plumb_sampler_t *s, const float *logits);
/* As plumb_sampler_sample over only the tokens whose bit is set in allowed (a
 * plumb_constraint_mask; NULL: all): the others count as -inf. With nothing allowed, returns
 * -1. */
PLUMB_API int32_t plumb_sampler_sample_masked(plumb_sampler_t *s, const float *logits, const uint32_t *allowed);
/* Adds a token to the history the penalties look at (prompt tokens too, if wanted). */
PLUMB_API void plumb_sampler_accept(plumb_sampler_t *s, int32_t token);
/* Clears the history and reseeds the generator with the original seed. */
PLUMB_API void plumb_sampler_reset(plumb_sampler_t *s);

/* ---------------------------------------------------------------------------------------- */
/* Chat formats                                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef enum plumb_chat_format {
    PLUMB_CHAT_UNKNOWN = -1,
    PLUMB_CHAT_GEMMA = 0,
    PLUMB_CHAT_LLAMA3 = 1,
    PLUMB_CHAT_CHATML = 2,
} plumb_chat_format;

typedef struct plumb_chat_message {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} plumb_chat_message;

/* Recognizes a built-in format from a GGUF's Jinja chat template text (PLUMB_CHAT_UNKNOWN
 * when none fits). */
PLUMB_API plumb_chat_format plumb_chat_format_detect(const char *tmpl, size_t len);
/* "gemma", "llama3", "chatml" <-> the enum (PLUMB_CHAT_UNKNOWN for other names). */
PLUMB_API plumb_chat_format plumb_chat_format_from_name(const char *name);
PLUMB_API const char *plumb_chat_format_name(plumb_chat_format f);
/* Formats a conversation as the model was trained to see it, with the BOS text when
 * add_bos, and the opening of the assistant's turn when add_generation_prompt. *out is a
 * NUL-terminated string the caller frees with free(). Unknown roles or a role the format
 * cannot express give PLUMB_E_INVALID_ARG. */
PLUMB_API plumb_status plumb_chat_apply(plumb_chat_format f, const plumb_chat_message *msgs, size_t n_msgs,
                                        bool add_bos, bool add_generation_prompt, char **out, size_t *out_len);
/* As plumb_chat_apply, and *marks (malloc'd, *n_marks spans sorted and apart) are the parts of
 * *out the format wrote itself (BOS, turn markers, role names), not the messages' text. Tokenize
 * *out with plumb_tokenize_marked and these marks, so text in a message that looks like a turn
 * marker cannot become one. */
PLUMB_API plumb_status plumb_chat_apply_marked(plumb_chat_format f, const plumb_chat_message *msgs, size_t n_msgs,
                                               bool add_bos, bool add_generation_prompt, char **out, size_t *out_len,
                                               plumb_span **marks, size_t *n_marks);

/* ---------------------------------------------------------------------------------------- */
/* Jinja chat templates                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Caps on what rendering one template may take. Templates come from model files, so they are
 * untrusted: going over a cap fails the render with PLUMB_E_RANGE instead of using unbounded
 * time or memory. A field left 0 takes its default. */
typedef struct plumb_template_limits {
    size_t max_output;       /* bytes of rendered text, and of any one string built on the way;
                                default 4 MiB */
    size_t max_memory;       /* bytes the renderer holds at once (syntax tree, values); 64 MiB */
    uint32_t max_depth;      /* nesting of blocks and brackets in the template and of macro
                                calls; values (JSON or built) may nest 4 x max_depth; 64 (at
                                most 256: recursion runs on the caller's stack) */
    uint64_t max_iterations; /* for-loop iterations plus items walked by filters, over the
                                whole render; 1,000,000 */
    uint64_t max_work;       /* work over the whole render, which bounds its time: a byte
                                allocated or scanned counts 1, a value compared 8, an
                                expression evaluated 32; 2^30 (about a second) */
} plumb_template_limits;

/* The defaults above. */
PLUMB_API plumb_template_limits plumb_template_default_limits(void);

/* Renders a Jinja chat template (a GGUF's tokenizer.chat_template) exactly as Hugging Face's
 * apply_chat_template does with jinja2 (sandboxed, trim_blocks and lstrip_blocks, HF's tojson,
 * raise_exception and strftime_now; the loop controls break/continue and HF's
 * {% generation %} block), over the variables in vars_json: a JSON object such as
 * {"messages": [...], "tools": [...], "add_generation_prompt": true, "bos_token": "<s>"}.
 * A variable absent from it is undefined to the template; pass null for "defined but None",
 * as apply_chat_template does for tools and documents. vars_json NULL (or vars_len 0): no
 * variables. Both texts must be UTF-8 (the template's line ends are normalized and one final
 * newline is dropped, as jinja2 does).
 *
 * On success *out is the rendered text, NUL-terminated, *out_len its length (without the
 * NUL); the caller frees *out with free(). When marks is not NULL, *marks (malloc'd; free()
 * it; NULL when *n_marks is 0) lists the byte ranges of *out that came from the template's
 * own text: its literal text and its string literals, followed through concatenation,
 * filters, slicing and macros. Bytes that come from the variables (message contents, tool
 * definitions, JSON written by tojson) are never inside a mark, so tokenizing *out with
 * plumb_tokenize_marked(..., *marks, *n_marks, ...) keeps a message that spells a control
 * token from forging one. Two kinds of variable text count as the template's own, because
 * templates build control tokens from them: the special-token variables bos_token, eos_token,
 * unk_token, pad_token, sep_token, cls_token and mask_token (the model's own control-token
 * texts, which Hugging Face passes the same way), and a messages[i].role that is one of
 * system, user, assistant, tool, tool_results, ipython, developer, function, model (Phi-4
 * writes '<|' + role + '|>'). So never let untrusted input set those variables, and refuse
 * other roles before rendering. The spans are sorted, do not overlap, and adjacent ones are
 * merged.
 *
 * Errors (nothing is returned, *out NULL): PLUMB_E_UNSUPPORTED for a construct plumb does not
 * implement or a template jinja2 would reject as syntax; PLUMB_E_INVALID_ARG for vars_json that
 * is not a JSON object of valid UTF-8, for a template that is not UTF-8, and for a render that
 * jinja2 would fail at run time (raise_exception, an undefined value used, a type error);
 * PLUMB_E_RANGE for a cap of `limits` (NULL: the defaults) or an integer past 64 bits;
 * PLUMB_E_NOMEM. plumb_last_error() names the template's line:column and the construct, or
 * gives raise_exception's message. Thread-safe: calls share no state. */
PLUMB_API plumb_status plumb_template_render(const char *tmpl, size_t tmpl_len, const char *vars_json,
                                             size_t vars_len, const plumb_template_limits *limits, char **out,
                                             size_t *out_len, plumb_span **marks, size_t *n_marks);

/* Parses a template without rendering it: PLUMB_OK when plumb_template_render can run it
 * (a run may still fail on the variables it gets), else the status and message a render would
 * give for its syntax. Cheap enough to call when a model is loaded, to decide whether to use
 * the model's template. */
PLUMB_API plumb_status plumb_template_check(const char *tmpl, size_t tmpl_len, const plumb_template_limits *limits);


/* ---------------------------------------------------------------------------------------- */
/* Grammars and constrained decoding                                                        */
/* ---------------------------------------------------------------------------------------- */

/* A grammar in llama.cpp's GBNF: rules `name ::= alternatives`, alternatives separated by |,
 * sequences of "literals", [character classes] (ranges a-z, negation [^...]), . (any
 * character), rule names and ( groups ), each optionally followed by *, +, ?, {m}, {m,} or
 * {m,n}; escapes \x.., \u...., \U........, \t \n \r \\ \" \[ \] \-; # comments. A rule
 * ends at a newline outside parentheses. Grammars are untrusted: their size, nesting and
 * repetition counts are capped (plumb_grammar_limits), and a rule that reaches itself before
 * consuming anything (left recursion) or a name no rule defines is an error naming its
 * line:column. Parsed grammars are immutable and may be shared between threads. */
typedef struct plumb_grammar plumb_grammar_t;

typedef struct plumb_grammar_limits {
    size_t max_text;       /* bytes of grammar text; default 1 MiB */
    uint32_t max_elements; /* elements after repetitions and character classes are expanded;
                              default 1,000,000 */
    uint32_t max_repeat;   /* the largest count in {m,n}; default 10,000 */
    uint32_t max_depth;    /* nesting of parentheses; default 64 (at most 1024) */
} plumb_grammar_limits;

PLUMB_API plumb_grammar_limits plumb_grammar_default_limits(void);
/* Parses GBNF text[0..len); the start rule is `root` (NULL: "root"). PLUMB_E_INVALID_ARG for
 * a malformed grammar (plumb_last_error(): "grammar 3:14: ..."), PLUMB_E_RANGE for a cap of
 * `limits` (NULL: the defaults), PLUMB_E_NOMEM. */
PLUMB_API plumb_status plumb_grammar_parse(const char *text, size_t len, const char *root,
                                           const plumb_grammar_limits *limits, plumb_grammar_t **out);
PLUMB_API void plumb_grammar_free(plumb_grammar_t *g);
/* Matches bytes text[0..len) against g: *viable when they are the start of some sentence of
 * the grammar, *complete when they are a whole one. PLUMB_E_RANGE when matching would take
 * more than 256 MiB of tables. */
PLUMB_API plumb_status plumb_grammar_match(const plumb_grammar_t *g, const char *text, size_t len, bool *viable,
                                           bool *complete);

/* A JSON Schema (JSON text) as GBNF text whose sentences are exactly the JSON documents
 * (compact or with whitespace between tokens) valid against the schema, for the keywords
 * plumb enforces (see docs/structured-output.md). *gbnf is malloc'd and NUL-terminated.
 * A keyword plumb does not enforce is PLUMB_E_UNSUPPORTED and a malformed schema
 * PLUMB_E_INVALID_ARG, plumb_last_error() naming the keyword and its JSON pointer
 * ("unsupported keyword 'patternProperties' at /properties/a"); a grammar past its caps is
 * PLUMB_E_RANGE. */
PLUMB_API plumb_status plumb_json_schema_to_gbnf(const char *schema, size_t len, char **gbnf, size_t *gbnf_len);

/* The token texts of a vocabulary arranged for grammar matching (a byte trie). Build it once
 * per model; it is immutable and may be shared between threads. */
typedef struct plumb_token_index plumb_token_index_t;
PLUMB_API plumb_status plumb_token_index_create(const plumb_vocab_t *v, plumb_token_index_t **out);
PLUMB_API void plumb_token_index_free(plumb_token_index_t *ti);

/* A grammar bound to a token index: which tokens may come next in each parse state. It
 * caches what it computes (states, their steps, token masks) for every sequence that uses it,
 * so keep one per grammar and reuse it across requests. Not thread-safe: one thread at a
 * time. A parse state is a plain number (copy it freely); it stays valid for the life of the
 * constraint. g and ti must outlive it. */
typedef struct plumb_constraint plumb_constraint_t;
/* max_memory bounds its caches (0: 512 MiB); past it, calls fail with PLUMB_E_RANGE. */
PLUMB_API plumb_status plumb_constraint_create(const plumb_grammar_t *g, const plumb_token_index_t *ti,
                                               size_t max_memory, plumb_constraint_t **out);
PLUMB_API void plumb_constraint_free(plumb_constraint_t *c);
/* The state before any token. */
PLUMB_API plumb_status plumb_constraint_start(plumb_constraint_t *c, uint32_t *state);
/* The tokens allowed in `state`: *bits (borrowed, valid until the next call on c) has bit t
 * (bits[t / 32] >> t % 32 & 1) set when token t may come next: its text continues a sentence
 * of the grammar. End-of-generation tokens are allowed only where the grammar may end; other
 * control tokens and tokens with no text never are. *n_allowed counts them (0: a dead end). */
PLUMB_API plumb_status plumb_constraint_mask(plumb_constraint_t *c, uint32_t state, const uint32_t **bits,
                                             int32_t *n_allowed);
/* The state after token tok. PLUMB_E_INVALID_ARG when tok is not allowed in `state`. */
PLUMB_API plumb_status plumb_constraint_accept(plumb_constraint_t *c, uint32_t state, int32_t tok, uint32_t *next);
/* The state after bytes b[0..n) (e.g. text forced before decoding). PLUMB_E_INVALID_ARG when
 * they do not continue a sentence. */
PLUMB_API plumb_status plumb_constraint_accept_bytes(plumb_constraint_t *c, uint32_t state, const char *b, size_t n,
                                                     uint32_t *next);
/* Whether the text so far is a whole sentence (the grammar may end here). */
PLUMB_API bool plumb_constraint_can_end(const plumb_constraint_t *c, uint32_t state);
/* Whether nothing but the end may follow. */
PLUMB_API bool plumb_constraint_must_end(const plumb_constraint_t *c, uint32_t state);

#ifdef __cplusplus
}
#endif

#endif /* PLUMB_H */
