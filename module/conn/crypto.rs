// SPDX-License-Identifier: GPL-2.0

//! Per-connection authenticated encryption (docs/security.md "Encryption", docs/protocol.md
//! §6.1): the domain's policy and pre-shared key ([`CryptoConf`]), the connect-time
//! handshake ([`initiate`], [`respond`], [`Pending::finish`]) and the per-connection
//! keys and nonce counters ([`Session`]). The primitives are lib/crypto's, through
//! `glue::crypto`; everything here is plain Rust over byte arrays.
//!
//! Handshake (one round trip, on the `REQUEST` and `RESPONSE` frames):
//!
//! - initiator: ephemeral X25519 pair `(e_i, E_i)`; `REQUEST` payload
//!   `E_i || tag_i`, `tag_i = BLAKE2s-128(key = psk, "vmcs-req-v1" || ids || E_i)`.
//! - responder: checks `tag_i` (a wrong key fails here: `RST` with `RST_AUTH`); ephemeral
//!   pair `(e_r, E_r)`; `dh = X25519(e_r, E_i)`;
//!   `prk = BLAKE2s-256(key = psk, "vmcs-kdf-v1" || dh || E_i || E_r || ids)`;
//!   `k_i2r = BLAKE2s-256(key = prk, "i2r")`, `k_r2i = BLAKE2s-256(key = prk, "r2i")`;
//!   `RESPONSE` payload `E_r || tag_r`, `tag_r = BLAKE2s-128(key = prk, "vmcs-resp-v1" ||
//!   E_i || E_r || ids)`.
//! - initiator: `dh = X25519(e_i, E_r)`, the same keys, checks `tag_r` (key confirmation:
//!   only a holder of the key who saw `E_i` can make it).
//!
//! `ids` binds both ends: initiator (peer id, port), responder (peer id, port), socket
//! type, each a u32 LE. Data frames: ChaCha20-Poly1305 with the direction's key, the nonce
//! a 64-bit counter per direction that both sides keep (never sent: the rings deliver in
//! order, so a replayed, reordered, dropped or altered frame fails its tag), the header's
//! `len`, `op`, `type`, `flags` and ports as associated data.

use crate::{
    glue::crypto::{self as c, KEY_LEN, TAG_LEN},
    proto::frame::{FrameHeader, SockType, HANDSHAKE_PAYLOAD, MAX_PAYLOAD},
    transport::RxPayload,
};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use kernel::{new_mutex, prelude::*, sync::Mutex};

/// Bytes of a handshake payload (`REQUEST`, `RESPONSE`).
pub(crate) const HS_LEN: usize = HANDSHAKE_PAYLOAD as usize;

/// A domain's or a socket's encryption policy (`encrypt=` module parameter,
/// `VMCS_IOC_SET_DOMAIN_CRYPTO`, `VMCS_SO_ENCRYPT`). Ordered: the stricter wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Policy {
    /// Never encrypt (a socket's option: "the domain's default").
    Off = 0,
    /// Encrypt when both sides have a key and the peer speaks the handshake; plaintext
    /// otherwise.
    Allow = 1,
    /// Encrypt or refuse the connection.
    Require = 2,
}

impl Policy {
    /// Decodes a user value (0, 1, 2).
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Policy::Off),
            1 => Some(Policy::Allow),
            2 => Some(Policy::Require),
            _ => None,
        }
    }

    /// The name in debugfs and `vmcs status`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::Off => "off",
            Policy::Allow => "allow",
            Policy::Require => "require",
        }
    }
}

/// A 32-byte secret that is wiped (`memzero_explicit`) when dropped.
pub(crate) struct Secret([u8; KEY_LEN]);

impl Secret {
    fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        c::wipe(&mut self.0);
    }
}

/// Counters of a domain (debugfs `crypto`, `VMCS_IOC_GET_CRYPTO`, `vmcs status`).
#[derive(Default)]
pub(crate) struct CryptoCounters {
    /// Encrypted connections set up (either side).
    pub(crate) handshakes: AtomicU64,
    /// Handshakes that failed on this side: a peer's tag did not verify (wrong key, forged
    /// or altered handshake), or its public key gave no shared secret.
    pub(crate) auth_failed: AtomicU64,
    /// Connects of ours that the peer refused with `RST_AUTH` (its key differs, or its
    /// policy requires what we did not offer).
    pub(crate) peer_refused: AtomicU64,
    /// Connections this side refused by policy: plaintext under `require` (incoming), or
    /// no key or a peer without the handshake under `require` (outgoing).
    pub(crate) policy_refused: AtomicU64,
    /// Encrypted data frames that failed verification (altered, replayed, reordered,
    /// dropped or truncated): each reset its connection (reset reason `decrypt`).
    pub(crate) bad_frames: AtomicU64,
}

