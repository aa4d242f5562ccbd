/* cmd_info.c — `plumb info` / `plumb --version`: version, CPU and its SIMD features. */
#include "cli.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const plumb_cpu_features *f = plumb_cpu_get();
    char feats[512];
    printf("plumb %s\n", plumb_version());
    printf("cpu: %s%s%s\n", f->brand[0] ? f->brand : "unknown", f->vendor[0] ? " / " : "", f->vendor);
    printf("features: %s\n", plumb_cpu_describe(feats, sizeof feats));
    return 0;
}
