/* manifest.c — model artifacts: Docker Model Runner's OCI image manifest (config
 * application/vnd.docker.ai.model.config.v0.1+json, layers application/vnd.docker.ai.gguf.v3,
 * .license, .chat.template.jinja) and model config, written from a GGUF's metadata; read back
 * from untrusted JSON together with DMR's v0.2 configs and CNCF ModelPack v1 artifacts. The
 * mapping is documented in docs/oci.md. */
#include "oci/oci.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Docker Model Runner layer types plumb knows but does not use (not downloaded). */
static const char *const dmr_other_types[] = {
    "application/vnd.docker.ai.mmproj",         "application/vnd.docker.ai.safetensors",
    "application/vnd.docker.ai.model.file",     "application/vnd.docker.ai.dduf",
    "application/vnd.docker.ai.vllm.config.tar", "application/vnd.docker.ai.dir.tar",
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The kind of layer d (its media type and file name) in an artifact of format f; a type
 * that cannot be used is PLUMB_E_UNSUPPORTED naming it. */
static plumb_status classify(oci_format f, oci_desc *d, const char *what) {
    const char *mt = d->media_type;
    if (f != OCI_FORMAT_MODELPACK) {
        if (strcmp(mt, OCI_MT_GGUF) == 0) d->kind = OCI_LAYER_GGUF;
        else if (strcmp(mt, OCI_MT_LICENSE) == 0) d->kind = OCI_LAYER_LICENSE;
        else if (strcmp(mt, OCI_MT_TEMPLATE) == 0) d->kind = OCI_LAYER_TEMPLATE;
        else if (starts_with(mt, OCI_MT_GGUF "+"))
            return plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: %s: compressed GGUF (%s) is not supported", what, mt);
        else {
            for (size_t i = 0; i < sizeof dmr_other_types / sizeof *dmr_other_types; i++)
                if (strcmp(mt, dmr_other_types[i]) == 0) return PLUMB_OK; /* OCI_LAYER_OTHER */
            return plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: %s: unknown media type %s", what, mt);
        }
        return PLUMB_OK;
    }
    /* ModelPack: application/vnd.cncf.model.<weight|weight.config|doc|code|dataset>.v1.<raw|tar...> */
    static const char *const kinds[] = {"weight.config", "weight", "doc", "code", "dataset"};
    const char *prefix = "application/vnd.cncf.model.";
    if (starts_with(mt, prefix)) {
        const char *k = mt + strlen(prefix);
        for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
            size_t n = strlen(kinds[i]);
            if (strncmp(k, kinds[i], n) != 0 || strncmp(k + n, ".v1.", 4) != 0) continue;
            const char *pack = k + n + 4;
            bool raw = strcmp(pack, "raw") == 0;
            if (!raw && strcmp(pack, "tar") != 0 && strcmp(pack, "tar+gzip") != 0 && strcmp(pack, "tar+zstd") != 0) break;
            if (raw && i == 1 && ends_with(d->path, ".gguf")) d->kind = OCI_LAYER_GGUF;
            else if (raw && i == 2 && (starts_with(d->path, "LICENSE") || strstr(d->path, "/LICENSE")))
                d->kind = OCI_LAYER_LICENSE;
            else if (!raw && i == 1 && ends_with(d->path, ".gguf"))
                return plumb__fail(PLUMB_E_UNSUPPORTED,
                                   "manifest: %s: GGUF weights archived as %s are not supported (push them as %s)",
                                   what, mt, OCI_MT_MP_WEIGHT_RAW);
            return PLUMB_OK;
        }
    }
    return plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: %s: unknown media type %s", what, mt);
}

