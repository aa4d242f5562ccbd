/* test_gguf_split.c — split GGUF files (src/gguf/gguf_split.h) written here with the GGUF
 * writer into a fresh directory: llama.cpp's shard names, the merged object (every tensor
 * found, its data read from its own file, the sizes summed), the explicit list, and the
 * errors of shards that do not fit together. Whole models over shards are tested end to end
 * in tests/e2e/test_split.py. */
#include "test.h"

#include "gguf/gguf_split.h"
#include "plumb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_SHARDS 3
#define PER_SHARD 2 /* tensors in each shard */

/* A fresh directory under /tmp in dir[cap]; false after failing the test. */
static bool make_dir(char *dir, size_t cap) {
    snprintf(dir, cap, "/tmp/plumb-unit-split-XXXXXX");
    if (mkdtemp(dir)) return true;
    plumb_test_fail(__FILE__, __LINE__, "cannot make a directory under /tmp: %s", strerror(errno));
    return false;
}

/* Removes the files named <dir>/<...> that the tests write, then dir. */
static void remove_dir(const char *dir) {
    static const char *const names[] = {"m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf",
                                        "sha256-a", "sha256-b", "sha256-c", "single.gguf"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Tensor j of shard i: 8 floats, each i * 100 + j * 10 + k. */
static void tensor_values(int i, int j, float *v) {
    for (int k = 0; k < 8; k++) v[k] = (float)(i * 100 + j * 10 + k);
}

/* Shard i (of count, split.tensors.count total) at path with tensors "t<i>.<j>" (or the name
 * `dup` for its last one); split.no written as no (-1: left out). The first shard has the
 * metadata general.architecture and a padding key of `pad` bytes, so the shards' data sections
 * start at different offsets. */
static bool write_shard(const char *path, int i, int no, int count, int total, const char *dup) {
    plumb_gguf_writer_t *w;
    if (plumb_gguf_writer_create(&w)) return false;
    plumb_status st = PLUMB_OK;
    if (i == 0) {
        st = plumb_gguf_writer_set_str(w, "general.architecture", "test", 4);
        char pad[200];
        memset(pad, 'x', sizeof pad);
        if (!st) st = plumb_gguf_writer_set_str(w, "test.pad", pad, sizeof pad);
    }
    const uint16_t no16 = (uint16_t)no, count16 = (uint16_t)count;
    const int32_t total32 = total;
    if (!st && no >= 0) st = plumb_gguf_writer_set(w, "split.no", PLUMB_GGUF_U16, &no16);
    if (!st) st = plumb_gguf_writer_set(w, "split.count", PLUMB_GGUF_U16, &count16);
    if (!st) st = plumb_gguf_writer_set(w, "split.tensors.count", PLUMB_GGUF_I32, &total32);
    float data[PER_SHARD][8];
    char name[PER_SHARD][32];
    const int64_t ne[1] = {8};
    for (int j = 0; j < PER_SHARD && !st; j++) {
        tensor_values(i, j, data[j]);
        snprintf(name[j], sizeof name[j], "t%d.%d", i, j);
        st = plumb_gguf_writer_add_tensor(w, dup && j == PER_SHARD - 1 ? dup : name[j], PLUMB_TYPE_F32, 1, ne, data[j]);
    }
    if (!st) st = plumb_gguf_writer_write(w, path);
    plumb_gguf_writer_free(w);
    return st == PLUMB_OK;
}

/* The three good shards, named by the convention, into dir; their paths in paths[i][256]. */
static bool write_good(const char *dir, char paths[N_SHARDS][256]) {
    bool ok = true;
    for (int i = 0; i < N_SHARDS; i++) {
        snprintf(paths[i], 256, "%s/m-%05d-of-%05d.gguf", dir, i + 1, N_SHARDS);
        ok = ok && write_shard(paths[i], i, i, N_SHARDS, N_SHARDS * PER_SHARD, NULL);
    }
    return ok;
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Every tensor of every shard is found in g with its own values. */
static void check_merged(const plumb_gguf_t *g) {
    CHECK_EQ_INT(plumb_gguf_tensor_count(g), N_SHARDS * PER_SHARD);
    for (int i = 0; i < N_SHARDS; i++)
        for (int j = 0; j < PER_SHARD; j++) {
            char name[32];
            snprintf(name, sizeof name, "t%d.%d", i, j);
            const int64_t k = plumb_gguf_find_tensor(g, name);
            CHECK(k >= 0);
            plumb_gguf_tensor_info t;
            if (k < 0 || plumb_gguf_tensor(g, k, &t) != PLUMB_OK) continue;
            CHECK(strcmp(t.name, name) == 0);
            float want[8];
            tensor_values(i, j, want);
            CHECK(memcmp(t.data, want, sizeof want) == 0);
        }
    CHECK(plumb_gguf_find_key(g, "general.architecture") >= 0);
}

TEST(gguf_split_names) {
    char buf[64];
    CHECK_EQ_INT(plumb__gguf_split_path(buf, sizeof buf, "dir/model", 9, 0, 3), strlen("dir/model-00001-of-00003.gguf"));
    CHECK(strcmp(buf, "dir/model-00001-of-00003.gguf") == 0);
    CHECK_EQ_INT(plumb__gguf_split_path(buf, sizeof buf, "dir/model-xyz", 9, 11, 12), 29);
    CHECK(strcmp(buf, "dir/model-00012-of-00012.gguf") == 0);
    CHECK_EQ_INT(plumb__gguf_split_path(buf, 10, "dir/model", 9, 0, 3), 0); /* does not fit */
    CHECK_EQ_INT(plumb__gguf_split_prefix("dir/model-00001-of-00003.gguf", 0, 3), 9);
    CHECK_EQ_INT(plumb__gguf_split_prefix("dir/model-00002-of-00003.gguf", 1, 3), 9);
    CHECK_EQ_INT(plumb__gguf_split_prefix("dir/model-00002-of-00003.gguf", 0, 3), 0);
    CHECK_EQ_INT(plumb__gguf_split_prefix("dir/model-00001-of-00004.gguf", 0, 3), 0);
    CHECK_EQ_INT(plumb__gguf_split_prefix("-00001-of-00003.gguf", 0, 3), 0); /* empty prefix */
    CHECK_EQ_INT(plumb__gguf_split_prefix("model.gguf", 0, 3), 0);
    CHECK_EQ_INT(plumb__gguf_split_prefix("m-65535-of-65535.gguf", 65534, 65535), 1);
}

TEST(gguf_split_open_by_name_and_list) {
    char dir[64], paths[N_SHARDS][256];
    if (!make_dir(dir, sizeof dir)) return;
    CHECK(write_good(dir, paths));
    const uint64_t total = file_size(paths[0]) + file_size(paths[1]) + file_size(paths[2]);
    for (unsigned flags = 0; flags <= PLUMB_GGUF_OPEN_READ; flags += PLUMB_GGUF_OPEN_READ) {
        plumb_gguf_t *g = NULL;
        CHECK_STATUS(plumb__gguf_open_model(paths[0], flags, &g), PLUMB_OK);
        if (g) {
            check_merged(g);
            CHECK_EQ_INT(plumb__gguf_n_files(g), N_SHARDS);
            CHECK_EQ_INT(plumb__gguf_total_size(g), total);
            CHECK_EQ_INT(plumb_gguf_file_size(g), file_size(paths[0]));
            CHECK(plumb_gguf_is_file_mapping(g) == (flags == 0));
            plumb_gguf_free(g);
        }
        /* the same files under names that say nothing, as a list */
        char named[N_SHARDS][256];
        const char *list[N_SHARDS];
        for (int i = 0; i < N_SHARDS; i++) {
            snprintf(named[i], sizeof named[i], "%s/sha256-%c", dir, 'a' + i);
            CHECK(link(paths[i], named[i]) == 0 || access(named[i], F_OK) == 0);
            list[i] = named[i];
        }
        g = NULL;
        CHECK_STATUS(plumb__gguf_open_shards(list, N_SHARDS, flags, &g), PLUMB_OK);
        if (g) {
            check_merged(g);
            CHECK_EQ_INT(plumb__gguf_total_size(g), total);
            plumb_gguf_free(g);
        }
    }
    remove_dir(dir);
}

TEST(gguf_split_single_file_unchanged) {
    char dir[64], path[256];
    if (!make_dir(dir, sizeof dir)) return;
    snprintf(path, sizeof path, "%s/single.gguf", dir);
    plumb_gguf_writer_t *w;
    CHECK_STATUS(plumb_gguf_writer_create(&w), PLUMB_OK);
    const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const int64_t ne[1] = {8};
    CHECK_STATUS(plumb_gguf_writer_add_tensor(w, "a", PLUMB_TYPE_F32, 1, ne, v), PLUMB_OK);
    CHECK_STATUS(plumb_gguf_writer_write(w, path), PLUMB_OK);
    plumb_gguf_writer_free(w);
    plumb_gguf_t *g = NULL;
    CHECK_STATUS(plumb__gguf_open_model(path, 0, &g), PLUMB_OK);
    if (g) {
        CHECK_EQ_INT(plumb__gguf_n_files(g), 1);
        CHECK_EQ_INT(plumb__gguf_total_size(g), file_size(path));
        CHECK(plumb_gguf_is_file_mapping(g));
        plumb_gguf_free(g);
    }
    const char *list[1] = {path};
    g = NULL;
    CHECK_STATUS(plumb__gguf_open_shards(list, 1, 0, &g), PLUMB_OK);
    plumb_gguf_free(g);
    const char *two[2] = {path, path};
    g = NULL;
    CHECK_STATUS(plumb__gguf_open_shards(two, 2, 0, &g), PLUMB_E_INVALID_ARG);
    CHECK(g == NULL && strstr(plumb_last_error(), "not a split model"));
    remove_dir(dir);
}

/* Opens paths[0] by name; wants status `want` and a message holding `says`. */
static void check_fails(const char *path, plumb_status want, const char *says) {
    plumb_gguf_t *g = (plumb_gguf_t *)1;
    CHECK_STATUS(plumb__gguf_open_model(path, 0, &g), want);
    CHECK(g == NULL);
    if (!strstr(plumb_last_error(), says)) {
        CHECK(!"message");
        fprintf(stderr, "  message: %s (wanted '%s')\n", plumb_last_error(), says);
    }
}

TEST(gguf_split_errors) {
    char dir[64], paths[N_SHARDS][256];
    if (!make_dir(dir, sizeof dir)) return;
    CHECK(write_good(dir, paths));
    /* a shard other than the first names the first */
    check_fails(paths[1], PLUMB_E_INVALID_ARG, "m-00001-of-00003.gguf");
    /* a shard missing */
    unlink(paths[2]);
    check_fails(paths[0], PLUMB_E_IO, "m-00003-of-00003.gguf");
    /* split.no out of place */
    CHECK(write_shard(paths[2], 2, 1, N_SHARDS, N_SHARDS * PER_SHARD, NULL));
    check_fails(paths[0], PLUMB_E_FORMAT, "split.no is 1");
    /* split.no absent */
    CHECK(write_shard(paths[2], 2, -1, N_SHARDS, N_SHARDS * PER_SHARD, NULL));
    check_fails(paths[0], PLUMB_E_FORMAT, "no split.no");
    /* split.count disagreeing */
    CHECK(write_shard(paths[2], 2, 2, 4, N_SHARDS * PER_SHARD, NULL));
    check_fails(paths[0], PLUMB_E_FORMAT, "split.count is 4");
    /* a tensor in two shards */
    CHECK(write_shard(paths[2], 2, 2, N_SHARDS, N_SHARDS * PER_SHARD, "t0.0"));
    check_fails(paths[0], PLUMB_E_FORMAT, "tensor 't0.0' is also in");
    /* the tensor count wrong in every shard */
    for (int i = 0; i < N_SHARDS; i++) CHECK(write_shard(paths[i], i, i, N_SHARDS, N_SHARDS * PER_SHARD + 1, NULL));
    check_fails(paths[0], PLUMB_E_FORMAT, "hold 6 tensors");
    /* the list: wrong length, wrong order */
    CHECK(write_good(dir, paths));
    const char *two[2] = {paths[0], paths[1]}, *swapped[3] = {paths[0], paths[2], paths[1]};
    plumb_gguf_t *g = NULL;
    CHECK_STATUS(plumb__gguf_open_shards(two, 2, 0, &g), PLUMB_E_INVALID_ARG);
    CHECK(g == NULL && strstr(plumb_last_error(), "split.count is 3 but 2 files were given"));
    CHECK_STATUS(plumb__gguf_open_shards(swapped, 3, 0, &g), PLUMB_E_FORMAT);
    CHECK(g == NULL && strstr(plumb_last_error(), "its place in the list"));
    CHECK_STATUS(plumb__gguf_open_shards(NULL, 3, 0, &g), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__gguf_open_shards(two, 0, 0, &g), PLUMB_E_INVALID_ARG);
    remove_dir(dir);
}
