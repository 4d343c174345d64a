#!/usr/bin/env python3
"""Pseudonyms and query: the lookup key exported from the master key resolves patient
pseudonyms; query filters by patient (id or pseudonym), principal, role, event and outcome,
in table, JSON and CSV; the log itself never holds the patient id."""
import csv, io, os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    master = os.path.join(e.tmp, 'master.key')
    fd = os.open(master, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b'42' * 32 + b'\n')
    os.close(fd)
    lk = os.path.join(e.tmp, 'lookup.key')
    run([PA, 'lookup-key', '--key-file', master, '--out', lk])
    check(os.stat(lk).st_mode & 0o777 == 0o600, 'lookup key mode')
    pid_a, pid_b = 'patient-ALPHA-0042', 'patient-BRAVO-0043'
    ps = lambda p: subprocess.run([PA, 'pseudonym', '--lookup-key', lk, '--patient', p],
                                  stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    pa, pb = ps(pid_a), ps(pid_b)
    check(pa.startswith('pt:') and pa != pb and ps(pid_a) == pa, 'pseudonyms')
    back = subprocess.run([PA, 'resolve', '--lookup-key', lk, pa], stdout=subprocess.PIPE,
                          text=True, check=True).stdout.strip()
    check(back == pid_a, 'resolve')

    e.start()
    sub = lambda *a: run([PA, 'submit', '--socket', e.sock] + list(a))
    sub('--event', 'open', '--action', 'R', '--principal', 'u:alice', '--role', 'provider', '--patient', pa)
    sub('--event', 'open', '--action', 'R', '--principal', 'u:bob', '--role', 'provider', '--patient', pb)
    sub('--event', 'deny', '--action', 'R', '--outcome', '4', '--principal', 'u:root', '--role', 'admin', '--patient', pa)
    e.stop()
    for f in os.listdir(e.log):
        if f.startswith('seg-'):
            check(b'ALPHA' not in open(os.path.join(e.log, f), 'rb').read(), 'patient id in the log')

    def q(*a):
        return subprocess.run([PA, 'query', '--dir', e.log] + list(a), stdout=subprocess.PIPE,
                              text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(q('--patient', pid_a, '--lookup-key', lk, '--format', 'csv'))))
    check([r['event'] for r in rows] == ['open', 'deny'] and rows[0]['patient'] == pid_a, 'by patient id: %r' % rows)
    rows = list(csv.DictReader(io.StringIO(q('--patient', pb, '--format', 'csv'))))
    check(len(rows) == 1 and rows[0]['principal'] == 'u:bob' and rows[0]['patient'] == pb, 'by pseudonym')
    js = [json.loads(l) for l in q('--outcome', '4', '--format', 'json').splitlines()]
    check(len(js) == 1 and js[0]['actor']['role'] == 'admin', 'by outcome')
    check(len(q('--role', 'provider', '--event', 'open', '--principal', 'u:alice').splitlines()) == 2, 'table')
    check(q('--from', '2000-01-01T00:00:00Z', '--to', '2000-01-02T00:00:00Z', '--format', 'json') == '', 'time range')
finally:
    e.cleanup()
print('PASS')
