/* model.h — a loaded model: hyperparameters, weights (leaf tensors over the file's
 * mapping), vocabulary, and the architecture whose builder turns a batch into a graph.
 * One file per architecture (llama.c, gemma3.c) fills the registry in model.c. */
#ifndef PLUMB_MODEL_H
#define PLUMB_MODEL_H

#include "backend/backend.h"
#include "core/graph.h"

#define PLUMB_MAX_LAYERS 512

typedef struct plumb_hparams {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_rot, n_ff;
    float eps;
    float rope_base, rope_freq_scale;         /* global (full-attention) layers */
    float rope_base_swa, rope_freq_scale_swa; /* sliding-window layers */
    int32_t n_swa;                            /* window, 0 = none */
    int32_t swa_period;                       /* layer il slides when il % period < period - 1 */
    float attn_scale;                         /* applied to q before attention */
    float embd_scale;                         /* applied to the token embedding (1 = none) */
    float final_softcap;                      /* 0 = none */
    float attn_softcap;                       /* attention logit soft-cap, 0 = none */
    float rope_attn_factor;                   /* scales RoPE's cos and sin (0 or 1 = none) */
    int32_t n_ctx_orig;                       /* context the rope_factors_short are for */
    int rope_mode;
    /* mixture of experts (moe.c); n_expert 0 = a dense FFN */
    int32_t n_expert, n_expert_used, n_ff_exp;
    bool expert_weights_norm;   /* the chosen experts' probabilities divided by their sum */
    float expert_weights_scale; /* then times this (0 or 1 = none) */
    int32_t pooling;            /* {arch}.pooling_type (plumb_pooling), -1 when the file has none */
} plumb_hparams;

typedef struct plumb_layer_weights {
    plumb_tensor *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
    plumb_tensor *q_norm, *k_norm, *post_attn_norm;
    plumb_tensor *wqkv; /* fused q, k, v rows (phi3), used in place of wq, wk, wv when set */
    plumb_tensor *ffn_norm, *ffn_gate, *ffn_up, *ffn_down, *post_ffn_norm;
    /* router [n_embd, n_expert] and experts [n_embd, n_ff_exp, n_expert] ([n_ff_exp, n_embd,
     * n_expert] for down), in place of ffn_gate/up/down in a mixture-of-experts layer */
    plumb_tensor *ffn_gate_inp, *ffn_gate_exps, *ffn_up_exps, *ffn_down_exps;
} plumb_layer_weights;

typedef struct plumb_graph_inputs {
    plumb_tensor *tokens;  /* I32 [T] */
    plumb_tensor *pos;     /* I32 [T] */
    plumb_tensor *out_ids; /* I32 [n_out] rows whose logits are needed, or NULL for all */
    const int32_t *seq;    /* [T] */
    int32_t n_tokens, n_out;
    plumb_kv_cache *kv;
} plumb_graph_inputs;

typedef struct plumb_arch {
    const char *name;
    /* reads hyperparameters and looks up weights; messages name the key or tensor */
    plumb_status (*load)(plumb_model_t *m);
    /* appends the forward pass of a batch to g; returns the final hidden state [n_embd, T]
     * (plumb__build_output turns the rows that need them into logits) */
    plumb_tensor *(*build)(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in);
} plumb_arch;

struct plumb_model {
    plumb_gguf_t *gguf;
    const plumb_arch *arch;
    plumb_vocab_t *vocab;
    plumb_hparams hp;
    plumb_tensor *weights; /* [n_weights] leaves over the mapping */
    int32_t n_weights, cap_weights;
    plumb_tensor *token_embd, *output_norm, *output, *rope_freqs;
    plumb_tensor *rope_long, *rope_short; /* LongRoPE frequency factors [n_rot / 2], or NULL */
    plumb_layer_weights *layers; /* [n_layer] */
    /* where the offloaded layers run (placement.c): the device's backend, or NULL for the CPU;
     * layers [layer_first, layer_end) run there (layer n_layer is the output head), their
     * weights in the device's buffers */
    plumb_backend *device;
    char device_spec[32];
    int32_t layer_first, layer_end;
    plumb_buffer **device_bufs; /* [n_device_bufs] the weights uploaded to the device */
    int32_t n_device_bufs;
    char *name; /* the file's path (or the caller's name), for messages */
    char *general_name; /* general.name up to its first NUL, or "" (plumb_model_get_info) */
};

/* Makes a model of the opened file g, which it owns from here on (freed on failure too);
 * name prefixes the messages; p (NULL: the defaults) places it. plumb_model_load_params opens the file and calls this; the
 * model fuzzer calls it over bytes in memory. */
plumb_status plumb__model_from_gguf(plumb_gguf_t *g, const char *name, const plumb_model_params *p,
                                    plumb_model_t **out);

/* Places m on the device p names (placement.c): creates its backend, sets the offloaded
 * layer range and uploads the weights of those layers that the device can hold (a model
 * too large for the device is refused with both sizes). Nothing for the CPU. */
