// SPDX-License-Identifier: GPL-2.0

//! The ivshmem PCI driver (QEMU device 1af4:1110, `ivshmem-plain` and `ivshmem-doorbell`).
//!
//! BAR0 holds four 32-bit registers (docs/specs/ivshmem-spec.rst in QEMU); BAR1, present only
//! on `ivshmem-doorbell`, is the MSI-X table; BAR2 is the shared memory.

use crate::{
    domain::{self, Domain, Variant, RX_WORK, TICK_WORK},
    ffi::{self, SharedRegion},
    ports,
    transport::ivshmem::{self, Link, REGS_SIZE},
};
use kernel::{
    debugfs::{Dir, File},
    device::{self, Bound, Core},
    io::Io,
    irq, new_delayed_work, pci,
    prelude::*,
    revocable::Revocable,
    str::CString,
    sync::Arc,
    uaccess::UserSliceReader,
};

/// BAR0 register: this guest's peer id on `ivshmem-doorbell`.
const REG_IVPOSITION: usize = 0x08;
/// The BAR that holds the shared memory.
const SHM_BAR: u32 = 2;
/// The BAR of the MSI-X table, present only on `ivshmem-doorbell`.
const MSIX_BAR: u32 = 1;

/// The driver of ivshmem devices.
pub(crate) struct IvshmemDriver;

/// The MSI-X handler of one vector of a doorbell device (`ivshmem::VEC_DATA` or
/// `VEC_SPACE`): it counts the doorbell and queues the domain's receive work.
#[pin_data]
struct DoorbellIrq {
    domain: Arc<Domain>,
    vector: u32,
}

impl irq::Handler for DoorbellIrq {
    fn handle(&self, _dev: &device::Device<Bound>) -> irq::IrqReturn {
        self.domain.link.doorbell_irq(&self.domain, self.vector);
        irq::IrqReturn::Handled
    }
}

/// debugfs files of one domain, `vmcs/vmcs<N>/{peers,rings,connections,selftest}`.
struct Debugfs {
    _peers: Pin<KBox<File<Arc<Domain>>>>,
    _connections: Pin<KBox<File<Arc<Domain>>>>,
    _rings: Pin<KBox<File<Arc<Domain>>>>,
    _selftest: Pin<KBox<File<Arc<Domain>>>>,
    _dir: Dir,
}

/// State of one bound ivshmem device.
pub(crate) struct IvshmemDevice<'bound> {
    pdev: &'bound pci::Device<Bound>,
    /// One registration per MSI-X vector used (none on plain).
    irqs: KVec<Pin<KBox<irq::Registration<DoorbellIrq>>>>,
    _debugfs: Option<Debugfs>,
    domain: Arc<Domain>,
}

kernel::pci_device_table!(
    PCI_TABLE,
    MODULE_PCI_TABLE,
    <IvshmemDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, 0x1110),
        ()
    )]
);

/// Parses `"<peer> <count>"` written to debugfs `selftest` and sends the frames.
fn selftest_write(domain: &Arc<Domain>, input: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 32];
    let n = input.len().min(buf.len());
    let text = buf.get_mut(..n).ok_or(EINVAL)?;
    input.read_slice(text)?;
    let text = core::str::from_utf8(text).map_err(|_| EINVAL)?;
    let mut words = text.split_whitespace();
    let peer: u32 = words.next().ok_or(EINVAL)?.parse().map_err(|_| EINVAL)?;
    let count: u32 = words.next().ok_or(EINVAL)?.parse().map_err(|_| EINVAL)?;
    let sent = domain.link.selftest(peer, count)?;
    pr_info!(
        "vmcs{}: selftest sent {} frames to peer {}\n",
        domain.index,
        sent,
        peer
    );
    Ok(())
}

fn create_debugfs(domain: &Arc<Domain>) -> Result<Debugfs> {
    let name = CString::try_from_fmt(fmt!("vmcs{}", domain.index))?;
    let dir = domain::debugfs_root().subdir(&name);
    let peers = KBox::pin_init(
        dir.read_callback_file(c"peers", domain.clone(), &|d: &Arc<Domain>, f| {
            d.link.show_peers(f)
        }),
        GFP_KERNEL,
    )?;
    let rings = KBox::pin_init(
        dir.read_callback_file(c"rings", domain.clone(), &|d: &Arc<Domain>, f| {
            d.link.show_rings(f)
        }),
        GFP_KERNEL,
    )?;
    let connections = KBox::pin_init(
        dir.read_callback_file(c"connections", domain.clone(), &|d: &Arc<Domain>, f| {
            d.core.describe(f)
        }),
        GFP_KERNEL,
    )?;
    let selftest = KBox::pin_init(
        dir.write_callback_file(c"selftest", domain.clone(), &selftest_write),
        GFP_KERNEL,
    )?;
    Ok(Debugfs {
        _peers: peers,
        _connections: connections,
        _rings: rings,
        _selftest: selftest,
        _dir: dir,
    })
}

/// Tears a started domain down: stop the works and doorbells, leave the peer table, reset
/// every peer in the core, revoke the region. No transport code runs afterwards.
fn teardown(
    dev: &device::Device<Bound>,
    domain: &Arc<Domain>,
    irqs: &[Pin<KBox<irq::Registration<DoorbellIrq>>>],
) {
    // Closed connections still sending their last frames finish first (the works run).
    domain.core.linger();
    domain.link.stop();
    for irq in irqs {
        // A handler that raced with `stop` has finished after this; later ones see it.
        // (`synchronize` sleeps; `try_synchronize` would do so under the RCU read lock.)
        let _ = irq.synchronize(dev);
    }
    ffi::flush_delayed_work::<Domain, RX_WORK>(domain);
    ffi::flush_delayed_work::<Domain, TICK_WORK>(domain);
    domain.link.leave(&domain.core);
    domain::unregister(domain);
}

