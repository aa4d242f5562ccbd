/* test_quantize_model.c — the pieces of plumb quantize that can be checked without a model:
 * the file type names, the tensor order, the per-tensor type rules on made-up tensor lists
 * (mixtures by layer position, fallbacks for odd row lengths, tied embeddings, overrides,
 * --pure), and the importance matrix parser on good and hostile bytes. The whole pass is
 * checked against llama-quantize's files by tests/e2e/test_quantize.py. */
#include "test.h"

#include "quant/quantize_model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST(quantize_ftype_names) {
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("Q4_K_M"), 15);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("q4_k"), 15);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("Q3_K"), 12);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("f32"), 0);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("7"), 7);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("Q7_K"), -1);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("IQ2_XXS"), -1);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name("99"), -1);
    CHECK_EQ_INT(plumb_quantize_ftype_from_name(""), -1);
    CHECK(strcmp(plumb_quantize_ftype_name(15), "Q4_K_M") == 0);
    CHECK(strcmp(plumb_quantize_ftype_name(12), "Q3_K_M") == 0);
    CHECK(plumb_quantize_ftype_name(19) == NULL);
    CHECK(strstr(plumb_quantize_ftype_list(), "Q5_K_S") != NULL);
}

TEST(quantize_tensor_order) {
    CHECK(plumb__qz_tensor_cmp("output.weight", "blk.0.attn_q.weight") < 0);
    CHECK(plumb__qz_tensor_cmp("blk.2.ffn_up.weight", "blk.10.attn_q.weight") < 0);
    CHECK(plumb__qz_tensor_cmp("blk.3.attn_k.weight", "blk.3.attn_q.weight") < 0);
    CHECK(plumb__qz_tensor_cmp("token_embd.weight", "output_norm.weight") > 0);
    CHECK(plumb__qz_tensor_cmp("blk.x.a", "blk.0.a") < 0); /* no number: as if no layer */
}

/* A llama-like model of n_layer layers with rows of n_embd and an FFN of n_ff. */
typedef struct fake {
    plumb__qz_tensor t[512];
    char names[512][48];
    int n;
} fake;

static void add(fake *f, const char *name, int64_t ne0, int64_t ne1) {
    plumb__qz_tensor *t = &f->t[f->n];
    snprintf(f->names[f->n], sizeof f->names[0], "%s", name);
    t->name = f->names[f->n];
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = t->ne[3] = 1;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->type = PLUMB_TYPE_F16;
    f->n++;
}

static void make_model(fake *f, int n_layer, int64_t n_embd, int64_t n_ff, bool tied) {
    char name[48];
    f->n = 0;
    if (!tied) add(f, "output.weight", n_embd, 1000);
    add(f, "output_norm.weight", n_embd, 1);
    add(f, "token_embd.weight", n_embd, 1000);
    for (int il = 0; il < n_layer; il++) {
        static const char *const parts[] = {"attn_k", "attn_norm", "attn_output", "attn_q", "attn_v",
                                            "ffn_down", "ffn_gate", "ffn_norm", "ffn_up"};
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, parts[k]);
            bool down = strcmp(parts[k], "ffn_down") == 0;
            if (strstr(parts[k], "norm")) add(f, name, n_embd, 1);
            else add(f, name, down ? n_ff : n_embd, down ? n_embd : n_ff);
        }
    }
}

static int type_of(const fake *f, const int *types, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return types[i];
    return -2;
}

TEST(quantize_rules_q4_k_m) {
    static fake f;
    make_model(&f, 16, 512, 1024, false);
    plumb__qz_model m = {.arch = "llama", .n_layer = 16, .n_head = 8, .n_head_kv = 8};
    plumb__qz_rules r = {.ftype = PLUMB_FTYPE_Q4_K_M, .output_type = -1, .token_embd_type = -1};
    int types[512];
    bool needs[512];
    int nfb = -1;
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, needs, &nfb), PLUMB_OK);
    CHECK_EQ_INT(nfb, 0);
    CHECK_EQ_INT(type_of(&f, types, "output.weight"), PLUMB_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(&f, types, "token_embd.weight"), PLUMB_TYPE_Q4_K);
    CHECK_EQ_INT(type_of(&f, types, "output_norm.weight"), PLUMB_TYPE_F16); /* 1-D: kept */
    /* use_more_bits(i, 16): layers 0-1, 14-15 and every third from 4 */
    CHECK_EQ_INT(type_of(&f, types, "blk.0.attn_v.weight"), PLUMB_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.2.attn_v.weight"), PLUMB_TYPE_Q4_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.4.attn_v.weight"), PLUMB_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.5.ffn_down.weight"), PLUMB_TYPE_Q4_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.15.ffn_down.weight"), PLUMB_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.3.attn_q.weight"), PLUMB_TYPE_Q4_K);
    for (int i = 0; i < f.n; i++) CHECK(!needs[i]);
}