plumb_status plumb__model_place(plumb_model_t *m, const plumb_model_params *p);
/* Places m's last n_offload layers (-1: all, and the output head) on backend b, which m owns
 * from here on, and names it spec; the part of plumb__model_place after the lookup (the
 * scheduler's tests place models on a backend of their own with it). */
plumb_status plumb__model_place_on(plumb_model_t *m, plumb_backend *b, const char *spec, int32_t n_offload);
/* Frees what plumb__model_place made. */
void plumb__model_unplace(plumb_model_t *m);

/* Looks up tensor `name` and checks its dims (ne[d] for d < n_dims; ne[d] <= 0 skips the
 * check of that dim), that plumb computes with its type and that F32/F16/BF16 data sits on
 * a multiple of its element size. A missing tensor is an error unless optional, when *out
 * is NULL. */
plumb_status plumb__model_tensor(plumb_model_t *m, const char *name, int n_dims, const int64_t *ne, bool optional,
                                 plumb_tensor **out);
/* Formats "blk.%d.<suffix>" and calls plumb__model_tensor. */
plumb_status plumb__model_layer_tensor(plumb_model_t *m, int il, const char *suffix, int n_dims, const int64_t *ne,
                                       bool optional, plumb_tensor **out);
/* A weight applied element by element (norm weights, biases, rope_freqs): plumb__model_tensor
 * of shape [n] that must also be F32, since those ops read it as floats. */
plumb_status plumb__model_vector(plumb_model_t *m, const char *name, int64_t n, bool optional, plumb_tensor **out);
plumb_status plumb__model_layer_vector(plumb_model_t *m, int il, const char *suffix, int64_t n, bool optional,
                                       plumb_tensor **out);
/* Reads "<arch>.<suffix>" as a count / float; missing: *out keeps the default unless
 * required. */
plumb_status plumb__model_u32(const plumb_model_t *m, const char *suffix, bool required, int32_t *out);
plumb_status plumb__model_f32(const plumb_model_t *m, const char *suffix, bool required, float *out);

/* The error for key "<arch>.<suffix>" holding the out-of-range value v; why says what it
 * must be. Returns PLUMB_E_FORMAT. */
plumb_status plumb__model_bad_key(const plumb_model_t *m, const char *suffix, double v, const char *why);

/* Reads the hyperparameters every architecture has (context, sizes, heads, norm epsilon,
 * rope base, head size, value size) over the defaults the caller set, and checks them. */
plumb_status plumb__model_common_hparams(plumb_model_t *m);
/* Reads rope.scaling.type (absent, "none" or "linear") and rope.scaling.factor (absent or 0:
 * none); sets *freq_scale to 1 / factor when there is one. */
plumb_status plumb__model_rope_scaling(plumb_model_t *m, float *freq_scale);
/* Looks up token_embd.weight [n_embd, n_vocab] (one row per token of the vocabulary, which
 * sets hp.n_vocab), output_norm.weight and the optional output.weight. */
plumb_status plumb__model_embeddings(plumb_model_t *m);
/* Looks up layer il's attention weights and norms (attn_norm, attn_q/k/v/output, ffn_norm):
 * plumb__model_common_layer without the dense FFN (a mixture-of-experts layer adds its
 * experts instead). */
plumb_status plumb__model_attn_tensors(plumb_model_t *m, int il, plumb_layer_weights *L);
/* Looks up layer il's attention and FFN weights and norms that every architecture has. */
plumb_status plumb__model_common_layer(plumb_model_t *m, int il, plumb_layer_weights *L);

/* Shared graph pieces */
plumb_tensor *plumb__build_norm(plumb_graph *g, plumb_tensor *x, plumb_tensor *w, float eps);
plumb_tensor *plumb__build_matmul(plumb_graph *g, plumb_tensor *w, plumb_tensor *x, plumb_tensor *bias);
/* The final norm of the rows of x that are wanted (all, or in->out_ids): [n_embd, n_out],
 * the hidden states embeddings are pooled from. */
plumb_tensor *plumb__build_hidden(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, plumb_tensor *x);
plumb_tensor *plumb__build_output(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in,
                                  plumb_tensor *x);

/* Block builders shared by the architectures (blocks.c). */

/* One layer's attention settings: RoPE's base, scale, attention factor and frequency factors
 * (NULL: none), the sliding window (0: none), the logit soft-cap (0: none), and where the
 * scale 1/sqrt(head_dim) or hp.attn_scale goes: into the softmax (false, llama's graph) or
 * onto q as its own op before attention (true, gemma's and phi3's graphs). */
typedef struct plumb_attn_layer {
    float rope_base, rope_freq_scale, rope_attn_factor;
    plumb_tensor *rope_factors;
    int32_t n_swa;
    float softcap;
    bool scale_q;
} plumb_attn_layer;

/* The layer's settings from hp for a model with no sliding layers: the global RoPE (with
 * m->rope_freqs), hp.attn_softcap, the scale in the softmax. */
