// SPDX-License-Identifier: GPL-2.0

//! A domain's debugfs directory, `vmcs/vmcsN/`: peers, rings, connections, resets, policy,
//! crypto, net, selftest (docs/testing.md). Made by the PCI driver for an ivshmem domain and by module
//! init for the vsock domain; every file holds an `Arc<Domain>`, dropped with [`Debugfs`].

use super::{debugfs_root, Domain};
use kernel::{
    debugfs::{Dir, File},
    prelude::*,
    str::CString,
    sync::Arc,
    uaccess::UserSliceReader,
};

/// The files of one domain's directory (removed on drop).
pub(crate) struct Debugfs {
    _peers: Pin<KBox<File<Arc<Domain>>>>,
    _connections: Pin<KBox<File<Arc<Domain>>>>,
    _resets: Pin<KBox<File<Arc<Domain>>>>,
    _policy: Pin<KBox<File<Arc<Domain>>>>,
    _crypto: Pin<KBox<File<Arc<Domain>>>>,
    _rings: Pin<KBox<File<Arc<Domain>>>>,
    _net: Pin<KBox<File<Arc<Domain>>>>,
    _selftest: Pin<KBox<File<Arc<Domain>>>>,
    _dir: Dir,
}

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
    let sent = domain.selftest(peer, count)?;
    pr_info!(
        "vmcs{}: selftest sent {} frames to peer {}\n",
        domain.index,
        sent,
        peer
    );
    Ok(())
}

/// Creates `vmcs/vmcs<index>/` and its files.
pub(crate) fn create_debugfs(domain: &Arc<Domain>) -> Result<Debugfs> {
    let name = CString::try_from_fmt(fmt!("vmcs{}", domain.index))?;
    let dir = debugfs_root().subdir(&name);
    let peers = KBox::pin_init(
        dir.read_callback_file(c"peers", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_peers(f)
        }),
        GFP_KERNEL,
    )?;
    let rings = KBox::pin_init(
        dir.read_callback_file(c"rings", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_rings(f)
        }),
        GFP_KERNEL,
    )?;
    let connections = KBox::pin_init(
        dir.read_callback_file(c"connections", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_connections(f)
        }),
        GFP_KERNEL,
    )?;
    let resets = KBox::pin_init(
        dir.read_callback_file(c"resets", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_resets(f)
        }),
        GFP_KERNEL,
    )?;
    let policy = KBox::pin_init(
        dir.read_callback_file(c"policy", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_policy(f)
        }),
        GFP_KERNEL,
    )?;
    let crypto = KBox::pin_init(
        dir.read_callback_file(c"crypto", domain.clone(), &|d: &Arc<Domain>, f| {
            d.show_crypto(f)
        }),
        GFP_KERNEL,
    )?;
    let net = KBox::pin_init(
        dir.read_callback_file(c"net", domain.clone(), &|d: &Arc<Domain>, f| d.show_net(f)),
        GFP_KERNEL,
    )?;
    let selftest = KBox::pin_init(
        dir.write_callback_file(c"selftest", domain.clone(), &selftest_write),
        GFP_KERNEL,
    )?;
    Ok(Debugfs {
        _peers: peers,
        _connections: connections,
        _resets: resets,
        _policy: policy,
        _crypto: crypto,
        _rings: rings,
        _net: net,
        _selftest: selftest,
        _dir: dir,
    })
}
