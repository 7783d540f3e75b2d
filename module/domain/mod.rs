// SPDX-License-Identifier: GPL-2.0

//! Domains: one per bound ivshmem device.
//!
//! A domain is the set of guests that share one ivshmem region. Here it is the junction of
//! the layers below the interfaces: it owns the transport ([`Link`]), the core of ports and
//! connections ([`ConnTable`]) and the two works that drive the transport, and it is what
//! connects them: the core is handed the domain as its [`Transport`] ([`Domain::conns`]),
//! and the transport reports up to the domain's [`Upcalls`], which forwards to the core and
//! queues the works. Neither the transport nor the core holds a reference to the domain,
//! so there is no reference cycle to break at unbind: the last `Arc<Domain>` goes with the
//! last open file and the PCI driver's data.
//!
//! Each bound device registers its domain here on probe and removes it on unbind;
//! interfaces look domains up by index and ask the domain (never the transport) for the
//! local id, peers, cid checks and liveness.

mod debugfs;
mod entry;
mod registry;
mod route;

pub(crate) use debugfs::{create_debugfs, Debugfs};

pub(crate) use registry::{
    by_index, debugfs_root, default_domain, init_registry, register_new, unregister, DebugfsRoot,
    SysfsRoot,
};
pub(crate) use route::{dual, dual_local_cid, route};

use crate::{
    conn::{ConnTable, Conns},
    glue::{self, errno, sync::SpinLockBh, SharedRegion, UserIter},
    net::{NetRegistration, VmcsNet},
    proto::frame::{FrameHeader, Op},
    transport::{
        ivshmem::{Link, REGS_SIZE},
        vsock::VsockLink,
        PeerInfo, PeerLoss, RxPayload, SendError, Transport, TxPayload, Upcalls,
    },
    uapi::{self, VmcsInfo, VmcsPeerInfo},
};
use kernel::{
    devres::Devres,
    impl_has_delayed_work, impl_has_hr_timer, new_delayed_work, new_mutex, pci,
    prelude::*,
    revocable::Revocable,
    sync::{Arc, ArcBorrow, Mutex},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        Delta, Jiffies, Monotonic,
    },
    workqueue::{DelayedWork, WorkItem},
};

/// Work item id of a domain's receive work (drains the rings; MSI-X or the plain poll).
pub(crate) const RX_WORK: u64 = 1;
/// Work item id of a domain's tick (heartbeat, peer liveness, drain).
pub(crate) const TICK_WORK: u64 = 2;

/// The `encrypt` module parameter as a policy (`allow`, with a warning, if out of range).
fn encrypt_policy() -> crate::conn::crypto::Policy {
    let v = crate::params::encrypt();
    crate::conn::crypto::Policy::from_u32(v).unwrap_or_else(|| {
        pr_warn!(
            "vmcs: encrypt={} is not 0 (off), 1 (allow) or 2 (require): using allow\n",
            v
        );
        crate::conn::crypto::Policy::Allow
    })
}

/// Which QEMU ivshmem variant a device is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IvshmemVariant {
    /// `ivshmem-plain`: shared memory only, no interrupts, no server-assigned id.
    Plain,
    /// `ivshmem-doorbell`: MSI-X vectors, the doorbell register and an IVPosition id.
    Doorbell,
}

impl IvshmemVariant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            IvshmemVariant::Plain => "ivshmem-plain",
            IvshmemVariant::Doorbell => "ivshmem-doorbell",
        }
    }
}

/// What carries a domain's frames.
enum Carrier {
    /// One bound ivshmem device and its shared region.
    Ivshmem {
        variant: IvshmemVariant,
        /// Size of the shared region in bytes.
        size: usize,
        /// The mapped region. Revoked when the device unbinds; users then get `ENODEV`.
        /// Shared with the transport (`link`), which holds its own reference.
        region: Arc<Revocable<SharedRegion>>,
        /// The transport: membership, rings, doorbells.
        link: Pin<KBox<Link>>,
    },
    /// The guest's own AF_VSOCK (transport/vsock/): peers are vsock cids.
    Vsock(Pin<KBox<VsockLink>>),
}