static plumb_status parse_desc(const cJSON *j, const char *what, oci_desc *d) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "mediaType");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(j, "digest");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "size");
    if (!cJSON_IsObject(j) || !cJSON_IsString(mt) || !cJSON_IsString(dg) || !cJSON_IsNumber(sz))
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s needs mediaType, digest and size", what);
    if (strlen(mt->valuestring) >= sizeof d->media_type)
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: media type too long", what);
    for (const char *c = mt->valuestring; *c; c++)
        if (*c <= ' ' || *c >= 0x7f) return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: media type is not printable ASCII", what);
    if (!oci_digest_valid(dg->valuestring))
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: bad digest (want sha256:<64 hex>)", what);
    double v = sz->valuedouble;
    if (!(v >= 0 && v <= (double)OCI_BLOB_MAX) || v != (double)(uint64_t)v)
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: size out of range", what);
    strcpy(d->media_type, mt->valuestring);
    strcpy(d->digest, dg->valuestring);
    d->size = (uint64_t)v;
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "annotations"), OCI_ANN_FILEPATH);
    if (cJSON_IsString(fp)) {
        size_t n = 0;
        for (const char *c = fp->valuestring; *c && n + 1 < sizeof d->path; c++) d->path[n++] = (*c > ' ' && *c < 0x7f) ? *c : '?';
        d->path[n] = 0;
    }
    return PLUMB_OK;
}

plumb_status oci_manifest_parse(const char *json, size_t len, oci_manifest *out) {
    memset(out, 0, sizeof *out);
    if (len > OCI_MANIFEST_MAX) return plumb__fail(PLUMB_E_RANGE, "manifest larger than %u bytes", OCI_MANIFEST_MAX);
    cJSON *j = cJSON_ParseWithLength(json, len);
    plumb_status st = PLUMB_OK;
    if (!cJSON_IsObject(j)) {
        st = plumb__fail(PLUMB_E_FORMAT, "manifest: not a JSON object");
        goto done;
    }
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(j, "schemaVersion");
    if (!cJSON_IsNumber(sv) || sv->valuedouble != 2) {
        st = plumb__fail(PLUMB_E_FORMAT, "manifest: schemaVersion is not 2");
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "mediaType");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, OCI_MT_MANIFEST) != 0)) {
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: unsupported media type %.100s (want %s)",
                         cJSON_IsString(mt) ? mt->valuestring : "(not a string)", OCI_MT_MANIFEST);
        goto done;
    }
    if ((st = parse_desc(cJSON_GetObjectItemCaseSensitive(j, "config"), "config", &out->config))) goto done;
    const char *ct = out->config.media_type;
    if (strcmp(ct, OCI_MT_CONFIG) == 0) out->format = OCI_FORMAT_DMR;
    else if (strcmp(ct, OCI_MT_CONFIG_V02) == 0) out->format = OCI_FORMAT_DMR_V02;
    else if (strcmp(ct, OCI_MT_MP_CONFIG) == 0) out->format = OCI_FORMAT_MODELPACK;
    else {
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: unsupported config media type %s (want %s, %s or %s)", ct,
                         OCI_MT_CONFIG, OCI_MT_CONFIG_V02, OCI_MT_MP_CONFIG);
        goto done;
    }
    if (out->config.size > OCI_CONFIG_MAX) {
        st = plumb__fail(PLUMB_E_RANGE, "manifest: config larger than %u bytes", OCI_CONFIG_MAX);
        goto done;
    }
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(j, "layers");
    if (!cJSON_IsArray(layers)) {
        st = plumb__fail(PLUMB_E_FORMAT, "manifest: no layers array");
        goto done;
    }
    const cJSON *l;
    cJSON_ArrayForEach(l, layers) {
        if (out->n_layers == OCI_MAX_LAYERS) {
            st = plumb__fail(PLUMB_E_RANGE, "manifest: more than %d layers", OCI_MAX_LAYERS);
            goto done;
        }
        char what[32];
        snprintf(what, sizeof what, "layer %d", out->n_layers);
        oci_desc *d = &out->layers[out->n_layers];
        if ((st = parse_desc(l, what, d)) || (st = classify(out->format, d, what))) goto done;
        if (d->kind == OCI_LAYER_GGUF) out->n_gguf++;
        out->n_layers++;
    }
    if (out->n_gguf == 0)
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: no GGUF layer (%s)",
                         out->format == OCI_FORMAT_MODELPACK ? OCI_MT_MP_WEIGHT_RAW " with a .gguf " OCI_ANN_FILEPATH : OCI_MT_GGUF);
done:
    cJSON_Delete(j);
    return st;
}