/// The encryption state of a domain: its policy, its pre-shared key and its counters.
#[pin_data]
pub(crate) struct CryptoConf {
    /// [`Policy`] as u32.
    policy: AtomicU32,
    /// The pre-shared key, installed by `VMCS_IOC_SET_KEY` (root). Never read back out.
    #[pin]
    psk: Mutex<Option<KBox<Secret>>>,
    pub(crate) counters: CryptoCounters,
}

impl CryptoConf {
    /// No key, `policy`.
    pub(crate) fn new(policy: Policy) -> impl PinInit<Self> {
        pin_init!(Self {
            policy: AtomicU32::new(policy as u32),
            psk <- new_mutex!(None, "vmcs_psk"),
            counters: CryptoCounters::default(),
        })
    }

    /// The domain's policy.
    pub(crate) fn policy(&self) -> Policy {
        Policy::from_u32(self.policy.load(Relaxed)).unwrap_or(Policy::Allow)
    }

    /// Sets the domain's policy (for connections set up from now on).
    pub(crate) fn set_policy(&self, p: Policy) {
        self.policy.store(p as u32, Relaxed);
    }

    /// The policy of a connection whose socket asked for `sock` (the stricter one).
    pub(crate) fn effective(&self, sock: Policy) -> Policy {
        self.policy().max(sock)
    }

    /// Installs `key` (replacing and wiping the old one). The caller wipes its copy.
    pub(crate) fn set_key(&self, key: &[u8; KEY_LEN]) -> Result {
        let new = KBox::new(Secret(*key), GFP_KERNEL)?;
        // The old key is dropped (wiped) with the guard held or after: never left behind.
        let old = self.psk.lock().replace(new);
        drop(old);
        Ok(())
    }

    /// Removes and wipes the key.
    pub(crate) fn clear_key(&self) {
        let old = self.psk.lock().take();
        drop(old);
    }

    /// Whether a key is installed.
    pub(crate) fn has_key(&self) -> bool {
        self.psk.lock().is_some()
    }

    /// A copy of the key for one handshake (wiped when dropped).
    fn key(&self) -> Option<Secret> {
        self.psk.lock().as_ref().map(|k| Secret(k.0))
    }

    /// Writes the debugfs `crypto` file (never the key).
    pub(crate) fn show(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let k = &self.counters;
        writeln!(out, "policy {}", self.policy().name())?;
        writeln!(
            out,
            "key {}",
            if self.has_key() { "installed" } else { "none" }
        )?;
        writeln!(out, "handshakes {}", k.handshakes.load(Relaxed))?;
        writeln!(out, "auth_failed {}", k.auth_failed.load(Relaxed))?;
        writeln!(out, "peer_refused {}", k.peer_refused.load(Relaxed))?;
        writeln!(out, "policy_refused {}", k.policy_refused.load(Relaxed))?;
        writeln!(out, "bad_frames {}", k.bad_frames.load(Relaxed))
    }
}

/// The two ends of a connection and its type, bound into every tag and key.
#[derive(Clone, Copy)]
pub(crate) struct Ids {
    pub(crate) init_cid: u32,
    pub(crate) init_port: u32,
    pub(crate) resp_cid: u32,
    pub(crate) resp_port: u32,
    pub(crate) ty: SockType,
}

impl Ids {
    fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        let words = [
            self.init_cid,
            self.init_port,
            self.resp_cid,
            self.resp_port,
            self.ty as u32,
        ];
        for (chunk, w) in b.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// Why a handshake failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HsError {
    /// A tag did not verify, or the peer's public key gave no shared secret.
    Auth,
    /// No randomness or memory for our side.
    Local,
}

/// Constant-time comparison of two tags.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // `black_box` keeps the compiler from turning the fold into an early exit.
    core::hint::black_box(d) == 0
}

fn mac16(key: &[u8], parts: &[&[u8]]) -> Option<[u8; TAG_LEN]> {
    let mut t = [0u8; TAG_LEN];
    c::mac(&mut t, key, parts).then_some(t)
}

fn mac32(key: &[u8], parts: &[&[u8]]) -> Option<Secret> {
    let mut s = Secret([0u8; KEY_LEN]);
    c::mac(&mut s.0, key, parts).then_some(s)
}

