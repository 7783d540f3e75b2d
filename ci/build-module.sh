#!/usr/bin/env bash
# Build vmcs.ko. Against $KDIR when given (any Rust-enabled kernel build tree, e.g. a distro
# kernel's prepared headers), else against the cached test guest kernel, built if missing.
# Extra arguments go to kbuild (e.g. CLIPPY=1). Prints the path of vmcs.ko on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
vmcs_toolchain_env

kdir=${KDIR:-}
if [ -z "$kdir" ]; then
	kdir=$("$VMCS_TOP/ci/build-kernel.sh")
fi
[ -f "$kdir/Makefile" ] || die "KDIR=$kdir is not a kernel build tree"
grep -q '^CONFIG_RUST=y' "$kdir/.config" 2>/dev/null || die "KDIR=$kdir has no CONFIG_RUST=y"

# kbuild cannot build an external module whose path has a space, ':' or '%' (M= is a list
# of make words; it also resolves symlinks, so a link does not help). From such a checkout,
# build a copy of the module's sources (Kbuild, module/, rust/src/: what DKMS gets) in a
# private folder and bring vmcs.ko back.
mdir=$VMCS_TOP
if ! kbuild_safe_path "$VMCS_TOP"; then
	mdir=$(mktemp -d /tmp/vmcs-module.XXXXXX)
	trap 'rm -rf "$mdir"' EXIT
	mkdir -p "$mdir/rust"
	cp -r "$VMCS_TOP/Kbuild" "$VMCS_TOP/module" "$mdir/"
	cp -r "$VMCS_TOP/rust/src" "$mdir/rust/"
	find "$mdir" \( -name '*.o' -o -name '.*.cmd' -o -name '.*.d' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \) -delete
	log "building vmcs.ko from a copy of its sources in $mdir (kbuild cannot build in '$VMCS_TOP')"
fi

# A kernel built with gcc (LLVM unset) needs the module built the same way.
make -C "$kdir" M="$mdir" "$@" modules >&2
[ "$mdir" = "$VMCS_TOP" ] || cp "$mdir/vmcs.ko" "$VMCS_TOP/vmcs.ko"
echo "$VMCS_TOP/vmcs.ko"
