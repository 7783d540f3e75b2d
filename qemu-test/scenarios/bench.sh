# Benchmark (make bench, ci/bench.sh): every path between the same two guests, interleaved.
# Guest 0 serves every path (vmcs-bench serve: /dev/vmcs and its bulk area, AF_VMCS stream
# and seqpacket, TCP over the virtio-net link, AF_VSOCK when run.sh has --vsock); guest 1
# measures each message size over every path back to back, in ROUNDS rounds, the order of
# the paths rotated for every size and round so that load falls on all alike, and the
# in-guest memcpy in the same rotation. Each measurement prints `# BENCH ...` and `# CDF ...`
# diagnostics that ci/bench-report.py reads. The test points assert only correctness
# (every measurement completed, every echo and byte count matched), never timings.
#
# Settings (kernel command line, run.sh --append; defaults give a short smoke run):
#   vmcstest.bench_sizes=64,4096,...   message sizes in bytes
#   vmcstest.bench_paths=dev,stream,stream-bp,stream-enc,seqpacket,bulk,tcp,vmcs0,vsock,memcpy
#                                      (vmcs0: TCP over the vmcs0 net device, 10.78.0.G+1)
#
# Around every vmcs measurement guest 1 reads its debugfs `rings` counters: the doorbells it
# sent and received, those the sleep tokens saved (docs/protocol.md §5.2) and the ring bytes
# both ways; the differences go into the BENCH line (db_tx, db_rx, db_suppressed, db_bytes)
# for the report's doorbells per MB.
#   vmcstest.bench_rounds=N            rounds
#   vmcstest.bench_secs=S              seconds of ping-pong and of streaming per measurement
#   vmcstest.bench_vmcs=max_peers=4,...  vmcs.ko parameters for both guests (default none)
#   vmcstest.bench_transport=vsock     the vsock-transport pass (ci/bench.sh: run.sh --devices 0
#                                      --vsock, bench_vmcs with vsock=1, paths stream,seqpacket,vsock):
#                                      no ivshmem, so AF_VMCS rides the vsock domain; the vmcs paths
#                                      connect to guest 0's cid 3 (not `auto`: no stream exists
#                                      before the first connect), the server is told to quit over
#                                      AF_VMCS stream, and the BENCH lines say variant=vsock, so
#                                      that ci/bench-report.py sets AF_VMCS over vsock against raw
#                                      AF_VSOCK measured in the same run between the same guests
. /scenarios/lib.sh
setting() { sed -n "s/.*vmcstest\.$1=\([^ ]*\).*/\1/p" /proc/cmdline | tr , ' '; }
SIZES=$(setting bench_sizes)
SIZES=${SIZES:-64 4096 65536}
PATHS=$(setting bench_paths)
PATHS=${PATHS:-dev stream stream-bp seqpacket bulk tcp vmcs0 memcpy}
# The vmcs0 path: TCP over the net device (docs/netdev.md), guest G at 10.78.0.G+1.
vmcs0_up() {
	ip addr add 10.78.0.$((VMCS_GUEST + 1))/24 dev vmcs0 && ip link set vmcs0 up
}
RINGS=/sys/kernel/debug/vmcs/vmcs0/rings
# This guest's doorbells sent, received, saved by the tokens, and ring bytes sent + received
# (the per-peer lines: `... tx ... bytes B doorbells D rx ... bytes B ...`; a module without
# the token counters reads 0 saved).
dbsnap() {
	awk 'NR == 1 { for (i = 1; i < NF; i++) if ($i == "doorbells_rx") rx = $(i + 1)
			else if ($i == "doorbells_suppressed") sup = $(i + 1) }
		$1 == "peer" { nb = 0; for (i = 3; i < NF; i++) {
			if ($i == "doorbells") tx += $(i + 1)
			if ($i == "bytes" && nb++ < 2) bytes += $(i + 1) } }
		END { print tx + 0, rx + 0, sup + 0, bytes + 0 }' $RINGS 2>/dev/null || echo 0 0 0 0
}
ROUNDS=$(setting bench_rounds)
ROUNDS=${ROUNDS:-1}
SECS=$(setting bench_secs)
SECS=${SECS:-0.3}
VMCS_PARAMS=$(setting bench_vmcs)
# The vmcs paths' server: every live peer over ivshmem; guest 0's vsock cid on the vsock pass.
SERVER=auto
TAG=$VMCS_VARIANT
QUIT_PATH=dev
VPASS=0
if [ "$(setting bench_transport)" = vsock ]; then
	VPASS=1
	SERVER=3
	QUIT_PATH=stream
	TAG=vsock
fi
BASE=5100
NSIZES=$(echo $SIZES | wc -w)
NPATHS=$(echo $PATHS | wc -w)

if [ "$VMCS_NGUESTS" -lt 2 ]; then
	plan 1
	not_ok "the bench scenario needs 2 guests"
	exit 1
fi

