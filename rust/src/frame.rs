//! Frame header: fixed 32 bytes, little-endian (docs/protocol.md §5.1).
//!
//! Decoding validates everything; a header that decodes is internally
//! consistent. Bounds that depend on the channel (ring size, available bytes)
//! are checked by the ring.

/// Size of the encoded header.
pub const FRAME_HDR_SIZE: usize = 32;
/// Largest payload of a single frame.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// Exact payload length of the bulk ops (two u32: offset, length).
pub const BULK_PAYLOAD: u32 = 8;
/// Payload length of a `REQUEST` or `RESPONSE` that carries the encryption handshake
/// (docs/protocol.md §6.1: an X25519 public key, 32 bytes, then a 16-byte tag). The other
/// allowed length is 0 (plaintext). Sent only to peers that advertise
/// `peer::FEAT_CRYPTO`.
pub const HANDSHAKE_PAYLOAD: u32 = 48;
/// Bytes an encrypted `RW` frame carries beyond its plaintext (the Poly1305 tag); also the
/// whole payload of an encrypted connection's `SHUTDOWN` (the tag of an empty plaintext
/// under the sender's next nonce, which authenticates how many frames it sent before).
pub const AEAD_TAG: u32 = 16;

/// Frame operation (values as in virtio-vsock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Accept of a connection request.
    Response = 2,
    /// Reject / reset.
    Rst = 3,
    /// Per-direction shutdown (see [`flags`]).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// Unsolicited credit update.
    CreditUpdate = 6,
    /// Ask the peer for a credit update.
    CreditRequest = 7,
    /// Bulk area: the sender's extent for this connection (payload: off, len
    /// relative to the sender's slice; docs/protocol.md §8).
    BulkOffer = 8,
    /// Bulk area: a range of the sender's extent now belongs to the receiver
    /// (payload: off, len relative to the extent).
    BulkData = 9,
    /// Bulk area: the oldest range received is handed back (payload: the same
    /// off, len as its `BULK_DATA`).
    BulkRelease = 10,
    /// An Ethernet frame for the domain's net device (docs/protocol.md §10): the payload
    /// is the whole frame from the destination MAC on; `flags` may carry
    /// [`flags::ETH_CSUM_PARTIAL`], with the checksum's start and offset in the port fields.
    Eth = 11,
}

impl Op {
    /// Decode a wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            8 => Op::BulkOffer,
            9 => Op::BulkData,
            10 => Op::BulkRelease,
            11 => Op::Eth,
            _ => return None,
        })
    }
}

/// Socket type of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum SockType {
    /// Byte stream (`SOCK_STREAM`).
    Stream = 1,
    /// Record-preserving (`SOCK_SEQPACKET`).
    SeqPacket = 2,
}

impl SockType {
    /// Decode a wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(SockType::Stream),
            2 => Some(SockType::SeqPacket),
            _ => None,
        }
    }
}

/// Flag bits. Their meaning depends on the op.
pub mod flags {
    /// `SHUTDOWN`: the sender will receive no more data.
    pub const SHUTDOWN_RCV: u32 = 1 << 0;
    /// `SHUTDOWN`: the sender will send no more data.
    pub const SHUTDOWN_SEND: u32 = 1 << 1;
    /// `RW` on SEQPACKET: last frame of a message.
    pub const EOM: u32 = 1 << 0;
    /// `RW` on SEQPACKET: message sent with `MSG_EOR` (only together with EOM).
    pub const EOR: u32 = 1 << 1;
    /// `ETH`: the frame's transport checksum is not computed yet; `src_port` is the
    /// checksum's start (from the frame's first byte), `dst_port` its offset from there.
    pub const ETH_CSUM_PARTIAL: u32 = 1 << 0;
    /// `RST`: the connection was refused by the encryption policy or the handshake failed
    /// (wrong pre-shared key, plaintext under `require`); sent only to peers that advertise
    /// `peer::FEAT_CRYPTO`.
    pub const RST_AUTH: u32 = 1 << 0;
}

/// `ETH` frames carrying a GSO packet (docs/protocol.md §10): `buf_alloc` is the segment
/// size (`gso_size`, the MSS), `fwd_cnt` the type below; both 0 for a plain frame. A GSO
/// frame also has [`flags::ETH_CSUM_PARTIAL`] (its TCP checksum is left to whoever
/// segments it).
pub mod eth_gso {
    /// A TCP over IPv4 packet larger than one segment.
    pub const TCPV4: u32 = 1;
    /// A TCP over IPv6 packet larger than one segment.
    pub const TCPV6: u32 = 2;
    /// With `TCPV4`/`TCPV6`: the packet has ECN's CWR set (`SKB_GSO_TCP_ECN`).
    pub const ECN: u32 = 1 << 8;
}

