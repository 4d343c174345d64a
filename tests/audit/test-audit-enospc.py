#!/usr/bin/env python3
"""A full log volume (2 MiB tmpfs): submissions fail, an audit-degraded record is written from
the reserve; once space is freed submissions work again and the log verifies."""
import os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
mnt = os.path.join(e.tmp, 'mnt')
os.makedirs(mnt)
if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]).returncode != 0:
    e.cleanup()
    print('cannot mount a tmpfs: skipped')
    sys.exit(77)
try:
    e.log = os.path.join(mnt, 'log')
    # 64 KiB of zeros written ahead (not the 1 MiB default): they hold ~100 records
    # after the filler takes the rest of the volume, within the 500 tries below
    e.start('--reserve', '262144', '--prealloc', '65536')
    ok, bad = e.load(4, 5)
    check(not bad and len(ok) == 20, 'before filling: %r' % bad[:3])
    filler = os.path.join(mnt, 'filler')
    subprocess.run(['dd', 'if=/dev/zero', 'of=' + filler, 'bs=64k'], stderr=subprocess.DEVNULL)
    # records still fit in the zeros written ahead; submit until the first refusal, after
    # which the writer is degraded and must refuse everything
    for i in range(500):
        ok, bad = e.load(1, 1, tag='fill%d-' % i)
        if bad:
            break
    check(bad and bad[0][0] == 28, 'the full volume never refused a submission: %r' % bad)
    first_refused = bad[0][1]
    ok, bad = e.load(4, 5, deadline=2000, tag='full')
    check(not ok and len(bad) == 20, 'on a full volume: %d acked, %d failed' % (len(ok), len(bad)))
    check(all(err == 28 for err, _ in bad), 'expected ENOSPC: %r' % bad[:3])
    refused = [t for _, t in bad] + [first_refused]
    os.unlink(filler)
    ok, bad = e.load(4, 5, tag='again')
    check(not bad and len(ok) == 20, 'after freeing space: %r' % bad[:3])
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify: %r' % j)
    recs = e.records()
    deg = [(r['outcome'], r['detail']) for r in recs if r['event'] == 'audit-degraded']
    check(deg and deg[0][0] == 12 and deg[-1][0] == 0, 'degraded records: %r' % deg)
    tags = {r['detail'] for r in recs if r['event'] == 'open'}
    check(not any(t in tags for t in refused), 'a refused submission is in the log')
    check(len([t for t in tags if not t.startswith('fill')]) == 40, 'open records: %d' % len(tags))
    print('degraded records:', deg)
finally:
    if e.proc and e.proc.poll() is None:
        e.kill9()
    subprocess.run(['umount', mnt])
    e.cleanup()
print('PASS')
