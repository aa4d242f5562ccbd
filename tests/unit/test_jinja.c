/* test_jinja.c — unit tests of the Jinja engine (src/chat/jinja_*.c) through its public API:
 * each construct's output (the expected strings are what jinja2 renders, as HF configures
 * it), provenance marks, error statuses and positions, every cap, and bad arguments.
 * tests/e2e/test_jinja.py compares against jinja2 itself, over many more cases. */
#include "test.h"

#include "plumb.h"

#include <stdlib.h>
#include <string.h>

/* Renders; on success *out (caller frees) and the marks. */
static plumb_status render(const char *tmpl, const char *vars, const plumb_template_limits *lim, char **out,
                           plumb_span **marks, size_t *n_marks) {
    size_t len = 0;
    return plumb_template_render(tmpl, strlen(tmpl), vars, vars ? strlen(vars) : 0, lim, out, &len, marks, n_marks);
}

/* Checks that tmpl renders to want over vars. */
static void expect(const char *file, int line, const char *tmpl, const char *vars, const char *want) {
    char *out = NULL;
    size_t len = 0;
    plumb_status st =
        plumb_template_render(tmpl, strlen(tmpl), vars, vars ? strlen(vars) : 0, NULL, &out, &len, NULL, NULL);
    if (st != PLUMB_OK) {
        plumb_test_fail(file, line, "%s: status %d: %s", tmpl, (int)st, plumb_last_error());
        return;
    }
    if (len != strlen(want) || memcmp(out, want, len) != 0 || out[len] != '\0')
        plumb_test_fail(file, line, "%s:\n  got  [%.*s]\n  want [%s]", tmpl, (int)len, out, want);
    free(out);
}
#define EXPECT(tmpl, vars, want) expect(__FILE__, __LINE__, tmpl, vars, want)

/* Checks that tmpl fails with status st and a message containing needle. */
static void expect_fail(const char *file, int line, const char *tmpl, const char *vars,
                        const plumb_template_limits *lim, plumb_status want, const char *needle) {
    char *out = (char *)1;
    plumb_span *marks = (plumb_span *)1;
    size_t n_marks = 7;
    plumb_status st = render(tmpl, vars, lim, &out, &marks, &n_marks);
    if (st != want) {
        plumb_test_fail(file, line, "%s: status %d, want %d (%s)", tmpl, (int)st, (int)want, plumb_last_error());
        if (st == PLUMB_OK) {
            free(out);
            free(marks);
        }
        return;
    }
    if (out || marks || n_marks) plumb_test_fail(file, line, "%s: outputs set on failure", tmpl);
    if (needle && !strstr(plumb_last_error(), needle))
        plumb_test_fail(file, line, "%s: message [%s] lacks [%s]", tmpl, plumb_last_error(), needle);
}
#define EXPECT_FAIL(tmpl, vars, st, needle) expect_fail(__FILE__, __LINE__, tmpl, vars, NULL, st, needle)

static const char *const CHAT =
    "{\"messages\": [{\"role\": \"system\", \"content\": \" Be brief. \"}, {\"role\": \"user\", \"content\": \"Hi\"},"
    " {\"role\": \"assistant\", \"content\": \"Hello!\"}], \"add_generation_prompt\": true, \"bos_token\": \"<s>\","
    " \"n\": 3, \"f\": 2.5, \"none\": null, \"d\": {\"b\": 1, \"a\": [1, 2]}, \"s\": \"h\\u00e9llo\"}";

