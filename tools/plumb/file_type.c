/* file_type.c — names of a GGUF file's general.file_type: llama.cpp's llama_ftype values
 * (LLAMA_FTYPE_MOSTLY_Q4_K_M = 15, ...) under the names llama-quantize takes and model files
 * carry ("Q4_K_M"). The value says how the file was quantized as a whole; the tensors may
 * still mix types. */
#include "cli.h"

#include <string.h>

const char *cli_file_type_name(uint64_t ftype) {
    /* the gaps are values llama.cpp retired (4-6: Q4_1_SOME_F16, Q4_2, Q4_3; 33-35: the
     * Q4_0_4_4/4_8/8_8 repacks) */
    static const char *const names[] = {
        [0] = "F32",      [1] = "F16",      [2] = "Q4_0",     [3] = "Q4_1",     [7] = "Q8_0",     [8] = "Q5_0",
        [9] = "Q5_1",     [10] = "Q2_K",    [11] = "Q3_K_S",  [12] = "Q3_K_M",  [13] = "Q3_K_L",  [14] = "Q4_K_S",
        [15] = "Q4_K_M",  [16] = "Q5_K_S",  [17] = "Q5_K_M",  [18] = "Q6_K",    [19] = "IQ2_XXS", [20] = "IQ2_XS",
        [21] = "Q2_K_S",  [22] = "IQ3_XS",  [23] = "IQ3_XXS", [24] = "IQ1_S",   [25] = "IQ4_NL",  [26] = "IQ3_S",
        [27] = "IQ3_M",   [28] = "IQ2_S",   [29] = "IQ2_M",   [30] = "IQ4_XS",  [31] = "IQ1_M",   [32] = "BF16",
        [36] = "TQ1_0",   [37] = "TQ2_0",   [38] = "MXFP4_MOE",
    };
    return ftype < sizeof names / sizeof names[0] ? names[ftype] : NULL;
}

bool cli_file_type(const plumb_gguf_t *g, uint64_t *ftype, const char **name) {
    if (plumb_gguf_get_count(g, "general.file_type", ftype) != PLUMB_OK) return false;
    *name = cli_file_type_name(*ftype);
    return true;
}
