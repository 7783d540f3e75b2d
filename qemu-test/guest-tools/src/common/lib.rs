//! What every guest program (`vmcs-test`, `vmcs-socktest`, `vmcs-bench`) shares: errno
//! text, descriptor helpers (poll, `O_NONBLOCK`, epoll) and the `/dev/vmcs` file with its
//! ioctls, whose structs and numbers come from `vmcs-sys` (userspace-tool/vmcs-sys, the
//! one Rust copy of include/vmcs.h).

pub mod badmem;
pub mod dev;
pub mod fd;

pub use vmcs_sys as sys;

/// A step's result: `Err` says what failed, for the `FAIL: ...` / `error: ...` line.
pub type Res<T = ()> = Result<T, String>;

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An errno as text with its number: "Connection refused (os error 111) (111)".
pub fn ename(e: i32) -> String {
    format!("{} ({})", std::io::Error::from_raw_os_error(e), e)
}

/// An errno as text: "Connection refused (os error 111)".
pub fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// The exit status of a program whose run ended with `r`: success, or `PREFIX: error` on
/// stdout and failure.
pub fn exit_with(r: Res, prefix: &str) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("{prefix}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A cid argument: a number, or `auto` (`None`: every live peer).
pub fn cid_arg(s: &str) -> Option<u32> {
    if s == "auto" {
        None
    } else {
        s.parse().ok()
    }
}
