// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs C glue: the few pieces the Rust `kernel` crate has no abstraction for.
 *
 * This file holds tables and one-line forwarders only; all logic lives in
 * Rust (module/chardev.rs). It exists because:
 *  - the file_operations of /dev/vmcs need `.owner = THIS_MODULE` so that an
 *    open file pins the module (kernel::miscdevice leaves owner unset, which
 *    would let rmmod unload code that open files still point at), and
 *  - kernel::miscdevice has no poll hook, and
 *  - the kernel crate has no anon_inode_getfile, which VMCS_IOC_ACCEPT uses to
 *    give an accepted connection a file of its own with the same operations.
 */
#include <linux/anon_inodes.h>
#include <linux/module.h>

#include "vmcs_glue.h"

static const struct file_operations vmcs_fops = {
	.owner = THIS_MODULE,
	.open = vmcs_chr_open,
	.release = vmcs_chr_release,
	.read = vmcs_chr_read,
	.write = vmcs_chr_write,
	.unlocked_ioctl = vmcs_chr_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = vmcs_chr_poll,
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
