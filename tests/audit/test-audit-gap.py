#!/usr/bin/env python3
"""Checkpoint gaps (the CVE-2023-31438 lesson): verify --max-gap flags a silent gap between
checkpoints (a crash, or a truncated-and-continued log) but not one after a clean stop."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    e.start()
    e.load(1, 3)
    e.stop()               # a 'stop' checkpoint: the gap that follows is explained
    time.sleep(1.5)
    e.start()
    e.load(1, 3, tag='b')
    rc, j = e.verify(extra=['--max-gap', '1'])
    check(rc == 0, 'gap after a clean stop: %r' % j)
    e.kill9()              # no 'stop' checkpoint
    time.sleep(1.5)
    e.start()
    e.stop()
    rc, j = e.verify(extra=['--max-gap', '1'])
    check(rc == 1 and 'gap' in j['reason'], 'gap after a crash: %r' % j)
    rc, j = e.verify()
    check(rc == 0, 'without --max-gap: %r' % j)
    print('flagged:', j['reason'] or '-')
finally:
    e.cleanup()
print('PASS')
