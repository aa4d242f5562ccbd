/* cmd_template.c — `plumb template -m MODEL --messages FILE.json [--tools FILE.json]
 * [--no-generation-prompt] [--template-file F | --chat-format NAME]`: prints the prompt a
 * conversation becomes, exactly (no newline added), rendered as `plumb chat` and the server
 * render it: with the model's Jinja chat template unless told otherwise. */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char template_usage[] =
    "usage: plumb template -m MODEL --messages FILE.json [options]\n"
    "  -m, --model FILE            GGUF model whose chat template renders (its weights are only mapped)\n"
    "      --messages FILE.json    the conversation: [{\"role\": ..., \"content\": ...}, ...] ('-': stdin)\n"
    "      --tools FILE.json       tool definitions passed to the template as `tools`\n"
    "      --no-generation-prompt  leave out the opening of the assistant's turn\n"
    "      --template-file F       a Jinja chat template to use instead of the model's\n"
    "      --chat-format NAME      a built-in format instead: gemma, llama3 or chatml\n";

/* path's contents ('-': stdin), NUL-terminated; NULL after a message. */
static char *read_text(const char *what, const char *path) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    size_t len;
    char *text = f ? cli_read_all(f, 16u << 20, &len) : NULL;
    int e = errno;
    if (f && f != stdin) fclose(f);
    if (!text) fprintf(stderr, "plumb template: cannot read %s '%s': %s\n", what, path, strerror(e));
    return text;
}

int cmd_template(int argc, char **argv) {
    const char *model = NULL, *messages = NULL, *tools = NULL, *template_file = NULL, *format = NULL;
    bool gen_prompt = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], **dst = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(template_usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--no-generation-prompt")) {
            gen_prompt = false;
            continue;
        }
        if (options_is(a, "--model", "-m")) dst = &model;
        else if (options_is(a, "--messages", NULL)) dst = &messages;
        else if (options_is(a, "--tools", NULL)) dst = &tools;
        else if (options_is(a, "--template-file", NULL)) dst = &template_file;
        else if (options_is(a, "--chat-format", NULL)) dst = &format;
        if (!dst) {
            fprintf(stderr, "plumb template: unknown option '%s' (see plumb template --help)\n", a);
            return 2;
        }
        if (!(*dst = options_value("template", argc, argv, &i))) return 2;
    }
    if (!model || !messages) {
        fprintf(stderr, "plumb template: usage: plumb template -m MODEL --messages FILE.json (see --help)\n");
        return 2;
    }
    if (format && plumb_chat_format_from_name(format) == PLUMB_CHAT_UNKNOWN) {
        fprintf(stderr, "plumb template: bad value '%s' for --chat-format (gemma, llama3 or chatml)\n", format);
        return 2;
    }
    cli_model_src src;
    if (cli_model_source("template", model, &src)) return 1;
    model = src.path;
    if (src.chat_template[0] && !format && !template_file) template_file = src.chat_template;
    char *msgs = read_text("messages file", messages), *tls = tools ? read_text("tools file", tools) : NULL;
    plumb_model_t *m = NULL;
    plumb_model_params mp = plumb_model_default_params();
    mp.use_mmap = true;
    plumb_gen_chat chat = {0};
    bool have_chat = false;
    int rc = 1;
    if (!msgs || (tools && !tls)) goto out;
    plumb_status st = plumb_model_load_params(model, &mp, &m);
    if (st) {
        cli_error("template", st, NULL);
        goto out;
    }
    if (cli_chat_choose("template", m, format, template_file, &chat)) goto out;
    have_chat = true;
    char *text;
    size_t len, n_marks;
    plumb_span *marks;
    st = plumb_gen_chat_render_json(&chat, msgs, tls, gen_prompt, &text, &len, &marks, &n_marks);
    if (st) {
        fprintf(stderr, "plumb template: %s: %s\n", chat.source, plumb_last_error());
        goto out;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    free(marks);
    rc = fflush(stdout) ? 1 : 0;
out:
    if (have_chat) plumb_gen_chat_free(&chat);
    plumb_model_free(m);
    free(msgs);
    free(tls);
    return rc;
}
