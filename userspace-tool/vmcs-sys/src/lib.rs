//! The vmcs user API, the one Rust copy of `userspace-tool/include/vmcs.h` (the source of
//! truth): every `#[repr(C)]` struct of the header, `sockaddr_vmcs`, the ioctl numbers
//! (with const `_IOC`/`_IOR`/`_IOW`/`_IOWR`) and the constants.
//!
//! No dependencies, `core` only. Everything lives in `uapi.rs`, a self-contained file that
//! names nothing outside `core`, so that other crates (the kernel module, the test guests'
//! programs) can compile it through `#[path]` or depend on this crate. `tests/c_header.rs`
//! checks every struct's size, every field's offset, every constant and every ioctl number
//! against the C compiler's view of the header.
#![no_std]
#![deny(unsafe_code)]

mod uapi;

pub use uapi::*;
