# Benchmark, scaling phase (make bench, ci/bench.sh): N guests (even) as N/2 pairs
# (2k serves, 2k+1 measures, on ports 5200+10k). First pair 0 measures alone while the
# other pairs wait ("alone"), then every pair measures at the same time ("all"); the
# pairs meet at barriers that guest 0 keeps on the test-control links (TCP ports 5900,
# 5901). Each measurement prints `# BENCH phase=... pair=... guests=N ...`. The test points
# assert only correctness, never timings.
#
# Settings (kernel command line, run.sh --append):
#   vmcstest.bench_sizes=64,65536      message sizes
#   vmcstest.bench_paths=stream        vmcs paths (dev, stream, seqpacket, bulk)
#   vmcstest.bench_secs=S              seconds of ping-pong and of streaming per measurement
. /scenarios/lib.sh
setting() { sed -n "s/.*vmcstest\.$1=\([^ ]*\).*/\1/p" /proc/cmdline | tr , ' '; }
SIZES=$(setting bench_sizes)
SIZES=${SIZES:-64 65536}
PATHS=$(setting bench_paths)
PATHS=${PATHS:-stream}
SECS=$(setting bench_secs)
SECS=${SECS:-1}
NMEAS=$(($(echo $SIZES | wc -w) * $(echo $PATHS | wc -w)))
PAIR=$((VMCS_GUEST / 2))
NPAIRS=$((VMCS_NGUESTS / 2))
BASE=$((5200 + 10 * PAIR))

if [ $((VMCS_NGUESTS % 2)) != 0 ] || [ "$VMCS_NGUESTS" -lt 2 ]; then
	plan 1
	not_ok "the bench-scale scenario needs an even number of guests"
	exit 1
fi

# measure PHASE: every size and path once, against this pair's server.
measure() {
	for size in $SIZES; do
		for p in $PATHS; do
			what="$1, pair $PAIR, $p, $size B: measured, every echo and byte count matched"
			if out=$(vmcs-bench client "$p" auto $BASE "$size" "$SECS" "$SECS" 2>&1) &&
				echo "$out" | grep -q "^BENCH path=$p size=$size "; then
				ok "$what"
			else
				not_ok "$what"
			fi
			echo "$out" | sed -e "s/^BENCH /BENCH phase=$1 pair=$PAIR guests=$VMCS_NGUESTS /" \
				-e "s/^CDF /CDF phase=$1 pair=$PAIR guests=$VMCS_NGUESTS /" -e 's/^/# /' >&3
		done
	done
}

if [ $((VMCS_GUEST % 2)) = 0 ]; then
	if [ "$VMCS_GUEST" = 0 ]; then plan 4; else plan 3; fi
	check "insmod vmcs.ko" load_vmcs
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	if [ "$VMCS_GUEST" = 0 ]; then
		(vmcs-bench barrier-serve 5900 "$NPAIRS" && vmcs-bench barrier-serve 5901 "$NPAIRS") \
			>/tmp/barrier.log 2>&1 &
		barriers=$!
	fi
	vmcs-bench serve $BASE >/tmp/serve.log 2>&1 &
	srv=$!
	check_done "pair $PAIR: bench server told to quit" "$srv" 1200
	sed 's/^/# /' /tmp/serve.log >&3
	[ "$VMCS_GUEST" != 0 ] || check_done "both barriers released every pair" "$barriers" 60
else
	n=$((2 + 2 + NMEAS + 1))
	[ "$PAIR" != 0 ] || n=$((n + NMEAS))
	plan $n
	check "insmod vmcs.ko" load_vmcs
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	check "barrier 1 (every pair up)" vmcs-bench barrier 169.254.$VMCS_GUEST.1 5900
	[ "$PAIR" != 0 ] || measure alone
	check "barrier 2 (pair 0 done alone)" vmcs-bench barrier 169.254.$VMCS_GUEST.1 5901
	measure all
	check "pair $PAIR: bench server quits" vmcs-bench quit auto $BASE
fi
