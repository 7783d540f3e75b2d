#!/usr/bin/env bash
# The guests of `run.sh --kernel debian`: Debian's stock vmlinuz (ci/debian-kernel.sh), the
# vmcs.ko built for it in the chroot (ci/debian-module.sh) and the test initramfs with that
# vmcs.ko. Prints shell assignments of VMCS_KERNEL, VMCS_INITRD and VMCS_DEBIAN_RELEASE for
# `eval`. The kernel is chosen as in ci/debian-kernel.sh ($VMCS_DEBIAN_KERNEL, default newest
# here: the host's own kernel is not what the guests boot).
#
# vmcs.ko needs nothing that Debian builds as a module (PCI, MSI/MSI-X, devtmpfs, the 8250
# serial console are built in; `modinfo -F depends vmcs.ko` is empty), so the initramfs
# carries no .ko from linux-modules. The test-control virtio-net links of run.sh stay
# unconfigured (virtio_net is a module there); the distro scenario does not use them.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
sel=${VMCS_DEBIAN_KERNEL:-newest}
entry=$("$VMCS_TOP/ci/debian-kernel.sh" "$sel")
module=$("$VMCS_TOP/ci/debian-module.sh" "$sel")
# shellcheck disable=SC1091
. "$entry/env"
initrd="$(dirname "$module")/initramfs.cpio.gz"
VMCS_GEN_INIT_CPIO="$entry/boot/gen_init_cpio" "$VMCS_TOP/qemu-test/mkinitramfs.sh" "" "$module" "$initrd"
printf 'export VMCS_KERNEL=%q VMCS_INITRD=%q VMCS_DEBIAN_RELEASE=%q\n' "$entry/boot/vmlinuz" "$initrd" "$RELEASE"
