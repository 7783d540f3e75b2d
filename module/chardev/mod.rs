// SPDX-License-Identifier: GPL-2.0

//! `/dev/vmcs`: one endpoint per open file (docs/uapi.md).
//!
//! Each open file (and each file `VMCS_IOC_ACCEPT` returns) is one endpoint of the core
//! (`conn::Endpoint`) of the default domain (`VMCS_IOC_OPEN_DOMAIN` returns a new file on
//! another one): it binds, listens and accepts, or connects, and
//! then carries SEQPACKET messages, one per `write()` and one per `read()`.
//!
//! The C entry points of the file operations are in [`entry`] (nothing imports it).

mod entry;

use crate::{
    conn::{Endpoint, CHARDEV_TYPE, MAX_RCVBUF, MIN_RCVBUF},
    domain::{self, Domain, IvshmemVariant},
    glue::{self, errno, oflags},
    transport::PeerInfo,
    uapi::{
        self, VmcsAccept, VmcsAddr, VmcsBulkDesc, VmcsBulkSetup, VmcsConnect, VmcsInfo, VmcsNames,
        VmcsOpenDomain, VmcsOpts, VmcsPeerInfo,
    },
};
use kernel::{
    fs::File,
    prelude::*,
    sync::{poll::PollTable, Arc},
    uaccess::{UserPtr, UserSlice, UserSliceReader, UserSliceWriter},
};

// SAFETY: `VmcsFile` is the type the /dev/vmcs entry points (entry.rs) keep in
// `private_data`.
unsafe impl glue::DevFilePrivate for VmcsFile {
    fn mapping(&self) -> &Arc<glue::FileMapping> {
        &self.mapping
    }

    fn release(&self) {
        VmcsFile::release(self)
    }
}

/// The state of one open `/dev/vmcs` file.
pub(crate) struct VmcsFile {
    domain: Arc<Domain>,
    endpoint: Arc<Endpoint>,
    /// The file's own address_space (bulk area mappings live there).
    pub(crate) mapping: Arc<glue::FileMapping>,
}

impl VmcsFile {
    /// Opens an endpoint on the default domain; `ENODEV` when no ivshmem device is bound.
    pub(crate) fn open() -> Result<Arc<Self>> {
        let domain = domain::default_domain().ok_or(ENODEV)?;
        let endpoint = Endpoint::new(CHARDEV_TYPE)?;
        let mapping = glue::FileMapping::new()?;
        Ok(Arc::new(
            Self {
                domain,
                endpoint,
                mapping,
            },
            GFP_KERNEL,
        )?)
    }

    /// Called once when the file is released.
    pub(crate) fn release(&self) {
        self.endpoint.release(&self.domain.core);
    }

    /// `ENODEV` once the device is unbound.
    fn alive(&self) -> Result {
        self.domain.region.try_access().map(|_| ()).ok_or(ENODEV)
    }

    fn nonblock(&self, file_nonblock: bool) -> bool {
        file_nonblock || self.endpoint.nonblock()
    }

    /// Reads one message; a smaller buffer truncates it (the rest is discarded).
    pub(crate) fn read(&self, mut out: UserSliceWriter, nonblock: bool) -> Result<usize> {
        self.alive()?;
        let nonblock = self.nonblock(nonblock);
        let msg = self.endpoint.recv(&self.domain.core, out.len(), nonblock)?;
        out.write_slice(&msg)?;
        Ok(msg.len())
    }

    /// Writes one message of 1..=`VMCS_MAX_MSG_SIZE` bytes.
    pub(crate) fn write(&self, input: UserSliceReader, nonblock: bool) -> Result<usize> {
        self.alive()?;
        let nonblock = self.nonblock(nonblock);
        let len = input.len();
        if len > uapi::MAX_MSG_SIZE as usize {
            return Err(errno::emsgsize());
        }
        let mut data = KVec::with_capacity(len, GFP_KERNEL)?;
        input.read_all(&mut data, GFP_KERNEL)?;
        self.endpoint.send(&self.domain.core, data, nonblock)
    }

