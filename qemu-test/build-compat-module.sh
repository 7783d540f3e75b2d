#!/usr/bin/env bash
# Build (or reuse) vmcs.ko of protocol version 1, for the mixed-version test (the versions
# scenario, docs/protocol.md "Versions"): an older module and this one in the same region
# must refuse each other cleanly, each in its own booted guest.
#
#   build-compat-module.sh KDIR     prints the path of vmcs-proto1.ko built against KDIR
#
# The sources are qemu-test/compat/vmcs-proto1.tar.xz: Kbuild, module/ and rust/src/ of
# commit cf1e445 (the last main before protocol v2), made with
#   git archive --format=tar cf1e445 Kbuild module rust/src | xz -9e
# and kept in the tree, so a shallow checkout builds it too. It is cached under
# $VMCS_CACHE/compat/, keyed by the kernel tree and the archive, under a flock.
set -euo pipefail
. "$(dirname "$0")/../ci/lib.sh"
vmcs_toolchain_env
kdir=${1:?usage: $0 KDIR}
tarball="$VMCS_TOP/qemu-test/compat/vmcs-proto1.tar.xz"
sum=$(sha256sum "$tarball" | cut -c1-12)
out="$VMCS_CACHE/compat/proto1-$sum-$(basename "$(readlink -f "$kdir")")"
ko="$out/vmcs-proto1.ko"
mkdir -p "$VMCS_CACHE/compat"
exec 8>"$out.lock"
flock 8
if [ ! -f "$out/.vmcs-built" ]; then
	log "protocol-1 vmcs.ko: building it against $kdir in $out"
	rm -rf "$out"
	mkdir -p "$out"
	tar -xJf "$tarball" -C "$out"
	vmcs_kbuild_args "$kdir"
	make -C "$kdir" M="$out" "${kargs[@]}" modules >"$out/build.log" 2>&1 ||
		die "the protocol-1 module did not build (see $out/build.log)"
	# Debug info is of no use in the guest; it only makes the initramfs larger.
	objcopy --strip-debug "$out/vmcs.ko" "$ko"
	touch "$out/.vmcs-built"
fi
echo "$ko"
