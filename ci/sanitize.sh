#!/usr/bin/env bash
# The QEMU scenarios on the sanitizer kernel (qemu-test/kernel-sanitize.config: KASAN,
# KFENCE, kmemleak, UBSAN, lockdep, DEBUG_LIST, debug objects, Rust debug assertions).
#
#   ci/sanitize.sh            every scenario of `make test` but demo and distro (`make sanitize`;
#                             `make stress` runs it too)
#   ci/sanitize.sh --quick    the subset `make test` runs (SANITIZE_QUICK below)
#   ci/sanitize.sh NAME...    only these entries of the table below (e.g. "sockets doorbell 2")
#
# First, a self-test of the harness: real kmemleak, KASAN and UBSAN reports, planted by a test module
# (not vmcs), must each fail a run. Then each scenario runs with
# `qemu-test/run.sh --kernel sanitize`: after the scenario every guest
# unloads vmcs and kmemleak scans twice (qemu-test/init); a guest that could not unload, a
# kmemleak report, or any KASAN/KFENCE/UBSAN/lockdep/WARNING/BUG line in a serial log fails
# it. Prints TAP lines (`ok - ...`, `not ok - ...`) and `# ...` timings; exits non-zero on any
# failure. The first run builds the sanitizer kernel (cached, ~N min: docs/testing.md).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP" || exit 1
vmcs_toolchain_env

# Every entry: "NAME" as in `make test`'s step names. Timeouts are about twice make test's:
# the sanitizer kernel's guests run 2-3x slower under TCG.
SANITIZE_ALL=("basic plain 2" "basic doorbell 2" "transport plain 2" "transport doorbell 3"
	"transport-crash doorbell 2" "hostile plain 2" "crash plain 2" "crash doorbell 2"
	"messaging plain 2" "messaging doorbell 3" "sockets plain 2" "sockets doorbell 2"
	"cli doorbell 2")
# make test (--quick): one scenario that drives the data path, sockets and /dev/vmcs, both
# ways between two guests, under KASAN, kmemleak and UBSAN, with rmmod and a kmemleak scan
# after it, the interrupt paths too (doorbell); with 200 connections at once instead of 1,000
# and 50 fast-closed ones instead of 200 (SANITIZE_QUICK_APPEND: the same code paths, the
# test kernel's sockets plain 2 keeps the full counts). The rest (the self-test of planted
# reports, hostile, crash, the full counts, ...) in make sanitize and make stress, so that a
# warm make test stays under 12 minutes.
SANITIZE_QUICK=("sockets doorbell 2")
SANITIZE_QUICK_APPEND="vmcstest.scale_conns=200 vmcstest.fast_conns=50"

# run_entry "SCENARIO VARIANT GUESTS": run.sh on the sanitizer kernel with that entry's options.
run_entry() {
	local scenario variant guests extra=()
	read -r scenario variant guests <<<"$1"
	case "$scenario" in
	basic | transport-crash | messaging) extra=(--timeout 420) ;;
	# 1000 connections under KASAN: ~240 s on a quiet machine, ~600 s beside another lane at load 6.
	sockets) extra=(--timeout 900) ;;
	# 4 MiB regions, as in make test: the self-test fills their 64 KiB rings.
	transport) extra=(--timeout 420 --shm-size 4M) ;;
	crash) extra=(--timeout 600 --crash-guest 1 --crash-on CRASH-POINT --restart) ;;
	cli) extra=(--timeout 900) ;;
	hostile)
		local evil
		evil=$(qemu-test/build-host-tools.sh vmcs-evil) || return 1
		# shellcheck disable=SC2016 # $VMCS_SHM is for the hook's shell
		# 4 MiB regions, as in make test: the bulk phase's extents come from a 16-page slice.
		extra=(--devices 2 --timeout 600 --shm-size 4M --host-hook "$evil --shm \$VMCS_SHM --port 7000" --hook-on EVIL-GO)
		;;
	*) echo "not ok - sanitize: unknown entry '$1'"; return 1 ;;
	esac
	[ -z "${quick_append:-}" ] || extra+=(--append "$quick_append")
	qemu-test/run.sh --kernel sanitize --scenario "$scenario" --variant "$variant" --guests "$guests" "${extra[@]}"
}

# The harness's own check: on one guest, the self-test module plants a leak, a KASAN and a
# UBSAN report (qemu-test/scenarios/sanitize-selftest.sh); run.sh must fail on each.
selftest() {
	local out log=$VMCS_TOP/build/sanitize-selftest.log rc=0
	# KFENCE off in this guest: were the planted out-of-bounds read's block a KFENCE sample,
	# KFENCE (not KASAN) would see it.
	out=$(qemu-test/run.sh --kernel sanitize --scenario sanitize-selftest --variant plain --guests 1 \
		--append kfence.sample_interval=0 2>&1) || rc=$?
	printf '%s\n' "$out" >"$log"
	expect() { # expect DESCRIPTION ERE: one point, ERE found in run.sh's report
		if grep -qE -- "$2" <<<"$out"; then echo "ok - sanitize self-test: $1"; else
			echo "not ok - sanitize self-test: $1 (see $log)"; return 1; fi
	}
	local bad=0
	expect "the self-test module loaded and unloaded" '^ok - .*rmmod the self-test module' || bad=1
	expect "the planted leak failed the kmemleak point" \
		'^not ok - .*kmemleak scan after rmmod: no unreferenced object \([1-9]' || bad=1
	expect "a planted KASAN report fails the serial-log point" '^# [0-9]+:.*BUG: KASAN: slab-out-of-bounds' || bad=1
	expect "a planted UBSAN report fails the serial-log point" '^# [0-9]+:.*UBSAN: shift-out-of-bounds' || bad=1
	expect "the serial-log point failed" '^not ok - .*guest0: serial log clean' || bad=1
	if [ "$rc" != 0 ]; then echo "ok - sanitize self-test: run.sh exits non-zero"; else
		echo "not ok - sanitize self-test: run.sh exits non-zero (it exited 0)"; bad=1; fi
	[ "$bad" = 0 ]
}

entries=()
case "${1:-}" in
"") entries=("${SANITIZE_ALL[@]}") ;;
--quick) entries=("${SANITIZE_QUICK[@]}"); quick_append=$SANITIZE_QUICK_APPEND ;;
*) entries=("$@") ;;
esac

t0=$(date +%s)
if ! env_out=$(qemu-test/prepare.sh --sanitize); then
	echo "not ok - sanitize: sanitizer kernel, vmcs.ko and initramfs build (qemu-test/prepare.sh --sanitize)"
	exit 1
fi
eval "$env_out"
echo "ok - sanitize: sanitizer kernel, vmcs.ko and initramfs build ($(($(date +%s) - t0)) s)"
fail=0
s=$(date +%s)
if [ "${1:-}" != --quick ]; then
	selftest || fail=1
	echo "# sanitize: self-test: $(($(date +%s) - s)) s"
fi
for e in "${entries[@]}"; do
	s=$(date +%s)
	if run_entry "$e"; then rc=0; else rc=1; fail=1; fi
	echo "# sanitize: $e: $(($(date +%s) - s)) s, exit $rc"
done
echo "# sanitize: ${#entries[@]} scenario(s) in $(($(date +%s) - t0)) s"
[ "$fail" = 0 ]
