//! User buffers that are partly not accessible, for the tests that bad buffers lose
//! nothing (`EFAULT`, data kept: vmcs-socktest badbuf, vmcs-test badbuf).

use crate::Res;

pub const PAGE: usize = 4096;

/// Two pages: the first readable and writable, the second `PROT_NONE`.
pub struct Pages(*mut u8);

impl Pages {
    pub fn new() -> Res<Self> {
        // SAFETY: an anonymous private mapping of two pages.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err("mmap".into());
        }
        let p = p.cast::<u8>();
        // SAFETY: the second page of our mapping.
        if unsafe { libc::mprotect(p.add(PAGE).cast(), PAGE, libc::PROT_NONE) } != 0 {
            return Err("mprotect".into());
        }
        for i in 0..PAGE {
            // SAFETY: inside the first page.
            unsafe { *p.add(i) = (i % 251) as u8 };
        }
        Ok(Self(p))
    }

    /// The last `n` bytes of the good page; a buffer of `2 * n` bytes from here is half bad.
    pub fn tail(&self, n: usize) -> *mut u8 {
        // SAFETY: inside the first page.
        unsafe { self.0.add(PAGE - n) }
    }

    pub fn tail_bytes(&self, n: usize) -> Vec<u8> {
        // SAFETY: the last `n` bytes of the first page.
        unsafe { std::slice::from_raw_parts(self.tail(n), n) }.to_vec()
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.0.cast(), 2 * PAGE) };
    }
}
