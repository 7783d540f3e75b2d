// SPDX-License-Identifier: GPL-2.0

//! The transport self-test (debugfs `selftest`): patterned frames to a port no endpoint
//! can bind, checked and counted by the receiving transport.

use super::{Link, SELFTEST_PORT};
use crate::{
    proto::frame::{FrameHeader, Op, SockType},
    transport::{SendError, Upcalls},
};
use kernel::{
    prelude::*,
    time::{delay::fsleep, Delta},
};

/// Longest self-test frame: the pattern is written and checked byte by byte, which under TCG
/// costs far more than the ring; 4 KiB frames keep a run of a few hundred cheap whatever the
/// ring size (frames of several pages, and ring wrap-around, are exercised by the message
/// and socket scenarios and the host property tests).
const SELFTEST_MAX_LEN: u32 = 4064;

impl Link {
    /// Sends `count` self-test frames to `peer` (debugfs `selftest`): stream `RW` frames to
    /// [`SELFTEST_PORT`] of varying length with a checkable pattern, `fwd_cnt` = sequence.
    /// Sleeps while the ring is full (process context only). Returns frames sent.
    pub(crate) fn selftest(&self, up: &impl Upcalls, peer: u32, count: u32) -> Result<u32> {
        let max = self.max_payload(peer).min(SELFTEST_MAX_LEN);
        if max == 0 {
            return Err(EINVAL);
        }
        let mut buf = KVec::from_elem(0u8, max as usize, GFP_KERNEL)?;
        let mut sent = 0;
        let mut waits = 0u32;
        while sent < count {
            let len = 1 + (sent.wrapping_mul(97) % max);
            let mut hdr = FrameHeader::new(Op::Rw, SockType::Stream, SELFTEST_PORT, SELFTEST_PORT);
            hdr.len = len;
            hdr.fwd_cnt = sent;
            let payload = buf.get_mut(..len as usize).ok_or(EINVAL)?;
            fill_pattern(&hdr, payload);
            match self.send(up, peer, &hdr, payload) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => {
                    waits += 1;
                    if waits > 10_000 {
                        return Err(ETIMEDOUT);
                    }
                    self.kick(up);
                    fsleep(Delta::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.kick(up);
        Ok(sent)
    }
}

/// The self-test payload byte at `i` of a frame.
pub(super) fn pattern_byte(hdr: &FrameHeader, i: usize) -> u8 {
    // Truncations intended: a byte pattern.
    (hdr.fwd_cnt as u8).wrapping_mul(31) ^ (i as u8) ^ ((i >> 8) as u8)
}

pub(super) fn fill_pattern(hdr: &FrameHeader, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(hdr, i);
    }
}

pub(super) fn selftest_ok(hdr: &FrameHeader, buf: &[u8]) -> bool {
    buf.len() == hdr.len as usize
        && buf
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(hdr, i))
}
