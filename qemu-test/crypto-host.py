#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host side of the crypto scenario (qemu-test/scenarios/crypto.sh; run.sh --host-hook).

The host can read and write every byte of the region. This hook shows what encryption
changes for it:

- confidentiality: it scans the region file while guest 1 sends guest 0 a known pattern,
  first in plaintext (the pattern must be found: the check can fail), then encrypted (it
  must never be found);
- integrity: it stops guest 0's QEMU (SIGSTOP), lets guest 1 send one encrypted frame,
  finds that frame's header in the ring, flips one ciphertext byte, and resumes guest 0,
  whose receive path must reset the connection;
- no key material: the pre-shared key (hex and raw) is in no serial log, TAP file or the
  region.

usage: crypto-host.py SHM RESULTS KEYHEX...   (prints TAP lines; guests mark progress
in their TAP files with CRYPTO-* lines)
"""
import mmap
import os
import signal
import struct
import sys
import time

PLAIN = b"vmcs-PLAIN-pattern-0123456789abcdef-"
CRYPT = b"vmcs-CRYPT-pattern-0123456789abcdef-"
FLIP_PORT = 7705
FLIP_LEN = 100 + 16  # the message and its tag
OP_RW, STREAM = 5, 1

shm_path, results = sys.argv[1], sys.argv[2]
keys = [bytes.fromhex(k) for k in sys.argv[3:]]
npoints = 0


def point(ok, text):
    global npoints
    npoints += 1
    print(("ok" if ok else "not ok") + " - " + text, flush=True)
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
        time.sleep(0.05)
    return found, scans, False


# Confidentiality, plaintext first: the reader must see the pattern (the check can fail).
found, scans, done = scan_until("CRYPTO-PLAIN-DONE", PLAIN, 120)
point(done, "the plaintext transfer ended (marker seen)")
point(found, f"plaintext transfer: its pattern is in the region ({scans} scans): the reader can see it")

# Then encrypted: never, during or after the transfer.
found, scans, done = scan_until("CRYPTO-ENC-DONE", CRYPT, 120)
point(done, "the encrypted transfer ended (marker seen)")
point(not found and scans >= 2,
      f"encrypted transfer: its pattern is nowhere in the region ({scans} scans during and after it)")


def pid_of(g):
    with open(os.path.join(results, f"guest{g}.pid")) as p:
        return int(p.read().strip())


def find_flip_frame():
    """The offset of the one encrypted RW frame to FLIP_PORT: a 32-aligned header with
    len FLIP_LEN, op RW, type STREAM, flags 0, dst_port FLIP_PORT, reserved 0."""
    needle = struct.pack("<IHHI", FLIP_LEN, OP_RW, STREAM, 0)
    hits = []
    at = region.find(needle)
    while at >= 0:
        if at % 32 == 0:
            (dst,) = struct.unpack_from("<I", region, at + 16)
            (res,) = struct.unpack_from("<I", region, at + 28)
            if dst == FLIP_PORT and res == 0:
                hits.append(at)
        at = region.find(needle, at + 1)
    return hits


# Integrity: flip a ciphertext byte in the ring while the receiver is stopped.
end = time.time() + 120
while time.time() < end and not marker_seen("CRYPTO-FLIP-STOP"):
    time.sleep(0.05)
if point(marker_seen("CRYPTO-FLIP-STOP"), "guest 1 is ready to send the frame to be altered"):
    receiver = pid_of(0)
    os.kill(receiver, signal.SIGSTOP)
    try:
        fd = os.open(os.path.join(results, "guest1.ctl.in"), os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"GO\n")
        os.close(fd)
        end = time.time() + 30
        while time.time() < end and not marker_seen("CRYPTO-FLIP-SENT"):
            time.sleep(0.05)
        hits = []
        end = time.time() + 5
        while time.time() < end and not hits:
            hits = find_flip_frame()
            time.sleep(0.05)
        if point(len(hits) == 1, f"the encrypted frame is in the ring, unread (headers at {hits})"):
            at = hits[0] + 32 + 10
            region[at] ^= 0x01
            region.flush()
            diag(f"flipped bit 0 of the byte at region offset {at:#x}")
    finally:
        os.kill(receiver, signal.SIGCONT)

# No key material anywhere the host sees: the logs and the region.
end = time.time() + 180
while time.time() < end and not marker_seen("CRYPTO-END"):
    time.sleep(0.2)
point(marker_seen("CRYPTO-END"), "the guests finished")
leaks = []
for name in sorted(os.listdir(results)):
    if not (name.endswith(".log") or name.endswith(".tap")) or name.startswith("hook"):
        continue
    with open(os.path.join(results, name), "rb") as lf:
        data = lf.read().lower()
    for k in keys:
        if k.hex().encode() in data or k in data:
            leaks.append(name)
for k in keys:
    if region.find(k) >= 0:
        leaks.append("region")
point(not leaks, f"no pre-shared key (hex or raw) in any serial log, TAP file or the region {leaks}")
sys.exit(0)
