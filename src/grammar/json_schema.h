/* json_schema.h — internals of the JSON Schema to GBNF converter:
 *   json_schema_out.c    the GBNF text being built: rules shared by body, names, caps, the
 *                        built-in rules (ws, string, number, value, ...)
 *   json_schema_chars.c  sets of code points and the JSON-string characters that spell them
 *                        (raw, short escapes, \uXXXX, surrogate pairs)
 *   json_schema_num.c    integer ranges as digit grammars, sign-bounded numbers, number literals
 *   regex.c              the ECMA-262 regex subset of `pattern` (and the built-in formats)
 *   json_schema_plain.c  keyword checks and allOf/anyOf/$ref flattened to plain schemas
 *   json_schema.c        the walk over a schema and plumb_json_schema_to_gbnf
 *
 * Rules produce GBNF over bytes of JSON text. Every generator returns a rule name (js_name);
 * an empty name means the empty language (no JSON text fits), which callers propagate. Errors
 * are sticky in js_out: the first failure sets o->st and plumb's last-error string, and later
 * appends do nothing, so generators check o->st once at the end of a step. */
#ifndef PLUMB_GRAMMAR_JSON_SCHEMA_H
#define PLUMB_GRAMMAR_JSON_SCHEMA_H

#include "plumb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JS_MAX_OUTPUT (1u << 20) /* bytes of GBNF text */
#define JS_MAX_REPEAT 10000u     /* the largest {m,n} count the grammar parser takes */
#define JS_MAX_DEPTH 64          /* nesting of schemas (and of regex groups, halved) */
#define JS_MAX_WORK 200000u      /* schema nodes visited, merges made */
#define JS_INF UINT32_MAX        /* no upper bound on a count */

typedef struct js_buf {
    char *p;
    size_t len, cap;
} js_buf;

/* A rule name, or "" for the empty language. */
typedef struct js_name {
    char s[48];
} js_name;

typedef struct js_rule {
    uint32_t name_off, name_len; /* in js_out.names */
    uint32_t body_off, body_len; /* in js_out.text; body_len 0 while only reserved */
    uint32_t line_off;           /* start of "name ::= body\n" in text */
    uint64_t hash;               /* of the body */
    bool defined;
} js_rule;

typedef struct js_out {
    js_buf text;  /* the rules, one line each, in order of definition */
    js_buf names; /* rule names, NUL-separated */
    js_rule *rules;
    uint32_t n_rules, cap_rules;
    uint32_t *by_body, *by_name; /* open addressing, rule index + 1 */
    uint32_t map_cap;
    uint32_t builtins; /* bit per js_builtin already defined */
    uint64_t work;
    plumb_status st; /* the first failure, sticky */
} js_out;

typedef enum js_builtin {
    JS_WS, JS_CHAR, JS_STRING, JS_NUMBER, JS_INTEGER, JS_BOOLEAN, JS_NULL, JS_VALUE, JS_OBJECT, JS_ARRAY,
    JS_KV, JS_NOTHING, JS_N_BUILTINS
} js_builtin;

