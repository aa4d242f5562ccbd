/* test_gguf.c — GGUF writer -> reader round trips (every value type, arrays, tensors of
 * every type, alignment) and the typed getters' statuses. The corrupt-file matrix lives in
 * tests/e2e/test_corrupt.py; here a few in-memory failures check statuses and messages. */
#include "test.h"

#include "plumb.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *temp_path(const char *tag) {
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/plumb-unit-%d-%s.gguf", (int)getpid(), tag);
    return buf;
}

TEST(gguf_roundtrip_every_value_type) {
    plumb_gguf_writer_t *w;
    CHECK_STATUS(plumb_gguf_writer_create(&w), PLUMB_OK);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u;
    int32_t i32 = -2000000000;
    float f32 = -1.5e-7f;
    uint8_t b = 1;
    uint64_t u64 = 18000000000000000000ull;
    int64_t i64 = -9000000000000000000ll;
    double f64 = 3.141592653589793;
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.u8", PLUMB_GGUF_U8, &u8), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.i8", PLUMB_GGUF_I8, &i8), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.u16", PLUMB_GGUF_U16, &u16), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.i16", PLUMB_GGUF_I16, &i16), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.u32", PLUMB_GGUF_U32, &u32), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.i32", PLUMB_GGUF_I32, &i32), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.f32", PLUMB_GGUF_F32, &f32), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.bool", PLUMB_GGUF_BOOL, &b), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.u64", PLUMB_GGUF_U64, &u64), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.i64", PLUMB_GGUF_I64, &i64), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.f64", PLUMB_GGUF_F64, &f64), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set_str(w, "t.str", "h\xc3\xa9llo\0x", 8), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set_str(w, "t.empty", "", 0), PLUMB_OK);
    int32_t arr_i32[5] = {1, -2, 3, -4, 2147483647};
    CHECK_STATUS(plumb_gguf_writer_set_arr(w, "t.arr_i32", PLUMB_GGUF_I32, arr_i32, 5), PLUMB_OK);
    double arr_f64[3] = {0.5, -1e300, 1e-300};
    CHECK_STATUS(plumb_gguf_writer_set_arr(w, "t.arr_f64", PLUMB_GGUF_F64, arr_f64, 3), PLUMB_OK);
    uint8_t arr_b[4] = {0, 1, 1, 0};
    CHECK_STATUS(plumb_gguf_writer_set_arr(w, "t.arr_bool", PLUMB_GGUF_BOOL, arr_b, 4), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set_arr(w, "t.arr_empty", PLUMB_GGUF_U16, NULL, 0), PLUMB_OK);
    plumb_str items[3] = {{"a", 1}, {"", 0}, {"\xe2\x96\x81the", 6}};
    CHECK_STATUS(plumb_gguf_writer_set_arr_str(w, "t.arr_str", items, 3), PLUMB_OK);
    /* refusals */
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.u8", PLUMB_GGUF_U8, &u8), PLUMB_E_INVALID_ARG);
    uint8_t two = 2;
    CHECK_STATUS(plumb_gguf_writer_set(w, "t.badbool", PLUMB_GGUF_BOOL, &two), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_gguf_writer_set_arr(w, "t.nested", PLUMB_GGUF_ARRAY, arr_b, 1), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_gguf_writer_set_alignment(w, 48), PLUMB_E_INVALID_ARG);
    const char *path = temp_path("values");
    CHECK_STATUS(plumb_gguf_writer_write(w, path), PLUMB_OK);
    plumb_gguf_writer_free(w);

    plumb_gguf_t *g;
    CHECK_STATUS(plumb_gguf_open(path, &g), PLUMB_OK);
    if (!g) return;
    CHECK_EQ_INT(plumb_gguf_version(g), 3);
    CHECK_EQ_INT(plumb_gguf_kv_count(g), 18);
    CHECK_EQ_INT(plumb_gguf_tensor_count(g), 0);
    int64_t iv;
    uint64_t uv;
    double fv;
    bool bv;
    plumb_str s;
    CHECK_STATUS(plumb_gguf_kv_uint(g, plumb_gguf_find_key(g, "t.u8"), &uv), PLUMB_OK);
    CHECK_EQ_INT(uv, 200);
    CHECK_STATUS(plumb_gguf_kv_int(g, plumb_gguf_find_key(g, "t.i8"), &iv), PLUMB_OK);
    CHECK_EQ_INT(iv, -100);
    CHECK_STATUS(plumb_gguf_kv_uint(g, plumb_gguf_find_key(g, "t.u16"), &uv), PLUMB_OK);
    CHECK_EQ_INT(uv, 60000);
    CHECK_STATUS(plumb_gguf_kv_int(g, plumb_gguf_find_key(g, "t.i16"), &iv), PLUMB_OK);
    CHECK_EQ_INT(iv, -30000);
    uint32_t got32;
    CHECK_STATUS(plumb_gguf_get_u32(g, "t.u32", &got32), PLUMB_OK);
    CHECK(got32 == 4000000000u);
    CHECK_STATUS(plumb_gguf_get_i64(g, "t.i32", &iv), PLUMB_OK);
    CHECK_EQ_INT(iv, -2000000000);
    float gotf;
    CHECK_STATUS(plumb_gguf_get_f32(g, "t.f32", &gotf), PLUMB_OK);
    CHECK(memcmp(&gotf, &f32, 4) == 0);
    CHECK_STATUS(plumb_gguf_get_bool(g, "t.bool", &bv), PLUMB_OK);
    CHECK(bv);
    CHECK_STATUS(plumb_gguf_kv_uint(g, plumb_gguf_find_key(g, "t.u64"), &uv), PLUMB_OK);
    CHECK(uv == u64);
    CHECK_STATUS(plumb_gguf_get_i64(g, "t.i64", &iv), PLUMB_OK);
    CHECK(iv == i64);
    CHECK_STATUS(plumb_gguf_kv_float(g, plumb_gguf_find_key(g, "t.f64"), &fv), PLUMB_OK);
    CHECK(fv == f64);
    CHECK_STATUS(plumb_gguf_get_str(g, "t.str", &s), PLUMB_OK);
    CHECK(s.len == 8 && memcmp(s.ptr, "h\xc3\xa9llo\0x", 8) == 0);
    CHECK_STATUS(plumb_gguf_get_str(g, "t.empty", &s), PLUMB_OK);
    CHECK_EQ_INT(s.len, 0);

    int64_t k = plumb_gguf_find_key(g, "t.arr_i32");
    CHECK_EQ_INT(plumb_gguf_kv_type(g, k), PLUMB_GGUF_ARRAY);
    CHECK_EQ_INT(plumb_gguf_kv_array_type(g, k), PLUMB_GGUF_I32);
    CHECK_EQ_INT(plumb_gguf_kv_array_len(g, k), 5);
    for (uint64_t j = 0; j < 5; j++) {
        CHECK_STATUS(plumb_gguf_arr_int(g, k, j, &iv), PLUMB_OK);
        CHECK_EQ_INT(iv, arr_i32[j]);
    }
    CHECK_STATUS(plumb_gguf_arr_int(g, k, 5, &iv), PLUMB_E_RANGE);
    CHECK_STATUS(plumb_gguf_arr_uint(g, k, 1, &uv), PLUMB_E_RANGE); /* -2 is negative */
    const void *raw;
    CHECK_STATUS(plumb_gguf_arr_data(g, k, &raw), PLUMB_OK);
    CHECK(memcmp(raw, arr_i32, sizeof arr_i32) == 0);
    k = plumb_gguf_find_key(g, "t.arr_f64");
    for (uint64_t j = 0; j < 3; j++) {
        CHECK_STATUS(plumb_gguf_arr_float(g, k, j, &fv), PLUMB_OK);
        CHECK(fv == arr_f64[j]);
    }
    k = plumb_gguf_find_key(g, "t.arr_bool");
    for (uint64_t j = 0; j < 4; j++) {
        CHECK_STATUS(plumb_gguf_arr_bool(g, k, j, &bv), PLUMB_OK);
        CHECK_EQ_INT(bv, arr_b[j]);
    }
    k = plumb_gguf_find_key(g, "t.arr_empty");
    CHECK_EQ_INT(plumb_gguf_kv_array_len(g, k), 0);
    CHECK_EQ_INT(plumb_gguf_kv_array_type(g, k), PLUMB_GGUF_U16);
    k = plumb_gguf_find_key(g, "t.arr_str");
    CHECK_EQ_INT(plumb_gguf_kv_array_len(g, k), 3);
    for (uint64_t j = 0; j < 3; j++) {
        CHECK_STATUS(plumb_gguf_arr_str(g, k, j, &s), PLUMB_OK);
        CHECK(s.len == items[j].len && memcmp(s.ptr, items[j].ptr, s.len) == 0);
    }
    CHECK_STATUS(plumb_gguf_arr_str(g, k, 3, &s), PLUMB_E_RANGE);
    CHECK_STATUS(plumb_gguf_arr_int(g, k, 0, &iv), PLUMB_E_TYPE);
    plumb_gguf_free(g);
    unlink(path);
}

