/* cmd_perplexity.c — `plumb perplexity -m MODEL -f TEXT`: llama-perplexity's measure of a
 * model on a text. The text's tokens are cut into non-overlapping chunks of n_ctx tokens (BOS
 * first when the model adds one); each chunk is evaluated from an empty cache in one batched
 * pass, and the second half of its positions is scored: PPL = exp(mean -log p(next token)),
 * with its standard error. Several chunks share a pass as sequences (-b / -c of them).
 *
 * --kl-divergence-base F also saves every scored position's log-probabilities in
 * llama-perplexity's compact form; --kl-divergence then measures another model (a quant of
 * the same one) against that file: the KL divergence of its distributions from the base's,
 * the change in the probability of the right token, how often the two agree on the most
 * likely token, and both perplexities. The arithmetic is src/eval/ppl.c. */
#include "cli.h"
#include "options.h"

#include "eval/ppl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const char usage[] =
    "usage: plumb perplexity -m MODEL -f TEXT [options]\n"
    "  -m, --model FILE             GGUF model (required)\n"
    "  -f, --file FILE              the text (plain UTF-8; at least two chunks of tokens)\n"
    "  -c, --ctx-size N             tokens per chunk (default 512); the second half is scored\n"
    "  -b, --batch-size N           tokens per pass: chunks evaluated together (default 2048)\n"
    "      --chunks N               at most N chunks (default: all the text has)\n"
    "  -t, --threads N              compute threads (default: the CPUs this process may use)\n"
    "      --kl-divergence-base F   also save the log-probabilities of every scored token to F\n"
    "      --kl-divergence          measure the model against F (its tokens; -f is not needed)\n"
    "      --no-repack              no interleaved weight rows for the CPU's GEMM (same results; no kept copy)\n"
    "      --fast-gemm              prompts with each block's products summed as one integer: faster, not llama.cpp's exact logits\n";

typedef struct ppl_opts {
    eval_options e;
    const char *base;
    bool kld;
} ppl_opts;

static int parse(ppl_opts *o, int argc, char **argv) {
    *o = (ppl_opts){0};
    eval_options_init(&o->e);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            cli_device_print_usage(stdout, 29);
            return 0;
        }
        const int r = eval_options_parse(&o->e, "perplexity", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "--kl-divergence")) {
            o->kld = true;
        } else if (options_is(a, "--kl-divergence-base", NULL)) {
            if (!(v = options_value("perplexity", argc, argv, &i))) return 2;
            o->base = v;
        } else {
            fprintf(stderr, "plumb perplexity: unknown option '%s' (see plumb perplexity --help)\n", a);
            return 2;
        }
    }
    if (!o->e.model || (!o->e.text && !o->kld)) {
        fprintf(stderr, "plumb perplexity: usage: plumb perplexity -m MODEL -f TEXT (see --help)\n");
        return 2;
    }
    if (o->kld && !o->base) {
        fprintf(stderr, "plumb perplexity: --kl-divergence needs the base model's file (--kl-divergence-base F)\n");
        return 2;
    }
    return -1;
}

/* A run's model, context and buffers. */
typedef struct run {
    plumb_model_t *m;
    plumb_context_t *ctx;
    int32_t n_vocab, n_ctx, n_seq, bos;
    int32_t *ids, *pos, *seq;
    bool *want;
} run;

static void run_free(run *r) {
    plumb_context_free(r->ctx);
    plumb_model_free(r->m);
    free(r->ids), free(r->pos), free(r->seq), free(r->want);
}

/* The model, and a context of n_seq sequences of n_ctx positions. */
static plumb_status run_open(run *r, const ppl_opts *o, const char *path, int32_t n_ctx) {
    plumb_model_params mp = o->e.mp;
    cli_device_fallback("perplexity", &mp);
    plumb_status st = plumb_model_load_params(path, &mp, &r->m);
    if (st) return st;
    plumb_model_info info;
    plumb_model_get_info(r->m, &info);
    const plumb_vocab_t *v = plumb_model_vocab(r->m);
    r->n_vocab = info.n_vocab;
    r->n_ctx = n_ctx;
    r->n_seq = o->e.n_batch / n_ctx > 1 ? o->e.n_batch / n_ctx : 1;
    if (r->n_seq > 64) r->n_seq = 64;
    r->bos = plumb_vocab_add_bos(v) ? plumb_vocab_bos(v) : -1;
    plumb_context_params cp = plumb_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_seq = r->n_seq;
    cp.n_batch = n_ctx < 512 ? n_ctx : 512;
    if (o->e.threads > 0) cp.n_threads = o->e.threads;
    cp.no_repack = o->e.no_repack;
    cp.fast_gemm = o->e.fast_gemm;
    if ((st = plumb_context_create(r->m, &cp, &r->ctx))) return st;
    const size_t n = (size_t)r->n_seq * (size_t)n_ctx;
    r->ids = malloc(n * sizeof *r->ids), r->pos = malloc(n * sizeof *r->pos), r->seq = malloc(n * sizeof *r->seq);
    r->want = malloc(n * sizeof *r->want);
    if (!r->ids || !r->pos || !r->seq || !r->want) return PLUMB_E_NOMEM;
    return PLUMB_OK;
}

