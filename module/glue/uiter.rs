// SPDX-License-Identifier: GPL-2.0

//! User memory as the one-copy data path sees it ([`UserIter`]): the `iov_iter` of a
//! `sendmsg`/`recvmsg`, or one made here over the buffer of a `read`/`write`, copied into
//! the shared region ([`super::SharedRegion::fill_from_user`]) or to and from kernel
//! memory.
//!
//! Every copy but [`UserIter::read`] runs with page faults disabled (vmcs_glue.c): it never
//! sleeps, so it may run under the ring's spinlock or a connection's mutex, and it stops
//! short at a user page that is not present. The caller then drops its locks, faults the
//! rest in ([`UserIter::fault_in`], which may sleep) and copies again, as
//! `generic_perform_write` does. So no lock that the receive worker takes is ever held
//! while user memory faults.

use core::{marker::PhantomData, mem::MaybeUninit};
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_int, c_void},
    iov::{IovIterDest, IovIterSource},
    prelude::*,
};

// The C glue's side of module/vmcs_glue.h: `copy_{from,to}_iter` between
// `pagefault_disable()` and `pagefault_enable()`.
extern "C" {
    fn vmcs_glue_copy_from_iter_nofault(
        to: *mut c_void,
        n: usize,
        i: *mut bindings::iov_iter,
    ) -> usize;
    fn vmcs_glue_copy_to_iter_nofault(
        from: *const c_void,
        n: usize,
        i: *mut bindings::iov_iter,
    ) -> usize;
}

enum Iter<'a> {
    /// The socket layer's `msg_iter`, for the duration of the call.
    Borrowed(
        *mut bindings::iov_iter,
        PhantomData<&'a mut bindings::iov_iter>,
    ),
    /// Ours, over one user buffer (`ITER_UBUF`, by `import_ubuf`: no pointer into itself,
    /// so it may move).
    Owned(bindings::iov_iter),
}

/// User memory that a send copies from (a source) or a receive copies to (a destination).
///
/// # Invariants
///
/// `iter` is a valid `struct iov_iter` for `'a` whose `data_source` is `source`; `done` is
/// the number of bytes it advanced through our copies since it was made (so reverting at
/// most `done` stays inside it).
pub(crate) struct UserIter<'a> {
    iter: Iter<'a>,
    source: bool,
    done: usize,
}

impl<'a> UserIter<'a> {
    /// The data of a `sendmsg`.
    pub(crate) fn source(src: &'a mut IovIterSource<'_>) -> Self {
        // INVARIANT: `IovIterSource` holds a valid source `iov_iter`, borrowed for `'a`.
        Self {
            iter: Iter::Borrowed(src.as_raw(), PhantomData),
            source: true,
            done: 0,
        }
    }

    /// The buffer of a `recvmsg`.
    pub(crate) fn dest(dst: &'a mut IovIterDest<'_>) -> Self {
        // INVARIANT: `IovIterDest` holds a valid destination `iov_iter`, borrowed for `'a`.
        Self {
            iter: Iter::Borrowed(dst.as_raw(), PhantomData),
            source: false,
            done: 0,
        }
    }

    /// The user buffer `addr..addr + len` of a `write` (`source`) or a `read`; `EFAULT` if
    /// it is not user memory (`access_ok`).
    pub(crate) fn user(addr: usize, len: usize, source: bool) -> Result<Self> {
        // SAFETY: `struct iov_iter` is plain data, for which all zeroes is a valid value;
        // `import_ubuf` fills it in.
        let mut it: bindings::iov_iter = unsafe { core::mem::zeroed() };
        let ty = if source {
            bindings::ITER_SOURCE
        } else {
            bindings::ITER_DEST
        } as c_int;
        // SAFETY: `it` is a valid `iov_iter` to initialise; `import_ubuf` only checks the
        // range with `access_ok` and records it.
        to_result(unsafe { bindings::import_ubuf(ty, addr as *mut c_void, len, &mut it) })?;
        // INVARIANT: `import_ubuf` made `it` a user iterator of direction `source`.
        Ok(Self {
            iter: Iter::Owned(it),
            source,
            done: 0,
        })
    }

    fn raw(&mut self) -> *mut bindings::iov_iter {
        match &mut self.iter {
            Iter::Borrowed(p, _) => *p,
            Iter::Owned(it) => it,
        }
    }

