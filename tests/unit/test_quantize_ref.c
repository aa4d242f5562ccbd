/* test_quantize_ref.c — plumb's llama.cpp-compatible row quantizers (quant/quantize_ggml.h)
 * against llama.cpp itself: tests/unit/data/quantize_ref.bin (scripts/make-quant-golden.py)
 * holds inputs, importance matrices and the bytes ggml_quantize_chunk wrote for them, for
 * F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, each without and
 * with importance matrices; every case must match byte for byte. A mismatch names the type,
 * the case (input / importance matrix), and the first differing row, block and byte.
 * PLUMB_QUANT_GOLDEN overrides the data file's path; PLUMB_TEST_VERBOSE prints the counts. */
#include "test.h"

#include "plumb.h"
#include "quant/quantize_ggml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_NAME "quantize_ref.bin"

typedef struct {
    char name[96];
    uint32_t nrows, n_per_row;
    float *data; /* nrows x n_per_row */
} golden_input;

typedef struct {
    char name[32];
    uint32_t input;
    float *data; /* n_per_row of its input */
} golden_imatrix;

typedef struct {
    uint32_t size;
    const uint8_t *bytes; /* into the file's buffer */
} golden_output;

typedef struct {
    uint32_t type, input, output;
    int32_t imatrix; /* -1: none */
} golden_case;

typedef struct {
    uint8_t *buf;
    size_t len, pos;
    int bad; /* a read ran past the end */
    golden_input *inputs;
    golden_imatrix *ims;
    golden_output *outputs;
    golden_case *cases;
    uint32_t n_inputs, n_ims, n_outputs, n_cases;
} golden;

static const uint8_t *take(golden *g, size_t n) {
    if (g->bad || n > g->len - g->pos) {
        g->bad = 1;
        return NULL;
    }
    const uint8_t *p = g->buf + g->pos;
    g->pos += n;
    return p;
}

