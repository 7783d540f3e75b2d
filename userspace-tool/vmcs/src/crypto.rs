//! Per-connection encryption (docs/security.md "Encryption"): the domain's pre-shared key
//! and policy, and its counters.

use serde::Serialize;

use crate::backend::domain_ioctl;
use crate::error::Result;
use crate::sys;

/// Bytes of a pre-shared key.
pub const KEY_LEN: usize = sys::VMCS_KEY_LEN;

/// A domain's (or a socket's) encryption policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Never encrypt (for a socket: the domain's default).
    Off,
    /// Encrypt when both sides hold the key and the peer can; plaintext otherwise.
    Allow,
    /// Encrypt or refuse the connection (`EACCES`).
    Require,
}

impl Policy {
    /// The uapi value (`VMCS_ENCRYPT_*`).
    pub fn raw(self) -> u32 {
        match self {
            Policy::Off => sys::VMCS_ENCRYPT_OFF,
            Policy::Allow => sys::VMCS_ENCRYPT_ALLOW,
            Policy::Require => sys::VMCS_ENCRYPT_REQUIRE,
        }
    }

    /// From the uapi value.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            sys::VMCS_ENCRYPT_OFF => Some(Policy::Off),
            sys::VMCS_ENCRYPT_ALLOW => Some(Policy::Allow),
            sys::VMCS_ENCRYPT_REQUIRE => Some(Policy::Require),
            _ => None,
        }
    }

    /// `off`, `allow` or `require`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Off => "off",
            Policy::Allow => "allow",
            Policy::Require => "require",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "off" => Ok(Policy::Off),
            "allow" => Ok(Policy::Allow),
            "require" => Ok(Policy::Require),
            _ => Err(format!("{s:?}: off, allow or require")),
        }
    }
}

/// What `VMCS_IOC_GET_CRYPTO` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CryptoInfo {
    pub policy: Policy,
    pub key_installed: bool,
    pub handshakes: u64,
    pub auth_failed: u64,
    pub peer_refused: u64,
    pub policy_refused: u64,
    pub bad_frames: u64,
}

/// Installs (replaces) the domain's pre-shared key; needs `CAP_NET_ADMIN`. The local copy
/// of the key in the ioctl argument is zeroed afterwards.
pub fn set_key(key: &[u8; KEY_LEN]) -> Result<()> {
    let mut k = sys::vmcs_key {
        flags: 0,
        len: KEY_LEN as u32,
        key: *key,
    };
    let r = domain_ioctl(sys::VMCS_IOC_SET_KEY, &mut k);
    // Volatile writes, so that the zeroing is not optimised away.
    for b in k.key.iter_mut() {
        // SAFETY: `b` is a valid, aligned reference to a byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    r
}

/// Removes (and wipes in the module) the domain's key; needs `CAP_NET_ADMIN`.
pub fn clear_key() -> Result<()> {
    let mut zero = 0u32;
    domain_ioctl(sys::VMCS_IOC_CLEAR_KEY, &mut zero)
}

/// Sets the domain's policy; needs `CAP_NET_ADMIN`.
pub fn set_policy(p: Policy) -> Result<()> {
    let mut v = p.raw();
    domain_ioctl(sys::VMCS_IOC_SET_DOMAIN_CRYPTO, &mut v)
}

/// The domain's policy, whether a key is installed, and the counters.
pub fn info() -> Result<CryptoInfo> {
    let mut i = sys::vmcs_crypto_info::default();
    domain_ioctl(sys::VMCS_IOC_GET_CRYPTO, &mut i)?;
    Ok(CryptoInfo {
        policy: Policy::from_raw(i.policy).unwrap_or(Policy::Allow),
        key_installed: i.key_installed != 0,
        handshakes: i.handshakes,
        auth_failed: i.auth_failed,
        peer_refused: i.peer_refused,
        policy_refused: i.policy_refused,
        bad_frames: i.bad_frames,
    })
}

/// Parses a key file's content: 64 hexadecimal digits (surrounding white space ignored) or
/// exactly 32 raw bytes.
pub fn parse_key(data: &[u8]) -> std::result::Result<[u8; KEY_LEN], String> {
    let text = std::str::from_utf8(data).ok().map(str::trim);
    if let Some(t) = text.filter(|t| t.len() == 2 * KEY_LEN) {
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| "the key is not 64 hexadecimal digits".to_string())?;
        }
        return Ok(k);
    }
    if data.len() == KEY_LEN {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(data);
        return Ok(k);
    }
    Err(format!(
        "a key is 64 hexadecimal digits or {KEY_LEN} raw bytes (got {} bytes)",
        data.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let k = parse_key(hex.as_bytes()).unwrap();
        assert_eq!(k[1], 0x11);
        assert_eq!(k[31], 0xff);
        assert_eq!(parse_key(&[7u8; 32]).unwrap(), [7u8; 32]);
        assert!(parse_key(b"abc").is_err());
        assert!(parse_key(&[b'z'; 64]).is_err());
        assert_eq!("require".parse::<Policy>(), Ok(Policy::Require));
        assert!("on".parse::<Policy>().is_err());
    }
}