/* ---- json_schema_out.c ---- */
void plumb__js_out_init(js_out *o);
void plumb__js_out_free(js_out *o);
/* Records the first failure (status + plumb_last_error message); returns o->st. */
plumb_status plumb__js_fail(js_out *o, plumb_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Counts one unit of work; fails with PLUMB_E_RANGE past JS_MAX_WORK. */
bool plumb__js_work(js_out *o);
void plumb__js_put(js_out *o, js_buf *b, const char *s, size_t n);
void plumb__js_puts(js_out *o, js_buf *b, const char *s);
void plumb__js_printf(js_out *o, js_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void plumb__js_buf_free(js_buf *b);
/* The rule whose body is b (an existing one with the same body, else a new one named after
 * hint). A body that is a single rule name is that name. */
js_name plumb__js_rule(js_out *o, const char *hint, const js_buf *b);
/* A name for a rule defined later with plumb__js_define (for recursion). */
js_name plumb__js_reserve(js_out *o, const char *hint);
void plumb__js_define(js_out *o, const js_name *n, const js_buf *b);
js_name plumb__js_builtin(js_out *o, js_builtin which);
/* The finished text, root rule first; *out malloc'd and NUL-terminated. */
plumb_status plumb__js_finish(js_out *o, const js_name *root, char **out, size_t *out_len);
static inline bool js_is_nothing(const js_name *n) { return n->s[0] == '\0'; }

/* ---- json_schema_chars.c: sets of code points (surrogates never belong) ---- */
typedef struct js_cset {
    uint32_t (*r)[2]; /* sorted, disjoint, not adjacent ranges [lo, hi] */
    uint32_t n, cap;
} js_cset;

void plumb__cset_add(js_out *o, js_cset *s, uint32_t lo, uint32_t hi);
void plumb__cset_add_set(js_out *o, js_cset *s, const js_cset *t);
void plumb__cset_negate(js_out *o, js_cset *s);
void plumb__cset_free(js_cset *s);
bool plumb__cset_is_all(const js_cset *s);
/* The rule for one character of JSON string content whose code point is in s, in every JSON
 * spelling: raw UTF-8 where JSON allows it, \" \\ \/ \b \f \n \r \t, \uXXXX (either case)
 * and surrogate pairs. Nothing for an empty set. */
js_name plumb__js_char_rule(js_out *o, const js_cset *s);
/* Appends the grammar of a JSON string whose value is the UTF-8 text s[0..n) (quotes
 * included), each character in every spelling. */
void plumb__js_string_literal(js_out *o, js_buf *b, const char *s, size_t n);
/* Decodes one UTF-8 code point from s[*i..n); false at invalid UTF-8. */
bool plumb__utf8_next(const char *s, size_t n, size_t *i, uint32_t *cp);
/* Code points in valid UTF-8 text. */
size_t plumb__utf8_count(const char *s);

/* ---- json_schema_num.c ---- */
/* Appends the grammar of the integers in [lo, hi] (has_lo/has_hi false: unbounded) in JSON
 * spelling (no fraction or exponent; -0 where 0 fits). Returns false when none fit. */
/* Appends " | " before every alternative but the first. */
void plumb__js_alt(js_out *o, js_buf *b, bool *first);
/* The width-digit strings (leading zeros included) of the values [lo, hi] in base 10, or 16
 * with letters in both cases: a digit trie cut into whole blocks. */
void plumb__js_digits(js_out *o, js_buf *b, uint64_t lo, uint64_t hi, unsigned width, unsigned base);
bool plumb__js_int_range(js_out *o, js_buf *b, bool has_lo, int64_t lo, bool has_hi, int64_t hi);
/* Appends the grammar of the JSON numbers with the given signs: bit 0 negative, bit 1 zero,
 * bit 2 positive. Returns false when none fit. */
bool plumb__js_number_signs(js_out *o, js_buf *b, unsigned signs);
/* Appends the grammar of the spellings plumb accepts for the number v (see
 * docs/structured-output.md); fails with PLUMB_E_RANGE for integers past 2^53. */
void plumb__js_number_literal(js_out *o, js_buf *b, double v, const char *where);

/* ---- regex.c ---- */
/* Appends the grammar of a JSON string (quotes included) whose content the pattern pat
 * matches (ECMA-262 search semantics: unanchored means "contains"), with a length in code
 * points in [min_len, max_len] (max_len JS_INF: none). where: the JSON pointer for messages.
 * Returns false (nothing appended) when no string fits. */
bool plumb__js_pattern(js_out *o, js_buf *b, const char *pat, uint32_t min_len, uint32_t max_len, const char *where);
/* The anchored pattern of a built-in format ("date", ...), or NULL for an unknown one. */
const char *plumb__js_format_pattern(const char *format);

/* ---- the walk over a schema (json_schema_plain.c, json_schema.c) ---- */
#include <cjson/cJSON.h>

/* JSON types as bits; T_NUMBER is the numbers that are not integers, so "number" is
 * T_INTEGER | T_NUMBER and intersecting types is a bitwise and. */
enum { T_NULL = 1, T_BOOL = 2, T_OBJECT = 4, T_ARRAY = 8, T_STRING = 16, T_INTEGER = 32, T_NUMBER = 64, T_ALL = 127 };

/* Schemas that all apply to one value (an allOf); none: any value. */
typedef struct js_list {
    const cJSON **v;
    uint32_t n, cap;
} js_list;

typedef struct js_prop {
    const char *key;
    js_list s;
} js_prop;

/* A schema without combinators: what allOf, anyOf, oneOf and $ref flatten to (a list of
 * these is their union). Sub-schemas stay lists of schema nodes, flattened when generated. */
typedef struct js_plain {
    unsigned types;
    js_prop *props; /* declared order */
    uint32_t n_props, cap_props;
    js_list addl; /* additionalProperties (and what governs keys not in props) */
    const char **req;
    uint32_t n_req, cap_req;
    js_list *prefix; /* prefixItems */
    uint32_t n_prefix;
    js_list items;
    uint32_t min_items, max_items, min_len, max_len; /* max JS_INF: none */
    const char *pattern, *format;
    bool has_lo, lo_excl, has_hi, hi_excl;
    double lo, hi;
    bool has_enum; /* enum and const: the values allowed */
    const cJSON **enums;
    uint32_t n_enums;
} js_plain;

typedef struct js_ref {
    const cJSON *target; /* after following schemas that are only a $ref */
    js_name name;
    char *pointer; /* of the target, for messages */
    bool defined;
} js_ref;

typedef struct js_ctx {
    js_out out;
    const cJSON *doc;
    cJSON *false_node; /* `false`, for lists */
    js_buf ptr;        /* JSON pointer of the schema at hand */
    int depth;
    js_ref *refs;
    uint32_t n_refs, cap_refs;
    int cur;        /* the ref whose rule is being written; -1: root */
    int container;  /* objects/arrays entered since that rule began */
    uint32_t *edges; /* pairs (from + 1, to): a rule that starts with another, no byte between */
    uint32_t n_edges, cap_edges;
    const cJSON *inline_stack[JS_MAX_DEPTH]; /* $ref targets being flattened (cycle check) */
    int n_inline;
} js_ctx;

/* The pointer for messages ("/" for the root). */
const char *plumb__js_where(js_ctx *c);
void plumb__js_ptr_push(js_ctx *c, const char *seg);
void plumb__js_ptr_push_index(js_ctx *c, uint32_t i);
void plumb__js_ptr_pop(js_ctx *c, size_t len);

/* json_schema_plain.c */
/* Checks every keyword of the schema s and its sub-schemas (not following $ref). */
plumb_status plumb__js_scan(js_ctx *c, const cJSON *s);
/* The schema a local $ref names (following pure-$ref chains); NULL after failing. */
const cJSON *plumb__js_resolve(js_ctx *c, const char *ref, char **pointer);
/* Whether s is only a $ref (besides annotations). */
bool plumb__js_is_ref_only(const cJSON *s);
/* Whether s has keywords that constrain besides those named in `but` (NULL-ended). */
bool plumb__js_constrains(const cJSON *s, const char *const *but);
/* The alternatives the schemas of l (all applying) flatten to; *n of them. */
plumb_status plumb__js_flatten(js_ctx *c, const js_list *l, js_plain **alts, uint32_t *n);
void plumb__js_plains_free(js_plain *p, uint32_t n);
void plumb__js_list_push(js_ctx *c, js_list *l, const cJSON *s);
void plumb__js_list_free(js_list *l);

#endif
