#!/usr/bin/env bash
# `make bench`: every path measured between the same guests in one run, on the bench kernel
# (production configuration, ci/build-kernel.sh --bench), with the report in
# build/bench/<stamp>/ (report.md, bench.json, PNG plots; ci/bench-report.py).
#
#   1. set-up: ci/setup-deps.sh, then ci/bench-setup.sh (gnuplot, vhost-device-vsock)
#   2. the host protocol bench (rust/bench/run.sh)
#   3. the bench scenario (qemu-test/scenarios/bench.sh) for each variant: two guests with
#      ivshmem and a vhost-user vsock device; AF_VMCS stream and seqpacket, /dev/vmcs, the
#      bulk area, TCP over virtio-net, AF_VSOCK and the in-guest memcpy, interleaved per size
#   3b. the vsock-transport pass (the bench scenario with vmcstest.bench_transport=vsock): the
#      same two guests with no ivshmem device (run.sh --devices 0 --vsock), vmcs.ko vsock=1,
#      so that AF_VMCS rides the vsock transport; AF_VMCS stream and seqpacket and raw AF_VSOCK,
#      interleaved per size, for the report's "vmcs over vsock / raw AF_VSOCK" table (#15)
#   4. the scaling phase (qemu-test/scenarios/bench-scale.sh): 4 and 8 guests as pairs,
#      ivshmem-doorbell, AF_VMCS stream
#   5. the report
#
# About 12 minutes on this 2-core machine under load; BENCH_QUICK=1: 1-2 (doorbell only, four
# sizes, one round, 4 guests for scaling, no host protocol bench).
#
#   BENCH_VARIANTS="doorbell plain"   variants of the two-guest phase
#   BENCH_SIZES=64,1024,...           message sizes
#   BENCH_ROUNDS=2  BENCH_SECS=1      rounds; seconds of ping-pong and of streaming each
#   BENCH_SCALE="4 8"                 guest counts of the scaling phase ("" skips it)
#   BENCH_VMCS=max_peers=4            vmcs.ko parameters of the two-guest phase (comma-separated)
#   BENCH_SKIP_PROTO=1                skip the host protocol bench
#   BENCH_PATHS=tcp,vmcs0             the paths measured (default: all; vmcs0 is TCP over the
#                                     vmcs0 net device, docs/netdev.md)
#   BENCH_VSOCK_PATHS=stream,vsock    the paths of the vsock-transport pass (default
#                                     stream,seqpacket,vsock; "" skips the pass)
#
# The guests run under TCG (no KVM) on a shared machine: absolute figures are emulation
# speed; compare paths within one run (that is why they are interleaved). Exit status
# non-zero if a scenario failed (its tables may then miss rows).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	variants=${BENCH_VARIANTS:-doorbell}
	sizes=${BENCH_SIZES:-64,4096,65536,1048576}
	rounds=${BENCH_ROUNDS:-1}
	secs=${BENCH_SECS:-0.5}
	scale=${BENCH_SCALE-4}
	scale_secs=1
	skip_proto=${BENCH_SKIP_PROTO:-1}
else
	variants=${BENCH_VARIANTS:-doorbell plain}
	sizes=${BENCH_SIZES:-64,1024,4096,16384,65536,262144,1048576}
	rounds=${BENCH_ROUNDS:-2}
	secs=${BENCH_SECS:-1}
	scale=${BENCH_SCALE-4 8}
	scale_secs=2
	skip_proto=${BENCH_SKIP_PROTO:-0}
fi
paths=${BENCH_PATHS:-dev,stream,stream-bp,stream-enc,seqpacket,bulk,tcp,vmcs0,vsock,memcpy}
vsock_paths=${BENCH_VSOCK_PATHS-stream,seqpacket,vsock}
fail=0
t0=$(date +%s)

ci/setup-deps.sh
ci/bench-setup.sh
vmcs_toolchain_env

stamp=$(date +%Y%m%d-%H%M%S)
out="$VMCS_TOP/build/bench/$stamp"
mkdir -p "$out"

