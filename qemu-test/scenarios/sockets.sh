# AF_VMCS sockets (docs/sockets.md). Every guest runs the socket tests over loopback; with two
# or more guests, guest 0 serves stream and seqpacket echo ports and a plain AF_VSOCK-style
# echo (only the family constant changed), and every other guest runs the cross-guest tests
# against it. Then guest 1 opens SCALE_CONNS stream connections to guest 0 at once and sends
# SCALE_BYTES on each (vmcs-socktest scale-*: all complete, byte-checked, fair progress).
# Last, guest 0 writes BURST_BYTES on each of BURST_CONNS connections from guest 1, closes
# them and unloads vmcs at once, with far more queued than the ring holds; guest 1 must
# still read every byte and end of file (vmcs-socktest burst-*: an unload lets closed
# connections drain first). Finally guest 0 reloads vmcs with rx_mem_max_kb=1024 and guest 1
# floods RXCAP_CONNS connections that guest 0 never reads (256 KiB each, the default credit):
# some must be reset for the receive memory cap (ECONNRESET at guest 1, rx_memory in guest
# 0's debugfs resets), and a fresh connection is still echoed byte-checked (vmcs-socktest
# rxcap-*). Before the scale test, guest 1 connects FAST_CONNS times to a guest 0 server
# that writes FAST_BYTES and closes each connection at once: every connect succeeds and
# reads the data and end of file (vmcs-socktest fastclose-*).
. /scenarios/lib.sh
TESTS=$(vmcs-socktest list)
NT=$(echo "$TESTS" | wc -l)
if [ "$VMCS_NGUESTS" -gt 1 ]; then CROSS=2; else CROSS=0; fi
# The scale test: guest 0 serves, guest 1 connects (other guests only run the rest).
SCALE=0
if [ "$CROSS" != 0 ] && [ "$VMCS_GUEST" -le 1 ]; then SCALE=1; fi
# vmcstest.scale_conns=N and vmcstest.fast_conns=N (kernel command line) shorten the two
# connection counts: make test's sanitizer run (ci/sanitize.sh --quick) uses 200 and 50; the
# test kernel's sockets plain 2 and make sanitize keep 1000 and 200.
sarg() { sed -n "s/.*vmcstest\.$1=\([0-9]*\).*/\1/p" /proc/cmdline; }
SCALE_CONNS=$(sarg scale_conns)
SCALE_CONNS=${SCALE_CONNS:-1000}
SCALE_BYTES=8192
SPORT=6300
BURST_CONNS=64
BURST_BYTES=32768
BPORT=6400
RXCAP_CONNS=8
RPORT=6500
FAST_CONNS=$(sarg fast_conns)
FAST_CONNS=${FAST_CONNS:-200}
FAST_BYTES=4096
FPORT=6600
DPORT=6700
# Receive by reference with a slow reader (vmcs-socktest held-*): guest 1 sends 512 KiB on
# a connection guest 0 leaves unread, then 4 MiB on a second one on the same ring, which
# guest 0 reads at once: it must complete (the unread frames copied out of the ring,
# rx_copied_out in debugfs rings), and the unread connection's bytes must all be there.
HPORT=6800
# The differential suite (vmcs-socktest diff, docs/sockets.md "Differences from AF_VSOCK"):
# every guest compares AF_VMCS loopback with AF_VSOCK loopback; guest 1 also compares
# AF_VMCS to guest 0 (its diff-serve) with AF_VSOCK loopback.
DIFFX=0
if [ "$CROSS" != 0 ] && [ "$VMCS_GUEST" = 1 ]; then DIFFX=1; fi
plan $((NT + 10 + CROSS + 8 * SCALE + DIFFX))

check "insmod vmcs.ko af=0 registers no family" sh -c \
	'insmod /lib/modules/vmcs.ko af=0 && [ "$(cat /sys/module/vmcs/parameters/af)" = 0 ]'
check "rmmod after af=0" rmmod vmcs
check "insmod vmcs.ko af=1 (AF_UNIX, taken) fails" sh -c '! insmod /lib/modules/vmcs.ko af=1 2>/dev/null'
check "the failed load names the taken family" sh -c 'dmesg | grep -m1 "address family 1 is taken"'
check "insmod vmcs.ko" load_vmcs
check "/sys/module/vmcs/parameters/af is readable and 22" sh -c '[ "$(cat /sys/module/vmcs/parameters/af)" = 22 ]'
check "/dev/vmcs appears" wait_for /dev/vmcs 5
for t in $TESTS; do
	check "loopback: $t" vmcs-socktest "$t"
done
check "differential: AF_VMCS loopback against AF_VSOCK loopback, every difference documented" \
	vmcs-socktest diff

