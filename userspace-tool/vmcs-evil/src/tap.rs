//! The output: TAP lines without numbers, which qemu-test/run.sh reports as test points.

/// Prints `ok - hostile peer: WHAT` or `not ok - ...`; returns `cond`.
pub fn ok(cond: bool, what: impl std::fmt::Display) -> bool {
    println!(
        "{} - hostile peer: {what}",
        if cond { "ok" } else { "not ok" }
    );
    cond
}
