#!/usr/bin/python3
"""memscan.py PID WORD...: which of the words are in the process's memory (every readable
mapping below 1 GiB, read through /proc/PID/mem). Prints "found WORD" or "absent WORD";
exit status 0. The process should be stopped (SIGSTOP) while it is read."""
import sys

pid, words = int(sys.argv[1]), [w.encode() for w in sys.argv[2:]]
found = set()
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        f = line.split()
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        name = f[5] if len(f) > 5 else ""
        if "r" not in f[1] or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]") or hi - lo > (1 << 30):
            continue
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except OSError:
            continue
        for w in words:
            if w in data:
                found.add(w)
for w in words:
    print(("found " if w in found else "absent ") + w.decode())
