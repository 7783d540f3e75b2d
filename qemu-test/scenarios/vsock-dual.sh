# Transport per peer (run.sh --devices 1 --guest-devices 1,1,0 --vsock --guests 3; ci/test.sh):
# guests 0 and 1 share an ivshmem region and are in vhost-device-vsock's sibling group with
# guest 2, which has no ivshmem device (guest G is vsock cid 3+G). vmcs is loaded with
# vsock=1 everywhere, so guests 0 and 1 are "dual" (domain 0 ivshmem, domain 1 vsock) and
# name every peer by its vsock cid. Guest 1 talks to guest 0 (cid 3) and guest 2 (cid 5)
# at the same time, a 1 MiB stream and seqpacket messages each, byte-checked: the route
# picks ivshmem for guest 0 (its vsock stream stated its region slot) and vsock for guest 2;
# `vmcs ss`, `peers` and `status` show it. Then guest 1's ivshmem device is unbound: its
# held ivshmem stream to guest 0 fails with ECONNRESET, the vsock one to guest 2 still
# works, and a new connection to cid 3 goes over vsock (byte-checked). Guest 0's dual
# listener accepted both (over ivshmem, then over vsock), naming guest 1 cid 4 both times.
. /scenarios/lib.sh
PORT=7100
me=$((3 + VMCS_GUEST))
# wait_mark MARKER SECS: MARKER in vt-dual's log within SECS (by the clock: a loaded TCG
# guest runs a polling loop slowly), or its end (VT-DUAL-EXIT) first.
wait_mark() {
	_end=$(($(date +%s) + $2))
	while ! grep -qE "^($1|VT-DUAL-EXIT)" /tmp/dual.log 2>/dev/null && [ "$(date +%s)" -lt $_end ]; do sleep 0.2; done
	grep -q "^$1" /tmp/dual.log
}
wait_dmesg() { i=0; while ! dmesg | grep -qE "$1" && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; dmesg | grep -qE "$1"; }

case "$VMCS_GUEST" in
0)
	plan 4
	check "insmod vmcs.ko vsock=1" load_vmcs vsock=1
	check "ivshmem is domain 0, vsock domain 1 (cid $me)" \
		sh -c "dmesg | grep -q 'vmcs0: joined as peer' && dmesg | grep -q 'vmcs1: vsock bound, cid $me, port 22093'"
	vmcs-socktest serve $PORT 2 >/tmp/serve.log 2>&1 &
	srv=$!
	wait_pid "$srv" 300
	sed 's/^/# /' /tmp/serve.log >&3
	check "served guest 1 twice, stream and seqpacket (exit status $rc)" test "$rc" = 0
	# The first stream came over ivshmem, the second over vsock: both name guest 1 by its
	# vsock cid (the ivshmem slot's through the ident its vsock stream stated).
	check "accept named guest 1 cid 4 over both transports" \
		sh -c "test \$(grep -c '^stream client 4:' /tmp/serve.log) = 2 && test \$(grep -c '^seqpacket client 4:' /tmp/serve.log) = 2"
	;;
1)
	plan 12
	check "insmod vmcs.ko vsock=1" load_vmcs vsock=1
	check "ivshmem is domain 0, vsock domain 1 (cid $me)" \
		sh -c "dmesg | grep -q 'vmcs0: joined as peer' && dmesg | grep -q 'vmcs1: vsock bound, cid $me, port 22093'"
	# The route confirms a stated slot against this guest's own view of the region.
	wait_dmesg "vmcs0: peer [0-9]+ up" 120
	rm -f /tmp/vt-unbound /tmp/vt-done
	(
		vmcs-socktest vt-dual 3 5 $PORT
		echo "VT-DUAL-EXIT $?"
	) >/tmp/dual.log 2>&1 &
	dual=$!
	check "at once: guest 0 (cid 3) and guest 2 (cid 5), 1 MiB stream and seqpacket each, byte-checked" \
		wait_mark VT-DUAL-UP 240
	vmcs ss >/tmp/ss 2>&1
	sed 's/^/# /' /tmp/ss >&3
	check "vmcs ss: guest 0's stream and seqpacket on vmcs0 over ivshmem-plain" \
		sh -c "grep -cE '^vmcs0 .* [0-9]+:710[01] +established .* ivshmem-plain\$' /tmp/ss | grep -qx 2"
	check "vmcs ss: guest 2's on vmcs1 over vsock, none to guest 0 there" \
		sh -c "grep -cE '^vmcs1 .* 5:710[01] +established .* vsock\$' /tmp/ss | grep -qx 2 && ! grep -qE '^vmcs1 .* 3:710[01] ' /tmp/ss"
	vmcs peers >/tmp/peers 2>&1
	sed 's/^/# /' /tmp/peers >&3
	check "vmcs peers: the region peer over ivshmem-plain, cids 3 and 5 over vsock" \
		sh -c "grep -E '^[0-9]+ +live .* ivshmem-plain\$' /tmp/peers | grep -qv 'this guest' && grep -qE '^3 +live .* vsock\$' /tmp/peers && grep -qE '^5 +live .* vsock\$' /tmp/peers"
	vmcs status >/tmp/status 2>&1
	sed 's/^/# /' /tmp/status >&3
	check "vmcs status: domains 0 ivshmem-plain and 1 vsock (cid $me)" \
		grep -qE "^domains +0 ivshmem-plain \(cid [0-9]+\), 1 vsock \(cid $me\)\$" /tmp/status
	dev=$(basename "$(ls -d /sys/bus/pci/drivers/vmcs/0000:* | head -n1)")
	check "unbind the ivshmem device ($dev)" sh -c "echo $dev >/sys/bus/pci/drivers/vmcs/unbind"
	touch /tmp/vt-unbound
	check "after unbind: ECONNRESET on the ivshmem stream, guest 2's still works, a new connection to cid 3 byte-checked" \
		wait_mark VT-DUAL-RECONNECTED 240
	vmcs ss >/tmp/ss2 2>&1
	sed 's/^/# /' /tmp/ss2 >&3
	check "vmcs ss: the new connections to guest 0 are on vmcs1 over vsock" \
		sh -c "grep -cE '^vmcs1 .* 3:710[01] +established .* vsock\$' /tmp/ss2 | grep -qx 2 && ! grep -q '^vmcs0 ' /tmp/ss2"
	touch /tmp/vt-done
	wait_pid "$dual" 60
	sed 's/^/# /' /tmp/dual.log >&3
	check "vt-dual exited with status 0" grep -qx "VT-DUAL-EXIT 0" /tmp/dual.log
	check "the ivshmem domain was released after unbind" sh -c "dmesg | grep -q 'vmcs0: domain released'"
	;;
*)
	plan 3
	check "insmod vmcs.ko vsock=1 (no ivshmem device)" load_vmcs vsock=1
	check "the vsock domain is domain 0, cid $me" \
		sh -c "dmesg | grep -q 'vmcs0: vsock bound, cid $me, port 22093'"
	vmcs-socktest serve $PORT 1 >/tmp/serve.log 2>&1 &
	srv=$!
	wait_pid "$srv" 300
	sed 's/^/# /' /tmp/serve.log >&3
	check "served guest 1's stream and seqpacket over vsock (exit status $rc)" test "$rc" = 0
	;;
esac