/// Why a header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Unknown op.
    BadOp,
    /// Unknown socket type.
    BadType,
    /// Flag bits not allowed for this op/type.
    BadFlags,
    /// Length not allowed (too long, or payload on a control op).
    BadLen,
    /// Reserved field not zero.
    Reserved,
}

/// A decoded, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Operation.
    pub op: Op,
    /// Socket type.
    pub ty: SockType,
    /// Op-specific flags.
    pub flags: u32,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender's application has consumed on this connection.
    pub fwd_cnt: u32,
}

fn rd_u32(b: &[u8; FRAME_HDR_SIZE], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn rd_u16(b: &[u8; FRAME_HDR_SIZE], at: usize) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    u16::from_le_bytes(w)
}

fn wr(b: &mut [u8; FRAME_HDR_SIZE], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// Check the op/type/flags/len combination (shared by encode-side checks and
/// decode).
fn check(op: Op, ty: SockType, fl: u32, len: u32) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::BadLen);
    }
    match op {
        Op::Rw => {
            let allowed = match ty {
                SockType::Stream => 0,
                SockType::SeqPacket => flags::EOM | flags::EOR,
            };
            if fl & !allowed != 0 || (fl & flags::EOR != 0 && fl & flags::EOM == 0) {
                return Err(FrameError::BadFlags);
            }
            if len == 0 && fl & flags::EOM == 0 {
                return Err(FrameError::BadLen);
            }
        }
        Op::Eth => {
            // The socket type is not meaningful for Ethernet frames: always STREAM.
            if ty != SockType::Stream {
                return Err(FrameError::BadType);
            }
            if fl & !flags::ETH_CSUM_PARTIAL != 0 {
                return Err(FrameError::BadFlags);
            }
            if len == 0 {
                return Err(FrameError::BadLen);
            }
        }
        Op::Shutdown => {
            let all = flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND;
            if fl & !all != 0 || fl == 0 {
                return Err(FrameError::BadFlags);
            }
        }
        Op::Rst => {
            if fl & !flags::RST_AUTH != 0 {
                return Err(FrameError::BadFlags);
            }
        }
        _ => {
            if fl != 0 {
                return Err(FrameError::BadFlags);
            }
        }
    }
    match op {
        Op::Rw | Op::Eth => {}
        Op::Request | Op::Response => {
            if len != 0 && len != HANDSHAKE_PAYLOAD {
                return Err(FrameError::BadLen);
            }
        }
        // An encrypted connection's `SHUTDOWN` carries a tag (docs/protocol.md §6.1).
        Op::Shutdown => {
            if len != 0 && len != AEAD_TAG {
                return Err(FrameError::BadLen);
            }
        }
        Op::BulkOffer | Op::BulkData | Op::BulkRelease => {
            if len != BULK_PAYLOAD {
                return Err(FrameError::BadLen);
            }
        }
        _ => {
            if len != 0 {
                return Err(FrameError::BadLen);
            }
        }
    }
    Ok(())
}