PORT=6000
VPORT=6100
if [ "$CROSS" != 0 ]; then
	if [ "$VMCS_GUEST" = 0 ]; then
		vmcs-socktest diff-serve $DPORT >/tmp/diffserve.log 2>&1 &
		dsrv=$!
		vmcs-socktest scale-serve $SPORT $SCALE_CONNS $SCALE_BYTES >/tmp/scale.log 2>&1 &
		ssrv=$!
		vmcs-socktest fastclose-serve $FPORT $FAST_CONNS $FAST_BYTES >/tmp/fast.log 2>&1 &
		fsrv=$!
		if [ "$SCALE" = 1 ]; then
			vmcs-socktest held-serve $HPORT >/tmp/held.log 2>&1 &
			hsrv=$!
		fi
		vmcs-socktest vsock-echo-server $VPORT >/tmp/vsock.log 2>&1 &
		vsrv=$!
		vmcs-socktest serve $PORT $((VMCS_NGUESTS - 1)) >/tmp/serve.log 2>&1 &
		srv=$!
		check_done "guest 0 served every other guest" "$srv" 90
		sed 's/^/# /' /tmp/serve.log >&3
		check_done "vsock-style echo server done" "$vsrv" 30
		if [ "$SCALE" = 1 ]; then
			check_done "a slow reader's held frames copied out, the other connection on the ring read at once, nothing lost" "$hsrv" 120
			sed 's/^/# /' /tmp/held.log >&3
		fi
		check_done "$FAST_CONNS connections written and closed at once for guest 1" "$fsrv" 120
		sed 's/^/# /' /tmp/fast.log >&3
		wait_pid "$ssrv" 600
		sed 's/^/# /' /tmp/scale.log >&3
		check "$SCALE_CONNS connections at once from guest 1 served, fair progress (status $rc)" \
			test "$rc" = 0
		kill "$dsrv" 2>/dev/null
		wait "$dsrv" 2>/dev/null
	else
		sleep 1
		check "cross-guest stream and seqpacket against guest 0" vmcs-socktest client $PORT
		check "AF_VSOCK echo client, family changed only" vmcs-socktest vsock-echo-client $VPORT
		if [ "$DIFFX" = 1 ]; then
			check "differential: AF_VMCS to guest 0 against AF_VSOCK loopback, every difference documented" \
				vmcs-socktest diff-cross auto $DPORT
		fi
		if [ "$SCALE" = 1 ]; then
			check "a connection left unread by guest 0 does not stall another one on the same ring" \
				vmcs-socktest held-client $HPORT
			check "$FAST_CONNS connects to a server that writes and closes at once: all succeed, data then EOF" \
				vmcs-socktest fastclose-client $FPORT $FAST_CONNS $FAST_BYTES
			check "$SCALE_CONNS connections at once to guest 0, $SCALE_BYTES bytes each" \
				vmcs-socktest scale-client $SPORT $SCALE_CONNS $SCALE_BYTES
			check "$BURST_CONNS connections, $BURST_BYTES bytes each read in full after guest 0 closed them and unloaded vmcs" \
				vmcs-socktest burst-client $BPORT $BURST_CONNS $BURST_BYTES
		fi
	fi
fi

vmcs-socktest hold >/tmp/hold.log 2>&1 &
holder=$!
i=0
while ! grep -q holding /tmp/hold.log 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "rmmod refused while a socket is open" sh -c '! rmmod vmcs 2>/dev/null'
kill "$holder"
wait "$holder" 2>/dev/null
if [ "$SCALE" = 1 ] && [ "$VMCS_GUEST" = 0 ]; then
	# rmmod right after the close, while the connections still drain (guest 1 checks).
	check "$BURST_CONNS connections, $BURST_BYTES bytes each written and closed" \
		vmcs-socktest burst-serve $BPORT $BURST_CONNS $BURST_BYTES
fi
check "rmmod succeeds once every socket is closed" rmmod vmcs

rx_memory() { awk '$1 == "rx_memory" { print $2 }' /sys/kernel/debug/vmcs/vmcs0/resets; }
if [ "$SCALE" = 1 ] && [ "$VMCS_GUEST" = 0 ]; then
	check "insmod vmcs.ko rx_mem_max_kb=1024" load_vmcs rx_mem_max_kb=1024
	vmcs-socktest rxcap-serve $RPORT $RXCAP_CONNS >/tmp/rxcap.log 2>&1 &
	rsrv=$!
	check_done "$RXCAP_CONNS unread connections from guest 1 held, then a fresh one echoed" "$rsrv" 120
	sed 's/^/# /' /tmp/rxcap.log >&3
	check "resets for the receive memory cap counted (rx_memory $(rx_memory))" test "$(rx_memory)" -ge 1
	check "rmmod after the receive memory cap test" rmmod vmcs
elif [ "$SCALE" = 1 ]; then
	check "insmod vmcs.ko (receive memory cap test)" load_vmcs
	check "$RXCAP_CONNS connections of 256 KiB that guest 0 never reads: some reset, a fresh one echoed" \
		vmcs-socktest rxcap-client $RPORT $RXCAP_CONNS
	check "no reset for receive memory on the sender (rx_memory $(rx_memory))" test "$(rx_memory)" = 0
	check "rmmod after the receive memory cap test" rmmod vmcs
fi
