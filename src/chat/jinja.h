/* jinja.h — internal interface of plumb's Jinja engine (src/chat/jinja_*.c): the render
 * context with its caps and error state, values with Python semantics, strings that carry
 * provenance marks, the syntax tree, and what each file offers the others.
 *
 * The files, by idea:
 *   jinja_value.c   memory accounting, values (retain/release), strings and the string
 *                   builder with marks, lists, dicts, Python truthiness/equality/ordering, repr
 *   jinja_text.c    UTF-8 and Unicode text operations (case, strip, split, replace, find, ...)
 *   jinja_json.c    the JSON reader for the variables and the writer behind |tojson
 *   jinja_lex.c     the lexer: jinja2's tokenizer with trim_blocks and lstrip_blocks
 *   jinja_parse.c   the parser: tokens to the syntax tree, jinja2's grammar and precedence
 *   jinja_filters.c filters and tests
 *   jinja_methods.c methods of str/dict/list values and the global functions
 *   jinja_render.c  the evaluator, scopes, statements, and the public entry points
 *
 * Conventions: a function that can fail returns int, 0 for success and -1 for failure, after
 * recording the failure in the context (jfail); the first failure wins. Values handed out are
 * owned by the receiver (one reference) unless a comment says "borrowed". */
#ifndef PLUMB_CHAT_JINJA_H
#define PLUMB_CHAT_JINJA_H

#include "plumb.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- context: caps, counters, first error -------------------------------------------- */

typedef struct jctx {
    plumb_template_limits lim;
    size_t mem_used;     /* bytes held through jalloc now */
    uint64_t work;       /* expressions evaluated plus bytes allocated so far */
    uint64_t iterations; /* loop iterations and items walked so far */
    uint32_t depth;      /* current recursion depth of the evaluator and value walkers */
    uint32_t max_rdepth; /* cap on depth: 16 x max_depth */
    uint32_t max_vdepth; /* cap on value nesting: 4 x max_depth */
    bool failed;
    bool pos_set; /* the failure's template position is known */
    plumb_status st;
    uint32_t line, col;
    char msg[400];
} jctx;

/* Records a failure (the first one wins) and returns -1. The message should say what went
 * wrong in Python/jinja2 terms; the position is added by the evaluator. */