TEST(quantize_rules_fallbacks_and_tied) {
    static fake f;
    make_model(&f, 4, 80, 96, true); /* 80: not whole 256- nor 32-blocks; 96: 32-blocks only */
    plumb__qz_model m = {.arch = "llama", .n_layer = 4, .n_head = 4, .n_head_kv = 1};
    plumb__qz_rules r = {.ftype = PLUMB_FTYPE_Q2_K, .output_type = -1, .token_embd_type = -1};
    int types[512];
    int nfb = 0;
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, NULL, &nfb), PLUMB_OK);
    CHECK(nfb > 0);
    /* tied: the embeddings get the output's type: Q8_0 (rows not whole blocks), then F16 */
    CHECK_EQ_INT(type_of(&f, types, "token_embd.weight"), PLUMB_TYPE_F16);
    CHECK_EQ_INT(type_of(&f, types, "blk.0.attn_q.weight"), PLUMB_TYPE_F16);
    CHECK_EQ_INT(type_of(&f, types, "blk.0.ffn_down.weight"), PLUMB_TYPE_Q4_0); /* Q3_K -> Q4_0 */

    make_model(&f, 4, 512, 96, false);
    r.pure = true;
    r.output_type = PLUMB_TYPE_Q8_0;
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, NULL, NULL), PLUMB_OK);
    CHECK_EQ_INT(type_of(&f, types, "output.weight"), PLUMB_TYPE_Q8_0);
    CHECK_EQ_INT(type_of(&f, types, "blk.0.attn_v.weight"), PLUMB_TYPE_Q2_K);
    CHECK_EQ_INT(type_of(&f, types, "blk.0.ffn_down.weight"), PLUMB_TYPE_Q4_0);

    r = (plumb__qz_rules){.ftype = PLUMB_FTYPE_Q2_K_S, .output_type = -1, .token_embd_type = PLUMB_TYPE_Q8_0};
    bool needs[512];
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, needs, NULL), PLUMB_OK);
    CHECK_EQ_INT(type_of(&f, types, "token_embd.weight"), PLUMB_TYPE_Q8_0);
    bool any = false;
    for (int i = 0; i < f.n; i++) any |= needs[i];
    CHECK(any); /* Q2_K in a Q2_K_S file needs an imatrix */

    r.ftype = 19; /* IQ2_XXS: not written */
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, NULL, NULL), PLUMB_E_UNSUPPORTED);
}

TEST(quantize_rules_expert_layers) {
    static fake f;
    f.n = 0;
    add(&f, "blk.7.ffn_down_exps.weight", 256, 256);
    f.t[0].ne[2] = 8;
    f.t[0].n_dims = 3;
    plumb__qz_model m = {.arch = "llama", .n_layer = 4, .n_head = 4, .n_head_kv = 4, .n_expert = 8};
    plumb__qz_rules r = {.ftype = PLUMB_FTYPE_Q4_K_M, .output_type = -1, .token_embd_type = -1};
    int types[4];
    /* layer 7 of a 4-layer model: llama.cpp refuses it */
    CHECK_EQ_INT(plumb__qz_choose_types(&m, &r, f.t, f.n, types, NULL, NULL), PLUMB_E_FORMAT);
}

/* ---- importance matrices ---------------------------------------------------------------- */

static size_t put_i32(uint8_t *p, int32_t v) {
    memcpy(p, &v, 4);
    return 4;
}

TEST(imatrix_legacy) {
    uint8_t b[256];
    size_t n = 0;
    n += put_i32(b + n, 2);
    n += put_i32(b + n, 3);
    memcpy(b + n, "a.w", 3), n += 3;
    n += put_i32(b + n, 4); /* ncall */
    n += put_i32(b + n, 2); /* nval */
    float v[2] = {8.0f, 2.0f};
    memcpy(b + n, v, 8), n += 8;
    n += put_i32(b + n, 3);
    memcpy(b + n, "a.w", 3), n += 3; /* a duplicate: the last wins */
    n += put_i32(b + n, 0);
    n += put_i32(b + n, 1);
    memcpy(b + n, v, 4), n += 4;
    n += put_i32(b + n, 7);
    n += put_i32(b + n, 2);
    memcpy(b + n, "ds", 2), n += 2;
    plumb__imatrix im;
    CHECK_EQ_INT(plumb__imatrix_parse(b, n, "t.dat", &im), PLUMB_OK);
    CHECK_EQ_INT(im.n_entries, 1);
    CHECK_EQ_INT(im.chunk_count, 7);
    CHECK(im.dataset && strcmp(im.dataset, "ds") == 0);
    const plumb__imatrix_entry *e = plumb__imatrix_find(&im, "a.w");
    CHECK(e && e->n == 1 && e->values[0] == 8.0f);
    CHECK(plumb__imatrix_find(&im, "b.w") == NULL);
    plumb__imatrix_free(&im);

    /* every truncation of it fails cleanly or parses (the trailer is optional) */
    for (size_t cut = 0; cut < n; cut++) {
        plumb_status st = plumb__imatrix_parse(b, cut, "t.dat", &im);
        if (st == PLUMB_OK) plumb__imatrix_free(&im);
        else CHECK_EQ_INT(st, PLUMB_E_FORMAT);
    }
    /* hostile counts */
    uint8_t h[16];
    put_i32(h, 1);
    put_i32(h + 4, INT32_MAX); /* name length past the end */
    CHECK_EQ_INT(plumb__imatrix_parse(h, 8, "h", &im), PLUMB_E_FORMAT);
    put_i32(h, 1);
    put_i32(h + 4, 0);
    put_i32(h + 8, 1);
    put_i32(h + 12, INT32_MAX); /* values past the end */
    CHECK_EQ_INT(plumb__imatrix_parse(h, 16, "h", &im), PLUMB_E_FORMAT);
    put_i32(h + 12, -5);
    CHECK_EQ_INT(plumb__imatrix_parse(h, 16, "h", &im), PLUMB_E_FORMAT);
    /* a non-finite value */
    n = 0;
    n += put_i32(b + n, 1);
    n += put_i32(b + n, 1);
    b[n++] = 'x';
    n += put_i32(b + n, 1);
    n += put_i32(b + n, 1);
    float inf = INFINITY;
    memcpy(b + n, &inf, 4), n += 4;
    CHECK_EQ_INT(plumb__imatrix_parse(b, n, "h", &im), PLUMB_E_FORMAT);
}