/// One domain: a bound ivshmem device and its shared region, or the vsock transport.
#[pin_data(PinnedDrop)]
pub(crate) struct Domain {
    /// Small integer naming the domain inside this guest, in probe order.
    pub(crate) index: u32,
    /// The transport.
    carrier: Carrier,
    /// Ports and connections.
    #[pin]
    connections: ConnTable,
    /// Drains the rings: queued by the MSI-X handler (doorbell) or by [`Domain::poll_timer`]
    /// (plain), and whenever the transport asks (`Upcalls::wake_rx`).
    #[pin]
    rx_work: DelayedWork<Domain, RX_WORK>,
    /// Plain: the adaptive poll. Armed by the rx work with the delay the link asks for
    /// (`Link::rx_rearm_delay`); when it fires (hard IRQ) it only queues the rx work.
    #[pin]
    poll_timer: HrTimer<Domain>,
    /// The armed [`Domain::poll_timer`] (its handle holds an `Arc<Domain>`; dropping it
    /// cancels the timer). Taken by [`Domain::stop`], after which it is never armed again.
    #[pin]
    poll_handle: Mutex<Option<ArcHrTimerHandle<Domain>>>,
    /// Heartbeat, liveness sampling and a drain, every `hb_period_ms`.
    #[pin]
    tick_work: DelayedWork<Domain, TICK_WORK>,
    /// Whether the works may be queued (between [`Domain::start`] and [`Domain::stop`]).
    /// Every queueing from process context happens under this lock, so after `stop` took it
    /// nothing queues a work again. (The MSI-X handler does not take it: `Link::stop` makes
    /// it a no-op, and teardown synchronises the IRQ.) Bottom halves off while held: the
    /// net device's transmit path may ask for a pass from softirq context.
    #[pin]
    works_enabled: SpinLockBh<bool>,
    /// The net device `vmcs<index>` (module/net/), from [`Domain::net_up`] until
    /// [`Domain::net_down`] (teardown's first step). Its device holds an `Arc` of this
    /// domain as its transport: `net_down` breaks that cycle.
    #[pin]
    net: Mutex<Option<NetRegistration>>,
    /// Which of the core and the net device goes first on the next `tx_space`.
    tx_space_net_first: core::sync::atomic::AtomicBool,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, RX_WORK> for Domain { self.rx_work }
    impl HasDelayedWork<Self, TICK_WORK> for Domain { self.tick_work }
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for Domain {
        mode: RelativeMode<Monotonic>, field: self.poll_timer
    }
}

impl WorkItem<RX_WORK> for Domain {
    type Pointer = Arc<Domain>;

    fn run(this: Arc<Domain>) {
        let link = match &this.carrier {
            Carrier::Ivshmem { link, .. } => link,
            Carrier::Vsock(v) => {
                if v.poll_rx(&this) {
                    this.queue_rx(0);
                }
                return;
            }
        };
        let (more, activity) = link.poll_rx(&this);
        if let Some(net) = this.net() {
            net.rx_flush();
        }
        match link.rx_rearm_delay(more, activity) {
            Some(d) if d.is_zero() => this.queue_rx(0),
            Some(d) => this.arm_poll(d),
            None => {}
        }
    }
}

impl HrTimerCallback for Domain {
    type Pointer<'a> = Arc<Domain>;

    /// Hard IRQ context: only queues the rx work (a refcount and `queue_work`). The armed
    /// handle holds another reference, so the one taken here is never the last.
    fn run(this: ArcBorrow<'_, Domain>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let _ = glue::wq().enqueue::<Arc<Domain>, RX_WORK>(Arc::from(this));
        HrTimerRestart::NoRestart
    }
}

impl WorkItem<TICK_WORK> for Domain {
    type Pointer = Arc<Domain>;

