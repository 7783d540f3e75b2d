// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs C glue for the vmcsN net device (module/net/, docs/netdev.md).
 *
 * Rust-for-Linux 7.2 has no net_device abstraction, so, as for the socket
 * family in vmcs_glue.c, this file holds the tables (net_device_ops,
 * ethtool_ops), forwarders into Rust (module/net/entry.rs) and one-line
 * helpers over inline functions the bindings lack. Every decision (which peer,
 * what to drop, when to stop a queue, what to count) is made in Rust.
 */
#include <linux/etherdevice.h>
#include <linux/ethtool.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/if_vlan.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/spinlock.h>
#include <net/gso.h>
#include <net/icmp.h>

#include "vmcs_glue.h"

/* The private area of a vmcsN net_device: the Rust `net::VmcsNet` and the NAPI context. */
struct vmcs_net_priv {
	void *rust;
	struct napi_struct napi;
	/* Frames the rx work copied out of the rings, waiting for the NAPI poll. */
	struct sk_buff_head rxq;
};

static struct vmcs_net_priv *vmcs_net_priv(struct net_device *dev)
{
	return netdev_priv(dev);
}

static int vmcs_net_ndo_open(struct net_device *dev)
{
	return vmcs_net_open(vmcs_net_priv(dev)->rust);
}

static int vmcs_net_ndo_stop(struct net_device *dev)
{
	return vmcs_net_stop(vmcs_net_priv(dev)->rust);
}

static netdev_tx_t vmcs_net_ndo_xmit(struct sk_buff *skb, struct net_device *dev)
{
	vmcs_net_xmit(vmcs_net_priv(dev)->rust, skb, skb_get_queue_mapping(skb),
		      netdev_xmit_more());
	return NETDEV_TX_OK;
}

static u16 vmcs_net_ndo_select_queue(struct net_device *dev, struct sk_buff *skb,
				     struct net_device *sb_dev)
{
	return vmcs_net_select_queue(vmcs_net_priv(dev)->rust, skb->data, skb_headlen(skb));
}

/* Rust fills the counters in the order of enum vmcs_net_stat64 (module/net/mod.rs). */
static void vmcs_net_ndo_get_stats64(struct net_device *dev, struct rtnl_link_stats64 *s)
{
	u64 v[9] = {};

	vmcs_net_get_stats64(vmcs_net_priv(dev)->rust, v, ARRAY_SIZE(v));
	s->rx_packets = v[0];
	s->tx_packets = v[1];
	s->rx_bytes = v[2];
	s->tx_bytes = v[3];
	s->rx_errors = v[4];
	s->tx_errors = v[5];
	s->rx_dropped = v[6];
	s->tx_dropped = v[7];
	s->rx_length_errors = v[8];
}

/*
 * A GSO packet longer than the ring to its peer (the queue is the peer, ndo_select_queue)
 * is segmented by the stack before ndo_start_xmit when Rust says its segments fit
 * (validate_xmit_skb segments it in software, every segment then comes to ndo_start_xmit).
 */
static netdev_features_t vmcs_net_ndo_features_check(struct sk_buff *skb, struct net_device *dev,
						     netdev_features_t features)
{
	if (skb_is_gso(skb) &&
	    vmcs_net_gso_split(vmcs_net_priv(dev)->rust, skb, skb_get_queue_mapping(skb)))
		features &= ~NETIF_F_GSO_MASK;
	return vlan_features_check(skb, features);
}

static int vmcs_net_ndo_change_mtu(struct net_device *dev, int new_mtu)
{
	WRITE_ONCE(dev->mtu, new_mtu);
	return 0;
}

static const struct net_device_ops vmcs_net_ops = {
	.ndo_open = vmcs_net_ndo_open,
	.ndo_stop = vmcs_net_ndo_stop,
	.ndo_start_xmit = vmcs_net_ndo_xmit,
	.ndo_select_queue = vmcs_net_ndo_select_queue,
	.ndo_get_stats64 = vmcs_net_ndo_get_stats64,
	.ndo_features_check = vmcs_net_ndo_features_check,
	.ndo_change_mtu = vmcs_net_ndo_change_mtu,
	.ndo_set_mac_address = eth_mac_addr,
	.ndo_validate_addr = eth_validate_addr,
};

static void vmcs_net_get_drvinfo(struct net_device *dev, struct ethtool_drvinfo *info)
{
	strscpy(info->driver, "vmcs", sizeof(info->driver));
	strscpy(info->version, "0.1.0", sizeof(info->version));
	vmcs_net_bus_info(vmcs_net_priv(dev)->rust, info->bus_info, sizeof(info->bus_info));
}

