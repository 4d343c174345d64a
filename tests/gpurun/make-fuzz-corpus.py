#!/usr/bin/python3
"""Writes the seed corpus of fuzz-gguf (tests/fuzz/corpus-gguf): small GGUF files with
every metadata value type, every supported tensor type, and a few broken variants."""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguflib import *  # noqa: E402,F403

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '../fuzz/corpus-gguf')
os.makedirs(out, exist_ok=True)
kvs = [('general.architecture', STR, 'llama'), ('a.u8', U8, 7), ('a.i8', I8, -7),
       ('a.u16', U16, 700), ('a.i16', I16, -700), ('a.u32', U32, 70000), ('a.i32', I32, -70000),
       ('a.f32', F32V, 1.5), ('a.bool', BOOL, True), ('a.u64', U64, 1 << 40),
       ('a.i64', I64, -(1 << 40)), ('a.f64', F64, 2.5),
       ('a.strs', ARR, (STR, ['x', 'yz', ''])), ('a.ints', ARR, (I32, [1, 2, 3])),
       ('a.nested', ARR, (ARR, [(U8, [1, 2]), (U8, [3])]))]
ts = [('t.f32', [4, 2], T_F32, bytes(32)), ('t.f16', [8], T_F16, bytes(16)),
      ('t.bf16', [8], T_BF16, bytes(16)), ('t.q8_0', [32], T_Q8_0, bytes(34)),
      ('t.q4_k', [256], T_Q4_K, bytes(144)), ('t.q6_k', [256], T_Q6_K, bytes(210))]
full = write_gguf(kvs, ts)
files = {
    'header-only': write_gguf([], []),
    'kv-all-types': write_gguf(kvs, []),
    'tensors-all-types': full,
    'v2': write_gguf(kvs[:3], ts[:2], version=2),
    'align64': write_gguf([('general.alignment', U32, 64)], ts[:3], alignment=64),
    'truncated': full[:len(full) - 100],
    'bad-offset': full.replace(struct.pack('<IQ', T_Q8_0, 128), struct.pack('<IQ', T_Q8_0, 1 << 40)),
    'huge-count': full[:8] + struct.pack('<Q', 1 << 60) + full[16:],
}
for name, data in files.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
