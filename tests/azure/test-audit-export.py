#!/usr/bin/env python3
"""phifs-auditd exports its checkpoints to Azure append blobs (Azurite, via azurite.sh):
the blobs hold checkpoints.log's notes in order, each once, across blob boundaries, an
outage of the service (Azurite stopped while records keep coming) and a clean stop;
phifs-audit fetch-checkpoints + verify accepts the log against them and catches a truncated
or replaced log; a writer whose log does not match the blobs never appends to them.
Azurite does not enforce immutability policies: WORM itself cannot be tested here."""
import os, shutil, signal, subprocess, sys, time
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', 'audit'))
from auditlib import *

for v in ('AZ_ENDPOINT', 'AZ_KEYFILE', 'AZ_PORT', 'AZ_DIR', 'AZURITE_PID', 'AZURITE_BIN'):
    if not os.environ.get(v):
        print('run through azurite.sh')
        sys.exit(77)
URL = 'az://devstoreaccount1/phifs-audit/log%d' % os.getpid()
# a short deadline so that the outage below is noticed quickly (correctness does not depend on it)
OPTS = 'endpoint=%s,key_file=%s,timeout=3' % (os.environ['AZ_ENDPOINT'], os.environ['AZ_KEYFILE'])
azurite = {'pid': int(os.environ['AZURITE_PID'])}