    fn run(this: Arc<Domain>) {
        let period = match &this.carrier {
            Carrier::Ivshmem { link, .. } => {
                link.tick(&this);
                link.tick_period()
            }
            Carrier::Vsock(v) => {
                v.tick(&this);
                v.tick_period()
            }
        };
        if let Some(net) = this.net() {
            net.rx_flush();
            net.update_carrier();
        }
        this.queue_tick(period);
    }
}

#[pinned_drop]
impl PinnedDrop for Domain {
    fn drop(self: Pin<&mut Self>) {
        // The last reference went: the scenarios check this line after unbind (no cycle
        // keeps a domain alive).
        pr_info!("vmcs{}: domain released\n", self.index);
    }
}

impl Domain {
    /// A new domain over a joined region (probe). `regs` is BAR0 on doorbell devices.
    pub(crate) fn new(
        index: u32,
        variant: IvshmemVariant,
        region: Arc<Revocable<SharedRegion>>,
        joined: crate::transport::ivshmem::Joined,
        regs: Option<Devres<pci::Bar<'static, REGS_SIZE>>>,
        params: crate::transport::ivshmem::Params,
    ) -> Result<Arc<Self>> {
        let size = region.try_access().map(|r| r.len()).ok_or(ENODEV)?;
        let link = KBox::pin_init(
            Link::new(index, joined, region.clone(), regs, params)?,
            GFP_KERNEL,
        )?;
        Self::with_carrier(
            index,
            Carrier::Ivshmem {
                variant,
                size,
                region,
                link,
            },
        )
    }

    /// A domain over the guest's AF_VSOCK (module init, with `vsock=1`): `ENODEV` when the
    /// guest has no vsock device.
    pub(crate) fn new_vsock(
        index: u32,
        params: crate::transport::vsock::Params,
    ) -> Result<Arc<Self>> {
        let link = KBox::pin_init(VsockLink::new(index, params)?, GFP_KERNEL)?;
        Self::with_carrier(index, Carrier::Vsock(link))
    }

