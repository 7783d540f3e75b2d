//! Access control: the allow-lists of a domain (`VMCS_IOC_POLICY_*`, docs/security.md
//! "Access control").
//!
//! Three lists: `in` ((peer, local port) pairs that may connect to this guest), `out`
//! ((peer, remote port) pairs this guest may connect to) and `bind` (local ports that may
//! be bound). Each starts as one rule `any:any`. Changing them needs `CAP_NET_ADMIN`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::Serialize;

use crate::addr::{parse_cid, parse_port};
use crate::backend::open_device;
use crate::sys;

/// One of the three allow-lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    /// Who may connect to this guest: (peer, local port).
    In,
    /// Where this guest may connect to: (peer, remote port).
    Out,
    /// Which local ports may be bound.
    Bind,
}

impl List {
    /// `VMCS_POLICY_*`.
    pub fn raw(self) -> u32 {
        match self {
            List::In => sys::VMCS_POLICY_CONNECT_IN,
            List::Out => sys::VMCS_POLICY_CONNECT_OUT,
            List::Bind => sys::VMCS_POLICY_BIND,
        }
    }

    /// From `VMCS_POLICY_*`.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            sys::VMCS_POLICY_CONNECT_IN => Some(List::In),
            sys::VMCS_POLICY_CONNECT_OUT => Some(List::Out),
            sys::VMCS_POLICY_BIND => Some(List::Bind),
            _ => None,
        }
    }

    /// `in`, `out` or `bind`.
    pub fn name(self) -> &'static str {
        match self {
            List::In => "in",
            List::Out => "out",
            List::Bind => "bind",
        }
    }
}

/// One allow rule. `cid` is `VMCS_CID_ANY` for a bind rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub list: List,
    pub cid: u32,
    pub port: u32,
}

impl Rule {
    /// Parses the target of a rule of `list`: `CID:PORT` for `in` and `out` (each a number
    /// or `any`), `PORT` (or `any`) for `bind`.
    pub fn parse(list: List, target: &str) -> Result<Rule, String> {
        let (cid, port) = match (list, target.split_once(':')) {
            (List::Bind, None) => (sys::VMCS_CID_ANY, target),
            (List::Bind, Some(_)) => return Err(format!("bind rules take a PORT, not {target:?}")),
            (_, Some((c, p))) => (parse_cid(c).map_err(|e| e.to_string())?, p),
            (_, None) => {
                return Err(format!(
                    "{} rules take CID:PORT, not {target:?}",
                    list.name()
                ))
            }
        };
        Ok(Rule {
            list,
            cid,
            port: parse_port(port).map_err(|e| e.to_string())?,
        })
    }

    fn raw(&self) -> sys::vmcs_policy_rule {
        sys::vmcs_policy_rule {
            list: self.list.raw(),
            cid: self.cid,
            port: self.port,
            flags: 0,
        }
    }
}

fn word(v: u32, any: u32) -> String {
    if v == any {
        "any".into()
    } else {
        v.to_string()
    }
}

impl fmt::Display for Rule {
    /// `in 3:5000`, `out any:any`, `bind 6000`: what `vmcs policy allow` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = word(self.port, sys::VMCS_PORT_ANY);
        match self.list {
            List::Bind => write!(f, "bind {port}"),
            l => write!(
                f,
                "{} {}:{port}",
                l.name(),
                word(self.cid, sys::VMCS_CID_ANY)
            ),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Rule", 3)?;
        st.serialize_field("list", &self.list)?;
        let opt = |v: u32| (v != u32::MAX).then_some(v);
        st.serialize_field("cid", &opt(self.cid))?;
        st.serialize_field("port", &opt(self.port))?;
        st.end()
    }
}

/// Denials per list since the module was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Denied {
    #[serde(rename = "in")]
    pub connect_in: u64,
    #[serde(rename = "out")]
    pub connect_out: u64,
    pub bind: u64,
}

/// A domain's policy as `VMCS_IOC_POLICY_GET` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub denied: Denied,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ioctl<T>(fd: RawFd, cmd: u32, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: cmd's size field is size_of::<T>() (see sys), and arg is a valid T.
    cvt(unsafe { libc::ioctl(fd, cmd as _, arg as *mut T) })
}

