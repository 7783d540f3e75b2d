// SPDX-License-Identifier: GPL-2.0

//! The ivshmem PCI driver (QEMU device 1af4:1110, `ivshmem-plain` and `ivshmem-doorbell`).
//!
//! BAR0 holds four 32-bit registers (docs/specs/ivshmem-spec.rst in QEMU); BAR1, present only
//! on `ivshmem-doorbell`, is the MSI-X table; BAR2 is the shared memory.

use crate::{
    domain::{self, Domain, Variant},
    ffi::SharedRegion,
    ports,
    transport::ivshmem::Link,
};
use kernel::{
    device::{Bound, Core},
    io::Io,
    pci,
    prelude::*,
    revocable::Revocable,
    sync::Arc,
};

/// Size of the BAR0 register block.
const REGS_SIZE: usize = 256;
/// BAR0 register: this guest's peer id on `ivshmem-doorbell`.
const REG_IVPOSITION: usize = 0x08;
/// The BAR that holds the shared memory.
const SHM_BAR: u32 = 2;
/// The BAR of the MSI-X table, present only on `ivshmem-doorbell`.
const MSIX_BAR: u32 = 1;

/// The driver of ivshmem devices.
pub(crate) struct IvshmemDriver;

/// State of one bound ivshmem device.
pub(crate) struct IvshmemDevice<'bound> {
    pdev: &'bound pci::Device<Bound>,
    _regs: pci::Bar<'bound, REGS_SIZE>,
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
        let region = SharedRegion::map(pdev, SHM_BAR)?;
        let size = region.len();

        let server_id = ivposition;
        let domain = domain::register_new(|index| {
            Arc::pin_init(
                try_pin_init!(Domain {
                    index,
                    variant,
                    ivposition,
                    size,
                    region <- Revocable::new(region),
                    link: Link::new(server_id),
                    // SAFETY: The core initialises the `core` field of this `Domain`.
                    core <- unsafe { ports::Core::new() },
                }),
                GFP_KERNEL,
            )
        })?;

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
            _regs: regs,
            domain,
        })
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        domain::unregister(&this.domain);
    }
}

impl Drop for IvshmemDevice<'_> {
    fn drop(&mut self) {
        dev_info!(self.pdev, "vmcs{}: unbound\n", self.domain.index);
    }
}