static int vmcs_net_get_sset_count(struct net_device *dev, int sset)
{
	return sset == ETH_SS_STATS ? vmcs_net_stats_count(vmcs_net_priv(dev)->rust) : -EOPNOTSUPP;
}

static void vmcs_net_get_strings(struct net_device *dev, u32 sset, u8 *data)
{
	if (sset == ETH_SS_STATS)
		vmcs_net_stats_strings(vmcs_net_priv(dev)->rust, data);
}

static void vmcs_net_get_ethtool_stats(struct net_device *dev, struct ethtool_stats *st, u64 *data)
{
	vmcs_net_stats_values(vmcs_net_priv(dev)->rust, data, st->n_stats);
}

static const struct ethtool_ops vmcs_net_ethtool_ops = {
	.get_drvinfo = vmcs_net_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_sset_count = vmcs_net_get_sset_count,
	.get_strings = vmcs_net_get_strings,
	.get_ethtool_stats = vmcs_net_get_ethtool_stats,
};

static int vmcs_net_napi_poll(struct napi_struct *napi, int budget)
{
	struct vmcs_net_priv *p = container_of(napi, struct vmcs_net_priv, napi);

	return vmcs_net_poll(p->rust, budget);
}

/*
 * A new (unregistered) Ethernet device of the ivshmem device @parent, named @name with
 * @txqs transmit queues, the address @mac, MTUs up to @max_mtu and GSO packets up to
 * @tso_max bytes (0: no TSO), carrier off; NULL on ENOMEM. The pointer that
 * every forwarder hands to Rust is set with vmcs_net_set_rust() before registration.
 */
struct net_device *vmcs_net_alloc(struct device *parent, const char *name, unsigned int txqs,
				  const u8 *mac, unsigned int max_mtu, unsigned int tso_max)
{
	struct net_device *dev = alloc_netdev_mqs(sizeof(struct vmcs_net_priv), name,
						  NET_NAME_USER, ether_setup, txqs, 1);
	struct vmcs_net_priv *p;

	if (!dev)
		return NULL;
	p = netdev_priv(dev);
	p->rust = NULL;
	skb_queue_head_init(&p->rxq);
	SET_NETDEV_DEV(dev, parent);
	dev->netdev_ops = &vmcs_net_ops;
	dev->ethtool_ops = &vmcs_net_ethtool_ops;
	/*
	 * The data never leaves memory: no checksum is computed on either side, and GSO
	 * packets travel unsegmented (one ring frame each, the skb's fragments copied
	 * straight into the ring).
	 */
	dev->features = NETIF_F_HW_CSUM | NETIF_F_RXCSUM | NETIF_F_SG;
	if (tso_max) {
		dev->features |= NETIF_F_TSO | NETIF_F_TSO6 | NETIF_F_TSO_ECN;
		netif_set_tso_max_size(dev, tso_max);
	}
	dev->hw_features = dev->features;
	dev->min_mtu = ETH_MIN_MTU;
	dev->max_mtu = max_mtu;
	dev->mtu = max_mtu;
	eth_hw_addr_set(dev, mac);
	/* The route stays on transmitted skbs: a frame too big for its peer's ring is answered
	 * with an ICMP "too big" (icmp_ndo_send needs it), as a tunnel does. */
	netif_keep_dst(dev);
	netif_napi_add(dev, &p->napi, vmcs_net_napi_poll);
	netif_carrier_off(dev);
	return dev;
}

void vmcs_net_set_rust(struct net_device *dev, void *rust)
{
	vmcs_net_priv(dev)->rust = rust;
}

int vmcs_net_register(struct net_device *dev)
{
	return register_netdev(dev);
}

void vmcs_net_unregister(struct net_device *dev)
{
	unregister_netdev(dev);
}

/* Frees a device that is not (or no longer) registered, with the frames still queued. */
void vmcs_net_free(struct net_device *dev)
{
	struct vmcs_net_priv *p = netdev_priv(dev);

	netif_napi_del(&p->napi);
	skb_queue_purge(&p->rxq);
	free_netdev(dev);
}

const char *vmcs_net_name(struct net_device *dev)
{
	return dev->name;
}

void vmcs_net_set_carrier(struct net_device *dev, bool on)
{
	if (on)
		netif_carrier_on(dev);
	else
		netif_carrier_off(dev);
}

