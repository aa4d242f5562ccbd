/* cmd_push.c — `plumb push MODEL.gguf REF`: packages a GGUF (with its license and chat
 * template) as Docker Model Runner's OCI artifact and uploads it. A llama.cpp split model
 * (the first shard, <prefix>-00001-of-0000N.gguf) is pushed as N GGUF layers in shard order,
 * as DMR does. A blob the store knows from another repository of the same registry is
 * mounted from there rather than uploaded. The format and the registry client live in
 * src/oci/; this file reads the GGUF's metadata and drives the upload. */
#include "cli.h"
#include "oci/oci.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHARDS_MAX (OCI_MAX_LAYERS - 2) /* room for the license and the template */

static int fail(plumb_status st) {
    cli_error("push", st, NULL);
    return 1;
}

/* "plumb push: <message>" on stderr; 0 (no files) for model_files. */
#define fail_line(...) (cli_errorf("push", __VA_ARGS__), 0)

/* The sum of the tensors' element counts. */
static int64_t n_params(const plumb_gguf_t *g) {
    int64_t n = 0;
    for (int64_t t = 0; t < plumb_gguf_tensor_count(g); t++) {
        plumb_gguf_tensor_info ti;
        if (plumb_gguf_tensor(g, t, &ti)) continue;
        int64_t e = 1;
        for (int d = 0; d < ti.n_dims; d++) e *= ti.ne[d];
        n += e;
    }
    return n;
}

/* Metadata of the first (or only) GGUF through plumb's public GGUF API. */
static void meta_from_gguf(const plumb_gguf_t *g, oci_model_meta *out) {
    memset(out, 0, sizeof *out);
    plumb_str arch;
    if (plumb_gguf_get_str(g, "general.architecture", &arch) == PLUMB_OK && arch.len < sizeof out->architecture) {
        memcpy(out->architecture, arch.ptr, arch.len);
        out->architecture[arch.len] = 0;
        char key[128];
        snprintf(key, sizeof key, "%s.context_length", out->architecture);
        uint64_t ctx;
        if (plumb_gguf_get_count(g, key, &ctx) == PLUMB_OK && ctx <= INT64_MAX) out->context_length = (int64_t)ctx;
    }
    uint64_t ft;
    const char *qname = NULL;
    if (cli_file_type(g, &ft, &qname) && qname) snprintf(out->quantization, sizeof out->quantization, "%s", qname);
}

/* parameters as gguf-parser-go prints them (what DMR writes and shows): "268.10 M", "50.11 K",
 * "1 B" — two decimals, ".00" trimmed, the unit after a space (none below 1000); size in bytes. */
static void set_params(oci_model_meta *m, int64_t n, uint64_t size) {
    static const struct {
        double base;
        const char *unit;
    } units[] = {{1e15, "Q"}, {1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}, {1, ""}};
    if (n <= 0) {
        snprintf(m->parameters, sizeof m->parameters, "0");
    } else {
        int u = 0;
        while (units[u].base > 1 && (double)n < units[u].base) u++;
        char num[16]; /* at most "9223.37" (INT64_MAX in Q) */
        snprintf(num, sizeof num, "%.2f", (double)n / units[u].base);
        size_t l = strlen(num);
        if (l > 3 && strcmp(num + l - 3, ".00") == 0) num[l - 3] = 0;
        snprintf(m->parameters, sizeof m->parameters, "%s %s", num, units[u].unit);
    }
    snprintf(m->size, sizeof m->size, "%" PRIu64, size);
}

/* A shard's split.no and split.count (llama.cpp writes u16; any count width is read). */
static bool split_keys(const plumb_gguf_t *g, uint64_t *no, uint64_t *count) {
    return plumb_gguf_get_count(g, "split.count", count) == PLUMB_OK &&
           plumb_gguf_get_count(g, "split.no", no) == PLUMB_OK;
}

/* The GGUF files to push, in order, into paths (SHARDS_MAX entries of 4096), and the
 * model's metadata: one file, or every shard of a llama.cpp split when model is its first
 * shard (split.count > 1). Returns the count, or 0 after printing one line. */
