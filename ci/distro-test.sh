#!/usr/bin/env bash
# The stock-distro-kernel test of `make test` (also runs alone): TAP lines on stdout.
#
#   1. `make KDIR=debian` for the newest Debian 7.2.x kernel: the cached chroot and prepared
#      tree (ci/debian-kernel.sh; cold: debootstrap, Debian's toolchain, linux-source,
#      modules_prepare, make rust/) and vmcs.ko built in it (ci/debian-module.sh);
#   2. two guests boot Debian's own vmlinuz with the test initramfs and that vmcs.ko and run
#      the distro scenario (qemu-test/run.sh --kernel debian --scenario distro);
#   3. dkms add/build/install against the packaged linux-headers, which lack the Rust
#      metadata: dkms.conf's PRE_BUILD and MAKE use the prepared tree (ci/dkms-test.sh).
# Logs: build/debian/*.log.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"
export VMCS_DEBIAN_KERNEL=${VMCS_DEBIAN_KERNEL:-newest}
logs="$VMCS_TOP/build/debian"
mkdir -p "$logs"
fail=0
point() { echo "$1 - distro: $2"; [ "$1" = ok ] || fail=1; }

s=$(date +%s)
if ko=$(ci/debian-module.sh "$VMCS_DEBIAN_KERNEL" 2>"$logs/build.log"); then
	grep -E 'newest Debian|Debian kernel|was built with|matches; chroot|prepared in' "$logs/build.log" |
		sed 's/^\[vmcs\] /# /'
	point ok "make KDIR=debian: chroot, prepared tree and vmcs.ko for Debian's kernel ($(($(date +%s) - s)) s)"
else
	point "not ok" "make KDIR=debian: chroot, prepared tree and vmcs.ko for Debian's kernel"
	tail -n 30 "$logs/build.log" | sed 's/^/# /'
	exit 1
fi
echo "# $ko: $(modinfo -F vermagic "$ko")"

s=$(date +%s)
qemu-test/run.sh --kernel debian --scenario distro --variant doorbell --guests 2 --timeout 300 2>"$logs/run.log"
rc=$?
echo "# guests on Debian's kernel: $(($(date +%s) - s)) s (run.sh exit status $rc)"
[ "$rc" = 0 ] || { fail=1; tail -n 5 "$logs/run.log" | sed 's/^/# /'; }

s=$(date +%s)
if KDIR=debian ci/dkms-test.sh >"$logs/dkms.log" 2>&1; then
	point ok "dkms add/build/install against Debian's packaged headers (no Rust metadata; PRE_BUILD prepares) ($(($(date +%s) - s)) s)"
else
	point "not ok" "dkms add/build/install against Debian's packaged headers"
	tail -n 20 "$logs/dkms.log" | sed 's/^/# /'
fi
exit "$fail"
