#!/usr/bin/env python3
"""Concurrent submits from 64 threads: one record each, gap-free sequence numbers."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    e.start()
    ok, bad = e.load(64, 20)
    check(not bad, 'failed submissions: %r' % bad[:5])
    check(len(ok) == 64 * 20, 'acks: %d' % len(ok))
    seqs = sorted(ok.values())
    check(seqs == list(range(seqs[0], seqs[0] + len(seqs))), 'sequence numbers are not gap-free')
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify: %r' % j)
    recs = e.records()
    by_tag = {}
    for r in recs:
        if r['event'] == 'open':
            check(r['detail'] not in by_tag, 'two records for %s' % r['detail'])
            by_tag[r['detail']] = r['seq']
    check(by_tag == ok, 'log records differ from the acks')
    check([r['seq'] for r in recs] == list(range(1, len(recs) + 1)), 'log seq not 1..n')
finally:
    e.cleanup()
print('PASS')