/// The tag of a `REQUEST`.
fn request_tag(psk: &Secret, ids: &[u8; 20], e_i: &[u8; KEY_LEN]) -> Option<[u8; TAG_LEN]> {
    mac16(psk.bytes(), &[b"vmcs-req-v1", ids, e_i])
}

/// The key schedule: both directions' keys and the responder's confirmation tag.
fn schedule(
    psk: &Secret,
    dh: &Secret,
    e_i: &[u8; KEY_LEN],
    e_r: &[u8; KEY_LEN],
    ids: &[u8; 20],
) -> Option<(Secret, Secret, [u8; TAG_LEN])> {
    let prk = mac32(psk.bytes(), &[b"vmcs-kdf-v1", dh.bytes(), e_i, e_r, ids])?;
    let i2r = mac32(prk.bytes(), &[b"i2r"])?;
    let r2i = mac32(prk.bytes(), &[b"r2i"])?;
    let tag = mac16(prk.bytes(), &[b"vmcs-resp-v1", e_i, e_r, ids])?;
    Some((i2r, r2i, tag))
}

fn split(p: &[u8]) -> Option<([u8; KEY_LEN], [u8; TAG_LEN])> {
    if p.len() != HS_LEN {
        return None;
    }
    let (k, t) = p.split_at(KEY_LEN);
    Some((k.try_into().ok()?, t.try_into().ok()?))
}

fn join(k: &[u8; KEY_LEN], t: &[u8; TAG_LEN]) -> [u8; HS_LEN] {
    let mut p = [0u8; HS_LEN];
    let (a, b) = p.split_at_mut(KEY_LEN);
    a.copy_from_slice(k);
    b.copy_from_slice(t);
    p
}

/// What [`initiate`] gives: the state to keep and the `REQUEST` payload.
pub(crate) type Offer = (KBox<Pending>, [u8; HS_LEN]);
/// What [`respond`] gives: the session and the `RESPONSE` payload.
pub(crate) type Accepted = (KBox<Session>, [u8; HS_LEN]);

/// The initiator's half of a handshake in flight: its ephemeral secret and public key,
/// and its copy of the key (all wiped when dropped).
pub(crate) struct Pending {
    secret: Secret,
    public: [u8; KEY_LEN],
    psk: Secret,
    ids: [u8; 20],
}

/// Starts a handshake as the initiator: the state to keep and the `REQUEST` payload.
/// `None` without a key installed.
pub(crate) fn initiate(conf: &CryptoConf, ids: &Ids) -> Option<Result<Offer, HsError>> {
    let psk = conf.key()?;
    Some((|| {
        let (secret, public) = c::keypair().ok_or(HsError::Local)?;
        let ids = ids.encode();
        let tag = request_tag(&psk, &ids, &public).ok_or(HsError::Local)?;
        let p = KBox::new(
            Pending {
                secret: Secret(secret),
                public,
                psk,
                ids,
            },
            GFP_KERNEL,
        )
        .map_err(|_| HsError::Local)?;
        Ok((p, join(&public, &tag)))
    })())
}

impl Pending {
    /// The `RESPONSE` payload arrived: the session, or `Auth` if it does not verify.
    pub(crate) fn finish(&self, payload: &[u8]) -> Result<KBox<Session>, HsError> {
        let (e_r, tag) = split(payload).ok_or(HsError::Auth)?;
        let dh = Secret(c::dh(self.secret.bytes(), &e_r).ok_or(HsError::Auth)?);
        let (i2r, r2i, want) =
            schedule(&self.psk, &dh, &self.public, &e_r, &self.ids).ok_or(HsError::Local)?;
        if !tags_equal(&tag, &want) {
            return Err(HsError::Auth);
        }
        Session::new(i2r, r2i)
    }
}

/// Answers a `REQUEST` payload as the responder: the session and the `RESPONSE` payload;
/// `None` without a key installed (the connection goes on in plaintext, or is refused
/// under `require`).
pub(crate) fn respond(
    conf: &CryptoConf,
    ids: &Ids,
    payload: &[u8],
) -> Option<Result<Accepted, HsError>> {
    let psk = conf.key()?;
    Some((|| {
        let ids = ids.encode();
        let (e_i, tag) = split(payload).ok_or(HsError::Auth)?;
        let want = request_tag(&psk, &ids, &e_i).ok_or(HsError::Local)?;
        if !tags_equal(&tag, &want) {
            return Err(HsError::Auth);
        }
        let (secret, public) = c::keypair().ok_or(HsError::Local)?;
        let secret = Secret(secret);
        let dh = Secret(c::dh(secret.bytes(), &e_i).ok_or(HsError::Auth)?);
        let (i2r, r2i, conf_tag) =
            schedule(&psk, &dh, &e_i, &public, &ids).ok_or(HsError::Local)?;
        // The responder sends with r2i and receives with i2r.
        let s = Session::new(r2i, i2r)?;
        Ok((s, join(&public, &conf_tag)))
    })())
}

