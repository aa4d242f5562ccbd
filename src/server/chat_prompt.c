/* chat_prompt.c — rendering a conversation with a Jinja template or a built-in format (see
 * chat_prompt.h). The template's variables are written as JSON for plumb_template_render:
 * messages, tools, add_generation_prompt, bos_token and eos_token, as apply_chat_template
 * passes them. */
#include "chat_prompt.h"

#include "gen.h"

#include "core/error.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A token's text (malloc'd, "" when the id is none). */
static char *token_text(const plumb_vocab_t *v, int32_t id) {
    plumb_str s = {"", 0};
    if (id >= 0) plumb_vocab_token_text(v, id, &s);
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

static plumb_status use_template(plumb_gen_chat *c, const char *text, size_t len) {
    if (!(c->tmpl = malloc(len + 1))) return PLUMB_E_NOMEM;
    memcpy(c->tmpl, text, len);
    c->tmpl[len] = '\0';
    c->tmpl_len = len;
    return PLUMB_OK;
}

plumb_status plumb_gen_chat_init(plumb_gen_chat *c, const plumb_model_t *m, const char *format_name,
                                 const char *template_text, size_t template_len, char *warning, size_t warning_cap) {
    memset(c, 0, sizeof *c);
    c->format = PLUMB_CHAT_UNKNOWN;
    if (warning_cap) warning[0] = '\0';
    const plumb_vocab_t *v = plumb_model_vocab(m);
    c->bos = token_text(v, plumb_vocab_bos(v));
    c->eos = token_text(v, plumb_vocab_eos(v));
    if (!c->bos || !c->eos) {
        plumb_gen_chat_free(c);
        return PLUMB_E_NOMEM;
    }
    plumb_status st;
    if (template_text) {
        if ((st = plumb_template_check(template_text, template_len, NULL)) || (st = use_template(c, template_text, template_len)))
            plumb_gen_chat_free(c);
        else snprintf(c->source, sizeof c->source, "the chat template file");
        return st;
    }
    if (format_name) {
        c->format = plumb_chat_format_from_name(format_name);
        snprintf(c->source, sizeof c->source, "built-in %s", plumb_chat_format_name(c->format));
        return c->format == PLUMB_CHAT_UNKNOWN ? PLUMB_E_INVALID_ARG : PLUMB_OK;
    }
    plumb_str t;
    if (plumb_model_chat_template(m, &t) == PLUMB_OK) {
        st = plumb_template_check(t.ptr, (size_t)t.len, NULL);
        if (st == PLUMB_OK) {
            if ((st = use_template(c, t.ptr, (size_t)t.len))) plumb_gen_chat_free(c);
            else snprintf(c->source, sizeof c->source, "the model's chat template");
            return st;
        }
        if (st == PLUMB_E_NOMEM) {
            plumb_gen_chat_free(c);
            return st;
        }
        snprintf(warning, warning_cap, "the model's chat template cannot be used (%s)", plumb_last_error());
    }
    c->format = plumb_gen_chat_format(m, NULL);
    if (c->format == PLUMB_CHAT_UNKNOWN) {
        plumb_gen_chat_free(c);
        return PLUMB_E_NOT_FOUND;
    }
    snprintf(c->source, sizeof c->source, "built-in %s", plumb_chat_format_name(c->format));
    if (warning_cap && warning[0]) {
        size_t n = strlen(warning);
        snprintf(warning + n, warning_cap - n, "; using the built-in %s format instead", plumb_chat_format_name(c->format));
    }
    return PLUMB_OK;
}

void plumb_gen_chat_free(plumb_gen_chat *c) {
    free(c->tmpl);
    free(c->bos);
    free(c->eos);
    memset(c, 0, sizeof *c);
}

/* The template's variables as JSON (malloc'd), messages given as an array (taken). */
static char *template_vars(const plumb_gen_chat *c, cJSON *messages, const char *tools_json, bool add_generation_prompt) {
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        cJSON_Delete(messages);
        return NULL;
    }
    cJSON_AddItemToObject(root, "messages", messages);
    cJSON *tools = tools_json ? cJSON_Parse(tools_json) : NULL;
    if (tools) cJSON_AddItemToObject(root, "tools", tools);
    else cJSON_AddNullToObject(root, "tools"); /* defined but None, as apply_chat_template passes it */
    cJSON_AddBoolToObject(root, "add_generation_prompt", add_generation_prompt);
    cJSON_AddStringToObject(root, "bos_token", c->bos);
    cJSON_AddStringToObject(root, "eos_token", c->eos);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static plumb_status render_template(const plumb_gen_chat *c, cJSON *messages, const char *tools_json, bool gen_prompt,
                                    char **text, size_t *len, plumb_span **marks, size_t *n_marks) {
    char *vars = template_vars(c, messages, tools_json, gen_prompt);
    if (!vars) return PLUMB_E_NOMEM;
    plumb_status st = plumb_template_render(c->tmpl, c->tmpl_len, vars, strlen(vars), NULL, text, len, marks, n_marks);
    free(vars);
    return st;
}

plumb_status plumb_gen_chat_render(const plumb_gen_chat *c, const plumb_chat_message *msgs, size_t n,
                                   const char *tools_json, bool add_generation_prompt, char **text, size_t *len,
                                   plumb_span **marks, size_t *n_marks) {
    *text = NULL;
    *marks = NULL;
    *len = *n_marks = 0;
    if (!c->tmpl) return plumb_chat_apply_marked(c->format, msgs, n, true, add_generation_prompt, text, len, marks, n_marks);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "role", msgs[i].role);
        cJSON_AddStringToObject(msg, "content", msgs[i].content);
        cJSON_AddItemToArray(arr, msg);
    }
    return render_template(c, arr, tools_json, add_generation_prompt, text, len, marks, n_marks);
}

plumb_status plumb_gen_chat_render_json(const plumb_gen_chat *c, const char *messages_json, const char *tools_json,
                                        bool add_generation_prompt, char **text, size_t *len, plumb_span **marks,
                                        size_t *n_marks) {
    *text = NULL;
    *marks = NULL;
    *len = *n_marks = 0;
    cJSON *arr = cJSON_Parse(messages_json);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return plumb__fail(PLUMB_E_INVALID_ARG, "messages: not a JSON array of messages");
    }
    if (c->tmpl) return render_template(c, arr, tools_json, add_generation_prompt, text, len, marks, n_marks);
    /* a built-in format takes only roles and string contents */
    int n = cJSON_GetArraySize(arr);
    plumb_chat_message *msgs = calloc(n ? (size_t)n : 1, sizeof *msgs);
    plumb_status st = msgs ? PLUMB_OK : PLUMB_E_NOMEM;
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role"), *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (st) break;
        if (!cJSON_IsString(role) || !cJSON_IsString(content))
            st = plumb__fail(PLUMB_E_INVALID_ARG, "messages[%d]: a built-in format takes a string role and content", i);
        else msgs[i++] = (plumb_chat_message){role->valuestring, content->valuestring};
    }
    if (!st) st = plumb_chat_apply_marked(c->format, msgs, (size_t)i, true, add_generation_prompt, text, len, marks, n_marks);
    free(msgs);
    cJSON_Delete(arr);
    return st;
}
