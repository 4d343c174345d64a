#!/usr/bin/env python3
"""faultproxy.py --upstream URL --port-file FILE [--log FILE]

A loopback HTTP/1.1 proxy in front of Azurite that injects faults (tests/azure/test-proxy.sh).
It listens on 127.0.0.1 on a free port (written to --port-file once listening) and forwards
every request to --upstream over one upstream connection per client connection, so a
client's keep-alive connection carries many requests (libcurl reuses its connections).
Bodies: Content-Length or chunked, in both directions; a response without either runs to
the close of the upstream connection.

The proxy answers requests under /__faultproxy/ itself (the control interface):

  /__faultproxy/set?mode=M[&n=N][&every=K][&ms=D][&at=request|response|any][&method=X][&cond=1]
      pass    forward everything (the default)
      503     answer 503 Server Busy (Azure's XML error body, x-ms-error-code: ServerBusy)
              to every K-th request (default 1: all) until N (default 1) were answered so,
              then pass; the request is not forwarded
      reset   reset the connection (RST) on every K-th request, N times, then pass:
              at=request  after the request's headers and half its body, not forwarded
              at=response after forwarding, with half the response sent
              at=any      alternately (the default)
      delay   hold every response D ms (default 1000) before sending it, N requests
              (default: all)
      fail    503 to every request, until the mode changes
      hang    read requests and never answer them, until the mode changes
      method=X: the mode acts on requests of that method only (every K-th of them); the
      others pass. cond=1: only on requests with If-Match or If-None-Match
  /__faultproxy/stats
      counters as JSON: requests (forwarded or injected, control excluded), passed, 503,
      resets, delayed, hung, conns, max_per_conn (most requests seen on one connection),
      reset_cond_put (resets after forwarding a PUT with If-Match or If-None-Match: the
      service applied it, its answer was lost),
      retried (injected requests whose method and URL came again afterwards: the client
      retried them), unretried (injected requests not seen again yet), mode
  /__faultproxy/zero
      zero the counters

Every control answer is a JSON object. Standard library only.
"""
import argparse
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter
from email.utils import formatdate

MAX_HDR = 64 * 1024
BUSY_BODY = (
    '\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    "<Message>The server is currently unable to receive requests. Please retry your "
    "request.\nRequestId:{rid}\nTime:{time}</Message></Error>"
)


