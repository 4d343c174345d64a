#!/usr/bin/env python3
"""kill -9 of phifs-auditd in the middle of a stream of submissions from many threads: after
a restart every acknowledged submission is in the log, a torn tail is cut with a recovery
record, and the log verifies."""
import os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

TORN = b'\0\0\1\0{"v":1,"seq":99999,"ts"'
e = Env()
try:
    e.start()
    p = subprocess.Popen([LOAD, e.sock, '16', '400', '1000'], stdout=subprocess.PIPE, text=True)
    ok, bad = parse_load(kill_after(e, p, 300))
    check(len(ok) >= 300 and bad, 'expected acks before and failures after the kill')
    # the writer keeps zeros written ahead of its appends (zerofill.h): after the kill they
    # follow the last record, and a reader takes them for the end, not for a torn tail
    seg = os.path.join(e.log, 'seg-00000000.log')
    frames, tail = read_frames(seg)
    check(len(tail) >= 65536 and not tail.strip(b'\0'), 'no zeros ahead of the end: %d tail bytes' % len(tail))
    rc, j = e.verify()
    check(rc == 0 and not j['torn_tail'], 'verify with the zeros, before recovery: %r' % j)
    # a batch torn by the crash: a partial frame where the next append went, over the zeros
    with open(seg, 'r+b') as f:
        f.seek(os.path.getsize(seg) - len(tail))
        f.write(TORN)
    e.start()
    ok2, bad2 = e.load(8, 10, tag='after')
    check(not bad2, 'submissions after restart failed: %r' % bad2[:3])
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify after the crash: %r' % j)
    recs = e.records()
    by_tag = {r['detail']: r['seq'] for r in recs if r['event'] == 'open'}
    for tag, seq in list(ok.items()) + list(ok2.items()):
        check(by_tag.get(tag) == seq, 'acknowledged %s (seq %d) is not in the log' % (tag, seq))
    rec = [r for r in recs if r['event'] == 'audit-recovery']
    check(len(rec) == 1 and 'cut %d bytes' % len(TORN) in rec[0]['detail'], 'recovery record: %r' % rec)
    check(any('.torn-' in f for f in os.listdir(e.log)), 'the cut bytes were not kept')
    print('acked before kill %d, failed %d, recovery: %s' % (len(ok), len(bad), rec[0]['detail']))
finally:
    e.cleanup()
print('PASS')