TEST(jinja_text_and_whitespace) {
    EXPECT("plain", NULL, "plain");
    EXPECT("", NULL, "");
    EXPECT("a\n", NULL, "a"); /* one trailing newline is dropped */
    EXPECT("a\n\n", NULL, "a\n");
    EXPECT("a\r\nb\rc", NULL, "a\nb\nc");
    EXPECT("a {# c #} b", NULL, "a  b");
    EXPECT("a   {#- c #}   b", NULL, "a   b");
    EXPECT("a   {# c -#}   b", NULL, "a   b");
    EXPECT("  {% if true %}\n    x\n  {% endif %}\n  y", NULL, "    x\n  y");
    EXPECT("  {%+ if true %}x{% endif %}", NULL, "  x");
    EXPECT("{% if true +%}\nx{% endif %}", NULL, "\nx");
    EXPECT("a  {{- 'b' -}}  c", NULL, "abc");
    EXPECT("a\n  {{ 'b' }}  \nc", NULL, "a\n  b  \nc");
    EXPECT("x {%- if true -%} \n y {%- endif %}", NULL, "xy");
    EXPECT("{% raw %}{{ x }}{% endraw %}", NULL, "{{ x }}");
    EXPECT("{% generation %}g{% endgeneration %}", NULL, "g");
    EXPECT("a \xc2\xa0{%- if true %}b{% endif %}", NULL, "ab"); /* - strips Unicode spaces too */
}

TEST(jinja_values_print_as_python) {
    EXPECT("{{ 1 }} {{ -2 }} {{ 1.0 }} {{ 2.5e3 }} {{ 1e16 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ -0.0 }}", NULL,
           "1 -2 1.0 2500.0 1e+16 1e-05 0.30000000000000004 -0.0");
    EXPECT("{{ true }} {{ none }} {{ missing }}|", NULL, "True None |");
    EXPECT("{{ [1, 'a', none, (2,), {'k': \"it's\"}] }}", NULL, "[1, 'a', None, (2,), {'k': \"it's\"}]");
    EXPECT("{{ d }} {{ d.keys() }}", CHAT, "{'b': 1, 'a': [1, 2]} dict_keys(['b', 'a'])");
    EXPECT("{{ range(3) }} {{ range(3)|list }}", NULL, "range(0, 3) [0, 1, 2]");
    EXPECT("{{ 'a\\tb\\u00e9\\x01' }}|{{ ['a\\tb\\x01\\u2028'] }}", NULL, "a\tb\xc3\xa9\x01|['a\\tb\\x01\\u2028']");
}

TEST(jinja_operators) {
    EXPECT("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 ** 2 }} {{ -7.5 % 2 }}", NULL,
           "3 -4 2 3.5 64 0.5");
    EXPECT("{{ 'ab' * 2 }} {{ [1] + [2] }} {{ 'a' ~ 1 ~ none ~ missing }}", NULL, "abab [1, 2] a1None");
    EXPECT("{{ 1 == 1.0 }} {{ 1 < 2 < 3 }} {{ 'b' in 'abc' }} {{ 2 not in [1] }} {{ 'a' in {'a': 1} }}", NULL,
           "True True True True True");
    EXPECT("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not none }} {{ 'a' if n > 2 else 'b' }} {{ 'c' if false }}|", CHAT,
           "x y True a |");
    EXPECT("{{ 'a' + 'b' | upper }}", NULL, "aB"); /* filters bind tighter */
}

TEST(jinja_access_and_slices) {
    EXPECT("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[9] }}|{{ d.a.1 }}", CHAT,
           "system Hello! |2");
    EXPECT("{{ messages[1:]|length }} {{ [1, 2, 3][::-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s|length }}", CHAT,
           "2 [3, 2, 1] \xc3\xa9l oll\xc3\xa9h 5");
    EXPECT("{{ none.x }}|{{ d.nope }}|{{ d['b'] }}|{{ d.get is defined }}", CHAT, "||1|True");
}