class State:
    """The mode and the counters, shared by the connection threads (one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = {"mode": "pass"}
        self.seq = 0  # requests seen since the mode was set
        self.done = 0  # injections made since the mode was set
        self.zero()

    def zero(self):
        self.c = Counter()
        self.max_per_conn = 0
        self.pending = Counter()  # injected (method, url) not seen again

    def set(self, q):
        mode = q.get("mode", "pass")
        if mode not in ("pass", "503", "reset", "delay", "fail", "hang"):
            raise ValueError("unknown mode")
        m = {"mode": mode}
        for k in ("n", "every", "ms"):
            if k in q:
                m[k] = int(q[k])
        if "method" in q:
            m["method"] = q["method"]
        m["cond"] = q.get("cond") == "1"
        m["at"] = q.get("at", "any")
        if m["at"] not in ("request", "response", "any"):
            raise ValueError("bad at")
        with self.lock:
            self.mode, self.seq, self.done = m, 0, 0
        return m

    def decide(self, key, cond):
        """What to do with one request: ('pass'|'503'|'reset-request'|'reset-response'|
        'delay'|'hang', ms)."""
        with self.lock:
            self.c["requests"] += 1
            # a request seen again after an injection: the client retried it
            if key in self.pending:
                self.c["retried"] += self.pending.pop(key)
            m = self.mode
            mode = m["mode"]
            act, ms = "pass", 0
            if m.get("method", key[0]) != key[0] or (m.get("cond") and not cond):
                mode = "pass"  # not a request this mode acts on
            else:
                self.seq += 1
            if mode == "fail":
                act = "503"
            elif mode == "hang":
                act = "hang"
            elif mode in ("503", "reset"):
                n, every = m.get("n", 1), max(1, m.get("every", 1))
                if self.done < n and self.seq % every == 0:
                    self.done += 1
                    if mode == "503":
                        act = "503"
                    else:
                        at = m["at"]
                        if at == "any":
                            at = "request" if self.done % 2 else "response"
                        act = "reset-" + at
            elif mode == "delay":
                n = m.get("n")
                if n is None or self.done < n:
                    self.done += 1
                    act, ms = "delay", m.get("ms", 1000)
            if act in ("503", "reset-request", "reset-response", "hang"):
                self.pending[key] += 1
            self.c[{"503": "503", "reset-request": "resets", "reset-response": "resets",
                    "delay": "delayed", "hang": "hung", "pass": "passed"}[act]] += 1
            return act, ms

    def bump(self, name):
        with self.lock:
            self.c[name] += 1

    def conn_requests(self, n):
        with self.lock:
            self.max_per_conn = max(self.max_per_conn, n)

    def stats(self):
        with self.lock:
            d = {k: self.c[k] for k in ("requests", "passed", "503", "resets", "delayed",
                                        "hung", "conns", "retried", "reset_cond_put")}
            d["unretried"] = sum(self.pending.values())
            d["max_per_conn"] = self.max_per_conn
            d["mode"] = self.mode
            return d


class Closed(Exception):
    pass


def read_head(f):
    """The start line and headers up to the blank line, as raw bytes, and the parsed
    (start line, [(name lower, value)]). Closed at a clean EOF before any byte."""
    raw = b""
    while True:
        line = f.readline(MAX_HDR + 1)
        if not line:
            if raw:
                raise ConnectionError("EOF inside headers")
            raise Closed()
        raw += line
        if len(raw) > MAX_HDR:
            raise ConnectionError("headers too long")
        if line in (b"\r\n", b"\n"):
            if raw == line:  # tolerate stray blank lines between messages
                raw = b""
                continue
            break
    lines = raw.decode("latin-1").split("\r\n")
    start, hdrs = lines[0], []
    for ln in lines[1:]:
        if ln and ":" in ln:
            k, v = ln.split(":", 1)
            hdrs.append((k.strip().lower(), v.strip()))
    return raw, start, hdrs


def hdr(hdrs, name):
    for k, v in hdrs:
        if k == name:
            return v
    return None


def read_exact(f, n):
    out = f.read(n)
    if len(out) != n:
        raise ConnectionError("EOF inside a body")
    return out


def read_body(f, hdrs, to_eof=False):
    """The body, raw as it was framed (chunked bodies keep their chunk framing)."""
    te = (hdr(hdrs, "transfer-encoding") or "").lower()
    if "chunked" in te:
        out = b""
        while True:
            line = f.readline(MAX_HDR)
            if not line:
                raise ConnectionError("EOF inside chunks")
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the blank line
                    t = f.readline(MAX_HDR)
                    if not t:
                        raise ConnectionError("EOF inside trailers")
                    out += t
                    if t in (b"\r\n", b"\n"):
                        return out
            out += read_exact(f, size + 2)
    cl = hdr(hdrs, "content-length")
    if cl is not None:
        return read_exact(f, int(cl))
    return f.read() if to_eof else b""


def rst_close(sock):
    """Close with a TCP reset, as a crashed server or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def control(state, target):
    u = urllib.parse.urlsplit(target)
    q = dict(urllib.parse.parse_qsl(u.query))
    what = u.path[len("/__faultproxy/"):]
    try:
        if what == "set":
            out = {"ok": True, "mode": state.set(q)}
        elif what == "stats":
            out = state.stats()
        elif what == "zero":
            with state.lock:
                state.zero()
            out = {"ok": True}
        else:
            return 404, {"error": "unknown control"}
    except ValueError as e:
        return 400, {"error": str(e)}
    return 200, out


def respond(sock, status, reason, headers, body, head_only=False):
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock.sendall(data if head_only else data + body)