if [ "$skip_proto" != 1 ]; then
	log "host protocol bench (rust/bench/run.sh; log in $out/proto.log)"
	# Its own BENCH_SECS/BENCH_REPS defaults, not the guest bench's.
	env -u BENCH_SECS -u BENCH_REPS rust/bench/run.sh >"$out/proto.log" 2>&1 || fail=1
fi

eval "$(qemu-test/prepare.sh --bench)"
{
	echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +changes)"
	echo "kernel=$(basename "$VMCS_KDIR")"
	echo "clock=$(qemu-test/guest-clock.sh)"
	echo "host=$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
	echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "settings=${BENCH_VMCS:+vmcs.ko $BENCH_VMCS; }sizes $sizes; $rounds round(s) of ${secs} s ping-pong + ${secs} s stream per path and size; vsock-transport pass ${vsock_paths:-skipped}; scaling ${scale:-none} guests, ${scale_secs} s"
} >"$out/meta.env"

bench_args="vmcstest.bench_sizes=$sizes vmcstest.bench_paths=$paths vmcstest.bench_rounds=$rounds vmcstest.bench_secs=$secs${BENCH_VMCS:+ vmcstest.bench_vmcs=$BENCH_VMCS}"
for v in $variants; do
	log "two guests, ivshmem-$v, every path (TAP in $out/$v.tap)"
	# The region: 64 MiB (BENCH_SHM_SIZE), so that the bulk path moves multi-MiB extents
	# (docs/protocol.md §8.1: 2 MiB per peer with 16 slots).
	if ! qemu-test/run.sh --scenario bench --variant "$v" --guests 2 --vsock --clock fine --timeout 2400 \
		--shm-size "${BENCH_SHM_SIZE:-64M}" \
		--results "$out/$v" --append "$bench_args" >"$out/$v.tap"; then
		fail=1
		log "bench scenario failed for $v:"
		grep -E '^not ok' "$out/$v.tap" >&2 || true
	fi
done
if [ -n "$vsock_paths" ]; then
	log "two guests, no ivshmem, vmcs.ko vsock=1: AF_VMCS over vsock against raw AF_VSOCK (TAP in $out/vsock.tap)"
	vsock_args="vmcstest.bench_transport=vsock vmcstest.bench_sizes=$sizes vmcstest.bench_paths=$vsock_paths vmcstest.bench_rounds=$rounds vmcstest.bench_secs=$secs vmcstest.bench_vmcs=${BENCH_VMCS:+$BENCH_VMCS,}vsock=1"
	if ! qemu-test/run.sh --scenario bench --variant plain --guests 2 --devices 0 --vsock --clock fine --timeout 2400 \
		--results "$out/vsock" --append "$vsock_args" >"$out/vsock.tap"; then
		fail=1
		log "bench scenario failed for the vsock transport:"
		grep -E '^not ok' "$out/vsock.tap" >&2 || true
	fi
fi
for n in $scale; do
	log "scaling: $n guests, ivshmem-doorbell (TAP in $out/scale-$n.tap)"
	if ! qemu-test/run.sh --scenario bench-scale --variant doorbell --guests "$n" --clock fine --timeout 900 \
		--results "$out/scale-$n" --append "vmcstest.bench_secs=$scale_secs" >"$out/scale-$n.tap"; then
		fail=1
		log "bench-scale scenario failed for $n guests:"
		grep -E '^not ok' "$out/scale-$n.tap" >&2 || true
	fi
done
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/meta.env"
echo "run_s=$(($(date +%s) - t0))" >>"$out/meta.env"

python3 ci/bench-report.py "$out"
if [ -f "$out/proto.log" ]; then
	echo
	echo "Host protocol bench (rust/bench/run.sh):"
	sed -n '/^ring_size=/,$p' "$out/proto.log"
fi
echo
echo "Note: TCG guests (no KVM) on a shared host: absolute figures are emulation speed and"
echo "vary between runs; compare paths within one run. Run time $(($(date +%s) - t0)) s."
echo "Results: $out (report.md, bench.json, *.png)"
exit "$fail"
