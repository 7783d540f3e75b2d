// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs C glue: the few pieces the Rust `kernel` crate has no abstraction for.
 *
 * This file holds tables and one-line forwarders only; all logic lives in
 * Rust (module/chardev/entry.rs). It exists because:
 *  - the file_operations of /dev/vmcs need `.owner = THIS_MODULE` so that an
 *    open file pins the module (kernel::miscdevice leaves owner unset, which
 *    would let rmmod unload code that open files still point at), and
 *  - kernel::miscdevice has no poll hook, and
 *  - the kernel crate has no anon_inode_getfile, which VMCS_IOC_ACCEPT uses to
 *    give an accepted connection a file of its own with the same operations.
 *
 * AF_VMCS (module/socket/) adds the socket family's tables: the
 * net_proto_family, the struct proto and the proto_ops of SOCK_STREAM and
 * SOCK_SEQPACKET, all forwarding to Rust, plus the struct sock helpers the
 * bindings lack (sk_alloc/sock_init_data, the inline accessors) and the
 * (un)registration calls.
 */
#include <linux/anon_inodes.h>
#include <linux/kobject.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/module.h>
#include <linux/errqueue.h>
#include <linux/vm_sockets.h>
#include <linux/sched/stat.h>
#include <net/sock.h>

#include "vmcs_glue.h"

/*
 * Bulk area mappings (docs/uapi.md "Bulk transfer"): VM_PFNMAP, filled on fault
 * by Rust (vmcs_chr_bulk_fault), which checks under the connection's lock that
 * the bulk set-up is still alive and inserts the page with vmcs_glue_insert_pfn.
 * Teardown zaps the file's own address_space (vmcs_glue_mapping_zap), so a
 * later touch faults again and gets the file's private zero page
 * (vmcs_glue_insert_page).
 */
static vm_fault_t vmcs_glue_fault(struct vm_fault *vmf)
{
	return vmcs_chr_bulk_fault(vmf->vma->vm_file, vmf->pgoff, vmf);
}

static const struct vm_operations_struct vmcs_vm_ops = {
	.fault = vmcs_glue_fault,
};

static int vmcs_glue_mmap(struct file *file, struct vm_area_struct *vma)
{
	bool readonly = false;
	int err;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	err = vmcs_chr_bulk_mmap(file, vma->vm_pgoff,
				 vma->vm_end - vma->vm_start,
				 !!(vma->vm_flags & VM_WRITE), &readonly);
	if (err)
		return err;
	if (readonly)
		vm_flags_clear(vma, VM_MAYWRITE);
	vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &vmcs_vm_ops;
	return 0;
}

vm_fault_t vmcs_glue_insert_pfn(struct vm_fault *vmf, unsigned long pfn)
{
	return vmf_insert_pfn(vmf->vma, vmf->address, pfn);
}

vm_fault_t vmcs_glue_insert_page(struct vm_fault *vmf, struct page *page)
{
	return vmf_insert_pfn(vmf->vma, vmf->address, page_to_pfn(page));
}

/* A private address_space for one /dev/vmcs file, so teardown can zap exactly its maps. */
void *vmcs_glue_mapping_new(void)
{
	struct address_space *m = kzalloc(sizeof(*m), GFP_KERNEL);

	if (m)
		address_space_init_once(m);
	return m;
}

void vmcs_glue_mapping_free(void *m)
{
	kfree(m);
}

/* Points @file at @m (at open, before any mmap); host and a_ops as the inode's. */
void vmcs_glue_file_set_mapping(struct file *file, void *m)
{
	struct address_space *as = m;

	as->host = file->f_mapping->host;
	as->a_ops = file->f_mapping->a_ops;
	file->f_mapping = as;
}

void vmcs_glue_mapping_zap(void *m)
{
	unmap_mapping_range(m, 0, 0, 1);
}

/*
 * Copies between user memory (an iov_iter) and kernel memory with page faults
 * disabled (module/glue/uiter.rs): a copy stops short at a user page that is
 * not present instead of sleeping in the fault handler, so that it may run
 * under the ring's spinlock or a connection's mutex. The caller faults the
 * rest in with no lock held (fault_in_iov_iter_*) and copies again.
 */