    fn with_carrier(index: u32, carrier: Carrier) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Domain {
                index,
                carrier,
                connections <- ConnTable::new(
                    crate::params::rx_mem_max(),
                    crate::params::busy_poll_us(),
                    encrypt_policy(),
                ),
                rx_work <- new_delayed_work!("vmcs_rx"),
                tick_work <- new_delayed_work!("vmcs_tick"),
                poll_timer <- HrTimer::new(),
                poll_handle <- new_mutex!(None, "vmcs_poll_timer"),
                works_enabled <- SpinLockBh::new(false, c"vmcs_works", kernel::static_lock_class!()),
                net <- new_mutex!(None, "vmcs_net"),
                tx_space_net_first: core::sync::atomic::AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )
    }

    /// The core of this domain, handed this domain as its transport.
    pub(crate) fn conns(self: &Arc<Self>) -> Conns<'_> {
        Conns::new(&self.connections, self)
    }

    /// The ivshmem link, if this is an ivshmem domain.
    fn link(&self) -> Option<&Link> {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => Some(link),
            Carrier::Vsock(_) => None,
        }
    }

    /// Joins the peer table (`LIVE`) and arms the works.
    pub(crate) fn start(self: &Arc<Self>) -> Result {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.start()?,
            Carrier::Vsock(v) => v.start(KBox::new(self.clone(), GFP_KERNEL)?),
        }
        *self.works_enabled.lock() = true;
        self.queue_rx(0);
        self.queue_tick(0);
        // The vsock domain states the ivshmem identity on its streams (route.rs).
        route::refresh_ident();
        Ok(())
    }

    /// Creates and registers the net device `vmcs<index>` (after [`Domain::start`]). A
    /// failure leaves the domain without one (logged); sockets and files work as before.
    pub(crate) fn net_up(self: &Arc<Self>, parent: &kernel::device::Device) {
        let transport: KBox<dyn Transport + Send + Sync> = match KBox::new(self.clone(), GFP_KERNEL)
        {
            Ok(t) => t,
            Err(_) => return,
        };
        match NetRegistration::new(parent, self.index, transport) {
            Ok(r) => *self.net.lock() = Some(r),
            Err(e) => pr_warn!(
                "vmcs{}: no net device: {:?}
",
                self.index,
                e
            ),
        }
    }

    /// Unregisters the net device (teardown's first step, while the transport still runs).
    pub(crate) fn net_down(&self) {
        let reg = self.net.lock().take();
        drop(reg);
    }

    /// The net device, if registered.
    fn net(&self) -> Option<Arc<VmcsNet>> {
        self.net.lock().as_ref().map(|r| r.net().clone())
    }

    /// debugfs `net`: the net device's counters.
    pub(crate) fn show_net(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.net() {
            Some(n) => n.show(f),
            None => writeln!(f, "no net device"),
        }
    }

    /// Teardown's first step, while the works still run: closed connections finish sending
    /// (see `Conns::linger`).
    pub(crate) fn linger(self: &Arc<Self>) {
        self.conns().linger();
    }

    /// Stops the transport and the queueing of works and cancels the poll timer (waiting for
    /// a callback that runs); the caller then synchronises the IRQs and calls
    /// [`Domain::flush_works`], which also flushes an rx work a last timer expiry queued.
    pub(crate) fn stop(&self) {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.stop(),
            Carrier::Vsock(v) => v.stop(),
        }
        *self.works_enabled.lock() = false;
        drop(self.poll_handle.lock().take());
    }

    /// Waits for both works to finish (after [`Domain::stop`], nothing requeues them).
    pub(crate) fn flush_works(self: &Arc<Self>) {
        glue::flush_delayed_work::<Domain, RX_WORK>(self);
        glue::flush_delayed_work::<Domain, TICK_WORK>(self);
    }

    /// Leaves the peer table and resets every peer, so the core wakes all its waiters.
    pub(crate) fn leave(self: &Arc<Self>) {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.leave(self),
            Carrier::Vsock(v) => v.leave(self),
        }
    }

    /// Revokes the region (unregister): files that still hold the domain get `ENODEV`.
    fn revoke(&self) {
        if let Carrier::Ivshmem { region, .. } = &self.carrier {
            region.revoke();
        }
    }

    /// Gives a slot taken by `attach_and_join` back when probe fails before `start`.
    pub(crate) fn abort_join(
        region: &Revocable<SharedRegion>,
        joined: &crate::transport::ivshmem::Joined,
    ) {
        if let Some(shm) = region.try_access() {
            crate::transport::ivshmem::abort_join(&shm, joined);
        }
    }

    /// Sets the MSI-X vectors handled (probe, before `start`).
    pub(crate) fn set_vectors(&self, n: u32) {
        if let Some(link) = self.link() {
            link.set_vectors(n);
        }
    }

    /// The MSI-X handler of `vector` (hard IRQ): counts it and queues the receive work.
    pub(crate) fn doorbell(self: &Arc<Self>, vector: u32) {
        if self.link().is_some_and(|l| l.doorbell_irq(vector)) {
            let _ = glue::wq().enqueue::<Arc<Domain>, RX_WORK>(self.clone());
        }
    }

    /// Queues the receive work after `delay` jiffies, unless stopped or already queued.
    fn queue_rx(self: &Arc<Self>, delay: Jiffies) {
        let enabled = self.works_enabled.lock();
        if *enabled {
            let _ = glue::wq().enqueue_delayed::<Arc<Domain>, RX_WORK>(self.clone(), delay);
        }
    }

    /// Plain: queues the receive work after `delay` through the poll timer, replacing (and
    /// cancelling) the previous expiry. Nothing is armed after [`Domain::stop`]: it clears
    /// `works_enabled` before it takes `poll_handle`.
    fn arm_poll(self: &Arc<Self>, delay: Delta) {
        let mut handle = self.poll_handle.lock();
        drop(handle.take());
        let enabled = *self.works_enabled.lock();
        if enabled {
            *handle = Some(self.clone().start(delay));
        }
    }

    /// Runs the receive work now, moving it forward if it is scheduled for later.
    fn rx_now(self: &Arc<Self>) {
        let enabled = self.works_enabled.lock();
        if *enabled {
            glue::mod_delayed_work::<Domain, RX_WORK>(self.clone(), 0);
        }
    }

    /// Queues the tick after `delay` jiffies, unless stopped or already queued.
    fn queue_tick(self: &Arc<Self>, delay: Jiffies) {
        let enabled = self.works_enabled.lock();
        if *enabled {
            let _ = glue::wq().enqueue_delayed::<Arc<Domain>, TICK_WORK>(self.clone(), delay);
        }
    }

    /// `ENODEV` once the device is unbound (the region is revoked).
    pub(crate) fn alive(&self) -> Result {
        match &self.carrier {
            Carrier::Ivshmem { region, .. } => region.try_access().map(|_| ()).ok_or(ENODEV),
            Carrier::Vsock(v) if v.alive() => Ok(()),
            Carrier::Vsock(_) => Err(ENODEV),
        }
    }

    /// This guest's id (cid) in the domain.
    pub(crate) fn local_id(&self) -> u32 {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.local_id(),
            Carrier::Vsock(v) => v.local_id(),
        }
    }

    /// Checks the cid of a `bind` address: `VMCS_CID_ANY`, `VMCS_CID_LOCAL` or our own id
    /// (else `EADDRNOTAVAIL`); returns our id.
    pub(crate) fn bind_cid(&self, cid: u32) -> Result<u32> {
        let local = self.local_id();
        if cid != uapi::CID_ANY && cid != uapi::CID_LOCAL && cid != local {
            return Err(errno::eaddrnotavail());
        }
        Ok(local)
    }

    /// `VMCS_IOC_GET_INFO`: the domain, this guest and its peers.
    pub(crate) fn info(&self) -> Result<KBox<VmcsInfo>> {
        self.alive()?;
        let mut peers = KVec::<PeerInfo>::new();
        let (transport, region_size, max_peers, ring_size) = match &self.carrier {
            Carrier::Ivshmem {
                variant,
                size,
                link,
                ..
            } => {
                link.peers(&mut peers)?;
                let t = match variant {
                    IvshmemVariant::Plain => uapi::TRANSPORT_IVSHMEM_PLAIN,
                    IvshmemVariant::Doorbell => uapi::TRANSPORT_IVSHMEM_DOORBELL,
                };
                (t, *size as u64, link.max_peers(), link.ring_size())
            }
            Carrier::Vsock(v) => {
                v.peers(&mut peers)?;
                (uapi::TRANSPORT_VSOCK, 0, 0, v.buffer_size())
            }
        };
        let mut info = KBox::new(
            VmcsInfo {
                abi_version: uapi::ABI_VERSION,
                domain: self.index,
                local_cid: self.local_id(),
                transport,
                region_size,
                max_peers,
                ring_size,
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

    /// debugfs `peers`.
    pub(crate) fn show_peers(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.show_peers(f),
            Carrier::Vsock(v) => v.show_peers(f),
        }
    }

    /// debugfs `rings`.
    pub(crate) fn show_rings(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.link() {
            Some(link) => link.show_rings(f),
            None => writeln!(f, "no rings (vsock)"),
        }
    }

    /// debugfs `connections`.
    pub(crate) fn show_connections(
        self: &Arc<Self>,
        f: &mut core::fmt::Formatter<'_>,
    ) -> core::fmt::Result {
        self.conns().describe(f)
    }

    /// debugfs `resets`: resets per reason (conn/reset.rs).
    pub(crate) fn show_resets(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.connections.show_resets(f)
    }

    /// debugfs `policy`: the allow-lists and the denial counters (conn/policy.rs).
    pub(crate) fn show_policy(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.connections.policy().show(f)
    }

    /// The access-control policy of this domain (`VMCS_IOC_POLICY_*`).
    pub(crate) fn policy(&self) -> &crate::conn::Policy {
        self.connections.policy()
    }

    /// debugfs `crypto`: the encryption policy, whether a key is installed (never the key)
    /// and the counters (conn/crypto.rs).
    pub(crate) fn show_crypto(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.connections.crypto.show(f)
    }

    /// The domain's encryption state (key, policy, counters).
    pub(crate) fn crypto(&self) -> &crate::conn::crypto::CryptoConf {
        &self.connections.crypto
    }

    /// debugfs `selftest`: `count` self-test frames to `peer`.
    pub(crate) fn selftest(self: &Arc<Self>, peer: u32, count: u32) -> Result<u32> {
        match self.link() {
            Some(link) => link.selftest(self, peer, count),
            None => Err(ENODEV),
        }
    }
}

/// The domain as the transport of its core: the link, plus the domain's works when the
/// link asks for a receive pass. (On `Arc<Domain>` because queueing a work needs the `Arc`.)
impl Transport for Arc<Domain> {
    fn local_id(&self) -> u32 {
        Domain::local_id(self)
    }

    fn send(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError> {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.send(self, peer, hdr, payload),
            Carrier::Vsock(v) => v.send(peer, hdr, payload),
        }
    }

    fn send_user(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        src: &mut UserIter<'_>,
    ) -> Result<usize, SendError> {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.send_user(self, peer, hdr, src),
            Carrier::Vsock(v) => v.send_user(peer, hdr, src),
        }
    }

    fn send_batched(&self, peer: u32, hdr: &FrameHeader, payload: &[u8]) -> Result<(), SendError> {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.send_batched(self, peer, hdr, payload),
            Carrier::Vsock(v) => v.send(peer, hdr, payload),
        }
    }

    fn flush(&self, peer: u32) {
        if let Some(link) = self.link() {
            link.flush(peer);
        }
    }

    fn send_payload(
        &self,
        peer: u32,
        hdr: &FrameHeader,
        payload: &dyn TxPayload,
        publish: bool,
    ) -> Result<(), SendError> {
        // The vsock domain has no net device, the one caller.
        self.link().map_or(Err(SendError::Unreachable), |link| {
            link.send_payload(self, peer, hdr, payload, publish)
        })
    }

    fn tx_backlog(&self, peer: u32) -> u32 {
        self.link().map_or(0, |link| link.tx_backlog(peer))
    }

    fn is_live(&self, peer: u32) -> bool {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.is_live(peer),
            Carrier::Vsock(v) => v.is_live(peer),
        }
    }

    fn reach(&self, peer: u32) -> bool {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.is_live(peer),
            Carrier::Vsock(v) => v.reach(peer),
        }
    }

    fn max_payload(&self, peer: u32) -> u32 {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.max_payload(peer),
            Carrier::Vsock(_) => crate::proto::frame::MAX_PAYLOAD,
        }
    }

    fn peer_features(&self, peer: u32) -> u32 {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.peer_features(peer),
            // Streams carry no feature word: no encryption over vsock yet.
            Carrier::Vsock(_) => 0,
        }
    }

    fn frame_limit(&self) -> u32 {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.frame_limit(),
            Carrier::Vsock(_) => crate::proto::frame::MAX_PAYLOAD,
        }
    }

    fn kick(&self) {
        if let Some(link) = self.link() {
            link.kick(self);
        }
    }

    fn busy_poll(&self, last: bool) -> bool {
        self.link().is_some_and(|link| link.busy_poll(self, last))
    }

    fn release_held(&self) {
        if let Some(link) = self.link() {
            link.release_held(self);
        }
    }

    fn bulk_slice(&self, peer: u32) -> Option<(usize, usize)> {
        self.link().and_then(|link| link.bulk_slice(peer))
    }

    fn pfn(&self, offset: usize) -> Option<usize> {
        match &self.carrier {
            Carrier::Ivshmem { region, .. } => region.try_access().and_then(|r| r.pfn(offset)),
            Carrier::Vsock(_) => None,
        }
    }

    fn tx_drained(&self) -> bool {
        match &self.carrier {
            Carrier::Ivshmem { link, .. } => link.tx_drained(),
            Carrier::Vsock(v) => v.tx_drained(),
        }
    }

    fn peer_limit(&self) -> u32 {
        self.link()
            .map_or(uapi::MAX_PEERS as u32, |link| link.max_peers())
    }

    fn domain_identity(&self) -> u64 {
        self.link().map_or(0, |link| link.region_id())
    }

    fn name(&self) -> &'static str {
        match &self.carrier {
            Carrier::Ivshmem { variant, .. } => variant.name(),
            Carrier::Vsock(_) => "vsock",
        }
    }
}

