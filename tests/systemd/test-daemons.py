#!/usr/bin/env python3
"""test-daemons.py: the daemons under a stand-in service manager. A real AF_UNIX datagram
listener at an abstract $NOTIFY_SOCKET (as systemd binds it) receives what phifs-auditd,
phifs and spoold send: READY=1 only once they really are ready, WATCHDOG=1 when
$WATCHDOG_USEC asks for it, STATUS=, STOPPING=1. phifs -o run_as=USER: once READY=1 came,
/proc/PID/status shows the new uid/gid, no capabilities and no_new_privs, and the mount
still serves reads and writes (audited through the connection made before the drop)."""
import os, pwd, signal, socket, subprocess, sys, tempfile, time

PHIFS, AUDITD, PA, PK, SPOOLD = (os.environ[k] for k in
                                 ('PHIFS', 'AUDITD', 'PHIFS_AUDIT', 'PHIFS_KEY', 'SPOOLD'))
WAIT = 60  # upper bound for any one message: a lost message fails instead of hanging


def fail(msg):
    print('FAIL:', msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print('ok:', msg)


class Listener:
    def __init__(self, name):
        self.addr = '@' + name
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind('\0' + name)  # exactly offsetof(sun_path) + len, as systemd does
        self.s.settimeout(WAIT)

    def next(self, proc=None):
        try:
            return self.s.recv(4096).decode()
        except socket.timeout:
            fail('no notification within %d s (process %s)' % (WAIT, proc and proc.poll()))

    def expect(self, key, proc=None, skip=('STATUS=', 'WATCHDOG=1')):
        """Wait for a message holding the line key; earlier messages that only carry
        skippable lines are passed over. Returns the message."""
        while True:
            m = self.next(proc)
            lines = m.split('\n')
            if key in lines:
                return m
            if not all(any(l.startswith(p) for p in skip) for l in lines):
                fail('unexpected notification %r while waiting for %s' % (m, key))


def mounted(mnt):
    with open('/proc/self/mountinfo') as f:
        return any(l.split()[4] == mnt for l in f)


def status_of(pid):
    d = {}
    with open('/proc/%d/status' % pid) as f:
        for l in f:
            k, _, v = l.partition(':')
            d[k] = v.split()
    return d


def run(*a, **kw):
    r = subprocess.run(list(a), capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail('%s: rc %d: %s' % (' '.join(a), r.returncode, r.stderr))
    return r.stdout


tmp = tempfile.mkdtemp(prefix='phi-test-daemons-')
os.chmod(tmp, 0o755)  # the dropped phifs must reach its store below
procs = []


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    mnt = os.path.join(tmp, 'mnt')
    if os.path.isdir(mnt) and mounted(mnt):
        subprocess.run(['umount', '-l', mnt])
    subprocess.run(['rm', '-rf', tmp])


try:
    ln = Listener('phi-test-daemons.%d' % os.getpid())

    # ---- phifs-auditd: READY once the socket listens, WATCHDOG, STOPPING
    keys, log, exp, sock = (os.path.join(tmp, n) for n in ('keys', 'log', 'exp', 'audit.sock'))
    os.makedirs(keys)
    os.makedirs(exp)
    run(PA, 'keygen', '--out', keys, '--name', 'phi-audit/test')
    env = dict(os.environ, NOTIFY_SOCKET=ln.addr, WATCHDOG_USEC='200000')
    ad = subprocess.Popen([AUDITD, '--dir', log, '--export-dir', exp, '--socket', sock,
                           '--signing-key', os.path.join(keys, 'phifs-audit-signing-key')], env=env)
    procs.append(ad)
    m = ln.expect('READY=1', ad)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.connect(sock)  # fails if READY=1 came before the socket listened
    c.close()
    check(True, 'phifs-auditd: READY=1 (%r) with the socket listening' % m)
    ln.expect('WATCHDOG=1', ad, skip=('STATUS=',))
    check(True, 'phifs-auditd: WATCHDOG=1 with WATCHDOG_USEC set')

    # ---- phifs: READY after the mount, privilege drop, STOPPING on unmount
    store, mnt, key = (os.path.join(tmp, n) for n in ('store', 'mnt', 'master.key'))
    os.makedirs(mnt)
    run(PK, '--store', store, '--key-file', key, 'init')
    run(PK, '--store', store, '--key-file', key, '--audit-socket', sock, 'add', 'p-0001')
    nobody = pwd.getpwnam('nobody')
    run('chown', '-R', '%d:%d' % (nobody.pw_uid, nobody.pw_gid), store)

    def start_phifs(run_as, audit=True):
        e = dict(os.environ, NOTIFY_SOCKET=ln.addr)
        o = ('audit_socket=%s,' % sock if audit else '') + 'run_as=' + run_as
        p = subprocess.Popen([PHIFS, '-f', '--key-file', key, '-o', o, store, mnt],
                             env=e, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    fs = start_phifs('nobody')
    m = ln.expect('READY=1', fs)
    check(mounted(mnt), 'phifs: READY=1 (%r) with the mount already in mountinfo' % m)
    st = status_of(fs.pid)
    want = str(nobody.pw_uid)
    check(st['Uid'] == [want] * 4 and st['Gid'] == [str(nobody.pw_gid)] * 4,
          'phifs: /proc/PID/status Uid %s Gid %s after the drop' % (st['Uid'], st['Gid']))
    caps = {k: st[k][0] for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')}
    check(all(int(v, 16) == 0 for v in caps.values()), 'phifs: no capabilities left: %s' % caps)
    check(st['NoNewPrivs'] == ['1'], 'phifs: NoNewPrivs 1')
    # the mount still works: write, read back (each access audited before the reply)
    doc = os.path.join(mnt, 'p-0001', 'note.txt')
    with open(doc, 'w') as f:
        f.write('dropped but serving\n')
    with open(doc) as f:
        check(f.read() == 'dropped but serving\n', 'phifs: the mount serves writes and reads after the drop')
    # every thread, the FUSE workers started after the drop included
    for t in os.listdir('/proc/%d/task' % fs.pid):
        ts = status_of(int(t))
        check(ts['Uid'] == [want] * 4 and int(ts['CapEff'][0], 16) == 0 and int(ts['CapPrm'][0], 16) == 0,
              'phifs: thread %s dropped too' % t)
    check(os.stat(os.path.join(store)).st_uid == nobody.pw_uid, 'the store belongs to the run_as user')
    run('fusermount3', '-u', mnt)
    ln.expect('STOPPING=1', fs)
    check(fs.wait(WAIT) == 0, 'phifs: STOPPING=1 on unmount, exit status 0')
    check(not mounted(mnt), 'phifs: unmounted')

    # refusals: root is no drop, an unknown user is no drop; neither may serve (without
    # audit: a loaded machine can miss the audit client's 500 ms reply deadline, and that
    # refusal is not what is tested here)
    for bad, why in (('root', 'not an unprivileged user'), ('no-such-user-phi', 'no such user')):
        p = start_phifs(bad, audit=False)
        err = p.communicate(timeout=WAIT)[1]
        check(p.returncode != 0 and why in err and not mounted(mnt),
              'phifs: run_as=%s refused (%s), nothing left mounted [rc %s, mounted %s, stderr %r]'
              % (bad, why, p.returncode, mounted(mnt), err))
    # no READY=1 was sent for them: the next message is the auditd's STOPPING=1
    ad.send_signal(signal.SIGTERM)
    m = ln.expect('STOPPING=1', ad, skip=('WATCHDOG=1', 'STATUS=writing the audit log'))
    check(ad.wait(WAIT) == 0, 'phifs-auditd: STOPPING=1 (%r) on SIGTERM, clean exit; no READY from refused drops' % m)
    for ev in ('mount', 'unmount'):
        rows = run(PA, 'query', '--dir', log, '--event', ev, '--format', 'csv').strip().split('\n')[1:]
        # the one audited mount, with its unmount
        check(len(rows) == 1,
              'the audit log holds %d %s record(s) from the phifs runs' % (len(rows), ev))

    # ---- spoold: READY after the rescan, STATUS, WATCHDOG, STOPPING
    spool = os.path.join(tmp, 'spool')
    conf = os.path.join(tmp, 'spoold.conf')
    with open(conf, 'w') as f:
        f.write('spool_dir = %s\nadmin_group = 0\nrunner = /bin/true\ntick_ms = 100\n' % spool)
    sp = subprocess.Popen([SPOOLD, '--config', conf],
                          env=dict(os.environ, NOTIFY_SOCKET=ln.addr, WATCHDOG_USEC='200000'))
    procs.append(sp)
    ln.expect('READY=1', sp)
    check(os.path.isdir(os.path.join(spool, 'incoming')), 'spoold: READY=1 with the spool in place')
    seen = set()
    while not {'STATUS', 'WATCHDOG'} <= seen:
        m = ln.next(sp)
        for l in m.split('\n'):
            if l.startswith('STATUS=queued '):
                seen.add('STATUS')
            elif l == 'WATCHDOG=1':
                seen.add('WATCHDOG')
            else:
                fail('spoold: unexpected %r' % l)
    check(True, 'spoold: STATUS=queued ... and WATCHDOG=1')
    sp.send_signal(signal.SIGTERM)
    ln.expect('STOPPING=1', sp)
    check(sp.wait(WAIT) == 0, 'spoold: STOPPING=1 on SIGTERM')
    print('test-daemons: all passed')
finally:
    cleanup()
