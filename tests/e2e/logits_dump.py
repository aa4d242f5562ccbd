"""Prints the logits of a run as .npy bytes on stdout, for tests that compare runs made under
different settings of the process (a kernel set chosen by PLUMB_KERNELS, a device):

    python logits_dump.py MODEL DEVICE|cpu N_OFFLOAD PROMPT_IDS STEP_IDS > out.npy

PROMPT_IDS decoded as one batch (logits of every position), then each of STEP_IDS alone (the
KV cache carried over); ids comma-separated. Rows: len(prompt) + len(steps)."""
import io
import sys

import numpy as np

import plumbffi


def n_vocab_of(path) -> int:
    import gguf
    return len(gguf.GGUFReader(str(path)).fields["tokenizer.ggml.tokens"].data)


def logits(path, device, n_offload, prompt, steps) -> np.ndarray:
    n_vocab = n_vocab_of(path)
    m = plumbffi.Model(path, n_ctx=128, device=device, n_offload=n_offload)
    try:
        rows = [m.decode(prompt, n_vocab)] + [m.decode([t], n_vocab) for t in steps]
    finally:
        m.close()
    return np.concatenate(rows)


if __name__ == "__main__":
    path, device, n_off, prompt, steps = sys.argv[1:6]
    ids = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    out = logits(path, None if device == "cpu" else device, int(n_off), ids(prompt), ids(steps))
    buf = io.BytesIO()
    np.save(buf, out)
    sys.stdout.buffer.write(buf.getvalue())
