#!/usr/bin/env bash
# Build vmcs.ko for one of Debian's stock Rust-enabled kernels (`make KDIR=debian`), in the
# chroot that ci/debian-kernel.sh prepares, with Debian's own gcc and rustc.
#
#   ci/debian-module.sh [auto|newest|running|RELEASE] [kbuild arguments, e.g. CLIPPY=1]
#
# The sources (Kbuild, module/, rust/src) are copied to build/debian/src (so the objects of
# this build never mix with those of the test kernel's in the tree) and bind-mounted into
# the chroot. Prints the path of build/debian/vmcs.ko on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

sel=${1:-${VMCS_DEBIAN_KERNEL:-auto}}
[ $# -eq 0 ] || shift
entry=$("$VMCS_TOP/ci/debian-kernel.sh" "$sel")
# shellcheck disable=SC1091
. "$entry/env"

# One build copy per kernel release (objects of one toolchain never meet another's);
# build/debian/vmcs.ko is the latest one built.
out="$VMCS_TOP/build/debian/$RELEASE"
stage="$out/src"
mkdir -p "$stage/rust"
# Drop sources that are gone from the tree: a stale a.rs next to a new a/mod.rs breaks rustc.
if [ -d "$stage/module" ]; then
	(cd "$stage" && find module rust/src -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \)) |
		while read -r f; do [ -e "$VMCS_TOP/$f" ] || rm -f "$stage/$f"; done
fi
# -u keeps the build incremental: unchanged files keep their time and are not rebuilt.
cp -a -u "$VMCS_TOP/Kbuild" "$VMCS_TOP/module" "$stage/"
cp -a -u "$VMCS_TOP/rust/src" "$stage/rust/"
log "building vmcs.ko for Debian kernel $RELEASE ($VERSION) with rustc $RUSTC and $GCC in the chroot"
vmcs_chroot "$entry/root" "$stage" /vmcs \
	make -C /kbuild M=/vmcs ARCH=x86 CROSS_COMPILE=x86_64-linux-gnu- CC="$GCC" "$@" modules >&2
cp "$stage/vmcs.ko" "$out/vmcs.ko"
vermagic=$(modinfo -F vermagic "$out/vmcs.ko")
[ "${vermagic%% *}" = "$RELEASE" ] || die "vmcs.ko's vermagic '$vermagic' is not for $RELEASE"
cp "$out/vmcs.ko" "$VMCS_TOP/build/debian/vmcs.ko"
log "vmcs.ko for Debian kernel $RELEASE: $out/vmcs.ko, also build/debian/vmcs.ko (vermagic $vermagic)"
echo "$out/vmcs.ko"
