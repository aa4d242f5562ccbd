/* fuzz_imatrix.c — libFuzzer harness for the importance matrix parser of plumb quantize
 * (src/quant/imatrix.c): arbitrary bytes as an imatrix GGUF or legacy .dat file; when they
 * parse, every entry is looked up and its values read, so a size the parser failed to check
 * shows up under ASan. */
#include "quant/quantize_model.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    plumb__imatrix im;
    if (plumb__imatrix_parse(data, size, "fuzz", &im) != PLUMB_OK) return 0;
    volatile float sink = 0.0f;
    for (int64_t i = 0; i < im.n_entries; i++) {
        const plumb__imatrix_entry *e = plumb__imatrix_find(&im, im.entries[i].name);
        if (e && e->n > 0) sink += e->values[0] + e->values[e->n - 1];
    }
    if (im.dataset) sink += (float)im.dataset[0];
    (void)sink;
    plumb__imatrix_free(&im);
    return 0;
}
