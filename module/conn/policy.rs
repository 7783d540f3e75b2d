// SPDX-License-Identifier: GPL-2.0

//! Access control of one domain (docs/security.md "Access control"): three allow-lists,
//! checked by [`Policy::check`] from one place on each path.
//!
//! - `CONNECT_IN`: (peer, local port) pairs whose `REQUEST` a listener may see
//!   (`Conns::deliver`); anything else is answered with `RST`, as when nothing listens.
//! - `CONNECT_OUT`: (peer, remote port) pairs this guest may connect to
//!   (`Endpoint::connect`, `EPERM`).
//! - `BIND`: local ports an explicit bind may take (`Endpoint::bind`, `EACCES`).
//!
//! Loopback (this guest to itself) is not filtered. A rule's cid or port may be the
//! wildcard (`VMCS_CID_ANY`, `VMCS_PORT_ANY`). The default of every list is one rule
//! `any:any`: everything is allowed, as before the policy existed. At most
//! [`uapi::POLICY_MAX_RULES`] rules per domain, all lists together (`ENOSPC` beyond).
//! Checks only look at new connections and binds: removing a rule leaves established
//! connections and bound ports alone.
//!
//! The rules sit under one spinlock (the check never sleeps, and nothing allocates under
//! it: the vector's capacity is reserved when the domain is made); the counters are atomics.

use crate::uapi::{self, VmcsPolicyRule};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kernel::{
    new_spinlock,
    prelude::*,
    sync::SpinLock,
    time::{Instant, Monotonic},
};

/// Log lines per window, then counted and summarised (as the transport's per-peer limit).
const LOG_BURST: u32 = 10;
/// The log window.
const LOG_WINDOW_MS: u64 = 5000;

/// One of the three allow-lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum List {
    /// Who may connect to this guest's listeners (peer, local port).
    ConnectIn,
    /// Where this guest may connect to (peer, remote port).
    ConnectOut,
    /// Which local ports may be bound.
    Bind,
}

impl List {
    const ALL: [List; 3] = [List::ConnectIn, List::ConnectOut, List::Bind];

    /// The list a `VMCS_POLICY_*` number names.
    fn from_uapi(v: u32) -> Result<Self> {
        match v {
            uapi::POLICY_CONNECT_IN => Ok(List::ConnectIn),
            uapi::POLICY_CONNECT_OUT => Ok(List::ConnectOut),
            uapi::POLICY_BIND => Ok(List::Bind),
            _ => Err(EINVAL),
        }
    }

    /// Its `VMCS_POLICY_*` number.
    fn to_uapi(self) -> u32 {
        match self {
            List::ConnectIn => uapi::POLICY_CONNECT_IN,
            List::ConnectOut => uapi::POLICY_CONNECT_OUT,
            List::Bind => uapi::POLICY_BIND,
        }
    }

    /// The lists a `VMCS_IOC_POLICY_CLEAR`/`_RESET` argument names (`VMCS_POLICY_ALL`: all).
    fn selection(v: u32) -> Result<&'static [List]> {
        Ok(match v {
            uapi::POLICY_ALL => &Self::ALL,
            uapi::POLICY_CONNECT_IN => &[List::ConnectIn],
            uapi::POLICY_CONNECT_OUT => &[List::ConnectOut],
            uapi::POLICY_BIND => &[List::Bind],
            _ => return Err(EINVAL),
        })
    }

    fn index(self) -> usize {
        match self {
            List::ConnectIn => 0,
            List::ConnectOut => 1,
            List::Bind => 2,
        }
    }

    /// Name in the log and in debugfs `policy` (the CLI's words).
    fn name(self) -> &'static str {
        match self {
            List::ConnectIn => "in",
            List::ConnectOut => "out",
            List::Bind => "bind",
        }
    }
}

/// One validated rule.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Rule {
    list: List,
    /// Peer id or `CID_ANY` (always `CID_ANY` for `Bind`).
    cid: u32,
    /// Port or `PORT_ANY`.
    port: u32,
}

impl Rule {
    /// The wildcard rule of `list`: its default.
    fn any(list: List) -> Self {
        Self {
            list,
            cid: uapi::CID_ANY,
            port: uapi::PORT_ANY,
        }
    }

