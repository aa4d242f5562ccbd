/* cmd_info.c — `plumb info` / `plumb --version`: version, CPU and its SIMD features, the
 * default thread count with what it comes from, and the devices --device takes (device.c). */
#include "cli.h"
#include "core/cpu_count.h"

#include <string.h>

int cmd_info(int argc, char **argv) {
    /* it takes no options: anything after it is a mistake to report, not to ignore */
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: plumb info (or plumb --version)\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "plumb info: unknown argument '%s' (plumb info takes none)\n", argv[1]);
        return 2;
    }
    const plumb_cpu_features *f = plumb_cpu_get();
    char feats[512];
    printf("plumb %s\n", plumb_version());
    printf("cpu: %s%s%s\n", f->brand[0] ? f->brand : "unknown", f->vendor[0] ? " / " : "", f->vendor);
    printf("features: %s\n", plumb_cpu_describe(feats, sizeof feats));
    plumb_cpu_count c;
    plumb__cpu_count(&c);
    char quota[16] = "none";
    if (c.quota > 0) snprintf(quota, sizeof quota, "%d", c.quota);
    printf("threads: %d (online CPUs %d, affinity %d, cgroup quota %s)\n", c.n, c.online, c.affinity, quota);
    cli_device_list(stdout);
    return 0;
}