static cJSON *desc_json(const oci_desc *d) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "mediaType", d->media_type);
    cJSON_AddStringToObject(o, "digest", d->digest);
    cJSON_AddNumberToObject(o, "size", (double)d->size);
    if (d->path[0]) cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "annotations"), OCI_ANN_FILEPATH, d->path);
    return o;
}

char *oci_manifest_write(const oci_manifest *m) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "schemaVersion", 2);
    cJSON_AddStringToObject(j, "mediaType", OCI_MT_MANIFEST);
    cJSON_AddItemToObject(j, "config", desc_json(&m->config));
    cJSON *arr = cJSON_AddArrayToObject(j, "layers");
    for (int i = 0; arr && i < m->n_layers; i++) cJSON_AddItemToArray(arr, desc_json(&m->layers[i]));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

char *oci_config_write(const oci_model_meta *meta, const oci_manifest *m) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *c = cJSON_AddObjectToObject(j, "config");
    cJSON_AddStringToObject(c, "format", "gguf");
    if (meta->quantization[0]) cJSON_AddStringToObject(c, "quantization", meta->quantization);
    cJSON_AddStringToObject(c, "parameters", meta->parameters);
    cJSON_AddStringToObject(c, "architecture", meta->architecture);
    cJSON_AddStringToObject(c, "size", meta->size);
    if (meta->context_size > 0) cJSON_AddNumberToObject(c, "context_size", (double)meta->context_size);
    cJSON *gg = cJSON_AddObjectToObject(c, "gguf");
    if (gg && meta->context_length > 0) {
        char key[128], val[32];
        snprintf(key, sizeof key, "%s.context_length", meta->architecture);
        snprintf(val, sizeof val, "%" PRId64, meta->context_length);
        cJSON_AddStringToObject(gg, key, val);
    }
    if (gg) cJSON_AddStringToObject(gg, "general.architecture", meta->architecture);
    cJSON *d = cJSON_AddObjectToObject(j, "descriptor");
    char now[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(d, "created", now);
    cJSON *r = cJSON_AddObjectToObject(j, "rootfs");
    cJSON_AddStringToObject(r, "type", "rootfs");
    cJSON *ids = cJSON_AddArrayToObject(r, "diff_ids");
    for (int i = 0; ids && i < m->n_layers; i++) cJSON_AddItemToArray(ids, cJSON_CreateString(m->layers[i].digest));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static void copy_field(const cJSON *c, const char *key, char *dst, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!cJSON_IsString(v)) return;
    size_t n = 0;
    /* printable ASCII only: the values end up on a terminal */
    for (const char *p = v->valuestring; *p && n + 1 < cap; p++) dst[n++] = (*p >= ' ' && *p < 0x7f) ? *p : '?';
    dst[n] = 0;
}

plumb_status oci_config_parse(const char *json, size_t len, oci_format format, oci_model_meta *out) {
    memset(out, 0, sizeof *out);
    if (len > OCI_CONFIG_MAX) return plumb__fail(PLUMB_E_RANGE, "config larger than %u bytes", OCI_CONFIG_MAX);
    cJSON *j = cJSON_ParseWithLength(json, len);
    const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "config") : NULL;
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_FORMAT, "model config: not a JSON object with a \"config\" object");
    }
    /* ModelPack says "GGUF" or "gguf"; DMR "gguf" */
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "format");
    if (f && (!cJSON_IsString(f) || strcasecmp(f->valuestring, "gguf") != 0)) {
        char got[40] = "(not a string)";
        if (cJSON_IsString(f)) copy_field(c, "format", got, sizeof got);
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_UNSUPPORTED, "model config: format is \"%s\", not \"gguf\"", got);
    }
    copy_field(c, "architecture", out->architecture, sizeof out->architecture);
    copy_field(c, "quantization", out->quantization, sizeof out->quantization);
    copy_field(c, format == OCI_FORMAT_MODELPACK ? "paramSize" : "parameters", out->parameters, sizeof out->parameters);
    copy_field(c, "size", out->size, sizeof out->size);
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(c, "context_size");
    if (cJSON_IsNumber(cs) && cs->valuedouble > 0 && cs->valuedouble < 1e12) out->context_size = (int64_t)cs->valuedouble;
    cJSON_Delete(j);
    return PLUMB_OK;
}