size_t vmcs_glue_copy_from_iter_nofault(void *to, size_t n, struct iov_iter *i)
{
	size_t r;

	pagefault_disable();
	r = copy_from_iter(to, n, i);
	pagefault_enable();
	return r;
}

size_t vmcs_glue_copy_to_iter_nofault(const void *from, size_t n, struct iov_iter *i)
{
	size_t r;

	pagefault_disable();
	r = copy_to_iter(from, n, i);
	pagefault_enable();
	return r;
}

static const struct file_operations vmcs_fops = {
	.owner = THIS_MODULE,
	.open = vmcs_chr_open,
	.release = vmcs_chr_release,
	.read = vmcs_chr_read,
	.write = vmcs_chr_write,
	.unlocked_ioctl = vmcs_chr_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = vmcs_chr_poll,
	.mmap = vmcs_glue_mmap,
	.llseek = noop_llseek,
};

/* The file_operations table of /dev/vmcs, for the Rust misc registration. */
const struct file_operations *vmcs_glue_fops(void)
{
	return &vmcs_fops;
}

/*
 * A new file with the file operations of /dev/vmcs and @private_data, for an
 * accepted connection. anon_inode_getfile() takes a reference on THIS_MODULE
 * through fops->owner, so the file pins the module like an open /dev/vmcs.
 */
struct file *vmcs_glue_anon_file(void *private_data, int flags)
{
	return anon_inode_getfile("[vmcs]", &vmcs_fops, private_data,
				  O_RDWR | (flags & O_NONBLOCK));
}

/*
 * The AF_VMCS family number, VMCS_AF_DEFAULT (22, AF_SNA) unless set; 0 = no
 * socket family. Declared here, not in module!, because it must be readable in
 * /sys/module/vmcs/parameters/af (the Rust macro gives parameters no sysfs
 * file); the userspace library reads it there.
 */
static unsigned int vmcs_af = 22;
module_param_named(af, vmcs_af, uint, 0444);
MODULE_PARM_DESC(af, "AF_VMCS address family number, 0 = none (default 22; docs/sockets.md)");

/* /sys/module/vmcs/version, which `vmcs status` shows; VERSION in vmcs_drv.rs is the same. */
MODULE_VERSION("0.1.0");

unsigned int vmcs_glue_af(void)
{
	return vmcs_af;
}

/* AF_VMCS: a struct sock plus the Rust `Arc<socket::VmcsSocket>` it owns. */
struct vmcs_sk {
	struct sock sk;
	void *priv;
};

static struct proto vmcs_sock_proto = {
	.name = "AF_VMCS",
	.owner = THIS_MODULE,
	.obj_size = sizeof(struct vmcs_sk),
};

static int vmcs_glue_accept(struct socket *sock, struct socket *newsock,
			    struct proto_accept_arg *arg)
{
	return vmcs_sock_accept(sock, newsock, arg->flags, arg->kern);
}

/*
 * SOL_SOCKET options go to the socket layer as for any family (the socket has
 * SOCK_CUSTOM_SOCKOPT only to get here); Rust then applies the buffer sizes
 * it stored (module/socket/). SO_ZEROCOPY (which sock_setsockopt refuses for
 * families it does not know) and every other level go to Rust.
 */
static int vmcs_glue_setsockopt(struct socket *sock, int level, int optname,
				sockptr_t optval, unsigned int optlen)
{
	int err;

	if (level != SOL_SOCKET || optname == SO_ZEROCOPY)
		return vmcs_sock_setsockopt(sock, level, optname, &optval, optlen);
	err = sock_setsockopt(sock, level, optname, optval, optlen);
	if (!err && (optname == SO_RCVBUF || optname == SO_RCVBUFFORCE ||
		     optname == SO_SNDBUF || optname == SO_SNDBUFFORCE))
		vmcs_sock_bufs_changed(sock);
	if (!err && optname == SO_BUSY_POLL)
		vmcs_sock_busy_poll_changed(sock);
	return err;
}

