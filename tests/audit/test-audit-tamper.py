#!/usr/bin/env python3
"""Every tamper class makes `phifs-audit verify` fail with the right exit code; an untouched
log (and one with only an unrecovered torn tail) verifies."""
import os, shutil, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    e.start('--ckpt-ms', '20')
    e.load(2, 5)
    # wait for a checkpoint covering the first records (the writer signs within 20 ms)
    for _ in range(500):
        frames, _ = read_frames(os.path.join(e.log, 'checkpoints.log'))
        if len(frames) >= 2:
            break
        time.sleep(0.01)
    e.load(2, 5, tag='u')
    e.stop()
    rc, j = e.verify()
    check(rc == 0 and j['records'] == 22, 'untouched log: %r' % j)
    check(j['checkpoints_local'] >= 3 and j['checkpoints_exported'] == j['checkpoints_local'], 'exports: %r' % j)

    seg = 'seg-00000000.log'
    n = [0]

    def variant(mutate, want, what, exp=None):
        n[0] += 1
        d = os.path.join(e.tmp, 'v%d' % n[0])
        shutil.copytree(e.log, d)
        mutate(d)
        rc, j = e.verify(log=d, exp=exp)
        check(rc == want, '%s: exit %d, want %d (%s)' % (what, rc, want, j['reason']))
        print('ok %-40s exit %d: %s' % (what, rc, j['reason'] or j['warning']))

    def edit(fn):
        def m(d):
            frames, tail = read_frames(os.path.join(d, seg))
            write_frames(os.path.join(d, seg), fn(frames), tail)
        return m

    def modify(frames):
        i = frames[5].index(b'"detail":"') + 10
        frames[5] = frames[5][:i] + b'X' + frames[5][i + 1:]
        return frames

    variant(edit(modify), 1, 'modify one record')
    variant(edit(lambda f: rechain(modify(f))), 1, 'modify and recompute the chain')
    variant(edit(lambda f: f[:5] + f[6:]), 1, 'delete a record')
    variant(edit(lambda f: rechain(f[:5] + f[6:], renumber=True)), 1, 'delete, renumber and re-link')
    variant(edit(lambda f: f[:5] + [f[5]] + f[5:]), 1, 'insert a duplicate record')
    variant(edit(lambda f: f[:5] + [f[6], f[5]] + f[7:]), 1, 'reorder two records')
    variant(edit(lambda f: f[:-3]), 1, 'truncate the tail')

    def to_boundary(d):
        notes, _ = read_frames(os.path.join(d, 'checkpoints.log'))
        size = int(notes[1].split(b'\n')[1])
        frames, _ = read_frames(os.path.join(d, seg))
        write_frames(os.path.join(d, seg), frames[:1 + size])
        write_frames(os.path.join(d, 'checkpoints.log'), notes[:2])
    variant(to_boundary, 1, 'truncate to a checkpoint boundary')

    def wipe(d):
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    variant(wipe, 1, 'delete the whole log')

    # an attacker with the stolen signing key writes a whole new, self-consistent log
    e2 = Env(keydir=e.keys)
    e2.start()
    e2.load(2, 11)
    e2.stop()
    rc, j = e.verify(log=e2.log)
    check(rc == 1, 'replaced log re-signed with the key: %d %r' % (rc, j))
    print('ok replace the whole log (re-signed)        exit 1:', j['reason'])
    e2.cleanup()

    # a forged exported checkpoint
    x = os.path.join(e.tmp, 'exp-forged')
    shutil.copytree(e.exp, x)
    p = os.path.join(x, 'ckpt-000000000002.note')
    b = bytearray(open(p, 'rb').read())
    b[b.index(b'\n') + 1] ^= 1
    open(p, 'wb').write(bytes(b))
    variant(lambda d: None, 1, 'forge an exported checkpoint', exp=x)

    # no anchors: unverifiable
    empty = os.path.join(e.tmp, 'exp-empty')
    os.makedirs(empty)
    variant(lambda d: None, 2, 'no exported checkpoints', exp=empty)
    other = Env()
    rc, j = e.verify(pub=other.pub)
    check(rc == 2, 'wrong public key: %d %r' % (rc, j))
    other.cleanup()

    # a torn tail beyond every checkpoint is a crash, not tampering
    def torn(d):
        with open(os.path.join(d, seg), 'ab') as f:
            f.write(b'\0\0\1\0{"v":1,"seq"')
    variant(torn, 0, 'unrecovered torn tail')
finally:
    e.cleanup()
print('PASS')
