/* main.c — the plumb command: dispatches to one subcommand per file. */
#include "cli.h"

#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb <command> [options]\n"
            "\n"
            "commands:\n"
            "  run -m MODEL -p PROMPT        generate text from a prompt (see run --help)\n"
            "  chat -m MODEL [--system TEXT] interactive chat, one message per line on stdin\n"
            "  serve -m MODEL [--port N]     OpenAI-compatible HTTP server (see serve --help)\n"
            "  bench -m MODEL [-t 1,2]       prompt and generation speed vs. the roofline (see bench --help)\n"
            "  inspect MODEL.gguf [--json]   show a GGUF file's metadata and tensors\n"
            "  tokenize -m MODEL TEXT|-      show TEXT's tokens ([--ids] [--no-bos] [--no-special])\n"
            "  template -m MODEL --messages F  the prompt a conversation becomes (see template --help)\n"
            "  embed -m MODEL TEXT...        embeddings of texts, one JSON line each (see embed --help)\n"
            "  perplexity -m MODEL -f TEXT   perplexity, and KL divergence against a base model (see perplexity --help)\n"
            "  imatrix -m MODEL -f TEXT      importance matrix for quantizing, as llama-imatrix (see imatrix --help)\n"
            "  pull REF                      download a model from an OCI registry into the store\n"
            "  push MODEL.gguf REF           package a GGUF as an OCI artifact and push it (see push --help)\n"
            "  list                          the models in the store\n"
            "  rm REF                        remove a model from the store, freeing unused blobs\n"
            "  quantize IN OUT TYPE          convert a model's weights to Q4_K_M, Q8_0, F16... (see quantize --help)\n"
            "  cluster-config --server H:P ... an HAProxy configuration for several servers (see cluster-config --help)\n"
            "  rpc-server --key-file F       serve this host's device to remote clients (see rpc-server --help)\n"
            "  info                          show version, CPU features and the devices (--device)\n"
            "  --version                     same as info\n"
            "  help                          this text\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "chat") == 0) return cmd_chat(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "template") == 0) return cmd_template(argc - 1, argv + 1);
    if (strcmp(cmd, "embed") == 0) return cmd_embed(argc - 1, argv + 1);
    if (strcmp(cmd, "perplexity") == 0) return cmd_perplexity(argc - 1, argv + 1);
    if (strcmp(cmd, "imatrix") == 0) return cmd_imatrix(argc - 1, argv + 1);
    if (strcmp(cmd, "pull") == 0) return cmd_pull(argc - 1, argv + 1);
    if (strcmp(cmd, "push") == 0) return cmd_push(argc - 1, argv + 1);
    if (strcmp(cmd, "quantize") == 0) return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(cmd, "list") == 0) return cmd_list(argc - 1, argv + 1);
    if (strcmp(cmd, "rm") == 0) return cmd_rm(argc - 1, argv + 1);
    if (strcmp(cmd, "cluster-config") == 0) return cmd_cluster_config(argc - 1, argv + 1);
    if (strcmp(cmd, "rpc-server") == 0) return cmd_rpc_server(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "plumb: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