/// What the transport reports, forwarded to the core; `wake_rx` queues the receive work.
impl Upcalls for Arc<Domain> {
    fn deliver(&self, peer: u32, hdr: &FrameHeader, payload: &dyn RxPayload) {
        if hdr.op == Op::Eth {
            // Ethernet frames are the net device's (dropped if there is none). Like `RW`
            // payloads they stay in the ring until the net device has copied them once,
            // into the skb.
            if let Some(net) = self.net() {
                net.receive(peer, hdr, payload);
            }
            return;
        }
        self.conns().deliver(peer, hdr, payload);
    }

    fn peer_reset(&self, peer: u32, cause: PeerLoss) {
        self.conns().peer_reset(peer, cause);
        if let Some(net) = self.net() {
            net.peer_reset(peer);
        }
    }

    fn copy_out(&self, peer: u32, ports: (u32, u32)) {
        self.conns().copy_out(peer, ports);
    }

    /// The core's connections and the net device share the ring: they take turns going
    /// first, so that neither a connection flood nor a net flood takes all the room.
    fn tx_space(&self, peer: u32) {
        use core::sync::atomic::Ordering::Relaxed;
        let net = self.net();
        let net_first = self.tx_space_net_first.fetch_xor(true, Relaxed);
        if net_first {
            if let Some(n) = net.as_ref() {
                n.tx_space(peer);
            }
        }
        self.conns().tx_space(peer);
        if !net_first {
            if let Some(n) = net.as_ref() {
                n.tx_space(peer);
            }
        }
    }

