/* chat_prompt.h — a conversation turned into the prompt a model was trained on, shared by
 * `plumb chat`, `plumb template` and the server: with the model's own Jinja chat template
 * (tokenizer.chat_template, rendered as Hugging Face's apply_chat_template does), a template
 * file the user gives, or a built-in family format (gemma, llama3, chatml). The rendered text
 * comes with the marks of the template's own text, so that tokenizing it with
 * plumb_tokenize_marked keeps message text from becoming control tokens. */
#ifndef PLUMB_SERVER_CHAT_PROMPT_H
#define PLUMB_SERVER_CHAT_PROMPT_H

#include "plumb.h"

typedef struct plumb_gen_chat {
    char *tmpl; /* Jinja template (malloc'd), or NULL: the built-in `format` */
    size_t tmpl_len;
    plumb_chat_format format;
    char *bos, *eos;  /* the model's BOS / EOS texts, for bos_token / eos_token (malloc'd) */
    char source[160]; /* what renders: "the model's chat template", "chat template file F", "built-in chatml" */
} plumb_gen_chat;

/* Chooses how m's conversations are rendered, in this order: template_text (a template file
 * the user gave; non-NULL), the built-in format named format_name (non-NULL), the model's own
 * template when plumb can run it, else the built-in family format recognized from the
 * template or the vocabulary. When the model's template cannot be run, *warning (warning_cap
 * bytes, "" when all is well) says why and which built-in is used instead: show it. A
 * template file plumb cannot run is an error (PLUMB_E_UNSUPPORTED, plumb_last_error() says
 * where); no usable format at all is PLUMB_E_NOT_FOUND. */
plumb_status plumb_gen_chat_init(plumb_gen_chat *c, const plumb_model_t *m, const char *format_name,
                                 const char *template_text, size_t template_len, char *warning, size_t warning_cap);
void plumb_gen_chat_free(plumb_gen_chat *c);

/* Renders msgs[0..n) (and tools_json, a JSON array of tool definitions, or NULL) into *text
 * (malloc'd, NUL-terminated, *len bytes) and *marks (malloc'd, *n_marks spans; free both).
 * The text carries its BOS when the format writes one: tokenize it without adding another.
 * PLUMB_E_INVALID_ARG for a conversation the template refuses (plumb_last_error() gives its
 * message), PLUMB_E_NOMEM, or the template's own failure status. */
plumb_status plumb_gen_chat_render(const plumb_gen_chat *c, const plumb_chat_message *msgs, size_t n,
                                   const char *tools_json, bool add_generation_prompt, char **text, size_t *len,
                                   plumb_span **marks, size_t *n_marks);

/* The same with the messages as a JSON array (messages_json), passed to a template as they
 * are (tool calls, tool results and all); a built-in format takes their roles and string
 * contents. */
plumb_status plumb_gen_chat_render_json(const plumb_gen_chat *c, const char *messages_json, const char *tools_json,
                                        bool add_generation_prompt, char **text, size_t *len, plumb_span **marks,
                                        size_t *n_marks);

#endif
