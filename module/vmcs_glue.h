/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The interface between vmcs's Rust code and its C glue (vmcs_glue.c).
 */
#ifndef VMCS_GLUE_H
#define VMCS_GLUE_H

#include <linux/fs.h>
#include <linux/mm_types.h>
#include <linux/net.h>
#include <linux/poll.h>
#include <linux/socket.h>
#include <linux/uio.h>
#include <linux/sockptr.h>
#include <linux/spinlock.h>
#include <linux/types.h>

/* Provided by the C glue. */
const struct file_operations *vmcs_glue_fops(void);
struct file *vmcs_glue_anon_file(void *private_data, int flags);

/* Provided by Rust, module/chardev/entry.rs: the file operations of /dev/vmcs. */
int vmcs_chr_open(struct inode *inode, struct file *file);
int vmcs_chr_release(struct inode *inode, struct file *file);
ssize_t vmcs_chr_read(struct file *file, char __user *buf, size_t len, loff_t *ppos);
ssize_t vmcs_chr_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos);
long vmcs_chr_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
__poll_t vmcs_chr_poll(struct file *file, struct poll_table_struct *wait);
int vmcs_chr_bulk_mmap(struct file *file, unsigned long pgoff, unsigned long len,
		       bool write, bool *readonly);
vm_fault_t vmcs_chr_bulk_fault(struct file *file, unsigned long pgoff, struct vm_fault *vmf);

/* Bulk area mappings (C glue). */
vm_fault_t vmcs_glue_insert_pfn(struct vm_fault *vmf, unsigned long pfn);
vm_fault_t vmcs_glue_insert_page(struct vm_fault *vmf, struct page *page);
void *vmcs_glue_mapping_new(void);
void vmcs_glue_mapping_free(void *m);
void vmcs_glue_file_set_mapping(struct file *file, void *m);
void vmcs_glue_mapping_zap(void *m);

/* User copies with page faults disabled (module/glue/uiter.rs). */
size_t vmcs_glue_copy_from_iter_nofault(void *to, size_t n, struct iov_iter *i);
size_t vmcs_glue_copy_to_iter_nofault(const void *from, size_t n, struct iov_iter *i);

/* AF_VMCS (module/glue/socket.rs): registration and the struct sock helpers. */
unsigned int vmcs_glue_af(void);
int vmcs_glue_sock_register(int family);
void vmcs_glue_sock_unregister(void);
struct sock *vmcs_glue_sk_new(struct net *net, struct socket *sock, int kern);
struct sock *vmcs_glue_sk_new_accepted(struct socket *sock, struct socket *newsock,
				       int kern);
void *vmcs_glue_sk_priv(struct sock *sk);
void vmcs_glue_sk_set_priv(struct sock *sk, void *priv);
void vmcs_glue_sk_free(struct socket *sock);
unsigned int vmcs_glue_sk_sndtimeo_ms(struct sock *sk);
int vmcs_glue_sk_rcvlowat(struct sock *sk);
int vmcs_glue_sk_rcvbuf(struct sock *sk);
int vmcs_glue_sk_sndbuf(struct sock *sk);
void vmcs_glue_sk_set_bufs(struct sock *sk, int rcvbuf, int sndbuf);
unsigned int vmcs_glue_sk_busy_poll(struct sock *sk);
void vmcs_glue_sk_set_busy_poll(struct sock *sk, unsigned int usec);
bool vmcs_glue_need_resched(void);
bool vmcs_glue_single_task_running(void);
unsigned int vmcs_glue_jiffies_to_usecs(unsigned long j);
long vmcs_glue_sk_rcvtimeo(struct sock *sk);
long vmcs_glue_sk_sndtimeo(struct sock *sk);
void vmcs_glue_sk_set_err(struct sock *sk, int err);
void vmcs_glue_sock_set_state(struct socket *sock, int state);
int vmcs_glue_sockptr_copy(void *dst, const sockptr_t *src, unsigned int len);
int vmcs_glue_sockptr_timeval(const sockptr_t *src, unsigned int optlen, bool old,
			      s64 *sec, s64 *usec);
