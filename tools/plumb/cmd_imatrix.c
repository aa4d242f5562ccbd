/* cmd_imatrix.c — `plumb imatrix -m MODEL -f TEXT -o FILE`: llama-imatrix's importance matrix
 * of a model on a text (src/eval/imatrix.c), for quantizing with it. The text's tokens are cut
 * into non-overlapping chunks of -c tokens (BOS first when the model adds one) and run as
 * llama-imatrix runs them: -b / -c chunks at a time as sequences, each pass split into
 * micro-batches of at most -ub tokens the way llama.cpp splits them (an equal share of every
 * sequence per micro-batch), since which rows a matmul sees together decides what is
 * collected (none of one under 16 rows) and in which order the sums are added. The running
 * perplexity of each chunk's second half is printed as it goes. --in-file adds earlier
 * matrices (GGUF or legacy .dat); with no -f, they are only combined. */
#include "cli.h"
#include "options.h"

#include "eval/imatrix.h"
#include "eval/ppl.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEQ 256
#define MAX_IN_FILES 64

static const char usage[] =
    "usage: plumb imatrix -m MODEL -f TEXT [-o FILE] [options]\n"
    "  -m, --model FILE             GGUF model (required with -f)\n"
    "  -f, --file FILE              the text (plain UTF-8; at least two chunks of tokens)\n"
    "  -o, --output-file FILE       where the matrix goes (default imatrix.gguf)\n"
    "      --output-format F        gguf (llama.cpp's imatrix GGUF, the default) or dat (legacy)\n"
    "      --in-file F              add an earlier matrix (GGUF or .dat; repeatable); without -f,\n"
    "                               the files are only combined into -o\n"
    "  -c, --ctx-size N             tokens per chunk (default 512)\n"
    "  -b, --batch-size N           tokens per pass: chunks evaluated together (default 2048)\n"
    "  -ub, --ubatch-size N         tokens per micro-batch (default 512)\n"
    "      --chunks N               at most N chunks (default: all the text has)\n"
    "      --chunk N                skip the first N chunks of the text\n"
    "      --process-output         collect output.weight too\n"
    "      --no-ppl                 do not compute the running perplexity\n"
    "      --no-repack              no interleaved weight rows for the CPU's GEMM (same results; no kept copy)\n"
    "      --fast-gemm              prompts with each block's products summed as one integer: faster, not llama.cpp's exact logits\n"
    "  -t, --threads N              compute threads (default: the CPUs this process may use)\n";

typedef struct im_opts {
    eval_options e;
    const char *out;
    const char *in_files[MAX_IN_FILES];
    int n_in;
    bool dat, process_output, no_ppl;
    int32_t n_ubatch, skip;
} im_opts;

static int parse(im_opts *o, int argc, char **argv) {
    *o = (im_opts){.out = "imatrix.gguf", .n_ubatch = 512};
    eval_options_init(&o->e);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            cli_device_print_usage(stdout, 29);
            return 0;
        }
        const int r = eval_options_parse(&o->e, "imatrix", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "--process-output")) {
            o->process_output = true;
        } else if (!strcmp(a, "--no-ppl")) {
            o->no_ppl = true;
        } else if (options_is(a, "--output-file", "-o") || options_is(a, "--output", NULL) ||
                   options_is(a, "--output-format", NULL) || options_is(a, "--in-file", NULL)) {
            if (!(v = options_value("imatrix", argc, argv, &i))) return 2;
            if (options_is(a, "--output-file", "-o") || options_is(a, "--output", NULL)) o->out = v;
            else if (options_is(a, "--output-format", NULL)) {
                if (strcmp(v, "gguf") && strcmp(v, "dat")) {
                    fprintf(stderr, "plumb imatrix: bad value '%s' for --output-format (gguf or dat)\n", v);
                    return 2;
                }
                o->dat = !strcmp(v, "dat");
            } else if (o->n_in == MAX_IN_FILES) {
                fprintf(stderr, "plumb imatrix: at most %d --in-file\n", MAX_IN_FILES);
                return 2;
            } else {
                o->in_files[o->n_in++] = v;
            }
        } else if (options_is(a, "--ubatch-size", "-ub") || options_is(a, "--chunk", NULL) || options_is(a, "--from-chunk", NULL)) {
            if (!(v = options_value("imatrix", argc, argv, &i))) return 2;
            const bool skip = !options_is(a, "--ubatch-size", "-ub");
            if (!options_parse_long(v, skip ? 0 : 1, EVAL_MAX_CTX, &n)) {
                char name[32];
                options_name(a, name, sizeof name);
                fprintf(stderr, "plumb imatrix: bad value '%s' for %s\n", v, name);
                return 2;
            }
            if (skip) o->skip = (int32_t)n;
            else o->n_ubatch = (int32_t)n;
        } else {
            fprintf(stderr, "plumb imatrix: unknown option '%s' (see plumb imatrix --help)\n", a);
            return 2;
        }
    }
    if (!o->e.text && !o->n_in) {
        fprintf(stderr, "plumb imatrix: usage: plumb imatrix -m MODEL -f TEXT [-o FILE] (or --in-file F... to combine; see --help)\n");
        return 2;
    }
    if (o->e.text && !o->e.model) {
        fprintf(stderr, "plumb imatrix: a model is needed (-m MODEL)\n");
        return 2;
    }
    return -1;
}

