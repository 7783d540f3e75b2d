/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The interface between vmcs's Rust code and its C glue (vmcs_glue.c).
 */
#ifndef VMCS_GLUE_H
#define VMCS_GLUE_H

#include <linux/fs.h>
#include <linux/poll.h>

/* Provided by the C glue. */
const struct file_operations *vmcs_glue_fops(void);
struct file *vmcs_glue_anon_file(void *private_data, int flags);

/* Provided by Rust, module/ffi.rs: the file operations of /dev/vmcs. */
int vmcs_chr_open(struct inode *inode, struct file *file);
int vmcs_chr_release(struct inode *inode, struct file *file);
ssize_t vmcs_chr_read(struct file *file, char __user *buf, size_t len, loff_t *ppos);
ssize_t vmcs_chr_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos);
long vmcs_chr_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
__poll_t vmcs_chr_poll(struct file *file, struct poll_table_struct *wait);

#endif /* VMCS_GLUE_H */
