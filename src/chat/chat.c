/* chat.c — built-in chat formats (Gemma 3, Llama 3, ChatML): recognizing them in a GGUF's
 * Jinja template, and writing a conversation the way each model's own template renders it.
 *
 * Each format is written to match its reference Jinja template byte for byte (checked by
 * tests/e2e/test_chat_format.py against jinja2):
 *   gemma:  {bos}<start_of_turn>user\n{system}\n\n{trim(user)}<end_of_turn>\n
 *           <start_of_turn>model\n{trim(assistant)}<end_of_turn>\n ... <start_of_turn>model\n
 *           A leading system message is prepended, untrimmed, to the first turn (the
 *           template does not trim it); after it, turns must alternate user/assistant
 *           starting with user (the template raises otherwise); a system message anywhere
 *           else cannot be expressed.
 *   llama3: {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{trim(content)}<|eot_id|> ...
 *           <|start_header_id|>assistant<|end_header_id|>\n\n
 *   chatml: <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n (no BOS
 *           text, no trimming).
 * "trim" is Jinja's trim filter, i.e. Python's str.strip(): it removes every Unicode
 * whitespace code point (not only ASCII) from both ends. */
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

static const char *const format_names[] = {"gemma", "llama3", "chatml"};

/* ---- names and detection -------------------------------------------------------------- */

plumb_chat_format plumb_chat_format_from_name(const char *name) {
    if (!name) return PLUMB_CHAT_UNKNOWN;
    for (int i = 0; i < (int)(sizeof format_names / sizeof format_names[0]); i++)
        if (strcmp(name, format_names[i]) == 0) return (plumb_chat_format)i;
    return PLUMB_CHAT_UNKNOWN;
}

const char *plumb_chat_format_name(plumb_chat_format f) {
    if (f >= PLUMB_CHAT_GEMMA && f <= PLUMB_CHAT_CHATML) return format_names[f];
    return "unknown";
}