static int model_files(const char *model, char (*paths)[4096], oci_model_meta *meta) {
    plumb_gguf_t *g;
    plumb_status st = plumb_gguf_open(model, &g);
    if (st) {
        fail(st);
        return 0;
    }
    meta_from_gguf(g, meta);
    int64_t params = n_params(g);
    uint64_t size = plumb_gguf_file_size(g);
    uint64_t no = 0, count = 0;
    bool split = plumb_gguf_find_key(g, "split.count") >= 0;
    if (split && !split_keys(g, &no, &count)) {
        plumb_gguf_free(g);
        return fail_line("%s: split.count and split.no must be counts", model);
    }
    plumb_gguf_free(g);
    snprintf(paths[0], 4096, "%s", model);
    if (!split || count <= 1) {
        set_params(meta, params, size);
        return 1;
    }
    unsigned long long n = count;
    if (count > SHARDS_MAX) return fail_line("%s: a split of %llu shards is more than %d layers", model, n, SHARDS_MAX);
    /* "<prefix>-00001-of-0000N.gguf", as llama.cpp's llama_split_path names shards */
    char tail[64];
    snprintf(tail, sizeof tail, "-%05llu-of-%05llu.gguf", (unsigned long long)no + 1, n);
    size_t ml = strlen(model), tl = strlen(tail);
    if (no != 0)
        return fail_line("%s is shard %llu of %llu of a split model; push its first shard (<prefix>-00001-of-%05llu.gguf)",
                         model, (unsigned long long)no + 1, n, n);
    if (ml <= tl || strcmp(model + ml - tl, tail) != 0 || ml - tl + 32 >= 4096)
        return fail_line("%s: the first shard of a split model must be named <prefix>-00001-of-%05llu.gguf", model, n);
    for (uint64_t i = 1; i < count; i++) {
        char *p = paths[i];
        snprintf(p, 4096, "%.*s-%05llu-of-%05llu.gguf", (int)(ml - tl), model, (unsigned long long)i + 1, n);
        struct stat sb;
        if (stat(p, &sb) != 0)
            return fail_line("split model: shard %llu of %llu is missing: %s", (unsigned long long)i + 1, n, p);
        if ((st = plumb_gguf_open(p, &g))) {
            fail(st);
            return 0;
        }
        uint64_t sno = 0, scount = 0;
        bool ok = split_keys(g, &sno, &scount) && sno == i && scount == count;
        params += n_params(g);
        size += plumb_gguf_file_size(g);
        plumb_gguf_free(g);
        if (!ok)
            return fail_line("%s: its split.no and split.count do not say shard %llu of %llu", p,
                             (unsigned long long)i + 1, n);
    }
    set_params(meta, params, size);
    return (int)count;
}

/* ---- cross-repository mount: which repository of the target's registry the store knows
 * each layer from (the index's references -> manifests -> layer digests) ---- */
typedef struct mount_scan {
    const oci_store *s;
    const oci_ref *target;
    const oci_manifest *ours;
    char (*from)[256]; /* per layer of ours: a repository, or "" */
    oci_manifest *theirs;
} mount_scan;

static int scan_ref(const char *refstr, const char *digest, void *u) {
    mount_scan *ms = u;
    oci_ref r;
    if (oci_ref_parse(refstr, &r) || strcmp(r.registry, ms->target->registry) != 0 ||
        strcmp(r.repo, ms->target->repo) == 0)
        return 0;
    char *b = NULL;
    size_t n = 0;
    if (oci_store_read(ms->s, digest, OCI_MANIFEST_MAX, &b, &n) == PLUMB_OK &&
        oci_manifest_parse(b, n, ms->theirs) == PLUMB_OK) {
        for (int i = 0; i < ms->ours->n_layers; i++)
            for (int j = 0; !ms->from[i][0] && j < ms->theirs->n_layers; j++)
                if (strcmp(ms->ours->layers[i].digest, ms->theirs->layers[j].digest) == 0)
                    snprintf(ms->from[i], sizeof ms->from[i], "%s", r.repo);
    }
    free(b);
    return 0;
}

/* Fills from[] for m's layers; a store that cannot be opened or read only means no mounts. */
static void mount_sources(const oci_ref *target, const oci_manifest *m, char (*from)[256]) {
    oci_store s;
    mount_scan ms = {.s = &s, .target = target, .ours = m, .from = from, .theirs = malloc(sizeof(oci_manifest))};
    if (ms.theirs && oci_store_open(&s) == PLUMB_OK) oci_store_index_each(&s, scan_ref, &ms);
    free(ms.theirs);
}

static plumb_status push_one(oci_client *c, const oci_desc *d, const char *from, const char *path, const void *data,
                             size_t len) {
    oci_push_how how;
    if (from && !from[0]) from = NULL;
    plumb_status st = oci_client_push_blob(c, d, from, path, data, len, &how);
    if (st) return st;
    if (how == OCI_PUSH_EXISTS) oci_progress_note(d->media_type, d->digest, "exists, skipped");
    else if (how == OCI_PUSH_MOUNTED) oci_progress_note(d->media_type, d->digest, "mounted from %s", from ? from : "?");
    else if (!path) oci_progress_note(d->media_type, d->digest, "pushed %" PRIu64 " B", d->size);
    return PLUMB_OK;
}