TEST(gguf_getters_statuses) {
    plumb_gguf_writer_t *w;
    CHECK_STATUS(plumb_gguf_writer_create(&w), PLUMB_OK);
    uint16_t n16 = 18;
    int8_t neg = -1;
    uint8_t b = 0;
    uint64_t big = 1ull << 40;
    CHECK_STATUS(plumb_gguf_writer_set(w, "c.u16", PLUMB_GGUF_U16, &n16), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "c.neg", PLUMB_GGUF_I8, &neg), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "c.bool", PLUMB_GGUF_BOOL, &b), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set(w, "c.big", PLUMB_GGUF_U64, &big), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_set_str(w, "c.str", "x", 1), PLUMB_OK);
    const char *path = temp_path("getters");
    CHECK_STATUS(plumb_gguf_writer_write(w, path), PLUMB_OK);
    plumb_gguf_writer_free(w);
    plumb_gguf_t *g;
    CHECK_STATUS(plumb_gguf_open(path, &g), PLUMB_OK);
    if (!g) return;
    uint64_t cnt;
    uint32_t u32;
    float f;
    bool bv;
    plumb_str s;
    CHECK_STATUS(plumb_gguf_get_count(g, "c.u16", &cnt), PLUMB_OK); /* any integer width */
    CHECK_EQ_INT(cnt, 18);
    CHECK_STATUS(plumb_gguf_get_f32(g, "c.u16", &f), PLUMB_OK); /* integers read as floats */
    CHECK(f == 18.0f);
    CHECK_STATUS(plumb_gguf_get_count(g, "c.neg", &cnt), PLUMB_E_RANGE);
    CHECK_STATUS(plumb_gguf_get_count(g, "c.bool", &cnt), PLUMB_E_TYPE);
    CHECK_STATUS(plumb_gguf_get_count(g, "c.str", &cnt), PLUMB_E_TYPE);
    CHECK_STATUS(plumb_gguf_get_count(g, "c.absent", &cnt), PLUMB_E_NOT_FOUND);
    CHECK(strstr(plumb_last_error(), "c.absent") != NULL);
    CHECK_STATUS(plumb_gguf_get_u32(g, "c.big", &u32), PLUMB_E_RANGE);
    CHECK_STATUS(plumb_gguf_get_bool(g, "c.u16", &bv), PLUMB_E_TYPE);
    CHECK_STATUS(plumb_gguf_get_str(g, "c.u16", &s), PLUMB_E_TYPE);
    CHECK_EQ_INT(plumb_gguf_find_key(g, "nope"), -1);
    CHECK_EQ_INT(plumb_gguf_find_tensor(g, "nope"), -1);
    CHECK_EQ_INT(plumb_gguf_alignment(g), 32);
    plumb_gguf_free(g);
    unlink(path);
}

