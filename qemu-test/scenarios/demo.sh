# `make demo`: two guests talk through vmcs. Guest 0 serves; guest 1 looks at the domain,
# pings guest 0 through the shared region and exchanges messages with it.
. /scenarios/lib.sh
if [ "$VMCS_GUEST" = 0 ]; then plan 3; else plan 5; fi
check "insmod vmcs.ko" load_vmcs
say "$(dmesg | grep -o 'vmcs0: ivshmem.*' | head -n1)"
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs ping --serve >/tmp/ping-serve.log 2>&1 &
	pinger=$!
	say "serving: echo for 'vmcs ping' on port 7007, message echo on port 5000"
	vmcs-test serve 5000 $((VMCS_NGUESTS - 1)) >/tmp/serve.log 2>&1
	rc=$?
	kill "$pinger" 2>/dev/null
	peer=$(sed -n 's/.*accepted Addr { cid: \([0-9]*\), port: \([0-9]*\) }.*/cid \1, port \2/p' /tmp/serve.log | head -n1)
	say "accepted a connection from $peer and echoed every message back"
	check "guest0 served every other guest (exit status $rc)" test "$rc" = 0
else
	# Wait until guest 0 is up in the peer table before talking to it.
	i=0
	until vmcs peers 2>/dev/null | grep -qE '^ *0 +live'; do
		i=$((i + 1))
		[ $i -lt 100 ] || break
		sleep 0.2
	done
	vmcs status >/tmp/status 2>&1
	sed 's/^/  /' /tmp/status | while IFS= read -r l; do say "$l"; done
	check "vmcs status names this guest's cid" grep -qE "cid +$VMCS_GUEST\b|cid: *$VMCS_GUEST\b" /tmp/status
	sleep 1
	vmcs ping 0 -c 5 -i 200ms >/tmp/ping 2>&1
	rc=$?
	while IFS= read -r l; do say "$l"; done </tmp/ping
	check "vmcs ping 0 got 5 replies (exit status $rc)" sh -c "test $rc = 0 && grep -q '5 received' /tmp/ping"
	out=$(vmcs-test client 0 5000 2>&1)
	say "$out"
	check "guest$VMCS_GUEST exchanged messages with guest0" sh -c "echo '$out' | grep -q 'messages echoed'"
fi
sleep 1
check "rmmod vmcs" rmmod vmcs
