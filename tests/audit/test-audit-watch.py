#!/usr/bin/env python3
"""watch: every rule fires on a crafted stream and writes an alert record; report: Markdown and
self-contained HTML with the expected counts; the log still verifies."""
import os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auditlib import *

e = Env()
try:
    e.start()
    pt = 'pt:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
    sub = lambda *a: run([PA, 'submit', '--socket', e.sock] + list(a))
    for i in range(3):  # 3 accesses in one minute hit --spike-max 3 (unless a minute boundary falls between)
        sub('--event', 'open', '--action', 'R', '--principal', 'u:alice', '--role', 'provider', '--patient', pt, '--purpose', 'TREAT')
    for i in range(5):
        sub('--event', 'deny', '--action', 'R', '--outcome', '4', '--principal', 'u:mallory', '--role', 'provider', '--patient', pt)
    sub('--event', 'open', '--action', 'R', '--principal', 'u:root', '--role', 'admin', '--patient', pt)
    sub('--event', 'emergency', '--action', 'R', '--principal', 'u:carol', '--role', 'provider', '--patient', pt, '--purpose', 'ETREAT')
    sub('--event', 'deny', '--action', 'R', '--outcome', '4', '--principal', 'u:dave', '--role', 'provider', '--patient', pt, '--grant-exp', '1000')
    p = subprocess.run([PA, 'watch', '--dir', e.log, '--socket', e.sock, '--once', '--work-hours', '0-0',
                        '--spike-max', '3'], stdout=subprocess.PIPE, text=True, check=True)
    rules = [l.split()[1][5:] for l in p.stdout.splitlines()]
    for r in ['grant-window', 'non-phi-role', 'emergency', 'after-hours', 'repeated-denials']:
        check(r in rules, 'rule %s did not fire: %r' % (r, rules))
    check(rules.count('after-hours') == 4, 'after-hours: %r' % rules)
    check(rules.count('repeated-denials') == 1, 'repeated denials: %r' % rules)
    e.stop()
    alerts = [r for r in e.records() if r['event'] == 'alert']
    check(len(alerts) == len(rules), 'alert records %d, hits %d' % (len(alerts), len(rules)))
    md, html = os.path.join(e.tmp, 'r.md'), os.path.join(e.tmp, 'r.html')
    run([PA, 'report', '--dir', e.log, '--from', '0', '--out-md', md, '--out-html', html])
    m, h = open(md).read(), open(html).read()
    check('| denials | 6 |' in m and '| emergency accesses | 1 |' in m, 'report counts:\n' + m)
    check('| attempts under expired grants | 1 |' in m and '| u:alice | 3 |' in m, 'report:\n' + m)
    check('| alerts | %d |' % len(alerts) in m, 'alerts in report')
    check('<svg' in h and '<script' not in h and 'http://' not in h.replace('http://www.w3.org/2000/svg', ''), 'html')
    rc, j = e.verify()
    check(rc == 0, 'verify: %r' % j)
finally:
    e.cleanup()
print('PASS')
