#!/usr/bin/env bash
# Build (or reuse) the guest kernel, vmcs.ko and the initramfs; print shell assignments of
# VMCS_KDIR, VMCS_KERNEL and VMCS_INITRD for `eval`.
#
#   prepare.sh           the test kernel (debug checks), vmcs.ko in the tree, build/initramfs.cpio.gz
#   prepare.sh --bench   the bench kernel (ci/build-kernel.sh --bench), vmcs.ko built into
#                        build/bench-module/, build/bench-initramfs.cpio.gz
#   prepare.sh --sanitize  the sanitizer kernel (ci/build-kernel.sh --sanitize: KASAN, KFENCE,
#                        kmemleak, UBSAN), vmcs.ko built into build/sanitize-module/,
#                        build/sanitize-initramfs.cpio.gz
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
mkdir -p "$VMCS_TOP/build"
case "${1:-}" in
"")
	kdir=$("$VMCS_TOP/ci/build-kernel.sh")
	module=$(KDIR=$kdir "$VMCS_TOP/ci/build-module.sh")
	initrd="$VMCS_TOP/build/initramfs.cpio.gz"
	;;
--bench)
	kdir=$("$VMCS_TOP/ci/build-kernel.sh" --bench)
	module=$(KDIR=$kdir MODULE_OUT="$VMCS_TOP/build/bench-module" "$VMCS_TOP/ci/build-module.sh")
	initrd="$VMCS_TOP/build/bench-initramfs.cpio.gz"
	;;
--sanitize)
	kdir=$("$VMCS_TOP/ci/build-kernel.sh" --sanitize)
	module=$(KDIR=$kdir MODULE_OUT="$VMCS_TOP/build/sanitize-module" "$VMCS_TOP/ci/build-module.sh")
	initrd="$VMCS_TOP/build/sanitize-initramfs.cpio.gz"
	;;
*) die "usage: $0 [--bench|--sanitize]" ;;
esac
"$VMCS_TOP/qemu-test/mkinitramfs.sh" "$kdir" "$module" "$initrd"
printf 'export VMCS_KDIR=%q VMCS_KERNEL=%q VMCS_INITRD=%q\n' "$kdir" "$kdir/arch/x86/boot/bzImage" "$initrd"
