// SPDX-License-Identifier: GPL-2.0

//! Busy polling (in the spirit of `SO_BUSY_POLL`): before a blocking receive, accept or
//! connect goes to sleep, the caller runs the domain's receive pass itself for a short
//! window, so that a reply that comes within it is delivered without a doorbell, an
//! interrupt, a kworker and a wake-up.
//!
//! The window is per endpoint (`SO_BUSY_POLL`, `VMCS_IOC_SET_BUSY_POLL`), else the
//! domain's default (module parameter `busy_poll_us`). It is never run with the
//! endpoint's lock held (the pass delivers to this very endpoint), never waits for a pass
//! that runs elsewhere (`Transport::busy_poll` takes the receive lock only if it is free),
//! leaves the data doorbells unarmed while it spins (the consumer is awake, so producers
//! do not ring), and ends with one pass that arms them again (or hands that to the
//! receive work). It stops as soon as the caller would not wait, on a signal, when the
//! scheduler wants the CPU or another task is runnable on it (a sender in this guest, the
//! receive work after a doorbell: spinning would only delay them), at the end of the
//! window, or when the caller's timeout runs out; the time spent is taken from that
//! timeout. A window of 0 costs one atomic load. The window is measured with the
//! monotonic clock, so on a guest whose clocksource is jiffies (the test guests) it ends
//! at the next tick at the earliest.

use super::{Endpoint, EndpointInner, Phase, Timeout};
use crate::{conn::Conns, glue::sched, proto::frame::flags, uapi};
use core::sync::atomic::Ordering::Relaxed;
use kernel::time::{Delta, Instant, Monotonic};

/// [`Endpoint`]'s `busy_us` when the endpoint uses its domain's default window.
pub(super) const BUSY_POLL_DEFAULT: u32 = u32::MAX;

impl Endpoint {
    /// The busy-poll window in use, in microseconds.
    pub(crate) fn busy_poll_us(&self, conns: &Conns<'_>) -> u32 {
        match self.busy_us.load(Relaxed) {
            BUSY_POLL_DEFAULT => conns.busy_poll_default(),
            us => us,
        }
    }

    /// Sets the busy-poll window (clamped to `VMCS_MAX_BUSY_POLL_US`); returns the value
    /// in use.
    pub(crate) fn set_busy_poll_us(&self, us: u32) -> u32 {
        let us = us.min(uapi::MAX_BUSY_POLL_US);
        self.busy_us.store(us, Relaxed);
        us
    }

    /// Busy-polls until `ready` holds (the caller would not wait), for at most the
    /// endpoint's window and what is left of `timeout` (which it decreases). Called with
    /// no lock held, right before the caller takes the endpoint's lock and waits.
    pub(super) fn busy_poll(
        &self,
        conns: &Conns<'_>,
        timeout: &mut Timeout,
        ready: impl Fn(&EndpointInner) -> bool,
    ) {
        let us = self.busy_poll_us(conns);
        if us == 0 || timeout.0 <= 0 {
            return;
        }
        let mut limit = us;
        if *timeout != Timeout::FOREVER {
            // `timeout.0` is positive here.
            limit = limit.min(sched::jiffies_to_usecs(timeout.0 as kernel::ffi::c_ulong));
        }
        let limit = Delta::from_micros(i64::from(limit));
        let start = Instant::<Monotonic>::now();
        let j0 = sched::jiffies();
        if ready(&self.inner.lock()) {
            return;
        }
        let mut ran = false;
        loop {
            // A pass before every stop check: a doorbell that woke the receive work (which
            // makes another task runnable) is served here rather than after a sleep.
            ran |= conns.busy_poll_rx(false);
            if ready(&self.inner.lock())
                || sched::signal_pending()
                || sched::need_resched()
                || !sched::single_task_running()
                || start.elapsed() >= limit
            {
                break;
            }
            kernel::processor::cpu_relax();
        }
        if ran {
            // Arm the doorbells again (or have the receive work do it).
            conns.busy_poll_rx(true);
        }
        if *timeout != Timeout::FOREVER {
            let spent = sched::jiffies().wrapping_sub(j0);
            let spent = kernel::ffi::c_long::try_from(spent).unwrap_or(timeout.0);
            // At least one jiffy stays, so that the caller looks once more before `EAGAIN`.
            timeout.0 = (timeout.0 - spent).max(1);
        }
    }
}

impl EndpointInner {
    /// A receive would not wait: something to read, end of file or an error (the
    /// conditions of `Endpoint::wait_readable`).
    pub(super) fn recv_ready(&self) -> bool {
        !self.was_connected
            || self.local_shut & flags::SHUTDOWN_RCV != 0
            || self.rxq.msgs() > 0
            || self.err.is_some()
            || self.peer_shut & flags::SHUTDOWN_SEND != 0
            || self.phase != Phase::Connected
    }

    /// An accept would not wait.
    pub(super) fn accept_ready(&self) -> bool {
        self.phase != Phase::Listening || !self.pending.is_empty()
    }

    /// A connect would not wait for the answer any more.
    pub(super) fn connect_ready(&self) -> bool {
        self.phase != Phase::Connecting
    }
}