TEST(jinja_statements) {
    EXPECT("{% for m in messages %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}", CHAT,
           "1TrueFalse3 2FalseFalse3 3FalseTrue3 ");
    EXPECT("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", CHAT, "b=1;a=[1, 2];");
    EXPECT("{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{% endfor %}", CHAT,
           "1user2assistant");
    EXPECT("{% for x in [] %}x{% else %}none{% endfor %}", NULL, "none");
    EXPECT("{% for i in range(9) %}{% if i == 1 %}{% continue %}{% elif i == 3 %}{% break %}{% endif %}{{ i }}{% "
           "endfor %}",
           NULL, "02");
    EXPECT("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{% endfor %}{{ x }}", NULL, "111");
    EXPECT("{% set ns = namespace(t=0) %}{% for i in [1, 2, 3] %}{% set ns.t = ns.t + i %}{% endfor %}{{ ns.t }}", NULL,
           "6");
    EXPECT("{% set a, b = 1, 2 %}{{ a }}{{ b }}", NULL, "12");
    EXPECT("{% set t | upper %}x{{ 'y' }}{% endset %}{{ t }}", NULL, "XY");
    EXPECT("{% macro m(a, b='d') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(b=3, a=4) }}", NULL,
           "[1d][12][43]");
    EXPECT("{% macro f(k) %}{% if k %}{{ k }}{{ f(k - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", NULL, "321");
    EXPECT("{% with a = 1 %}{{ a }}{% endwith %}{{ a }}|{% filter upper %}ab{% endfilter %}", NULL, "1|AB");
    EXPECT("{% if n > 5 %}a{% elif n > 2 %}b{% else %}c{% endif %}", CHAT, "b");
}

TEST(jinja_filters_tests_methods) {
    EXPECT("{{ ' x '|trim }}|{{ 'ab'|upper }}|{{ 'hello world'|title }}|{{ 'aXb'|replace('X', '-') }}", NULL,
           "x|AB|Hello World|a-b");
    EXPECT("{{ d|tojson }}|{{ [1, 'é']|tojson(indent=2) }}", CHAT,
           "{\"b\": 1, \"a\": [1, 2]}|[\n  1,\n  \"\xc3\xa9\"\n]");
    EXPECT("{{ messages|selectattr('role', 'equalto', 'user')|list|length }} "
           "{{ messages|map(attribute='role')|join(',') }}",
           CHAT, "1 system,user,assistant");
    EXPECT(
        "{{ [3, 1, 2]|sort }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ [1, 1]|unique|list }} {{ missing|default('d') }}",
        NULL, "[1, 2, 3] 1 2 [1] d");
    EXPECT("{{ '4'|int + 1 }} {{ 'x'|int }} {{ 2.5|round }} {{ 2.675|round(2) }} {{ '3.5'|float }}", NULL,
           "5 0 2.0 2.67 3.5");
    EXPECT("{{ 'a\\nb'|indent(2, true) }}|{{ '<a>'|e }}|{{ '<a>'|safe + '<' }}", NULL, "  a\n  b|&lt;a&gt;|<a>&lt;");
    EXPECT("{{ n is odd }} {{ none is none }} {{ 'x' is string }} {{ missing is defined }} {{ d is mapping }}", CHAT,
           "True True True False True");
    EXPECT("{{ 'a,b'.split(',') }} {{ ' x '.strip() }} {{ 'abc'.startswith('a') }} {{ d.get('z', 0) }}", CHAT,
           "['a', 'b'] x True 0");
    EXPECT("{{ 'x</think>y'.split('</think>')[-1].lstrip('\\n') }}", NULL, "y");
}

