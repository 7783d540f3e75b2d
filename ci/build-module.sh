#!/usr/bin/env bash
# Build vmcs.ko. Against $KDIR when given (any Rust-enabled kernel build tree, e.g. a distro
# kernel's prepared headers, or `debian` for Debian's stock kernel), else against the cached
# test guest kernel, built if missing.
# Extra arguments go to kbuild (e.g. CLIPPY=1). Prints the path of vmcs.ko on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
vmcs_toolchain_env

kdir=${KDIR:-}
# KDIR=debian: Debian's stock Rust-enabled kernel ($VMCS_DEBIAN_KERNEL: auto, newest, running
# or a release), built in a cached chroot with Debian's toolchain (ci/debian-module.sh).
if [ "$kdir" = debian ]; then
	exec "$VMCS_TOP/ci/debian-module.sh" "${VMCS_DEBIAN_KERNEL:-auto}" "$@"
fi
if [ -z "$kdir" ]; then
	kdir=$("$VMCS_TOP/ci/build-kernel.sh")
fi
[ -f "$kdir/Makefile" ] || die "KDIR=$kdir is not a kernel build tree"
grep -q '^CONFIG_RUST=y' "$kdir/.config" 2>/dev/null || die "KDIR=$kdir has no CONFIG_RUST=y"
# The Rust symbols the module links to carry the compiler's hash: only the exact rustc works.
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"/\1/p' "$kdir/.config")
have=$(${RUSTC:-rustc} --version 2>/dev/null || true)
[ -z "$want" ] || [ "$want" = "$have" ] ||
	die "rustc mismatch: KDIR=$kdir was built with '$want', this rustc is '${have:-missing}'. Install that exact rustc and rust-src (e.g. rustup toolchain install <version> --component rust-src, then RUSTC=<its rustc>), or, for Debian's stock kernel, use make KDIR=debian"

# A kernel built with gcc (LLVM unset) needs the module built the same way.
make -C "$kdir" M="$VMCS_TOP" "$@" modules >&2
echo "$VMCS_TOP/vmcs.ko"
