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
void *vmcs_glue_mapping_new(void);
void vmcs_glue_mapping_free(void *m);
void vmcs_glue_file_set_mapping(struct file *file, void *m);
void vmcs_glue_mapping_zap(void *m);

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
void vmcs_sock_busy_poll_changed(struct socket *sock);
int vmcs_sock_sendmsg(struct socket *sock, struct msghdr *msg, size_t len);
int vmcs_sock_recvmsg(struct socket *sock, struct msghdr *msg, size_t len,
		      int flags);

#endif /* VMCS_GLUE_H */
