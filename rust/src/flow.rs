//! Credit-based flow control per connection, as in virtio-vsock
//! (docs/protocol.md §6).
//!
//! All counters are free-running `u32` (wrapping). Values received from the
//! peer are validated so that a hostile peer can never create credit it was
//! not given nor make any computation overflow.

use super::frame::MAX_PAYLOAD;

/// Largest receive buffer a peer may advertise; larger values are clamped.
pub const MAX_BUF_ALLOC: u32 = 64 << 20;

/// Flow-control violations (reset the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowError {
    /// The peer acknowledged more bytes than we ever sent.
    BogusFwdCnt,
    /// The peer sent more than our advertised buffer.
    Overrun,
    /// Sending more than the peer's free credit.
    NoCredit,
    /// Consuming more than was received.
    BadConsume,
}

/// Sender side: what we may send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCredit {
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
}

impl TxCredit {
    /// Fresh state (peer credit unknown → 0 until its first header).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes sent so far (wrapping).
    pub fn tx_cnt(&self) -> u32 {
        self.tx_cnt
    }

    /// Bytes sent but not yet acknowledged by the peer's application.
    pub fn in_flight(&self) -> u32 {
        self.tx_cnt.wrapping_sub(self.peer_fwd_cnt)
    }

    /// Apply `buf_alloc`/`fwd_cnt` from any received header.
    pub fn on_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) -> Result<(), FlowError> {
        // The acknowledgement may only move forward, and not past tx_cnt.
        let acked = fwd_cnt.wrapping_sub(self.peer_fwd_cnt);
        if acked > self.in_flight() {
            return Err(FlowError::BogusFwdCnt);
        }
        self.peer_fwd_cnt = fwd_cnt;
        self.peer_buf_alloc = buf_alloc.min(MAX_BUF_ALLOC);
        Ok(())
    }

    /// Bytes we may send now. Never exceeds the peer's (clamped) buffer.
    pub fn peer_free(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.in_flight())
    }

    /// Account `n` bytes sent.
    pub fn on_send(&mut self, n: u32) -> Result<(), FlowError> {
        if n > self.peer_free() {
            return Err(FlowError::NoCredit);
        }
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
        Ok(())
    }

    /// Give back `n` bytes that [`Self::on_send`] accounted but that never left (a send
    /// cut short by a fault in the sender's buffer). The peer cannot have acknowledged
    /// bytes it never got, so they are in flight; more than that is clamped.
    pub fn on_unsend(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_sub(n.min(self.in_flight()));
    }
}

/// Receiver side: what we advertise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCredit {
    buf_alloc: u32,
    rx_cnt: u32,
    fwd_cnt: u32,
    adv_fwd_cnt: u32,
    adv_buf_alloc: u32,
    max_adv_buf_alloc: u32,
}

impl RxCredit {
    /// Receiver with a buffer of `buf_alloc` bytes (clamped to
    /// [`MAX_BUF_ALLOC`]).
    pub fn new(buf_alloc: u32) -> Self {
        Self {
            buf_alloc: buf_alloc.min(MAX_BUF_ALLOC),
            ..Self::default()
        }
    }

    /// Bytes received and not yet consumed by the application.
    pub fn queued(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// Account `n` received payload bytes; `Overrun` if the peer exceeded the
    /// buffer we advertised (the connection must be reset).
    pub fn on_recv(&mut self, n: u32) -> Result<(), FlowError> {
        // The peer may have sent under any buffer size we ever advertised on
        // this connection (shrinking only affects future credit), so the
        // limit is the largest advertisement.
        let limit = self.max_adv_buf_alloc;
        match self.queued().checked_add(n) {
            Some(q) if q <= limit => {
                self.rx_cnt = self.rx_cnt.wrapping_add(n);
                Ok(())
            }
            _ => Err(FlowError::Overrun),
        }
    }

    /// The application consumed `n` bytes.
    pub fn on_consumed(&mut self, n: u32) -> Result<(), FlowError> {
        if n > self.queued() {
            return Err(FlowError::BadConsume);
        }
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
        Ok(())
    }

    /// Change the buffer size (`SO_RCVBUF`-like).
    pub fn set_buf_alloc(&mut self, v: u32) {
        self.buf_alloc = v.min(MAX_BUF_ALLOC);
    }

    /// Values to stamp into an outgoing header (`buf_alloc`, `fwd_cnt`); marks
    /// them advertised.
    pub fn advertise(&mut self) -> (u32, u32) {
        self.adv_fwd_cnt = self.fwd_cnt;
        self.adv_buf_alloc = self.buf_alloc;
        self.max_adv_buf_alloc = self.max_adv_buf_alloc.max(self.buf_alloc);
        (self.buf_alloc, self.fwd_cnt)
    }

    /// Free space as the peer currently believes it to be.
    pub fn peer_view_free(&self) -> u32 {
        self.adv_buf_alloc
            .saturating_sub(self.rx_cnt.wrapping_sub(self.adv_fwd_cnt))
    }

    /// Whether to send a `CREDIT_UPDATE` now: something was freed since the
    /// last advertisement and either a quarter of the buffer was freed or the peer
    /// believes it has less than one max payload (or less than half the
    /// buffer, for small buffers) of room.
    pub fn needs_update(&self) -> bool {
        let freed = self.fwd_cnt.wrapping_sub(self.adv_fwd_cnt);
        if freed == 0 && self.buf_alloc <= self.adv_buf_alloc {
            return false;
        }
        let low = MAX_PAYLOAD.min(self.buf_alloc / 2);
        freed >= self.buf_alloc / 4
            || self.peer_view_free() < low.max(1)
            || self.buf_alloc > self.adv_buf_alloc
    }
}