static void fill_random(uint8_t *p, size_t n, uint32_t *seed) {
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(*seed >> 24);
    }
}

TEST(gguf_roundtrip_tensors_every_type_and_alignment) {
    static const int types[] = {PLUMB_TYPE_F32,  PLUMB_TYPE_F16,  PLUMB_TYPE_BF16, PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q4_1,
                                PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q5_1, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q2_K, PLUMB_TYPE_Q3_K,
                                PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q5_K, PLUMB_TYPE_Q6_K, PLUMB_TYPE_Q8_K};
    enum { NT = sizeof types / sizeof types[0] };
    static const uint32_t aligns[] = {1, 32, 64, 8192};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        plumb_gguf_writer_t *w;
        CHECK_STATUS(plumb_gguf_writer_create(&w), PLUMB_OK);
        if (aligns[a] != 32) CHECK_STATUS(plumb_gguf_writer_set_alignment(w, aligns[a]), PLUMB_OK);
        uint8_t *bufs[NT];
        uint64_t sizes[NT];
        uint32_t seed = 1234 + (uint32_t)a;
        for (int i = 0; i < NT; i++) {
            int64_t ne[3] = {plumb_type_block_size(types[i]) * (1 + i % 3), 3, 1 + i % 2};
            uint64_t nb;
            CHECK_STATUS(plumb_type_row_bytes(types[i], ne[0] * ne[1] * ne[2], &nb), PLUMB_OK);
            sizes[i] = nb;
            bufs[i] = malloc(nb);
            fill_random(bufs[i], nb, &seed);
            char name[32];
            snprintf(name, sizeof name, "t%d.%s", i, plumb_type_name(types[i]));
            CHECK_STATUS(plumb_gguf_writer_add_tensor(w, name, types[i], 3, ne, bufs[i]), PLUMB_OK);
        }
        int64_t bad_ne[1] = {17};
        CHECK_STATUS(plumb_gguf_writer_add_tensor(w, "bad", PLUMB_TYPE_Q4_0, 1, bad_ne, bufs[0]), PLUMB_E_INVALID_ARG);
        CHECK_STATUS(plumb_gguf_writer_add_tensor(w, "t0.F32", PLUMB_TYPE_F32, 1, bad_ne, bufs[0]), PLUMB_E_INVALID_ARG);
        const char *path = temp_path("tensors");
        CHECK_STATUS(plumb_gguf_writer_write(w, path), PLUMB_OK);
        plumb_gguf_writer_free(w);
        /* mapped, then read into memory: the same tensors, data aligned as the file says */
        for (unsigned flags = 0; flags <= PLUMB_GGUF_OPEN_READ; flags += PLUMB_GGUF_OPEN_READ) {
            plumb_gguf_t *g;
            CHECK_STATUS(plumb_gguf_open_ex(path, flags, &g), PLUMB_OK);
            if (g) {
                CHECK(plumb_gguf_is_file_mapping(g) == (flags == 0));
                CHECK_EQ_INT(plumb_gguf_tensor_count(g), NT);
                CHECK_EQ_INT(plumb_gguf_alignment(g), aligns[a]);
                CHECK_EQ_INT(plumb_gguf_data_offset(g) % aligns[a], 0);
                for (int i = 0; i < NT; i++) {
                    plumb_gguf_tensor_info t;
                    char name[32];
                    snprintf(name, sizeof name, "t%d.%s", i, plumb_type_name(types[i]));
                    CHECK_EQ_INT(plumb_gguf_find_tensor(g, name), i);
                    CHECK_STATUS(plumb_gguf_tensor(g, i, &t), PLUMB_OK);
                    CHECK(strcmp(t.name, name) == 0);
                    CHECK_EQ_INT(t.type, types[i]);
                    CHECK_EQ_INT(t.n_dims, 3);
                    CHECK_EQ_INT(t.ne[0], plumb_type_block_size(types[i]) * (1 + i % 3));
                    CHECK_EQ_INT(t.ne[1], 3);
                    CHECK_EQ_INT(t.ne[3], 1);
                    CHECK_EQ_INT(t.offset % aligns[a], 0);
                    CHECK_EQ_INT(t.nbytes, sizes[i]);
                    /* a file mapping starts on a page; memory read into starts on 2 MiB */
                    const uintptr_t base_align = flags ? aligns[a] : (aligns[a] < 4096 ? aligns[a] : 4096);
                    CHECK_EQ_INT((uintptr_t)t.data % base_align, 0);
                    CHECK(memcmp(t.data, bufs[i], sizes[i]) == 0);
                }
                plumb_gguf_free(g);
            }
        }
        for (int i = 0; i < NT; i++) free(bufs[i]);
        unlink(path);
    }
}