/* Levels other than SOL_SOCKET: Rust fills @v (at most 16 bytes) and says how many. */
static int vmcs_glue_getsockopt(struct socket *sock, int level, int optname,
				sockopt_t *opt)
{
	u8 v[16] = {};
	int len = vmcs_sock_getsockopt(sock, level, optname, v, opt->optlen);

	if (len < 0)
		return len;
	if (copy_to_iter(v, len, &opt->iter_out) != len)
		return -EFAULT;
	opt->optlen = len;
	return 0;
}

/* Copies @len bytes of a setsockopt value; -EFAULT when it cannot. */
int vmcs_glue_sockptr_copy(void *dst, const sockptr_t *src, unsigned int len)
{
	return copy_from_sockptr(dst, *src, len) ? -EFAULT : 0;
}

/* A setsockopt timeval, old or new layout (compat tasks included). */
int vmcs_glue_sockptr_timeval(const sockptr_t *src, unsigned int optlen, bool old,
			      s64 *sec, s64 *usec)
{
	struct __kernel_sock_timeval tv;
	int err = sock_copy_user_timeval(&tv, *src, optlen, old);

	*sec = tv.tv_sec;
	*usec = tv.tv_usec;
	return err;
}

/* A timeout in jiffies as getsockopt reports it (old or new timeval); its size. */
int vmcs_glue_put_timeout(long timeo, void *v, bool old)
{
	return sock_get_timeout(timeo, v, old);
}

unsigned long vmcs_glue_hz(void)
{
	return HZ;
}

/* SIGPIPE and a pending socket error on a failed stream send, as every stream family. */
int vmcs_glue_sk_stream_error(struct sock *sk, int flags, int err)
{
	return sk_stream_error(sk, flags, err);
}

bool vmcs_glue_sk_zerocopy(struct sock *sk)
{
	return sock_flag(sk, SOCK_ZEROCOPY);
}

void vmcs_glue_sk_set_zerocopy(struct sock *sk, bool on)
{
	sock_valbool_flag(sk, SOCK_ZEROCOPY, on);
}

/*
 * MSG_ZEROCOPY, as virtio-vsock does it: a completion for a send of up to
 * @len bytes is taken before the send (NULL on ENOMEM: the send must fail),
 * then ended by vmcs_glue_zerocopy_end(): with bytes sent, its notification
 * goes to the error queue (SO_EE_ORIGIN_ZEROCOPY, SO_EE_CODE_ZEROCOPY_COPIED:
 * the bytes were copied, the next id of sk_zckey, ranges merged as for TCP);
 * with nothing sent it is dropped and its id given back.
 */
void *vmcs_glue_zerocopy_begin(struct sock *sk, size_t len)
{
	return msg_zerocopy_realloc(sk, len, NULL, false);
}

void vmcs_glue_zerocopy_end(void *uarg, bool sent)
{
	if (!sent) {
		net_zcopy_put_abort(uarg, true);
		return;
	}
	uarg_to_msgzc((struct ubuf_info *)uarg)->zerocopy = 0;
	net_zcopy_put(uarg);
}

/* recvmsg(MSG_ERRQUEUE), with vsock's control message level and type. */
int vmcs_glue_recv_errqueue(struct sock *sk, struct msghdr *msg, int len)
{
	return sock_recv_errqueue(sk, msg, len, SOL_VSOCK, VSOCK_RECVERR);
}

bool vmcs_glue_sk_errqueue_pending(struct sock *sk)
{
	return !skb_queue_empty_lockless(&sk->sk_error_queue);
}

int vmcs_glue_sk_err(struct sock *sk)
{
	return READ_ONCE(sk->sk_err);
}

void vmcs_glue_sk_set_rcvlowat(struct sock *sk, int val)
{
	WRITE_ONCE(sk->sk_rcvlowat, val ? : 1);
}

/*
 * One table serves both socket types: every entry forwards to Rust, which looks at the
 * socket's type where stream and seqpacket differ. .family is set by
 * vmcs_glue_sock_register() from the `af` parameter.
 */
