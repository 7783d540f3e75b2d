// SPDX-License-Identifier: GPL-2.0

//! lib/crypto for per-connection encryption (module/conn/crypto.rs holds the logic): the
//! forwarders of module/vmcs_crypto_glue.c to ChaCha20-Poly1305, X25519, keyed BLAKE2s,
//! `memzero_explicit` and `get_random_bytes`, each behind a safe function whose slice
//! lengths are the ones the C functions expect.

use kernel::ffi::c_void;

/// Bytes of a ChaCha20-Poly1305 key, an X25519 key and a BLAKE2s-256 output.
pub(crate) const KEY_LEN: usize = 32;
/// Bytes of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Longest BLAKE2s input [`mac`] takes in one piece (the callers' transcripts are shorter).
pub(crate) const MAC_MAX_IN: usize = 256;

extern "C" {
    fn vmcs_crypto_seal(
        dst: *mut u8,
        src: *const u8,
        len: usize,
        ad: *const u8,
        ad_len: usize,
        nonce: u64,
        key: *const u8,
    );
    fn vmcs_crypto_open(
        dst: *mut u8,
        src: *const u8,
        len: usize,
        ad: *const u8,
        ad_len: usize,
        nonce: u64,
        key: *const u8,
    ) -> bool;
    fn vmcs_crypto_keypair(secret: *mut u8, public: *mut u8) -> bool;
    fn vmcs_crypto_dh(out: *mut u8, secret: *const u8, peer_pub: *const u8) -> bool;
    fn vmcs_crypto_mac(
        out: *mut u8,
        out_len: usize,
        key: *const u8,
        key_len: usize,
        input: *const u8,
        in_len: usize,
    );
    fn vmcs_crypto_wipe(p: *mut c_void, len: usize);
}

/// ChaCha20-Poly1305 of `src` under `key` and the 64-bit `nonce`, with `ad` authenticated:
/// the ciphertext and its tag go to `dst`, which must be `src.len() + TAG_LEN` bytes
/// (otherwise nothing is written and it returns false).
pub(crate) fn seal(dst: &mut [u8], src: &[u8], ad: &[u8], nonce: u64, key: &[u8; KEY_LEN]) -> bool {
    if dst.len() != src.len() + TAG_LEN {
        return false;
    }
    // SAFETY: `dst` is valid for `src.len() + 16` bytes of writes, `src` for `src.len()`
    // reads, `ad` for `ad.len()` reads and `key` for 32; `dst` (exclusive) does not overlap
    // the shared borrows.
    unsafe {
        vmcs_crypto_seal(
            dst.as_mut_ptr(),
            src.as_ptr(),
            src.len(),
            ad.as_ptr(),
            ad.len(),
            nonce,
            key.as_ptr(),
        )
    };
    true
}

/// Verifies and decrypts `buf` (ciphertext then its `TAG_LEN`-byte tag) in place: on
/// success the first `buf.len() - TAG_LEN` bytes are the plaintext and it returns true; a
/// wrong tag (or a `buf` shorter than a tag) leaves the ciphertext and returns false.
pub(crate) fn open_in_place(buf: &mut [u8], ad: &[u8], nonce: u64, key: &[u8; KEY_LEN]) -> bool {
    if buf.len() < TAG_LEN {
        return false;
    }
    let p = buf.as_mut_ptr();
    // SAFETY: `p` is valid for `buf.len()` bytes of reads and writes; the C function reads
    // all of `src` for the tag before it writes `dst`, and decrypts byte for byte in
    // order, so `dst == src` is allowed (lib/crypto/chacha20poly1305.c); `ad` and `key`
    // are valid for their lengths and do not overlap `buf` (shared borrows).
    unsafe { vmcs_crypto_open(p, p, buf.len(), ad.as_ptr(), ad.len(), nonce, key.as_ptr()) }
}

/// A fresh X25519 key pair `(secret, public)` from `get_random_bytes`; `None` if the
/// public key came out as the point at infinity (never with a clamped secret).
pub(crate) fn keypair() -> Option<([u8; KEY_LEN], [u8; KEY_LEN])> {
    let mut secret = [0u8; KEY_LEN];
    let mut public = [0u8; KEY_LEN];
    // SAFETY: both arrays are valid for 32 bytes of writes.
    let ok = unsafe { vmcs_crypto_keypair(secret.as_mut_ptr(), public.as_mut_ptr()) };
    if ok {
        Some((secret, public))
    } else {
        wipe(&mut secret);
        None
    }
}

/// X25519 of our `secret` and the peer's public key; `None` when the result is all zero (a
/// low-order point: the peer sent a key that gives no shared secret).
pub(crate) fn dh(secret: &[u8; KEY_LEN], peer_pub: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    let mut out = [0u8; KEY_LEN];
    // SAFETY: `out` is valid for 32 bytes of writes, `secret` and `peer_pub` for 32 reads.
    let ok = unsafe { vmcs_crypto_dh(out.as_mut_ptr(), secret.as_ptr(), peer_pub.as_ptr()) };
    if ok {
        Some(out)
    } else {
        wipe(&mut out);
        None
    }
}

/// Keyed BLAKE2s of the concatenation of `parts` into `out` (1..=32 bytes), under `key`
/// (1..=32 bytes). False (nothing computed) when a length is out of range or the parts
/// exceed [`MAC_MAX_IN`] bytes.
pub(crate) fn mac(out: &mut [u8], key: &[u8], parts: &[&[u8]]) -> bool {
    if out.is_empty() || out.len() > KEY_LEN || key.is_empty() || key.len() > KEY_LEN {
        return false;
    }
    let mut buf = [0u8; MAC_MAX_IN];
    let mut n = 0usize;
    for p in parts {
        let Some(dst) = buf.get_mut(n..n + p.len()) else {
            wipe(&mut buf);
            return false;
        };
        dst.copy_from_slice(p);
        n += p.len();
    }
    // SAFETY: `out` is valid for `out.len()` (1..=32) bytes of writes, `key` for
    // `key.len()` (1..=32) reads, `buf` for `n <= MAC_MAX_IN` reads; none overlap.
    unsafe {
        vmcs_crypto_mac(
            out.as_mut_ptr(),
            out.len(),
            key.as_ptr(),
            key.len(),
            buf.as_ptr(),
            n,
        )
    };
    wipe(&mut buf);
    true
}

/// Overwrites `buf` with zeros in a way the compiler cannot drop (`memzero_explicit`).
pub(crate) fn wipe(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    unsafe { vmcs_crypto_wipe(buf.as_mut_ptr().cast(), buf.len()) };
}

/// Whether the task may install keys and set the domain's policy (`CAP_NET_ADMIN`).
pub(crate) fn capable_net_admin() -> bool {
    // SAFETY: `capable` only inspects the current task's credentials.
    unsafe { kernel::bindings::capable(kernel::bindings::CAP_NET_ADMIN as kernel::ffi::c_int) }
}