int vmcs_glue_put_timeout(long timeo, void *v, bool old);
unsigned long vmcs_glue_hz(void);
int vmcs_glue_sk_stream_error(struct sock *sk, int flags, int err);
bool vmcs_glue_sk_zerocopy(struct sock *sk);
void vmcs_glue_sk_set_zerocopy(struct sock *sk, bool on);
void *vmcs_glue_zerocopy_begin(struct sock *sk, size_t len);
void vmcs_glue_zerocopy_end(void *uarg, bool sent);
int vmcs_glue_recv_errqueue(struct sock *sk, struct msghdr *msg, int len);
bool vmcs_glue_sk_errqueue_pending(struct sock *sk);
int vmcs_glue_sk_err(struct sock *sk);
void vmcs_glue_sk_set_rcvlowat(struct sock *sk, int val);

/* Provided by Rust, module/socket/entry.rs: the AF_VMCS operations. */
int vmcs_sock_create(struct net *net, struct socket *sock, int protocol, int kern);
int vmcs_sock_release(struct socket *sock);
int vmcs_sock_bind(struct socket *sock, struct sockaddr_unsized *addr, int len);
int vmcs_sock_connect(struct socket *sock, struct sockaddr_unsized *addr, int len,
		      int flags);
int vmcs_sock_accept(struct socket *sock, struct socket *newsock, int flags,
		     int kern);
int vmcs_sock_getname(struct socket *sock, struct sockaddr *addr, int peer);
__poll_t vmcs_sock_poll(struct file *file, struct socket *sock,
			struct poll_table_struct *wait);
int vmcs_sock_ioctl(struct socket *sock, unsigned int cmd, unsigned long arg);
int vmcs_sock_listen(struct socket *sock, int backlog);
int vmcs_sock_shutdown(struct socket *sock, int how);
void vmcs_sock_bufs_changed(struct socket *sock);
int vmcs_sock_setsockopt(struct socket *sock, int level, int optname,
			 const sockptr_t *optval, unsigned int optlen);
int vmcs_sock_getsockopt(struct socket *sock, int level, int optname, u8 *v, int len);
int vmcs_sock_set_rcvlowat(struct sock *sk, int val);
void vmcs_sock_busy_poll_changed(struct socket *sock);
int vmcs_sock_sendmsg(struct socket *sock, struct msghdr *msg, size_t len);
int vmcs_sock_recvmsg(struct socket *sock, struct msghdr *msg, size_t len,
		      int flags);

/* spinlocks with bottom halves off (module/glue/sync.rs; C side in vmcs_net_glue.c). */
void vmcs_glue_spin_lock_bh(spinlock_t *lock);
void vmcs_glue_spin_unlock_bh(spinlock_t *lock);
int vmcs_glue_spin_trylock_bh(spinlock_t *lock);

/* The vmcsN net device (module/glue/net.rs; C side in vmcs_net_glue.c). */
struct net_device;
struct sk_buff;
struct net_device *vmcs_net_alloc(struct device *parent, const char *name, unsigned int txqs,
				  const u8 *mac, unsigned int max_mtu, unsigned int tso_max);
void vmcs_net_set_rust(struct net_device *dev, void *rust);
int vmcs_net_register(struct net_device *dev);
void vmcs_net_unregister(struct net_device *dev);
void vmcs_net_free(struct net_device *dev);
const char *vmcs_net_name(struct net_device *dev);
void vmcs_net_set_carrier(struct net_device *dev, bool on);
unsigned int vmcs_net_mtu(struct net_device *dev);
void vmcs_net_napi_enable(struct net_device *dev);
void vmcs_net_napi_disable(struct net_device *dev);
void vmcs_net_napi_schedule(struct net_device *dev);
bool vmcs_net_napi_complete(struct net_device *dev, int done);
void vmcs_net_napi_reschedule(struct net_device *dev);
void vmcs_net_rx_enqueue(struct net_device *dev, struct sk_buff *skb);
struct sk_buff *vmcs_net_rx_dequeue(struct net_device *dev);
unsigned int vmcs_net_rx_queued(struct net_device *dev);
void vmcs_net_rx_purge(struct net_device *dev);
void vmcs_net_gro_receive(struct net_device *dev, struct sk_buff *skb);
struct sk_buff *vmcs_net_rx_alloc(struct net_device *dev, unsigned int len, u8 **data);
const u8 *vmcs_net_rx_data(struct sk_buff *skb, unsigned int *len);
int vmcs_net_rx_finish(struct net_device *dev, struct sk_buff *skb, bool partial,
		       u16 csum_start, u16 csum_offset, u16 gso_size, bool gso_tcpv6,
		       bool gso_ecn);
