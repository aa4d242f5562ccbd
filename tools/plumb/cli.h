/* cli.h — shared pieces of the plumb command: one entry point per subcommand and small
 * helpers for messages and text output. No engine logic lives in tools/plumb/. */
#ifndef PLUMB_CLI_H
#define PLUMB_CLI_H

#include "plumb.h"
#include "oci/oci.h"
#include "server/chat_prompt.h"

#include <stdio.h>

int cmd_inspect(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_perplexity(int argc, char **argv); /* perplexity and KL divergence (cmd_perplexity.c) */
int cmd_imatrix(int argc, char **argv);    /* the importance matrix (cmd_imatrix.c) */
int cmd_cluster_config(int argc, char **argv); /* HAProxy configuration (cmd_cluster.c) */
int cmd_rpc_server(int argc, char **argv);     /* serves this host's device (cmd_rpc_server.c) */
int cmd_quantize(int argc, char **argv);       /* converts a model's weights (cmd_quantize.c) */
/* models as OCI artifacts (cmd_oci.c) */
int cmd_pull(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_rm(int argc, char **argv);

/* What a -m argument names (model_source.c). */
typedef struct cli_model_src {
    char path[3300];          /* the GGUF to load (a split model's first shard) */
    char ref[700];            /* the canonical reference, "" when -m named a file */
    char manifest_digest[72]; /* the stored manifest's digest, "" for a file */
    char chat_template[3300]; /* the artifact's chat template file, "" when none */
    int64_t context_size;     /* the artifact's context size, 0 when none */
} cli_model_src;

/* Resolves -m's argument: a file (anything that exists, ends in ".gguf" or starts with '/',
 * "./", "../" or '~'), else a model reference looked up in the store and pulled into it when
 * missing ("plumb <cmd>: pulling REF" on stderr). 0 with *out filled, else 1 after printing
 * one line. */
int cli_model_source(const char *cmd, const char *arg, cli_model_src *out);

/* Prints "plumb <cmd>: " and the printf-formatted message as one line on stderr. */
void cli_errorf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "plumb <cmd>: <message>" (the library's last error when msg is NULL) on stderr. */
void cli_error(const char *cmd, plumb_status st, const char *msg);

/* Writes s[0..len) to f as a double-quoted string with C-style escapes for control bytes,
 * quotes and backslashes; invalid UTF-8 bytes are written as \xNN. At most max_bytes of s
 * are written (then "..."); max_bytes 0 means all. */
void cli_print_quoted(FILE *f, const char *s, uint64_t len, uint64_t max_bytes);

/* Copies s[0..len) into a new NUL-terminated string that is valid UTF-8: NUL bytes and
 * invalid sequences become U+FFFD. The caller frees. NULL when out of memory. */
char *cli_utf8_sanitize(const char *s, uint64_t len);

/* Reads f to its end into a new NUL-terminated buffer of *len bytes (plus the NUL): a file, a
 * FIFO or a terminal alike. NULL with errno set when a read fails (EISDIR for a directory),
 * memory runs out, or f holds more than max bytes (EFBIG). */
char *cli_read_all(FILE *f, size_t max, size_t *len);
/* The tokens of the text file at path as llama.cpp's tools take a -f file: one final newline
 * dropped, BOS added when the model adds one, special tokens as text (text_tokens.c). 0 with
 * *ids (malloc'd) and *n, else 1 after one line "plumb <cmd>: ...". */
int cli_text_tokens(const char *cmd, const char *path, const plumb_vocab_t *v, int32_t **ids, size_t *n);
/* Seconds on a monotonic clock. */
double cli_now(void);

/* The name of llama.cpp's file type value ftype (general.file_type): "Q4_K_M", "Q8_0", "F16";
 * NULL for a value it does not know (file_type.c). */
const char *cli_file_type_name(uint64_t ftype);
/* g's general.file_type into *ftype and its name (NULL when unknown) into *name; false when
 * the file has no such integer key. */
bool cli_file_type(const plumb_gguf_t *g, uint64_t *ftype, const char **name);

/* The model catalog of `plumb serve --models-dir DIR` (catalog_dir.c): the GGUF files in DIR,
 * by file name without ".gguf", read afresh on each call. Other catalogs (a model store)
 * implement server.h's plumb_server_catalog the same way: a struct of their own as `user`,
 * and list/resolve functions over it. */
struct plumb_server_catalog;
typedef struct cli_catalog_dir {
    char dir[4096];
} cli_catalog_dir;
/* Points *out at d's functions (d must outlive the server using *out). 0, or -1 with errno
 * set when dir is not a directory that can be read. */
int cli_catalog_dir_init(cli_catalog_dir *d, const char *dir, struct plumb_server_catalog *out);
/* The catalog of `plumb serve --store` (catalog_store.c): the models in plumb's store, by
 * canonical reference; a request may name one in any reference form. */
typedef struct cli_catalog_store {
    oci_store store;
} cli_catalog_store;
/* Points *out at c's functions (c must outlive the server). 0, or -1 after setting
 * plumb_last_error() when the store cannot be opened. */
int cli_catalog_store_init(cli_catalog_store *c, struct plumb_server_catalog *out);

/* ---- devices (device.c): --device D and --offload N (-ngl, --n-gpu-layers) of every
 * subcommand that loads a model, the library's plumb_model_params.device and .n_offload */

/* What the options take, for their error lines ("bad value 'x' for --offload (...)"). */
#define CLI_DEVICE_VALUES "cpu, opencl, opencl:N or remote:HOST:PORT"
#define CLI_OFFLOAD_VALUES "a layer count >= 0, or -1: all"
/* The help lines of --device and --offload, the text starting at column `width`. */
void cli_device_print_usage(FILE *f, int width);
/* Parses an --offload value: a layer count >= 0, or -1 (all). false when it is not one. */
bool cli_parse_offload(const char *s, int32_t *out);
/* When mp->device names a kind of device that has none here (plumb_device_available),
 * prints "plumb <cmd>: no <kind> device (<why>); running on the CPU" and clears mp->device.
 * Every subcommand calls it before loading. */
void cli_device_fallback(const char *cmd, plumb_model_params *mp);
/* Whether spec (NULL: the CPU) names a device there is, as plumb_model_load_params looks it up;
 * false after one line "plumb <cmd>: unknown device ...; devices: ..." (for a check before
 * anything is loaded: the library's load error says the same later). */
bool cli_device_check(const char *cmd, const char *spec);
/* The device as the subcommands show it: "cpu", "opencl:0 (19/19 layers)" (n_total <= 0:
 * "opencl:0 (19 layers)"). */
void cli_device_text(const char *spec, int32_t n_offloaded, int32_t n_total, char *buf, size_t cap);
/* The same for a loaded model (plumb_model_device; of n_layer + 1 layers, the head being one). */
void cli_model_device_text(const plumb_model_t *m, char *buf, size_t cap);
/* llama-bench's backend name of a device spec: "CPU", "OpenCL". */
const char *cli_device_backend_name(const char *spec);
/* The "devices:" section of plumb info: one line per device (spec, name, driver, memory), and
 * one per known kind that has none here, saying why. */
void cli_device_list(FILE *f);

/* Chooses how conversations with m are rendered (template file, built-in format name, or the
 * model's template: plumb_gen_chat_init), printing what the user should know on stderr as
 * "plumb <cmd>: ...". 0 with *out ready (plumb_gen_chat_free it), else 1 after the message. */
int cli_chat_choose(const char *cmd, const plumb_model_t *m, const char *format, const char *template_file,
                    plumb_gen_chat *out);

#endif
