//! Shared test helpers.
#![allow(dead_code)]

use std::sync::atomic::AtomicU64;

use vmcs_proto::frame::{FrameHeader, Op, SockType};
use vmcs_proto::host::SliceShm;
use vmcs_proto::ring::{Channel, Consumer, Producer};

/// Zeroed region of `bytes` bytes (rounded up to 8).
pub fn region(bytes: usize) -> Vec<AtomicU64> {
    (0..bytes.div_ceil(8)).map(|_| AtomicU64::new(0)).collect()
}

/// An RW stream header with `len` payload bytes.
pub fn rw(len: u32) -> FrameHeader {
    let mut h = FrameHeader::new(Op::Rw, SockType::Stream, 1, 2);
    h.len = len;
    h
}

/// A standalone channel: control block at 0, ring data at 128.
pub fn channel_pair(shm: &SliceShm<'_>, size: u32) -> (Producer, Consumer) {
    let ch = Channel::from_parts(0, 128, size).unwrap();
    let (c, _) = Consumer::open(shm, ch);
    let (mut p, _) = Producer::open(shm, ch);
    let mut c = c;
    // Consumer notices the new epoch and acks it.
    assert!(matches!(
        c.peek(shm),
        Err(vmcs_proto::ring::RingError::Restarted { .. })
    ));
    c.resync(shm);
    assert!(p.prepare_wait(shm, 0).is_ok());
    p.cancel_wait(shm);
    (p, c)
}
