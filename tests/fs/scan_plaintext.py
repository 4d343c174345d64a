#!/usr/bin/env python3
"""scan_plaintext.py STORE_DIR MARKER [MARKER...]

Recursively scans every file name, symlink target and file content under
STORE_DIR for each MARKER (case-insensitive raw bytes, plus base64, hex,
UTF-16LE/BE encodings). Exit 1 listing hits, 0 if none, 2 on usage error.
"""
import base64, os, sys


def forms(marker):
    m = marker.encode()
    out = {"raw": m.lower()}
    out["hex"] = m.hex().encode()
    out["utf16le"] = marker.lower().encode("utf-16-le")
    out["utf16be"] = marker.lower().encode("utf-16-be")
    # base64 at the three alignments, for the marker as given / lower / upper;
    # keep only whole 4-char groups that depend on marker bytes alone, and only forms of
    # at least 8 characters: a 4-character form (3 marker bytes) turns up in random
    # ciphertext once per 4 GiB, which a test dumping a few hundred MiB hits a few
    # percent of the time (azure-fs did once: "UktF", base64 of "RKE" from "MARKER")
    for variant in {marker, marker.lower(), marker.upper()}:
        vb = variant.encode()
        for shift in range(3):
            pad = (3 - shift) % 3
            body = vb[pad:]
            body = body[: len(body) - len(body) % 3]
            b = base64.b64encode(body)
            if len(b) >= 8:
                out[f"base64@{shift}:{variant}"] = b
    return out


def scan(root, markers):
    pats = []
    for mk in markers:
        for kind, p in forms(mk).items():
            ci = not kind.startswith("base64")
            pats.append((mk, kind, p, ci))
    hits = []

    def check(where, data):
        low = data.lower()
        for mk, kind, p, ci in pats:
            if (p.lower() in low) if ci else (p in data):
                hits.append(f"{where}: marker {mk!r} ({kind})")

    CH = 1 << 20
    maxlen = max(len(p) for _, _, p, _ in pats)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            check(f"name {full}", os.fsencode(n))
            if os.path.islink(full):
                check(f"symlink-target {full}", os.fsencode(os.readlink(full)))
        for n in filenames:
            full = os.path.join(dirpath, n)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            try:
                with open(full, "rb") as f:
                    prev, off = b"", 0
                    while True:
                        c = f.read(CH)
                        if not c:
                            break
                        before = len(hits)
                        check(f"content {full} (near offset {off})", prev + c)
                        if len(hits) > before:
                            break
                        prev = c[-maxlen:]
                        off += len(c)
            except OSError as e:
                print(f"warning: cannot read {full}: {e}", file=sys.stderr)
    return hits


def main():
    if len(sys.argv) < 3 or not os.path.isdir(sys.argv[1]):
        print(__doc__, file=sys.stderr)
        return 2
    hits = scan(sys.argv[1], [m for m in sys.argv[2:] if m])
    for h in hits:
        print("FOUND", h)
    if hits:
        print(f"scan_plaintext: {len(hits)} plaintext hit(s)")
        return 1
    print("scan_plaintext: no markers found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
