"""perturb.py — a second model for KL-divergence tests: a copy of a GGUF whose one tensor has
some of its quantized bytes changed, deterministically, so it computes a slightly different
distribution with the same vocabulary and layout.

    python perturb.py IN.gguf OUT.gguf"""
import shutil
import sys

import gguf

TENSOR = "blk.0.ffn_down.weight"


def perturb(src, dst, tensor=TENSOR, stride=97):
    shutil.copyfile(src, dst)
    r = gguf.GGUFReader(str(src))
    t = next(t for t in r.tensors if t.name == tensor)
    with open(dst, "r+b") as f:
        for i in range(0, int(t.n_bytes), stride):
            f.seek(int(t.data_offset) + i)
            b = f.read(1)[0]
            f.seek(int(t.data_offset) + i)
            f.write(bytes([b ^ 0x11]))


if __name__ == "__main__":
    perturb(sys.argv[1], sys.argv[2])
