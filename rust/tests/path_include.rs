//! Compiles the protocol files exactly as the kernel module does: through
//! `#[path]` inside a `proto` module of another crate, with `unsafe` forbidden.
//! Fails to build if a file uses `crate::`, `std`, or unsafe code.
#![forbid(unsafe_code)]

mod proto;

#[test]
fn protocol_files_compile_standalone() {
    let g = proto::layout::Geometry::compute(4 << 20, 64, 0).unwrap();
    assert_eq!(g.area_size, 56 << 10);
    assert!(proto::ring::Channel::static_split(&g, 0, 63).is_some());
}