    /// The ioctls of docs/uapi.md.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize, nonblock: bool) -> Result<isize> {
        let nonblock = self.nonblock(nonblock);
        let core = &self.domain.core;
        let user = |size: usize| UserSlice::new(UserPtr::from_addr(arg), size);
        match cmd {
            uapi::IOC_GET_INFO => {
                self.alive()?;
                let info = self.info()?;
                user(size_of::<VmcsInfo>()).writer().write(&*info)?;
                Ok(0)
            }
            uapi::IOC_BIND => {
                self.alive()?;
                let (mut r, mut w) = user(size_of::<VmcsAddr>()).reader_writer();
                let mut addr: VmcsAddr = r.read()?;
                let local = self.domain.link.local_id();
                if addr.cid != uapi::CID_ANY && addr.cid != uapi::CID_LOCAL && addr.cid != local {
                    return Err(errno::eaddrnotavail());
                }
                addr.port = Endpoint::bind(&self.endpoint, core, addr.port)?;
                addr.cid = local;
                w.write(&addr)?;
                Ok(0)
            }
            uapi::IOC_CONNECT => {
                self.alive()?;
                let c: VmcsConnect = user(size_of::<VmcsConnect>()).reader().read()?;
                if c.flags != 0 {
                    return Err(EINVAL);
                }
                Endpoint::connect(
                    &self.endpoint,
                    core,
                    c.addr.cid,
                    c.addr.port,
                    c.timeout_ms,
                    nonblock,
                )?;
                Ok(0)
            }
            uapi::IOC_LISTEN => {
                self.alive()?;
                let backlog: u32 = user(size_of::<u32>()).reader().read()?;
                self.endpoint.listen(core, backlog)?;
                Ok(0)
            }
            uapi::IOC_ACCEPT => {
                self.alive()?;
                let (mut r, mut w) = user(size_of::<VmcsAccept>()).reader_writer();
                let mut a: VmcsAccept = r.read()?;
                if a.reserved != 0 || a.flags & !(oflags::NONBLOCK | oflags::CLOEXEC) != 0 {
                    return Err(EINVAL);
                }
                let (child, peer, port) = self.endpoint.accept(nonblock)?;
                let ep = glue::FileMapping::new().and_then(|mapping| {
                    Ok(Arc::new(
                        Self {
                            domain: self.domain.clone(),
                            endpoint: child.clone(),
                            mapping,
                        },
                        GFP_KERNEL,
                    )?)
                });
                let ep = match ep {
                    Ok(ep) => ep,
                    Err(e) => {
                        child.release(core);
                        return Err(e);
                    }
                };
                a.peer = VmcsAddr { cid: peer, port };
                let fd = glue::file::install_dev_file(ep, a.flags, |_fd| w.write(&a))?;
                // Descriptors are small non-negative ints.
                Ok(fd as isize)
            }
            uapi::IOC_SET_OPTS => {
                let o: VmcsOpts = user(size_of::<VmcsOpts>()).reader().read()?;
                if o.reserved != 0 || o.mask & !(uapi::OPT_NONBLOCK | uapi::OPT_RCVBUF) != 0 {
                    return Err(EINVAL);
                }
                let nb = if o.mask & uapi::OPT_NONBLOCK != 0 {
                    if o.nonblock > 1 {
                        return Err(EINVAL);
                    }
                    Some(o.nonblock == 1)
                } else {
                    None
                };
                let rb = if o.mask & uapi::OPT_RCVBUF != 0 {
                    if !(MIN_RCVBUF..=MAX_RCVBUF).contains(&o.rcvbuf) {
                        return Err(EINVAL);
                    }
                    Some(o.rcvbuf)
                } else {
                    None
                };
                self.endpoint.set_opts(core, nb, rb);
                Ok(0)
            }
            uapi::IOC_GET_NAMES => {
                let local = self.domain.link.local_id();
                let (port, remote) = self.endpoint.names();
                let names = VmcsNames {
                    local: VmcsAddr {
                        cid: local,
                        port: port.unwrap_or(uapi::PORT_ANY),
                    },
                    remote: remote
                        .map(|(cid, port)| VmcsAddr { cid, port })
                        .unwrap_or_default(),
                };
                user(size_of::<VmcsNames>()).writer().write(&names)?;
                Ok(0)
            }
            uapi::IOC_SHUTDOWN => {
                let how: u32 = user(size_of::<u32>()).reader().read()?;
                if how > uapi::SHUT_RDWR {
                    return Err(EINVAL);
                }
                self.endpoint.shutdown(core, how)?;
                Ok(0)
            }
            uapi::IOC_BULK_SETUP => {
                self.alive()?;
                let (mut r, mut w) = user(size_of::<VmcsBulkSetup>()).reader_writer();
                let mut b: VmcsBulkSetup = r.read()?;
                let (tx, rx) = self.endpoint.bulk_setup(
                    core,
                    b.size,
                    b.timeout_ms,
                    nonblock,
                    &self.mapping,
                )?;
                b.tx_size = tx;
                b.rx_size = rx;
                w.write(&b)?;
                Ok(0)
            }
            uapi::IOC_BULK_SEND | uapi::IOC_BULK_WAIT => {
                self.alive()?;
                let d: VmcsBulkDesc = user(size_of::<VmcsBulkDesc>()).reader().read()?;
                let publish = cmd == uapi::IOC_BULK_SEND;
                self.endpoint
                    .bulk_send(core, d.off, d.len, nonblock, publish)?;
                Ok(0)
            }
            uapi::IOC_BULK_RECV => {
                self.alive()?;
                let d = self.endpoint.bulk_recv(core, nonblock)?;
                let out = d
                    .map(|d| VmcsBulkDesc {
                        off: d.off,
                        len: d.len,
                    })
                    .unwrap_or_default();
                user(size_of::<VmcsBulkDesc>()).writer().write(&out)?;
                Ok(0)
            }
            uapi::IOC_BULK_RELEASE => {
                self.alive()?;
                let count: u32 = user(size_of::<u32>()).reader().read()?;
                self.endpoint.bulk_release(core, count)?;
                Ok(0)
            }
            uapi::IOC_OPEN_DOMAIN => {
                let o: VmcsOpenDomain = user(size_of::<VmcsOpenDomain>()).reader().read()?;
                if o.flags & !(oflags::NONBLOCK | oflags::CLOEXEC) != 0 {
                    return Err(EINVAL);
                }
                let domain = domain::by_index(o.domain).ok_or(ENODEV)?;
                let endpoint = Endpoint::new(CHARDEV_TYPE)?;
                let mapping = glue::FileMapping::new()?;
                let ep = Arc::new(
                    Self {
                        domain,
                        endpoint,
                        mapping,
                    },
                    GFP_KERNEL,
                )?;
                let fd = glue::file::install_dev_file(ep, o.flags, |_fd| Ok(()))?;
                // Descriptors are small non-negative ints.
                Ok(fd as isize)
            }
            _ => Err(ENOTTY),
        }
    }

    /// `mmap` of the bulk area (docs/uapi.md): returns whether the range is read-only.
    pub(crate) fn bulk_mmap(&self, pgoff: usize, len: usize, write: bool) -> Result<bool> {
        self.alive()?;
        self.endpoint.bulk_mmap(pgoff, len, write)
    }

    /// A page fault in a bulk area mapping; returns the `vm_fault_t`.
    pub(crate) fn bulk_fault(&self, pgoff: usize, fault: &glue::Fault) -> u32 {
        self.endpoint.bulk_fault(&self.domain.core, pgoff, fault)
    }

    /// `VMCS_IOC_GET_INFO`.
    fn info(&self) -> Result<KBox<VmcsInfo>> {
        let link = &self.domain.link;
        let mut peers = KVec::<PeerInfo>::new();
        link.peers(&mut peers)?;
        let mut info = KBox::new(
            VmcsInfo {
                abi_version: uapi::ABI_VERSION,
                domain: self.domain.index,
                local_cid: link.local_id(),
                transport: match self.domain.variant {
                    IvshmemVariant::Plain => uapi::TRANSPORT_IVSHMEM_PLAIN,
                    IvshmemVariant::Doorbell => uapi::TRANSPORT_IVSHMEM_DOORBELL,
                },
                region_size: self.domain.size as u64,
                max_peers: link.max_peers(),
                ring_size: link.ring_size(),
                max_msg_size: uapi::MAX_MSG_SIZE,
                npeers: 0,
                peers: [VmcsPeerInfo::default(); uapi::MAX_PEERS],
            },
            GFP_KERNEL,
        )?;
        for (slot, p) in info.peers.iter_mut().zip(peers.iter()) {
            *slot = VmcsPeerInfo {
                id: p.id,
                state: p.state,
                generation: p.generation,
                heartbeat_age_ms: p.heartbeat_age_ms,
            };
        }
        // At most `MAX_PEERS` entries were filled.
        info.npeers = peers.len().min(uapi::MAX_PEERS) as u32;
        Ok(info)
    }

    /// `poll()`: see docs/uapi.md for the mask.
    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>) -> u32 {
        if self.alive().is_err() {
            return glue::poll_mask::ERR | glue::poll_mask::HUP;
        }
        self.endpoint.poll(file, table)
    }
}