def busy(sock, head_only):
    rid = os.urandom(16).hex()
    body = BUSY_BODY.format(rid=rid, time=time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z",
                                                        time.gmtime())).encode("utf-8")
    respond(sock, 503, "Server Busy", [
        ("Content-Type", "application/xml"),
        ("Server", "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"),
        ("x-ms-request-id", rid),
        ("x-ms-version", "2021-12-02"),
        ("x-ms-error-code", "ServerBusy"),
        ("Date", formatdate(usegmt=True)),
    ], body, head_only)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        st, up_host, up_port = self.server.state, self.server.up_host, self.server.up_port
        client = self.request
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cf = client.makefile("rb")
        up = uf = None
        with st.lock:
            st.c["conns"] += 1
        nreq = 0
        try:
            while True:
                try:
                    raw, start, hdrs = read_head(cf)
                except Closed:
                    return
                method, target = start.split(" ", 2)[:2]
                if target.startswith("/__faultproxy/"):
                    read_body(cf, hdrs)
                    code, obj = control(st, target)
                    respond(client, code, "OK" if code == 200 else "Error",
                            [("Content-Type", "application/json")], json.dumps(obj).encode())
                    continue
                nreq += 1
                st.conn_requests(nreq)
                act, ms = st.decide((method, target),
                                    bool(hdr(hdrs, "if-match") or hdr(hdrs, "if-none-match")))
                if act == "reset-request":
                    # headers and at most half of the body have arrived: the client is
                    # still sending when the connection dies; nothing was forwarded
                    cl = hdr(hdrs, "content-length")
                    if cl and int(cl) > 1:
                        cf.read(int(cl) // 2)
                    rst_close(client)
                    return
                body = read_body(cf, hdrs)
                if act == "503":
                    busy(client, method == "HEAD")
                    continue
                if act == "hang":
                    # keep the connection, answer nothing, until the client gives up or
                    # the mode changes; then the client's connection is closed (it has
                    # an unanswered request on it)
                    while st.stats()["mode"]["mode"] == "hang":
                        client.settimeout(0.2)
                        try:
                            if client.recv(65536, socket.MSG_PEEK) == b"":
                                return
                            time.sleep(0.2)  # a pipelined request waits its turn
                        except socket.timeout:
                            pass
                        except OSError:
                            return
                    return
                if up is None:
                    up = socket.create_connection((up_host, up_port))
                    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    uf = up.makefile("rb")
                up.sendall(raw + body)
                while True:  # 1xx answers come before the real one
                    rraw, rstart, rhdrs = read_head(uf)
                    status = int(rstart.split(" ", 2)[1])
                    if status >= 200:
                        break
                    client.sendall(rraw)
                no_body = method == "HEAD" or status in (204, 304)
                to_eof = (hdr(rhdrs, "content-length") is None and
                          "chunked" not in (hdr(rhdrs, "transfer-encoding") or "").lower())
                rbody = b"" if no_body else read_body(uf, rhdrs, to_eof=to_eof)
                out = rraw + rbody
                if act == "reset-response":
                    # the service did the work; the answer dies halfway
                    if method == "PUT" and (hdr(hdrs, "if-match") or hdr(hdrs, "if-none-match")):
                        st.bump("reset_cond_put")
                    client.sendall(out[: max(1, len(out) // 2)])
                    rst_close(client)
                    return
                if act == "delay":
                    time.sleep(ms / 1000)
                client.sendall(out)
                conn = (hdr(rhdrs, "connection") or "").lower()
                if "close" in conn or (to_eof and not no_body):
                    return
        except (ConnectionError, OSError, ValueError, IndexError):
            return
        finally:
            for s in (uf, up, cf):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.upstream)
    if u.scheme != "http" or not u.hostname or not u.port:
        sys.exit("faultproxy: --upstream must be http://HOST:PORT")
    srv = Server(("127.0.0.1", 0), Handler)
    srv.state, srv.up_host, srv.up_port = State(), u.hostname, u.port
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{srv.server_address[1]}\n")
    os.rename(tmp, a.port_file)  # appears whole
    srv.serve_forever()


if __name__ == "__main__":
    main()
