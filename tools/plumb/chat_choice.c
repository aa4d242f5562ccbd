/* chat_choice.c — how a subcommand renders conversations for a loaded model: a template file
 * (--chat-template-file), a built-in format (--chat-format), or the model's own template (see
 * src/server/chat_prompt.h), with the messages the user should see when one cannot be used. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cli_chat_choose(const char *cmd, const plumb_model_t *m, const char *format, const char *template_file,
                    plumb_gen_chat *out) {
    char *text = NULL;
    size_t len = 0;
    if (template_file) {
        FILE *f = fopen(template_file, "rb");
        text = f ? cli_read_all(f, 1u << 20, &len) : NULL;
        int e = errno;
        if (f) fclose(f);
        if (!text) {
            fprintf(stderr, "plumb %s: cannot read chat template file '%s': %s\n", cmd, template_file, strerror(e));
            return 1;
        }
    }
    char warning[600];
    plumb_status st = plumb_gen_chat_init(out, m, format, text, len, warning, sizeof warning);
    free(text);
    if (warning[0]) fprintf(stderr, "plumb %s: %s\n", cmd, warning);
    if (st == PLUMB_E_NOT_FOUND) {
        fprintf(stderr, "plumb %s: the model has no chat template or format plumb recognizes; give one with "
                        "--chat-template-file or --chat-format gemma|llama3|chatml\n", cmd);
        return 1;
    }
    if (st == PLUMB_E_UNSUPPORTED || st == PLUMB_E_INVALID_ARG) {
        fprintf(stderr, "plumb %s: %s: %s\n", cmd, template_file ? template_file : "chat format", plumb_last_error());
        return 1;
    }
    if (st) {
        cli_error(cmd, st, NULL);
        return 1;
    }
    return 0;
}