impl FrameHeader {
    /// A header with the given op/type/ports and everything else zero.
    pub fn new(op: Op, ty: SockType, src_port: u32, dst_port: u32) -> Self {
        Self {
            len: 0,
            op,
            ty,
            flags: 0,
            src_port,
            dst_port,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    /// Whether this header would pass [`FrameHeader::decode`].
    pub fn validate(&self) -> Result<(), FrameError> {
        check(self.op, self.ty, self.flags, self.len)
    }

    /// Encode to wire format (reserved field zero). Does not validate; use
    /// [`FrameHeader::validate`] first when the fields come from untrusted
    /// callers.
    pub fn encode(&self) -> [u8; FRAME_HDR_SIZE] {
        let mut b = [0u8; FRAME_HDR_SIZE];
        wr(&mut b, 0, &self.len.to_le_bytes());
        wr(&mut b, 4, &(self.op as u16).to_le_bytes());
        wr(&mut b, 6, &(self.ty as u16).to_le_bytes());
        wr(&mut b, 8, &self.flags.to_le_bytes());
        wr(&mut b, 12, &self.src_port.to_le_bytes());
        wr(&mut b, 16, &self.dst_port.to_le_bytes());
        wr(&mut b, 20, &self.buf_alloc.to_le_bytes());
        wr(&mut b, 24, &self.fwd_cnt.to_le_bytes());
        b
    }

    /// Decode and validate a header copied out of shared memory.
    pub fn decode(b: &[u8; FRAME_HDR_SIZE]) -> Result<Self, FrameError> {
        let len = rd_u32(b, 0);
        let op = Op::from_u16(rd_u16(b, 4)).ok_or(FrameError::BadOp)?;
        let ty = SockType::from_u16(rd_u16(b, 6)).ok_or(FrameError::BadType)?;
        let fl = rd_u32(b, 8);
        if rd_u32(b, 28) != 0 {
            return Err(FrameError::Reserved);
        }
        check(op, ty, fl, len)?;
        Ok(Self {
            len,
            op,
            ty,
            flags: fl,
            src_port: rd_u32(b, 12),
            dst_port: rd_u32(b, 16),
            buf_alloc: rd_u32(b, 20),
            fwd_cnt: rd_u32(b, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let mut h = FrameHeader::new(Op::Rw, SockType::SeqPacket, 7, 9);
        h.len = 100;
        h.flags = flags::EOM | flags::EOR;
        h.buf_alloc = 1 << 20;
        h.fwd_cnt = 12345;
        assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));

        let mut b = h.encode();
        b[28] = 1;
        assert_eq!(FrameHeader::decode(&b), Err(FrameError::Reserved));
        let mut b = h.encode();
        b[4] = 0;
        assert_eq!(FrameHeader::decode(&b), Err(FrameError::BadOp));
        let mut b = h.encode();
        b[6] = 3;
        assert_eq!(FrameHeader::decode(&b), Err(FrameError::BadType));

        let s = FrameHeader::new(Op::Shutdown, SockType::Stream, 1, 2);
        assert_eq!(FrameHeader::decode(&s.encode()), Err(FrameError::BadFlags));
        let mut r = FrameHeader::new(Op::Request, SockType::Stream, 1, 2);
        r.len = 1;
        assert_eq!(r.validate(), Err(FrameError::BadLen));
        for op in [Op::Request, Op::Response] {
            let mut h = FrameHeader::new(op, SockType::Stream, 1, 2);
            h.len = HANDSHAKE_PAYLOAD;
            assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
            h.len = HANDSHAKE_PAYLOAD - 1;
            assert_eq!(h.validate(), Err(FrameError::BadLen));
        }
        let mut sh = FrameHeader::new(Op::Shutdown, SockType::Stream, 1, 2);
        sh.flags = flags::SHUTDOWN_SEND;
        for (len, ok) in [
            (0, true),
            (AEAD_TAG, true),
            (AEAD_TAG - 1, false),
            (AEAD_TAG + 1, false),
        ] {
            sh.len = len;
            assert_eq!(sh.validate().is_ok(), ok, "SHUTDOWN len {len}");
        }
        let mut rst = FrameHeader::new(Op::Rst, SockType::Stream, 1, 2);
        rst.flags = flags::RST_AUTH;
        assert_eq!(FrameHeader::decode(&rst.encode()), Ok(rst));
        rst.flags = 2;
        assert_eq!(rst.validate(), Err(FrameError::BadFlags));
        let mut big = FrameHeader::new(Op::Rw, SockType::Stream, 1, 2);
        big.len = MAX_PAYLOAD + 1;
        assert_eq!(big.validate(), Err(FrameError::BadLen));
    }

    #[test]
    fn bulk_ops() {
        for op in [Op::BulkOffer, Op::BulkData, Op::BulkRelease] {
            assert_eq!(Op::from_u16(op as u16), Some(op));
            let mut h = FrameHeader::new(op, SockType::SeqPacket, 1, 2);
            h.len = BULK_PAYLOAD;
            assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
            for bad in [0, 7, 9, 16] {
                h.len = bad;
                assert_eq!(h.validate(), Err(FrameError::BadLen));
            }
            h.len = BULK_PAYLOAD;
            h.flags = 1;
            assert_eq!(h.validate(), Err(FrameError::BadFlags));
        }
        assert_eq!(Op::from_u16(12), None);
    }

    #[test]
    fn eth_op() {
        assert_eq!(Op::from_u16(11), Some(Op::Eth));
        let mut h = FrameHeader::new(Op::Eth, SockType::Stream, 0, 0);
        h.len = 60;
        assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
        h.flags = flags::ETH_CSUM_PARTIAL;
        h.src_port = 34;
        h.dst_port = 16;
        assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
        h.len = MAX_PAYLOAD;
        assert_eq!(h.validate(), Ok(()));
        h.len = MAX_PAYLOAD + 1;
        assert_eq!(h.validate(), Err(FrameError::BadLen));
        h.len = 0;
        assert_eq!(h.validate(), Err(FrameError::BadLen));
        h.len = 60;
        h.flags = 2;
        assert_eq!(h.validate(), Err(FrameError::BadFlags));
        h.flags = 0;
        h.ty = SockType::SeqPacket;
        assert_eq!(h.validate(), Err(FrameError::BadType));
    }
}
