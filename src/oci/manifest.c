/* manifest.c — Docker Model Runner's artifact format: the OCI image manifest (config
 * application/vnd.docker.ai.model.config.v0.1+json, layers application/vnd.docker.ai.gguf.v3,
 * .license, .chat.template.jinja) and the model config, written from a GGUF's metadata and
 * read back from untrusted JSON. The mapping is documented in docs/oci.md. */
#include "oci/oci.h"

#include "core/error.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool known_layer_type(const char *mt) {
    return strcmp(mt, OCI_MT_GGUF) == 0 || strcmp(mt, OCI_MT_LICENSE) == 0 || strcmp(mt, OCI_MT_TEMPLATE) == 0;
}

static plumb_status parse_desc(const cJSON *j, const char *what, oci_desc *d) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "mediaType");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(j, "digest");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "size");
    if (!cJSON_IsObject(j) || !cJSON_IsString(mt) || !cJSON_IsString(dg) || !cJSON_IsNumber(sz))
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s needs mediaType, digest and size", what);
    if (strlen(mt->valuestring) >= sizeof d->media_type)
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: media type too long", what);
    if (!oci_digest_valid(dg->valuestring))
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: bad digest (want sha256:<64 hex>)", what);
    double v = sz->valuedouble;
    if (!(v >= 0 && v <= (double)OCI_BLOB_MAX) || v != (double)(uint64_t)v)
        return plumb__fail(PLUMB_E_FORMAT, "manifest: %s: size out of range", what);
    strcpy(d->media_type, mt->valuestring);
    strcpy(d->digest, dg->valuestring);
    d->size = (uint64_t)v;
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
    if (strcmp(out->config.media_type, OCI_MT_CONFIG) != 0) {
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: unsupported config media type %s (want %s)",
                         out->config.media_type, OCI_MT_CONFIG);
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
    int n_gguf = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, layers) {
        if (out->n_layers == OCI_MAX_LAYERS) {
            st = plumb__fail(PLUMB_E_RANGE, "manifest: more than %d layers", OCI_MAX_LAYERS);
            goto done;
        }
        char what[32];
        snprintf(what, sizeof what, "layer %d", out->n_layers);
        oci_desc *d = &out->layers[out->n_layers];
        if ((st = parse_desc(l, what, d))) goto done;
        if (!known_layer_type(d->media_type)) {
            st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: %s: unknown media type %s", what, d->media_type);
            goto done;
        }
        if (strcmp(d->media_type, OCI_MT_GGUF) == 0) n_gguf++;
        out->n_layers++;
    }
    if (n_gguf == 0) st = plumb__fail(PLUMB_E_UNSUPPORTED, "manifest: no GGUF layer (%s)", OCI_MT_GGUF);
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

plumb_status oci_config_parse(const char *json, size_t len, oci_model_meta *out) {
    memset(out, 0, sizeof *out);
    if (len > OCI_CONFIG_MAX) return plumb__fail(PLUMB_E_RANGE, "config larger than %u bytes", OCI_CONFIG_MAX);
    cJSON *j = cJSON_ParseWithLength(json, len);
    const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "config") : NULL;
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_FORMAT, "model config: not a JSON object with a \"config\" object");
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "format");
    if (f && (!cJSON_IsString(f) || strcmp(f->valuestring, "gguf") != 0)) {
        cJSON_Delete(j);
        return plumb__fail(PLUMB_E_UNSUPPORTED, "model config: format is not \"gguf\"");
    }
    copy_field(c, "architecture", out->architecture, sizeof out->architecture);
    copy_field(c, "quantization", out->quantization, sizeof out->quantization);
    copy_field(c, "parameters", out->parameters, sizeof out->parameters);
    copy_field(c, "size", out->size, sizeof out->size);
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(c, "context_size");
    if (cJSON_IsNumber(cs) && cs->valuedouble > 0 && cs->valuedouble < 1e12) out->context_size = (int64_t)cs->valuedouble;
    cJSON_Delete(j);
    return PLUMB_OK;
}