/* true when needle occurs in hay[0..len) (hay need not be NUL-terminated). */
static bool contains(const char *hay, size_t len, const char *needle) {
    size_t m = strlen(needle);
    if (m == 0) return true;
    if (len < m) return false;
    for (size_t i = 0; i + m <= len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return true;
    return false;
}

plumb_chat_format plumb_chat_format_detect(const char *tmpl, size_t len) {
    if (!tmpl) return PLUMB_CHAT_UNKNOWN;
    if (contains(tmpl, len, "<start_of_turn>")) return PLUMB_CHAT_GEMMA;
    if (contains(tmpl, len, "<|start_header_id|>")) return PLUMB_CHAT_LLAMA3;
    if (contains(tmpl, len, "<|im_start|>")) return PLUMB_CHAT_CHATML;
    return PLUMB_CHAT_UNKNOWN;
}

/* ---- trimming (Python str.strip semantics over UTF-8) --------------------------------- */

/* Decodes one well-formed UTF-8 sequence at p (n bytes available) into *cp; returns its
 * length, or 0 when the bytes there are not a well-formed sequence. */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned char b = p[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if ((b & 0xE0) == 0xC0) {
        len = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4, c = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

/* Python's str.isspace() for one code point. */
static bool is_unicode_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* The part of s that Python's s.strip() keeps: *begin and *len. */
static void trim(const char *s, const char **begin, size_t *len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), a = 0, b = n;
    uint32_t cp;
    for (;;) { /* leading */
        size_t l = utf8_decode(p + a, b - a, &cp);
        if (l == 0 || !is_unicode_space(cp)) break;
        a += l;
    }
    while (b > a) { /* trailing: step back to the start of the last sequence */
        size_t start = b - 1;
        while (start > a && b - start < 4 && (p[start] & 0xC0) == 0x80) start--;
        size_t l = utf8_decode(p + start, b - start, &cp);
        if (l != b - start || !is_unicode_space(cp)) break;
        b = start;
    }
    *begin = s + a;
    *len = b - a;
}

/* ---- output ---------------------------------------------------------------------------- */

/* Output text: with buf NULL only counts (the first pass sizes the buffer). The format's own
 * text (markers, role names) is recorded as marks, merged when adjacent; with marks NULL
 * they are only counted. */
typedef struct emitter {
    char *buf;
    size_t len;
    plumb_span *marks;
    size_t n_marks, marks_end; /* marks_end: where the last mark ends */
    bool overflow;
} emitter;

static void emit_n(emitter *o, const char *s, size_t n) {
    if (n > SIZE_MAX - 1 - o->len) {
        o->overflow = true;
        return;
    }
    if (o->buf) memcpy(o->buf + o->len, s, n);
    o->len += n;
}

/* The format's own text. */
static void emit(emitter *o, const char *s) {
    size_t n = strlen(s), at = o->len;
    emit_n(o, s, n);
    if (o->overflow || n == 0) return;
    if (o->n_marks && o->marks_end == at) { /* adjacent to the last mark: extend it */
        if (o->marks) o->marks[o->n_marks - 1].len += n;
    } else {
        if (o->marks) o->marks[o->n_marks] = (plumb_span){at, n};
        o->n_marks++;
    }
    o->marks_end = o->len;
}

/* A message's text, as it is. */
static void emit_content(emitter *o, const char *s) { emit_n(o, s, strlen(s)); }

static void emit_trimmed(emitter *o, const char *s) {
    const char *b;
    size_t n;
    trim(s, &b, &n);
    emit_n(o, b, n);
}

typedef enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_UNKNOWN } role;

static role role_of(const char *r) {
    if (strcmp(r, "system") == 0) return ROLE_SYSTEM;
    if (strcmp(r, "user") == 0) return ROLE_USER;
    if (strcmp(r, "assistant") == 0) return ROLE_ASSISTANT;
    return ROLE_UNKNOWN;
}

static plumb_status render_gemma(emitter *o, const plumb_chat_message *m, size_t n, bool add_bos, bool gen) {
    if (add_bos) emit(o, "<bos>");
    size_t first = 0;
    const char *system = NULL;
    if (n > 0 && role_of(m[0].role) == ROLE_SYSTEM) {
        system = m[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        role r = role_of(m[i].role);
        bool want_user = (i - first) % 2 == 0;
        if (r == ROLE_SYSTEM)
            return plumb__fail(PLUMB_E_INVALID_ARG,
                               "chat: gemma: message %zu: a system message is only possible first", i);
        if ((r == ROLE_USER) != want_user)
            return plumb__fail(PLUMB_E_INVALID_ARG,
                               "chat: gemma: message %zu is '%s' but roles must alternate user/assistant "
                               "(starting with user, after an optional system message)",
                               i, m[i].role);
        emit(o, r == ROLE_ASSISTANT ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
        if (i == first && system) {
            emit_content(o, system);
            emit(o, "\n\n");
        }
        emit_trimmed(o, m[i].content);
        emit(o, "<end_of_turn>\n");
    }
    if (gen) emit(o, "<start_of_turn>model\n");
    return PLUMB_OK;
}

static plumb_status render_llama3(emitter *o, const plumb_chat_message *m, size_t n, bool add_bos, bool gen) {
    if (add_bos) emit(o, "<|begin_of_text|>");
    for (size_t i = 0; i < n; i++) {
        emit(o, "<|start_header_id|>");
        emit(o, m[i].role);
        emit(o, "<|end_header_id|>\n\n");
        emit_trimmed(o, m[i].content);
        emit(o, "<|eot_id|>");
    }
    if (gen) emit(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return PLUMB_OK;
}

static plumb_status render_chatml(emitter *o, const plumb_chat_message *m, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        emit(o, "<|im_start|>");
        emit(o, m[i].role);
        emit(o, "\n");
        emit_content(o, m[i].content);
        emit(o, "<|im_end|>\n");
    }
    if (gen) emit(o, "<|im_start|>assistant\n");
    return PLUMB_OK;
}

static plumb_status render(plumb_chat_format f, emitter *o, const plumb_chat_message *m, size_t n, bool add_bos,
                           bool gen) {
    switch (f) {
    case PLUMB_CHAT_GEMMA: return render_gemma(o, m, n, add_bos, gen);
    case PLUMB_CHAT_LLAMA3: return render_llama3(o, m, n, add_bos, gen);
    case PLUMB_CHAT_CHATML: return render_chatml(o, m, n, gen);
    default: break;
    }
    return plumb__fail(PLUMB_E_INVALID_ARG, "chat: unknown chat format %d", (int)f);
}

plumb_status plumb_chat_apply_marked(plumb_chat_format f, const plumb_chat_message *msgs, size_t n_msgs, bool add_bos,
                                     bool add_generation_prompt, char **out, size_t *out_len, plumb_span **marks,
                                     size_t *n_marks) {
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "chat: out is NULL");
    *out = NULL;
    if (out_len) *out_len = 0;
    if (marks) *marks = NULL;
    if (n_marks) *n_marks = 0;
    if (f < PLUMB_CHAT_GEMMA || f > PLUMB_CHAT_CHATML)
        return plumb__fail(PLUMB_E_INVALID_ARG, "chat: unknown chat format %d", (int)f);
    if (n_msgs > 0 && !msgs) return plumb__fail(PLUMB_E_INVALID_ARG, "chat: messages is NULL");
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return plumb__fail(PLUMB_E_INVALID_ARG, "chat: message %zu has no %s", i,
                               msgs[i].role ? "content" : "role");
        if (role_of(msgs[i].role) == ROLE_UNKNOWN)
            return plumb__fail(PLUMB_E_INVALID_ARG,
                               "chat: message %zu: unknown role '%.64s' (system, user or assistant)", i,
                               msgs[i].role);
    }

    emitter o = {0};
    plumb_status st = render(f, &o, msgs, n_msgs, add_bos, add_generation_prompt);
    if (st != PLUMB_OK) return st;
    if (o.overflow) return plumb__fail(PLUMB_E_RANGE, "chat: conversation too long");
    char *buf = malloc(o.len + 1);
    plumb_span *spans = marks ? malloc((o.n_marks ? o.n_marks : 1) * sizeof *spans) : NULL;
    if (!buf || (marks && !spans)) {
        free(buf);
        free(spans);
        return plumb__fail(PLUMB_E_NOMEM, "chat: out of memory for %zu bytes", o.len + 1);
    }
    size_t want = o.len, want_marks = o.n_marks;
    o = (emitter){.buf = buf, .marks = spans};
    st = render(f, &o, msgs, n_msgs, add_bos, add_generation_prompt);
    PLUMB_ASSERT(st == PLUMB_OK && o.len == want && (!marks || o.n_marks == want_marks));
    buf[o.len] = '\0';
    *out = buf;
    if (out_len) *out_len = o.len;
    if (marks) *marks = spans;
    if (n_marks) *n_marks = want_marks;
    return PLUMB_OK;
}

plumb_status plumb_chat_apply(plumb_chat_format f, const plumb_chat_message *msgs, size_t n_msgs, bool add_bos,
                              bool add_generation_prompt, char **out, size_t *out_len) {
    return plumb_chat_apply_marked(f, msgs, n_msgs, add_bos, add_generation_prompt, out, out_len, NULL, NULL);
}