static struct proto_ops vmcs_sock_ops = {
	.owner = THIS_MODULE,
	.release = vmcs_sock_release,
	.bind = vmcs_sock_bind,
	.connect = vmcs_sock_connect,
	.socketpair = sock_no_socketpair,
	.accept = vmcs_glue_accept,
	.getname = vmcs_sock_getname,
	.poll = vmcs_sock_poll,
	.ioctl = vmcs_sock_ioctl,
	.gettstamp = sock_gettstamp,
	.listen = vmcs_sock_listen,
	.shutdown = vmcs_sock_shutdown,
	.setsockopt = vmcs_glue_setsockopt,
	.getsockopt_iter = vmcs_glue_getsockopt,
	.set_rcvlowat = vmcs_sock_set_rcvlowat,
	.sendmsg = vmcs_sock_sendmsg,
	.recvmsg = vmcs_sock_recvmsg,
	.mmap = sock_no_mmap,
};

static struct net_proto_family vmcs_family = {
	.create = vmcs_sock_create,
	.owner = THIS_MODULE,
};

/* proto_register + sock_register of @family; -EEXIST when the number is taken. */
int vmcs_glue_sock_register(int family)
{
	int err;

	vmcs_family.family = family;
	vmcs_sock_ops.family = family;
	err = proto_register(&vmcs_sock_proto, 0);
	if (err)
		return err;
	err = sock_register(&vmcs_family);
	if (err)
		proto_unregister(&vmcs_sock_proto);
	return err;
}

void vmcs_glue_sock_unregister(void)
{
	sock_unregister(vmcs_family.family);
	proto_unregister(&vmcs_sock_proto);
}

/*
 * A new struct sock for @sock (sk_alloc + sock_init_data), with the
 * proto_ops of @sock->type (the caller checked the type). NULL on ENOMEM.
 */
struct sock *vmcs_glue_sk_new(struct net *net, struct socket *sock, int kern)
{
	struct sock *sk = sk_alloc(net, vmcs_family.family, GFP_KERNEL,
				   &vmcs_sock_proto, kern);

	if (!sk)
		return NULL;
	sock->ops = &vmcs_sock_ops;
	sock_init_data(sock, sk);
	set_bit(SOCK_CUSTOM_SOCKOPT, &sock->flags);
	((struct vmcs_sk *)sk)->priv = NULL;
	return sk;
}

/* The struct sock of an accepted @newsock, in @sock's namespace. */
struct sock *vmcs_glue_sk_new_accepted(struct socket *sock, struct socket *newsock,
				       int kern)
{
	return vmcs_glue_sk_new(sock_net(sock->sk), newsock, kern);
}

void *vmcs_glue_sk_priv(struct sock *sk)
{
	return ((struct vmcs_sk *)sk)->priv;
}

void vmcs_glue_sk_set_priv(struct sock *sk, void *priv)
{
	((struct vmcs_sk *)sk)->priv = priv;
}

/* Detaches and drops @sock's struct sock (release). */
void vmcs_glue_sk_free(struct socket *sock)
{
	struct sock *sk = sock->sk;

	sock_orphan(sk);
	/* Completions nobody read (MSG_ZEROCOPY), as vsock's release. */
	skb_queue_purge(&sk->sk_error_queue);
	sock->sk = NULL;
	sock_put(sk);
}

/* SO_SNDTIMEO in ms for connect(); 0 when unset (the default timeout). */
unsigned int vmcs_glue_sk_sndtimeo_ms(struct sock *sk)
{
	long t = READ_ONCE(sk->sk_sndtimeo);

	return t == MAX_SCHEDULE_TIMEOUT ? 0 : max(jiffies_to_msecs(t), 1U);
}

int vmcs_glue_sk_rcvlowat(struct sock *sk)
{
	return READ_ONCE(sk->sk_rcvlowat);
}

int vmcs_glue_sk_rcvbuf(struct sock *sk)
{
	return READ_ONCE(sk->sk_rcvbuf);
}

int vmcs_glue_sk_sndbuf(struct sock *sk)
{
	return READ_ONCE(sk->sk_sndbuf);
}

/* What getsockopt(SO_RCVBUF/SO_SNDBUF) reports (twice the sizes in use). */
void vmcs_glue_sk_set_bufs(struct sock *sk, int rcvbuf, int sndbuf)
{
	WRITE_ONCE(sk->sk_rcvbuf, rcvbuf);
	WRITE_ONCE(sk->sk_sndbuf, sndbuf);
}