plumb_attn_layer plumb__attn_layer_default(const plumb_model_t *m);
/* x = the token embeddings of in->tokens [n_embd, T], times hp.embd_scale unless it is 1. */
plumb_tensor *plumb__build_embd(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in);
/* The attention sublayer of layer il on its normed input h [n_embd, T]: q, k, v projections
 * (with the layer's biases where present; from the fused wqkv split by rows when the layer
 * has one), the per-head q and k RMS norms where the layer has them, RoPE, attention over the
 * KV cache, and the output projection (and bias). Returns [n_embd, T]. */
plumb_tensor *plumb__build_attention(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                                     plumb_tensor *h, const plumb_attn_layer *a);
/* The gated FFN of layer il on its normed input h: down(act(gate h) * (up h)) with act
 * PLUMB_OP_SILU_MUL or PLUMB_OP_GELU_MUL; a fused ffn_up [n_embd, 2 n_ff] without ffn_gate
 * holds the gate in its first n_ff rows and up in the rest. */
plumb_tensor *plumb__build_ffn(const plumb_model_t *m, plumb_graph *g, int il, plumb_tensor *h, plumb_op act);
/* One pre-norm layer il on the residual stream x [n_embd, T]: x + post_attn_norm(attention(
 * attn_norm(x))), then that + post_ffn_norm(ffn(ffn_norm(that))), the post-norms only where
 * the layer has them (gemma), the FFN the layer's experts where it has a router (moe.c), else
 * the gated FFN with act. Returns the new x. */
plumb_tensor *plumb__build_layer(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                                 plumb_tensor *x, const plumb_attn_layer *a, plumb_op act);
/* A leaf over rows [row0, row0 + n) of weight w (no copy): one part of a fused weight. */
plumb_tensor *plumb__build_rows(plumb_graph *g, const plumb_tensor *w, int64_t row0, int64_t n);

/* Mixture of experts (moe.c). */
#define PLUMB_MAX_EXPERTS 512
/* Reads <arch>.expert_count (absent: 0, a dense model, unless required) and
 * expert_used_count, checks them (used 1 to count; none without experts) and sets the
 * weights' normalization as llama.cpp's llama and qwen3moe graphs have it. The caller sets
 * n_ff_exp (the architecture decides it). */
plumb_status plumb__model_moe_hparams(plumb_model_t *m, bool required);
/* Looks up layer il's router and experts (n_expert of n_ff_exp rows each); a tensor whose
 * expert count or expert size disagrees with the hyperparameters is an error naming both. */
plumb_status plumb__model_moe_layer(plumb_model_t *m, int il, plumb_layer_weights *L);
/* The mixture-of-experts FFN of layer il on its normed input h [n_embd, T], llama.cpp's
 * build_moe_ffn with softmax gating: softmax over the router's logits, the n_expert_used
 * largest, their weights renormalized, SiLU-gated experts (only the routed ones are read),
 * their outputs weighted and added in the order chosen. Returns [n_embd, T]. */
plumb_tensor *plumb__build_moe_ffn(const plumb_model_t *m, plumb_graph *g, int il, plumb_tensor *h);

/* The llama family's loader (with the RoPE mode of the architecture) and builder, for the
 * architectures that are llama with other details. */
plumb_status plumb__llama_load(plumb_model_t *m, int rope_mode);
plumb_tensor *plumb__llama_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in);
/* qwen3's loader: llama's with NEOX RoPE over the whole head and the per-head q/k norms;
 * qwen3moe.c calls it after reading its expert hyperparameters. */
plumb_status plumb__qwen3_load(plumb_model_t *m);
/* plumb__llama_build with the attention settings a for every layer (phi3.c). */
plumb_tensor *plumb__llama_build_layers(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in,
                                        const plumb_attn_layer *a);
/* The gemma family's builder (gemma3.c): scaled embeddings, pre- and post-norms around
 * attention and a GELU FFN; layer il slides (hp.n_swa, the swa RoPE) when hp.n_swa > 0 and
 * il % hp.swa_period < hp.swa_period - 1; q scaled by hp.attn_scale before attention; the
 * Q/K norms where the layers have them; hp.attn_softcap on the attention logits. */
plumb_tensor *plumb__gemma_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in);
/* Looks up the embeddings and every layer's gemma weights (common, post-attention and
 * post-FFN norms, plus the Q/K norms when qk_norm), once the caller set the hyperparameters. */
plumb_status plumb__gemma_load_layers(plumb_model_t *m, bool qk_norm);

extern const plumb_arch plumb__arch_llama;
extern const plumb_arch plumb__arch_gemma3;
extern const plumb_arch plumb__arch_qwen2;
extern const plumb_arch plumb__arch_qwen3;
extern const plumb_arch plumb__arch_gemma2;
extern const plumb_arch plumb__arch_phi3;
extern const plumb_arch plumb__arch_qwen3moe;

#endif
