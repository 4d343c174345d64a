#!/usr/bin/env python3
"""Pipelined submissions: several requests in flight on one connection, and one reply message
per connection per batch.
  1. The writer: 20 requests sent on one raw connection come back as one entry each (right
     id, status 0, consecutive sequence numbers) in fewer than 20 messages.
  2. The client: 400 asynchronous submissions from one thread (up to 32 in flight on a
     connection) are each answered once, with distinct sequence numbers, all in the log.
  3. kill -9 of the writer in the middle of a stream of 3000 asynchronous submissions: every
     submission is answered exactly once (none hangs past its deadline), and after a restart
     every acknowledged one is in the log, which verifies.
  4. The writer stopped (SIGSTOP) for 1 s in the middle of such a stream: what was in flight
     fails with ETIMEDOUT at its deadline and nothing else fails (its late answers, and the
     writer's backlog, must not cost other requests: no EPROTO, no ECONNRESET); once it
     runs again the stream goes on and everything acknowledged is in the log."""
import errno, os, re, signal, socket, struct, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

REP = 20


def async_load(e, n, deadline=2000, tag='a'):
    return subprocess.Popen([LOAD, e.sock, 'async', str(n), str(deadline), tag],
                            stdout=subprocess.PIPE, text=True)


def answered_once(out, n, tag):
    tags = [l.split()[2] for l in out.splitlines()]
    check(len(tags) == n and set(tags) == {'%s-%d' % (tag, i) for i in range(n)},
          '%d answers for %d submissions (%d distinct)' % (len(tags), n, len(set(tags))))


e = Env()
try:
    # the writer gathers a batch for up to 2 ms, so the raw requests below share one
    e.start('--batch-wait-us', '2000')

    # ---- 2. the client: 400 pipelined submissions
    p = async_load(e, 400)
    out = p.communicate()[0]
    check(p.returncode == 0, 'audit-load async exited %d' % p.returncode)
    answered_once(out, 400, 'a')
    ok, bad = parse_load(out)
    check(not bad and len(set(ok.values())) == 400, 'async: %d ok, failures %r' % (len(ok), bad[:3]))

    # ---- 1. the writer: a request in the client's form, taken from a record in the log
    seg = os.path.join(e.log, 'seg-00000000.log')
    frames, _ = read_frames(seg)
    raw = next(f for f in frames if b'"event":"open"' in f)
    body = raw[raw.index(b'},', raw.index(b'"src":{')) + 2:raw.rindex(b',"prev":')]
    body, subs = re.subn(rb'"detail":"[^"]*"', b'"detail":"raw"', body)
    check(subs == 1, 'no detail in %r' % raw)
    event = b'{"v":1,' + body + b'}'
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(e.sock)
    for i in range(1, 21):
        s.send(b'PAQ1' + struct.pack('>I', i) + event)
    got, msgs, most = {}, 0, 0
    while len(got) < 20:
        m = s.recv(65536)
        check(m and len(m) % REP == 0, 'reply message of %d bytes' % len(m))
        msgs += 1
        most = max(most, len(m) // REP)
        for off in range(0, len(m), REP):
            magic, rid, st, seq = struct.unpack('>4sIiQ', m[off:off + REP])
            check(magic == b'PAR1' and rid not in got and 1 <= rid <= 20 and st == 0,
                  'entry %r %d %d %d' % (magic, rid, st, seq))
            got[rid] = seq
    s.close()
    seqs = [got[i] for i in range(1, 21)]
    check(seqs == list(range(seqs[0], seqs[0] + 20)), 'sequence numbers %r' % seqs)
    check(msgs < 20 and most > 1, '20 requests answered in %d messages (at most %d entries)' % (msgs, most))
    print('20 pipelined requests: %d reply message(s), up to %d entries in one' % (msgs, most))

    # ---- 3. kill -9 with up to 32 requests in flight on each connection
    p = async_load(e, 3000, 1000, 'k')
    out = kill_after(e, p, 500, 'async load')
    check(p.returncode == 0, 'audit-load async exited %d after the kill' % p.returncode)
    answered_once(out, 3000, 'k')
    ok2, bad2 = parse_load(out)
    check(len(ok2) >= 500 and bad2, 'expected acks before and failures after the kill')
    e.start()
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify after the kill: %r' % j)
    by_tag = {r['detail']: r['seq'] for r in e.records() if r['event'] == 'open'}
    for tag, seq in list(ok.items()) + list(ok2.items()):
        check(by_tag.get(tag) == seq, 'acknowledged %s (seq %d) is not in the log' % (tag, seq))
    print('kill -9 in a pipelined stream: %d acknowledged (all in the log), %d failed' % (len(ok2), len(bad2)))

    # ---- 4. the writer stopped past the deadline with requests in flight
    e.start()
    p = async_load(e, 3000, 300, 's')
    lines = [p.stdout.readline() for _ in range(300)]
    check(all(lines), 'stop load ended early')
    os.kill(e.proc.pid, signal.SIGSTOP)
    time.sleep(1)
    os.kill(e.proc.pid, signal.SIGCONT)
    out = ''.join(lines) + p.stdout.read()
    p.wait(60)
    answered_once(out, 3000, 's')
    ok3, bad3 = parse_load(out)
    errs = sorted({x for x, _ in bad3})
    check(bad3 and errs == [errno.ETIMEDOUT], 'while stopped: failures %r (want ETIMEDOUT only)' % errs)
    last_bad = max(int(t.split('-')[1]) for _, t in bad3)
    check(any(int(t.split('-')[1]) > last_bad for t in ok3), 'nothing acknowledged after the stop')
    e.stop()
    rc, j = e.verify()
    check(rc == 0, 'verify after the stop: %r' % j)
    by_tag = {r['detail']: r['seq'] for r in e.records() if r['event'] == 'open'}
    for tag, seq in ok3.items():
        check(by_tag.get(tag) == seq, 'acknowledged %s (seq %d) is not in the log' % (tag, seq))
    print('writer stopped 1 s: %d acknowledged, %d timed out, nothing else failed' % (len(ok3), len(bad3)))
finally:
    e.cleanup()
print('PASS')
