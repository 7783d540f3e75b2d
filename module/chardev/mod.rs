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
    conn::{crypto::Policy, Endpoint, Timeout, CHARDEV_TYPE, MAX_RCVBUF, MIN_RCVBUF},
    domain::{self, Domain},
    glue::{self, errno, oflags, poll_mask},
    proto::bulk::Desc,
    uapi::{
        self, VmcsAccept, VmcsAddr, VmcsBulkDesc, VmcsBulkSetup, VmcsBulkVec, VmcsConnect,
        VmcsInfo, VmcsNames, VmcsOpenDomain, VmcsOpts, VmcsPolicyGet, VmcsPolicyRule,
    },
};
use core::sync::atomic::Ordering::Relaxed;
use kernel::{
    fs::File,
    prelude::*,
    sync::{poll::PollTable, Arc},
    uaccess::{UserPtr, UserSlice},
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

/// The user argument of one ioctl: `arg` as a user pointer.
#[derive(Clone, Copy)]
struct IoctlArg(usize);

impl IoctlArg {
    /// The `size` bytes at the argument.
    fn slice(self, size: usize) -> UserSlice {
        UserSlice::new(UserPtr::from_addr(self.0), size)
    }

    /// The argument read as a `T`.
    fn read<T: kernel::transmute::FromBytes>(self) -> Result<T> {
        self.slice(size_of::<T>()).reader().read()
    }

    /// Writes `v` to the argument.
    fn write<T: kernel::transmute::AsBytes>(self, v: &T) -> Result {
        self.slice(size_of::<T>()).writer().write(v)
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
    /// A new file's state: a fresh endpoint on `domain`.
    fn new(domain: Arc<Domain>) -> Result<Arc<Self>> {
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

    /// Opens an endpoint on the default domain; `ENODEV` when no ivshmem device is bound.
    pub(crate) fn open() -> Result<Arc<Self>> {
        Self::new(domain::default_domain().ok_or(ENODEV)?)
    }

    /// Called once when the file is released.
    pub(crate) fn release(&self) {
        self.endpoint.release(&self.domain.conns());
    }

    fn nonblock(&self, file_nonblock: bool) -> bool {
        file_nonblock || self.endpoint.nonblock()
    }

    /// Reads one message straight into the user buffer `dst`; a smaller buffer truncates it
    /// (the rest is discarded). A buffer that cannot be written: `EFAULT`, and the message
    /// stays queued.
    pub(crate) fn read(&self, mut dst: glue::UserIter<'_>, nonblock: bool) -> Result<usize> {
        self.domain.alive()?;
        let nonblock = self.nonblock(nonblock);
        self.endpoint
            .recv_user(&self.domain.conns(), &mut dst, nonblock)
    }

    /// Writes one message of 1..=`VMCS_MAX_MSG_SIZE` bytes, copied from the user buffer
    /// `src` straight into the ring.
    pub(crate) fn write(&self, mut src: glue::UserIter<'_>, nonblock: bool) -> Result<usize> {
        self.domain.alive()?;
        let nonblock = self.nonblock(nonblock);
        if src.len() > uapi::MAX_MSG_SIZE as usize {
            return Err(errno::emsgsize());
        }
        self.endpoint.send_user(
            &self.domain.conns(),
            &mut src,
            &mut Timeout::blocking(nonblock),
            false,
        )
    }

    /// The ioctls of docs/uapi.md, one method each.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize, nonblock: bool) -> Result<isize> {
        let nonblock = self.nonblock(nonblock);
        let arg = IoctlArg(arg);
        match cmd {
            uapi::IOC_GET_INFO => self.get_info(arg),
            uapi::IOC_BIND => self.bind(arg),
            uapi::IOC_CONNECT => self.connect(arg, nonblock),
            uapi::IOC_LISTEN => self.listen(arg),
            uapi::IOC_ACCEPT => self.accept(arg, nonblock),
            uapi::IOC_SET_OPTS => self.set_opts(arg),
            uapi::IOC_GET_NAMES => self.get_names(arg),
            uapi::IOC_SHUTDOWN => self.shutdown(arg),
            uapi::IOC_BULK_SETUP => self.bulk_setup(arg, nonblock),
            uapi::IOC_BULK_SEND => self.bulk_send(arg, nonblock),
            uapi::IOC_BULK_WAIT => self.bulk_wait(arg, nonblock),
            uapi::IOC_BULK_RECV => self.bulk_recv(arg, nonblock),
            uapi::IOC_BULK_RELEASE => self.bulk_release(arg),
            uapi::IOC_BULK_SENDV => self.bulk_sendv(arg, nonblock),
            uapi::IOC_BULK_RECVV => self.bulk_recvv(arg, nonblock),
            uapi::IOC_BULK_RELEASEV => self.bulk_releasev(arg),
            uapi::IOC_OPEN_DOMAIN => Self::open_domain(arg),
            uapi::IOC_SET_BUSY_POLL => self.set_busy_poll(arg),
            uapi::IOC_GET_BUSY_POLL => self.get_busy_poll(arg),
            uapi::IOC_POLICY_ADD
            | uapi::IOC_POLICY_DEL
            | uapi::IOC_POLICY_CLEAR
            | uapi::IOC_POLICY_RESET => self.policy_set(cmd, arg),
            uapi::IOC_POLICY_GET => self.policy_get(arg),
            uapi::IOC_SET_KEY => self.set_key(arg),
            uapi::IOC_CLEAR_KEY => self.clear_key(arg),
            uapi::IOC_SET_DOMAIN_CRYPTO => self.set_domain_crypto(arg),
            uapi::IOC_GET_CRYPTO => self.get_crypto(arg),
            uapi::IOC_SET_ENCRYPT => self.set_encrypt(arg),
            uapi::IOC_GET_ENCRYPT => self.get_encrypt(arg),
            _ => Err(ENOTTY),
        }
    }

    /// `VMCS_IOC_GET_INFO`.
    fn get_info(&self, arg: IoctlArg) -> Result<isize> {
        let info: KBox<VmcsInfo> = self.domain.info()?;
        arg.write(&*info)?;
        Ok(0)
    }

    /// `VMCS_IOC_BIND`.
    fn bind(&self, arg: IoctlArg) -> Result<isize> {
        self.domain.alive()?;
        let (mut r, mut w) = arg.slice(size_of::<VmcsAddr>()).reader_writer();
        let mut addr: VmcsAddr = r.read()?;
        let local = self.domain.bind_cid(addr.cid)?;
        addr.port = Endpoint::bind(&self.endpoint, &self.domain.conns(), addr.port)?;
        addr.cid = local;
        w.write(&addr)?;
        Ok(0)
    }

    /// `VMCS_IOC_CONNECT`.
    fn connect(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let c: VmcsConnect = arg.read()?;
        if c.flags != 0 {
            return Err(EINVAL);
        }
        Endpoint::connect(
            &self.endpoint,
            &self.domain.conns(),
            c.addr.cid,
            c.addr.port,
            c.timeout_ms,
            nonblock,
        )?;
        Ok(0)
    }

    /// `VMCS_IOC_LISTEN`.
    fn listen(&self, arg: IoctlArg) -> Result<isize> {
        self.domain.alive()?;
        let backlog: u32 = arg.read()?;
        self.endpoint.listen(&self.domain.conns(), backlog)?;
        Ok(0)
    }

    /// `VMCS_IOC_ACCEPT`: a new file for the next connection.
    fn accept(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let (mut r, mut w) = arg.slice(size_of::<VmcsAccept>()).reader_writer();
        let mut a: VmcsAccept = r.read()?;
        if a.reserved != 0 || a.flags & !(oflags::NONBLOCK | oflags::CLOEXEC) != 0 {
            return Err(EINVAL);
        }
        let conns = self.domain.conns();
        let (child, peer, port) = self.endpoint.accept(&conns, nonblock)?;
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
                child.release(&conns);
                return Err(e);
            }
        };
        a.peer = VmcsAddr { cid: peer, port };
        let fd = glue::file::install_dev_file(ep, a.flags, |_fd| w.write(&a))?;
        // Descriptors are small non-negative ints.
        Ok(fd as isize)
    }

    /// `VMCS_IOC_POLICY_ADD`, `_DEL`, `_CLEAR`, `_RESET` on this file's domain: root only
    /// (`CAP_NET_ADMIN`, else `EPERM`, checked before the argument is read).
    fn policy_set(&self, cmd: u32, arg: IoctlArg) -> Result<isize> {
        if !glue::capable_net_admin() {
            return Err(EPERM);
        }
        let policy = self.domain.policy();
        match cmd {
            uapi::IOC_POLICY_ADD => policy.add(&arg.read::<VmcsPolicyRule>()?)?,
            uapi::IOC_POLICY_DEL => policy.del(&arg.read::<VmcsPolicyRule>()?)?,
            uapi::IOC_POLICY_CLEAR => policy.clear(arg.read::<u32>()?, false)?,
            _ => policy.clear(arg.read::<u32>()?, true)?,
        }
        Ok(0)
    }

    /// `VMCS_IOC_POLICY_GET`: copies up to `count` rules to `rules`, sets `count` to the
    /// number in the table and the denial counters; returns the number copied. Anybody may
    /// read the policy.
    fn policy_get(&self, arg: IoctlArg) -> Result<isize> {
        let (mut r, mut w) = arg.slice(size_of::<VmcsPolicyGet>()).reader_writer();
        let mut g: VmcsPolicyGet = r.read()?;
        if g.flags != 0 {
            return Err(EINVAL);
        }
        let s = self.domain.policy().snapshot()?;
        let n = s.rules.len().min(g.count as usize);
        let rules = s.rules.get(..n).ok_or(EINVAL)?;
        let size = n.checked_mul(size_of::<VmcsPolicyRule>()).ok_or(EINVAL)?;
        let mut out = UserSlice::new(UserPtr::from_addr(g.rules as usize), size).writer();
        for rule in rules {
            out.write(rule)?;
        }
        // At most `POLICY_MAX_RULES`.
        g.count = s.rules.len() as u32;
        [g.denied_in, g.denied_out, g.denied_bind] = s.denied;
        w.write(&g)?;
        Ok(n as isize)
    }

    /// `VMCS_IOC_SET_BUSY_POLL`: the busy-poll window in microseconds (clamped).
    fn set_busy_poll(&self, arg: IoctlArg) -> Result<isize> {
        let us: u32 = arg.read()?;
        self.endpoint.set_busy_poll_us(us);
        Ok(0)
    }

    /// `VMCS_IOC_GET_BUSY_POLL`: the busy-poll window in use.
    fn get_busy_poll(&self, arg: IoctlArg) -> Result<isize> {
        arg.write(&self.endpoint.busy_poll_us(&self.domain.conns()))?;
        Ok(0)
    }

    /// `VMCS_IOC_SET_KEY`: installs the domain's pre-shared key (`CAP_NET_ADMIN`). The
    /// copy read from user memory is wiped before returning; the key is never logged and
    /// never readable back.
    fn set_key(&self, arg: IoctlArg) -> Result<isize> {
        if !glue::crypto::capable_net_admin() {
            return Err(EPERM);
        }
        let mut k: uapi::VmcsKey = arg.read()?;
        let r = if k.flags != 0 || k.len as usize != uapi::KEY_LEN {
            Err(EINVAL)
        } else {
            self.domain.crypto().set_key(&k.key)
        };
        glue::crypto::wipe(&mut k.key);
        r?;
        pr_info!("vmcs{}: pre-shared key installed\n", self.domain.index);
        Ok(0)
    }

    /// `VMCS_IOC_CLEAR_KEY`: removes and wipes the domain's key (`CAP_NET_ADMIN`).
    fn clear_key(&self, arg: IoctlArg) -> Result<isize> {
        if !glue::crypto::capable_net_admin() {
            return Err(EPERM);
        }
        let flags: u32 = arg.read()?;
        if flags != 0 {
            return Err(EINVAL);
        }
        self.domain.crypto().clear_key();
        pr_info!("vmcs{}: pre-shared key removed\n", self.domain.index);
        Ok(0)
    }

    /// `VMCS_IOC_SET_DOMAIN_CRYPTO`: the domain's policy (`CAP_NET_ADMIN`).
    fn set_domain_crypto(&self, arg: IoctlArg) -> Result<isize> {
        if !glue::crypto::capable_net_admin() {
            return Err(EPERM);
        }
        let v: u32 = arg.read()?;
        let p = Policy::from_u32(v).ok_or(EINVAL)?;
        self.domain.crypto().set_policy(p);
        pr_info!(
            "vmcs{}: encryption policy {}\n",
            self.domain.index,
            p.name()
        );
        Ok(0)
    }

    /// `VMCS_IOC_GET_CRYPTO`: the domain's policy, key presence and counters.
    fn get_crypto(&self, arg: IoctlArg) -> Result<isize> {
        let c = self.domain.crypto();
        let k = &c.counters;
        let info = uapi::VmcsCryptoInfo {
            policy: c.policy() as u32,
            key_installed: u32::from(c.has_key()),
            handshakes: k.handshakes.load(Relaxed),
            auth_failed: k.auth_failed.load(Relaxed),
            peer_refused: k.peer_refused.load(Relaxed),
            policy_refused: k.policy_refused.load(Relaxed),
            bad_frames: k.bad_frames.load(Relaxed),
        };
        arg.write(&info)?;
        Ok(0)
    }

    /// `VMCS_IOC_SET_ENCRYPT`: this file's policy (the stricter of it and the domain's
    /// applies to its connections).
    fn set_encrypt(&self, arg: IoctlArg) -> Result<isize> {
        let v: u32 = arg.read()?;
        self.endpoint
            .set_encrypt(Policy::from_u32(v).ok_or(EINVAL)?);
        Ok(0)
    }

    /// `VMCS_IOC_GET_ENCRYPT`: this file's policy, with `VMCS_ENCRYPTED` when its
    /// connection is encrypted.
    fn get_encrypt(&self, arg: IoctlArg) -> Result<isize> {
        let mut v = self.endpoint.encrypt() as u32;
        if self.endpoint.encrypted() {
            v |= uapi::ENCRYPTED;
        }
        arg.write(&v)?;
        Ok(0)
    }

    /// `VMCS_IOC_SET_OPTS`.
    fn set_opts(&self, arg: IoctlArg) -> Result<isize> {
        let o: VmcsOpts = arg.read()?;
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
        self.endpoint.set_opts(&self.domain.conns(), nb, rb);
        Ok(0)
    }

    /// `VMCS_IOC_GET_NAMES`.
    fn get_names(&self, arg: IoctlArg) -> Result<isize> {
        let (port, remote) = self.endpoint.names();
        let names = VmcsNames {
            local: VmcsAddr {
                cid: self.domain.local_id(),
                port: port.unwrap_or(uapi::PORT_ANY),
            },
            remote: remote
                .map(|(cid, port)| VmcsAddr { cid, port })
                .unwrap_or_default(),
        };
        arg.write(&names)?;
        Ok(0)
    }

    /// `VMCS_IOC_SHUTDOWN`.
    fn shutdown(&self, arg: IoctlArg) -> Result<isize> {
        let how: u32 = arg.read()?;
        if how > uapi::SHUT_RDWR {
            return Err(EINVAL);
        }
        self.endpoint.shutdown(&self.domain.conns(), how)?;
        Ok(0)
    }

    /// `VMCS_IOC_BULK_SETUP`.
    fn bulk_setup(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let (mut r, mut w) = arg.slice(size_of::<VmcsBulkSetup>()).reader_writer();
        let mut b: VmcsBulkSetup = r.read()?;
        let (tx, rx) = self.endpoint.bulk_setup(
            &self.domain.conns(),
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

    /// `VMCS_IOC_BULK_SEND`.
    fn bulk_send(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let d: VmcsBulkDesc = arg.read()?;
        let d = Desc {
            off: d.off,
            len: d.len,
        };
        self.endpoint
            .bulk_send(&self.domain.conns(), &[d], nonblock)?;
        Ok(0)
    }

    /// `VMCS_IOC_BULK_WAIT`.
    fn bulk_wait(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let d: VmcsBulkDesc = arg.read()?;
        self.endpoint
            .bulk_wait(&self.domain.conns(), d.off, d.len, nonblock)?;
        Ok(0)
    }

    /// `VMCS_IOC_BULK_RECV`.
    fn bulk_recv(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let got = self.endpoint.bulk_recv(&self.domain.conns(), 1, nonblock)?;
        let out = got
            .first()
            .map(|d| VmcsBulkDesc {
                off: d.off,
                len: d.len,
            })
            .unwrap_or_default();
        if let Err(e) = arg.write(&out) {
            self.endpoint.bulk_unrecv(&got);
            return Err(e);
        }
        Ok(0)
    }

    /// `VMCS_IOC_BULK_RELEASE`.
    fn bulk_release(&self, arg: IoctlArg) -> Result<isize> {
        self.domain.alive()?;
        let count: u32 = arg.read()?;
        self.endpoint
            .bulk_release(&self.domain.conns(), None, count as usize)?;
        Ok(0)
    }

    /// The argument of a batched bulk ioctl: the vector and a slice of its descriptors.
    fn bulk_vec(arg: IoctlArg) -> Result<(usize, UserSlice)> {
        let v: VmcsBulkVec = arg.read()?;
        if v.flags != 0 || v.count == 0 || v.count > uapi::BULK_MAX_BATCH {
            return Err(EINVAL);
        }
        let n = v.count as usize;
        let addr = usize::try_from(v.descs).map_err(|_| EFAULT)?;
        Ok((
            n,
            UserSlice::new(UserPtr::from_addr(addr), n * size_of::<VmcsBulkDesc>()),
        ))
    }

    /// Reads the `n` descriptors of a batched bulk ioctl.
    fn bulk_read_descs(n: usize, user: UserSlice) -> Result<KVec<Desc>> {
        let mut r = user.reader();
        let mut descs = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let d: VmcsBulkDesc = r.read()?;
            descs.push(
                Desc {
                    off: d.off,
                    len: d.len,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(descs)
    }

    /// `VMCS_IOC_BULK_SENDV`: returns how many ranges were lent.
    fn bulk_sendv(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let (n, user) = Self::bulk_vec(arg)?;
        let descs = Self::bulk_read_descs(n, user)?;
        let done = self
            .endpoint
            .bulk_send(&self.domain.conns(), &descs, nonblock)?;
        // At most `BULK_MAX_BATCH`.
        Ok(done as isize)
    }

    /// `VMCS_IOC_BULK_RECVV`: returns how many ranges were received (0: end of file).
    fn bulk_recvv(&self, arg: IoctlArg, nonblock: bool) -> Result<isize> {
        self.domain.alive()?;
        let (n, user) = Self::bulk_vec(arg)?;
        let got = self.endpoint.bulk_recv(&self.domain.conns(), n, nonblock)?;
        let mut w = user.writer();
        for d in got.iter() {
            let out = VmcsBulkDesc {
                off: d.off,
                len: d.len,
            };
            if let Err(e) = w.write(&out) {
                self.endpoint.bulk_unrecv(&got);
                return Err(e);
            }
        }
        // At most `BULK_MAX_BATCH`.
        Ok(got.len() as isize)
    }

    /// `VMCS_IOC_BULK_RELEASEV`: returns how many ranges were released.
    fn bulk_releasev(&self, arg: IoctlArg) -> Result<isize> {
        self.domain.alive()?;
        let (n, user) = Self::bulk_vec(arg)?;
        let descs = Self::bulk_read_descs(n, user)?;
        let done = self
            .endpoint
            .bulk_release(&self.domain.conns(), Some(&descs), n)?;
        // At most `BULK_MAX_BATCH`.
        Ok(done as isize)
    }

    /// `VMCS_IOC_OPEN_DOMAIN`: a new file on another domain.
    fn open_domain(arg: IoctlArg) -> Result<isize> {
        let o: VmcsOpenDomain = arg.read()?;
        if o.flags & !(oflags::NONBLOCK | oflags::CLOEXEC) != 0 {
            return Err(EINVAL);
        }
        let ep = Self::new(domain::by_index(o.domain).ok_or(ENODEV)?)?;
        let fd = glue::file::install_dev_file(ep, o.flags, |_fd| Ok(()))?;
        // Descriptors are small non-negative ints.
        Ok(fd as isize)
    }

    /// `mmap` of the bulk area (docs/uapi.md): returns whether the range is read-only.
    pub(crate) fn bulk_mmap(&self, pgoff: usize, len: usize, write: bool) -> Result<bool> {
        self.domain.alive()?;
        let ro = self.endpoint.bulk_mmap(pgoff, len, write)?;
        // What the mapping shows once the bulk set-up is over.
        self.mapping.prepare_zero_page()?;
        Ok(ro)
    }

    /// A page fault in a bulk area mapping; returns the `vm_fault_t`.
    pub(crate) fn bulk_fault(&self, pgoff: usize, fault: &glue::Fault) -> u32 {
        self.endpoint
            .bulk_fault(&self.domain.conns(), pgoff, fault, &self.mapping)
    }

    /// `poll()`: see docs/uapi.md for the mask.
    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>) -> u32 {
        if self.domain.alive().is_err() {
            return poll_mask::ERR | poll_mask::HUP;
        }
        self.endpoint.poll(file, table)
    }
}
