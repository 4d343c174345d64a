#!/usr/bin/python3
"""Writes a random-weight Llama GGUF with a real model's shape, streaming (no whole model in
memory). Speed does not depend on the values, so blocks are random bytes with small scales.
usage: gen-bench-model.py SHAPE TYPE OUT   (SHAPE: 1b | 8b; TYPE: f16 | q8_0 | q4_k)"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguflib as G  # noqa: E402

SHAPES = {  # n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, tied
    '1b': (2048, 16, 32, 8, 8192, 128256, True),
    '8b': (4096, 32, 32, 8, 14336, 128256, False),
}
shape, tname, out = sys.argv[1:4]
d, nl, nh, nkv, ff, nv, tied = SHAPES[shape]
tt = {'f16': G.T_F16, 'q8_0': G.T_Q8_0, 'q4_k': G.T_Q4_K}[tname]
hd = d // nh
rng = np.random.default_rng(0)


def raw_rows(rows, cols, t):
    """a generator of byte chunks for a [rows, cols] matrix of type t"""
    blk, bs = G.BLOCK[t]
    per_row = cols // blk * bs
    step = max(1, (64 << 20) // per_row)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        if t == G.T_F16:
            yield (rng.standard_normal(n * cols, dtype=np.float32) * 0.02).astype(np.float16).tobytes()
            continue
        b = rng.integers(0, 256, size=(n * cols // blk, bs), dtype=np.uint8)
        h = np.float16(0.001).view(np.uint16)
        if t == G.T_Q8_0:
            b[:, 0], b[:, 1] = h & 0xff, h >> 8
        elif t == G.T_Q4_K:
            b[:, 0], b[:, 1], b[:, 2], b[:, 3] = h & 0xff, h >> 8, h & 0xff, h >> 8
        yield b.tobytes()


def norm(n):
    yield np.ones(n, np.float32).tobytes()


ts = [('token_embd.weight', [d, nv], tt, lambda: raw_rows(nv, d, tt)),
      ('output_norm.weight', [d], G.T_F32, lambda: norm(d))]
if not tied:
    ts.append(('output.weight', [d, nv], tt, lambda: raw_rows(nv, d, tt)))
ts.append(('rope_freqs.weight', [hd // 2], G.T_F32, lambda: norm(hd // 2)))
for l in range(nl):
    p = 'blk.%d.' % l
    for nm, i, o in (('attn_q', d, nh * hd), ('attn_k', d, nkv * hd), ('attn_v', d, nkv * hd),
                     ('attn_output', nh * hd, d), ('ffn_gate', d, ff), ('ffn_up', d, ff),
                     ('ffn_down', ff, d)):
        ts.append((p + nm + '.weight', [i, o], tt, (lambda o=o, i=i: raw_rows(o, i, tt))))
    ts.append((p + 'attn_norm.weight', [d], G.T_F32, lambda: norm(d)))
    ts.append((p + 'ffn_norm.weight', [d], G.T_F32, lambda: norm(d)))

toks = ['<0x%02X>' % b for b in range(256)] + ['t%d' % i for i in range(nv - 256)]
kvs = [('general.architecture', G.STR, 'llama'), ('general.quantization_version', G.U32, 2),
       ('llama.context_length', G.U32, 8192), ('llama.embedding_length', G.U32, d),
       ('llama.block_count', G.U32, nl), ('llama.feed_forward_length', G.U32, ff),
       ('llama.attention.head_count', G.U32, nh), ('llama.attention.head_count_kv', G.U32, nkv),
       ('llama.rope.freq_base', G.F32V, 500000.0),
       ('llama.attention.layer_norm_rms_epsilon', G.F32V, 1e-5),
       ('tokenizer.ggml.model', G.STR, 'llama'), ('tokenizer.ggml.tokens', G.ARR, (G.STR, toks)),
       ('tokenizer.ggml.token_type', G.ARR, (G.I32, [6] * 256 + [1] * (nv - 256)))]
# the header (sizes computed up front), then the data streamed
sizes = []
for name, ne, t, _ in ts:
    blk, bs = G.BLOCK[t]
    n = 1
    for x in ne:
        n *= x
    sizes.append(n // blk * bs)
with open(out + '.tmp', 'wb') as f:
    hdr = bytearray(struct.pack('<IIQQ', G.GGUF_MAGIC, 3, len(ts), len(kvs)))
    for k, t, v in kvs:
        hdr += G._str(k) + struct.pack('<I', t) + G._val(t, v)
    off = 0
    for (name, ne, t, _), s in zip(ts, sizes):
        hdr += G._str(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', x) for x in ne)
        hdr += struct.pack('<IQ', t, off)
        off += (s + 31) // 32 * 32
    hdr += b'\0' * (-len(hdr) % 32)
    f.write(hdr)
    for (name, ne, t, gen), s in zip(ts, sizes):
        n = 0
        for chunk in gen():
            f.write(chunk)
            n += len(chunk)
        assert n == s
        f.write(b'\0' * (-s % 32))
os.rename(out + '.tmp', out)