/* Marks: exactly the template's own bytes; a variable spelling a control token stays text. */
TEST(jinja_marks) {
    const char *t =
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}";
    const char *v = "{\"messages\": [{\"role\": \"user\", \"content\": \"<|im_start|>system\"}]}";
    char *out;
    plumb_span *marks;
    size_t n_marks;
    CHECK_STATUS(render(t, v, NULL, &out, &marks, &n_marks), PLUMB_OK);
    CHECK(strcmp(out, "<|im_start|>user\n<|im_start|>system<|im_end|>\n") == 0);
    /* '<|im_start|>' 'user' (a role name) '\n' merged; the content unmarked; '<|im_end|>\n' */
    CHECK_EQ_INT(n_marks, 2);
    if (n_marks == 2) {
        CHECK_EQ_INT(marks[0].off, 0);
        CHECK_EQ_INT(marks[0].len, 17);
        CHECK_EQ_INT(marks[1].off, 35);
        CHECK_EQ_INT(marks[1].len, 11);
    }
    free(out);
    free(marks);

    /* through filters, slices, macros; tojson output is never marked */
    CHECK_STATUS(render("{% macro w(x) %}<{{ x }}>{% endmacro %}{{ w(u) }}{{ ('AB' ~ u)[1:3]|lower }}{{ 'q'|tojson }}",
                        "{\"u\": \"z\"}", NULL, &out, &marks, &n_marks),
                 PLUMB_OK);
    CHECK(strcmp(out, "<z>bz\"q\"") == 0);
    /* '<', then '>' and 'b' (adjacent: merged) */
    CHECK_EQ_INT(n_marks, 2);
    if (n_marks == 2) {
        CHECK(marks[0].off == 0 && marks[0].len == 1);
        CHECK(marks[1].off == 2 && marks[1].len == 2);
    }
    free(out);
    free(marks);

    /* no marks asked for, none given */
    size_t len;
    CHECK_STATUS(plumb_template_render("x", 1, NULL, 0, NULL, &out, &len, NULL, NULL), PLUMB_OK);
    CHECK(len == 1 && out[0] == 'x');
    free(out);
    CHECK_STATUS(render("{{ u }}", "{\"u\": \"v\"}", NULL, &out, &marks, &n_marks), PLUMB_OK);
    CHECK(n_marks == 0 && marks == NULL);
    free(out);
}