    fn wake_rx(&self, now: bool) {
        if now {
            self.rx_now();
        } else {
            self.queue_rx(0);
        }
    }
}

/// The vsock domain of module init (`vsock=1`) and its debugfs directory, torn down at
/// module exit.
pub(crate) struct VsockDomain(Option<(Arc<Domain>, Option<Debugfs>)>);

impl VsockDomain {
    /// Creates, registers and starts the vsock domain; without `params` (off) or without a
    /// vsock device (logged) there is none.
    pub(crate) fn new(params: Option<crate::transport::vsock::Params>) -> Self {
        let Some(params) = params else {
            return Self(None);
        };
        let domain = match register_new(|index| Domain::new_vsock(index, params)) {
            Ok(d) => d,
            Err(e) => {
                pr_warn!("vmcs: no vsock domain: {:?} (no virtio-vsock device?)\n", e);
                return Self(None);
            }
        };
        if let Err(e) = Domain::start(&domain) {
            pr_warn!("vmcs{}: vsock domain not started: {:?}\n", domain.index, e);
            Self::teardown(&domain);
            return Self(None);
        }
        pr_info!(
            "vmcs{}: vsock bound, cid {}, port {}\n",
            domain.index,
            domain.local_id(),
            params.port
        );
        let debugfs = create_debugfs(&domain).ok();
        Self(Some((domain, debugfs)))
    }

    fn teardown(domain: &Arc<Domain>) {
        domain.linger();
        domain.stop();
        domain.flush_works();
        domain.leave();
        unregister(domain);
    }
}

impl Drop for VsockDomain {
    fn drop(&mut self) {
        if let Some((d, debugfs)) = self.0.take() {
            drop(debugfs);
            Self::teardown(&d);
            pr_info!("vmcs{}: vsock unbound\n", d.index);
        }
    }
}