int cmd_push(int argc, char **argv) {
    const char *model = NULL, *refstr = NULL, *license = NULL, *tmpl = NULL;
    bool insecure = false;
    long long ctx = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: plumb push MODEL.gguf REF [--license FILE] [--chat-template FILE] [--context-size N] [--insecure]\n"
                   "  packages a GGUF as Docker Model Runner's OCI artifact and pushes it to REF; a split\n"
                   "  model's first shard (<prefix>-00001-of-0000N.gguf) pushes all N shards as layers\n"
                   "  --license FILE        add a license layer\n"
                   "  --chat-template FILE  add a Jinja chat template layer\n"
                   "  --context-size N      record a context size in the model config\n"
                   "  --insecure            plain HTTP to a registry that is not on loopback\n");
            return 0;
        }
        if (strcmp(a, "--insecure") == 0) insecure = true;
        else if ((strcmp(a, "--license") == 0 || strcmp(a, "--chat-template") == 0 || strcmp(a, "--context-size") == 0)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plumb push: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (a[2] == 'l') license = v;
            else if (a[3] == 'h') tmpl = v;
            else {
                char *end;
                ctx = strtoll(v, &end, 10);
                if (*end || ctx <= 0 || ctx > (1 << 30)) {
                    fprintf(stderr, "plumb push: --context-size '%s' is not a positive count\n", v);
                    return 2;
                }
            }
        } else if (a[0] == '-' || (model && refstr)) {
            fprintf(stderr, "plumb push: unexpected argument '%s' (see plumb push --help)\n", a);
            return 2;
        } else if (!model) model = a;
        else refstr = a;
    }
    if (!model || !refstr) {
        fprintf(stderr, "plumb push: needs MODEL.gguf and REF (see plumb push --help)\n");
        return 2;
    }
    oci_ref ref;
    plumb_status st = oci_ref_parse(refstr, &ref);
    if (st) return fail(st);
    if (!ref.tag[0]) {
        fprintf(stderr, "plumb push: %s: push needs a tag, not a digest\n", refstr);
        return 2;
    }
    ref.digest[0] = 0;

    /* the layers: the GGUF's shards in order, then the license and the template */
    char (*paths)[4096] = calloc(SHARDS_MAX + 2, sizeof *paths);
    oci_manifest *m = calloc(1, sizeof *m);
    char (*from)[256] = calloc(OCI_MAX_LAYERS, sizeof *from);
    if (!paths || !m || !from) {
        free(paths), free(m), free(from);
        return fail(PLUMB_E_NOMEM);
    }
    oci_model_meta meta;
    int n_gguf = model_files(model, paths, &meta);
    if (n_gguf == 0) {
        free(paths), free(m), free(from);
        return 1;
    }
    meta.context_size = ctx;
    for (int i = 0; i < n_gguf; i++) {
        snprintf(m->layers[i].media_type, sizeof m->layers[i].media_type, "%s", OCI_MT_GGUF);
        m->layers[i].kind = OCI_LAYER_GGUF;
    }
    m->n_layers = n_gguf;
    const char *extra[2] = {license, tmpl}, *extra_mt[2] = {OCI_MT_LICENSE, OCI_MT_TEMPLATE};
    const oci_layer_kind extra_kind[2] = {OCI_LAYER_LICENSE, OCI_LAYER_TEMPLATE};
    for (int k = 0; k < 2; k++) {
        if (!extra[k]) continue;
        oci_desc *d = &m->layers[m->n_layers];
        snprintf(paths[m->n_layers++], 4096, "%s", extra[k]);
        snprintf(d->media_type, sizeof d->media_type, "%s", extra_mt[k]);
        d->kind = extra_kind[k];
    }
    for (int i = 0; i < m->n_layers && !st; i++) st = oci_sha256_file(paths[i], m->layers[i].digest, &m->layers[i].size);
    m->n_gguf = n_gguf;
    char *cfg = st ? NULL : oci_config_write(&meta, m);
    if (!st && !cfg) st = PLUMB_E_NOMEM;
    if (!st) {
        snprintf(m->config.media_type, sizeof m->config.media_type, "%s", OCI_MT_CONFIG);
        oci_sha256_bytes(cfg, strlen(cfg), m->config.digest);
        m->config.size = strlen(cfg);
    }
    char *man = st ? NULL : oci_manifest_write(m);
    if (!st && !man) st = PLUMB_E_NOMEM;
    if (!st) mount_sources(&ref, m, from);
    oci_client *c = NULL;
    if (!st) st = oci_client_create(&ref, insecure, true, &c);
    for (int i = 0; i < m->n_layers && !st; i++) st = push_one(c, &m->layers[i], from[i], paths[i], NULL, 0);
    if (!st) st = push_one(c, &m->config, NULL, NULL, cfg, strlen(cfg));
    if (!st) st = oci_client_put_manifest(c, man, strlen(man));
    char mdigest[OCI_DIGEST_LEN + 1] = "";
    if (!st) oci_sha256_bytes(man, strlen(man), mdigest);
    oci_client_free(c);
    free(cfg);
    free(man);
    free(m);
    free(paths);
    free(from);
    if (st) return fail(st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    printf("%s %s\n", name, mdigest);
    return 0;
}