/* A run: the model, its context, one micro-batch's arrays and the scores of a pass. */
typedef struct run {
    plumb_model_t *m;
    plumb_context_t *ctx;
    int32_t n_vocab, bos, n_seq, n_batch, n_ubatch;
    int32_t *ids, *pos, *seq;
    bool *want;
    double *nll; /* [n_seq][n_ctx]: -log p of the token after each scored position */
} run;

static void run_free(run *r) {
    plumb_context_free(r->ctx);
    plumb_model_free(r->m);
    free(r->ids), free(r->pos), free(r->seq), free(r->want), free(r->nll);
}

/* llama-imatrix's shapes: n_seq = b / c chunks per pass (at least 1), a pass of at most
 * n_seq * c tokens, micro-batches of at most min(ub, pass). */
static plumb_status run_open(run *r, const im_opts *o) {
    plumb_model_params mp = o->e.mp;
    cli_device_fallback("imatrix", &mp);
    plumb_status st = plumb_model_load_params(o->e.model, &mp, &r->m);
    if (st) return st;
    plumb_model_info info;
    plumb_model_get_info(r->m, &info);
    const plumb_vocab_t *v = plumb_model_vocab(r->m);
    r->n_vocab = info.n_vocab;
    r->bos = plumb_vocab_add_bos(v) ? plumb_vocab_bos(v) : -1;
    r->n_seq = o->e.n_batch / o->e.n_ctx > 1 ? o->e.n_batch / o->e.n_ctx : 1;
    r->n_batch = o->e.n_batch < r->n_seq * o->e.n_ctx ? o->e.n_batch : r->n_seq * o->e.n_ctx;
    r->n_ubatch = o->n_ubatch < r->n_batch ? o->n_ubatch : r->n_batch;
    plumb_context_params cp = plumb_context_default_params();
    cp.n_ctx = o->e.n_ctx;
    cp.n_seq = r->n_seq;
    cp.n_batch = r->n_ubatch;
    if (o->e.threads > 0) cp.n_threads = o->e.threads;
    cp.no_repack = o->e.no_repack;
    cp.fast_gemm = o->e.fast_gemm;
    if ((st = plumb_context_create(r->m, &cp, &r->ctx))) return st;
    const size_t n = (size_t)r->n_ubatch + (size_t)r->n_seq;
    r->ids = malloc(n * sizeof *r->ids), r->pos = malloc(n * sizeof *r->pos), r->seq = malloc(n * sizeof *r->seq);
    r->want = malloc(n * sizeof *r->want);
    r->nll = calloc((size_t)r->n_seq * (size_t)o->e.n_ctx, sizeof *r->nll);
    if (!r->ids || !r->pos || !r->seq || !r->want || !r->nll) return PLUMB_E_NOMEM;
    return PLUMB_OK;
}

