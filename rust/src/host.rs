//! Host (userspace) implementation of [`Shm`] over a slice of `AtomicU64`.
//!
//! Not compiled into the kernel module (which has its own `Shm` over the
//! ioremapped BAR). Used by tests, the fuzzer, the benchmark and host tools.
//!
//! All accesses are atomic, so concurrent scribbling by another thread (the
//! fuzzer's "hostile peer") is not a data race. 32-bit accesses view the
//! 64-bit words through `AtomicU32::from_ptr`; the protocol never accesses the
//! same bytes with two different widths concurrently except in the documented
//! hostile case, where the hardware result is simply some value.
//!
//! Contract violations (out of bounds / misaligned offsets) panic: here they
//! indicate a protocol bug and the tests and fuzzer must see them.

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use super::shm::Shm;

/// [`Shm`] over caller-provided `AtomicU64` words (8-byte aligned storage).
#[derive(Clone, Copy)]
pub struct SliceShm<'a> {
    words: &'a [AtomicU64],
    plain_copy: bool,
}

/// Bytes per iteration of the plain copy loop (one AVX2 register).
const CHUNK: usize = 32;

impl<'a> SliceShm<'a> {
    /// Wrap `words`; the region size is `words.len() * 8`. Byte copies use
    /// relaxed atomics: sound even with a concurrent hostile writer.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        Self {
            words,
            plain_copy: false,
        }
    }

    /// Like [`SliceShm::new`], but `read_bytes`/`write_bytes` use plain
    /// (vectorised) memory copies, like the kernel's `memcpy` on the BAR.
    /// Only for runs where the protocol is followed (benchmarks): a
    /// concurrent writer to the same bytes would be a data race.
    pub fn new_plain_copy(words: &'a [AtomicU64]) -> Self {
        Self {
            words,
            plain_copy: true,
        }
    }

    fn byte_ptr(&self, off: usize, len: usize) -> *mut u8 {
        let end = off.checked_add(len).expect("range overflow");
        assert!(end <= self.size(), "byte range out of bounds");
        self.words
            .as_ptr()
            .cast::<u8>()
            .cast_mut()
            .wrapping_add(off)
    }

    /// Plain copy in 32-byte chunks. glibc's `memcpy` uses `rep movsb` for
    /// these sizes, which is pathologically slow on some virtualised AMD
    /// hosts, so the loop is explicit.
    ///
    /// # Safety
    /// `dst` and `src` must be valid for `len` bytes, not overlap, and no
    /// other thread may access `dst`/`src` concurrently.
    unsafe fn plain_copy(dst: *mut u8, src: *const u8, len: usize) {
        let mut i = 0;
        while i + CHUNK <= len {
            // SAFETY: i + CHUNK <= len, both ranges valid per the contract;
            // unaligned accesses are allowed.
            unsafe {
                let v = src.add(i).cast::<[u8; CHUNK]>().read_unaligned();
                dst.add(i).cast::<[u8; CHUNK]>().write_unaligned(v);
            }
            i += CHUNK;
        }
        while i < len {
            // SAFETY: i < len, per the contract.
            unsafe { dst.add(i).write(src.add(i).read()) };
            i += 1;
        }
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0, "misaligned u64 offset {off:#x}");
        &self.words[off / 8]
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0, "misaligned u32 offset {off:#x}");
        let w = &self.words[off / 8];
        let base = w.as_ptr().cast::<u32>();
        // Little-endian layout: the low half of the word is at byte 0.
        let idx = (off % 8) / 4;
        // SAFETY: `base` points to a live, 8-byte aligned `AtomicU64` borrowed
        // for `'a`; `idx` is 0 or 1 so the pointer stays inside that word and is
        // 4-byte aligned. All accesses to the memory are atomic, as required by
        // `AtomicU32::from_ptr`.
        unsafe { AtomicU32::from_ptr(base.add(idx)) }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("SliceShm assumes a little-endian host");

fn copy_range(off: usize, len: usize) -> (usize, usize) {
    let end = off.checked_add(len).expect("range overflow");
    (off, end)
}

