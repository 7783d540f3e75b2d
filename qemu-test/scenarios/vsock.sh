# The vsock transport (run.sh --devices 0 --vsock --crash-guest 0 --crash-on VSOCK-KILL-ME
# --host-hook "qemu-test/vsock-host.py ..." --hook-on VT-ECHO-LISTENING; ci/test.sh): two
# guests with no ivshmem device, linked only by vhost-device-vsock's sibling group (guest G
# is vsock cid 3+G), load vmcs with vsock=1. Guest 1 exchanges a 1 MiB stream and seqpacket
# messages (1 B .. 64 KiB) with guest 0 over AF_VMCS, byte-checked; then sends a bad
# preamble on a raw AF_VSOCK stream to guest 0's transport port: that stream is closed, and
# the AF_VMCS stream opened before still echoes. The host (qemu-test/vsock-host.py, through
# the backend's unix socket) connects to guest 1's AF_VMCS listener and is echoed, and
# guest 1 connects to the host (cid 2) and is echoed. Last, guest 1 blocks in recv on a
# stream to guest 0, which the launcher then kills: the recv fails with ECONNRESET; then
# guest 1 unloads vmcs (the vsock domain torn down and released).
. /scenarios/lib.sh
PORT=7100
HPORT=7200
H2PORT=7300
D=/sys/kernel/debug/vmcs/vmcs0
wait_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }
wait_dmesg() { i=0; while ! dmesg | grep -qE "$1" && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; dmesg | grep -qE "$1"; }
me=$((3 + VMCS_GUEST))

common() {
	check "insmod vmcs.ko vsock=1 (no ivshmem device)" load_vmcs vsock=1
	check "the vsock domain is domain 0, this guest's cid $me" \
		sh -c "dmesg | grep -q 'vmcs0: vsock bound, cid $me, port 22093'"
	check "vmcs status: transport vsock, local cid $me" \
		sh -c "vmcs status >/tmp/status 2>&1; cat /tmp/status; grep -qE '^transport +vsock' /tmp/status && grep -qE '^local cid +$me\$' /tmp/status"
}

if [ "$VMCS_GUEST" = 0 ]; then
	plan 6
	common
	vmcs-socktest serve $PORT 1 >/tmp/serve.log 2>&1 &
	srv=$!
	vmcs-socktest vt-hold $((PORT + 2)) >/tmp/hold.log 2>&1 &
	check "a bad preamble closed that vsock stream only (logged)" \
		wait_dmesg "vsock stream from cid 4: bad preamble\$" 240
	wait_pid "$srv" 240
	sed 's/^/# /' /tmp/serve.log >&3
	check "served guest 1's stream and seqpacket echo over vsock (exit status $rc)" test "$rc" = 0
	check "guest 1 holds a stream to this guest" wait_line /tmp/hold.log VT-HELD 240
	cat $D/peers | sed 's/^/# /' >&3
	# The launcher kills this guest now (peer death for guest 1).
	diag "VSOCK-KILL-ME"
	sleep 600
else
	plan 11
	common
	vmcs-socktest vt-echo1 $HPORT >/tmp/echo1.log 2>&1 &
	e1=$!
	wait_line /tmp/echo1.log VT-ECHO-LISTENING 30
	diag "VT-ECHO-LISTENING (the host hook starts)"
	check "AF_VMCS to guest 0 over vsock: 1 MiB stream and seqpacket echo byte-checked; a bad preamble resets only its own stream" \
		vmcs-socktest vt-client 3 $PORT
	check_done "the host's AF_VMCS connection was echoed until its end" "$e1" 180
	sed 's/^/# /' /tmp/echo1.log >&3
	# The host program is still connected (it waits for this guest's connection to it).
	check "vmcs peers lists guest 0 (cid 3) and the host (cid 2), live, transport vsock" \
		sh -c "vmcs peers >/tmp/peers 2>&1; cat /tmp/peers; grep -qE '^3 +live .* vsock\$' /tmp/peers && grep -qE '^2 +live .* vsock\$' /tmp/peers"
	check "AF_VMCS from this guest to the host (cid 2) echoed, byte-checked" vmcs-socktest vt-to 2 $H2PORT
	cat $D/peers | sed 's/^/# /' >&3
	vmcs-socktest vt-reset 3 $((PORT + 2)) >/tmp/reset.log 2>&1 &
	rs=$!
	check_done "guest 0 killed: the blocked recv over vsock failed with ECONNRESET" "$rs" 240
	sed 's/^/# /' /tmp/reset.log >&3
	check "the dead peer's stream was closed and the peer reset (logged)" \
		sh -c "dmesg | grep -qE 'vsock stream (to|from) cid 3: (closed|silent), peer reset'"
	# Unload: the vsock domain's streams and listener are closed, its callbacks put back.
	check "rmmod vmcs with the vsock domain up" rmmod vmcs
	check "the vsock domain was torn down and released" \
		sh -c "dmesg | grep -q 'vmcs0: vsock unbound' && dmesg | grep -q 'vmcs0: domain released'"
fi
