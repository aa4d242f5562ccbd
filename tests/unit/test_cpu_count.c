/* test_cpu_count.c — the default thread count's parsers (src/core/cpu_count.c): cgroup v2
 * cpu.max files and /proc/self/cgroup, fed as text; and the count of this machine. */
#include "core/cpu_count.h"
#include "test.h"

#include <string.h>

TEST(cpu_max_parse) {
    CHECK_EQ_INT(plumb__cpu_max_parse("max 100000\n"), 0);
    CHECK_EQ_INT(plumb__cpu_max_parse("max 100000"), 0);
    CHECK_EQ_INT(plumb__cpu_max_parse("max\n"), 0);
    CHECK_EQ_INT(plumb__cpu_max_parse("150000 100000\n"), 2);  /* 1.5 CPUs: rounded up */
    CHECK_EQ_INT(plumb__cpu_max_parse("200000 100000\n"), 2);  /* exactly 2 */
    CHECK_EQ_INT(plumb__cpu_max_parse("200001 100000\n"), 3);
    CHECK_EQ_INT(plumb__cpu_max_parse("50000 100000\n"), 1);   /* half a CPU: still one thread */
    CHECK_EQ_INT(plumb__cpu_max_parse("0 100000\n"), 1);
    CHECK_EQ_INT(plumb__cpu_max_parse("400000 50000\n"), 8);   /* another period */
    CHECK_EQ_INT(plumb__cpu_max_parse("300000\n"), 3);         /* no period: the default 100000 */
    CHECK_EQ_INT(plumb__cpu_max_parse("18446744073709551615 1\n"), 2147483647);
    /* not of the form: no limit read from it */
    CHECK_EQ_INT(plumb__cpu_max_parse(""), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("150000 0\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("-1 100000\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("1.5 1\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("150000  100000\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("150000 100000 x\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("maxi 100000\n"), -1);
    CHECK_EQ_INT(plumb__cpu_max_parse("99999999999999999999 100000\n"), -1); /* overflows */
}

TEST(cgroup2_path) {
    char p[64];
    CHECK(plumb__cgroup2_path("0::/user.slice/session-1.scope\n", p, sizeof p));
    CHECK(strcmp(p, "/user.slice/session-1.scope") == 0);
    CHECK(plumb__cgroup2_path("0::/\n", p, sizeof p));
    CHECK(strcmp(p, "/") == 0);
    /* a hybrid system: v1 controllers first, the v2 line last, no final newline */
    CHECK(plumb__cgroup2_path("4:memory:/docker/abc\n1:cpu:/\n0::/docker/abc", p, sizeof p));
    CHECK(strcmp(p, "/docker/abc") == 0);
    /* cgroup v1 only: no "0::" line; "10::" is not one */
    CHECK(!plumb__cgroup2_path("3:cpu,cpuacct:/x\n10::/y\n", p, sizeof p));
    CHECK(!plumb__cgroup2_path("", p, sizeof p));
    CHECK(!plumb__cgroup2_path("0::\n", p, sizeof p));
    CHECK(!plumb__cgroup2_path("0::/a/very/long/path/that/does/not/fit/in/sixty/four/bytes/at/all/not/at/all/really\n", p, sizeof p));
}

TEST(cpu_count_machine) {
    plumb_cpu_count c;
    plumb__cpu_count(&c);
    CHECK(c.online >= 1);
    CHECK(c.affinity >= 1);
    CHECK(c.quota >= 0);
    CHECK(c.n >= 1 && c.n <= 512);
    CHECK(c.n <= c.affinity);
    if (c.quota > 0) CHECK(c.n <= c.quota);
}