impl Shm for SliceShm<'_> {
    fn size(&self) -> usize {
        self.words.len() * 8
    }
    fn load_u32_acquire(&self, off: usize) -> u32 {
        self.word32(off).load(Ordering::Acquire)
    }
    fn load_u32_relaxed(&self, off: usize) -> u32 {
        self.word32(off).load(Ordering::Relaxed)
    }
    fn store_u32_release(&self, off: usize, v: u32) {
        self.word32(off).store(v, Ordering::Release);
    }
    fn store_u32_relaxed(&self, off: usize, v: u32) {
        self.word32(off).store(v, Ordering::Relaxed);
    }
    fn cmpxchg_u32(&self, off: usize, old: u32, new: u32) -> Result<u32, u32> {
        self.word32(off)
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
    }
    fn load_u64_acquire(&self, off: usize) -> u64 {
        self.word(off).load(Ordering::Acquire)
    }
    fn load_u64_relaxed(&self, off: usize) -> u64 {
        self.word(off).load(Ordering::Relaxed)
    }
    fn store_u64_release(&self, off: usize, v: u64) {
        self.word(off).store(v, Ordering::Release);
    }
    fn store_u64_relaxed(&self, off: usize, v: u64) {
        self.word(off).store(v, Ordering::Relaxed);
    }
    fn fence_full(&self) {
        fence(Ordering::SeqCst);
    }

    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        if self.plain_copy {
            let src = self.byte_ptr(off, dst.len());
            // SAFETY: byte_ptr checked the range is inside `words` (live for
            // 'a); `dst` is a distinct exclusive borrow; plain_copy mode
            // promises no concurrent writer (see new_plain_copy).
            unsafe { Self::plain_copy(dst.as_mut_ptr(), src, dst.len()) };
            return;
        }
        let (start, end) = copy_range(off, dst.len());
        assert!(end <= self.size(), "read out of bounds");
        let mut pos = start;
        let mut out = 0;
        // Head: partial first word.
        while pos < end && pos % 8 != 0 {
            let w = self.words[pos / 8].load(Ordering::Relaxed).to_le_bytes();
            dst[out] = w[pos % 8];
            pos += 1;
            out += 1;
        }
        // Body: whole words.
        let body_words = (end - pos) / 8;
        let words = &self.words[pos / 8..pos / 8 + body_words];
        for (w, chunk) in words.iter().zip(dst[out..].chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        pos += body_words * 8;
        out += body_words * 8;
        // Tail.
        if pos < end {
            let w = self.words[pos / 8].load(Ordering::Relaxed).to_le_bytes();
            let n = end - pos;
            dst[out..out + n].copy_from_slice(&w[..n]);
        }
    }

    fn write_bytes(&self, off: usize, src: &[u8]) {
        if self.plain_copy {
            let dst = self.byte_ptr(off, src.len());
            // SAFETY: as in read_bytes; the atomics' interior mutability
            // permits writing through the shared slice.
            unsafe { Self::plain_copy(dst, src.as_ptr(), src.len()) };
            return;
        }
        let (start, end) = copy_range(off, src.len());
        assert!(end <= self.size(), "write out of bounds");
        let mut pos = start;
        let mut inp = 0;
        // Partial words are merged with two atomic RMWs: the other bytes of the
        // word are never owned by a concurrent writer in a correct protocol
        // run, and a hostile writer only gets "some value".
        let partial = |pos: usize, bytes: &[u8]| {
            let shift = (pos % 8) * 8;
            let mut val = [0u8; 8];
            val[..bytes.len()].copy_from_slice(bytes);
            let n_bits = bytes.len() * 8;
            let mask: u64 = if n_bits == 64 {
                !0
            } else {
                ((1u64 << n_bits) - 1) << shift
            };
            let v = (u64::from_le_bytes(val) << shift) & mask;
            let w = &self.words[pos / 8];
            w.fetch_and(!mask, Ordering::Relaxed);
            w.fetch_or(v, Ordering::Relaxed);
        };
        if pos % 8 != 0 {
            let n = (8 - pos % 8).min(end - pos);
            partial(pos, &src[..n]);
            pos += n;
            inp += n;
        }
        let body_words = (end - pos) / 8;
        let words = &self.words[pos / 8..pos / 8 + body_words];
        for (w, chunk) in words.iter().zip(src[inp..].chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        pos += body_words * 8;
        inp += body_words * 8;
        if pos < end {
            partial(pos, &src[inp..]);
        }
    }
}
