//! File transfer framing of `vmcs send` / `vmcs recv`, over one connection's messages.
//!
//! ```text
//! sender -> receiver  header   "VMCSXF01" | size u64 LE | name_len u16 LE | name (UTF-8)
//! sender -> receiver  data     the file's bytes, in messages of at most MAX_MSG_SIZE
//! sender -> receiver  trailer  "VMCSXEND" | SHA-256 of the data (32 bytes)
//! receiver -> sender  ack      "VMCSXACK" | status u8 (0 ok, 1 checksum, 2 error) | text
//! ```
//!
//! The receiver checks the size and the digest; the sender succeeds only on an `ok` ack, so
//! both ends agree on whether the file arrived whole.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::net::{VmcsStream, MAX_MSG_SIZE};

const HEADER_MAGIC: &[u8; 8] = b"VMCSXF01";
const TRAILER_MAGIC: &[u8; 8] = b"VMCSXEND";
const ACK_MAGIC: &[u8; 8] = b"VMCSXACK";
const ACK_OK: u8 = 0;
const ACK_CHECKSUM: u8 = 1;
const ACK_ERROR: u8 = 2;
/// Longest file name the header carries.
pub const MAX_NAME: usize = 255;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum XferError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the connection ended early, after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("checksum mismatch: sender's SHA-256 {expected}, received data's {got}")]
    Checksum { expected: String, got: String },
    #[error("the receiver rejected the file: {0}")]
    Rejected(String),
}

/// What the header announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub size: u64,
    /// The sender's file name (no directory), possibly empty.
    pub name: String,
}

impl Header {
    /// The header message.
    pub fn encode(&self) -> Vec<u8> {
        let name = &self.name.as_bytes()[..self.name.len().min(MAX_NAME)];
        let mut m = Vec::with_capacity(18 + name.len());
        m.extend_from_slice(HEADER_MAGIC);
        m.extend_from_slice(&self.size.to_le_bytes());
        m.extend_from_slice(&(name.len() as u16).to_le_bytes());
        m.extend_from_slice(name);
        m
    }

    /// Parses a header message.
    pub fn decode(m: &[u8]) -> Result<Header, XferError> {
        if m.len() < 18 || &m[..8] != HEADER_MAGIC {
            return Err(XferError::Protocol(
                "not a vmcs file transfer (bad header; is the sender `vmcs send`?)".into(),
            ));
        }
        let size = u64::from_le_bytes(m[8..16].try_into().expect("8 bytes"));
        let len = u16::from_le_bytes([m[16], m[17]]) as usize;
        if m.len() != 18 + len || len > MAX_NAME {
            return Err(XferError::Protocol("bad header length".into()));
        }
        let name = String::from_utf8(m[18..].to_vec())
            .map_err(|_| XferError::Protocol("file name is not UTF-8".into()))?;
        Ok(Header { size, name })
    }
}

/// Lower-case hex.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn recv_msg(s: &VmcsStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Sends `size` bytes from `data` as file `name`; `progress` gets the bytes sent so far.
/// Returns the digest once the receiver has acknowledged it.
pub fn send_file(
    s: &VmcsStream,
    data: &mut dyn Read,
    name: &str,
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, XferError> {
    s.send(
        &Header {
            size,
            name: name.to_string(),
        }
        .encode(),
    )?;
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    while sent < size {
        let want = (size - sent).min(MAX_MSG_SIZE as u64) as usize;
        let n = data.read(&mut buf[..want])?;
        if n == 0 {
            return Err(XferError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended after {sent} of {size} bytes (did it shrink?)"),
            )));
        }
        s.send(&buf[..n])?;
        hash.update(&buf[..n]);
        sent += n as u64;
        progress(sent);
    }
    let digest: Sha256Digest = hash.finalize().into();
    let mut t = TRAILER_MAGIC.to_vec();
    t.extend_from_slice(&digest);
    s.send(&t)?;
    let n = recv_msg(s, &mut buf)?;
    if n == 0 {
        return Err(XferError::Protocol(
            "the receiver closed without acknowledging".into(),
        ));
    }
    if n < 9 || &buf[..8] != ACK_MAGIC {
        return Err(XferError::Protocol("bad acknowledgement".into()));
    }
    match buf[8] {
        ACK_OK => Ok(digest),
        _ => Err(XferError::Rejected(
            String::from_utf8_lossy(&buf[9..n]).into_owned(),
        )),
    }
}

/// Receives the header message.
pub fn recv_header(s: &VmcsStream) -> Result<Header, XferError> {
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let n = recv_msg(s, &mut buf)?;
    if n == 0 {
        return Err(XferError::Protocol(
            "the sender closed before the header".into(),
        ));
    }
    Header::decode(&buf[..n])
}

/// Refuses a transfer after its header (e.g. the destination exists); the sender fails
/// with [`XferError::Rejected`] carrying `why`.
pub fn reject(s: &VmcsStream, why: &str) {
    ack(s, ACK_ERROR, why);
}