unsigned int vmcs_net_mtu(struct net_device *dev)
{
	return READ_ONCE(dev->mtu);
}

void vmcs_net_napi_enable(struct net_device *dev)
{
	napi_enable(&vmcs_net_priv(dev)->napi);
}

void vmcs_net_napi_disable(struct net_device *dev)
{
	napi_disable(&vmcs_net_priv(dev)->napi);
}

/* Schedules the NAPI poll from process context: with bottom halves off, as it must be. */
void vmcs_net_napi_schedule(struct net_device *dev)
{
	local_bh_disable();
	napi_schedule(&vmcs_net_priv(dev)->napi);
	local_bh_enable();
}

bool vmcs_net_napi_complete(struct net_device *dev, int done)
{
	return napi_complete_done(&vmcs_net_priv(dev)->napi, done);
}

void vmcs_net_napi_reschedule(struct net_device *dev)
{
	napi_schedule(&vmcs_net_priv(dev)->napi);
}

void vmcs_net_rx_enqueue(struct net_device *dev, struct sk_buff *skb)
{
	skb_queue_tail(&vmcs_net_priv(dev)->rxq, skb);
}

struct sk_buff *vmcs_net_rx_dequeue(struct net_device *dev)
{
	return skb_dequeue(&vmcs_net_priv(dev)->rxq);
}

unsigned int vmcs_net_rx_queued(struct net_device *dev)
{
	return skb_queue_len_lockless(&vmcs_net_priv(dev)->rxq);
}

void vmcs_net_rx_purge(struct net_device *dev)
{
	skb_queue_purge(&vmcs_net_priv(dev)->rxq);
}

void vmcs_net_gro_receive(struct net_device *dev, struct sk_buff *skb)
{
	napi_gro_receive(&vmcs_net_priv(dev)->napi, skb);
}

/* A new receive skb of @len bytes for @dev (headroom aligned), its data at *@data; NULL on ENOMEM. */
struct sk_buff *vmcs_net_rx_alloc(struct net_device *dev, unsigned int len, u8 **data)
{
	struct sk_buff *skb = netdev_alloc_skb_ip_align(dev, len);

	if (!skb)
		return NULL;
	*data = skb_put(skb, len);
	return skb;
}

/* The received frame's bytes (what Rust validates after its one copy). */
const u8 *vmcs_net_rx_data(struct sk_buff *skb, unsigned int *len)
{
	*len = skb->len;
	return skb->data;
}

/*
 * Finishes a received frame: protocol (eth_type_trans) and checksum state, partial
 * (@csum_start, @csum_offset from the frame's start) or already verified, and for a GSO
 * packet (@gso_size != 0, checked by Rust) its segment size and type (@gso_tcpv6,
 * @gso_ecn), marked SKB_GSO_DODGY: it came from another guest, so whoever segments it
 * checks its headers again and recounts gso_segs (as for virtio-net or tun). -EINVAL when
 * the partial checksum's place is outside the frame (skb_partial_csum_set checks it).
 */
int vmcs_net_rx_finish(struct net_device *dev, struct sk_buff *skb, bool partial,
		       u16 csum_start, u16 csum_offset, u16 gso_size, bool gso_tcpv6,
		       bool gso_ecn)
{
	if (partial) {
		if (!skb_partial_csum_set(skb, csum_start, csum_offset))
			return -EINVAL;
	} else {
		skb->ip_summed = CHECKSUM_UNNECESSARY;
	}
	if (gso_size) {
		struct skb_shared_info *sh = skb_shinfo(skb);

		sh->gso_size = gso_size;
		sh->gso_type = (gso_tcpv6 ? SKB_GSO_TCPV6 : SKB_GSO_TCPV4) | SKB_GSO_DODGY |
			       (gso_ecn ? SKB_GSO_TCP_ECN : 0);
		sh->gso_segs = 0;
	}
	skb->protocol = eth_type_trans(skb, dev);
	return 0;
}

void vmcs_net_stop_queue(struct net_device *dev, u16 q)
{
	netif_stop_subqueue(dev, q);
}

void vmcs_net_wake_queue(struct net_device *dev, u16 q)
{
	netif_wake_subqueue(dev, q);
}

void vmcs_net_start_queues(struct net_device *dev)
{
	netif_tx_start_all_queues(dev);
}

void vmcs_net_stop_queues(struct net_device *dev)
{
	netif_tx_stop_all_queues(dev);
}

