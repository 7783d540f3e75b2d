# Peer crash and rejoin (run.sh --crash-guest 1 --crash-on CRASH-POINT --restart): guest 0
# listens; guest 1 connects and streams messages while guest 0 is blocked in read(). Once
# guest 1 says CRASH-POINT the launcher SIGKILLs its QEMU. Guest 0's read must fail with
# ECONNRESET within 2.5 s of the last data (heartbeat timeout, default hb_timeout_ms 1500,
# hb_period_ms 200), and its listener must survive: the restarted guest 1 (incarnation 2)
# connects again, exchanges messages, and checks `vmcs ss` shows the connection.
# The same through AF_VMCS (vmcs-socktest crash-*, ports SPORT and SPORT+1): guest 1 also
# connects a stream and a seqpacket socket to guest 0, whose recv on both, blocked, must
# fail with ECONNRESET; meanwhile guest 0 connects to a closed port of guest 1 again and
# again with SO_SNDTIMEO 300 ms: refused while guest 1 lives, ETIMEDOUT once it is dead but
# not yet detected, EHOSTUNREACH after. The restarted guest 1 connects to the surviving
# socket listener and exchanges data. A third stream, with data, guest 1 shut both ways
# before its crash: guest 0 reads it only after the crash and must get all of it and end of
# file (the peer closed in order before it died), not ECONNRESET.
# Bulk teardown: guest 1 also lends guest 0 a 64 KiB bulk extent filled with 0xA1 (vmcs-test
# crash-bulk-*, port BPORT), which guest 0 maps and holds; after the crash the stale mapping
# must read zeros, and still zeros once the restarted guest 1 has lent a new extent filled
# with 0xB2 (plain: the same peer id and slice), which guest 0 sees in its new mapping.
. /scenarios/lib.sh
D=/sys/kernel/debug/vmcs/vmcs0
PORT=6000
SPORT=6200
BPORT=6300
# Live peers other than this guest.
others_live() { [ "$(awk '/ live / && !/ down/ && !/ self/' $D/peers | wc -l)" -ge 1 ]; }
wait_others() {
	i=0
	while ! others_live && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	others_live
}
wait_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }

if [ "$VMCS_GUEST" = 0 ]; then
	plan 10
	check "insmod vmcs.ko" load_vmcs
	vmcs-test crash-bulk-recv $BPORT >/tmp/cbulk.log 2>&1 &
	bsrv=$!
	vmcs-socktest crash-serve $SPORT >/tmp/sock.log 2>&1 &
	ssrv=$!
	vmcs-test crash-recv $PORT >/tmp/crash.log 2>&1 &
	srv=$!
	wait_pid "$srv" 300
	sed 's/^/# /' /tmp/crash.log >&3
	lat=$(sed -n 's/^RESET-LATENCY-MS \([0-9]*\).*/\1/p' /tmp/crash.log)
	check "blocked read got ECONNRESET ${lat:-?} ms after guest 1's last data (< 2500)" \
		sh -c "[ -n '$lat' ] && [ '$lat' -lt 2500 ]"
	check "listener survived: the restarted guest 1 connected and was echoed until EOF (status $rc)" \
		sh -c "[ '$rc' = 0 ] && grep -q REJOIN-ECHOED /tmp/crash.log"
	check "the crashed peer's reset is counted in rings" grep -qE 'resets [1-9]' $D/rings
	wait_pid "$ssrv" 120
	src=$rc
	sed 's/^/# /' /tmp/sock.log >&3
	check "AF_VMCS: blocked stream recv got ECONNRESET" grep -q SOCK-STREAM-RESET /tmp/sock.log
	check "AF_VMCS: blocked seqpacket recv got ECONNRESET" grep -q SOCK-SEQPACKET-RESET /tmp/sock.log
	check "AF_VMCS: connect to the dead, undetected peer: ETIMEDOUT after SO_SNDTIMEO" \
		grep -q SOCK-CONNECT-TIMEDOUT /tmp/sock.log
	check "AF_VMCS: socket listener survived, the restarted guest 1 was echoed (status $src)" \
		grep -qE 'SOCK-REJOIN-ECHOED [1-9]' /tmp/sock.log
	check "AF_VMCS: data of a connection shut both ways before the crash read in full, then EOF" \
		grep -q SOCK-SHUT-KEPT /tmp/sock.log
	wait_pid "$bsrv" 120
	sed 's/^/# /' /tmp/cbulk.log >&3
	check "bulk: the crashed peer's stale mapping reads zeros, never its old data nor the restarted peer's new extent (status $rc)" \
		sh -c "[ '$rc' = 0 ] && grep -q CRASH-BULK-ZEROS /tmp/cbulk.log"
	sed 's/^/# /' $D/rings $D/peers >&3
	dmesg | grep vmcs | sed 's/^/# /' >&3
