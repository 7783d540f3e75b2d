//! `vmcs-test region CMD`: reads and writes the header of the first ivshmem device's region
//! (PCI BAR2, mapped through sysfs `resource2` while vmcs is not bound to it), for the
//! `versions` scenario, where the protocol-1 module and this one take turns on one region.
//!
//! - `fresh`: an uninitialised region (init word 0, header cleared);
//! - `version`: prints the header's version;
//! - `slot0`: prints peer slot 0's state word (the peer table starts at 0x1000).

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;

use vmcs_guest_tools::Res;

/// Header offsets (docs/protocol.md §2; the same in versions 1 and 2).
const VERSION: usize = 0x08;
const SLOT0: usize = 0x1000;

fn bar2() -> Result<String, String> {
    for e in fs::read_dir("/sys/bus/pci/devices").map_err(|e| format!("sysfs: {e}"))? {
        let d = e.map_err(|e| e.to_string())?.path();
        let rd = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_default();
        if rd("vendor").trim() == "0x1af4" && rd("device").trim() == "0x1110" {
            return Ok(d.join("resource2").to_string_lossy().into_owned());
        }
    }
    Err("no ivshmem device".into())
}

struct Map {
    p: *mut u8,
    len: usize,
}

impl Map {
    fn new() -> Result<Self, String> {
        let path = bar2()?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{path}: {e}"))?;
        let len = 8192;
        // SAFETY: a fresh shared mapping of the BAR's first two pages; nothing else in this
        // process refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(Self { p: p.cast(), len })
    }

    fn get(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: `off` is inside the mapping and 4-aligned (every caller's constant).
        unsafe { self.p.add(off).cast::<u32>().read_volatile() }
    }

    fn set(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len);
        // SAFETY: as in `get`.
        unsafe { self.p.add(off).cast::<u32>().write_volatile(v) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.p.cast(), self.len) };
    }
}

pub fn region(cmd: &str) -> Res {
    let m = Map::new()?;
    match cmd {
        "fresh" => {
            for off in (0..m.len).step_by(4) {
                m.set(off, 0);
            }
        }
        "version" => println!("{}", m.get(VERSION)),
        "slot0" => println!("{:#x}", m.get(SLOT0)),
        _ => return Err(format!("unknown region command {cmd}")),
    }
    Ok(())
}