def az_stop():
    os.kill(azurite['pid'], signal.SIGTERM)  # SIGTERM: Azurite's metadata db is not crash-safe
    while True:
        try:
            os.kill(azurite['pid'], 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(azurite['pid'], os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


def az_up():
    return subprocess.run(['curl', '-s', '-o', '/dev/null', os.environ['AZ_ENDPOINT'] +
                           '/devstoreaccount1?comp=list']).returncode == 0


def az_restart():
    for _ in range(200):  # the port must be free
        if not az_up():
            break
        time.sleep(0.05)
    log = open(os.path.join(os.environ['AZ_DIR'], 'azurite.log'), 'a')
    p = subprocess.Popen([os.environ['AZURITE_BIN'], '--blobHost', '127.0.0.1', '--blobPort',
                          os.environ['AZ_PORT'], '--location', os.path.join(os.environ['AZ_DIR'], 'data'),
                          '--loose', '--skipApiVersionCheck', '--disableTelemetry', '--silent'],
                         stdout=log, stderr=log)
    azurite['pid'] = p.pid
    with open(os.path.join(os.environ['AZ_DIR'], 'azurite.pid'), 'w') as f:
        f.write(str(p.pid))  # azurite.sh stops it at the end
    for _ in range(300):
        if az_up():
            return
        time.sleep(0.1)
    fail('azurite did not restart')


def fetch(e, name):
    """(exit code, notes) of fetch-checkpoints into a fresh directory."""
    d = os.path.join(e.tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    p = subprocess.run([PA, 'fetch-checkpoints', '--export-url', URL, '--export-opts', OPTS,
                        '--out', d], stdout=subprocess.PIPE, text=True)
    notes = [open(os.path.join(d, f), 'rb').read() for f in sorted(os.listdir(d))]
    for i, f in enumerate(sorted(os.listdir(d))):
        check(f == 'ckpt-%012d.note' % (i + 1), 'fetched notes not numbered 1..n: %s' % f)
    return p.returncode, notes, d


def local_notes(log):
    return read_frames(os.path.join(log, 'checkpoints.log'))[0]


def wait_exported(e, what, limit=180):
    """Wait until the blobs hold every note checkpoints.log held when called. At every look
    the blobs must be a prefix of the local notes: in order, none twice, none foreign."""
    want = len(local_notes(e.log))
    for _ in range(limit * 4):
        rc, got, d = fetch(e, 'fetched')
        check(rc == 0, '%s: fetch-checkpoints exit %d' % (what, rc))
        loc = local_notes(e.log)
        check(got == loc[:len(got)], '%s: the blobs are not a prefix of checkpoints.log' % what)
        if len(got) >= want:
            return got, d
        time.sleep(0.25)
    fail('%s: the blobs did not catch up (%d of %d notes)' % (what, len(got), want))


def audit_events(e, outcome):
    return [r for r in e.records() if r['event'] == 'audit-degraded' and r['outcome'] == outcome]


e = Env()
e2 = None
try:
    # 3 notes per blob, so that the test crosses blob boundaries many times
    e.start('--export-url', URL, '--export-opts', OPTS, '--export-blob-notes', '3', '--ckpt-ms', '20')
    for i in range(4):
        ok, bad = e.load(2, 10, tag='a%d' % i)
        check(not bad and len(ok) == 20, 'records acknowledged: %r' % bad)
        time.sleep(0.05)  # spread them over several checkpoints (not an assertion)
    got, d = wait_exported(e, 'first records')
    check(len(got) >= 4, 'several checkpoints exported: %d' % len(got))
    print('ok the append blobs hold the first %d checkpoints, in order' % len(got))

    # outage: the writer keeps acknowledging records, the notes wait in checkpoints.log
    az_stop()
    before = len(local_notes(e.log))
    for i in range(3):
        ok, bad = e.load(2, 10, tag='b%d' % i)
        check(not bad and len(ok) == 20, 'records acknowledged during the outage: %r' % bad)
        time.sleep(0.05)
    for _ in range(600):  # bounded wait for the writer to notice (the deadline is 3 s)
        if audit_events(e, 4):
            break
        time.sleep(0.1)
    ev = audit_events(e, 4)
    check(ev and 'export to Azure failed' in ev[0]['detail'], 'export failure recorded: %r' % ev)
    check(len(local_notes(e.log)) > before, 'checkpoints written locally during the outage')
    print('ok during the outage: records acknowledged, failure recorded: %s' % ev[0]['detail'])
    az_restart()
    ok, bad = e.load(2, 10, tag='c')
    check(not bad, 'records after the restart')
    got, d = wait_exported(e, 'after the outage')
    print('ok after the outage the missing checkpoints were appended (%d in all)' % len(got))
    for _ in range(600):
        if audit_events(e, 0):
            break
        time.sleep(0.1)
    check(any('resumed' in r['detail'] for r in audit_events(e, 0)), 'resume recorded')

    # a clean stop: the stop note is exported too, and then the blobs equal checkpoints.log
    e.stop()
    rc, got, d = fetch(e, 'fetched')
    loc = local_notes(e.log)
    check(rc == 0 and got == loc, 'after a clean stop the blobs hold exactly checkpoints.log: %d vs %d'
          % (len(got), len(loc)))
    check(len(got) > 6, 'several blobs: %d notes' % len(got))
    rc, j = e.verify(exp=d)
    check(rc == 0 and j['checkpoints_exported'] == len(loc), 'verify against the blobs: %r' % j)
    print('ok verify against the fetched blobs: %d records, %d checkpoints' % (j['records'], len(loc)))

    # tampering, detected against the blobs
    t = os.path.join(e.tmp, 'trunc')
    shutil.copytree(e.log, t)
    frames, _ = read_frames(os.path.join(t, 'checkpoints.log'))
    write_frames(os.path.join(t, 'checkpoints.log'), frames[:-2])
    rc, j = e.verify(log=t, exp=d)
    check(rc == 1 and 'missing from the local log' in j['reason'], 'truncated checkpoints.log: %r' % j)
    print('ok truncated log: %s' % j['reason'])
    # the whole log replaced by one signed with the same (stolen) key
    e2 = Env(keydir=e.keys)
    e2.start('--ckpt-ms', '20')
    e2.load(1, 5)
    e2.stop()
    rc, j = e.verify(log=e2.log, exp=d)
    check(rc == 1 and 'differs' in j['reason'], 'replaced log: %r' % j)
    print('ok replaced log: %s' % j['reason'])

    # a writer on that other log, given the same export, must not append after foreign notes
    e2.start('--export-url', URL, '--export-opts', OPTS, '--export-blob-notes', '3', '--ckpt-ms', '20')
    for _ in range(600):
        if audit_events(e2, 8):
            break
        time.sleep(0.1)
    check(audit_events(e2, 8), 'divergence recorded by the second writer')
    e2.load(1, 5, tag='z')
    e2.stop()
    rc, again, _ = fetch(e, 'fetched2')
    check(rc == 0 and again == got, 'the blobs are unchanged after the foreign writer')
    print('ok a writer whose log differs from the blobs records it and appends nothing')
    print('PASS')
finally:
    if e2:
        e2.cleanup()
    e.cleanup()
