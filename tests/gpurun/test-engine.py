#!/usr/bin/python3
"""gpurun engine tests through phi-llm, against the independent numpy reference in gguflib.

usage: test-engine.py PHI_LLM MODELS_DIR CASE   (CASE: logits | generate | tokenizer | hostile | gpu)
Exits 77 (skip) without numpy or without the stories260K models."""
import atexit
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguflib as G  # noqa: E402

try:
    import numpy as np
except ImportError:
    print('numpy missing: skip')
    sys.exit(77)

LLM, MODELS, CASE = sys.argv[1], sys.argv[2], sys.argv[3]
STORIES = {q: os.path.join(MODELS, 'stories260K-%s.gguf' % q) for q in ('f32', 'f16', 'q8_0')}
TMP = tempfile.mkdtemp(prefix='phi-engine-test.')
atexit.register(shutil.rmtree, TMP, True)


def run(*args, check=True):
    p = subprocess.run([LLM] + list(args), capture_output=True, timeout=600)
    if check and p.returncode != 0:
        raise SystemExit('phi-llm %s failed: %s' % (' '.join(args), p.stderr.decode()))
    return p


def c_logits(path, toks, threads=1, gpu=False):
    out = os.path.join(TMP, 'logits.bin')
    run('-m', path, '-t', str(threads), '--tokens', ','.join(map(str, toks)), '--logits', out,
        *(() if gpu else ('--no-gpu',)))
    a = np.fromfile(out, dtype=np.float32)
    return a.reshape(len(toks) + 1, -1)


def rel_err(a, b):
    """relative L2 error, per position, worst position"""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


def write(name, data):
    p = os.path.join(TMP, name)
    with open(p, 'wb') as f:
        f.write(data)
    return p


