/* options.h — options shared by the generating subcommands (run, chat): model path,
 * context and sampling settings, stop strings; and the option helpers every subcommand uses
 * (a value that must follow its option, whole numbers). */
#ifndef PLUMB_CLI_OPTIONS_H
#define PLUMB_CLI_OPTIONS_H

#include "plumb.h"

#include <stdio.h>

#define MAX_STOPS 16

typedef struct gen_options {
    const char *model;
    plumb_context_params ctx;
    plumb_sampler_params sampling;
    int32_t n_predict;
    char *stops[MAX_STOPS];
    int n_stops;
    const char *chat_format;        /* a built-in format's name; NULL: the model's template */
    const char *chat_template_file; /* a Jinja template file to use instead (NULL: none) */
    const char *system;
    plumb_model_params model_params;
    const char *grammar_file; /* --grammar-file: GBNF the output must match */
    const char *json_schema;  /* --json-schema: a JSON Schema (text, or a file) it must match */
} gen_options;

/* The defaults: the library's context and sampler defaults, n_predict tokens to generate
 * (-1: until end of generation). */
void gen_options_init(gen_options *o, int32_t n_predict);
/* Consumes argv[*i] (and its value) when it is a shared option: 1 when consumed, 0 when
 * not ours, -1 after printing an error for a bad value. */
int gen_options_parse(gen_options *o, const char *cmd, int argc, char **argv, int *i);

/* The options `plumb perplexity` and `plumb imatrix` share: -m, -f, --device,
 * --remote-key-file, -c, -b, --chunks, -t, --offload (-ngl, --n-gpu-layers), --no-repack,
 * --fast-gemm. */
typedef struct eval_options {
    const char *model, *text;
    int32_t n_ctx, n_batch, n_chunks, threads; /* threads 0: the default */
    bool no_repack, fast_gemm;
    plumb_model_params mp;
} eval_options;
#define EVAL_MAX_CTX (1 << 20)
/* The defaults: chunks of 512, passes of 2048 tokens, every chunk. */
void eval_options_init(eval_options *o);
/* As gen_options_parse, for these options. */
int eval_options_parse(eval_options *o, const char *cmd, int argc, char **argv, int *i);
/* Whether the argument arg is the option with the long name `name` ("--temp") or the short
 * name `short_name` ("-t"; either may be NULL): exactly, or GNU-style as "--temp=VALUE" (long
 * names only). */
bool options_is(const char *arg, const char *name, const char *short_name);
/* The option's name of an argument: arg without its "=VALUE" part, into buf[cap]. */
void options_name(const char *arg, char *buf, size_t cap);
/* The value of the option argv[*i]: the text after '=' of "--name=VALUE", else the next
 * argument (advancing *i past it); NULL after printing "plumb <cmd>: <option> needs a
 * value" when the option ends the line. */
const char *options_value(const char *cmd, int argc, char **argv, int *i);
/* Parses s as a whole decimal integer in [lo, hi] into *out; false otherwise. Like every
 * number of the command line, s may not have white space around it. */
bool options_parse_long(const char *s, long lo, long hi, long *out);
/* The grammar the options ask for (--grammar-file, or --json-schema converted), checked, into
 * *gbnf (malloc'd; NULL when neither option was given). false after printing why not. */
bool gen_options_grammar(const gen_options *o, const char *cmd, char **gbnf);
/* Resolves o->model (a file or a model reference, cli_model_source) into src and points
 * o->model at the GGUF; an artifact's chat template and context size are used when no
 * --chat-format/--chat-template-file/--ctx-size says otherwise. 0, or 1 after one line. */
typedef struct cli_model_src cli_model_src;
int gen_options_model(gen_options *o, const char *cmd, cli_model_src *src);
/* Usage lines of the shared options, with the defaults of gen_options_init(o, n_predict). */
void gen_options_print_usage(FILE *f, int32_t n_predict);

#endif