/// A `/dev/vmcs` file on `domain` (None: the default domain).
fn open(domain: Option<u32>) -> crate::Result<OwnedFd> {
    let fd = open_device()?;
    let Some(d) = domain else { return Ok(fd) };
    let mut a = sys::vmcs_open_domain {
        domain: d,
        flags: libc::O_CLOEXEC as u32,
    };
    let nfd = ioctl(fd.as_raw_fd(), sys::VMCS_IOC_OPEN_DOMAIN, &mut a)?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd) })
}

/// Errors of the policy calls: opening the device (module, permission), or the ioctl's
/// errno as it is (`EPERM` without `CAP_NET_ADMIN`, `EEXIST`, `ENOENT`, `ENOSPC`,
/// `EINVAL`), so that the caller can say what each means.
#[derive(Debug)]
pub enum PolicyError {
    Open(crate::Error),
    Ioctl(io::Error),
}

impl From<crate::Error> for PolicyError {
    fn from(e: crate::Error) -> Self {
        PolicyError::Open(e)
    }
}

impl From<io::Error> for PolicyError {
    fn from(e: io::Error) -> Self {
        PolicyError::Ioctl(e)
    }
}

/// Reads the policy of `domain`.
pub fn get(domain: Option<u32>) -> Result<Policy, PolicyError> {
    let fd = open(domain)?;
    let mut buf = vec![sys::vmcs_policy_rule::default(); sys::VMCS_POLICY_MAX_RULES as usize];
    let mut g = sys::vmcs_policy_get {
        rules: buf.as_mut_ptr() as u64,
        count: buf.len() as u32,
        ..Default::default()
    };
    let n = ioctl(fd.as_raw_fd(), sys::VMCS_IOC_POLICY_GET, &mut g)? as usize;
    let rules = buf
        .iter()
        .take(n)
        .filter_map(|r| {
            Some(Rule {
                list: List::from_raw(r.list)?,
                cid: r.cid,
                port: r.port,
            })
        })
        .collect();
    Ok(Policy {
        rules,
        denied: Denied {
            connect_in: g.denied_in,
            connect_out: g.denied_out,
            bind: g.denied_bind,
        },
    })
}

/// Adds an allow rule (`EEXIST` if it is there, `ENOSPC` when the table is full).
pub fn allow(domain: Option<u32>, rule: &Rule) -> Result<(), PolicyError> {
    let fd = open(domain)?;
    ioctl(fd.as_raw_fd(), sys::VMCS_IOC_POLICY_ADD, &mut rule.raw())?;
    Ok(())
}

/// Removes an allow rule (`ENOENT` if there is none equal to it).
pub fn remove(domain: Option<u32>, rule: &Rule) -> Result<(), PolicyError> {
    let fd = open(domain)?;
    ioctl(fd.as_raw_fd(), sys::VMCS_IOC_POLICY_DEL, &mut rule.raw())?;
    Ok(())
}

/// Empties `list` (None: every list): everything but loopback is denied.
pub fn clear(domain: Option<u32>, list: Option<List>) -> Result<(), PolicyError> {
    let fd = open(domain)?;
    let mut l = list.map_or(sys::VMCS_POLICY_ALL, List::raw);
    ioctl(fd.as_raw_fd(), sys::VMCS_IOC_POLICY_CLEAR, &mut l)?;
    Ok(())
}

/// Restores the default of `list` (None: every list): `any:any`, everything allowed.
pub fn reset(domain: Option<u32>, list: Option<List>) -> Result<(), PolicyError> {
    let fd = open(domain)?;
    let mut l = list.map_or(sys::VMCS_POLICY_ALL, List::raw);
    ioctl(fd.as_raw_fd(), sys::VMCS_IOC_POLICY_RESET, &mut l)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_display() {
        let r = Rule::parse(List::In, "3:5000").unwrap();
        assert_eq!((r.cid, r.port), (3, 5000));
        assert_eq!(r.to_string(), "in 3:5000");
        assert_eq!(
            Rule::parse(List::Out, "any:any").unwrap().to_string(),
            "out any:any"
        );
        let b = Rule::parse(List::Bind, "6000").unwrap();
        assert_eq!((b.cid, b.port), (sys::VMCS_CID_ANY, 6000));
        assert_eq!(b.to_string(), "bind 6000");
        assert!(Rule::parse(List::Bind, "1:6000").is_err());
        assert!(Rule::parse(List::In, "5000").is_err());
        assert!(Rule::parse(List::In, "x:5000").is_err());
        let j = serde_json::to_value(Rule::parse(List::In, "any:7").unwrap()).unwrap();
        assert_eq!(j, serde_json::json!({"list": "in", "cid": null, "port": 7}));
    }
}
