// SPDX-License-Identifier: GPL-2.0

//! The ivshmem PCI driver (QEMU device 1af4:1110, `ivshmem-plain` and `ivshmem-doorbell`).
//!
//! BAR0 holds four 32-bit registers (docs/specs/ivshmem-spec.rst in QEMU); BAR1, present only
//! on `ivshmem-doorbell`, is the MSI-X table; BAR2 is the shared memory.

use crate::{
    domain::{self, Domain, IvshmemVariant},
    glue::SharedRegion,
    transport::ivshmem::{self, REGS_SIZE},
};
use kernel::{
    device::{self, Bound, Core},
    io::Io,
    irq, pci,
    prelude::*,
    revocable::Revocable,
    sync::Arc,
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
        self.domain.doorbell(self.vector);
        irq::IrqReturn::Handled
    }
}

/// debugfs files of one domain, `vmcs/vmcs<N>/{peers,rings,connections,resets,net,selftest}`.
/// State of one bound ivshmem device.
pub(crate) struct IvshmemDevice<'bound> {
    pdev: &'bound pci::Device<Bound>,
    /// One registration per MSI-X vector used (none on plain).
    irqs: KVec<Pin<KBox<irq::Registration<DoorbellIrq>>>>,
    _debugfs: Option<domain::Debugfs>,
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

/// Tears a started domain down: stop the works and doorbells, leave the peer table, reset
/// every peer in the core, revoke the region. No transport code runs afterwards.
fn teardown(
    dev: &device::Device<Bound>,
    domain: &Arc<Domain>,
    irqs: &[Pin<KBox<irq::Registration<DoorbellIrq>>>],
) {
    // The net device goes first, while the transport still runs: `unregister_netdev` waits
    // for its operations, so none sends afterwards.
    domain.net_down();
    // Closed connections still sending their last frames finish first (the works run).
    domain.linger();
    domain.stop();
    for irq in irqs {
        // A handler that raced with `stop` has finished after this; later ones see it.
        // (`synchronize` sleeps; `try_synchronize` would do so under the RCU read lock.)
        let _ = irq.synchronize(dev);
    }
    domain.flush_works();
    domain.leave();
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
            Ok(n) if n > 0 => IvshmemVariant::Doorbell,
            _ => IvshmemVariant::Plain,
        };
        // IVPosition is meaningful only with a server; ivshmem-plain reports no id.
        let ivposition = match variant {
            IvshmemVariant::Doorbell => Some(regs.read32(REG_IVPOSITION)),
            IvshmemVariant::Plain => None,
        };
        // Doorbell: BAR0 stays reachable from the transport ('static, revoked on unbind).
        let regs = match variant {
            IvshmemVariant::Doorbell => Some(regs.into_devres()?),
            IvshmemVariant::Plain => None,
        };
        let region = SharedRegion::map(pdev, SHM_BAR)?;
        let size = region.len();
        let params = crate::params::transport();
        let joined = ivshmem::attach_and_join(pdev.as_ref(), &region, ivposition, &params)?;
        let region = Arc::pin_init(Revocable::new(region), GFP_KERNEL)?;

        let domain_region = region.clone();
        let domain = domain::register_new(|index| {
            Domain::new(index, variant, domain_region, joined, regs, params)
        })
        .inspect_err(|_| Domain::abort_join(&region, &joined))?;

        // The doorbell IRQs are requested before the link starts (their handlers ignore
        // doorbells until then), so no doorbell after `start` is lost. Two vectors if the
        // device has them (`VEC_DATA`, `VEC_SPACE`), else one.
        let mut irqs = KVec::new();
        if variant == IvshmemVariant::Doorbell {
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
                    domain.set_vectors(n);
                    Ok(())
                });
            if let Err(e) = r {
                dev_err!(pdev, "vmcs: cannot set up the doorbell MSI-X vectors\n");
                teardown(pdev.as_ref(), &domain, &irqs);
                return Err(e);
            }
        }
        if let Err(e) = domain.start() {
            dev_err!(pdev, "vmcs{}: cannot join the peer table\n", domain.index);
            teardown(pdev.as_ref(), &domain, &irqs);
            return Err(e);
        }
        domain.net_up(pdev.as_ref());
        let debugfs = domain::create_debugfs(&domain).ok();

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
