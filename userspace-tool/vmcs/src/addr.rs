//! `VmcsAddr`: a (cid, port) pair, as AF_VSOCK addresses.

use std::fmt;
use std::str::FromStr;

use crate::sys;

/// Bind to any cid (`VMCS_CID_ANY`, as `VMADDR_CID_ANY`).
pub const CID_ANY: u32 = sys::VMCS_CID_ANY;
/// This guest: loopback (`VMCS_CID_LOCAL`, as `VMADDR_CID_LOCAL`).
pub const CID_LOCAL: u32 = sys::VMCS_CID_LOCAL;
/// Let bind pick a free port >= 1024 (`VMCS_PORT_ANY`).
pub const PORT_ANY: u32 = sys::VMCS_PORT_ANY;

/// A vmcs address: `cid` is the peer id inside the domain (the ivshmem region), `port` a
/// port on it.
///
/// Displays as `cid:port`; `CID_ANY` and `PORT_ANY` display as `any`. Parses `cid:port`
/// where cid is a number, `any` or `local`, and port a number or `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct VmcsAddr {
    pub cid: u32,
    pub port: u32,
}

impl VmcsAddr {
    /// `cid:port`.
    pub const fn new(cid: u32, port: u32) -> Self {
        Self { cid, port }
    }
    /// `any:port`: what a listener binds to.
    pub const fn any(port: u32) -> Self {
        Self::new(CID_ANY, port)
    }
    /// `local:port`: this guest.
    pub const fn local(port: u32) -> Self {
        Self::new(CID_LOCAL, port)
    }
}

impl From<sys::vmcs_addr> for VmcsAddr {
    fn from(a: sys::vmcs_addr) -> Self {
        Self::new(a.cid, a.port)
    }
}

impl From<VmcsAddr> for sys::vmcs_addr {
    fn from(a: VmcsAddr) -> Self {
        sys::vmcs_addr {
            cid: a.cid,
            port: a.port,
        }
    }
}

impl From<(u32, u32)> for VmcsAddr {
    fn from((cid, port): (u32, u32)) -> Self {
        Self::new(cid, port)
    }
}

impl fmt::Display for VmcsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cid {
            CID_ANY => f.write_str("any")?,
            CID_LOCAL => f.write_str("local")?,
            c => write!(f, "{c}")?,
        }
        match self.port {
            PORT_ANY => f.write_str(":any"),
            p => write!(f, ":{p}"),
        }
    }
}

/// Why a string is not a `cid:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrParseError {
    #[error("expected CID:PORT (for example 2:5000), got {0:?}")]
    Syntax(String),
    #[error("bad cid {0:?}: expected a number, \"any\" or \"local\"")]
    Cid(String),
    #[error("bad port {0:?}: expected a number 0..4294967294 or \"any\"")]
    Port(String),
}

/// Parses a cid: a number, `any` or `local`.
pub fn parse_cid(s: &str) -> Result<u32, AddrParseError> {
    match s {
        "any" => Ok(CID_ANY),
        "local" => Ok(CID_LOCAL),
        _ => s.parse().map_err(|_| AddrParseError::Cid(s.to_string())),
    }
}

/// Parses a port: a number or `any`.
pub fn parse_port(s: &str) -> Result<u32, AddrParseError> {
    match s {
        "any" => Ok(PORT_ANY),
        _ => s.parse().map_err(|_| AddrParseError::Port(s.to_string())),
    }
}

impl FromStr for VmcsAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cid, port) = s
            .split_once(':')
            .ok_or_else(|| AddrParseError::Syntax(s.to_string()))?;
        if port.contains(':') {
            return Err(AddrParseError::Syntax(s.to_string()));
        }
        Ok(Self::new(parse_cid(cid.trim())?, parse_port(port.trim())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(VmcsAddr::new(2, 5000).to_string(), "2:5000");
        assert_eq!(VmcsAddr::any(7).to_string(), "any:7");
        assert_eq!(VmcsAddr::new(3, PORT_ANY).to_string(), "3:any");
        assert_eq!(VmcsAddr::local(1024).to_string(), "local:1024");
        // Display and FromStr round-trip for the special cids too.
        for a in [
            VmcsAddr::local(9),
            VmcsAddr::any(7),
            VmcsAddr::new(3, PORT_ANY),
        ] {
            assert_eq!(a.to_string().parse(), Ok(a));
        }
    }

    #[test]
    fn parse() {
        assert_eq!("2:5000".parse(), Ok(VmcsAddr::new(2, 5000)));
        assert_eq!("any:7".parse(), Ok(VmcsAddr::new(CID_ANY, 7)));
        assert_eq!("local:9".parse(), Ok(VmcsAddr::new(CID_LOCAL, 9)));
        assert_eq!("4:any".parse(), Ok(VmcsAddr::new(4, PORT_ANY)));
        assert_eq!("4294967295:0".parse(), Ok(VmcsAddr::new(CID_ANY, 0)));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            "2".parse::<VmcsAddr>(),
            Err(AddrParseError::Syntax(_))
        ));
        assert!(matches!(
            "2:3:4".parse::<VmcsAddr>(),
            Err(AddrParseError::Syntax(_))
        ));
        assert!(matches!(
            "x:3".parse::<VmcsAddr>(),
            Err(AddrParseError::Cid(_))
        ));
        assert!(matches!(
            "2:-1".parse::<VmcsAddr>(),
            Err(AddrParseError::Port(_))
        ));
        assert!(matches!(
            "2:4294967296".parse::<VmcsAddr>(),
            Err(AddrParseError::Port(_))
        ));
    }

    #[test]
    fn round_trip() {
        for a in [
            VmcsAddr::new(0, 0),
            VmcsAddr::new(63, 65535),
            VmcsAddr::any(PORT_ANY),
            VmcsAddr::local(1),
        ] {
            assert_eq!(a.to_string().parse::<VmcsAddr>(), Ok(a));
        }
    }
}