static uint32_t take_u32(golden *g) {
    const uint8_t *p = take(g, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}

static void take_name(golden *g, char *out, size_t cap) {
    const uint8_t *p = take(g, 2);
    size_t n = p ? (size_t)(p[0] | p[1] << 8) : 0;
    const uint8_t *s = take(g, n);
    if (s == NULL || n >= cap) {
        g->bad = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

/* count float32s into a new array (little-endian file; plumb's targets are little-endian) */
static float *take_floats(golden *g, uint64_t count) {
    if (count > (g->len - g->pos) / 4) {
        g->bad = 1;
        return NULL;
    }
    float *f = malloc(count ? (size_t)count * 4 : 1);
    const uint8_t *p = take(g, (size_t)count * 4);
    if (f == NULL || p == NULL) {
        free(f);
        g->bad = 1;
        return NULL;
    }
    memcpy(f, p, (size_t)count * 4);
    return f;
}

static const char *golden_path(char *buf, size_t cap) {
    const char *env = getenv("PLUMB_QUANT_GOLDEN");
    if (env && *env) return env;
    /* next to this source file: tests/unit/data/ */
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    size_t dir = slash ? (size_t)(slash - file + 1) : 0;
    snprintf(buf, cap, "%.*sdata/" GOLDEN_NAME, (int)dir, file);
    return buf;
}

static void golden_free(golden *g) {
    for (uint32_t i = 0; g->inputs && i < g->n_inputs; i++) free(g->inputs[i].data);
    for (uint32_t i = 0; g->ims && i < g->n_ims; i++) free(g->ims[i].data);
    free(g->inputs);
    free(g->ims);
    free(g->outputs);
    free(g->cases);
    free(g->buf);
    memset(g, 0, sizeof *g);
}

/* Loads and checks the structure of the golden file; 0 on success, else a message. */
static const char *golden_load(golden *g, const char *path) {
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return "cannot open the golden file";
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return "cannot seek the golden file";
    }
    long len = ftell(f);
    rewind(f);
    if (len < 8 || len > (64L << 20)) {
        fclose(f);
        return "golden file of an unexpected size";
    }
    g->buf = malloc((size_t)len);
    g->len = (size_t)len;
    if (g->buf == NULL || fread(g->buf, 1, g->len, f) != g->len) {
        fclose(f);
        return "cannot read the golden file";
    }
    fclose(f);
    const uint8_t *magic = take(g, 4);
    if (memcmp(magic, "PLQG", 4) != 0 || take_u32(g) != 1) return "not a version-1 PLQG file";

    g->n_inputs = take_u32(g);
    if (g->n_inputs == 0 || g->n_inputs > 4096) return "bad input count";
    g->inputs = calloc(g->n_inputs, sizeof *g->inputs);
    if (g->inputs == NULL) return "out of memory";
    for (uint32_t i = 0; i < g->n_inputs && !g->bad; i++) {
        golden_input *in = &g->inputs[i];
        take_name(g, in->name, sizeof in->name);
        in->nrows = take_u32(g);
        in->n_per_row = take_u32(g);
        if (in->nrows == 0 || in->n_per_row == 0) return "empty input";
        in->data = take_floats(g, (uint64_t)in->nrows * in->n_per_row);
    }
    g->n_ims = take_u32(g);
    if (g->n_ims > 4096) return "bad importance-matrix count";
    g->ims = calloc(g->n_ims ? g->n_ims : 1, sizeof *g->ims);
    if (g->ims == NULL) return "out of memory";
    for (uint32_t i = 0; i < g->n_ims && !g->bad; i++) {
        golden_imatrix *im = &g->ims[i];
        take_name(g, im->name, sizeof im->name);
        im->input = take_u32(g);
        if (im->input >= g->n_inputs) return "importance matrix of a missing input";
        im->data = take_floats(g, g->inputs[im->input].n_per_row);
    }
    g->n_outputs = take_u32(g);
    if (g->n_outputs == 0 || g->n_outputs > (1u << 20)) return "bad output count";
    g->outputs = calloc(g->n_outputs, sizeof *g->outputs);
    if (g->outputs == NULL) return "out of memory";
    for (uint32_t i = 0; i < g->n_outputs && !g->bad; i++) {
        g->outputs[i].size = take_u32(g);
        g->outputs[i].bytes = take(g, g->outputs[i].size);
    }
    g->n_cases = take_u32(g);
    if (g->n_cases == 0 || g->n_cases > (1u << 20)) return "bad case count";
    g->cases = calloc(g->n_cases, sizeof *g->cases);
    if (g->cases == NULL) return "out of memory";
    for (uint32_t i = 0; i < g->n_cases && !g->bad; i++) {
        golden_case *c = &g->cases[i];
        c->type = take_u32(g);
        c->input = take_u32(g);
        c->imatrix = (int32_t)take_u32(g);
        c->output = take_u32(g);
        if (c->input >= g->n_inputs || c->output >= g->n_outputs ||
            (c->imatrix != -1 && ((uint32_t)c->imatrix >= g->n_ims || g->ims[c->imatrix].input != c->input)))
            return "case with an index out of range";
    }
    if (g->bad) return "golden file truncated";
    if (g->pos != g->len) return "trailing bytes in the golden file";
    return NULL;
}

/* The types the file must cover, each with and without an importance matrix. */
static const int covered_types[] = {PLUMB_TYPE_F16,  PLUMB_TYPE_BF16, PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q4_1,
                                    PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q5_1, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q2_K,
                                    PLUMB_TYPE_Q3_K, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q5_K, PLUMB_TYPE_Q6_K};
#define N_COVERED ((int)(sizeof covered_types / sizeof covered_types[0]))

TEST(quantize_ref_matches_llama_cpp) {
    char pathbuf[4096];
    const char *path = golden_path(pathbuf, sizeof pathbuf);
    golden g;
    const char *err = golden_load(&g, path);
    if (err) {
        plumb_test_fail(__FILE__, __LINE__, "%s: %s", path, err);
        golden_free(&g);
        return;
    }
    int plain[PLUMB_TYPE_COUNT] = {0}, weighted[PLUMB_TYPE_COUNT] = {0}, failed[PLUMB_TYPE_COUNT] = {0};
    for (uint32_t ci = 0; ci < g.n_cases; ci++) {
        const golden_case *c = &g.cases[ci];
        const golden_input *in = &g.inputs[c->input];
        const golden_output *want = &g.outputs[c->output];
        const int type = (int)c->type;
        const char *tname = plumb_type_name(type) ? plumb_type_name(type) : "?";
        const char *imname = c->imatrix < 0 ? "none" : g.ims[c->imatrix].name;
        uint64_t row_bytes = 0;
        if (type >= PLUMB_TYPE_COUNT || plumb_type_row_bytes(type, in->n_per_row, &row_bytes) != PLUMB_OK ||
            row_bytes * in->nrows != want->size) {
            plumb_test_fail(__FILE__, __LINE__, "%s %s/%s: golden output of %u bytes does not fit",
                            tname, in->name, imname, want->size);
            continue;
        }
        uint8_t *got = malloc(want->size);
        if (got == NULL) {
            plumb_test_fail(__FILE__, __LINE__, "out of memory");
            break;
        }
        memset(got, 0xa5, want->size);
        const float *im = c->imatrix < 0 ? NULL : g.ims[c->imatrix].data;
        plumb_status st = plumb__quantize_rows(type, in->data, got, in->nrows, in->n_per_row, im);
        if (st != PLUMB_OK) {
            plumb_test_fail(__FILE__, __LINE__, "%s %s/%s: plumb__quantize_rows returned %d (%s)", tname,
                            in->name, imname, (int)st, plumb_last_error());
            failed[type]++;
        } else if (memcmp(got, want->bytes, want->size) != 0) {
            size_t at = 0;
            while (got[at] == want->bytes[at]) at++;
            const size_t block_bytes = plumb_type_block_bytes(type);
            const size_t in_row = at % row_bytes;
            plumb_test_fail(__FILE__, __LINE__,
                            "%s %s/%s (%u x %u): first difference at row %zu, block %zu, byte %zu: "
                            "got 0x%02x, llama.cpp 0x%02x",
                            tname, in->name, imname, in->nrows, in->n_per_row, (size_t)(at / row_bytes),
                            in_row / block_bytes, in_row % block_bytes, got[at], want->bytes[at]);
            failed[type]++;
        }
        if (c->imatrix < 0)
            plain[type]++;
        else
            weighted[type]++;
        free(got);
    }
    for (int i = 0; i < N_COVERED; i++) {
        const int t = covered_types[i];
        if (plain[t] == 0 || weighted[t] == 0)
            plumb_test_fail(__FILE__, __LINE__, "%s: the golden file has %d cases without and %d with an "
                            "importance matrix (want both)", plumb_type_name(t), plain[t], weighted[t]);
        if (getenv("PLUMB_TEST_VERBOSE"))
            fprintf(stderr, "  %-5s %3d cases without, %3d with an importance matrix, %d failed\n",
                    plumb_type_name(t), plain[t], weighted[t], failed[t]);
    }
    golden_free(&g);
}

TEST(quantize_ref_argument_checks) {
    float x[512] = {0};
    uint8_t y[1024];
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q8_K, x, y, 1, 256, NULL), PLUMB_E_UNSUPPORTED);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_F32, x, y, 1, 256, NULL), PLUMB_E_UNSUPPORTED);
    CHECK_STATUS(plumb__quantize_rows(-1, x, y, 1, 256, NULL), PLUMB_E_UNSUPPORTED);
    CHECK_STATUS(plumb__quantize_rows(5, x, y, 1, 256, NULL), PLUMB_E_UNSUPPORTED);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_K, x, y, 1, 128, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, x, y, 1, 48, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, x, y, 1, 0, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, x, y, -1, 32, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, NULL, y, 1, 32, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, x, NULL, 1, 32, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_0, NULL, NULL, 0, 32, NULL), PLUMB_OK);
    CHECK(plumb__quantize_rows_supports(PLUMB_TYPE_Q6_K));
    CHECK(plumb__quantize_rows_supports(PLUMB_TYPE_BF16));
    CHECK(!plumb__quantize_rows_supports(PLUMB_TYPE_Q8_K));
    /* rows are written one after another and nothing past them */
    memset(y, 0xcc, sizeof y);
    for (int i = 0; i < 512; i++) x[i] = (float)(i % 7) - 3.0f;
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_K, x, y, 2, 256, NULL), PLUMB_OK);
    CHECK(y[2 * 144] == 0xcc);
    uint8_t one[144];
    CHECK_STATUS(plumb__quantize_rows(PLUMB_TYPE_Q4_K, x + 256, one, 1, 256, NULL), PLUMB_OK);
    CHECK(memcmp(one, y + 144, 144) == 0);
}
