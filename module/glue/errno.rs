// SPDX-License-Identifier: GPL-2.0

//! Socket errnos the `kernel` crate does not name (`kernel::error::code` lacks them).

use kernel::{bindings, error::Error};

macro_rules! errnos {
    ($($fn:ident => $name:ident),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "`.")]
        #[allow(dead_code)]
        pub(crate) fn $fn() -> Error {
            // The bindings' errno constants are small positive numbers.
            Error::from_errno(-(bindings::$name as i32))
        }
    )*};
}

errnos! {
    econnreset => ECONNRESET,
    econnrefused => ECONNREFUSED,
    econnaborted => ECONNABORTED,
    ehostunreach => EHOSTUNREACH,
    enetunreach => ENETUNREACH,
    eaddrinuse => EADDRINUSE,
    eaddrnotavail => EADDRNOTAVAIL,
    enotconn => ENOTCONN,
    eisconn => EISCONN,
    einprogress => EINPROGRESS,
    ealready => EALREADY,
    eopnotsupp => EOPNOTSUPP,
    eprotonosupport => EPROTONOSUPPORT,
    eafnosupport => EAFNOSUPPORT,
    eshutdown => ESHUTDOWN,
    emsgsize => EMSGSIZE,
}
