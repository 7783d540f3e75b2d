#!/usr/bin/env bash
# Build (or reuse) the guest kernel, vmcs.ko and the initramfs; print shell assignments of
# VMCS_KDIR, VMCS_KERNEL and VMCS_INITRD for `eval`.
#
#   prepare.sh           the test kernel (debug checks), vmcs.ko in the tree, the protocol-1
#                        module (build-compat-module.sh) as /lib/modules/vmcs-proto1.ko,
#                        build/initramfs.cpio.gz
#   prepare.sh --bench   the bench kernel (ci/build-kernel.sh --bench), vmcs.ko built into
#                        build/bench-module/, build/bench-initramfs.cpio.gz
#   prepare.sh --sanitize  the sanitizer kernel (ci/build-kernel.sh --sanitize: KASAN, KFENCE,
#                        kmemleak, UBSAN), vmcs.ko built into build/sanitize-module/, the
#                        self-test module (qemu-test/sanitize-selftest/) into
#                        build/sanitize-selftest/, build/sanitize-initramfs.cpio.gz
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
mkdir -p "$VMCS_TOP/build"
extra=()
case "${1:-}" in
"")
	kdir=$("$VMCS_TOP/ci/build-kernel.sh")
	module=$(KDIR=$kdir "$VMCS_TOP/ci/build-module.sh")
	initrd="$VMCS_TOP/build/initramfs.cpio.gz"
	extra=("$("$VMCS_TOP/qemu-test/build-compat-module.sh" "$kdir")")
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
	# The harness's self-test module (plants kmemleak, KASAN and UBSAN reports; the
	# sanitize-selftest scenario), built from a copy like vmcs.ko, with the kernel's compiler.
	st="$VMCS_TOP/build/sanitize-selftest"
	mkdir -p "$st"
	cp -pu "$VMCS_TOP"/qemu-test/sanitize-selftest/{Kbuild,vmcs_sanitize_selftest.c} "$st/"
	vmcs_kbuild_args "$kdir"
	make -C "$kdir" M="$st" "${kargs[@]}" modules >&2
	extra=("$st/vmcs_sanitize_selftest.ko")
	;;
*) die "usage: $0 [--bench|--sanitize]" ;;
esac
"$VMCS_TOP/qemu-test/mkinitramfs.sh" "$kdir" "$module" "$initrd" "${extra[@]}"
printf 'export VMCS_KDIR=%q VMCS_KERNEL=%q VMCS_INITRD=%q\n' "$kdir" "$kdir/arch/x86/boot/bzImage" "$initrd"
