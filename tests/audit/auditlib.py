"""Helpers for the audit integration tests: a scratch log with its own key, the writer as a
subprocess, the load client, and segment frame editing."""
import json, os, shutil, signal, socket, struct, subprocess, sys, tempfile, time, hashlib, base64

AUDITD = os.environ.get('AUDITD')
PA = os.environ.get('PHIFS_AUDIT')
LOAD = os.environ.get('AUDIT_LOAD')


def fail(msg):
    print('FAIL:', msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Env:
    def __init__(self, keydir=None):
        if not (AUDITD and PA and LOAD):
            print('AUDITD/PHIFS_AUDIT/AUDIT_LOAD not set')
            sys.exit(77)
        self.tmp = tempfile.mkdtemp(prefix='phi-audit-test-')
        self.keys = keydir or os.path.join(self.tmp, 'k')
        self.log = os.path.join(self.tmp, 'log')
        self.exp = os.path.join(self.tmp, 'exp')
        self.sock = os.path.join(self.tmp, 'sock')
        os.makedirs(self.exp)
        if not keydir:
            os.makedirs(self.keys)
            run([PA, 'keygen', '--out', self.keys, '--name', 'phi-audit/test'])
        self.pub = os.path.join(self.keys, 'phifs-audit.pub')
        self.proc = None

    def start(self, *extra):
        self.proc = subprocess.Popen([AUDITD, '--dir', self.log, '--export-dir', self.exp,
                                      '--socket', self.sock, '--signing-key',
                                      os.path.join(self.keys, 'phifs-audit-signing-key')] + list(extra))
        for _ in range(1000):  # wait until it accepts connections (not a timing assertion)
            check(self.proc.poll() is None, 'phifs-auditd exited at start')
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(self.sock)
                s.close()
                return
            except OSError:
                time.sleep(0.01)
        fail('phifs-auditd did not start')

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        check(self.proc.wait(60) == 0, 'phifs-auditd did not stop cleanly')

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def verify(self, log=None, exp=None, pub=None, extra=()):
        p = subprocess.run([PA, 'verify', '--dir', log or self.log, '--export-dir', exp or self.exp,
                            '--pubkey', pub or self.pub, '--json'] + list(extra),
                           stdout=subprocess.PIPE, text=True)
        return p.returncode, json.loads(p.stdout)

    def load(self, threads, per, deadline=2000, tag='t'):
        p = subprocess.run([LOAD, self.sock, str(threads), str(per), str(deadline), tag],
                           stdout=subprocess.PIPE, text=True, check=True)
        return parse_load(p.stdout)

    def records(self, log=None):
        p = subprocess.run([PA, 'query', '--dir', log or self.log, '--format', 'json'],
                           stdout=subprocess.PIPE, text=True, check=True)
        return [json.loads(l) for l in p.stdout.splitlines()]

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def kill_after(e, p, n, what='load'):
    """kill -9 the writer once load process p has printed n answers (a good part of its
    stream acknowledged); return everything p printed"""
    lines = []
    while len(lines) < n:
        l = p.stdout.readline()
        check(l, '%s ended early' % what)
        lines.append(l)
    e.kill9()
    rest = p.stdout.read()  # not communicate(timeout=): it would skip what readline buffered
    p.wait(60)
    return ''.join(lines) + rest


def parse_load(out):
    ok, bad = {}, []
    for l in out.splitlines():
        f = l.split()
        if f[0] == 'ok':
            ok[f[2]] = int(f[1])
        else:
            bad.append((int(f[1]), f[2]))
    return ok, bad


def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def read_frames(path):
    data = open(path, 'rb').read()
    out, off = [], 0
    while off + 4 <= len(data):
        n = struct.unpack('>I', data[off:off + 4])[0]
        if off + 4 + n + 1 > len(data) or data[off + 4 + n:off + 5 + n] != b'\n':
            break
        out.append(data[off + 4:off + 4 + n])
        off += n + 5
    return out, data[off:]


def write_frames(path, frames, tail=b''):
    with open(path, 'wb') as f:
        for fr in frames:
            f.write(struct.pack('>I', len(fr)) + fr + b'\n')
        f.write(tail)


def rechain(frames, first_prev=b'\0' * 32, renumber=False):
    """What an attacker without the key can do: recompute every prev link, and optionally
    renumber seq (frames[0] is the segment header)."""
    out, head = [frames[0]], first_prev
    for i, fr in enumerate(frames[1:]):
        rec = json.loads(fr)
        if renumber:
            rec['seq'] = i + 1
        rec['prev'] = base64.b64encode(head).decode()
        b = json.dumps(rec, separators=(',', ':')).encode()
        leaf = hashlib.sha256(b'\0' + b).digest()
        head = hashlib.sha256(b'phi-audit/v1/chain' + head + struct.pack('>Q', rec['seq']) + leaf).digest()
        out.append(b)
    return out