TEST(gguf_memory_failures_name_the_problem) {
    plumb_gguf_t *g = (plumb_gguf_t *)1;
    CHECK_STATUS(plumb_gguf_open_memory("GGUX\3\0\0\0", 8, "m.gguf", &g), PLUMB_E_FORMAT);
    CHECK(g == NULL);
    CHECK(strstr(plumb_last_error(), "m.gguf") && strstr(plumb_last_error(), "magic"));
    CHECK_STATUS(plumb_gguf_open_memory("GGUF\1\0\0\0", 8, "m.gguf", &g), PLUMB_E_UNSUPPORTED);
    CHECK(strstr(plumb_last_error(), "version 1"));
    CHECK_STATUS(plumb_gguf_open_memory("GGUF\0\0\0\3", 8, "m.gguf", &g), PLUMB_E_UNSUPPORTED);
    CHECK(strstr(plumb_last_error(), "byte-swapped"));
    CHECK_STATUS(plumb_gguf_open_memory("GGUF\3\0\0\0\0\0", 10, "m.gguf", &g), PLUMB_E_FORMAT);
    CHECK(strstr(plumb_last_error(), "truncated") && strstr(plumb_last_error(), "tensor count"));
    CHECK_STATUS(plumb_gguf_open_memory("", 0, "m.gguf", &g), PLUMB_E_FORMAT);
    CHECK_STATUS(plumb_gguf_open("/nonexistent/x.gguf", &g), PLUMB_E_IO);
    CHECK(strstr(plumb_last_error(), "/nonexistent/x.gguf"));
    /* a minimal valid file: header only */
    static const uint8_t empty[24] = {'G', 'G', 'U', 'F', 3};
    CHECK_STATUS(plumb_gguf_open_memory(empty, sizeof empty, "m.gguf", &g), PLUMB_OK);
    plumb_gguf_free(g);
}

TEST(status_table) {
    CHECK(strcmp(plumb_status_name(PLUMB_E_FORMAT), "PLUMB_E_FORMAT") == 0);
    CHECK(strcmp(plumb_status_message(PLUMB_E_NOMEM), "out of memory") == 0);
    CHECK(strcmp(plumb_status_name((plumb_status)-999), "PLUMB_E_UNKNOWN") == 0);
    CHECK(strcmp(plumb_status_name(PLUMB_OK), "PLUMB_OK") == 0);
}