/* Chunks [c, c + k) of tokens through the model, from an empty cache: afterwards the logits
 * of chunk c + s at position first + j are plumb_get_logits(ctx, s * (n_ctx - first) + j). */
static plumb_status eval_chunks(run *r, const int32_t *tokens, int32_t c, int32_t k) {
    const int32_t n_ctx = r->n_ctx, first = n_ctx / 2;
    for (int32_t s = 0; s < r->n_seq; s++) plumb_seq_truncate(r->ctx, s, 0);
    for (int32_t s = 0; s < k; s++)
        for (int32_t j = 0; j < n_ctx; j++) {
            const size_t at = (size_t)s * (size_t)n_ctx + (size_t)j;
            r->ids[at] = j == 0 && r->bos >= 0 ? r->bos : tokens[(size_t)(c + s) * (size_t)n_ctx + (size_t)j];
            r->pos[at] = j, r->seq[at] = s, r->want[at] = j >= first;
        }
    plumb_batch b = {.n_tokens = k * n_ctx, .tokens = r->ids, .pos = r->pos, .seq = r->seq, .logits = r->want};
    return plumb_decode(r->ctx, &b);
}

static void eta(double seconds, int32_t passes) {
    fprintf(stderr, "plumb perplexity: %.2f seconds per pass - ETA %.2f minutes\n", seconds, seconds * passes / 60.0);
}

/* Perplexity of the text; with o->base, the log-probabilities saved there. */
static int perplexity(const ppl_opts *o, const char *path) {
    run r = {0};
    int32_t *tokens = NULL;
    size_t n_tok = 0;
    uint16_t *rec = NULL;
    FILE *out = NULL;
    char tmp[4200] = "";
    int rc = 1;
    plumb_status st = run_open(&r, o, path, o->e.n_ctx);
    if (st) {
        cli_error("perplexity", st, NULL);
        goto done;
    }
    if (cli_text_tokens("perplexity", o->e.text, plumb_model_vocab(r.m), &tokens, &n_tok)) goto done;
    const int32_t n_ctx = o->e.n_ctx, first = n_ctx / 2, scored = n_ctx - 1 - first;
    if (n_tok < 2 * (size_t)n_ctx) {
        fprintf(stderr, "plumb perplexity: %s has %zu tokens; at least %d (two chunks of -c %d) are needed\n", o->e.text, n_tok,
                2 * n_ctx, n_ctx);
        goto done;
    }
    int32_t n_chunk = (int32_t)(n_tok / (size_t)n_ctx);
    if (o->e.n_chunks > 0 && o->e.n_chunks < n_chunk) n_chunk = o->e.n_chunks;
    const size_t slots = plumb__ppl_record_slots(r.n_vocab);
    if (o->base) { /* written aside, renamed when complete */
        snprintf(tmp, sizeof tmp, "%s.part", o->base);
        out = fopen(tmp, "wb");
        rec = malloc(slots * sizeof *rec);
        if (!out || !rec) {
            fprintf(stderr, "plumb perplexity: cannot write %s: %s\n", tmp, strerror(errno));
            goto done;
        }
        const uint32_t c32 = (uint32_t)n_ctx;
        const int32_t head[2] = {r.n_vocab, n_chunk};
        fwrite("_logits_", 1, 8, out);
        fwrite(&c32, 4, 1, out);
        fwrite(head, 4, 2, out);
        fwrite(tokens, sizeof *tokens, (size_t)n_chunk * (size_t)n_ctx, out);
    }
    fprintf(stderr, "plumb perplexity: %d chunks of %d tokens, %d at a time, %zu tokens in the text\n", n_chunk, n_ctx, r.n_seq,
            n_tok);
    double nll = 0.0, nll2 = 0.0;
    int64_t count = 0;
    for (int32_t c = 0; c < n_chunk; c += r.n_seq) {
        const int32_t k = n_chunk - c < r.n_seq ? n_chunk - c : r.n_seq;
        const double t0 = cli_now();
        if ((st = eval_chunks(&r, tokens, c, k))) {
            cli_error("perplexity", st, NULL);
            goto done;
        }
        if (c == 0) eta(cli_now() - t0, (n_chunk + r.n_seq - 1) / r.n_seq);
        for (int32_t s = 0; s < k; s++) {
            const int32_t *next = tokens + (size_t)(c + s) * (size_t)n_ctx + first + 1;
            for (int32_t j = 0; j < scored; j++) {
                const float *logits = plumb_get_logits(r.ctx, s * (n_ctx - first) + j);
                const double v = out ? plumb__ppl_record(logits, r.n_vocab, next[j], rec)
                                     : plumb__ppl_nll(logits, r.n_vocab, next[j], NULL, NULL);
                if (out && fwrite(rec, sizeof *rec, slots, out) != slots) {
                    fprintf(stderr, "plumb perplexity: cannot write %s: %s\n", tmp, strerror(errno));
                    goto done;
                }
                nll += v, nll2 += v * v;
            }
            count += scored;
            printf("[%d]%.4f,", c + s + 1, exp(nll / (double)count));
            fflush(stdout);
        }
    }
    printf("\n");
    nll /= (double)count, nll2 /= (double)count;
    const double ppl = exp(nll);
    nll2 -= nll * nll;
    if (nll2 > 0) printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, sqrt(nll2 / (double)(count - 1)) * ppl);
    else printf("Final estimate: PPL = %.4f (no spread over the tokens: no uncertainty)\n", ppl);
    if (out) {
        const bool ok = fflush(out) == 0 && !ferror(out);
        const int err = errno;
        fclose(out);
        out = NULL;
        if (!ok || rename(tmp, o->base)) {
            fprintf(stderr, "plumb perplexity: cannot write %s: %s\n", o->base, strerror(ok ? errno : err));
            goto done;
        }
        tmp[0] = 0;
        fprintf(stderr, "plumb perplexity: the base's log-probabilities are in %s\n", o->base);
    }
    rc = 0;