# The stream-enc path (encrypted AF_VMCS stream): both guests hold a test key; guest 1's
# domain policy is off, so that its other paths stay plaintext (a connection uses the
# stricter of the domain's and the socket's policy) and only stream-enc's require encrypts.
ENC=0
case " $PATHS " in *" stream-enc "*) ENC=1 ;; esac
enc_setup() {
	printf '%s\n' 5f0e1d2c3b4a59687786a5b4c3d2e1f00112233445566778899aabbccddeeff0 | vmcs key set &&
		if [ "$VMCS_GUEST" = 1 ]; then vmcs encrypt off; fi
}

if [ "$VMCS_GUEST" = 0 ]; then
	plan $((3 + ENC))
	# shellcheck disable=SC2086 # one word per parameter
	check "insmod vmcs.ko $VMCS_PARAMS" load_vmcs $VMCS_PARAMS
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	[ "$ENC" = 0 ] || check "stream-enc: test key installed" enc_setup
	vmcs0_up
	vmcs-bench serve $BASE >/tmp/serve.log 2>&1 &
	srv=$!
	# run.sh's --timeout bounds the whole run; this only has to be longer.
	check_done "bench server told to quit by guest 1" "$srv" 3000
	sed 's/^/# /' /tmp/serve.log >&3
elif [ "$VMCS_GUEST" = 1 ]; then
	plan $((2 + ENC + 2 * VPASS + ROUNDS * NSIZES * NPATHS + 1))
	# shellcheck disable=SC2086 # one word per parameter
	check "insmod vmcs.ko $VMCS_PARAMS" load_vmcs $VMCS_PARAMS
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	[ "$ENC" = 0 ] || check "stream-enc: test key installed, domain policy off (other paths plaintext)" enc_setup
	vmcs0_up
	# ARP before the first measurement (only the vmcs0 path needs it).
	case " $PATHS " in *" vmcs0 "*)
		i=0
		while ! ping -c 1 -W 1 10.78.0.1 >/dev/null 2>&1 && [ $i -lt 60 ]; do i=$((i + 1)); done
		;;
	esac
	# The vsock pass measures AF_VMCS over the vsock transport only if that is where it goes.
	[ "$VPASS" = 0 ] || check "vsock pass: this guest's vmcs domain is the vsock transport (vmcs status)" \
		sh -c "vmcs status >/tmp/status 2>&1; sed 's/^/# /' /tmp/status; grep -qE '^transport +vsock' /tmp/status"
	diag "bench: sizes $SIZES; paths $PATHS; $ROUNDS round(s) of $SECS s + $SECS s"
	k=0
	for round in $(seq "$ROUNDS"); do
		for size in $SIZES; do
			# This size's order: the path list rotated by one more each time.
			set -- $PATHS
			i=0
			while [ $i -lt $((k % NPATHS)) ]; do
				first=$1
				shift
				set -- "$@" "$first"
				i=$((i + 1))
			done
			k=$((k + 1))
			for p in "$@"; do
				case $p in
				memcpy) cmd="vmcs-bench memcpy $size $SECS" ;;
				tcp) cmd="vmcs-bench client tcp 169.254.1.1 $BASE $size $SECS $SECS" ;;
				vmcs0) cmd="vmcs-bench client vmcs0 10.78.0.1 $BASE $size $SECS $SECS" ;;
				vsock) cmd="vmcs-bench client vsock 3 $BASE $size $SECS $SECS" ;;
				*) cmd="vmcs-bench client $p $SERVER $BASE $size $SECS $SECS" ;;
				esac
				what="round $round, $p, $size B: measured, every echo and byte count matched"
				db0=$(dbsnap)
				if out=$($cmd 2>&1) && echo "$out" | grep -q "^BENCH path=$p size=$size "; then
					ok "$what"
				else
					not_ok "$what"
				fi
				db=""
				case $p in
				memcpy | tcp | vsock) ;;
				*) db=$(echo "$db0 $(dbsnap)" | awk '{ printf " db_tx=%d db_rx=%d db_suppressed=%d db_bytes=%d", $5 - $1, $6 - $2, $7 - $3, $8 - $4 }') ;;
				esac
				echo "$out" | sed -e "s/^BENCH .*/&$db/" -e "s/^BENCH /BENCH variant=$TAG round=$round /" \
					-e "s/^CDF /CDF variant=$TAG round=$round /" -e 's/^/# /' >&3
			done
		done
	done
	[ "$VPASS" = 0 ] || check "vsock pass: guest 0 (cid 3) was reached over vsock (vmcs peers: live, transport vsock)" \
		sh -c "vmcs peers >/tmp/peers 2>&1; sed 's/^/# /' /tmp/peers; grep -qE '^3 +live .* vsock\$' /tmp/peers"
	check "bench server quits" vmcs-bench quit $SERVER $BASE $QUIT_PATH
else
	plan 1
	ok "guest $VMCS_GUEST idle (the bench uses guests 0 and 1)"
fi