int jfail(jctx *c, plumb_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* As jfail, with the template position given (the lexer and parser know theirs). */
int jfail_at(jctx *c, uint32_t line, uint32_t col, plumb_status st, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Work units, calibrated so that the default cap (2^30) is about a second of CPU: a byte
 * allocated or scanned counts 1, an expression or statement evaluated JW_EVAL, two values
 * compared JW_CMP. */
#define JW_EVAL 32
#define JW_CMP 8
/* Counts n units of work; fails when the render's work cap is passed. */
int jwork(jctx *c, uint64_t n);
/* Counts n iterations; fails past the cap. */
int jiter_count(jctx *c, uint64_t n);
/* Enters/leaves one level of recursion (evaluator, repr, equality, JSON writer, free). */
int jdepth_in(jctx *c);
static inline void jdepth_out(jctx *c) { c->depth--; }

/* Memory: every allocation of a render is counted against max_memory (and as work). NULL on
 * failure, with the failure recorded. jfree(c, NULL) does nothing. */
void *jalloc(jctx *c, size_t n);
void *jrealloc(jctx *c, void *p, size_t n);
void jfree(jctx *c, void *p);

/* ---- values ------------------------------------------------------------------------------ */

typedef enum jtype {
    JT_UNDEF, /* jinja2's default Undefined: prints "", falsy, iterates as empty */
    JT_NONE,
    JT_BOOL,
    JT_INT,
    JT_FLOAT,
    JT_STR,
    JT_LIST, /* list, tuple, range, dict views (immutable: the sandbox forbids mutation) */
    JT_DICT, /* insertion-ordered, immutable once built */
    JT_NS,   /* namespace(): the one mutable object */
    JT_MACRO,
    JT_FUNC, /* a global function or a bound method */
    JT_LOOP, /* the `loop` object of a for loop */
    JT_ITER, /* a one-shot iterator (what selectattr, map, items, reverse... give) */
} jtype;

struct jstr;
struct jlist;
struct jdict;
struct jns;
struct jmacro;
struct jfunc;
struct jloop;
struct jiter;

typedef struct jval {
    jtype t;
    union {
        bool b;
        int64_t i;
        double f;
        struct jstr *s;
        struct jlist *l;
        struct jdict *d;
        struct jns *ns;
        struct jmacro *m;
        struct jfunc *fn;
        struct jloop *lp;
        struct jiter *it;
        size_t *rc; /* every heap object starts with its reference count */
    } u;
} jval;

/* A string: UTF-8 bytes (always valid: inputs are checked), NUL-terminated, plus the ranges
 * of it that came from the template's own text (marks: sorted, apart, merged). */
typedef struct jstr {
    size_t rc;
    size_t len;
    size_t n_marks;
    plumb_span *marks;
    bool ascii;  /* every byte < 0x80: code point i is byte i */
    bool markup; /* markupsafe.Markup (from |safe, |escape): `+` escapes the other side */
    char data[];
} jstr;

enum { JL_LIST, JL_TUPLE, JL_RANGE, JL_KEYS, JL_VALUES, JL_ITEMS };

typedef struct jlist {
    size_t rc;
    size_t n;
    uint32_t depth;                  /* 1 + deepest element: bounds the recursion of walking it */
    uint8_t kind;                    /* JL_*: what Python type it is (printing, equality, + and subscripts) */
    int64_t r_start, r_stop, r_step; /* JL_RANGE: for repr */
    jval v[];
} jlist;

typedef struct jdict {
    size_t rc;
    size_t n, cap;
    uint32_t depth;
    jval *k, *v; /* keys and values in insertion order */
} jdict;

typedef struct jns {
    size_t rc;
    struct jdict *attrs;
} jns;

typedef struct jfunc {
    size_t rc;
    int id;    /* JF_* global, or a method id (jinja_methods.c) */
    jval self; /* the receiver of a bound method; JT_UNDEF for globals */
} jfunc;

typedef struct jloop {
    size_t rc;
    struct jlist *items; /* what the loop walks, after its `if` filter */
    size_t pos;          /* index0 of the current iteration */
} jloop;

typedef struct jiter {
    size_t rc;
    struct jlist *items;
    size_t pos; /* items before pos were consumed */
} jiter;

static inline jval jv_undef(void) { return (jval){.t = JT_UNDEF}; }
static inline jval jv_none(void) { return (jval){.t = JT_NONE}; }
static inline jval jv_bool(bool b) { return (jval){.t = JT_BOOL, .u.b = b}; }
static inline jval jv_int(int64_t i) { return (jval){.t = JT_INT, .u.i = i}; }
static inline jval jv_float(double f) { return (jval){.t = JT_FLOAT, .u.f = f}; }
static inline jval jv_str(jstr *s) { return (jval){.t = JT_STR, .u.s = s}; }
static inline jval jv_list(jlist *l) { return (jval){.t = JT_LIST, .u.l = l}; }
static inline jval jv_dict(jdict *d) { return (jval){.t = JT_DICT, .u.d = d}; }
static inline bool jv_heap(jval v) { return v.t >= JT_STR; }
static inline jval jv_retain(jval v) {
    if (jv_heap(v)) (*v.u.rc)++;
    return v;
}
/* Drops one reference; frees the object (and what it holds) at zero. */
void jv_release(jctx *c, jval v);
/* Python's type name ("str", "int", "NoneType", "list", "dict", ...), for messages. */
const char *jv_type_name(jval v);
static inline bool jv_is_number(jval v) { return v.t == JT_BOOL || v.t == JT_INT || v.t == JT_FLOAT; }

/* Strings. jstr_new copies p[0..n); marked: the whole string is template text. */
jstr *jstr_new(jctx *c, const char *p, size_t n, bool marked);
/* strtod and printf-style formatting in the C locale, whatever the process's locale is. */
double jstrtod(const char *s, char **end);
int jfmt_c(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* strftime in the C locale (strftime_now): bytes written, 0 when it did not fit. */
size_t jstrftime_c(char *buf, size_t size, const char *fmt, const void *tm);
/* Code points in s; byte offset of code point i (i <= count). */
size_t jstr_ncp(const jstr *s);
size_t jstr_cp_off(const jstr *s, size_t i);

/* String builder: text plus the marks of the parts that came from the template. Every append
 * fails (returns -1) past max_output bytes. */
typedef struct jsb {
    jctx *c;
    char *buf;
    size_t len, cap;
    plumb_span *marks;
    size_t n_marks, cap_marks;
    bool ascii;
} jsb;

void jsb_init(jsb *b, jctx *c);
void jsb_drop(jsb *b);
int jsb_put(jsb *b, const char *p, size_t n, bool marked);
static inline int jsb_puts(jsb *b, const char *s, bool marked) { return jsb_put(b, s, strlen(s), marked); }
int jsb_putc(jsb *b, char ch);
/* Bytes [a, b) of s, with their marks. */
int jsb_put_range(jsb *b, const jstr *s, size_t a, size_t e);
int jsb_put_str(jsb *b, const jstr *s);
/* The built string (rc 1); the builder is emptied. NULL on failure. */
jstr *jsb_finish(jsb *b);

/* Lists: jlist_new gives n slots set to undefined; the caller fills them (taking ownership of
 * what it puts) and then calls jlist_seal, which computes the depth and checks its cap. */
jlist *jlist_new(jctx *c, size_t n, uint8_t kind);
int jlist_seal(jctx *c, jlist *l);
/* A list under construction (start it as (jvec){0}): jvec_push takes ownership of v (and
 * releases it when it cannot grow); jvec_drop releases what was pushed; jvec_list consumes
 * the vector into a sealed list (reversed when `rev`). */
typedef struct jvec {
    jval *v;
    size_t n, cap;
} jvec;
int jvec_push(jctx *c, jvec *x, jval v);
void jvec_drop(jctx *c, jvec *x);
int jvec_list(jctx *c, jvec *x, bool rev, jlist **out);
/* The sealed tuple (a, b) in *out (a dict item as items() gives it), retaining a and b; *out
 * is left alone on failure. */
int jv_pair(jctx *c, jval a, jval b, jval *out);
/* How deeply v nests (what freeing it recurses through). */
uint32_t jv_depth(jval v);
/* Dicts: jdict_set takes ownership of k and v, replacing the value of an equal key (keeping
 * its position) as Python does; an unhashable key is a TypeError. */
jdict *jdict_new(jctx *c);
int jdict_set(jctx *c, jdict *d, jval k, jval v);
/* Python's hashability: lists, dicts and views cannot be keys (tuples of hashables can). */
bool jv_hashable(jval v);
/* Index of key k in d, or -1 (borrowed k). An unhashable k finds nothing. */
int jdict_find(jctx *c, const jdict *d, jval k, size_t *idx, bool *found);
/* Index of the string key p[0..n), or -1. */
long jdict_find_str(const jdict *d, const char *p, size_t n);

/* Python semantics. */
bool jv_truthy(jval v);
int jv_eq(jctx *c, jval a, jval b, bool *out);
/* a < b; a TypeError for types Python cannot order. */
int jv_lt(jctx *c, jval a, jval b, bool *out);
/* a op b for op OP_LT, OP_LE, OP_GT, OP_GE, as Python orders numbers, strings, sequences. */
int jv_order(jctx *c, jval a, jval b, int op, bool *out);
/* Appends str(v) (strings with their marks; numbers, None, containers as Python prints them). */
int jv_str_into(jctx *c, jsb *b, jval v);
/* Appends repr(v). */
int jv_repr_into(jctx *c, jsb *b, jval v);
/* str(v) as a string value. */
int jv_to_str(jctx *c, jval v, jstr **out);
/* Python's repr of a float into buf (at least 32 bytes); returns its length. */
size_t jfloat_repr(double f, char *buf);
/* Numbers as doubles (bool, int, float); false for other types. */
bool jv_as_double(jval v, double *out);
/* Items of an iterable as a new list (str: its characters; dict: its keys; an iterator is
 * consumed; undefined: empty); a TypeError for other types. Counts the items as iterations. */
int jv_iterate(jctx *c, jval v, jlist **out);
/* Stable sort of idx[0..n) by lt (a fallible "less than" on two indices): merge sort. */
int jsort_idx(jctx *c, size_t *idx, size_t n, int (*lt)(void *ctx, size_t a, size_t b, bool *out), void *ctx);
/* len(v): str (code points), list, dict, namespace is a TypeError, undefined 0. */
int jv_len(jctx *c, jval v, int64_t *out);

/* Case-insensitive jinja2-style key: strings lowered (for sort/unique/dictsort). Owned. */
int jv_ignore_case(jctx *c, jval v, jval *out);

/* Markup escaping (markupsafe.escape of str(v)) appended to b: & < > ' " become entities. */
int jv_escape_into(jctx *c, jsb *b, jval v);

/* ---- text (jinja_text.c) ------------------------------------------------------------------ */

/* Decodes one code point at p (valid UTF-8 assumed, n > 0); returns its byte length. */
size_t utf8_dec(const unsigned char *p, size_t n, uint32_t *cp);
/* Encodes cp into out[0..4); returns the length. */
size_t utf8_enc(uint32_t cp, char *out);
/* Length of the well-formed UTF-8 text prefix; == n when all of p is valid. */
size_t utf8_valid_prefix(const unsigned char *p, size_t n);
/* Python's str.isspace() for one code point (also what \s and str.strip() use). */
bool u_isspace(uint32_t cp);
/* Bytes of Unicode whitespace at p (0 when none starts there). */
size_t u_space_at(const char *p, size_t n);
/* Python's str.isprintable() for one code point (for repr). */
bool u_isprintable(uint32_t cp);
/* Python's \w for one code point (approximation outside ASCII: letters and digits). */
bool u_isword(uint32_t cp);
/* Simple case mappings (ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic; ß upper is SS). */
int jtext_upper(jctx *c, const jstr *s, jstr **out);
int jtext_lower(jctx *c, const jstr *s, jstr **out);
int jtext_capitalize(jctx *c, const jstr *s, jstr **out);
/* str.title() (method) and jinja2's |title (words begin after - space ( { [ <). */
int jtext_title_method(jctx *c, const jstr *s, jstr **out);
int jtext_title_filter(jctx *c, const jstr *s, jstr **out);
/* str.strip/lstrip/rstrip: chars NULL strips whitespace. */
int jtext_strip(jctx *c, const jstr *s, const jstr *chars, bool left, bool right, jstr **out);
/* str.split / rsplit: sep NULL splits on whitespace runs; maxsplit < 0 no limit. */
int jtext_split(jctx *c, const jstr *s, const jstr *sep, int64_t maxsplit, bool right, jlist **out);
/* str.replace(old, new, count): count < 0 replaces all. */
int jtext_replace(jctx *c, const jstr *s, const jstr *old, const jstr *rep, int64_t count, jstr **out);
/* Byte offset of the first (or last) occurrence of sub in s[a..e) (bytes), or -1. */
long jtext_find(const jstr *s, size_t a, size_t e, const jstr *sub, bool last);
/* Substring of code points [a, e) with step (Python slice already resolved). */
int jtext_slice(jctx *c, const jstr *s, int64_t start, int64_t step, int64_t count, jstr **out);
/* str.islower()/isupper() (cased characters only). */
bool jtext_islower(const jstr *s);
bool jtext_isupper(const jstr *s);
/* jinja2's |indent. */
int jtext_indent(jctx *c, const jstr *s, const jstr *ind, bool first, bool blank, jstr **out);
/* Number of \w+ runs (|wordcount). */
int64_t jtext_wordcount(const jstr *s);
/* Python str.splitlines() boundaries: the length of a line break at p (0 if none). */
size_t jtext_linebreak_at(const char *p, size_t n);

/* ---- JSON (jinja_json.c) ------------------------------------------------------------------ */

/* Parses JSON text into a value (objects keep key order; an integer past 64 bits is
 * PLUMB_E_RANGE; text must be UTF-8 without lone surrogates). */
int jjson_parse(jctx *c, const char *p, size_t n, jval *out);

typedef struct jjson_opts {
    bool ensure_ascii;
    bool sort_keys;
    bool has_indent;
    const char *indent; /* the indent string (spaces for an int) */
    size_t indent_len;
    const char *item_sep, *key_sep; /* NULL: json.dumps' defaults */
    size_t item_sep_len, key_sep_len;
} jjson_opts;

/* Appends json.dumps(v, ...) as HF's tojson writes it. A value JSON cannot hold is a
 * TypeError. String contents copied unescaped keep their marks; everything else is unmarked. */
int jjson_dump(jctx *c, jsb *b, jval v, const jjson_opts *o);

/* ---- tokens (jinja_lex.c) ----------------------------------------------------------------- */

typedef enum jtok_type {
    TK_DATA,        /* template text; str: the text (marked) */
    TK_VAR_BEGIN,   /* {{ */
    TK_VAR_END,     /* }} */
    TK_BLOCK_BEGIN, /* {% */
    TK_BLOCK_END,   /* %} */
    TK_NAME,
    TK_STRING, /* str: the decoded literal (marked) */
    TK_INT,
    TK_FLOAT,
    TK_OP,
    TK_EOF,
} jtok_type;

enum jop {
    OP_ADD = 1,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    /* comparison kinds that are not tokens */
    OP_IN,
    OP_NOTIN,
};

typedef struct jtok {
    uint8_t type;
    uint8_t op;
    uint32_t line, col;
    const char *p; /* TK_NAME: the name in the source */
    size_t n;
    jstr *str; /* TK_DATA, TK_STRING: owned by the token array */
    int64_t i;
    double f;
} jtok;

/* Tokenizes src[0..n) as jinja2's lexer does with trim_blocks and lstrip_blocks. *src_norm
 * (which names point into) and *toks are jalloc'd; free with jlex_free. */
int jlex(jctx *c, const char *src, size_t n, char **src_norm, jtok **toks, size_t *n_toks);
void jlex_free(jctx *c, char *src_norm, jtok *toks, size_t n_toks);

/* ---- syntax tree (jinja_parse.c) ---------------------------------------------------------- */

typedef struct jname {
    const char *p;
    uint32_t n;
} jname;

typedef enum jnk {
    /* expressions */
    N_CONST,   /* lit */
    N_NAME,    /* name; id: global function id or -1 */
    N_GETATTR, /* a.name */
    N_GETITEM, /* a[b] */
    N_SLICE,   /* a[kids[0]:kids[1]:kids[2]] (each may be NULL) */
    N_CALL,    /* a(kids..., kw...) */
    N_FILTER,  /* a | name(kids..., kw...); a NULL in filter blocks; id: filter id */
    N_TEST,    /* a is name(kids..., kw...); id: test id */
    N_NOT,
    N_NEG,
    N_POS,
    N_ARITH,  /* kids[0] ops[0] kids[1] ops[1] ... left to right (+ - * / // % **) */
    N_CONCAT, /* kids joined with ~ */
    N_CMP,    /* kids[0] ops[0] kids[1] ...: a chained comparison */
    N_AND,    /* kids */
    N_OR,     /* kids */
    N_COND,   /* b if a else c (c may be NULL) */
    N_LIST,   /* kids */
    N_TUPLE,  /* kids */
    N_DICT,   /* kids: key, value, key, value... */
    N_NSREF,  /* name.attr as an assignment target */
    /* statements */
    N_BODY,     /* kids */
    N_TEXT,     /* lit: template text */
    N_PRINT,    /* {{ a }} */
    N_IF,       /* if a: b else c (c: N_BODY, another N_IF for elif, or NULL) */
    N_FOR,      /* for a in b if c: d else e */
    N_SET,      /* a = b */
    N_SETBLOCK, /* a = render(b) | c (c: filter chain or NULL) */
    N_MACRO,    /* name(kids: N_NAME params; defs: defaults or NULL): d */
    N_BREAK,
    N_CONTINUE,
    N_WITH,        /* kids targets = defs values: d */
    N_FILTERBLOCK, /* render(d) | c */
} jnk;

typedef struct jnode {
    uint8_t kind;
    uint8_t flags; /* N_MACRO: JF_CATCH_*; N_FOR: unused */
    int16_t id;
    uint32_t line, col;
    jname name; /* N_NAME, N_GETATTR, N_FILTER, N_TEST, N_NSREF (the namespace), N_MACRO */
    jname attr; /* N_NSREF */
    struct jnode *a, *b, *c, *d, *e;
    struct jnode **kids;
    uint32_t n_kids;
    uint8_t *ops;    /* N_ARITH, N_CMP: n_kids - 1 operators */
    jname *kw_names; /* N_CALL, N_FILTER, N_TEST keywords */
    struct jnode **kw_vals;
    uint32_t n_kw;
    struct jnode **defs; /* N_MACRO defaults (n_kids, NULL when none); N_WITH values */
    jval lit;
} jnode;

enum { JM_CATCH_VARARGS = 1, JM_CATCH_KWARGS = 2 };

typedef struct jmacro {
    size_t rc;
    uint32_t depth; /* 1 + the deepest value its closure holds (macros can chain through closures) */
    const jnode *def;
    struct jscope *closure; /* variables of enclosing non-root scopes at definition; NULL */
} jmacro;

/* A parsed template: the tree lives in arena chunks; literals hold references. */
typedef struct jarena_chunk jarena_chunk;
typedef struct jtmpl {
    jnode *root;
    char *src; /* the normalized source: names in the tree point into it */
    jarena_chunk *chunks;
    jval *lits;
    size_t n_lits, cap_lits;
} jtmpl;

int jparse(jctx *c, const char *src, size_t n, jtmpl *out);
void jtmpl_free(jctx *c, jtmpl *t);

/* ---- scopes (jinja_render.c) -------------------------------------------------------------- */

typedef struct jscope {
    struct jscope *parent;
    size_t n, cap;
    jname *names;
    jval *vals;
    size_t rc; /* closures are shared by macros */
} jscope;

/* ---- calls: arguments of filters, tests, methods, functions -------------------------------- */

typedef struct jargs {
    jval *pos;
    size_t n_pos;
    const jname *kw_names;
    jval *kw;
    size_t n_kw;
} jargs;

/* Binds args to parameters `names` (n of them) as Python would for f(value, *names):
 * out[i] is borrowed (or JT_UNDEF with given[i] false when not passed). An unknown keyword,
 * a parameter given twice or too many positional arguments is a TypeError naming `what`. */
int jargs_bind(jctx *c, const char *what, const jargs *a, const char *const *names, size_t n, jval *out, bool *given);

struct jrender;

/* Filters and tests (jinja_filters.c): ids by name (-1 when unknown), and calls; v and args
 * are borrowed. */
int jfilter_id(const char *name, size_t n);
int jtest_id(const char *name, size_t n);
int jfilter_call(struct jrender *r, int id, jval v, const jargs *a, jval *out);
int jtest_call(struct jrender *r, int id, jval v, const jargs *a, bool *out);
/* environment.getitem: obj[key] with jinja2's fallbacks (a missing key or index, or a
 * TypeError, is undefined; a string key falls back to the attribute). Undefined obj fails. */
int jget_item(struct jrender *r, jval obj, jval key, jval *out);
/* environment.getattr: obj.name (attribute first, then, with item_fallback, the item). */
int jget_attr(struct jrender *r, jval obj, const char *name, size_t n, bool item_fallback, jval *out);
/* Whether name is a method the immutable sandbox forbids on v (list.append, dict.update...). */
bool jmethod_unsafe(jval v, const char *name, size_t n);

/* Methods and globals (jinja_methods.c). jmethod_find: the method id of `name` on v's type,
 * or -1 (an unknown or unsafe attribute). */
int jmethod_find(jval v, const char *name, size_t n);
int jfunc_call(struct jrender *r, jfunc *f, const jargs *a, jval *out);
/* Global functions by name: JF_* or -1. */
int jglobal_id(const char *name, size_t n);
jval jglobal_value(jctx *c, int id); /* a JT_FUNC (or undefined on out of memory) */

/* The evaluator's operations that filters and methods share (jinja_render.c): a macro call,
 * Python's binary arithmetic (+ - * / // % ** as op), and `in`. Arguments are borrowed. */
int jrender_call_macro(struct jrender *r, jmacro *m, const jargs *a, jval *out);
int jarith(struct jrender *r, int op, jval a, jval b, jval *out);
int jcontains(struct jrender *r, jval needle, jval hay, bool *out);

/* The render state that filters and methods see. */
typedef struct jrender {
    jctx *c;
    jdict *vars;  /* the JSON object of variables */
    jscope *root; /* top-level assignments */
    jns **nss;    /* every namespace created: their attributes are cleared at the end */
    size_t n_nss, cap_nss;
    uint32_t macro_depth;
    jval chain_input; /* the text a filter block or block set hands its filter chain */
} jrender;

/* Registers a new namespace with the render (takes one reference for the render). */
int jrender_add_ns(jrender *r, jns *ns);

#endif
