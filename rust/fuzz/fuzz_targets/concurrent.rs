//! Concurrent: a second thread (the hostile peer) scribbles over the region
//! while the consumer/producer run, so values change between reads.
#![no_main]

mod driver;

use libfuzzer_sys::fuzz_target;
use vmcs_proto::host::SliceShm;

fuzz_target!(|data: &[u8]| {
    let mem = driver::region();
    let shm = SliceShm::new(&mem);
    let (g, mut p, mut c) = driver::setup(&shm);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Several passes so the writes overlap the consumer's run.
            for _ in 0..4 {
                driver::scribble(&shm, Some(&g), data, std::thread::yield_now);
            }
        });
        for _ in 0..4 {
            driver::exercise(&shm, &g, &mut p, &mut c);
        }
    });
});
