/* model_source.c — what `-m` names: a GGUF file, or a model reference
 * (registry/ns/model:tag, ns/model, ...@sha256:...) found in the store or pulled into it on
 * first use. A path that exists is always a file; so is anything ending in ".gguf" or
 * starting with '/', "./", "../" or '~' (it is never looked up in a registry). */
#include "cli.h"
#include "oci/oci.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool looks_like_path(const char *a) {
    size_t n = strlen(a);
    return (n >= 5 && strcmp(a + n - 5, ".gguf") == 0) || a[0] == '/' || a[0] == '~' || strncmp(a, "./", 2) == 0 ||
           strncmp(a, "../", 3) == 0;
}

int cli_model_source(const char *cmd, const char *arg, cli_model_src *out) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(arg, &sb) == 0 || looks_like_path(arg)) {
        snprintf(out->path, sizeof out->path, "%s", arg);
        return 0;
    }
    oci_ref ref;
    plumb_status st = oci_ref_parse(arg, &ref);
    if (st) {
        fprintf(stderr, "plumb %s: '%s' is neither a file nor a model reference (%s)\n", cmd, arg, plumb_last_error());
        return 1;
    }
    oci_store s;
    if ((st = oci_store_open(&s))) {
        cli_error(cmd, st, NULL);
        return 1;
    }
    oci_ref_format(&ref, out->ref, sizeof out->ref);
    char mdigest[OCI_DIGEST_LEN + 1];
    oci_model_files mf;
    st = oci_store_index_get(&s, out->ref, mdigest);
    if (st == PLUMB_OK) st = oci_store_model_files(&s, mdigest, &mf);
    if (st == PLUMB_E_NOT_FOUND) { /* not pulled yet, or a layer has gone: pull it */
        fprintf(stderr, "plumb %s: pulling %s\n", cmd, out->ref);
        st = oci_pull(&s, &ref, false, mdigest);
        if (!st) st = oci_store_model_files(&s, mdigest, &mf);
    }
    if (st) {
        fprintf(stderr, "plumb %s: %s: %s\n", cmd, out->ref, plumb_last_error());
        return 1;
    }
    snprintf(out->path, sizeof out->path, "%s", mf.gguf);
    snprintf(out->chat_template, sizeof out->chat_template, "%s", mf.chat_template);
    snprintf(out->manifest_digest, sizeof out->manifest_digest, "%s", mf.manifest_digest);
    out->context_size = mf.meta.context_size;
    return 0;
}

int gen_options_model(gen_options *o, const char *cmd, cli_model_src *src) {
    if (cli_model_source(cmd, o->model, src)) return 1;
    o->model = src->path;
    /* the artifact's template and context size stand in for options not given */
    if (src->chat_template[0] && !o->chat_format && !o->chat_template_file) o->chat_template_file = src->chat_template;
    if (src->context_size > 0 && o->ctx.n_ctx == 0)
        o->ctx.n_ctx = src->context_size > (1 << 24) ? (1 << 24) : (int32_t)src->context_size;
    return 0;
}