/* One micro-batch: positions [p0, p0 + len) of sequences [0, k) (chunks c, c + 1, ...), each
 * sequence's run of tokens in turn; the logits of the scored positions are scored at once. */
static plumb_status micro_batch(run *r, const im_opts *o, const int32_t *tokens, int32_t c, int32_t k, int32_t p0,
                                int32_t len) {
    const int32_t n_ctx = o->e.n_ctx, first = n_ctx / 2;
    int32_t n = 0;
    for (int32_t s = 0; s < k; s++)
        for (int32_t p = p0; p < p0 + len; p++, n++) {
            r->ids[n] = p == 0 && r->bos >= 0 ? r->bos : tokens[(size_t)(c + s) * (size_t)n_ctx + (size_t)p];
            r->pos[n] = p, r->seq[n] = s;
            /* every row through the output head when it is collected, as llama-imatrix does */
            r->want[n] = o->process_output || (!o->no_ppl && p >= first && p < n_ctx - 1);
        }
    plumb_batch b = {.n_tokens = n, .tokens = r->ids, .pos = r->pos, .seq = r->seq, .logits = r->want};
    plumb_status st = plumb_decode(r->ctx, &b);
    if (st || o->no_ppl) return st;
    int32_t row = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!r->want[i]) continue;
        const float *logits = plumb_get_logits(r->ctx, row++);
        const int32_t s = r->seq[i], p = r->pos[i];
        if (p >= first && p < n_ctx - 1) {
            const int32_t next = tokens[(size_t)(c + s) * (size_t)n_ctx + (size_t)p + 1];
            r->nll[(size_t)s * (size_t)n_ctx + (size_t)p] = plumb__ppl_nll(logits, r->n_vocab, next, NULL, NULL);
        }
    }
    return PLUMB_OK;
}

/* Chunks [c, c + k) from an empty cache: in passes of r->n_batch positions per sequence (one
 * pass when several chunks share it), each split as llama.cpp splits a batch of k sequences:
 * micro-batches of an equal share of positions of every sequence. */
static plumb_status eval_chunks(run *r, const im_opts *o, const int32_t *tokens, int32_t c, int32_t k) {
    for (int32_t s = 0; s < r->n_seq; s++) plumb_seq_truncate(r->ctx, s, 0);
    const int32_t n_ctx = o->e.n_ctx, share = r->n_ubatch / k > 1 ? r->n_ubatch / k : 1;
    plumb_status st = PLUMB_OK;
    for (int32_t b0 = 0; b0 < n_ctx && !st; b0 += r->n_batch) {
        const int32_t b1 = b0 + r->n_batch < n_ctx ? b0 + r->n_batch : n_ctx;
        for (int32_t p0 = b0; p0 < b1 && !st; p0 += share)
            st = micro_batch(r, o, tokens, c, k, p0, b1 - p0 < share ? b1 - p0 : share);
    }
    return st;
}

static int write_out(const im_opts *o, const plumb_imatrix *im) {
    plumb_status st = o->dat ? plumb_imatrix_write_dat(im, o->out) : plumb_imatrix_write_gguf(im, o->out);
    if (st) {
        cli_error("imatrix", st, NULL);
        return 1;
    }
    fprintf(stderr, "plumb imatrix: %lld matrices over %d chunks of %d tokens written to %s\n", (long long)im->n_entries,
            im->n_chunks, im->chunk_size, o->out);
    return 0;
}

