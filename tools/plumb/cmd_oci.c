/* cmd_oci.c — models as OCI artifacts: `plumb pull REF`, `plumb list`, `plumb rm REF`
 * (`plumb push`: cmd_push.c). The store, the registry client and the format live in src/oci/
 * (library plumb_oci); this file parses arguments and prints. */
#include "cli.h"
#include "oci/oci.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

static int fail(const char *cmd, plumb_status st) {
    (void)st;
    const char *e = plumb_last_error();
    fprintf(stderr, "plumb %s: %s\n", cmd, e && *e ? e : plumb_status_message(st));
    return 1;
}

static bool is_help(const char *a) {
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* ---- pull ---- */
static int pull(const char *refstr, bool insecure) {
    oci_ref ref;
    oci_store s;
    plumb_status st = oci_ref_parse(refstr, &ref);
    if (st || (st = oci_store_open(&s))) return fail("pull", st);
    char name[700], mdigest[OCI_DIGEST_LEN + 1];
    oci_ref_format(&ref, name, sizeof name);
    oci_model_files mf;
    if ((st = oci_pull(&s, &ref, insecure, mdigest)) || (st = oci_store_model_files(&s, mdigest, &mf)))
        return fail("pull", st);
    printf("%s %s\n%s\n", name, mdigest, mf.gguf);
    return 0;
}

int cmd_pull(int argc, char **argv) {
    const char *ref = NULL;
    bool insecure = false;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: plumb pull REF [--insecure]\n"
                   "  downloads a model (registry/ns/model:tag, ns/model, or ...@sha256:DIGEST) into the\n"
                   "  store ($PLUMB_HOME, default ~/.cache/plumb), verifying every blob; prints the\n"
                   "  reference, the manifest digest and the GGUF's path\n"
                   "  --insecure   plain HTTP to a registry that is not on loopback\n");
            return 0;
        }
        if (strcmp(argv[i], "--insecure") == 0) insecure = true;
        else if (argv[i][0] == '-' || ref) {
            fprintf(stderr, "plumb pull: unexpected argument '%s' (see plumb pull --help)\n", argv[i]);
            return 2;
        } else ref = argv[i];
    }
    if (!ref) {
        fprintf(stderr, "plumb pull: no reference given (see plumb pull --help)\n");
        return 2;
    }
    return pull(ref, insecure);
}

/* ---- list ---- */
static int list_one(const char *ref, const char *digest, void *u) {
    const oci_store *s = u;
    oci_model_files mf;
    char pulled[32] = "", d[OCI_DIGEST_LEN + 1];
    const char *note = "";
    if (oci_store_model_files(s, digest, &mf)) note = " (incomplete or unreadable: pull it again)";
    if (oci_store_index_entry(s, ref, d, pulled) || !pulled[0]) snprintf(pulled, sizeof pulled, "-");
    const oci_model_meta *m = &mf.meta;
    printf("%-50s %-19.19s %12" PRIu64 "  %-10s %-8s %-20s%s\n", ref, digest, mf.size,
           m->architecture[0] ? m->architecture : "-", m->quantization[0] ? m->quantization : "-", pulled, note);
    return 0;
}

int cmd_list(int argc, char **argv) {
    if (argc > 1 && is_help(argv[1])) {
        printf("usage: plumb list\n  the models in the store: reference, manifest digest, size, architecture, quantization,\n"
               "  when it was pulled (UTC)\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "plumb list: unexpected argument '%s' (plumb list takes none)\n", argv[1]);
        return 2;
    }
    oci_store s;
    plumb_status st = oci_store_open(&s);
    if (st) return fail("list", st);
    printf("%-50s %-19s %12s  %-10s %-8s %-20s\n", "REFERENCE", "DIGEST", "SIZE", "ARCH", "QUANT", "PULLED");
    if ((st = oci_store_index_each(&s, list_one, &s))) return fail("list", st);
    return 0;
}

/* ---- rm ---- */
int cmd_rm(int argc, char **argv) {
    if (argc > 1 && is_help(argv[1])) {
        printf("usage: plumb rm REF\n  removes a reference from the store and frees the blobs no reference uses\n");
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "plumb rm: needs one reference (see plumb rm --help)\n");
        return 2;
    }
    oci_ref ref;
    oci_store s;
    plumb_status st = oci_ref_parse(argv[1], &ref);
    if (st || (st = oci_store_open(&s))) return fail("rm", st);
    char name[700];
    oci_ref_format(&ref, name, sizeof name);
    if ((st = oci_store_index_remove(&s, name))) return fail("rm", st);
    uint64_t nb, bytes;
    if ((st = oci_store_gc(&s, &nb, &bytes))) return fail("rm", st);
    printf("removed %s; freed %" PRIu64 " blobs (%" PRIu64 " bytes)\n", name, nb, bytes);
    return 0;
}
