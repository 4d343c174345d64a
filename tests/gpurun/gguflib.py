"""gguflib: an independent GGUF writer/reader, quantizers and a numpy Llama forward pass.

Written from the GGUF spec and the Llama architecture (../shared/reference/gguf.md),
not from gpurun's C code, so that the tests compare two implementations.
The writer and reader need only the standard library; quantizers and the forward pass
need numpy."""
import struct

GGUF_MAGIC = 0x46554747
U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q8_0, T_Q4_K, T_Q6_K, T_BF16 = 0, 1, 8, 12, 14, 30
BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_Q8_0: (32, 34),
         T_Q4_K: (256, 144), T_Q6_K: (256, 210)}
_SCAL = {U8: '<B', I8: '<b', U16: '<H', I16: '<h', U32: '<I', I32: '<i', F32V: '<f',
         BOOL: '<?', U64: '<Q', I64: '<q', F64: '<d'}


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack('<Q', len(b)) + b


def _val(t, v):
    if t == STR:
        return _str(v)
    if t == ARR:
        et, items = v
        return struct.pack('<IQ', et, len(items)) + b''.join(_val(et, x) for x in items)
    return struct.pack(_SCAL[t], v)


def write_gguf(kvs, tensors, alignment=32, version=3):
    """kvs: list of (key, type, value); tensors: list of (name, ne list, type, raw bytes).
    Returns the file as bytes."""
    out = bytearray(struct.pack('<IIQQ', GGUF_MAGIC, version, len(tensors), len(kvs)))
    for k, t, v in kvs:
        out += _str(k) + struct.pack('<I', t) + _val(t, v)
    off = 0
    offs = []
    for name, ne, tt, raw in tensors:
        offs.append(off)
        out += _str(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne)
        out += struct.pack('<IQ', tt, off)
        off += len(raw)
        off = (off + alignment - 1) // alignment * alignment
    out += b'\0' * (-len(out) % alignment)
    base = len(out)
    for (name, ne, tt, raw), o in zip(tensors, offs):
        out += b'\0' * (base + o - len(out))
        out += raw
    return bytes(out)


