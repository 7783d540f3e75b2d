//! Access to the shared region.
//!
//! Protocol code never forms Rust references into shared memory: another guest
//! may write any byte at any time. Every access goes through [`Shm`], whose
//! methods map 1:1 onto kernel primitives:
//!
//! | method                | kernel                                              |
//! |-----------------------|-----------------------------------------------------|
//! | `load_*_acquire`      | `Atomic::from_ptr(p).load(Acquire)` / `smp_load_acquire` |
//! | `load_*_relaxed`      | `READ_ONCE`                                          |
//! | `store_*_release`     | `Atomic::from_ptr(p).store(v, Release)` / `smp_store_release` |
//! | `store_*_relaxed`     | `WRITE_ONCE`                                         |
//! | `cmpxchg_u32`         | `cmpxchg` (fully ordered)                            |
//! | `fence_full`          | `smp_mb()`                                           |
//! | `read_bytes`/`write_bytes` | `memcpy` from/to the mapping                   |
//!
//! Contract for callers (the protocol code): every offset is computed from a
//! locally validated [`super::layout::Geometry`], is in bounds
//! (`off + width <= size()`) and naturally aligned for the access width.
//! Implementations may rely on that but must still not cause undefined
//! behaviour if it is violated (the kernel implementation bounds-checks and
//! returns 0 / ignores the store; the host implementation panics in tests).

/// Ordered access to the shared region. See the module docs for the mapping to
/// kernel primitives and the offset contract.
pub trait Shm {
    /// Size of the mapping in bytes.
    fn size(&self) -> usize;

    /// 32-bit load with acquire ordering.
    fn load_u32_acquire(&self, off: usize) -> u32;
    /// 32-bit load, no ordering (single-copy atomic).
    fn load_u32_relaxed(&self, off: usize) -> u32;
    /// 32-bit store with release ordering.
    fn store_u32_release(&self, off: usize, v: u32);
    /// 32-bit store, no ordering (single-copy atomic).
    fn store_u32_relaxed(&self, off: usize, v: u32);
    /// Fully ordered compare-and-exchange. `Ok(old)` on success, `Err(current)`
    /// on failure.
    fn cmpxchg_u32(&self, off: usize, old: u32, new: u32) -> Result<u32, u32>;

    /// 64-bit load with acquire ordering.
    fn load_u64_acquire(&self, off: usize) -> u64;
    /// 64-bit load, no ordering.
    fn load_u64_relaxed(&self, off: usize) -> u64;
    /// 64-bit store with release ordering.
    fn store_u64_release(&self, off: usize, v: u64);
    /// 64-bit store, no ordering.
    fn store_u64_relaxed(&self, off: usize, v: u64);

    /// Full memory barrier (`smp_mb()`): orders all earlier loads and stores
    /// before all later ones.
    fn fence_full(&self);

    /// Copy `dst.len()` bytes out of the region starting at `off`. The source
    /// may change concurrently; the copy is then some mix of old and new bytes,
    /// never undefined behaviour. No ordering implied.
    fn read_bytes(&self, off: usize, dst: &mut [u8]);
    /// Copy `src` into the region at `off`. No ordering implied.
    fn write_bytes(&self, off: usize, src: &[u8]);
}
