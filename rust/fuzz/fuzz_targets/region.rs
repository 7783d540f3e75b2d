//! Deterministic: arbitrary bytes scribbled over a valid region (header,
//! peer table, control blocks, ring data), then the consumer, producer and
//! header validation run. Also raw arbitrary bytes as a header.
#![no_main]

mod driver;

use libfuzzer_sys::fuzz_target;
use vmcs_proto::host::SliceShm;
use vmcs_proto::layout;
use vmcs_proto::shm::Shm;

fuzz_target!(|data: &[u8]| {
    let mem = driver::region();
    let shm = SliceShm::new(&mem);
    // Raw header bytes first: validation must not panic.
    shm.write_bytes(0, &data[..data.len().min(0x90)]);
    let _ = layout::validate(&shm);
    // Then a valid region with scribbles.
    let mem = driver::region();
    let shm = SliceShm::new(&mem);
    let (g, mut p, mut c) = driver::setup(&shm);
    driver::scribble(&shm, Some(&g), data, || {});
    driver::exercise(&shm, &g, &mut p, &mut c);
});
