#!/usr/bin/env bash
# Build vmcs.ko. Against $KDIR when given (any Rust-enabled kernel build tree, e.g. a distro
# kernel's prepared headers, or `debian` for Debian's stock kernel), else against the cached
# test guest kernel, built if missing.
# Extra arguments go to kbuild (e.g. CLIPPY=1). Prints the path of vmcs.ko on stdout.
# With MODULE_OUT=DIR the module is built from a copy of its sources in DIR, and vmcs.ko is
# DIR/vmcs.ko, so that a build against another kernel (the bench kernel) leaves the usual one
# alone. (Kbuild writes objects next to the sources; its MO= output directory refuses a
# source tree that holds objects of another build, as a developer's checkout does.)
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

# The module is built with the kernel's own C compiler: gcc for the test and bench kernels,
# clang for the sanitizer kernel (LLVM=-N, recorded by ci/build-kernel.sh in .vmcs-make-args).
vmcs_kbuild_args "$kdir"
if [ -n "${MODULE_OUT:-}" ]; then
	mkdir -p "$MODULE_OUT"
	# A mirror of the sources (Kbuild, module/, the protocol files of rust/src): sources gone
	# from the tree go from the copy too (a moved file would otherwise be found twice);
	# unchanged files keep their times, so kbuild rebuilds only what changed.
	# (An empty copy, at the first build, has none of these folders: find fails, which is
	# no error here.)
	sources() { { find Kbuild module rust/src -type f \( -name Kbuild -o -name '*.rs' -o -name '*.c' -o -name '*.h' \) 2>/dev/null || true; } | sort; }
	(cd "$VMCS_TOP" && sources) >"$MODULE_OUT/.sources"
	(cd "$MODULE_OUT" && sources | comm -23 - .sources | xargs -r rm -f)
	(cd "$VMCS_TOP" && xargs -a "$MODULE_OUT/.sources" cp -p --parents -u -t "$MODULE_OUT/")
	make -C "$kdir" M="$MODULE_OUT" "${kargs[@]}" "$@" modules >&2
	echo "$MODULE_OUT/vmcs.ko"
else
	make -C "$kdir" M="$VMCS_TOP" "${kargs[@]}" "$@" modules >&2
	echo "$VMCS_TOP/vmcs.ko"
fi
