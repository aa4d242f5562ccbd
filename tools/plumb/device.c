/* device.c — where a subcommand's model computes: the --device and --offload options every
 * subcommand that loads a model takes (their help lines, the offload count's parsing), the
 * fall back to the CPU when the kind of device named has none here, the device as the
 * subcommands show it after loading, and the device list of `plumb info`. */
#include "cli.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

void cli_device_print_usage(FILE *f, int width) {
    fprintf(f, "%-*s%s\n", width, "      --device D", "where the model computes: cpu (default), opencl or opencl:N (see plumb info),");
    fprintf(f, "%-*s%s\n", width, "", "or remote:HOST:PORT (a plumb rpc-server; its key: --remote-key-file F or");
    fprintf(f, "%-*s%s\n", width, "", "PLUMB_REMOTE_KEY_FILE)");
    fprintf(f, "%-*s%s\n", width, "  -ngl, --offload N", "layers on the device, counted from the last (default -1: all, with");
    fprintf(f, "%-*s%s\n", width, "", "the output head; 0: none); also --n-gpu-layers N");
}

bool cli_parse_offload(const char *s, int32_t *out) {
    long n;
    if (!options_parse_long(s, -1, 1L << 30, &n)) return false;
    *out = (int32_t)n;
    return true;
}

/* The kind of a device spec: "opencl" of "opencl:1", into buf[cap]. */
static void spec_kind(const char *spec, char *buf, size_t cap) {
    const char *colon = strchr(spec, ':');
    snprintf(buf, cap, "%.*s", (int)(colon ? (size_t)(colon - spec) : strlen(spec)), spec);
}

void cli_device_fallback(const char *cmd, plumb_model_params *mp) {
    const char *why = NULL;
    if (!mp->device || plumb_device_available(mp->device, &why)) return;
    char kind[64];
    spec_kind(mp->device, kind, sizeof kind);
    fprintf(stderr, "plumb %s: no %s device (%s); running on the CPU\n", cmd, kind, why && *why ? why : "none found");
    mp->device = NULL;
}

bool cli_device_check(const char *cmd, const char *spec) {
    if (plumb_device_check(spec) == PLUMB_OK) return true;
    fprintf(stderr, "plumb %s: %s\n", cmd, plumb_last_error());
    return false;
}

void cli_device_text(const char *spec, int32_t n_offloaded, int32_t n_total, char *buf, size_t cap) {
    if (n_offloaded <= 0) snprintf(buf, cap, "%s", spec);
    else if (n_total > 0) snprintf(buf, cap, "%s (%d/%d layers)", spec, (int)n_offloaded, (int)n_total);
    else snprintf(buf, cap, "%s (%d layers)", spec, (int)n_offloaded);
}

void cli_model_device_text(const plumb_model_t *m, char *buf, size_t cap) {
    int32_t n_off = 0;
    const char *spec = plumb_model_device(m, &n_off);
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    cli_device_text(spec, n_off, info.n_layer + 1, buf, cap);
}

const char *cli_device_backend_name(const char *spec) {
    if (!strncmp(spec, "opencl", 6) && (spec[6] == '\0' || spec[6] == ':')) return "OpenCL";
    return "CPU";
}

/* bytes as "512 MiB" or "15.6 GiB" */
static void memory_text(uint64_t bytes, char *buf, size_t cap) {
    if (bytes == 0) snprintf(buf, cap, "memory unknown");
    else if (bytes < (1ull << 30)) snprintf(buf, cap, "%.0f MiB", (double)bytes / (1 << 20));
    else snprintf(buf, cap, "%.1f GiB", (double)bytes / (1 << 30));
}

void cli_device_list(FILE *f) {
    fprintf(f, "devices:\n");
    const int n = plumb_device_count();
    for (int i = 0; i < n; i++) {
        plumb_device_desc d;
        if (plumb_device_get(i, &d)) continue;
        char mem[32];
        memory_text(d.memory, mem, sizeof mem);
        fprintf(f, "  %-10s %s (%s), %s\n", d.spec, d.name, d.driver[0] ? d.driver : "no driver information", mem);
    }
    const char *kind;
    for (int k = 0; (kind = plumb_device_kind(k)); k++) { /* the kinds with none here, and why */
        const char *why = NULL;
        if (!plumb_device_available(kind, &why)) fprintf(f, "  %-10s none: %s\n", kind, why && *why ? why : "no device found");
    }
}
