// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs C glue: the few pieces the Rust `kernel` crate has no abstraction for.
 *
 * This file holds tables and one-line forwarders only; all logic lives in
 * Rust (module/chardev.rs). It exists because:
 *  - the file_operations of /dev/vmcs need `.owner = THIS_MODULE` so that an
 *    open file pins the module (kernel::miscdevice leaves owner unset, which
 *    would let rmmod unload code that open files still point at), and
 *  - kernel::miscdevice has no poll hook.
 */
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
	.llseek = default_llseek,
};

/* The file_operations table of /dev/vmcs, for the Rust misc registration. */
const struct file_operations *vmcs_glue_fops(void)
{
	return &vmcs_fops;
}