done:
    if (out) fclose(out);
    if (tmp[0]) remove(tmp);
    free(rec);
    free(tokens);
    run_free(&r);
    return rc;
}

/* mean and standard error of a sum and a sum of squares over count values */
static void mean_err(double sum, double sum2, uint64_t count, double *mean, double *err) {
    *mean = *err = 0.0;
    if (count < 1) return;
    *mean = sum / (double)count;
    const double var = sum2 / (double)count - *mean * *mean;
    *err = var > 0 && count > 10 ? sqrt(var / (double)(count - 1)) : 0.0;
}

static double covariance(double a, double b, double ab, uint64_t count) {
    if (count < 10) return 0.0;
    return (ab / (double)count - (a / (double)count) * (b / (double)count)) / (double)(count - 1);
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The value at fraction f of sorted v[0..n), interpolated. */
static float percentile(const float *v, size_t n, float f) {
    if (f <= 0) return v[0];
    if (f >= 1) return v[n - 1];
    float p = f * (float)(n - 1);
    const size_t i = (size_t)p;
    p -= (float)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

static float median(const float *v, size_t n) { return n % 2 ? v[n / 2] : 0.5f * (v[n / 2] + v[n / 2 - 1]); }

static void print_summary(const plumb_ppl_kld *k, float *kld, float *dp, size_t n) {
    qsort(kld, n, sizeof *kld, cmp_float);
    qsort(dp, n, sizeof *dp, cmp_float);
    double lp, lp_err, lb, lb_err;
    mean_err(k->sum_nll, k->sum_nll2, k->count, &lp, &lp_err);
    mean_err(k->sum_nll_base, k->sum_nll_base2, k->count, &lb, &lb_err);
    const double ppl = exp(lp), ppl_err = ppl * lp_err, base = exp(lb), base_err = base * lb_err;
    const double cov = covariance(k->sum_nll, k->sum_nll_base, k->sum_nll_nll_base, k->count);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl, ppl_err);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", base, base_err);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * cov / (lp_err * lb_err));
    const double ratio = lp - lb, ratio_err = sqrt(lp_err * lp_err + lb_err * lb_err - 2.0 * cov);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", ratio, ratio_err);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(ratio), exp(ratio) * ratio_err);
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n\n", ppl - base,
           sqrt(ppl_err * ppl_err + base_err * base_err - 2.0 * ppl * base * cov));
    double m, e;
    mean_err(k->sum_kld, k->sum_kld2, k->count, &m, &e);
    printf("====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f ± %10.6f\n", m, e);
    printf("Maximum KLD: %10.6f\n", kld[n - 1]);
    static const float kp[] = {0.999f, 0.990f, 0.950f, 0.900f};
    static const char *const kn[] = {"99.9%", "99.0%", "95.0%", "90.0%"};
    for (int i = 0; i < 4; i++) printf("%-8sKLD: %10.6f\n", kn[i], percentile(kld, n, kp[i]));
    printf("Median  KLD: %10.6f\n", median(kld, n));
    static const float lo[] = {0.100f, 0.050f, 0.010f, 0.001f};
    static const char *const ln[] = {"10.0%", " 5.0%", " 1.0%", " 0.1%"};
    for (int i = 0; i < 4; i++) printf("%-8sKLD: %10.6f\n", ln[i], percentile(kld, n, lo[i]));
    printf("Minimum KLD: %10.6f\n\n", kld[0]);
    mean_err(k->sum_p_diff, k->sum_p_diff2, k->count, &m, &e);
    printf("====== Token probability statistics ======\n");
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * m, 100.0 * e);
    printf("Maximum Δp: %6.3f%%\n", 100.0 * dp[n - 1]);
    static const float pp[] = {0.999f, 0.990f, 0.950f, 0.900f, 0.750f};
    static const char *const pn[] = {"99.9%", "99.0%", "95.0%", "90.0%", "75.0%"};
    for (int i = 0; i < 5; i++) printf("%-8sΔp: %6.3f%%\n", pn[i], 100.0 * percentile(dp, n, pp[i]));
    printf("Median  Δp: %6.3f%%\n", 100.0 * median(dp, n));
    static const float pl[] = {0.250f, 0.100f, 0.050f, 0.010f, 0.001f};
    static const char *const pln[] = {"25.0%", "10.0%", " 5.0%", " 1.0%", " 0.1%"};
    for (int i = 0; i < 5; i++) printf("%-8sΔp: %6.3f%%\n", pln[i], 100.0 * percentile(dp, n, pl[i]));
    printf("Minimum Δp: %6.3f%%\n", 100.0 * dp[0]);
    mean_err(k->sum_p_diff2, k->sum_p_diff4, k->count, &m, &e);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * sqrt(m), 100.0 * 0.5 / sqrt(m) * e);
    const double same = (double)k->n_same_top / (double)k->count;
    printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * same, 100.0 * sqrt(same * (1.0 - same) / (double)(k->count - 1)));
}

