//! `domains N`: several ivshmem devices, one domain each (`VMCS_IOC_OPEN_DOMAIN`).

use vmcs_guest_tools::dev::Fd;
use vmcs_guest_tools::Res;

use crate::{expect_err, ok};

/// `domains N`: every domain 0..N-1 opens and reports its own index and peer table; domain
/// N does not exist.
pub(crate) fn domains(n: u32) -> Res {
    let f = Fd::open()?;
    for d in 0..n {
        let e = ok(
            &format!("open domain {d}"),
            f.open_domain(d, libc::O_CLOEXEC as u32),
        )?;
        let info = ok("GET_INFO", e.info())?;
        if info.domain != d {
            return Err(format!("domain {d}: GET_INFO says domain {}", info.domain));
        }
        let ids: Vec<u32> = info.peers[..(info.npeers as usize).min(64)]
            .iter()
            .map(|p| p.id)
            .collect();
        println!(
            "domain {d}: local cid {}, peers {ids:?}, region {} KiB",
            info.local_cid,
            info.region_size >> 10
        );
    }
    expect_err(
        "open a domain that does not exist",
        f.open_domain(n, 0),
        libc::ENODEV,
    )?;
    expect_err("open with unknown flags", f.open_domain(0, 1), libc::EINVAL)?;
    Ok(())
}
