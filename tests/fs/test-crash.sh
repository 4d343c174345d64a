#!/usr/bin/env bash
# test-crash: kill -9 phifs during heavy writes, remount, and check that every 4 KiB chunk
# of every file reads back either as a chunk some writer really wrote at that position, or
# as a clean EIO; never as anything else (zeros, stale garbage, another file's data).
. "$(dirname "$0")/lib.sh"
phi_setup p1
rounds=${PHI_CRASH_ROUNDS:-4}
for round in $(seq "$rounds"); do
	phi_mount
	python3 - "$MNT/p1" "$round" 2>/dev/null <<'PY' &
import hashlib, os, random, sys, struct
from multiprocessing import Process
d, rnd = sys.argv[1], int(sys.argv[2])
def chunk(name, idx, gen):
    head = struct.pack(">16sQQ", name.encode()[:16].ljust(16, b"\0"), idx, gen)
    body = hashlib.sha256(head).digest() * 126
    c = head + body[:4096 - len(head) - 32]
    return c + hashlib.sha256(c).digest()
def writer(w):
    r = random.Random(w * 1000 + rnd)
    gen = rnd * 1000000
    while True:
        name = f"f{w}-{r.randrange(6)}"
        p = os.path.join(d, name)
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        n = os.fstat(fd).st_size // 4096
        gen += 1
        k = r.randrange(n + 1) if n else 0
        cnt = r.randrange(1, 64)
        os.pwrite(fd, b"".join(chunk(name, k + i, gen) for i in range(cnt)), k * 4096)
        if r.random() < 0.1:
            os.ftruncate(fd, r.randrange(n + 1) * 4096)
        if r.random() < 0.05:
            os.fsync(fd)
        os.close(fd)
def churn(w):
    # new files and O_TRUNC reopens all the time: a kill must not catch one without its header
    r = random.Random(w * 1000 + rnd)
    gen = rnd * 1000000
    while True:
        name = f"f{w}-{r.randrange(200)}"
        fd = os.open(os.path.join(d, name), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        gen += 1
        os.write(fd, b"".join(chunk(name, i, gen) for i in range(r.randrange(0, 3))))
        os.close(fd)
ps = [Process(target=writer, args=(w,)) for w in range(3)] + [Process(target=churn, args=(3,))]
[p.start() for p in ps]
[p.join() for p in ps]
PY
	writers=$!
	sleep "${PHI_CRASH_SECONDS:-2}"
	kill -9 "$PHIFS_PID"
	wait "$PHIFS_PID" 2>/dev/null || true
	PHIFS_PID=
	kill -9 $writers 2>/dev/null || true
	pkill -9 -f "$MNT/p1" 2>/dev/null || true
	wait $writers 2>/dev/null || true
	umount -l "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
	sleep 0.2
	phi_mount
	python3 - "$MNT/p1" <<'PY' || fail "round $round: a file is neither whole nor a clean EIO after kill -9"
import errno, hashlib, os, struct, sys
d = sys.argv[1]
good = bad = eio = 0
for name in sorted(os.listdir(d)):
    try:
        # a crash must not leave a file that cannot even be opened (no header)
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
    except OSError as e:
        print(f"UNOPENABLE: {name}: {e.strerror}", file=sys.stderr)
        bad += 1
        continue
    size = os.fstat(fd).st_size
    for k in range((size + 4095) // 4096):
        try:
            c = os.pread(fd, 4096, k * 4096)
        except OSError as e:
            assert e.errno == errno.EIO, e
            eio += 1
            continue
        nm, idx, gen = struct.unpack(">16sQQ", c[:32])
        ok = (len(c) == 4096 and hashlib.sha256(c[:-32]).digest() == c[-32:]
              and nm.rstrip(b"\0") == name.encode()[:16] and idx == k)
        if ok:
            good += 1
        else:
            bad += 1
            print(f"WRONG: {name} chunk {k}", file=sys.stderr)
    os.close(fd)
print(f"chunks: {good} good, {eio} EIO, {bad} wrong")
sys.exit(1 if bad or good == 0 else 0)
PY
	phi_umount
done
ok "kill -9 during writes: every chunk whole or EIO ($rounds rounds)"
