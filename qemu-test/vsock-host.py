#!/usr/bin/env python3
"""The host end of the vsock transport (the vsock scenario's host hook, run.sh --host-hook).

A host program needs no module: it speaks the vsock transport's stream format
(docs/architecture.md "The vsock transport") over vhost-device-vsock's unix-socket side.

  vsock-host.py UDS GUEST_PORT HOST_PORT [VSOCK_PORT]

- host -> guest: connects to UDS (the guest's uds-path), asks the backend for the
  transport's port (`CONNECT VSOCK_PORT`), sends its preamble, opens an AF_VMCS stream
  connection to GUEST_PORT (REQUEST, RESPONSE), sends 50000 bytes and checks that the
  guest's echo brings every byte back, then closes in order.
- guest -> host: listens on UDS_VSOCK_PORT (where the backend connects when the guest
  connects to cid 2), and on any stream answers a REQUEST for HOST_PORT and echoes its
  data, until the guest closes it.
Keepalives (32 zero bytes) go on every stream every 200 ms. TAP on stdout.
"""

import os
import socket
import struct
import sys
import threading
import time

HDR = struct.Struct("<IHHIIIIII")
OP_REQUEST, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST = 1, 2, 3, 4, 5, 6, 7
STREAM = 1
BUF = 1 << 20
PREAMBLE = b"VMCS" + struct.pack("<HHQ", 1, 0, int.from_bytes(os.urandom(8), "little") | 1)

results = []
lock = threading.Lock()


def tap(ok, what):
    with lock:
        print(("ok" if ok else "not ok") + " - host: " + what, flush=True)
        results.append(ok)


def diag(msg):
    with lock:
        print("# host: " + msg, flush=True)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("stream ended")
        b += c
    return b


class Stream:
    """One vsock stream to the guest, carrying frames both ways."""

    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.wlock = threading.Lock()
        self.conns = {}  # (our port, their port) -> Conn
        self.closed = False

    def send(self, b):
        with self.wlock:
            self.sock.sendall(b)

    def frame(self, op, src, dst, payload=b"", flags=0, fwd=0):
        self.send(HDR.pack(len(payload), op, STREAM, flags, src, dst, BUF, fwd, 0) + payload)


class Conn:
    def __init__(self, local, remote, echo):
        self.local, self.remote, self.echo = local, remote, echo
        self.got = bytearray()
        self.fwd = 0
        self.up = threading.Event()
        self.ended = threading.Event()


def reader(st, listen_port):
    """Reads frames of `st`: answers REQUESTs for `listen_port` and echoes their data."""
    try:
        pre = recv_exact(st.sock, 16)
        ver, fl = struct.unpack("<HH", pre[4:8])
        ok = pre[:4] == b"VMCS" and ver == 1 and fl in (0, 1)
        tap(ok, f"{st.name}: the guest's preamble (magic VMCS, version 1)")
        if fl == 1:
            # A guest with an ivshmem device states its region slot (16 bytes; ignored).
            recv_exact(st.sock, 16)
        while True:
            h = recv_exact(st.sock, HDR.size)
            if h == bytes(HDR.size):
                continue  # keepalive
            ln, op, ty, fl, src, dst, _ba, _fc, _r = HDR.unpack(h)
            if ln > 65536 or not 1 <= op <= 11:
                diag(f"{st.name}: bad header from the guest: {h.hex()}")
                break
            payload = recv_exact(st.sock, ln) if ln else b""
            key = (dst, src)
            c = st.conns.get(key)
            if op == OP_REQUEST and dst == listen_port:
                c = Conn(dst, src, True)
                st.conns[key] = c
                st.frame(OP_RESPONSE, dst, src)
                diag(f"{st.name}: REQUEST from guest port {src} to {dst}: RESPONSE")
                c.up.set()
            elif op == OP_RESPONSE and c:
                c.up.set()
            elif op == OP_RW and c:
                c.got += payload
                c.fwd += len(payload)
                if c.echo:
                    st.frame(OP_RW, c.local, c.remote, payload, fwd=c.fwd)
                else:
                    st.frame(OP_CREDIT_UPDATE, c.local, c.remote, fwd=c.fwd)
            elif op == OP_CREDIT_REQUEST and c:
                st.frame(OP_CREDIT_UPDATE, c.local, c.remote, fwd=c.fwd)
            elif op in (OP_SHUTDOWN, OP_RST) and c:
                c.ended.set()
            elif op == OP_REQUEST:
                st.frame(OP_RST, dst, src)
    except (EOFError, OSError) as e:
        diag(f"{st.name}: reader ended: {e}")
    st.closed = True


def keepalive(streams):
    while True:
        time.sleep(0.2)
        for st in list(streams):
            if not st.closed:
                try:
                    st.send(bytes(HDR.size))
                except OSError:
                    st.closed = True


def main():
    uds, gport, hport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    vport = int(sys.argv[4]) if len(sys.argv) > 4 else 22093
    streams = []
    threading.Thread(target=keepalive, args=(streams,), daemon=True).start()

    # guest -> host: where the backend connects for the guest's connects to cid 2.
    lpath = f"{uds}_{vport}"
    try:
        os.unlink(lpath)
    except FileNotFoundError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(lpath)
    ls.listen(4)
    inbound = []

    def accept_loop():
        while True:
            s, _ = ls.accept()
            st = Stream(s, f"stream from the guest {len(inbound) + 1}")
            st.send(PREAMBLE)
            inbound.append(st)
            streams.append(st)
            threading.Thread(target=reader, args=(st, hport), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()

    # host -> guest.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(uds)
    s.sendall(f"CONNECT {vport}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        line += c
    tap(line.startswith(b"OK"), f"vhost-device-vsock connected the host to the guest's port {vport} ({line.strip().decode(errors='replace')})")
    st = Stream(s, "stream to the guest")
    st.send(PREAMBLE)
    streams.append(st)
    threading.Thread(target=reader, args=(st, hport), daemon=True).start()
    c = Conn(7000, gport, False)
    st.conns[(7000, gport)] = c
    st.frame(OP_REQUEST, 7000, gport)
    tap(c.up.wait(60), f"AF_VMCS connection to the guest's port {gport} accepted (RESPONSE)")
    data = bytes((i * 13 + 5) % 256 for i in range(50000))
    for off in range(0, len(data), 16384):
        st.frame(OP_RW, 7000, gport, data[off:off + 16384])
    t0 = time.time()
    while len(c.got) < len(data) and time.time() - t0 < 60 and not st.closed:
        time.sleep(0.05)
    tap(bytes(c.got) == data, f"host -> guest -> host: {len(c.got)} of {len(data)} bytes echoed back, byte-checked")
    st.frame(OP_SHUTDOWN, 7000, gport, flags=3)
    c.ended.wait(10)
    st.frame(OP_RST, 7000, gport)

    # guest -> host: the guest connects to cid 2 port HOST_PORT (on any stream).
    t0 = time.time()
    served = None
    while time.time() - t0 < 120 and served is None:
        for x in list(streams):
            for k, cc in list(x.conns.items()):
                if cc.echo and cc.ended.is_set():
                    served = cc
        time.sleep(0.1)
    tap(served is not None and len(served.got) > 0,
        f"guest -> host: the guest's connection to port {hport} echoed {len(served.got) if served else 0} bytes and closed")
    os.unlink(lpath)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