def test_logits():
    toks = [1, 17, 300 % 299, 5, 250, 42, 7, 99, 3, 120, 200, 11]
    # (type, tolerance on max|diff| / max|ref| over all positions)
    cases = [(G.T_F32, 1e-4), (G.T_F16, 1e-3), (G.T_BF16, 1e-3), (G.T_Q8_0, 0.1),
             (G.T_Q4_K, 0.1), (G.T_Q6_K, 0.1)]
    for tt, tol in cases:
        for tied, rf in ((False, False), (True, True)):
            path = write('m%d.gguf' % tt, G.random_llama(tt * 7 + tied, tt, tied=tied, rope_freqs=rf))
            ref = G.forward(G.Reader(open(path, 'rb').read()), toks)
            got = c_logits(path, toks)
            e1 = rel_err(got[:-1], ref)
            e2 = rel_err(got[-1], ref[-1])
            print('type %-4d tied=%d rope_freqs=%d: step err %.2e, batch err %.2e (tol %.0e)' %
                  (tt, tied, rf, e1, e2, tol))
            assert e1 < tol and e2 < tol, (tt, e1, e2)
            # the batched prefill and the step-by-step decode agree closely
            assert rel_err(got[-1], got[-2]) < 1e-3 * max(1, tol * 100)
    # a Q4_K_M-like mix: Q4_K matrices, Q6_K embeddings (tied), attention heads 1:1
    path = write('mix.gguf', G.random_llama(5, G.T_Q4_K, tied=True, emb_type=G.T_Q6_K, n_head_kv=8))
    ref = G.forward(G.Reader(open(path, 'rb').read()), toks)
    e = rel_err(c_logits(path, toks)[:-1], ref)
    print('Q4_K + Q6_K mix: err %.2e' % e)
    assert e < 0.06
    # threads do not change the logits at all
    assert np.array_equal(c_logits(path, toks, 1), c_logits(path, toks, 3))
    if not os.path.exists(STORIES['f32']):
        return
    toks = [1, 403, 407, 261, 378, 11, 365, 395, 260, 446, 482, 271, 269]
    for q, tol in (('f32', 1e-4), ('f16', 1e-3), ('q8_0', 0.03)):
        ref = G.forward(G.Reader(open(STORIES[q], 'rb').read()), toks)
        got = c_logits(STORIES[q], toks)
        e = rel_err(got[:-1], ref)
        print('stories260K %s: err %.2e (tol %.0e)' % (q, e, tol))
        assert e < tol
        assert (got[:-1].argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9


def gen(path, threads=1, n=200, extra=()):
    p = run('-m', path, '-p', 'Once upon a time', '-n', str(n), '-t', str(threads), *extra)
    return p.stdout.decode()


def test_generate():
    if not os.path.exists(STORIES['f32']):
        sys.exit(77)
    out = gen(STORIES['f32'])
    print(repr(out[:300]))
    assert out == gen(STORIES['f32']) == gen(STORIES['f32'], threads=2) == gen(STORIES['f32'], threads=3)
    words = [w.strip('.,!?"\'').lower() for w in out.split()]
    words = [w for w in words if w]
    assert len(words) >= 40, words
    common = set('''a the was there little girl boy named lily she he her his they to and of in
        with it play played loved wanted saw big said one day time upon once very happy sad
        friend friends mom tom ben park ball tree went go see you i had but so is be on at not
        what do did let's up outside too high know fun together\'s'''.split())
    known = sum(w in common for w in words) / len(words)
    print('common-word share %.2f' % known)
    assert known > 0.5
    # f16 greedy is the same story; q8_0 starts the same way
    assert gen(STORIES['f16'])[:60] == out[:60]
    assert gen(STORIES['q8_0'])[:30] == out[:30]
    # seeded sampling is reproducible, and differs between seeds
    s1 = gen(STORIES['f32'], extra=('--temp', '0.8', '--seed', '7'))
    assert s1 == gen(STORIES['f32'], threads=2, extra=('--temp', '0.8', '--seed', '7'))
    assert s1 != gen(STORIES['f32'], extra=('--temp', '0.8', '--seed', '8'))
    # the token limit holds
    p = run('-m', STORIES['f32'], '-p', 'Once upon a time', '-n', '5')
    assert b'generated 5 tokens' in p.stderr


# ------------------------------------------------------------------ tokenizers
def spm_ref(r, text):
    """SentencePiece-style encode written from the description in the GGUF notes."""
    toks = r.kv['tokenizer.ggml.tokens']
    scores = r.kv['tokenizer.ggml.scores']
    ids = {t: i for i, t in enumerate(toks)}
    s = '\u2581' + text.replace(' ', '\u2581')
    sym = list(s)
    while True:
        best = None
        for i in range(len(sym) - 1):
            m = sym[i] + sym[i + 1]
            if m in ids and (best is None or scores[ids[m]] > scores[ids[best[1]]]):
                best = (i, m)
        if best is None:
            break
        sym[best[0]:best[0] + 2] = [best[1]]
    out = [1]
    for x in sym:
        if x in ids:
            out.append(ids[x])
        else:
            out += [ids['<0x%02X>' % b] for b in x.encode()]
    return out


def tokenize(path, text):
    return [int(x) for x in run('-m', path, '--tokenize', '-p', text).stdout.split()]


def detok(path, ids):
    return run('-m', path, '--detok', ','.join(map(str, ids))).stdout


def b2u():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xa1, 0xad)) + list(range(0xae, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def bpe_model():
    m = b2u()
    toks = [m[b] for b in range(256)]
    merges = ['H e', 'l l', 'll o', 'He llo', '\u0120 w', 'o r', 'l d', 'or ld', '\u0120w orld']
    toks += ['He', 'll', 'llo', 'Hello', '\u0120w', 'or', 'ld', 'orld', '\u0120world']
    # whole pre-tokens, to see where the pre-tokenizer cuts (ignore_merges)
    pieces = ["'m", '123', '45', '\u0120ok', '!!\u010a\u010a', '\u0120x', "'RE", '\u0120\u0120']
    toks += pieces
    specials = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>',
                '<|eot_id|>']
    types = [1] * len(toks) + [3] * len(specials)
    toks += specials
    vocab = [('tokenizer.ggml.model', G.STR, 'gpt2'), ('tokenizer.ggml.pre', G.STR, 'llama-bpe'),
             ('tokenizer.ggml.tokens', G.ARR, (G.STR, toks)),
             ('tokenizer.ggml.token_type', G.ARR, (G.I32, types)),
             ('tokenizer.ggml.merges', G.ARR, (G.STR, merges)),
             ('tokenizer.ggml.bos_token_id', G.U32, toks.index('<|begin_of_text|>')),
             ('tokenizer.ggml.eos_token_id', G.U32, toks.index('<|eot_id|>'))]
    data = G.random_llama(3, G.T_F32, n_embd=32, n_head=4, n_head_kv=2, n_ff=64,
                          n_vocab=len(toks), vocab=vocab)
    return write('bpe.gguf', data), toks


def test_tokenizer():
    path, toks = bpe_model()
    ix = {}
    for i, t in enumerate(toks):
        ix.setdefault(t, i)
    bos = ix['<|begin_of_text|>']
    m = b2u()
    assert tokenize(path, 'Hello world') == [bos, ix['Hello'], ix['\u0120world']]
    got = tokenize(path, "I'm 12345 ok!!\n\n  x")
    want = [bos, ix['I'], ix["'m"], ix[m[32]], ix['123'], ix['45'], ix['\u0120ok'],
            ix['!!\u010a\u010a'], ix[m[32]], ix['\u0120x']]
    assert got == want, (got, want)
    assert tokenize(path, "I'RE") == [bos, ix['I'], ix["'RE"]]
    # trailing whitespace stays whole; a line break ends a whitespace run
    assert tokenize(path, 'I  ') == [bos, ix['I'], ix['\u0120\u0120']]
    assert tokenize(path, ' \nI') == [bos, ix[m[32]], ix['\u010a'], ix['I']]
    # specials in text, and the Llama 3 chat layout
    got = tokenize(path, '<|start_header_id|>I<|end_header_id|>\n\nHello<|eot_id|>')
    assert got == [bos, ix['<|start_header_id|>'], ix['I'], ix['<|end_header_id|>'],
                   ix['\u010a'], ix['\u010a'], ix['Hello'], ix['<|eot_id|>']], got
    p = run('-m', path, '--chat', '--system', 'S', '-p', 'Hi', '-n', '0')
    assert p.returncode == 0
    # round trips through byte-level BPE, any UTF-8
    for s in ['Hello world', 'héllo wörld 日本語 🙂\ttab\r\n', "I'm 12345 ok!!\n\n  x", '  lead']:
        ids = tokenize(path, s)
        assert ids[0] == bos
        assert detok(path, ids).decode() == s, s

    if not os.path.exists(STORIES['f32']):
        return
    st = STORIES['f32']
    r = G.Reader(open(st, 'rb').read())
    assert tokenize(st, 'Once upon a time') == [1, 403, 407, 261, 378]
    for s in ['Once upon a time', 'Lily and Tom went to the park.', 'a  b   c', 'Ünïcödé 日本 🙂',
              'The cat sat on the mat. "Hi!" said Ben.']:
        ids = tokenize(st, s)
        assert ids == spm_ref(r, s), (s, ids, spm_ref(r, s))
        assert detok(st, ids).decode() == s, (s, detok(st, ids))
    # a long document (the merge queue must not be quadratic): same as piecewise
    doc = 'Once upon a time, Lily saw a big dog. ' * 4000
    f = write('doc.txt', doc.encode())
    ids = [int(x) for x in run('-m', st, '--tokenize', '-f', f).stdout.split()]
    one = tokenize(st, 'Once upon a time, Lily saw a big dog.')
    assert len(ids) > 4000 * (len(one) - 1) - 10
    assert ids[:len(one)] == one


# ------------------------------------------------------------------ hostile files
def test_hostile():
    base = G.random_llama(1, G.T_Q8_0, n_embd=64, n_head=4, n_head_kv=2, n_ff=128)
    p = write('ok.gguf', base)
    run('-m', p, '-p', 'x', '-n', '2')
    cases = {
        'empty': b'',
        'magic': b'XXXX' + base[4:],
        'trunc-header': base[:20],
        'trunc-meta': base[:400],
        'trunc-data': base[:len(base) - 40],
        'huge-kv-count': base[:16] + struct.pack('<Q', 1 << 62) + base[24:],
        'huge-tensor-count': base[:8] + struct.pack('<Q', 1 << 62) + base[16:],
        'version1': base[:4] + struct.pack('<I', 1) + base[8:],
    }
    # a tensor offset pushed past the end, a type changed to an unsupported one
    r = G.Reader(base)
    name = b'blk.0.attn_q.weight'
    i = base.index(struct.pack('<Q', len(name)) + name) + 8 + len(name)
    tpos = i + 4 + 16
    cases['bad-offset'] = base[:tpos + 4] + struct.pack('<Q', 1 << 40) + base[tpos + 12:]
    cases['misaligned'] = base[:tpos + 4] + struct.pack('<Q', 1) + base[tpos + 12:]
    cases['type-q4_0'] = base[:tpos] + struct.pack('<I', 2) + base[tpos + 4:]
    cases['type-unknown'] = base[:tpos] + struct.pack('<I', 999) + base[tpos + 4:]
    cases['dims-5'] = base[:i] + struct.pack('<I', 5) + base[i + 4:]
    # a model with the wrong shapes or a missing key: clear model errors
    cases['wrong-shape'] = G.random_llama(1, G.T_F32, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                                          extra_kv=[('llama.vocab_size', G.U32, 5)])
    for name, data in cases.items():
        pr = run('-m', write(name + '.gguf', data), '-p', 'x', '-n', '2', check=False)
        err = pr.stderr.decode()
        print('%-18s rc=%d %s' % (name, pr.returncode, err.strip()))
        assert pr.returncode == 1, name
        assert 'gguf:' in err or 'model:' in err or 'tokenizer:' in err, name


def test_gpu():
    """CUDA logits against the CPU path and the numpy reference; skips without a GPU."""
    probe = write('probe.gguf', G.random_llama(1, G.T_F32, n_embd=64, n_head=4, n_head_kv=2, n_ff=128))
    err = run('-m', probe, '-p', 'x', '-n', '1').stderr.decode()
    print(err.strip().splitlines()[0])
    if 'backend cuda' not in err:
        sys.exit(77)
    toks = [1, 17, 5, 250, 42, 7, 99, 3, 120, 200, 11] * 4  # 44 tokens: two prefill batches
    for tt, tol in ((G.T_F32, 1e-3), (G.T_F16, 1e-3), (G.T_BF16, 1e-3), (G.T_Q8_0, 0.1),
                    (G.T_Q4_K, 0.1), (G.T_Q6_K, 0.1)):
        path = write('g%d.gguf' % tt, G.random_llama(tt, tt, rope_freqs=True))
        ref = G.forward(G.Reader(open(path, 'rb').read()), toks)
        gpu, cpu = c_logits(path, toks, gpu=True), c_logits(path, toks)
        e_ref, e_cpu = rel_err(gpu[:-1], ref), rel_err(gpu, cpu)
        print('gpu type %d: err vs numpy %.2e, vs cpu %.2e' % (tt, e_ref, e_cpu))
        # the GPU keeps activations in f32, so it is as close to numpy as F32 for every type
        assert e_ref < 1e-3 and e_cpu < tol
    if os.path.exists(STORIES['f32']):
        assert gen(STORIES['f32']) == run('-m', STORIES['f32'], '-p', 'Once upon a time', '-n', '200',
                                          '--no-gpu').stdout.decode()


{'logits': test_logits, 'gpu': test_gpu, 'generate': test_generate, 'tokenizer': test_tokenizer,
 'hostile': test_hostile}[CASE]()
print('ok')
