#!/usr/bin/env python3
"""flip-bit.py FILE OFFSET: flip the low bit of the byte at OFFSET, in place. Tamper tests use
it instead of writing a fixed byte, which leaves the file as it was when that byte was
already there (once in 256 runs for ciphertext)."""
import sys

with open(sys.argv[1], 'r+b') as f:
    off = int(sys.argv[2])
    f.seek(off)
    b = f.read(1)
    if len(b) != 1:
        sys.exit('flip-bit: %s has no byte at %d' % (sys.argv[1], off))
    f.seek(off)
    f.write(bytes([b[0] ^ 1]))
