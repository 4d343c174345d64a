#!/usr/bin/env python3
"""linger_watch.py FILE SECONDS -- CMD...: run CMD while watching FILE (a store object) with
inotify; print how often it was opened and closed during CMD, then wait up to SECONDS for
it to be closed as often as it was opened (the mount's linger timer) and print
"opens=N closes_during=M closed_after=yes|no"."""
import ctypes, os, struct, subprocess, sys, time, select

IN_OPEN, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE = 0x20, 0x08, 0x10
libc = ctypes.CDLL(None, use_errno=True)
path, secs = sys.argv[1], float(sys.argv[2])
cmd = sys.argv[sys.argv.index('--') + 1:]
fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
if fd < 0 or libc.inotify_add_watch(fd, path.encode(), IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE) < 0:
    sys.exit('inotify: %s' % os.strerror(ctypes.get_errno()))
opens = closes = 0


def drain(timeout):
    global opens, closes
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return
    buf = os.read(fd, 65536)
    off = 0
    while off < len(buf):
        _, mask, _, ln = struct.unpack_from('iIII', buf, off)
        opens += bool(mask & IN_OPEN)
        closes += bool(mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE))
        off += 16 + ln


subprocess.run(cmd, check=True)
drain(0)
during = closes
end = time.monotonic() + secs
while closes < opens and time.monotonic() < end:
    drain(0.05)
print('opens=%d closes_during=%d closed_after=%s' % (opens, during, 'yes' if closes >= opens else 'no'))