impl pci::Driver for IvshmemDriver {
    type IdInfo = ();
    type Data<'bound> = IvshmemDevice<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: &'bound Self::IdInfo,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pdev.enable_device_mem()?;
        pdev.set_master();

        let regs = pdev.iomap_region_sized::<REGS_SIZE>(0, c"vmcs-regs")?;
        let variant = match pdev.resource_len(MSIX_BAR) {
            Ok(n) if n > 0 => Variant::Doorbell,
            _ => Variant::Plain,
        };
        // IVPosition is meaningful only with a server; ivshmem-plain reports no id.
        let ivposition = match variant {
            Variant::Doorbell => Some(regs.read32(REG_IVPOSITION)),
            Variant::Plain => None,
        };
        // Doorbell: BAR0 stays reachable from the transport ('static, revoked on unbind).
        let regs = match variant {
            Variant::Doorbell => Some(regs.into_devres()?),
            Variant::Plain => None,
        };
        let region = SharedRegion::map(pdev, SHM_BAR)?;
        let size = region.len();
        let params = crate::transport_params();
        let joined = ivshmem::attach_and_join(pdev.as_ref(), &region, ivposition, &params)?;
        let region = Arc::pin_init(Revocable::new(region), GFP_KERNEL)?;

        let link_region = region.clone();
        let domain_region = region.clone();
        let domain = domain::register_new(|index| {
            let link = Link::new(index, joined, link_region, regs, params)?;
            Arc::pin_init(
                try_pin_init!(Domain {
                    index,
                    variant,
                    ivposition,
                    size,
                    region: domain_region,
                    link <- link,
                    // SAFETY: The core initialises the `core` field of this `Domain`.
                    core <- unsafe { ports::Core::new() },
                    rx_work <- new_delayed_work!("vmcs_rx"),
                    tick_work <- new_delayed_work!("vmcs_tick"),
                }),
                GFP_KERNEL,
            )
        })
        .inspect_err(|_| {
            if let Some(shm) = region.try_access() {
                ivshmem::abort_join(&shm, &joined);
            }
        })?;

        // The doorbell IRQs are requested before the link starts (their handlers ignore
        // doorbells until then), so no doorbell after `start` is lost. Two vectors if the
        // device has them (`VEC_DATA`, `VEC_SPACE`), else one.
        let mut irqs = KVec::new();
        if variant == Variant::Doorbell {
            let msix = pci::IrqTypes::default().with(pci::IrqType::MsiX);
            let r =
                match pdev.alloc_irq_vectors(ivshmem::MAX_VECTORS, ivshmem::MAX_VECTORS, msix) {
                    Ok(v) => Ok((v, ivshmem::MAX_VECTORS)),
                    Err(_) => pdev.alloc_irq_vectors(1, 1, msix).map(|v| (v, 1)),
                }
                .and_then(|(vecs, n)| {
                    // The range is 0..=n-1 and n is 1 or 2: its ends are all the vectors.
                    let mut ends = [Some(*vecs.start()), None];
                    if n > 1 {
                        ends[1] = Some(*vecs.end());
                    }
                    for (vector, v) in (0u32..).zip(ends.into_iter().flatten()) {
                        let handler_domain = domain.clone();
                        let reg = KBox::pin_init(
                            pdev.request_irq(
                                v,
                                irq::Flags::TRIGGER_NONE,
                                c"vmcs",
                                try_pin_init!(DoorbellIrq {
                                    domain: handler_domain,
                                    vector,
                                }),
                            ),
                            GFP_KERNEL,
                        )?;
                        irqs.push(reg, GFP_KERNEL)?;
                    }
                    domain.link.set_vectors(n);
                    Ok(())
                });
            if let Err(e) = r {
                dev_err!(pdev, "vmcs: cannot set up the doorbell MSI-X vectors\n");
                teardown(pdev.as_ref(), &domain, &irqs);
                return Err(e);
            }
        }
        if let Err(e) = domain.link.start(&domain) {
            dev_err!(pdev, "vmcs{}: cannot join the peer table\n", domain.index);
            teardown(pdev.as_ref(), &domain, &irqs);
            return Err(e);
        }
        let debugfs = create_debugfs(&domain).ok();

        match ivposition {
            Some(id) => dev_info!(
                pdev,
                "vmcs{}: {} bound, peer id {}, region {} KiB\n",
                domain.index,
                variant.name(),
                id,
                size / 1024
            ),
            None => dev_info!(
                pdev,
                "vmcs{}: {} bound, peer id negotiated in the region, region {} KiB\n",
                domain.index,
                variant.name(),
                size / 1024
            ),
        }

        Ok(IvshmemDevice {
            pdev,
            irqs,
            _debugfs: debugfs,
            domain,
        })
    }

    fn unbind<'bound>(pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        teardown(pdev.as_ref(), &this.domain, &this.irqs);
    }
}

impl Drop for IvshmemDevice<'_> {
    fn drop(&mut self) {
        dev_info!(self.pdev, "vmcs{}: unbound\n", self.domain.index);
    }
}
