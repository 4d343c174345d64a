#!/usr/bin/env python3
"""manyfiles.py write|sums DIR DIRS FILES [THREADS]

write: creates DIRS directories of FILES small files under DIR (MANYMARK-dNNN/MANYMARK-fNNN),
       each 200 bytes to 4 KiB of content derived from its name, written with plain
       write() and close(), no fsync (what a service does); THREADS writers (default 4)
       take whole directories. Prints "sha256  path" of what it wrote, sorted.
sums:  prints "sha256  path" of every regular file under DIR, sorted, and to stderr how
       many are empty; exits 1 if a directory holds anything but the expected names.
Used by tests/azure/test-many.sh.
"""
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def content(rel):
    """200..4095 bytes, distinct per name: a marker line, then bytes from the name."""
    h = hashlib.sha256(rel.encode()).digest()
    size = 200 + int.from_bytes(h[:4], "big") % 3896
    head = f"MANYMARK-CONTENT {rel}\n".encode()
    return (head + hashlib.shake_256(h).digest(size))[:size]


def names(dirs, files):
    return [(f"MANYMARK-d{i:03d}", [f"MANYMARK-f{j:03d}.txt" for j in range(files)])
            for i in range(dirs)]


def write_dir(root, d, fs):
    os.mkdir(f"{root}/{d}")
    out = []
    for f in fs:
        rel = f"{d}/{f}"
        data = content(rel)
        fd = os.open(f"{root}/{rel}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        out.append(f"{hashlib.sha256(data).hexdigest()}  {rel}")
    return out


def main():
    cmd, root, dirs, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    plan = names(dirs, files)
    if cmd == "write":
        with ThreadPoolExecutor(threads) as ex:
            lines = [ln for part in ex.map(lambda p: write_dir(root, *p), plan) for ln in part]
        print("\n".join(sorted(lines)))
        return 0
    if cmd == "sums":
        want = {d: sorted(fs) for d, fs in plan}
        have = sorted(os.listdir(root))
        bad = 0
        if have != sorted(want):
            print(f"directories: {len(have)}, want {len(want)}", file=sys.stderr)
            bad = 1
        lines, empty = [], 0

        def sums(d):
            try:
                got = sorted(os.listdir(f"{root}/{d}"))
            except OSError:
                return d, None, [], 0
            out, n0 = [], 0
            for f in got:
                with open(f"{root}/{d}/{f}", "rb") as fh:
                    data = fh.read()
                n0 += not data
                out.append(f"{hashlib.sha256(data).hexdigest()}  {d}/{f}")
            return d, got, out, n0

        with ThreadPoolExecutor(threads) as ex:
            for d, got, out, n0 in ex.map(sums, sorted(want)):
                if got != want[d]:
                    print(f"{d}: {len(got or [])} entries, want {len(want[d])}", file=sys.stderr)
                    bad = 1
                lines += out
                empty += n0
        print("\n".join(sorted(lines)))
        print(f"{len(lines)} files, {empty} empty", file=sys.stderr)
        return bad
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
