// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs's C glue for the vsock transport (module/glue/vsock.rs, module/transport/vsock/):
 * one-line forwarders to the in-kernel socket calls on AF_VSOCK stream sockets, and the
 * three socket callbacks, which only hand an event to the Rust function they were given
 * and chain to the callbacks they replaced. No logic lives here.
 */
#include <linux/module.h>
#include <linux/net.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/vm_sockets.h>
#include <net/af_vsock.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "vmcs_glue.h"

/* What vmcs_vsock_set_callbacks replaced; in sk_user_data while installed. */
enum { VMCS_VSOCK_CB_DATA_READY, VMCS_VSOCK_CB_WRITE_SPACE, VMCS_VSOCK_CB_STATE_CHANGE };

struct vmcs_vsock_cb {
	void (*orig[3])(struct sock *sk);
	void (*event)(void *ctx);
	void *ctx;
};

static void vmcs_vsock_addr(struct sockaddr_vm *a, u32 cid, u32 port)
{
	memset(a, 0, sizeof(*a));
	a->svm_family = AF_VSOCK;
	a->svm_cid = cid;
	a->svm_port = port;
}

int vmcs_vsock_create(struct socket **res)
{
	return sock_create_kern(&init_net, AF_VSOCK, SOCK_STREAM, 0, res);
}

void vmcs_vsock_release(struct socket *sock)
{
	sock_release(sock);
}

/*
 * This guest's cid: the transport vsock picks for the host (as IOCTL_VM_SOCKETS_GET_LOCAL_CID).
 * vsock_assign_transport is looked up at run time (symbol_get): where vsock is a module
 * (distro kernels), vmcs.ko then loads without it; `sock` exists, so vsock.ko is loaded here.
 */
int vmcs_vsock_local_cid(struct socket *sock, u32 *cid)
{
	struct vsock_sock *vsk = vsock_sk(sock->sk);
	int (*assign)(struct vsock_sock *vsk, struct vsock_sock *psk);
	int err;

	assign = symbol_get(vsock_assign_transport);
	if (!assign)
		return -ENODEV;
	lock_sock(sock->sk);
	vsk->remote_addr.svm_cid = VMADDR_CID_HOST;
	err = assign(vsk, NULL);
	if (!err && !vsk->transport)
		err = -ENODEV;
	if (!err)
		*cid = vsk->transport->get_local_cid();
	release_sock(sock->sk);
	symbol_put(vsock_assign_transport);
	return err;
}

int vmcs_vsock_listen(struct socket *sock, u32 port, int backlog)
{
	struct sockaddr_vm a;
	int err;

	vmcs_vsock_addr(&a, VMADDR_CID_ANY, port);
	err = kernel_bind(sock, (struct sockaddr_unsized *)&a, sizeof(a));
	return err ?: kernel_listen(sock, backlog);
}

int vmcs_vsock_accept(struct socket *sock, struct socket **newsock)
{
	return kernel_accept(sock, newsock, O_NONBLOCK);
}

int vmcs_vsock_connect(struct socket *sock, u32 cid, u32 port)
{
	struct sockaddr_vm a;

	vmcs_vsock_addr(&a, cid, port);
	return kernel_connect(sock, (struct sockaddr_unsized *)&a, sizeof(a), 0);
}

int vmcs_vsock_peer_cid(struct socket *sock, u32 *cid)
{
	struct sockaddr_vm a;
	int err = kernel_getpeername(sock, (struct sockaddr *)&a);

	if (err < 0)
		return err;
	*cid = a.svm_cid;
	return 0;
}

int vmcs_vsock_send(struct socket *sock, const void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec v = { .iov_base = (void *)buf, .iov_len = len };

	return kernel_sendmsg(sock, &msg, &v, 1, len);
}

int vmcs_vsock_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec v = { .iov_base = buf, .iov_len = len };

	return kernel_recvmsg(sock, &msg, &v, 1, len, MSG_DONTWAIT);
}

/* Whether the stream is established and without a pending error or a peer's shutdown. */
bool vmcs_vsock_usable(struct socket *sock)
{
	struct sock *sk = sock->sk;

	return READ_ONCE(sk->sk_state) == TCP_ESTABLISHED && !READ_ONCE(sk->sk_err) &&
	       !(READ_ONCE(sk->sk_shutdown) & SEND_SHUTDOWN);
}

void vmcs_vsock_shutdown(struct socket *sock)
{
	kernel_sock_shutdown(sock, SHUT_RDWR);
}

/* Hands the event to Rust, then to the replaced callback `which` (VMCS_VSOCK_CB_*). */
static void vmcs_vsock_notify(struct sock *sk, int which)
{
	struct vmcs_vsock_cb *cb;

	read_lock_bh(&sk->sk_callback_lock);
	cb = sk->sk_user_data;
	if (cb) {
		cb->event(cb->ctx);
		cb->orig[which](sk);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void vmcs_vsock_data_ready(struct sock *sk)
{
	vmcs_vsock_notify(sk, VMCS_VSOCK_CB_DATA_READY);
}

static void vmcs_vsock_write_space(struct sock *sk)
{
	vmcs_vsock_notify(sk, VMCS_VSOCK_CB_WRITE_SPACE);
}

static void vmcs_vsock_state_change(struct sock *sk)
{
	vmcs_vsock_notify(sk, VMCS_VSOCK_CB_STATE_CHANGE);
}

int vmcs_vsock_set_callbacks(struct socket *sock, void (*event)(void *ctx), void *ctx)
{
	struct sock *sk = sock->sk;
	struct vmcs_vsock_cb *cb = kzalloc(sizeof(*cb), GFP_KERNEL);

	if (!cb)
		return -ENOMEM;
	cb->event = event;
	cb->ctx = ctx;
	write_lock_bh(&sk->sk_callback_lock);
	cb->orig[VMCS_VSOCK_CB_DATA_READY] = sk->sk_data_ready;
	cb->orig[VMCS_VSOCK_CB_WRITE_SPACE] = sk->sk_write_space;
	cb->orig[VMCS_VSOCK_CB_STATE_CHANGE] = sk->sk_state_change;
	sk->sk_user_data = cb;
	sk->sk_data_ready = vmcs_vsock_data_ready;
	sk->sk_write_space = vmcs_vsock_write_space;
	sk->sk_state_change = vmcs_vsock_state_change;
	write_unlock_bh(&sk->sk_callback_lock);
	return 0;
}

/* Puts the replaced callbacks back; once it returns, no callback of ours runs or will run. */
void vmcs_vsock_clear_callbacks(struct socket *sock)
{
	struct sock *sk = sock->sk;
	struct vmcs_vsock_cb *cb;

	write_lock_bh(&sk->sk_callback_lock);
	cb = sk->sk_user_data;
	if (cb) {
		sk->sk_data_ready = cb->orig[VMCS_VSOCK_CB_DATA_READY];
		sk->sk_write_space = cb->orig[VMCS_VSOCK_CB_WRITE_SPACE];
		sk->sk_state_change = cb->orig[VMCS_VSOCK_CB_STATE_CHANGE];
		sk->sk_user_data = NULL;
	}
	write_unlock_bh(&sk->sk_callback_lock);
	kfree(cb);
}
