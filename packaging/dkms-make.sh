#!/bin/sh
# DKMS build step for vmcs (dkms.conf: PRE_BUILD runs `prepare`, MAKE runs `build`), in the
# DKMS build directory (a copy of the vmcs source, with ci/ and packaging/).
#
#   dkms-make.sh prepare|build|clean KERNELVER KERNEL_SOURCE_DIR
#
# A kernel tree with Rust metadata (rust/libkernel.rmeta, scripts/target.json) is built
# against directly. Debian's stock headers have none: for a Debian kernel with CONFIG_RUST=y,
# `prepare` makes a Rust-complete tree with Debian's own toolchain in a cached chroot
# (ci/debian-kernel.sh; the first time it downloads about 600 MB and takes a few minutes)
# and `build` builds vmcs.ko in it (ci/debian-module.sh). Anything else fails with a
# message that names what is missing and how to get it.
set -eu
mode=$1 kver=$2 ksrc=$3
here=$(pwd)
die() { echo "vmcs dkms: error: $*" >&2; exit 1; }

missing=""
for f in rust/libkernel.rmeta rust/libcore.rmeta rust/libmacros.so scripts/target.json; do
	[ -e "$ksrc/$f" ] || missing="$missing $f"
done
case "$mode" in
clean)
	rm -rf "$here/build/debian"
	[ -n "$missing" ] || exec make -C "$ksrc" M="$here" clean
	exit 0
	;;
esac
if [ -z "$missing" ]; then
	want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"/\1/p' "$ksrc/.config" 2>/dev/null || true)
	have=$(${RUSTC:-rustc} --version 2>/dev/null || true)
	[ -z "$want" ] || [ "$want" = "$have" ] ||
		die "rustc mismatch: kernel $kver was built with '$want', this rustc is '${have:-missing}': install that exact rustc and rust-src (and put it first in PATH, or set RUSTC), then build again"
	[ "$mode" = build ] || exit 0
	exec make -C "$ksrc" M="$here" modules
fi

[ -f "$ksrc/.config" ] || die "no kernel headers for $kver at $ksrc (no .config): install them (Debian: apt install linux-headers-$kver)"
grep -qx 'CONFIG_RUST=y' "$ksrc/.config" ||
	die "kernel $kver has no CONFIG_RUST=y ($ksrc/.config): vmcs is a Rust module and cannot be built for it; boot a Rust-enabled kernel (Debian's 7.2 amd64 kernels are)"
rustc=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"/\1/p' "$ksrc/.config")
case "$kver" in
*+deb*-*)
	case "$mode" in
	prepare)
		echo "vmcs dkms: the headers of $kver lack Rust metadata (missing:$missing); preparing a Rust-complete tree with Debian's toolchain ($rustc) in a cached chroot"
		"$here/ci/debian-kernel.sh" "$kver" >/dev/null
		;;
	build)
		ko=$("$here/ci/debian-module.sh" "$kver")
		cp "$ko" "$here/vmcs.ko"
		;;
	esac
	;;
*)
	die "the kernel tree of $kver at $ksrc has no Rust metadata (missing:$missing). Prepare it: in the kernel's full build tree (the source of this exact kernel with its .config), with the rustc it was built with ($rustc), rust-src and bindgen, run make modules_prepare and make rust/, copy in its Module.symvers, then: dkms build vmcs/<version> -k $kver --kernelsourcedir <that tree>. On Debian, make KDIR=debian in a vmcs checkout does all this"
	;;
esac