    /// Validates a rule from user space: a known list, flags 0, no `VMCS_CID_LOCAL`
    /// (loopback is never filtered), and a bind rule names no peer.
    fn from_uapi(r: &VmcsPolicyRule) -> Result<Self> {
        let list = List::from_uapi(r.list)?;
        if r.flags != 0 || r.cid == uapi::CID_LOCAL {
            return Err(EINVAL);
        }
        if list == List::Bind && r.cid != uapi::CID_ANY {
            return Err(EINVAL);
        }
        Ok(Self {
            list,
            cid: r.cid,
            port: r.port,
        })
    }

    fn matches(&self, list: List, cid: u32, port: u32) -> bool {
        self.list == list
            && (self.cid == uapi::CID_ANY || self.cid == cid)
            && (self.port == uapi::PORT_ANY || self.port == port)
    }
}

/// The log rate limit's window.
struct LogWindow {
    start_ms: u64,
    lines: u32,
    dropped: u64,
}

/// The access-control state of one domain.
#[pin_data]
pub(crate) struct Policy {
    /// INVARIANT: at most `POLICY_MAX_RULES` rules, no two equal; the capacity is
    /// `POLICY_MAX_RULES` from creation on, so pushes never allocate.
    #[pin]
    rules: SpinLock<KVec<Rule>>,
    #[pin]
    log: SpinLock<LogWindow>,
    /// Denials per list (`List::index`).
    denied: [AtomicU64; 3],
    t0: Instant<Monotonic>,
}

/// A copy of the policy (`VMCS_IOC_POLICY_GET`).
pub(crate) struct Snapshot {
    pub(crate) rules: KVec<VmcsPolicyRule>,
    pub(crate) denied: [u64; 3],
}

