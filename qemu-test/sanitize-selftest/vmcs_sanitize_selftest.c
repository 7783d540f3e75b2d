// SPDX-License-Identifier: GPL-2.0
/*
 * Plants real sanitizer reports in a guest of the sanitizer kernel, so that the harness shows
 * it catches them (qemu-test/scenarios/sanitize-selftest.sh, ci/sanitize.sh): kmalloc'd
 * blocks whose only pointer is dropped (kmemleak), a read one byte past a 16-byte kmalloc
 * (KASAN slab-out-of-bounds) and a shift by more than the width of int (UBSAN
 * shift-out-of-bounds). Each is chosen by a parameter. Not part of vmcs: nothing else loads it.
 */
#include <linux/compiler.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static bool leak;
module_param(leak, bool, 0444);
MODULE_PARM_DESC(leak, "leak 8 kmalloc blocks of 128 bytes");
static bool oob;
module_param(oob, bool, 0444);
MODULE_PARM_DESC(oob, "read one byte past a 16-byte kmalloc block");
static int shift;
module_param(shift, int, 0444);
MODULE_PARM_DESC(shift, "compute 1 << shift (32 and up is undefined)");

static int __init selftest_init(void)
{
	if (leak) {
		int i;

		/*
		 * Eight blocks whose only pointer is dropped at once: kmemleak must report them
		 * (a stale copy of the last pointer on a reused stack may hide one).
		 */
		for (i = 0; i < 8; i++) {
			char *p = kmalloc(128, GFP_KERNEL);

			if (!p)
				return -ENOMEM;
			memset(p, 0x5a, 128);
			OPTIMIZER_HIDE_VAR(p);
		}
		pr_info("vmcs_sanitize_selftest: leaked 8 blocks of 128 bytes\n");
	}
	if (oob) {
		char *q = kmalloc(16, GFP_KERNEL);

		if (!q)
			return -ENOMEM;
		OPTIMIZER_HIDE_VAR(q);
		pr_info("vmcs_sanitize_selftest: read past a 16-byte block: %d\n", READ_ONCE(q[16]));
		kfree(q);
	}
	if (shift) {
		int s = shift;

		OPTIMIZER_HIDE_VAR(s);
		pr_info("vmcs_sanitize_selftest: 1 << %d = %d\n", s, 1 << s);
	}
	return 0;
}

static void __exit selftest_exit(void)
{
}

module_init(selftest_init);
module_exit(selftest_exit);
MODULE_DESCRIPTION("vmcs harness self-test: plants kmemleak, KASAN and UBSAN reports");
MODULE_LICENSE("GPL");
