#!/usr/bin/env python3
"""Rotation by size: the chain continues across segments, closed segments are read-only, each
rotation writes a checkpoint, a restart continues the last segment, and a removed middle
segment is detected."""
import os, shutil, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    e.start('--segment-max', '4096')
    ok, bad = e.load(4, 25)
    e.stop()
    e.start('--segment-max', '4096')
    ok2, bad2 = e.load(2, 5, tag='r')
    e.stop()
    check(not bad and not bad2, 'failures')
    segs = sorted(f for f in os.listdir(e.log) if f.startswith('seg-'))
    check(len(segs) >= 5, 'segments: %r' % segs)
    check(all(os.stat(os.path.join(e.log, s)).st_mode & 0o222 == 0 for s in segs[:-1]), 'closed segments writable')
    # the zeros written ahead of the appends are cut when a segment is sealed, and at a
    # clean stop: every segment ends with its last record
    tails = [len(read_frames(os.path.join(e.log, s))[1]) for s in segs]
    check(tails == [0] * len(segs), 'bytes after the last record: %r' % tails)
    rc, j = e.verify()
    check(rc == 0 and j['segments'] == len(segs), 'verify: %r' % j)
    notes, _ = read_frames(os.path.join(e.log, 'checkpoints.log'))
    check(sum(b'\nkind rotate\n' in n for n in notes) == len(segs) - 1, 'one rotate checkpoint per rotation')
    d = os.path.join(e.tmp, 'v')
    shutil.copytree(e.log, d)
    os.unlink(os.path.join(d, segs[2]))
    rc, j = e.verify(log=d)
    check(rc == 1, 'middle segment removed: %r' % j)
    print('segments %d; removed middle segment: %s' % (len(segs), j['reason']))

    # the signer thread writes scheduled checkpoints while the writer rotates (and writes
    # its own rotate checkpoints): a checkpoint after every record, a rotation every few
    # batches, 8 submitters. Every note must cover at least as much as the one before it,
    # or verify calls the log tampered.
    e2 = Env(keydir=e.keys)
    e2.start('--segment-max', '8192', '--ckpt-records', '1', '--ckpt-ms', '1')
    ok, bad = e2.load(8, 60)
    e2.stop()
    check(not bad, 'failures under checkpoint-per-record rotation load')
    rc, j = e2.verify()
    notes, _ = read_frames(os.path.join(e2.log, 'checkpoints.log'))
    check(rc == 0, 'verify with signer notes between rotations: %r' % j)
    print('%d notes over %d segments verify' % (len(notes), j['segments']))
    e2.cleanup()
finally:
    e.cleanup()
print('PASS')
