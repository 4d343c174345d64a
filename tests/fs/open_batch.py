#!/usr/bin/env python3
"""open_batch.py DIR FIRST LAST THREADS: open, read one byte from and close DIR/fNNNN for
every NNNN in FIRST..LAST-1, each once, from THREADS threads. One line per open, flushed at
once: "ok N" after the open returned a file descriptor (and the read succeeded), or
"fail N ERRNO-NAME". Exits 0 when all were attempted."""
import errno, os, sys, threading

d, first, last, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


def worker(k):
    for i in range(first + k, last, nthreads):
        try:
            fd = os.open(os.path.join(d, 'f%04d' % i), os.O_RDONLY)
        except OSError as e:
            say('fail %d %s' % (i, errno.errorcode.get(e.errno, str(e.errno))))
            continue
        # the open returned: from here on its record must be in the log
        say('ok %d' % i)
        try:
            os.read(fd, 1)
        except OSError:
            pass
        os.close(fd)


ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
