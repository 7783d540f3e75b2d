# Benchmark (make bench, ci/bench.sh): vmcs against TCP over the virtio-net link between the
# same two guests. Guest 0 serves both transports (vmcs-bench serve); guest 1 measures each
# message size over vmcs and TCP back to back, interleaved so that both see the same noise,
# in ROUNDS rounds (round 1 vmcs first, round 2 TCP first, ...), and prints one
# `# BENCH ...` diagnostic per measurement; ci/bench.sh averages the rounds. The test points assert only correctness
# (every measurement completed, every echo and byte count matched), never timings.
. /scenarios/lib.sh
VMCS_PORT=5100
TCP_PORT=5101
SIZES="64 1024 4096 65536"
ROUNDS=2
RTT_SECS=1.5
TPUT_SECS=1.5
NSIZES=$(echo $SIZES | wc -w)

if [ "$VMCS_NGUESTS" -lt 2 ]; then
	plan 1
	not_ok "the bench scenario needs 2 guests"
	exit 1
fi

if [ "$VMCS_GUEST" = 0 ]; then
	plan 3
	check "insmod vmcs.ko" load_vmcs
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	vmcs-bench serve $VMCS_PORT $TCP_PORT >/tmp/serve.log 2>&1 &
	srv=$!
	# The client needs about ROUNDS x 2 x 4 x (RTT_SECS + TPUT_SECS) plus set-up (~1 min);
	# allow 400 s in all.
	check_done "bench servers told to quit by guest 1" "$srv" 400
	sed 's/^/# /' /tmp/serve.log >&3
elif [ "$VMCS_GUEST" = 1 ]; then
	plan $((2 + ROUNDS * 2 * NSIZES + 2))
	check "insmod vmcs.ko" load_vmcs
	check "/dev/vmcs appears" wait_for /dev/vmcs 5
	for round in $(seq "$ROUNDS"); do
		if [ $((round % 2)) = 1 ]; then order="vmcs tcp"; else order="tcp vmcs"; fi
		for size in $SIZES; do
			for transport in $order; do
				if [ $transport = vmcs ]; then server=auto port=$VMCS_PORT; else server=169.254.1.1 port=$TCP_PORT; fi
				what="round $round, $transport, $size B: ping-pong echoes and stream byte counts matched"
				if out=$(vmcs-bench client $transport $server $port "$size" "$RTT_SECS" "$TPUT_SECS" 2>&1) &&
					echo "$out" | grep -q "^BENCH transport=$transport size=$size "; then
					ok "$what"
				else
					not_ok "$what"
				fi
				echo "$out" | sed 's/^/# /' >&3
			done
		done
	done
	check "vmcs server quits" vmcs-bench quit vmcs auto $VMCS_PORT
	check "tcp server quits" vmcs-bench quit tcp 169.254.1.1 $TCP_PORT
else
	plan 1
	ok "guest $VMCS_GUEST idle (the bench uses guests 0 and 1)"
fi