elif [ "$VMCS_INCARNATION" = 1 ]; then
	plan 5
	check "insmod vmcs.ko" load_vmcs
	check "guest 0 live" wait_others
	vmcs-test crash-bulk-send auto $BPORT a1 >/tmp/cbulk.log 2>&1 &
	check "bulk: a 64 KiB extent of 0xA1 lent to guest 0" wait_line /tmp/cbulk.log bulk-lent 60
	vmcs-socktest crash-connect $SPORT >/tmp/sock.log 2>&1 &
	check "AF_VMCS stream and seqpacket sockets connected to guest 0" \
		wait_line /tmp/sock.log connected 60
	vmcs-test crash-stream auto $PORT >/tmp/stream.log 2>&1 &
	check "streaming to guest 0" wait_line /tmp/stream.log streaming 60
	sed 's/^/# /' /tmp/stream.log >&3
	# The launcher kills this guest on the next line; until then keep streaming.
	diag "CRASH-POINT"
	sleep 600
else
	plan 8
	check "insmod vmcs.ko (restarted incarnation $VMCS_INCARNATION)" load_vmcs
	check "guest 0 live" wait_others
	sed 's/^/# /' $D/peers >&3
	rm -f /tmp/go
	vmcs-test rejoin auto $PORT /tmp/go >/tmp/rejoin.log 2>&1 &
	cl=$!
	check "rejoined: connected to guest 0's surviving listener, 100 messages echoed" \
		wait_line /tmp/rejoin.log exchanged 90
	vmcs ss >/tmp/ss.txt 2>&1
	vmcs ss --json >/tmp/ss.json 2>&1
	sed 's/^/# /' /tmp/ss.txt $D/connections >&3
	# The established connection's RX_BYTES and TX_BYTES columns are both non-zero.
	check "vmcs ss shows the connection with non-zero byte counters" awk '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$col["STATE"] == "established" && $col["RX_BYTES"] > 0 && $col["TX_BYTES"] > 0 { f = 1 }
		END { exit !f }' /tmp/ss.txt
	check "vmcs ss --json shows it too" sh -c \
		"grep -q '\"state\": *\"established\"' /tmp/ss.json && grep -qE '\"rx_bytes\": *[1-9]' /tmp/ss.json && grep -qE '\"tx_bytes\": *[1-9]' /tmp/ss.json"
	touch /tmp/go
	wait "$cl"
	rc=$?
	sed 's/^/# /' /tmp/rejoin.log >&3
	check "orderly close after the exchange (status $rc)" test "$rc" = 0
	check "AF_VMCS: reconnected to guest 0's surviving socket listener, data exchanged" \
		vmcs-socktest crash-rejoin $SPORT
	vmcs-test crash-bulk-send auto $BPORT b2 >/tmp/cbulk.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/cbulk.log >&3
	check "bulk: lent a new extent of 0xB2 to guest 0, which checked it (status $rc)" test "$rc" = 0
fi
