/* cmd_chat.c — `plumb chat -m MODEL [--system TEXT]`: an interactive multi-turn chat. Each
 * line on stdin is a user message; the reply streams to stdout. The whole conversation is
 * formatted with the model's chat format each turn, and the KV cache keeps the tokens it
 * shares with the previous turn, so earlier turns are not processed again. A message that
 * would not fit the context is dropped with a line on stderr and the chat goes on. Works
 * with stdin from a pipe (no prompt is printed then). */
#include "cli.h"
#include "options.h"
#include "session.h"
#include "server/gen.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct reply {
    char *text;
    size_t len, cap;
} reply;

static void emit_reply(void *user, const char *text, size_t len) {
    reply *r = user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *grown = realloc(r->text, cap);
        if (!grown) return; /* the reply shown stays complete; history keeps what fit */
        r->text = grown;
        r->cap = cap;
    }
    memcpy(r->text + r->len, text, len);
    r->len += len;
    r->text[r->len] = '\0';
}

int cmd_chat(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o, -1); /* a reply runs until the model ends its turn */
    bool stats = false;
    for (int i = 1; i < argc; i++) {
        int r = gen_options_parse(&o, "chat", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--stats")) stats = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: plumb chat -m MODEL [--system TEXT] [options]\n"
                   "  one user message per line on stdin; end with EOF (Ctrl-D)\n"
                   "      --system TEXT         system prompt\n      --stats               timing line after each reply\n");
            gen_options_print_usage(stdout, -1);
            return 0;
        } else {
            fprintf(stderr, "plumb chat: unknown option '%s' (see plumb chat --help)\n", argv[i]);
            return 2;
        }
    }
    if (!o.model) {
        fprintf(stderr, "plumb chat: usage: plumb chat -m MODEL [--system TEXT] (see --help)\n");
        return 2;
    }
    cli_model_src src;
    if (gen_options_model(&o, "chat", &src)) return 1;
    char *gbnf;
    if (!gen_options_grammar(&o, "chat", &gbnf)) return 1;
    cli_device_fallback("chat", &o.model_params);
    session s;
    plumb_gen_chat chat = {0};
    bool have_chat = false;
    int rc = 1;
    size_t n_msgs = 0, cap_msgs = 16;
    plumb_chat_message *msgs = calloc(cap_msgs, sizeof *msgs);
    char *line = NULL;
    size_t line_cap = 0;
    plumb_status st = session_open(&s, o.model, &o.model_params, &o.ctx, &o.sampling, gbnf);
    if (st || !msgs) {
        cli_error("chat", st ? st : PLUMB_E_NOMEM, NULL);
        goto out;
    }
    if (cli_chat_choose("chat", s.model, o.chat_format, o.chat_template_file, &chat)) goto out;
    have_chat = true;
    /* Instruction-tuned GGUF files carry the chat template they were tuned with; a file
     * without one is, in practice, a base (pretrained) model such as Gemma 3 270M, which
     * continues text rather than answering. The file has no more reliable sign:
     * general.type is "model" for both, and general.finetune is often absent. */
    plumb_str tmpl;
    if (plumb_model_chat_template(s.model, &tmpl) == PLUMB_E_NOT_FOUND)
        fprintf(stderr, "plumb chat: warning: the model has no chat template (tokenizer.chat_template): it is "
                        "likely a base model, not instruction-tuned, and will continue text rather than answer "
                        "(formatting with %s)\n", chat.source);
    if (o.system) msgs[n_msgs++] = (plumb_chat_message){"system", strdup(o.system)};
    const bool tty = isatty(STDIN_FILENO);
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        if (n_msgs + 2 > cap_msgs) {
            plumb_chat_message *grown = realloc(msgs, (cap_msgs *= 2) * sizeof *msgs);
            if (!grown) break;
            msgs = grown;
        }
        msgs[n_msgs++] = (plumb_chat_message){"user", strdup(line)};
        char *text = NULL;
        size_t text_len, n_marks = 0;
        plumb_span *marks = NULL;
        st = plumb_gen_chat_render(&chat, msgs, n_msgs, NULL, true, &text, &text_len, &marks, &n_marks);
        if (st == PLUMB_E_INVALID_ARG) { /* the template refuses this conversation: drop the message */
            fprintf(stderr, "plumb chat: message dropped: %s: %s\n", chat.source, plumb_last_error());
            free((char *)msgs[--n_msgs].content);
            continue;
        }
        if (st) {
            cli_error("chat", st, NULL);
            goto out;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        /* the formatted text carries its BOS; only the format's own markers are control
         * tokens, so a message that spells one stays text */
        st = plumb_gen_tokenize_marked(s.vocab, text, text_len, false, true, marks, n_marks, &ids, &n);
        free(text);
        free(marks);
        /* no room left for even one reply token: this message goes, the conversation and the
         * cache stay as they were, and the next line gets its turn */
        if (!st && n >= (size_t)s.cap) {
            fprintf(stderr, "plumb chat: message dropped: the conversation with it is %zu tokens, too long "
                            "for the context of %d (see --ctx-size)\n", n, s.cap);
            free(ids);
            free((char *)msgs[--n_msgs].content);
            continue;
        }
        if (!st) st = session_feed(&s, ids, n);
        free(ids);
        if (st) {
            cli_error("chat", st, NULL);
            goto out;
        }
        reply r = {0};
        session_stop why = session_generate(&s, o.n_predict, o.stops, o.n_stops, emit_reply, &r, &st);
        fputc('\n', stdout);
        fflush(stdout);
        msgs[n_msgs++] = (plumb_chat_message){"assistant", r.text ? r.text : strdup("")};
        if (why == SESSION_STOP_ERROR) {
            cli_error("chat", st, NULL);
            goto out;
        }
        if (why == SESSION_STOP_CONTEXT) {
            fprintf(stderr, "plumb chat: context full (%d tokens): conversation ended\n", s.cap);
            break;
        }
        if (stats) print_stats(&s);
    }
    rc = 0;
out:
    if (have_chat) plumb_gen_chat_free(&chat);
    for (size_t i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(line);
    session_close(&s);
    free(gbnf);
    return rc;
}