    /// Bytes left.
    pub(crate) fn len(&self) -> usize {
        let p: *const bindings::iov_iter = match &self.iter {
            Iter::Borrowed(p, _) => *p,
            Iter::Owned(it) => it,
        };
        // SAFETY: `p` is a valid `iov_iter` (type invariant); its `count` is read as
        // `iov_iter_count()` does (the kernel crate's `IovIterSource::len` too).
        unsafe { (*p).__bindgen_anon_1.__bindgen_anon_1.as_ref().count }
    }

    /// Whether no byte is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies up to `n` bytes of this source to `to`, with page faults disabled; returns
    /// the bytes copied (fewer at a page that is not present). A destination copies
    /// nothing.
    ///
    /// # Safety
    ///
    /// `to` must be valid for writes of `n` bytes for the duration of the call.
    pub(super) unsafe fn read_raw_nofault(&mut self, to: *mut u8, n: usize) -> usize {
        if !self.source {
            return 0;
        }
        // SAFETY: `raw()` is a valid source iterator (type invariant); the caller
        // guarantees `to..to + n`.
        let got = unsafe { vmcs_glue_copy_from_iter_nofault(to.cast(), n, self.raw()) };
        self.done += got;
        got
    }

    /// Copies `n` bytes from `from` to this destination, with page faults disabled; returns
    /// the bytes copied. A source copies nothing.
    ///
    /// # Safety
    ///
    /// `from` must be valid for reads of `n` bytes for the duration of the call (another
    /// guest may write them meanwhile: the copy then holds some mix of old and new bytes).
    pub(super) unsafe fn write_raw_nofault(&mut self, from: *const u8, n: usize) -> usize {
        if self.source {
            return 0;
        }
        // SAFETY: `raw()` is a valid destination iterator (type invariant); the caller
        // guarantees `from..from + n`.
        let got = unsafe { vmcs_glue_copy_to_iter_nofault(from.cast(), n, self.raw()) };
        self.done += got;
        got
    }

    /// Copies the next `dst.len()` bytes of this source into `dst` with page faults
    /// disabled; returns the bytes copied.
    pub(crate) fn read_nofault(&mut self, dst: &mut [MaybeUninit<u8>]) -> usize {
        // SAFETY: `dst` is valid for writes of its length.
        unsafe { self.read_raw_nofault(dst.as_mut_ptr().cast(), dst.len()) }
    }

    /// Copies the next `dst.len()` bytes of this source into `dst`, faulting pages in as
    /// needed (it may sleep: no lock held); returns the bytes copied (fewer only where the
    /// memory is not readable).
    pub(crate) fn read(&mut self, dst: &mut [MaybeUninit<u8>]) -> usize {
        if !self.source {
            return 0;
        }
        // SAFETY: `raw()` is a valid source iterator; `dst` is valid for writes of its
        // length.
        let got =
            unsafe { bindings::_copy_from_iter(dst.as_mut_ptr().cast(), dst.len(), self.raw()) };
        self.done += got;
        got
    }

    /// Copies `src` to this destination with page faults disabled; returns the bytes
    /// copied.
    pub(crate) fn write_nofault(&mut self, src: &[u8]) -> usize {
        // SAFETY: `src` is valid for reads of its length.
        unsafe { self.write_raw_nofault(src.as_ptr(), src.len()) }
    }

    /// Faults in the next `n` bytes (for reading a source, writing a destination); it may
    /// sleep, so no lock may be held. Returns how many of them are present now (fewer
    /// where the memory is not accessible: `EFAULT` for the caller).
    pub(crate) fn fault_in(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        let source = self.source;
        let raw = self.raw();
        // SAFETY: `raw` is a valid iterator (type invariant); faulting in only touches the
        // user pages it covers.
        let missing = unsafe {
            if source {
                bindings::fault_in_iov_iter_readable(raw, n)
            } else {
                bindings::fault_in_iov_iter_writeable(raw, n)
            }
        };
        n.saturating_sub(missing)
    }

    /// Steps back over the last `n` bytes copied through this iterator (at most what it
    /// copied).
    pub(crate) fn revert(&mut self, n: usize) {
        let n = n.min(self.done);
        if n == 0 {
            return;
        }
        // SAFETY: `raw()` is valid, and it advanced by `done >= n` bytes through our copies,
        // so stepping back `n` stays inside it.
        unsafe { bindings::iov_iter_revert(self.raw(), n) };
        self.done -= n;
    }
}