class Reader:
    """Minimal GGUF reader (trusting: only used on files this module or llama.cpp wrote)."""

    def __init__(self, data):
        self.d = data
        self.p = 0
        magic, ver, nt, nkv = self._u('<IIQQ')
        assert magic == GGUF_MAGIC and ver in (2, 3)
        self.kv = {}
        for _ in range(nkv):
            k = self._s().decode()
            t, = self._u('<I')
            self.kv[k] = self._v(t)
        self.tensors = {}
        infos = []
        for _ in range(nt):
            name = self._s().decode()
            nd, = self._u('<I')
            ne = list(self._u('<%dQ' % nd))
            tt, off = self._u('<IQ')
            infos.append((name, ne, tt, off))
        align = self.kv.get('general.alignment', 32)
        base = (self.p + align - 1) // align * align
        for name, ne, tt, off in infos:
            n = 1
            for x in ne:
                n *= x
            blk, bs = BLOCK[tt]
            self.tensors[name] = (ne, tt, data[base + off: base + off + n // blk * bs])

    def _u(self, f):
        v = struct.unpack_from(f, self.d, self.p)
        self.p += struct.calcsize(f)
        return v

    def _s(self):
        n, = self._u('<Q')
        s = self.d[self.p:self.p + n]
        self.p += n
        return s

    def _v(self, t):
        if t == STR:
            return self._s().decode('utf-8', 'replace')
        if t == ARR:
            et, n = self._u('<IQ')
            return [self._v(et) for _ in range(n)]
        return self._u(_SCAL[t])[0]


# ---------------------------------------------------------------- numpy part
def _np():
    import numpy
    return numpy


def quantize(x, tt):
    """x: float32 array [rows, cols] -> raw bytes in type tt."""
    np = _np()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if tt == T_F32:
        return x.tobytes()
    if tt == T_F16:
        return x.astype(np.float16).tobytes()
    if tt == T_BF16:
        u = x.view(np.uint32).astype(np.uint64)
        r = ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        return r.tobytes()
    if tt == T_Q8_0:
        b = x.reshape(-1, 32)
        amax = np.abs(b).max(axis=1)
        d = amax / 127
        idv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0).astype(np.float32)
        q = np.sign(b * idv[:, None]) * np.floor(np.abs(b * idv[:, None]) + 0.5)
        out = np.zeros(b.shape[0], dtype=[('d', '<f2'), ('qs', 'i1', 32)])
        out['d'] = d.astype(np.float16)
        out['qs'] = q.astype(np.int8)
        return out.tobytes()
    if tt == T_Q4_K:
        b = x.reshape(-1, 8, 32)
        mn = np.minimum(b.min(axis=2), 0)            # sub-block minimum (<= 0)
        sc = (b.max(axis=2) - mn) / 15               # sub-block scale
        d = np.maximum(sc.max(axis=1), 1e-12) / 63
        dmin = np.maximum((-mn).max(axis=1), 1e-12) / 63
        d16 = d.astype(np.float16).astype(np.float32)
        dm16 = dmin.astype(np.float16).astype(np.float32)
        isc = np.clip(np.rint(sc / d16[:, None]), 0, 63).astype(np.int64)
        imn = np.clip(np.rint(-mn / dm16[:, None]), 0, 63).astype(np.int64)
        eff_s = d16[:, None] * isc
        eff_m = dm16[:, None] * imn
        q = np.clip(np.rint((b + eff_m[:, :, None]) / np.where(eff_s > 0, eff_s, 1)[:, :, None]),
                    0, 15).astype(np.uint8)
        scales = np.zeros((b.shape[0], 12), dtype=np.uint8)
        for j in range(4):
            scales[:, j] = (isc[:, j] & 63) | ((isc[:, j + 4] >> 4) << 6)
            scales[:, j + 4] = (imn[:, j] & 63) | ((imn[:, j + 4] >> 4) << 6)
            scales[:, j + 8] = (isc[:, j + 4] & 15) | ((imn[:, j + 4] & 15) << 4)
        qs = np.zeros((b.shape[0], 128), dtype=np.uint8)
        for c in range(4):
            qs[:, 32 * c:32 * c + 32] = q[:, 2 * c] | (q[:, 2 * c + 1] << 4)
        out = np.zeros(b.shape[0], dtype=[('d', '<f2'), ('dmin', '<f2'), ('sc', 'u1', 12), ('qs', 'u1', 128)])
        out['d'] = d16.astype(np.float16)
        out['dmin'] = dm16.astype(np.float16)
        out['sc'] = scales
        out['qs'] = qs
        return out.tobytes()
    if tt == T_Q6_K:
        b = x.reshape(-1, 16, 16)
        amax = np.abs(b).max(axis=2)
        sc = amax / 31
        d = np.maximum(np.abs(sc).max(axis=1), 1e-12) / 127
        d16 = d.astype(np.float16).astype(np.float32)
        isc = np.clip(np.rint(sc / d16[:, None]), -128, 127).astype(np.int64)
        eff = d16[:, None] * isc
        q = np.clip(np.rint(b / np.where(eff > 0, eff, 1)[:, :, None]), -32, 31).astype(np.int64) + 32
        q = q.reshape(-1, 256)
        ql = np.zeros((b.shape[0], 128), dtype=np.uint8)
        qh = np.zeros((b.shape[0], 64), dtype=np.uint8)
        for h in range(2):
            y = q[:, 128 * h:128 * h + 128]
            l = slice(64 * h, 64 * h + 32)
            l2 = slice(64 * h + 32, 64 * h + 64)
            ql[:, l] = (y[:, 0:32] & 15) | ((y[:, 64:96] & 15) << 4)
            ql[:, l2] = (y[:, 32:64] & 15) | ((y[:, 96:128] & 15) << 4)
            qh[:, 32 * h:32 * h + 32] = ((y[:, 0:32] >> 4) | ((y[:, 32:64] >> 4) << 2) |
                                         ((y[:, 64:96] >> 4) << 4) | ((y[:, 96:128] >> 4) << 6))
        out = np.zeros(b.shape[0], dtype=[('ql', 'u1', 128), ('qh', 'u1', 64), ('sc', 'i1', 16), ('d', '<f2')])
        out['ql'] = ql
        out['qh'] = qh
        out['sc'] = isc.astype(np.int8)
        out['d'] = d16.astype(np.float16)
        return out.tobytes()
    raise ValueError(tt)


def dequantize(raw, tt, n):
    """raw bytes of type tt -> float32 array of n values (from the block layouts in the spec)."""
    np = _np()
    if tt == T_F32:
        return np.frombuffer(raw, dtype='<f4', count=n).astype(np.float32)
    if tt == T_F16:
        return np.frombuffer(raw, dtype='<f2', count=n).astype(np.float32)
    if tt == T_BF16:
        return (np.frombuffer(raw, dtype='<u2', count=n).astype(np.uint32) << 16).view(np.float32)
    if tt == T_Q8_0:
        b = np.frombuffer(raw, dtype=[('d', '<f2'), ('qs', 'i1', 32)], count=n // 32)
        return (b['d'].astype(np.float32)[:, None] * b['qs'].astype(np.float32)).reshape(-1)
    if tt == T_Q4_K:
        b = np.frombuffer(raw, dtype=[('d', '<f2'), ('dmin', '<f2'), ('sc', 'u1', 12), ('qs', 'u1', 128)],
                          count=n // 256)
        d = b['d'].astype(np.float32)[:, None]
        dmin = b['dmin'].astype(np.float32)[:, None]
        s = b['sc'].astype(np.int32)
        sc = np.zeros((len(b), 8), np.int32)
        mn = np.zeros((len(b), 8), np.int32)
        for j in range(8):
            if j < 4:
                sc[:, j] = s[:, j] & 63
                mn[:, j] = s[:, j + 4] & 63
            else:
                sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
                mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
        qs = b['qs'].astype(np.int32)
        out = np.zeros((len(b), 256), np.float32)
        for c in range(4):
            q = qs[:, 32 * c:32 * c + 32]
            out[:, 64 * c:64 * c + 32] = d * sc[:, 2 * c:2 * c + 1] * (q & 0xF) - dmin * mn[:, 2 * c:2 * c + 1]
            out[:, 64 * c + 32:64 * c + 64] = d * sc[:, 2 * c + 1:2 * c + 2] * (q >> 4) - dmin * mn[:, 2 * c + 1:2 * c + 2]
        return out.reshape(-1)
    if tt == T_Q6_K:
        b = np.frombuffer(raw, dtype=[('ql', 'u1', 128), ('qh', 'u1', 64), ('sc', 'i1', 16), ('d', '<f2')],
                          count=n // 256)
        d = b['d'].astype(np.float32)[:, None]
        out = np.zeros((len(b), 256), np.float32)
        for h in range(2):
            ql = b['ql'][:, 64 * h:64 * h + 64].astype(np.int32)
            qh = b['qh'][:, 32 * h:32 * h + 32].astype(np.int32)
            sc = b['sc'][:, 8 * h:8 * h + 8].astype(np.float32)
            for l in range(32):
                i = l // 16
                base = 128 * h
                out[:, base + l] = d[:, 0] * sc[:, i] * (((ql[:, l] & 15) | (((qh[:, l] >> 0) & 3) << 4)) - 32)
                out[:, base + l + 32] = d[:, 0] * sc[:, i + 2] * (((ql[:, l + 32] & 15) | (((qh[:, l] >> 2) & 3) << 4)) - 32)
                out[:, base + l + 64] = d[:, 0] * sc[:, i + 4] * (((ql[:, l] >> 4) | (((qh[:, l] >> 4) & 3) << 4)) - 32)
                out[:, base + l + 96] = d[:, 0] * sc[:, i + 6] * (((ql[:, l + 32] >> 4) | (((qh[:, l] >> 6) & 3) << 4)) - 32)
        return out.reshape(-1)
    raise ValueError(tt)


def load_weights(r):
    """Reader -> dict name -> float32 ndarray shaped [ne1, ne0] (rows of ne0)."""
    np = _np()
    w = {}
    for name, (ne, tt, raw) in r.tensors.items():
        n = 1
        for x in ne:
            n *= x
        a = dequantize(raw, tt, n)
        w[name] = a.reshape(list(reversed(ne))) if len(ne) > 1 else a
    return w


def forward(r, tokens):
    """Llama forward pass over tokens (causal); returns logits [len(tokens), n_vocab] (float64)."""
    np = _np()
    kv = r.kv
    w = load_weights(r)
    w = {k: v.astype(np.float64) for k, v in w.items()}
    d = kv['llama.embedding_length']
    nl = kv['llama.block_count']
    nh = kv['llama.attention.head_count']
    nkv = kv.get('llama.attention.head_count_kv', nh)
    hd = kv.get('llama.attention.key_length', d // nh)
    nrot = kv.get('llama.rope.dimension_count', hd)
    eps = kv['llama.attention.layer_norm_rms_epsilon']
    base = kv.get('llama.rope.freq_base', 10000.0)
    scale = 1.0
    if kv.get('llama.rope.scaling.type', 'none') == 'linear':
        scale = 1.0 / kv['llama.rope.scaling.factor']
    T = len(tokens)
    x = w['token_embd.weight'][tokens]                        # [T, d]

    def rms(v, g):
        return v / np.sqrt((v * v).mean(axis=-1, keepdims=True) + eps) * g

    i = np.arange(nrot // 2)
    inv = base ** (-2.0 * i / nrot) * scale
    if 'rope_freqs.weight' in w:
        inv = inv / w['rope_freqs.weight'][:nrot // 2]
    ang = np.arange(T)[:, None] * inv[None, :]              # [T, nrot/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(v):                                             # v [T, heads, hd]
        v = v.copy()
        a = v[:, :, 0:nrot:2].copy()
        b = v[:, :, 1:nrot:2].copy()
        v[:, :, 0:nrot:2] = a * cos[:, None, :] - b * sin[:, None, :]
        v[:, :, 1:nrot:2] = a * sin[:, None, :] + b * cos[:, None, :]
        return v

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(nl):
        p = 'blk.%d.' % l
        h = rms(x, w[p + 'attn_norm.weight'])
        q = rope((h @ w[p + 'attn_q.weight'].T).reshape(T, nh, hd))
        k = rope((h @ w[p + 'attn_k.weight'].T).reshape(T, nkv, hd))
        v = (h @ w[p + 'attn_v.weight'].T).reshape(T, nkv, hd)
        o = np.zeros((T, nh, hd))
        for j in range(nh):
            kj = j // (nh // nkv)
            s = q[:, j, :] @ k[:, kj, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            o[:, j, :] = s @ v[:, kj, :]
        x = x + o.reshape(T, nh * hd) @ w[p + 'attn_output.weight'].T
        h = rms(x, w[p + 'ffn_norm.weight'])
        g = h @ w[p + 'ffn_gate.weight'].T
        u = h @ w[p + 'ffn_up.weight'].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + 'ffn_down.weight'].T
    out = w.get('output.weight', w['token_embd.weight'])
    return rms(x, w['output_norm.weight']) @ out.T


def random_llama(seed, wtype, n_embd=256, n_layer=2, n_head=8, n_head_kv=4, n_ff=512,
                 n_vocab=300, tied=False, rope_freqs=False, extra_kv=(), vocab=None,
                 emb_type=None):
    """A tiny random Llama GGUF (bytes). 2-D weights in wtype, norms F32."""
    np = _np()
    rng = np.random.default_rng(seed)
    hd = n_embd // n_head
    kvs = [('general.architecture', STR, 'llama'),
           ('general.alignment', U32, 32),
           ('general.quantization_version', U32, 2),
           ('llama.context_length', U32, 256),
           ('llama.embedding_length', U32, n_embd),
           ('llama.block_count', U32, n_layer),
           ('llama.feed_forward_length', U32, n_ff),
           ('llama.attention.head_count', U32, n_head),
           ('llama.attention.head_count_kv', U32, n_head_kv),
           ('llama.rope.freq_base', F32V, 10000.0 if not rope_freqs else 500000.0),
           ('llama.attention.layer_norm_rms_epsilon', F32V, 1e-5)]
    kvs += list(extra_kv)
    if vocab is None:
        toks = ['<unk>', '<s>', '</s>'] + ['<0x%02X>' % b for b in range(256)]
        toks += ['\u2581t%d' % i for i in range(n_vocab - len(toks))]
        types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)
        scores = [0.0] * 259 + [-float(i) for i in range(n_vocab - 259)]
        kvs += [('tokenizer.ggml.model', STR, 'llama'),
                ('tokenizer.ggml.tokens', ARR, (STR, toks)),
                ('tokenizer.ggml.scores', ARR, (F32V, scores)),
                ('tokenizer.ggml.token_type', ARR, (I32, types)),
                ('tokenizer.ggml.bos_token_id', U32, 1),
                ('tokenizer.ggml.eos_token_id', U32, 2)]
    else:
        kvs += vocab
    tensors = []

    def add(name, rows, cols, tt, s=0.1):
        a = (rng.standard_normal((rows, cols)) * s).astype(np.float32)
        tensors.append((name, [cols, rows] if rows > 1 else [cols], tt, quantize(a, tt)))

    add('token_embd.weight', n_vocab, n_embd, emb_type if emb_type is not None else wtype, 1.0)
    tensors.append(('output_norm.weight', [n_embd], T_F32,
                    (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32).tobytes()))
    if not tied:
        add('output.weight', n_vocab, n_embd, wtype)
    if rope_freqs:
        f = np.ones(hd // 2, np.float32)
        f[hd // 4:] = np.linspace(1, 8, hd // 2 - hd // 4)
        tensors.append(('rope_freqs.weight', [hd // 2], T_F32, f.tobytes()))
    for l in range(n_layer):
        p = 'blk.%d.' % l
        for nm, n in (('attn_norm', n_embd), ('ffn_norm', n_embd)):
            tensors.append((p + nm + '.weight', [n], T_F32,
                            (1 + 0.1 * rng.standard_normal(n)).astype(np.float32).tobytes()))
        add(p + 'attn_q.weight', n_head * hd, n_embd, wtype)
        add(p + 'attn_k.weight', n_head_kv * hd, n_embd, wtype)
        add(p + 'attn_v.weight', n_head_kv * hd, n_embd, wtype)
        add(p + 'attn_output.weight', n_embd, n_head * hd, wtype)
        add(p + 'ffn_gate.weight', n_ff, n_embd, wtype)
        add(p + 'ffn_up.weight', n_ff, n_embd, wtype)
        add(p + 'ffn_down.weight', n_embd, n_ff, wtype)
    return write_gguf(kvs, tensors)