/* A transmitted skb's length (head and fragments) and its first bytes, the Ethernet header. */
unsigned int vmcs_net_skb_len(struct sk_buff *skb, const u8 **head, unsigned int *headlen)
{
	*head = skb->data;
	*headlen = skb_headlen(skb);
	return skb->len;
}

/* Copies @len bytes of @skb from @offset (head and fragments) to @to: the one copy into the ring. */
int vmcs_net_skb_copy_bits(const struct sk_buff *skb, int offset, void *to, int len)
{
	return skb_copy_bits(skb, offset, to, len);
}

/*
 * What @skb leaves to the device: whether its checksum is (returned, with its place in
 * *@start, *@offset), and its GSO segment size and type in the wire's terms
 * (docs/protocol.md §10: 1 TCPv4, 2 TCPv6, bit 8 ECN; bit 31 for a type the wire has
 * not, which Rust drops). SKB_GSO_DODGY is the stack's business only.
 */
bool vmcs_net_skb_offload(struct sk_buff *skb, u16 *start, u16 *offset, u32 *gso_size,
			  u32 *gso_type)
{
	*start = 0;
	*offset = 0;
	*gso_size = 0;
	*gso_type = 0;
	if (skb_is_gso(skb)) {
		unsigned int t = skb_shinfo(skb)->gso_type & ~SKB_GSO_DODGY;

		*gso_size = skb_shinfo(skb)->gso_size;
		if (t & SKB_GSO_TCPV4)
			*gso_type = 1;
		else if (t & SKB_GSO_TCPV6)
			*gso_type = 2;
		if (t & SKB_GSO_TCP_ECN)
			*gso_type |= 1 << 8;
		if (t & ~(SKB_GSO_TCPV4 | SKB_GSO_TCPV6 | SKB_GSO_TCP_ECN))
			*gso_type |= 1U << 31;
	}
	if (skb->ip_summed != CHECKSUM_PARTIAL)
		return false;
	*start = skb_checksum_start_offset(skb);
	*offset = skb->csum_offset;
	return true;
}

/*
 * BQL: @bytes (ring bytes) queued on transmit queue @q; whether the frames batched so far
 * must be published now (no more coming with @more, or the queue stopped).
 */
bool vmcs_net_tx_sent(struct net_device *dev, u16 q, unsigned int bytes, bool more)
{
	return __netdev_tx_sent_queue(netdev_get_tx_queue(dev, q), bytes, more);
}

/* BQL: @bytes of transmit queue @q completed (the peer released their ring space). */
void vmcs_net_tx_completed(struct net_device *dev, u16 q, unsigned int bytes)
{
	netdev_tx_completed_queue(netdev_get_tx_queue(dev, q), 1, bytes);
}

/* BQL: every transmit queue starts from nothing in flight (ndo_open). */
void vmcs_net_tx_reset(struct net_device *dev)
{
	unsigned int q;

	for (q = 0; q < dev->num_tx_queues; q++)
		netdev_tx_reset_subqueue(dev, q);
}

/* Whether every segment of the GSO packet @skb is at most @len bytes, Ethernet header included. */
bool vmcs_net_skb_gso_fits(const struct sk_buff *skb, unsigned int len)
{
	return skb_gso_validate_mac_len(skb, len);
}

/*
 * PMTU for a frame longer than its peer's ring allows: ICMP "fragmentation needed" (IPv4) or
 * "packet too big" (IPv6) with @mtu to its sender, as a tunnel does (the sender's stack, TCP
 * here, lowers its path MTU to that peer and resends).
 */
void vmcs_net_icmp_too_big(struct sk_buff *skb, unsigned int mtu)
{
	icmp_ndo_send(skb, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, htonl(mtu));
}

void vmcs_net_icmp6_too_big(struct sk_buff *skb, unsigned int mtu)
{
	icmpv6_ndo_send(skb, ICMPV6_PKT_TOOBIG, 0, mtu);
}

void vmcs_net_skb_consume(struct sk_buff *skb)
{
	dev_consume_skb_any(skb);
}

void vmcs_net_skb_drop(struct sk_buff *skb)
{
	dev_kfree_skb_any(skb);
}

/* spinlock_t with bottom halves off (module/glue/sync.rs). */
void vmcs_glue_spin_lock_bh(spinlock_t *lock)
{
	spin_lock_bh(lock);
}

void vmcs_glue_spin_unlock_bh(spinlock_t *lock)
{
	spin_unlock_bh(lock);
}

int vmcs_glue_spin_trylock_bh(spinlock_t *lock)
{
	return spin_trylock_bh(lock);
}