TEST(jinja_errors) {
    EXPECT_FAIL("{{ raise_exception('roles must alternate') }}", NULL, PLUMB_E_INVALID_ARG,
                "raise_exception: roles must alternate");
    EXPECT_FAIL("a\n{{ missing.x }}", NULL, PLUMB_E_INVALID_ARG, "template:2:");
    EXPECT_FAIL("{{ 'a' + 1 }}", NULL, PLUMB_E_INVALID_ARG, "concatenate");
    EXPECT_FAIL("{{ 1 // 0 }}", NULL, PLUMB_E_INVALID_ARG, "by zero");
    EXPECT_FAIL("{{ [1].append(2) }}", NULL, PLUMB_E_INVALID_ARG, "unsafe");
    EXPECT_FAIL("{{ x|frobnicate }}", NULL, PLUMB_E_UNSUPPORTED, "frobnicate");
    EXPECT_FAIL("{% include 'x' %}", NULL, PLUMB_E_UNSUPPORTED, "include");
    EXPECT_FAIL("{% for x in y %}", NULL, PLUMB_E_UNSUPPORTED, "endfor");
    EXPECT_FAIL("{{ 1 +", NULL, PLUMB_E_UNSUPPORTED, "template:1:");
    EXPECT_FAIL("{{ '%s' % 1 }}", NULL, PLUMB_E_UNSUPPORTED, "printf");
    EXPECT_FAIL("x", "[1]", PLUMB_E_INVALID_ARG, "object");
    EXPECT_FAIL("x", "{\"a\": tru}", PLUMB_E_INVALID_ARG, "JSON");
    EXPECT_FAIL("x", "{\"a\": \"\\udc00\"}", PLUMB_E_INVALID_ARG, "surrogate");
    EXPECT_FAIL("\xc3", NULL, PLUMB_E_INVALID_ARG, "UTF-8");
    EXPECT_FAIL("{{ x }}", "{\"x\": 99999999999999999999}", PLUMB_E_RANGE, "64 bits");
    EXPECT_FAIL("{{ 9223372036854775807 + 1 }}", NULL, PLUMB_E_RANGE, "64 bits");

    char *out;
    size_t len;
    CHECK_STATUS(plumb_template_render("x", 1, NULL, 0, NULL, NULL, &len, NULL, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_template_render(NULL, 3, NULL, 0, NULL, &out, &len, NULL, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_template_render("x", 1, NULL, 5, NULL, &out, &len, NULL, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_template_check("{% if x %}{% endif %}", 21, NULL), PLUMB_OK);
    CHECK_STATUS(plumb_template_check("{% if x %}", 10, NULL), PLUMB_E_UNSUPPORTED);
}

TEST(jinja_limits) {
    plumb_template_limits d = plumb_template_default_limits();
    CHECK_EQ_INT(d.max_output, 4 << 20);
    CHECK_EQ_INT(d.max_depth, 64);
    CHECK_EQ_INT(d.max_iterations, 1000000);

    plumb_template_limits l = {.max_output = 10};
    expect_fail(__FILE__, __LINE__, "{{ 'x' * 11 }}", NULL, &l, PLUMB_E_RANGE, "max_output");
    expect_fail(__FILE__, __LINE__, "{% for i in range(11) %}x{% endfor %}", NULL, &l, PLUMB_E_RANGE, "max_output");
    l = (plumb_template_limits){.max_iterations = 5};
    expect_fail(__FILE__, __LINE__, "{% for i in range(6) %}{% endfor %}", NULL, &l, PLUMB_E_RANGE, "max_iterations");
    l = (plumb_template_limits){.max_depth = 3};
    expect_fail(__FILE__, __LINE__, "{{ [[[[1]]]] }}", NULL, &l, PLUMB_E_RANGE, "max_depth");
    expect_fail(__FILE__, __LINE__,
                "{% if 1 %}{% if 1 %}{% if 1 %}{% if 1 %}{% endif %}{% endif %}{% endif %}{% endif %}", NULL, &l,
                PLUMB_E_RANGE, "max_depth");
    l = (plumb_template_limits){.max_memory = 1 << 16};
    expect_fail(__FILE__, __LINE__, "{{ range(100000)|length }}", NULL, &l, PLUMB_E_RANGE, NULL);
    l = (plumb_template_limits){.max_work = 5000};
    expect_fail(__FILE__, __LINE__, "{% for i in range(1000) %}{{ i }}{% endfor %}", NULL, &l, PLUMB_E_RANGE,
                "max_work");

    /* runaway recursion, cycles and exponential growth end cleanly with the defaults */
    EXPECT_FAIL("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, PLUMB_E_RANGE, "max_depth");
    EXPECT_FAIL("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                NULL, PLUMB_E_RANGE, NULL);
    EXPECT_FAIL("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL, PLUMB_E_RANGE, "recursion");
    EXPECT("{% set ns = namespace() %}{% set ns.me = [ns] %}{% set ns.f = ns %}done", NULL, "done");
    EXPECT_FAIL("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL, PLUMB_E_RANGE,
                NULL);
}

/* A template using most of the engine, for the sweeps below. */
static const char *const RICH_TMPL =
    "{%- macro show(v, pre='') -%}{{ pre }}{% if v is mapping %}{% for k, x in v|dictsort %}{{ k }}={{ show(x) }};"
    "{% endfor %}{% elif v is string %}{{ v|trim|tojson }}{% else %}{{ v }}{% endif %}{%- endmacro -%}\n"
    "{%- set ns = namespace(n=0, seen=[], last=none) -%}\n"
    "{%- for m in messages if m.role != 'tool' -%}\n"
    "  {%- set ns.n = ns.n + 1 %}{% set ns.seen = ns.seen + [m.role] %}{% set ns.last = m -%}\n"
    "  {{ '<|im_start|>' ~ m.role ~ '\\n' }}{{ (m.content or '')|replace('a', 'A')|upper }}\n"
    "  {%- if m.tool_calls %}{% for c in m.tool_calls %}{{ show(c.function, pre='call:') }}"
    "{{ c.function.arguments|tojson(indent=1) }}{% endfor %}{% endif %}\n"
    "  {%- if loop.last %}{{ loop.index }}/{{ loop.length }} {{ ns.seen|unique|list|join(',') }}{% endif %}\n"
    "{%- endfor -%}\n"
    "{{ tools|map(attribute='function.name')|join('|') }} {{ messages|selectattr('role', 'eq', 'user')|list|length }}"
    "{{ (messages|last).content.split(' ')[-1:] }} {{ ns.last.role|title }} {{ range(3)|sum }} {{ [3, 1]|sort }}"
    "{% set block %}{{ 'x' * 3 }}{% endset %}{{ block ~ ns.n }}";

static const char *const RICH_VARS =
    "{\"messages\": [{\"role\": \"system\", \"content\": \" sys \"}, {\"role\": \"user\", \"content\": \"hi a b\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"function\": {\"name\": \"f\","
    " \"arguments\": {\"x\": [1, 2.5, null], \"y\": \"\\u00e9\"}}}]}, {\"role\": \"tool\", \"content\": \"r\"},"
    " {\"role\": \"assistant\", \"content\": \"done a\"}],"
    " \"tools\": [{\"function\": {\"name\": \"f\"}}, {\"function\": {\"name\": \"g\"}}]}";

TEST(jinja_every_failure_point_is_clean) {
    char *out;
    plumb_span *marks;
    size_t n_marks;
    CHECK_STATUS(render(RICH_TMPL, RICH_VARS, NULL, &out, &marks, &n_marks), PLUMB_OK);
    char *want = out;
    free(marks);
    /* every cap from tiny to enough: each run either gives the same text or fails cleanly */
    int ok = 0, failed = 0;
    for (size_t mem = 256; mem < (256 << 10); mem += mem < 4096 ? 64 : 331) {
        plumb_template_limits l = {.max_memory = mem};
        plumb_status st = render(RICH_TMPL, RICH_VARS, &l, &out, &marks, &n_marks);
        if (st == PLUMB_OK) {
            CHECK(strcmp(out, want) == 0);
            free(out);
            free(marks);
            ok++;
        } else {
            CHECK(st == PLUMB_E_RANGE);
            failed++;
        }
    }
    CHECK(ok > 0 && failed > 0);
    ok = failed = 0;
    for (uint64_t work = 1; work < 400000; work += work < 2000 ? 7 : 97) {
        plumb_template_limits l = {.max_work = work};
        plumb_status st = render(RICH_TMPL, RICH_VARS, &l, &out, &marks, &n_marks);
        if (st == PLUMB_OK) {
            CHECK(strcmp(out, want) == 0);
            free(out);
            free(marks);
            ok++;
        } else {
            CHECK(st == PLUMB_E_RANGE);
            failed++;
        }
    }
    CHECK(ok > 0 && failed > 0);
    free(want);
}

#include <pthread.h>

static void *render_many(void *arg) {
    const char *want = arg;
    for (int i = 0; i < 50; i++) {
        char *out;
        plumb_span *marks;
        size_t n_marks;
        if (render(RICH_TMPL, RICH_VARS, NULL, &out, &marks, &n_marks) != PLUMB_OK) return (void *)1;
        int same = strcmp(out, want) == 0;
        free(out);
        free(marks);
        if (!same) return (void *)1;
    }
    return NULL;
}

TEST(jinja_threads_share_nothing) {
    char *want;
    plumb_span *marks;
    size_t n_marks;
    CHECK_STATUS(render(RICH_TMPL, RICH_VARS, NULL, &want, &marks, &n_marks), PLUMB_OK);
    free(marks);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, render_many, want) == 0);
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        CHECK(rv == NULL);
    }
    free(want);
}
