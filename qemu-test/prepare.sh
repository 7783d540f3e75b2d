#!/usr/bin/env bash
# Build (or reuse) the guest kernel, vmcs.ko and the initramfs; print shell assignments of
# VMCS_KDIR, VMCS_KERNEL and VMCS_INITRD for `eval`.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
kdir=$("$VMCS_TOP/ci/build-kernel.sh")
module=$(KDIR=$kdir "$VMCS_TOP/ci/build-module.sh")
mkdir -p "$VMCS_TOP/build"
initrd="$VMCS_TOP/build/initramfs.cpio.gz"
"$VMCS_TOP/qemu-test/mkinitramfs.sh" "$kdir" "$module" "$initrd"
printf 'export VMCS_KDIR=%q VMCS_KERNEL=%q VMCS_INITRD=%q\n' "$kdir" "$kdir/arch/x86/boot/bzImage" "$initrd"
