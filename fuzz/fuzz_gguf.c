/* fuzz_gguf.c — libFuzzer harness for the GGUF reader: opens arbitrary bytes from memory and,
 * when they parse, walks every accessor the CLI and the model loader use, so out-of-bounds
 * reads anywhere behind the reader's checks show up under ASan. */
#include "plumb.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    plumb_gguf_t *g;
    if (plumb_gguf_open_memory(data, size, "fuzz", &g) != PLUMB_OK) return 0;
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < plumb_gguf_kv_count(g); i++) {
        int64_t iv;
        uint64_t uv;
        double fv;
        bool bv;
        plumb_str s;
        const void *raw;
        sink += (uint64_t)plumb_gguf_find_key(g, plumb_gguf_kv_key(g, i));
        if (plumb_gguf_kv_int(g, i, &iv) == PLUMB_OK) sink += (uint64_t)iv;
        if (plumb_gguf_kv_uint(g, i, &uv) == PLUMB_OK) sink += uv;
        if (plumb_gguf_kv_float(g, i, &fv) == PLUMB_OK) sink += (uint64_t)(fv == fv);
        if (plumb_gguf_kv_bool(g, i, &bv) == PLUMB_OK) sink += bv;
        if (plumb_gguf_kv_str(g, i, &s) == PLUMB_OK && s.len) sink += (uint8_t)s.ptr[s.len - 1];
        uint64_t n = plumb_gguf_kv_array_len(g, i);
        for (uint64_t j = 0; j < n && j < 64; j++) {
            if (plumb_gguf_arr_str(g, i, j, &s) == PLUMB_OK && s.len) sink += (uint8_t)s.ptr[s.len - 1];
            if (plumb_gguf_arr_float(g, i, j, &fv) == PLUMB_OK) sink += (uint64_t)(fv == fv);
            if (plumb_gguf_arr_int(g, i, j, &iv) == PLUMB_OK) sink += (uint64_t)iv;
        }
        if (n && plumb_gguf_arr_data(g, i, &raw) == PLUMB_OK) sink += *(const uint8_t *)raw;
    }
    for (int64_t i = 0; i < plumb_gguf_tensor_count(g); i++) {
        plumb_gguf_tensor_info t;
        if (plumb_gguf_tensor(g, i, &t) != PLUMB_OK) continue;
        sink += (uint64_t)plumb_gguf_find_tensor(g, t.name);
        if (t.nbytes) sink += ((const uint8_t *)t.data)[0] + ((const uint8_t *)t.data)[t.nbytes - 1];
        /* dequantize the first row (bounded) to exercise the type table on fuzzed data */
        int64_t bs = plumb_type_block_size(t.type);
        uint64_t rb;
        if (bs > 0 && t.ne[0] > 0 && t.ne[0] <= 4096 && plumb_type_row_bytes(t.type, t.ne[0], &rb) == PLUMB_OK &&
            rb <= t.nbytes) {
            static float row[4096];
            if (plumb_dequantize_row(t.type, t.data, row, t.ne[0]) == PLUMB_OK) sink += (uint64_t)(row[0] == row[0]);
        }
    }
    (void)sink;
    plumb_gguf_free(g);
    return 0;
}