static int imatrix(const im_opts *o, plumb_imatrix *im) {
    run r = {0};
    int32_t *tokens = NULL;
    size_t n_tok = 0;
    int rc = 1;
    const double t0 = cli_now();
    plumb_status st = run_open(&r, o);
    if (st) {
        cli_error("imatrix", st, NULL);
        goto done;
    }
    if (o->e.n_batch / o->e.n_ctx > MAX_SEQ) {
        fprintf(stderr, "plumb imatrix: -b %d holds %d chunks of -c %d; at most %d are evaluated together\n", o->e.n_batch,
                o->e.n_batch / o->e.n_ctx, o->e.n_ctx, MAX_SEQ);
        goto done;
    }
    if (cli_text_tokens("imatrix", o->e.text, plumb_model_vocab(r.m), &tokens, &n_tok)) goto done;
    const int32_t n_ctx = o->e.n_ctx, first = n_ctx / 2;
    if (o->skip > 0) {
        if ((size_t)(o->skip + 2) * (size_t)n_ctx >= n_tok) {
            fprintf(stderr, "plumb imatrix: %s has %zu tokens: not enough left after skipping %d chunks of %d\n", o->e.text, n_tok,
                    o->skip, n_ctx);
            goto done;
        }
        n_tok -= (size_t)o->skip * (size_t)n_ctx;
        memmove(tokens, tokens + (size_t)o->skip * (size_t)n_ctx, n_tok * sizeof *tokens);
    }
    if (n_tok < 2 * (size_t)n_ctx) {
        fprintf(stderr, "plumb imatrix: %s has %zu tokens; at least %d (two chunks of -c %d) are needed\n", o->e.text, n_tok,
                2 * n_ctx, n_ctx);
        goto done;
    }
    int32_t n_chunk = (int32_t)(n_tok / (size_t)n_ctx);
    if (o->e.n_chunks > 0 && o->e.n_chunks < n_chunk) n_chunk = o->e.n_chunks;
    fprintf(stderr, "plumb imatrix: %d chunks of %d tokens, %d at a time, micro-batches of %d, %zu tokens in the text\n", n_chunk,
            n_ctx, r.n_seq, r.n_ubatch, n_tok);
    plumb__context_set_observer(r.ctx, plumb_imatrix_observe, im);
    double nll = 0.0;
    int64_t count = 0;
    for (int32_t c = 0; c < n_chunk; c += r.n_seq) {
        const int32_t k = n_chunk - c < r.n_seq ? n_chunk - c : r.n_seq;
        const double t1 = cli_now();
        if ((st = eval_chunks(&r, o, tokens, c, k))) {
            cli_error("imatrix", st, NULL);
            goto done;
        }
        if (c == 0) {
            const double pass = cli_now() - t1;
            fprintf(stderr, "plumb imatrix: %.2f seconds per pass - ETA %.2f minutes\n", pass,
                    pass * ((n_chunk + r.n_seq - 1) / r.n_seq) / 60.0);
        }
        if (o->no_ppl) continue;
        for (int32_t s = 0; s < k; s++) {
            for (int32_t p = first; p < n_ctx - 1; p++) nll += r.nll[(size_t)s * (size_t)n_ctx + (size_t)p];
            count += n_ctx - 1 - first;
            printf("[%d]%.4f,", c + s + 1, exp(nll / (double)count));
        }
        fflush(stdout);
    }
    if (!o->no_ppl) printf("\n");
    fprintf(stderr, "plumb imatrix: %.2f seconds for %d chunks\n", cli_now() - t0, n_chunk);
    rc = 0;
done:
    free(tokens);
    run_free(&r);
    return rc;
}

int cmd_imatrix(int argc, char **argv) {
    im_opts o;
    int rc = parse(&o, argc, argv);
    if (rc >= 0) return rc;
    plumb_imatrix im;
    plumb_imatrix_init(&im, o.e.n_ctx, o.process_output);
    for (int i = 0; i < o.n_in; i++) {
        fprintf(stderr, "plumb imatrix: loading %s\n", o.in_files[i]);
        plumb_status st = plumb_imatrix_load(&im, o.in_files[i]);
        if (st) {
            cli_error("imatrix", st, NULL);
            plumb_imatrix_free(&im);
            return 1;
        }
    }
    rc = 0;
    if (o.e.text) {
        plumb_status st = plumb_imatrix_add_dataset(&im, o.e.text);
        rc = st ? (cli_error("imatrix", st, NULL), 1) : imatrix(&o, &im);
    }
    if (!rc) rc = write_out(&o, &im);
    plumb_imatrix_free(&im);
    return rc;
}