/* An imatrix GGUF: one weight "w" of 4 columns and 2 experts. */
static plumb_status imatrix_gguf(float count0, bool with_meta, bool with_counts, void **buf, size_t *len) {
    plumb_gguf_writer_t *w;
    plumb_status st = plumb_gguf_writer_create(&w);
    if (st) return st;
    uint32_t cc = 3, cs = 512;
    plumb_str ds = {"data.txt", 8};
    if (with_meta) {
        plumb_gguf_writer_set_arr_str(w, "imatrix.datasets", &ds, 1);
        plumb_gguf_writer_set(w, "imatrix.chunk_count", PLUMB_GGUF_U32, &cc);
        plumb_gguf_writer_set(w, "imatrix.chunk_size", PLUMB_GGUF_U32, &cs);
    }
    static float sums[8] = {2, 4, 6, 8, 1, 1, 1, 1};
    static float counts[2];
    counts[0] = count0;
    counts[1] = 0.0f;
    int64_t ne_s[2] = {4, 2}, ne_c[2] = {1, 2};
    plumb_gguf_writer_add_tensor(w, "w.in_sum2", PLUMB_TYPE_F32, 2, ne_s, sums);
    if (with_counts) plumb_gguf_writer_add_tensor(w, "w.counts", PLUMB_TYPE_F32, 2, ne_c, counts);
    char path[] = "/tmp/plumb-test-imatrix-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        plumb_gguf_writer_free(w);
        return PLUMB_E_IO;
    }
    st = plumb_gguf_writer_write(w, path);
    plumb_gguf_writer_free(w);
    FILE *f = fdopen(fd, "rb");
    *buf = malloc(1 << 16);
    *len = f && *buf ? fread(*buf, 1, 1 << 16, f) : 0;
    if (f) fclose(f);
    unlink(path);
    return st;
}

TEST(imatrix_gguf_layout) {
    void *buf;
    size_t len;
    plumb__imatrix im;
    CHECK_EQ_INT(imatrix_gguf(2.0f, true, true, &buf, &len), PLUMB_OK);
    CHECK_EQ_INT(plumb__imatrix_parse(buf, len, "i.gguf", &im), PLUMB_OK);
    CHECK_EQ_INT(im.n_entries, 1);
    CHECK_EQ_INT(im.chunk_count, 3);
    CHECK(im.dataset && strcmp(im.dataset, "data.txt") == 0);
    const plumb__imatrix_entry *e = plumb__imatrix_find(&im, "w");
    CHECK(e && e->n == 8);
    if (e && e->n == 8) {
        CHECK(e->values[0] == 1.0f && e->values[3] == 4.0f); /* divided by the count, 2 */
        CHECK(e->values[4] == 1.0f && e->values[7] == 1.0f); /* count 0: weights of 1 */
    }
    plumb__imatrix_free(&im);
    for (size_t cut = 0; cut < len; cut += 7) {
        plumb_status st = plumb__imatrix_parse(buf, cut, "i.gguf", &im);
        if (st == PLUMB_OK) plumb__imatrix_free(&im);
        CHECK(st != PLUMB_OK || cut + 32 > len); /* only the data's tail padding may go */
    }
    free(buf);

    CHECK_EQ_INT(imatrix_gguf(NAN, true, true, &buf, &len), PLUMB_OK);
    CHECK_EQ_INT(plumb__imatrix_parse(buf, len, "i.gguf", &im), PLUMB_E_FORMAT);
    free(buf);
    CHECK_EQ_INT(imatrix_gguf(2.0f, false, true, &buf, &len), PLUMB_OK);
    CHECK_EQ_INT(plumb__imatrix_parse(buf, len, "i.gguf", &im), PLUMB_E_FORMAT); /* no metadata */
    free(buf);
    CHECK_EQ_INT(imatrix_gguf(2.0f, true, false, &buf, &len), PLUMB_OK);
    CHECK_EQ_INT(plumb__imatrix_parse(buf, len, "i.gguf", &im), PLUMB_E_FORMAT); /* sums without counts */
    free(buf);
}