/* SO_BUSY_POLL (sk_ll_usec), in microseconds. */
unsigned int vmcs_glue_sk_busy_poll(struct sock *sk)
{
#ifdef CONFIG_NET_RX_BUSY_POLL
	return READ_ONCE(sk->sk_ll_usec);
#else
	return 0;
#endif
}

void vmcs_glue_sk_set_busy_poll(struct sock *sk, unsigned int usec)
{
#ifdef CONFIG_NET_RX_BUSY_POLL
	WRITE_ONCE(sk->sk_ll_usec, usec);
#endif
}

/* need_resched() and jiffies_to_usecs() for the busy-poll loops (inline functions). */
bool vmcs_glue_need_resched(void)
{
	return need_resched();
}

/* Whether no other task waits for this CPU (as KVM's halt polling checks). */
bool vmcs_glue_single_task_running(void)
{
	return single_task_running();
}

unsigned int vmcs_glue_jiffies_to_usecs(unsigned long j)
{
	return jiffies_to_usecs(j);
}

/* SO_RCVTIMEO, SO_SNDTIMEO in jiffies (MAX_SCHEDULE_TIMEOUT when unset). */
long vmcs_glue_sk_rcvtimeo(struct sock *sk)
{
	return READ_ONCE(sk->sk_rcvtimeo);
}

long vmcs_glue_sk_sndtimeo(struct sock *sk)
{
	return READ_ONCE(sk->sk_sndtimeo);
}

/* SO_ERROR: the error getsockopt(SO_ERROR) reports next (positive errno). */
void vmcs_glue_sk_set_err(struct sock *sk, int err)
{
	WRITE_ONCE(sk->sk_err, err);
}

void vmcs_glue_sock_set_state(struct socket *sock, int state)
{
	sock->state = state;
}

/*
 * sysfs: /sys/kernel/vmcs/vmcs<N>/encrypt, the per-domain encryption policy
 * (module/domain/sysfs.rs). One kobject per domain, named after the domain's
 * index; show and store forward that index to Rust (module/domain/entry.rs),
 * which looks the domain up. kobject_del() waits for running show/store calls.
 */
struct vmcs_dom_kobj {
	struct kobject kobj;
	unsigned int index;
};

static void vmcs_dom_kobj_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct vmcs_dom_kobj, kobj));
}

static ssize_t encrypt_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return vmcs_sysfs_encrypt_show(container_of(kobj, struct vmcs_dom_kobj, kobj)->index,
				       buf);
}

static ssize_t encrypt_store(struct kobject *kobj, struct kobj_attribute *attr,
			     const char *buf, size_t count)
{
	return vmcs_sysfs_encrypt_store(container_of(kobj, struct vmcs_dom_kobj, kobj)->index,
					buf, count);
}

static struct kobj_attribute vmcs_encrypt_attr = __ATTR_RW_MODE(encrypt, 0644);

static struct attribute *vmcs_dom_attrs[] = {
	&vmcs_encrypt_attr.attr,
	NULL,
};
ATTRIBUTE_GROUPS(vmcs_dom);

static const struct kobj_type vmcs_dom_ktype = {
	.release = vmcs_dom_kobj_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = vmcs_dom_groups,
};

struct kobject *vmcs_glue_sysfs_root_new(void)
{
	struct kobject *root = kobject_create_and_add("vmcs", kernel_kobj);

	return root ? root : ERR_PTR(-ENOMEM);
}

struct kobject *vmcs_glue_sysfs_domain_new(struct kobject *parent, unsigned int index)
{
	struct vmcs_dom_kobj *d = kzalloc(sizeof(*d), GFP_KERNEL);
	int err;

	if (!d)
		return ERR_PTR(-ENOMEM);
	d->index = index;
	err = kobject_init_and_add(&d->kobj, &vmcs_dom_ktype, parent, "vmcs%u", index);
	if (err) {
		kobject_put(&d->kobj);
		return ERR_PTR(err);
	}
	return &d->kobj;
}

void vmcs_glue_sysfs_del(struct kobject *kobj)
{
	kobject_del(kobj);
	kobject_put(kobj);
}