/// The keys and nonce counters of one encrypted connection, and its private buffer for
/// sealing and opening (frames are sealed and opened there, never in shared memory).
pub(crate) struct Session {
    tx_key: Secret,
    rx_key: Secret,
    /// Nonce of the next frame we send / expect.
    tx_ctr: u64,
    rx_ctr: u64,
    /// One frame's payload: ciphertext and tag, at most `MAX_PAYLOAD` bytes.
    buf: KVec<u8>,
}

impl Drop for Session {
    fn drop(&mut self) {
        c::wipe(&mut self.buf);
    }
}

/// The associated data of a data frame: the header fields that give its payload its
/// meaning (`len`, `op`, `type`, `flags`, ports); the credit fields are not authenticated.
fn ad(hdr: &FrameHeader) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&hdr.len.to_le_bytes());
    b[4..6].copy_from_slice(&(hdr.op as u16).to_le_bytes());
    b[6..8].copy_from_slice(&(hdr.ty as u16).to_le_bytes());
    b[8..12].copy_from_slice(&hdr.flags.to_le_bytes());
    b[12..16].copy_from_slice(&hdr.src_port.to_le_bytes());
    b[16..20].copy_from_slice(&hdr.dst_port.to_le_bytes());
    b
}

impl Session {
    fn new(tx_key: Secret, rx_key: Secret) -> Result<KBox<Self>, HsError> {
        let mut buf =
            KVec::with_capacity(MAX_PAYLOAD as usize, GFP_KERNEL).map_err(|_| HsError::Local)?;
        buf.resize(MAX_PAYLOAD as usize, 0, GFP_KERNEL)
            .map_err(|_| HsError::Local)?;
        KBox::new(
            Self {
                tx_key,
                rx_key,
                tx_ctr: 0,
                rx_ctr: 0,
                buf,
            },
            GFP_KERNEL,
        )
        .map_err(|_| HsError::Local)
    }

    /// Seals `plain` for the frame `hdr` (whose `len` is `plain.len() + TAG_LEN`) with the
    /// next nonce, into the private buffer; the caller sends the returned bytes and then
    /// calls [`Session::sent`] (a frame the transport refused is sealed again, with the
    /// same nonce and bytes, when it is retried). `None` if it does not fit a frame.
    pub(crate) fn seal(&mut self, hdr: &FrameHeader, plain: &[u8]) -> Option<&[u8]> {
        let n = plain.len() + TAG_LEN;
        if hdr.len as usize != n || self.tx_ctr == u64::MAX {
            return None;
        }
        let dst = self.buf.get_mut(..n)?;
        c::seal(dst, plain, &ad(hdr), self.tx_ctr, self.tx_key.bytes()).then_some(&*dst)
    }

    /// The frame sealed last went to the transport: the next one takes the next nonce.
    pub(crate) fn sent(&mut self) {
        self.tx_ctr = self.tx_ctr.wrapping_add(1);
    }

    /// Copies the payload of the received frame `hdr` out of shared memory into the private
    /// buffer, then verifies and decrypts it there with the next nonce: the plaintext, or
    /// `None` (wrong tag, replayed, reordered or dropped frame, truncated payload).
    pub(crate) fn open(&mut self, hdr: &FrameHeader, payload: &dyn RxPayload) -> Option<&[u8]> {
        let n = payload.len();
        if n != hdr.len as usize || n < TAG_LEN || self.rx_ctr == u64::MAX {
            return None;
        }
        let buf = self.buf.get_mut(..n)?;
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; `copy_to` only writes
        // initialised bytes into it, so `buf` stays initialised.
        let dst = unsafe { &mut *(core::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
        if payload.copy_to(dst) != n {
            return None;
        }
        if !c::open_in_place(buf, &ad(hdr), self.rx_ctr, self.rx_key.bytes()) {
            return None;
        }
        self.rx_ctr = self.rx_ctr.wrapping_add(1);
        self.buf.get(..n - TAG_LEN)
    }
}
