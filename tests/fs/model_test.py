#!/usr/bin/env python3
"""Differential model test for a mounted filesystem.

Applies the same seeded sequence of random filesystem operations to a tree
under --mnt (the filesystem under test) and a tree under --ref (a trusted
filesystem, e.g. a plain directory), checking that every operation gives the
same result (return value or errno, bytes read), and that the trees are
identical at every checkpoint, after each --remount-cmd and at the end.

Work happens in a subdirectory "model" of each root (wiped at start).
Exit 0 on match, 1 on the first difference (reported precisely), 2 on usage.
"""
import argparse, errno, hashlib, os, random, shutil, stat, subprocess, sys, threading, time

SUB = "model"


class Mismatch(Exception):
    pass


def res(fn, *a, **kw):
    """Run fn; return ('ok', value) or ('err', errno-name)."""
    try:
        return ("ok", fn(*a, **kw))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, str(e.errno)))


class Model:
    def __init__(self, args):
        self.a = os.path.join(os.path.abspath(args.mnt), SUB)
        self.b = os.path.join(os.path.abspath(args.ref), SUB)
        self.args = args
        self.rng = random.Random(args.seed)
        self.files, self.dirs, self.links = set(), {""}, set()
        self.fds = []          # (fdA, fdB, desc) open, possibly unlinked
        self.utimes = {}       # relpath -> mtime_ns set explicitly
        self.nops = 0
        self.counts = {}
        self.name_ctr = 0

    # ---------- helpers ----------
    def pa(self, rel):
        return os.path.join(self.a, rel) if rel else self.a

    def pb(self, rel):
        return os.path.join(self.b, rel) if rel else self.b

    def both(self, desc, fn):
        """fn(root_path_func) applied to both trees; results must match."""
        ra = res(fn, self.pa)
        rb = res(fn, self.pb)
        if ra != rb:
            raise Mismatch(f"op #{self.nops} {desc}: mnt -> {ra!r} ref -> {rb!r}")
        return ra

    def newname(self):
        self.name_ctr += 1
        return f"{self.rng.choice(['f', 'g', 'data', 'x'])}{self.name_ctr}"

    def pick(self, s):
        return self.rng.choice(sorted(s)) if s else None

    def newpath(self):
        d = self.pick(self.dirs)
        return os.path.join(d, self.newname()) if d else self.newname()

    def data(self, n):
        return self.rng.randbytes(n)

    def forget_utimes_files(self):
        self.utimes = {k: v for k, v in self.utimes.items() if k in self.dirs}

    def touch_parent(self, *rels):
        for r in rels:
            self.utimes.pop(os.path.dirname(r), None)

    def drop_prefix(self, rel):
        for s in (self.files, self.dirs, self.links):
            for p in [p for p in s if p == rel or p.startswith(rel + "/")]:
                s.discard(p)
        for p in [p for p in self.utimes if p == rel or p.startswith(rel + "/")]:
            del self.utimes[p]

    def move_prefix(self, old, new):
        for s in (self.files, self.dirs, self.links):
            for p in [p for p in s if p == old or p.startswith(old + "/")]:
                s.discard(p)
                s.add(new + p[len(old):])
        for p in [p for p in self.utimes if p == old or p.startswith(old + "/")]:
            self.utimes[new + p[len(old):]] = self.utimes.pop(p)

    # ---------- operations ----------
    def op_create(self):
        rel, d = self.newpath(), self.data(self.rng.choice([0, 1, 100, 4096, 5000, 70000]))

        def f(p):
            fd = os.open(p(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                return os.write(fd, d)
            finally:
                os.close(fd)
        if self.both(f"create {rel} len={len(d)}", f)[0] == "ok":
            self.files.add(rel)
        self.touch_parent(rel)

    def _size(self, rel):
        try:
            return os.stat(self.pb(rel)).st_size
        except OSError:
            return 0

    def op_write(self):
        rel = self.pick(self.files)
        if not rel:
            return self.op_create()
        sz = self._size(rel)
        r = self.rng.random()
        if r < 0.15:
            off = sz + self.rng.randint(1 << 20, 8 << 20)        # far beyond EOF: hole
        elif r < 0.4:
            off = self.rng.randint(0, sz + 65536)
        else:
            off = self.rng.randint(0, max(sz, 1))
        d = self.data(self.rng.choice([1, 17, 4095, 4096, 4097, 12288, 65536 + 3]))

        def f(p):
            fd = os.open(p(rel), os.O_WRONLY)
            try:
                return os.pwrite(fd, d, off)
            finally:
                os.close(fd)
        self.both(f"pwrite {rel} off={off} len={len(d)}", f)
        self.forget_utimes_files()

    def op_append(self):
        rel = self.pick(self.files)
        if not rel:
            return self.op_create()
        d = self.data(self.rng.randint(1, 9000))

        def f(p):
            fd = os.open(p(rel), os.O_WRONLY | os.O_APPEND)
            try:
                return os.write(fd, d)
            finally:
                os.close(fd)
        self.both(f"append {rel} len={len(d)}", f)
        self.forget_utimes_files()

    def op_truncate(self):
        rel = self.pick(self.files)
        if not rel:
            return self.op_create()
        sz = self._size(rel)
        n = self.rng.choice([0, sz // 2, max(sz - 1, 0), sz + 1, sz + 4096 * self.rng.randint(1, 300),
                             self.rng.randint(0, sz + 100000)])
        self.both(f"truncate {rel} to {n} (was {sz})", lambda p: os.truncate(p(rel), n))
        self.forget_utimes_files()

    def op_read(self):
        rel = self.pick(self.files)
        if not rel:
            return
        sz = self._size(rel)
        off = self.rng.choice([0, self.rng.randint(0, sz + 10), max(sz - 3, 0), sz + 5000])
        n = self.rng.choice([1, 100, 4096, 10000, 1 << 20])

        def f(p):
            fd = os.open(p(rel), os.O_RDONLY)
            try:
                return hashlib.sha256(os.pread(fd, n, off)).hexdigest()
            finally:
                os.close(fd)
        self.both(f"pread {rel} off={off} len={n}", f)

    def op_mkdir(self):
        rel = self.newpath()
        if self.rng.random() < 0.1 and len(self.dirs) > 1:
            rel = self.pick(self.dirs - {""})             # EEXIST case
        if self.both(f"mkdir {rel}", lambda p: os.mkdir(p(rel), 0o755))[0] == "ok":
            self.dirs.add(rel)
            self.touch_parent(rel)

    def op_rmdir(self):
        rel = self.pick(self.dirs - {""})
        if not rel:
            return
        if self.both(f"rmdir {rel}", lambda p: os.rmdir(p(rel)))[0] == "ok":
            self.drop_prefix(rel)
            self.touch_parent(rel)

    def op_unlink(self):
        rel = self.pick(self.files | self.links)
        if not rel:
            return
        if self.both(f"unlink {rel}", lambda p: os.unlink(p(rel)))[0] == "ok":
            self.files.discard(rel)
            self.links.discard(rel)
            self.utimes.pop(rel, None)
            self.touch_parent(rel)

    def op_unlink_open(self):
        rel = self.pick(self.files)
        if not rel:
            return
        fa = os.open(self.pa(rel), os.O_RDWR)
        fb = os.open(self.pb(rel), os.O_RDWR)
        self.fds.append((fa, fb, rel))
        if self.both(f"unlink-while-open {rel}", lambda p: os.unlink(p(rel)))[0] == "ok":
            self.files.discard(rel)
            self.utimes.pop(rel, None)
            self.touch_parent(rel)
        self.op_fdio()

    def op_fdio(self):
        if not self.fds:
            return
        i = self.rng.randrange(len(self.fds))
        fa, fb, rel = self.fds[i]
        r = self.rng.random()
        if r < 0.4:
            off, d = self.rng.randint(0, 200000), self.data(self.rng.randint(1, 10000))
            ra, rb = res(os.pwrite, fa, d, off), res(os.pwrite, fb, d, off)
            desc = f"fd-pwrite ({rel}) off={off} len={len(d)}"
            self.forget_utimes_files()
        elif r < 0.8:
            off, n = self.rng.randint(0, 200000), self.rng.randint(1, 70000)
            ra, rb = res(os.pread, fa, n, off), res(os.pread, fb, n, off)
            desc = f"fd-pread ({rel}) off={off} len={n}"
        elif r < 0.9:
            ra = res(lambda: os.fstat(fa).st_size)
            rb = res(lambda: os.fstat(fb).st_size)
            desc = f"fd-fstat-size ({rel})"
        else:
            ra, rb = res(os.fsync, fa), res(os.fsync, fb)
            res(os.close, fa); res(os.close, fb)
            del self.fds[i]
            desc = f"fd-fsync+close ({rel})"
        if ra != rb:
            raise Mismatch(f"op #{self.nops} {desc}: mnt -> {ra!r:.200} ref -> {rb!r:.200}")

    def op_rename(self):
        src = self.pick(self.files | self.links | (self.dirs - {""} if self.rng.random() < 0.2 else set()))
        if not src:
            return
        r = self.rng.random()
        if r < 0.4 and (self.files | self.links):
            dst = self.pick((self.files | self.links) - {src}) or self.newpath()   # over existing
        else:
            dst = self.newpath()
        isdir = src in self.dirs
        try:   # POSIX: renaming one hard link onto another of the same inode is a no-op
            same = os.path.samefile(self.pb(src), self.pb(dst)) and not os.path.islink(self.pb(src))
        except OSError:
            same = False
        if self.both(f"rename {src} -> {dst}", lambda p: os.rename(p(src), p(dst)))[0] == "ok" and not same:
            if isdir:
                self.drop_prefix(dst)
                self.move_prefix(src, dst)
            else:
                kind = self.files if src in self.files else self.links
                self.files.discard(dst); self.links.discard(dst)
                self.utimes.pop(dst, None)
                kind.discard(src); kind.add(dst)
                if src in self.utimes:
                    self.utimes[dst] = self.utimes.pop(src)
            self.touch_parent(src, dst)

    def op_symlink(self):
        rel = self.newpath()
        tgt = self.rng.choice([self.pick(self.files) or "nowhere", "../x/y", "nonexistent-" + str(self.name_ctr),
                               "a" * self.rng.randint(1, 300)])
        if self.both(f"symlink {rel} -> {tgt[:40]}", lambda p: os.symlink(tgt, p(rel)))[0] == "ok":
            self.links.add(rel)
            self.touch_parent(rel)
        self.both(f"readlink {rel}", lambda p: os.readlink(p(rel)))

    def op_link(self):
        src = self.pick(self.files)
        if not src:
            return
        dst = self.newpath()
        if self.both(f"link {src} -> {dst}", lambda p: os.link(p(src), p(dst)))[0] == "ok":
            self.files.add(dst)
            self.touch_parent(dst)

    def op_chmod(self):
        rel = self.pick(self.files | self.dirs - {""})
        if not rel:
            return
        m = (0o700 if rel in self.dirs else 0o600) | self.rng.choice([0, 0o44, 0o55, 0o77, 0o1000 if rel in self.dirs else 0o11])
        self.both(f"chmod {rel} {oct(m)}", lambda p: os.chmod(p(rel), m))

    def op_utime(self):
        rel = self.pick(self.files | self.dirs)
        if rel is None:
            return
        at = self.rng.randint(10**9, 2 * 10**9) * 10**9 + self.rng.choice([0, 123456789])
        mt = self.rng.randint(10**9, 2 * 10**9) * 10**9 + self.rng.choice([0, 500000000, 987654321])
        if self.both(f"utime {rel} mtime_ns={mt}", lambda p: os.utime(p(rel), ns=(at, mt)))[0] == "ok":
            self.utimes[rel] = mt

    def op_stat_missing(self):
        rel = os.path.join(self.pick(self.dirs), "missing-" + str(self.rng.randint(0, 9)))
        self.both(f"stat {rel}", lambda p: os.stat(p(rel)).st_size)

    OPS = [("create", 12), ("write", 18), ("append", 6), ("truncate", 7), ("read", 12), ("mkdir", 5),
           ("rmdir", 3), ("unlink", 5), ("unlink_open", 2), ("fdio", 4), ("rename", 8), ("symlink", 3),
           ("link", 3), ("chmod", 3), ("utime", 3), ("stat_missing", 1)]

    def step(self):
        names = [n for n, _ in self.OPS]
        weights = [0 if (n == "unlink_open" and self.args.no_unlink_open) or
                   (n == "link" and self.args.no_link) else w for n, w in self.OPS]
        name = self.rng.choices(names, weights=weights)[0]
        self.nops += 1
        self.counts[name] = self.counts.get(name, 0) + 1
        getattr(self, "op_" + name)()

    # ---------- tree comparison ----------
    def snapshot(self, root):
        out = {}
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for n in sorted(dns + fns):
                if self.args.allow_fuse_hidden and n.startswith(".fuse_hidden"):
                    continue
                full = os.path.join(dp, n)
                rel = os.path.relpath(full, root)
                st = os.lstat(full)
                e = {"type": stat.S_IFMT(st.st_mode)}
                if not stat.S_ISLNK(st.st_mode):
                    e["mode"] = oct(stat.S_IMODE(st.st_mode))
                if stat.S_ISREG(st.st_mode):
                    e["size"] = st.st_size
                    e["nlink"] = st.st_nlink
                    h = hashlib.sha256()
                    with open(full, "rb") as f:
                        for c in iter(lambda: f.read(1 << 20), b""):
                            h.update(c)
                    e["sha256"] = h.hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    e["target"] = os.readlink(full)
                    e["size"] = st.st_size
                if rel in self.utimes:
                    e["mtime_ns"] = st.st_mtime_ns
                out[rel] = e
        return out

    def first_byte_diff(self, rel):
        with open(os.path.join(self.a, rel), "rb") as fa, open(os.path.join(self.b, rel), "rb") as fb:
            off = 0
            while True:
                x, y = fa.read(65536), fb.read(65536)
                if x != y:
                    for i in range(min(len(x), len(y))):
                        if x[i] != y[i]:
                            return f"first differing byte at offset {off + i}: mnt {x[i]:#04x} ref {y[i]:#04x}"
                    return f"one side ends at offset {off + min(len(x), len(y))}"
                if not x:
                    return "no byte difference found on re-read (transient?)"
                off += len(x)

    def compare(self, where):
        sa, sb = self.snapshot(self.a), self.snapshot(self.b)
        for rel in sorted(set(sa) | set(sb)):
            if rel not in sa:
                raise Mismatch(f"[{where}] {rel}: present in ref, missing in mnt ({sb[rel]})")
            if rel not in sb:
                raise Mismatch(f"[{where}] {rel}: present in mnt, missing in ref ({sa[rel]})")
            ea, eb = sa[rel], sb[rel]
            for k in ("type", "mode", "size", "target", "nlink", "sha256", "mtime_ns"):
                if (k == "nlink" and self.args.allow_fuse_hidden and ea.get(k) is not None
                        and ea[k] > eb[k]):
                    continue   # a .fuse_hidden rename of an open unlinked name still counts
                if ea.get(k) != eb.get(k):
                    extra = ""
                    if k == "sha256":
                        extra = "; " + self.first_byte_diff(rel)
                    raise Mismatch(f"[{where}] {rel}: {k} differs: mnt {ea.get(k)!r} ref {eb.get(k)!r}{extra}")
            if "mtime_ns" in eb and eb["mtime_ns"] != self.utimes[rel]:
                raise Mismatch(f"[{where}] {rel}: mtime {eb['mtime_ns']} != utime-set {self.utimes[rel]}")
        # the model must agree with the reference tree
        want = self.files | self.links | (self.dirs - {""})
        if set(sb) != want:
            raise Mismatch(f"[{where}] internal model drift: {sorted(set(sb) ^ want)[:5]}")
        return len(sa)

    # ---------- concurrent phase ----------
    def concurrent(self, nthreads):
        rng = random.Random(self.args.seed * 7919 + 1)
        shared = "conc-shared"
        blocks_per = 64
        B = 4096
        plans = []
        for t in range(nthreads):
            r = random.Random(rng.random())
            blocks = list(range(t * blocks_per, (t + 1) * blocks_per))
            r.shuffle(blocks)
            plans.append([(b * B, r.randbytes(B)) for b in blocks] )
        expected = {off: d for plan in plans for off, d in plan}
        own = [[random.Random(t * 31 + self.args.seed).randbytes(3000) for _ in range(40)] for t in range(nthreads)]
        for root in (self.a, self.b):
            fd = os.open(os.path.join(root, shared), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
            os.close(fd)
        self.files.add(shared)
        # reference: sequential
        fd = os.open(os.path.join(self.b, shared), os.O_WRONLY)
        for plan in plans:
            for off, d in plan:
                os.pwrite(fd, d, off)
        os.close(fd)
        for t in range(nthreads):
            with open(os.path.join(self.b, f"conc-own{t}"), "wb") as f:
                for c in own[t]:
                    f.write(c)
            self.files.add(f"conc-own{t}")
        errors = []
        stop = threading.Event()
        zero = bytes(B)

        def writer(t):
            try:
                fd = os.open(os.path.join(self.a, shared), os.O_WRONLY)
                for off, d in plans[t]:
                    if os.pwrite(fd, d, off) != len(d):
                        errors.append(f"writer {t}: short write at {off}")
                os.fsync(fd)
                os.close(fd)
                with open(os.path.join(self.a, f"conc-own{t}"), "wb") as f:
                    for c in own[t]:
                        f.write(c)
                    f.flush(); os.fsync(f.fileno())
            except OSError as e:
                errors.append(f"writer {t}: {e}")

        def reader(t):
            r = random.Random(t)
            try:
                fd = os.open(os.path.join(self.a, shared), os.O_RDONLY)
                while not stop.is_set():
                    blk = r.randrange(nthreads * blocks_per)
                    got = os.pread(fd, B, blk * B)
                    exp = expected[blk * B]
                    # A buffered read may overlap a write of the same page and see part of it:
                    # the kernel copies into and out of an up-to-date page cache page without a
                    # common lock, on ext4 as on FUSE (docs/posix.md). What must never appear is
                    # a byte that is neither the hole's zero nor the final data at that offset.
                    if (got and got != zero[:len(got)] and got != exp[:len(got)]
                            and any(g and g != e for g, e in zip(got, exp))):
                        errors.append(f"reader {t}: block {blk} holds bytes that are neither zeros nor final data")
                        break
                os.close(fd)
            except OSError as e:
                errors.append(f"reader {t}: {e}")

        ws = [threading.Thread(target=writer, args=(t,)) for t in range(nthreads)]
        rs = [threading.Thread(target=reader, args=(t,)) for t in range(max(1, nthreads // 2))]
        for th in rs + ws:
            th.start()
        for th in ws:
            th.join()
        stop.set()
        for th in rs:
            th.join()
        if errors:
            raise Mismatch("concurrent phase: " + "; ".join(errors[:5]))
        self.forget_utimes_files()
        self.touch_parent(shared)

    # ---------- remount ----------
    def close_fds(self):
        for fa, fb, _ in self.fds:
            os.close(fa); os.close(fb)
        self.fds.clear()

    def remount(self):
        self.close_fds()
        r = subprocess.run(self.args.remount_cmd, shell=True)
        if r.returncode != 0:
            raise Mismatch(f"remount command failed with rc={r.returncode}")
        for _ in range(50):
            if os.path.isdir(self.a):
                break
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnt", required=True, help="directory on the filesystem under test")
    ap.add_argument("--ref", required=True, help="reference directory (plain fs)")
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=200, help="full tree compare every K ops")
    ap.add_argument("--remount-cmd", default=None, help="shell command that unmounts+remounts --mnt's fs")
    ap.add_argument("--remount-every", type=int, default=3, help="remount every Nth checkpoint")
    ap.add_argument("--threads", type=int, default=4, help="writer threads in the concurrent phase (0: skip)")
    ap.add_argument("--allow-fuse-hidden", action="store_true",
                    help="ignore libfuse .fuse_hidden* entries (for passthrough fs like bindfs; NOT for phifs)")
    ap.add_argument("--no-unlink-open", action="store_true",
                    help="skip unlink-of-open-file ops (libfuse high-level passthroughs like bindfs leave "
                         ".fuse_hidden files; NOT for phifs)")
    ap.add_argument("--no-link", action="store_true",
                    help="skip hard links (stores without them, e.g. the Azure backend: link gives EPERM)")
    ap.add_argument("--self-test", action="store_true",
                    help="inject a mismatch into the ref tree and require that it is detected")
    args = ap.parse_args()
    for d in (args.mnt, args.ref):
        if not os.path.isdir(d):
            print(f"model_test: not a directory: {d}", file=sys.stderr)
            return 2
    if os.path.realpath(args.mnt) == os.path.realpath(args.ref):
        print("model_test: --mnt and --ref must differ", file=sys.stderr)
        return 2
    m = Model(args)
    for root in (m.a, m.b):
        shutil.rmtree(root, ignore_errors=True)
        os.mkdir(root, 0o755)
    os.chmod(m.a, 0o755); os.chmod(m.b, 0o755)
    t0 = time.time()
    checks = remounts = 0
    try:
        for i in range(1, args.ops + 1):
            m.step()
            if i % args.check_every == 0 or i == args.ops:
                m.compare(f"checkpoint after op #{i}")
                checks += 1
                if args.remount_cmd and checks % args.remount_every == 0:
                    m.remount()
                    remounts += 1
                    m.compare(f"after remount #{remounts} (op #{i})")
        if args.threads > 0:
            m.concurrent(args.threads)
            m.compare("after concurrent phase")
        m.close_fds()
        if args.remount_cmd:
            m.remount()
            remounts += 1
            m.compare("after final remount")
        n = m.compare("final")
        checks += 1
    except OSError as e:
        print(f"model_test: MISMATCH (seed={args.seed}): op #{m.nops}: unexpected error outside a compared call: {e!r}")
        return 1
    except Mismatch as e:
        if args.self_test:
            print(f"model_test: SELF-TEST UNEXPECTED mismatch before injection: {e}")
            return 1
        print(f"model_test: MISMATCH (seed={args.seed}): {e}")
        return 1
    if args.self_test:
        return self_test(m)
    ops = " ".join(f"{k}={v}" for k, v in sorted(m.counts.items()))
    print(f"model_test: OK seed={args.seed} ops={args.ops} checks={checks} remounts={remounts} "
          f"threads={args.threads} entries={n} time={time.time() - t0:.1f}s")
    print(f"  ops: {ops}")
    return 0


def self_test(m):
    """Inject several different corruptions into the ref tree; each must be detected."""
    failures = 0
    victims = sorted(p for p in m.files if os.path.getsize(m.pb(p)) > 0)
    if not victims:
        print("model_test: self-test needs a non-empty file; use more --ops")
        return 1
    v = victims[0]
    injections = []

    def flip_byte():
        with open(m.pb(v), "r+b") as f:
            f.seek(os.path.getsize(m.pb(v)) // 2)
            c = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([c[0] ^ 0x01]))
        return lambda: flip_byte_undo()

    def flip_byte_undo():
        flip_byte()
    injections.append(("flip one byte in " + v, flip_byte))

    def chmod_it():
        old = stat.S_IMODE(os.stat(m.pb(v)).st_mode)
        os.chmod(m.pb(v), old ^ 0o004)
        return lambda: os.chmod(m.pb(v), old)
    injections.append(("chmod " + v, chmod_it))

    def extra_file():
        p = m.pb("self-test-extra")
        open(p, "w").close()
        return lambda: os.unlink(p)
    injections.append(("extra file in ref", extra_file))

    for desc, inj in injections:
        undo = inj()
        try:
            m.compare("self-test")
            print(f"model_test: SELF-TEST FAILED: injected '{desc}' was NOT detected")
            failures += 1
        except Mismatch as e:
            print(f"model_test: self-test: injected '{desc}' detected: {e}")
        undo()
    # and one operation-level mismatch: a read that sees different data
    try:
        m.both("self-test read", lambda p: open(p(v), "rb").read() if p == m.pb else b"bogus")
        print("model_test: SELF-TEST FAILED: op-level mismatch NOT detected")
        failures += 1
    except Mismatch as e:
        print(f"model_test: self-test: op-level mismatch detected: {str(e)[:120]}")
    try:
        m.compare("after self-test undo")
    except Mismatch as e:
        print(f"model_test: SELF-TEST FAILED: trees differ after undo: {e}")
        failures += 1
    print("model_test: SELF-TEST " + ("PASSED" if not failures else "FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