/* One line of the running table: chunk, PPL, ln(PPL(Q)/PPL(base)), KLD, RMS Δp, same top. */
static void print_row(int32_t chunk, const plumb_ppl_kld *k) {
    double lp, lp_err, lb, lb_err, m, e;
    mean_err(k->sum_nll, k->sum_nll2, k->count, &lp, &lp_err);
    mean_err(k->sum_nll_base, k->sum_nll_base2, k->count, &lb, &lb_err);
    const double cov = covariance(k->sum_nll, k->sum_nll_base, k->sum_nll_nll_base, k->count);
    printf("%4d    %9.4f ± %9.4f", chunk, exp(lp), exp(lp) * lp_err);
    printf("    %10.5f ± %10.5f", lp - lb, sqrt(lp_err * lp_err + lb_err * lb_err - 2.0 * cov));
    mean_err(k->sum_kld, k->sum_kld2, k->count, &m, &e);
    printf("    %10.5f ± %10.5f", m, e);
    mean_err(k->sum_p_diff2, k->sum_p_diff4, k->count, &m, &e);
    printf("    %6.3f ± %6.3f %%", 100.0 * sqrt(m), 100.0 * 0.5 / sqrt(m) * e);
    const double same = (double)k->n_same_top / (double)k->count;
    printf("    %6.3f ± %6.3f %%\n", 100.0 * same, 100.0 * sqrt(same * (1 - same) / (double)(k->count - 1)));
    fflush(stdout);
}

/* Reads n bytes of the base file; 1 after an error line naming what was read. */
static int read_base(FILE *f, void *dst, size_t n, const char *path, const char *what) {
    if (fread(dst, 1, n, f) == n) return 0;
    fprintf(stderr, "plumb perplexity: %s: %s (the file ends early: not a complete --kl-divergence-base file)\n", path, what);
    return 1;
}

