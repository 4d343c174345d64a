#!/usr/bin/env python3
"""One client object across writer restarts: it fails (connection errors, distinguishable from
the writer's ENOSPC/EIO) while no writer runs and reconnects by itself when one is back."""
import errno, os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
c = None
try:
    e.start()
    c = subprocess.Popen([LOAD, e.sock, '-'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def submit(tag):
        c.stdin.write(tag + '\n')
        c.stdin.flush()
        f = c.stdout.readline().split()
        return (f[0], int(f[1]))

    r1 = submit('first')
    check(r1[0] == 'ok', 'first: %r' % (r1,))
    e.stop()
    r2 = submit('down')
    conn_errs = (errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOENT, errno.EPIPE)
    check(r2[0] == 'fail' and r2[1] in conn_errs, 'without a writer: %r' % (r2,))
    e.start()
    r3 = submit('again')
    check(r3[0] == 'ok' and r3[1] > r1[1], 'after the restart: %r' % (r3,))
    c.stdin.close()
    c.wait()
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify: %r' % j)
    print('while down: %s; after restart seq %d' % (os.strerror(r2[1]), r3[1]))
finally:
    if c and c.poll() is None:
        c.kill()
    e.cleanup()
print('PASS')
