/* registry.c — the kinds of backend plumb was built with, the CPU first, and the lookup of a
 * device by name ("cpu", "opencl", "opencl:1"). A new backend adds its registration here. */
#include "backend/backend.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const plumb_backend_reg plumb__backend_cpu;
#ifdef PLUMB_HAVE_OPENCL
extern const plumb_backend_reg plumb__backend_opencl;
#endif
extern const plumb_backend_reg plumb__backend_remote;

const plumb_backend_reg *const plumb__backend_regs[] = {
    &plumb__backend_cpu,
#ifdef PLUMB_HAVE_OPENCL
    &plumb__backend_opencl,
#endif
    &plumb__backend_remote,
    NULL,
};

/* "cpu:0, opencl:0 (pthread-...)" into buf: every device there is. */
static void list_devices(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int r = 0; plumb__backend_regs[r]; r++) {
        const plumb_backend_reg *reg = plumb__backend_regs[r];
        const char *why = NULL;
        const int n = reg->device_count(&why);
        for (int i = 0; i < n && used < size; i++) {
            plumb_device_info info;
            const bool named = reg->device_info(i, &info) == PLUMB_OK;
            int w = snprintf(buf + used, size - used, "%s%s:%d (%s)", used ? ", " : "", reg->name, i, named ? info.name : "?");
            used += w > 0 ? (size_t)w : 0;
        }
        if (n == 0 && used < size) {
            int w = snprintf(buf + used, size - used, "%s%s: none (%s)", used ? ", " : "", reg->name, why ? why : "no device");
            used += w > 0 ? (size_t)w : 0;
        }
    }
}

plumb_status plumb_backend_lookup(const char *spec, const plumb_backend_reg **reg, int *device) {
    char devices[1024];
    const char *colon = spec ? strchr(spec, ':') : NULL;
    const size_t name_len = colon ? (size_t)(colon - spec) : spec ? strlen(spec) : 0;
    int index = 0;
    for (int r = 0; spec && plumb__backend_regs[r]; r++) { /* named by an address */
        const plumb_backend_reg *g = plumb__backend_regs[r];
        if (!g->create_at || strlen(g->name) != name_len || strncmp(g->name, spec, name_len) != 0) continue;
        if (!colon || !colon[1])
            return plumb__fail(PLUMB_E_NOT_FOUND, "device \"%s\": %s devices are named by address: %s:HOST:PORT", spec,
                               g->name, g->name);
        *reg = g;
        *device = -1;
        return PLUMB_OK;
    }
    if (colon) {
        char *end = NULL;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || v < 0 || v > 1000) {
            list_devices(devices, sizeof devices);
            return plumb__fail(PLUMB_E_NOT_FOUND, "device \"%s\": the index after ':' must be a number; devices: %s", spec, devices);
        }
        index = (int)v;
    }
    for (int r = 0; spec && plumb__backend_regs[r]; r++) {
        const plumb_backend_reg *g = plumb__backend_regs[r];
        if (strlen(g->name) != name_len || strncmp(g->name, spec, name_len) != 0) continue;
        const char *why = NULL;
        const int n = g->device_count(&why);
        if (index >= n) {
            list_devices(devices, sizeof devices);
            if (n == 0)
                return plumb__fail(PLUMB_E_NOT_FOUND, "device \"%s\": no %s device (%s); devices: %s", spec, g->name,
                                   why ? why : "none found", devices);
            return plumb__fail(PLUMB_E_NOT_FOUND, "device \"%s\" does not exist; devices: %s", spec, devices);
        }
        *reg = g;
        *device = index;
        return PLUMB_OK;
    }
    list_devices(devices, sizeof devices);
    return plumb__fail(PLUMB_E_NOT_FOUND, "unknown device \"%s\"; devices: %s", spec ? spec : "", devices);
}

void plumb_backend_free(plumb_backend *b) {
    if (b) b->iface->free(b);
}

void plumb_buffer_free(plumb_buffer *buf) {
    if (buf) buf->backend->iface->buffer_free(buf);
}

plumb_status plumb_tensor_get(const plumb_tensor *t, size_t off, void *dst, size_t n) {
    if (!t->buf) {
        memcpy(dst, (const uint8_t *)t->data + off, n);
        return PLUMB_OK;
    }
    return t->buf->backend->iface->buffer_get(t->buf, t->offs + off, dst, n);
}

/* ---- the public device list ---------------------------------------------------------------- */

int plumb_device_count(void) {
    int n = 0;
    for (int r = 0; plumb__backend_regs[r]; r++) n += plumb__backend_regs[r]->device_count(NULL);
    return n;
}

plumb_status plumb_device_get(int i, plumb_device_desc *out) {
    if (!out || i < 0) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_device_get: bad argument");
    for (int r = 0; plumb__backend_regs[r]; r++) {
        const plumb_backend_reg *reg = plumb__backend_regs[r];
        const int n = reg->device_count(NULL);
        if (i >= n) {
            i -= n;
            continue;
        }
        plumb_device_info info;
        plumb_status st = reg->device_info(i, &info);
        if (st) return st;
        memset(out, 0, sizeof *out);
        if (r == 0) snprintf(out->spec, sizeof out->spec, "%s", reg->name);
        else snprintf(out->spec, sizeof out->spec, "%s:%d", reg->name, i);
        snprintf(out->name, sizeof out->name, "%s", info.name);
        snprintf(out->driver, sizeof out->driver, "%s", info.driver);
        out->memory = info.memory;
        return PLUMB_OK;
    }
    return plumb__fail(PLUMB_E_NOT_FOUND, "no device %d (there are %d)", i, plumb_device_count());
}

bool plumb_device_available(const char *spec, const char **why) {
    if (why) *why = NULL;
    if (!spec) return true;
    const char *colon = strchr(spec, ':');
    const size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    for (int r = 0; plumb__backend_regs[r]; r++) {
        const plumb_backend_reg *reg = plumb__backend_regs[r];
        if (strlen(reg->name) == len && strncmp(reg->name, spec, len) == 0)
            return reg->create_at || reg->device_count(why) > 0; /* an address is tried when loading */
    }
    return true; /* an unknown name: plumb_backend_lookup says which there are */
}

plumb_status plumb_device_check(const char *spec) {
    if (!spec) return PLUMB_OK;
    const plumb_backend_reg *reg;
    int device;
    return plumb_backend_lookup(spec, &reg, &device);
}

const char *plumb_device_kind(int i) {
    for (int r = 0; plumb__backend_regs[r]; r++)
        if (r == i) return plumb__backend_regs[r]->name;
    return NULL;
}