/* The model measured against the base file's log-probabilities. */
static int kl_divergence(const ppl_opts *o, const char *path) {
    FILE *f = fopen(o->base, "rb");
    if (!f) {
        fprintf(stderr, "plumb perplexity: cannot read %s: %s\n", o->base, strerror(errno));
        return 1;
    }
    run r = {0};
    int32_t *tokens = NULL;
    uint16_t *base = NULL;
    float *kld = NULL, *dp = NULL;
    int rc = 1;
    char magic[8];
    uint32_t n_ctx = 0;
    int32_t head[2] = {0, 0};
    if (read_base(f, magic, 8, o->base, "the header") || read_base(f, &n_ctx, 4, o->base, "the header") ||
        read_base(f, head, 8, o->base, "the header"))
        goto done;
    if (memcmp(magic, "_logits_", 8) || n_ctx < 16 || n_ctx > EVAL_MAX_CTX || head[0] < 1 || head[1] < 1 ||
        (uint64_t)head[1] * n_ctx > ((uint64_t)1 << 31)) {
        fprintf(stderr, "plumb perplexity: %s is not a --kl-divergence-base file (header: context %u, vocabulary %d, %d chunks)\n",
                o->base, n_ctx, head[0], head[1]);
        goto done;
    }
    const int32_t n_vocab = head[0], n_chunk = head[1], first = (int32_t)n_ctx / 2, scored = (int32_t)n_ctx - 1 - first;
    plumb_status st = run_open(&r, o, path, (int32_t)n_ctx);
    if (st) {
        cli_error("perplexity", st, NULL);
        goto done;
    }
    if (n_vocab != r.n_vocab) {
        fprintf(stderr, "plumb perplexity: %s was made with a vocabulary of %d tokens, this model has %d: not the same model family\n",
                o->base, n_vocab, r.n_vocab);
        goto done;
    }
    const size_t n_tok = (size_t)n_chunk * n_ctx, slots = plumb__ppl_record_slots(n_vocab), n_scored = (size_t)n_chunk * (size_t)scored;
    tokens = malloc(n_tok * sizeof *tokens);
    base = malloc((size_t)scored * slots * sizeof *base);
    kld = malloc(n_scored * sizeof *kld), dp = malloc(n_scored * sizeof *dp);
    if (!tokens || !base || !kld || !dp) {
        fprintf(stderr, "plumb perplexity: out of memory for %d chunks of %u tokens\n", n_chunk, n_ctx);
        goto done;
    }
    if (read_base(f, tokens, n_tok * sizeof *tokens, o->base, "the tokens")) goto done;
    for (size_t i = 0; i < n_tok; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            fprintf(stderr, "plumb perplexity: %s: token %zu is %d, outside the vocabulary\n", o->base, i, tokens[i]);
            goto done;
        }
    fprintf(stderr, "plumb perplexity: %d chunks of %u tokens, %d at a time\n", n_chunk, n_ctx, r.n_seq);
    plumb_ppl_kld k = {0};
    size_t at = 0;
    for (int32_t c = 0; c < n_chunk; c += r.n_seq) {
        const int32_t kk = n_chunk - c < r.n_seq ? n_chunk - c : r.n_seq;
        const double t0 = cli_now();
        if ((st = eval_chunks(&r, tokens, c, kk))) {
            cli_error("perplexity", st, NULL);
            goto done;
        }
        if (c == 0) {
            eta(cli_now() - t0, (n_chunk + r.n_seq - 1) / r.n_seq);
            printf("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p\n");
        }
        for (int32_t s = 0; s < kk; s++) {
            char what[64];
            snprintf(what, sizeof what, "the log-probabilities of chunk %d", c + s + 1);
            if (read_base(f, base, (size_t)scored * slots * sizeof *base, o->base, what)) goto done;
            const int32_t *next = tokens + (size_t)(c + s) * n_ctx + first + 1;
            for (int32_t j = 0; j < scored; j++, at++)
                plumb__ppl_kld(plumb_get_logits(r.ctx, s * ((int32_t)n_ctx - first) + j), n_vocab, base + (size_t)j * slots, next[j],
                               &k, &kld[at], &dp[at]);
            print_row(c + s + 1, &k);
        }
    }
    printf("\n");
    if (k.count >= 100) print_summary(&k, kld, dp, at);
    else printf("(fewer than 100 tokens: no statistics)\n");
    rc = 0;
done:
    fclose(f);
    free(tokens), free(base), free(kld), free(dp);
    run_free(&r);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o;
    const int r = parse(&o, argc, argv);
    if (r >= 0) return r;
    cli_model_src src;
    if (cli_model_source("perplexity", o.e.model, &src)) return 1;
    return o.kld ? kl_divergence(&o, src.path) : perplexity(&o, src.path);
}