fn ack(s: &VmcsStream, status: u8, text: &str) {
    let mut m = ACK_MAGIC.to_vec();
    m.push(status);
    m.extend_from_slice(text.as_bytes());
    // Best effort: the error being reported matters more than this one.
    let _ = s.send(&m);
}

/// Receives the data and trailer after `h`, writing into `out`, checks the digest and
/// acknowledges. `progress` gets the bytes received so far.
pub fn recv_body(
    s: &VmcsStream,
    h: &Header,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, XferError> {
    let r = recv_body_inner(s, h, out, progress);
    match &r {
        Ok(_) => ack(s, ACK_OK, "ok"),
        Err(e @ XferError::Checksum { .. }) => ack(s, ACK_CHECKSUM, &e.to_string()),
        Err(e) => ack(s, ACK_ERROR, &e.to_string()),
    }
    r
}

fn recv_body_inner(
    s: &VmcsStream,
    h: &Header,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Sha256Digest, XferError> {
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while got < h.size {
        let n = recv_msg(s, &mut buf)?;
        if n == 0 {
            return Err(XferError::Truncated {
                got,
                expected: h.size,
            });
        }
        if n as u64 > h.size - got {
            return Err(XferError::Protocol(format!(
                "more data than the announced {} bytes",
                h.size
            )));
        }
        out.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        got += n as u64;
        progress(got);
    }
    out.flush()?;
    let n = recv_msg(s, &mut buf)?;
    if n == 0 {
        return Err(XferError::Protocol(
            "the sender closed before the checksum".into(),
        ));
    }
    if n != 40 || &buf[..8] != TRAILER_MAGIC {
        return Err(XferError::Protocol("bad trailer".into()));
    }
    let digest: Sha256Digest = hash.finalize().into();
    if buf[8..40] != digest {
        return Err(XferError::Checksum {
            expected: hex(&buf[8..40]),
            got: hex(&digest),
        });
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::pair;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            size: 123456789,
            name: "disk.img".into(),
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert!(Header::decode(b"garbage").is_err());
        let mut m = h.encode();
        m.push(0);
        assert!(Header::decode(&m).is_err());
    }

    fn round_trip(n: usize) {
        let (a, b) = pair();
        let src = data(n);
        let sent = src.clone();
        let t = std::thread::spawn(move || {
            let mut last = 0;
            let d = send_file(&a, &mut &sent[..], "f.bin", sent.len() as u64, &mut |x| {
                last = x
            })
            .unwrap();
            assert_eq!(last, sent.len() as u64);
            d
        });
        let h = recv_header(&b).unwrap();
        assert_eq!(
            h,
            Header {
                size: n as u64,
                name: "f.bin".into()
            }
        );
        let mut out = Vec::new();
        let d = recv_body(&b, &h, &mut out, &mut |_| {}).unwrap();
        assert_eq!(out, src);
        assert_eq!(t.join().unwrap(), d);
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(&src)));
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, MAX_MSG_SIZE - 1, MAX_MSG_SIZE, 3 * MAX_MSG_SIZE + 17] {
            round_trip(n);
        }
    }

    #[test]
    fn corruption_is_detected_and_reported_to_the_sender() {
        let (a, b) = pair();
        let t = std::thread::spawn(move || {
            // A hand-made sender with a wrong digest.
            a.send(
                &Header {
                    size: 3,
                    name: String::new(),
                }
                .encode(),
            )
            .unwrap();
            a.send(b"abc").unwrap();
            let mut t = TRAILER_MAGIC.to_vec();
            t.extend_from_slice(&[0u8; 32]);
            a.send(&t).unwrap();
            let mut buf = [0u8; 256];
            let n = a.recv(&mut buf).unwrap();
            (buf[8], n)
        });
        let h = recv_header(&b).unwrap();
        let e = recv_body(&b, &h, &mut Vec::new(), &mut |_| {}).unwrap_err();
        assert!(matches!(e, XferError::Checksum { .. }), "{e}");
        assert_eq!(t.join().unwrap().0, ACK_CHECKSUM);
    }

    #[test]
    fn truncation_is_detected() {
        let (a, b) = pair();
        a.send(
            &Header {
                size: 10,
                name: String::new(),
            }
            .encode(),
        )
        .unwrap();
        a.send(b"abc").unwrap();
        drop(a);
        let h = recv_header(&b).unwrap();
        let e = recv_body(&b, &h, &mut Vec::new(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                e,
                XferError::Truncated {
                    got: 3,
                    expected: 10
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn sender_sees_rejection() {
        let (a, b) = pair();
        let t = std::thread::spawn(move || send_file(&a, &mut &b"xyz"[..], "x", 3, &mut |_| {}));
        let mut buf = vec![0u8; MAX_MSG_SIZE];
        for _ in 0..3 {
            b.recv(&mut buf).unwrap();
        }
        ack(&b, ACK_ERROR, "disk full");
        let e = t.join().unwrap().unwrap_err();
        assert!(
            matches!(&e, XferError::Rejected(m) if m == "disk full"),
            "{e}"
        );
    }
}
