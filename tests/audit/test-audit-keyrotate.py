#!/usr/bin/env python3
"""Signing-key rotation: the writer restarted with a new key of the same name and
--previous-signing-key co-signs its first checkpoint with the old key; verify with both
public keys (oldest first) accepts the log, and rejects a note signed only by the retired
key after the handover (the keys given in the wrong order), either key alone, and a newer
key that never signed. A writer given a new key without the old one, or the retired key
alone, refuses to start and leaves the checkpoints alone."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

envs = []


def rotated(cosign=True, old_after=False):
    """A log written with key A, then key B (co-signed by A unless cosign=False), then
    optionally A alone again (a stolen retired key)."""
    e = Env()
    envs.append(e)
    a_key = os.path.join(e.keys, 'phifs-audit-signing-key')
    kb = os.path.join(e.tmp, 'kb')
    os.makedirs(kb)
    run([PA, 'keygen', '--out', kb, '--name', 'phi-audit/test'])  # same log name, new key
    b_key = os.path.join(kb, 'phifs-audit-signing-key')
    e.pub_b = os.path.join(kb, 'phifs-audit.pub')
    e.start()
    ok, bad = e.load(4, 20, tag='a')
    check(ok and not bad, 'load under key A')
    e.stop()
    if not cosign:
        # a new key without the old one: the writer refuses to start rather than cut the
        # checkpoints it cannot verify
        before = open(os.path.join(e.log, 'checkpoints.log'), 'rb').read()
        p = subprocess.run([AUDITD, '--dir', e.log, '--export-dir', e.exp, '--socket', e.sock,
                            '--signing-key', b_key], stderr=subprocess.PIPE, text=True, timeout=60)
        check(p.returncode != 0, 'writer started with a foreign key: %s' % p.stderr)
        check(open(os.path.join(e.log, 'checkpoints.log'), 'rb').read() == before,
              'checkpoints.log changed by the refused start')
        rc, j = e.verify()
        check(rc == 0, 'log after the refused start: %r' % j)
        return e
    e.start('--signing-key', b_key, '--previous-signing-key', a_key)
    ok, bad = e.load(4, 20, tag='b')
    check(ok and not bad, 'load under key B')
    e.stop()
    # later starts need only the new key
    e.start('--signing-key', b_key)
    ok, bad = e.load(2, 10, tag='b2')
    check(ok and not bad, 'load under key B alone')
    e.stop()
    if old_after:
        # the retired key alone (stolen, say): the writer refuses too
        before = open(os.path.join(e.log, 'checkpoints.log'), 'rb').read()
        p = subprocess.run([AUDITD, '--dir', e.log, '--export-dir', e.exp, '--socket', e.sock,
                            '--signing-key', a_key], stderr=subprocess.PIPE, text=True, timeout=60)
        check(p.returncode != 0, 'writer started with the retired key: %s' % p.stderr)
        check(open(os.path.join(e.log, 'checkpoints.log'), 'rb').read() == before,
              'checkpoints.log changed by the refused start')
    return e


try:
    e = rotated()
    rc, j = e.verify(pub=e.pub, extra=['--pubkey', e.pub_b])
    check(rc == 0, 'rotated log with keys A, B: %r' % j)
    print('rotated: %d records, %d checkpoints' % (j['records'], j['checkpoints_local']))
    rc, j = e.verify(pub=e.pub_b, extra=['--pubkey', e.pub])
    check(rc == 1 and 'retired' in j['reason'], 'keys in the wrong order: %r' % j)
    rc, j = e.verify(pub=e.pub)
    check(rc in (1, 2), 'old key alone: %r' % j)
    rc, j = e.verify(pub=e.pub_b)
    check(rc in (1, 2), 'new key alone: %r' % j)

    rotated(cosign=False)

    e = rotated(old_after=True)
    rc, j = e.verify(pub=e.pub, extra=['--pubkey', e.pub_b])
    check(rc == 0, 'rotated log after the refused start: %r' % j)

    # a handover note without the old key's co-signature (crafted: the writer cannot make
    # one): the writer is killed right after its start note, whose second signature line
    # (the old key's) is then removed locally and in the export
    e = Env()
    envs.append(e)
    kb = os.path.join(e.tmp, 'kb')
    os.makedirs(kb)
    run([PA, 'keygen', '--out', kb, '--name', 'phi-audit/test'])
    e.start()
    e.load(2, 5)
    e.stop()
    e.start('--signing-key', os.path.join(kb, 'phifs-audit-signing-key'),
            '--previous-signing-key', os.path.join(e.keys, 'phifs-audit-signing-key'))
    e.kill9()
    rc, j = e.verify(pub=e.pub, extra=['--pubkey', os.path.join(kb, 'phifs-audit.pub')])
    check(rc == 0, 'rotated, killed after the handover: %r' % j)
    ck = os.path.join(e.log, 'checkpoints.log')
    frames, tail = read_frames(ck)
    check(not tail, 'checkpoints.log tail')
    last = frames[-1].decode()
    sigs = [l for l in last.split('\n') if l.startswith('\u2014 ')]
    check(len(sigs) == 2, 'the handover note has two signatures: %r' % last)
    stripped = last.replace(sigs[1] + '\n', '').encode()
    write_frames(ck, frames[:-1] + [stripped])
    idx = len(frames)
    with open(os.path.join(e.exp, 'ckpt-%012d.note' % idx), 'wb') as f:
        f.write(stripped)
    rc, j = e.verify(pub=e.pub, extra=['--pubkey', os.path.join(kb, 'phifs-audit.pub')])
    check(rc == 1 and 'previous' in j['reason'], 'handover without co-signature: %r' % j)

    # a log never rotated, checked with an extra newer key: not vouched for by it
    e = Env()
    envs.append(e)
    kb = os.path.join(e.tmp, 'kb')
    os.makedirs(kb)
    run([PA, 'keygen', '--out', kb, '--name', 'phi-audit/test'])
    e.start()
    e.load(2, 5)
    e.stop()
    rc, j = e.verify(pub=e.pub, extra=['--pubkey', os.path.join(kb, 'phifs-audit.pub')])
    check(rc == 2 and 'newest' in j['reason'], 'unrotated log with a newer key: %r' % j)
    rc, j = e.verify()
    check(rc == 0, 'unrotated log with its key: %r' % j)
finally:
    for x in envs:
        x.cleanup()
print('PASS')