impl Policy {
    /// The default policy: every list allows everything.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            rules <- new_spinlock!(Self::default_rules()?, "vmcs_policy"),
            log <- new_spinlock!(LogWindow { start_ms: 0, lines: 0, dropped: 0 }, "vmcs_policy_log"),
            denied: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            t0: Instant::<Monotonic>::now(),
        })
    }

    fn default_rules() -> Result<KVec<Rule>> {
        let mut v = KVec::with_capacity(uapi::POLICY_MAX_RULES as usize, GFP_KERNEL)?;
        for l in List::ALL {
            v.push(Rule::any(l), GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Whether `list` allows (`cid`, `port`); a denial is counted and logged (rate
    /// limited). `Err` is the errno of the denial: `EPERM` for `ConnectOut`, `EACCES` for
    /// `Bind`, `ECONNREFUSED` for `ConnectIn` (the caller answers the `REQUEST` with `RST`).
    /// Never sleeps.
    pub(crate) fn check(&self, list: List, local: u32, cid: u32, port: u32) -> Result {
        if list != List::Bind && cid == local {
            return Ok(());
        }
        let allowed = self.rules.lock().iter().any(|r| r.matches(list, cid, port));
        if allowed {
            return Ok(());
        }
        if let Some(c) = self.denied.get(list.index()) {
            c.fetch_add(1, Relaxed);
        }
        self.log_denial(list, local, cid, port);
        Err(match list {
            List::ConnectIn => crate::glue::errno::econnrefused(),
            List::ConnectOut => EPERM,
            List::Bind => EACCES,
        })
    }

    /// Logs a denial under the rate limit ([`LOG_BURST`] lines per [`LOG_WINDOW_MS`]).
    fn log_denial(&self, list: List, local: u32, cid: u32, port: u32) {
        let now = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(0);
        let (log, summary) = {
            let mut w = self.log.lock();
            let mut summary = 0;
            if w.lines == 0 || now.saturating_sub(w.start_ms) >= LOG_WINDOW_MS {
                summary = core::mem::replace(&mut w.dropped, 0);
                w.start_ms = now;
                w.lines = 0;
            }
            if w.lines < LOG_BURST {
                w.lines += 1;
                (true, summary)
            } else {
                w.dropped += 1;
                (false, summary)
            }
        };
        if summary != 0 {
            pr_warn!(
                "vmcs: cid {}: policy: {} more denials not logged (rate limit: {} lines per {} s)\n",
                local,
                summary,
                LOG_BURST,
                LOG_WINDOW_MS / 1000
            );
        }
        if !log {
            return;
        }
        match list {
            List::ConnectIn => pr_warn!(
                "vmcs: cid {}: policy: refused a connect from peer {} to port {} (not in the in allow-list)\n",
                local,
                cid,
                port
            ),
            List::ConnectOut => pr_warn!(
                "vmcs: cid {}: policy: denied a connect to {}:{} (not in the out allow-list, EPERM)\n",
                local,
                cid,
                port
            ),
            List::Bind => pr_warn!(
                "vmcs: cid {}: policy: denied a bind of port {} (not in the bind allow-list, EACCES)\n",
                local,
                port
            ),
        }
    }

    /// `VMCS_IOC_POLICY_ADD`: `EEXIST` if the rule is there, `ENOSPC` when the table is full.
    pub(crate) fn add(&self, r: &VmcsPolicyRule) -> Result {
        let rule = Rule::from_uapi(r)?;
        let mut rules = self.rules.lock();
        if rules.contains(&rule) {
            return Err(EEXIST);
        }
        if rules.len() >= uapi::POLICY_MAX_RULES as usize {
            return Err(ENOSPC);
        }
        rules.push_within_capacity(rule).map_err(|_| ENOSPC)
    }

    /// `VMCS_IOC_POLICY_DEL`: removes the rule equal to `r` (`ENOENT` if none).
    pub(crate) fn del(&self, r: &VmcsPolicyRule) -> Result {
        let rule = Rule::from_uapi(r)?;
        let mut rules = self.rules.lock();
        let i = rules.iter().position(|x| *x == rule).ok_or(ENOENT)?;
        rules.remove(i).map_err(|_| ENOENT)?;
        Ok(())
    }

    /// `VMCS_IOC_POLICY_CLEAR` (`reset` false: the lists end empty, denying everything
    /// but loopback) and `VMCS_IOC_POLICY_RESET` (true: back to the default `any:any`).
    pub(crate) fn clear(&self, which: u32, reset: bool) -> Result {
        let lists = List::selection(which)?;
        let mut rules = self.rules.lock();
        rules.retain(|r| !lists.contains(&r.list));
        if reset {
            for l in lists {
                // `ENOSPC` only when one list is reset while the others fill the table.
                rules
                    .push_within_capacity(Rule::any(*l))
                    .map_err(|_| ENOSPC)?;
            }
        }
        Ok(())
    }

    /// A copy of the rules (in table order) and the denial counters.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let mut out = KVec::with_capacity(uapi::POLICY_MAX_RULES as usize, GFP_KERNEL)?;
        {
            let rules = self.rules.lock();
            for r in rules.iter() {
                let v = VmcsPolicyRule {
                    list: r.list.to_uapi(),
                    cid: r.cid,
                    port: r.port,
                    flags: 0,
                };
                // Capacity reserved above for the most the table holds.
                if out.push_within_capacity(v).is_err() {
                    break;
                }
            }
        }
        Ok(Snapshot {
            rules: out,
            denied: self.denied.each_ref().map(|c| c.load(Relaxed)),
        })
    }

    /// debugfs `policy`: one line per rule (`allow LIST CID:PORT`, `any` for wildcards),
    /// then `denied_in N`, `denied_out N`, `denied_bind N`.
    pub(crate) fn show(&self, out: &mut impl core::fmt::Write) -> core::fmt::Result {
        let Ok(s) = self.snapshot() else {
            return writeln!(out, "(no memory)");
        };
        for r in s.rules.iter() {
            let name = List::from_uapi(r.list).map_or("?", List::name);
            write!(out, "allow {} ", name)?;
            if r.list != uapi::POLICY_BIND {
                if r.cid == uapi::CID_ANY {
                    write!(out, "any:")?;
                } else {
                    write!(out, "{}:", r.cid)?;
                }
            }
            if r.port == uapi::PORT_ANY {
                writeln!(out, "any")?;
            } else {
                writeln!(out, "{}", r.port)?;
            }
        }
        for l in List::ALL {
            writeln!(
                out,
                "denied_{} {}",
                l.name(),
                s.denied.get(l.index()).copied().unwrap_or(0)
            )?;
        }
        Ok(())
    }
}
