#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host side of the crypto scenario (qemu-test/scenarios/crypto.sh; run.sh --host-hook
... --control, plain variant).

The host can read and write every byte of the region. This hook shows what encryption
changes for it:

- confidentiality: it scans the region file while guest 1 sends guest 0 a known pattern,
  first in plaintext (the pattern must be found: the check can fail), then encrypted (it
  must never be found);
- integrity: three times it stops guest 0's QEMU (SIGSTOP), tells guest 1 (its control
  line) to send on an encrypted stream, finds those frames in the ring and tampers with
  them before guest 0 runs again: a flipped ciphertext byte (flip), the first frame copied
  over the second (replay), the SHUTDOWN record moved over the last data frame, dropping
  it (trunc). Guest 0 must reset each connection (its own points check the errno and the
  counters);
- no key material: the pre-shared keys (hex and raw) are in no serial log, TAP file or the
  region.

usage: crypto-host.py SHM RESULTS KEYHEX...   (prints TAP lines; guest 1 marks progress in
its TAP file with CRYPTO-* lines)
"""
import mmap
import os
import signal
import struct
import sys
import time

PLAIN = b"vmcs-PLAIN-pattern-0123456789abcdef-"
CRYPT = b"vmcs-CRYPT-pattern-0123456789abcdef-"
# Ports of the tampered streams (crypto.sh) and the frame fields the hook looks for.
PORTS = {"flip": 7705, "replay": 7706, "trunc": 7707}
TAG = 16
OP_SHUTDOWN, OP_RW, STREAM = 4, 5, 1
SHUTDOWN_SEND = 2
ALIGN = 32

shm_path, results = sys.argv[1], sys.argv[2]
keys = [bytes.fromhex(k) for k in sys.argv[3:]]


def point(ok, text):
    print(("ok" if ok else "not ok") + " - host: " + text, flush=True)
    return ok


def diag(text):
    print("# " + text, flush=True)


def taps():
    out = b""
    for name in sorted(os.listdir(results)):
        if name.startswith("guest") and name.endswith(".tap"):
            with open(os.path.join(results, name), "rb") as f:
                out += f.read()
    return out


def marker_seen(m):
    return m.encode() in taps()


def wait_marker(m, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if marker_seen(m):
            return True
        time.sleep(0.05)
    return False


def ctl(g, word):
    """One line on guest g's control line (its ttyS2)."""
    fd = os.open(os.path.join(results, f"guest{g}.ctl.in"), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, (word + "\n").encode())
    finally:
        os.close(fd)


f = open(shm_path, "r+b")
region = mmap.mmap(f.fileno(), 0)


def scan_until(m, pat, timeout):
    """Scans the region for `pat` until marker `m` appears (then once more)."""
    found, scans = False, 0
    end = time.time() + timeout
    while time.time() < end:
        done = marker_seen(m)
        scans += 1
        if region.find(pat) >= 0:
            found = True
        if done:
            return found, scans, True
        time.sleep(0.02)
    return found, scans, False


ctl(1, "HOOK-READY")

# Confidentiality, plaintext first: the reader must see the pattern (the check can fail).
found, scans, done = scan_until("CRYPTO-PLAIN-DONE", PLAIN, 240)
point(done, "the plaintext transfer ended (marker seen)")
point(found, f"plaintext transfer: its pattern is in the region ({scans} scans): the reader can see it")

# Then encrypted: never, during or after the transfer (the ring keeps what was written).
found, scans, done = scan_until("CRYPTO-ENC-DONE", CRYPT, 240)
point(done, "the encrypted transfer ended (marker seen)")
point(not found and scans >= 2,
      f"encrypted transfer: its pattern is nowhere in the region ({scans} scans during and after it)")


def pid_of(g):
    with open(os.path.join(results, f"guest{g}.pid")) as p:
        return int(p.read().strip())


def frames(length, op, flags, port):
    """Offsets of 32-aligned frame headers with these fields, addressed to `port`."""
    needle = struct.pack("<IHHI", length, op, STREAM, flags)
    hits = []
    at = region.find(needle)
    while at >= 0:
        if at % ALIGN == 0:
            (dst,) = struct.unpack_from("<I", region, at + 16)
            if dst == port:
                hits.append(at)
        at = region.find(needle, at + 1)
    return hits


def record(length):
    return (32 + length + ALIGN - 1) & ~(ALIGN - 1)


def find(kind, port):
    """The frames of `kind`'s step once they are all in the ring, or None."""
    data = frames(100 + TAG, OP_RW, 0, port)
    if kind == "flip":
        return data if len(data) == 1 else None
    if kind == "replay":
        if len(data) == 2 and data[1] - data[0] == record(100 + TAG):
            return data
        return None
    short = frames(1 + TAG, OP_RW, 0, port)
    shut = frames(TAG, OP_SHUTDOWN, SHUTDOWN_SEND, port)
    if len(data) == 1 and len(short) == 1 and len(shut) == 1:
        return data + short + shut
    return None


def tamper(kind, hits):
    if kind == "flip":
        at = hits[0] + 32 + 10
        region[at] ^= 0x01
        return f"flipped bit 0 of the ciphertext byte at {at:#x}"
    if kind == "replay":
        n = 100 + TAG
        region[hits[1] + 32:hits[1] + 32 + n] = region[hits[0] + 32:hits[0] + 32 + n]
        return f"copied the payload of the frame at {hits[0]:#x} over the one at {hits[1]:#x}"
    # trunc: the SHUTDOWN record (header and tag, 48 bytes) over the 1-byte frame's record
    # (64 bytes): the receiver meets the SHUTDOWN where that frame was.
    sh, short = hits[2], hits[1]
    region[short:short + 32 + TAG] = region[sh:sh + 32 + TAG]
    return f"moved the SHUTDOWN at {sh:#x} over the 1-byte frame at {short:#x}"


# Integrity: tamper with the ring while the receiver is stopped.
for kind, port in PORTS.items():
    if not point(wait_marker(f"CRYPTO-{kind.upper()}-STOP", 240),
                 f"{kind}: guest 1 is ready to send on an encrypted stream"):
        continue
    receiver = pid_of(0)
    os.kill(receiver, signal.SIGSTOP)
    try:
        ctl(1, f"GO-{kind.upper()}")
        hits = None
        end = time.time() + 60
        while time.time() < end and hits is None:
            hits = find(kind, port)
            if hits is None:
                time.sleep(0.02)
        if point(hits is not None, f"{kind}: the frames are in the ring, unread ({hits})"):
            diag(f"{kind}: " + tamper(kind, hits))
            region.flush()
    finally:
        os.kill(receiver, signal.SIGCONT)

# No key material anywhere the host sees: the logs and the region.
point(wait_marker("CRYPTO-END", 300), "the guests finished")
time.sleep(1)
leaks = []
for name in sorted(os.listdir(results)):
    if not (name.endswith(".log") or name.endswith(".tap")) or name.startswith("hook"):
        continue
    with open(os.path.join(results, name), "rb") as lf:
        data = lf.read()
    for k in keys:
        if k.hex().encode() in data.lower() or k in data:
            leaks.append(name)
for k in keys:
    if region.find(k) >= 0:
        leaks.append("region")
point(not leaks and keys,
      f"no pre-shared key ({len(keys)} keys, hex and raw) in any serial log, TAP file or the region {leaks}")
sys.exit(0)