void vmcs_net_stop_queue(struct net_device *dev, u16 q);
void vmcs_net_wake_queue(struct net_device *dev, u16 q);
void vmcs_net_start_queues(struct net_device *dev);
void vmcs_net_stop_queues(struct net_device *dev);
unsigned int vmcs_net_skb_len(struct sk_buff *skb, const u8 **head, unsigned int *headlen);
int vmcs_net_skb_copy_bits(const struct sk_buff *skb, int offset, void *to, int len);
bool vmcs_net_skb_offload(struct sk_buff *skb, u16 *start, u16 *offset, u32 *gso_size,
			  u32 *gso_type);
bool vmcs_net_tx_sent(struct net_device *dev, u16 q, unsigned int bytes, bool more);
void vmcs_net_tx_completed(struct net_device *dev, u16 q, unsigned int bytes);
void vmcs_net_tx_reset(struct net_device *dev);
bool vmcs_net_skb_gso_fits(const struct sk_buff *skb, unsigned int len);
void vmcs_net_icmp_too_big(struct sk_buff *skb, unsigned int mtu);
void vmcs_net_icmp6_too_big(struct sk_buff *skb, unsigned int mtu);
void vmcs_net_skb_consume(struct sk_buff *skb);
void vmcs_net_skb_drop(struct sk_buff *skb);

/* Provided by Rust, module/net/entry.rs: the net device's operations. */
int vmcs_net_open(void *net);
int vmcs_net_stop(void *net);
void vmcs_net_xmit(void *net, struct sk_buff *skb, u16 queue, bool more);
u16 vmcs_net_select_queue(void *net, const u8 *data, unsigned int len);
bool vmcs_net_gso_split(void *net, struct sk_buff *skb, u16 queue);
void vmcs_net_get_stats64(void *net, u64 *vals, unsigned int n);
int vmcs_net_poll(void *net, int budget);
void vmcs_net_bus_info(void *net, char *buf, unsigned int len);
int vmcs_net_stats_count(void *net);
void vmcs_net_stats_strings(void *net, u8 *data);
void vmcs_net_stats_values(void *net, u64 *data, u32 n);

/* The vsock transport's in-kernel sockets (vmcs_vsock_glue.c, module/glue/vsock.rs). */
int vmcs_vsock_create(struct socket **res);
void vmcs_vsock_release(struct socket *sock);
int vmcs_vsock_local_cid(struct socket *sock, u32 *cid);
int vmcs_vsock_listen(struct socket *sock, u32 port, int backlog);
int vmcs_vsock_accept(struct socket *sock, struct socket **newsock);
int vmcs_vsock_connect(struct socket *sock, u32 cid, u32 port);
int vmcs_vsock_peer_cid(struct socket *sock, u32 *cid);
int vmcs_vsock_send(struct socket *sock, const void *buf, size_t len);
int vmcs_vsock_recv(struct socket *sock, void *buf, size_t len);
bool vmcs_vsock_usable(struct socket *sock);
void vmcs_vsock_shutdown(struct socket *sock);
int vmcs_vsock_set_callbacks(struct socket *sock, void (*event)(void *ctx), void *ctx);
void vmcs_vsock_clear_callbacks(struct socket *sock);

/* Encryption (vmcs_crypto_glue.c): forwarders to lib/crypto, module/glue/crypto.rs. */
void vmcs_crypto_seal(u8 *dst, const u8 *src, size_t len, const u8 *ad, size_t ad_len,
		      u64 nonce, const u8 *key);
bool vmcs_crypto_open(u8 *dst, const u8 *src, size_t len, const u8 *ad, size_t ad_len,
		      u64 nonce, const u8 *key);
bool vmcs_crypto_keypair(u8 *secret, u8 *pub);
bool vmcs_crypto_dh(u8 *out, const u8 *secret, const u8 *peer_pub);
void vmcs_crypto_mac(u8 *out, size_t out_len, const u8 *key, size_t key_len, const u8 *in,
		     size_t in_len);
void vmcs_crypto_wipe(void *p, size_t len);

/* sysfs (module/glue/sysfs.rs): /sys/kernel/vmcs/vmcs<N>/. */
struct kobject;
struct kobject *vmcs_glue_sysfs_root_new(void);
struct kobject *vmcs_glue_sysfs_domain_new(struct kobject *parent, unsigned int index);
void vmcs_glue_sysfs_del(struct kobject *kobj);

/* Provided by Rust, module/domain/entry.rs: the per-domain sysfs attributes. */
ssize_t vmcs_sysfs_encrypt_show(unsigned int index, char *buf);
ssize_t vmcs_sysfs_encrypt_store(unsigned int index, const char *buf, size_t count);

#endif /* VMCS_GLUE_H */
