# `make demo`: guest 0 serves an echo port; guest 1 connects through the shared region and
# exchanges greetings and the message tests. Needs the ivshmem transport.
. /scenarios/lib.sh
plan 3
check "insmod vmcs.ko" load_vmcs
say "$(dmesg | grep -o 'vmcs0: ivshmem.*' | head -n1)"
say "$(vmcs-test info | head -n1)"
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs-test serve 5000 $((VMCS_NGUESTS - 1)) >/tmp/serve.log 2>&1
	say "echo server done: $(tr '\n' ' ' </tmp/serve.log)"
	check "guest0 served every other guest" true
else
	out=$(vmcs-test client auto 5000 2>/dev/null)
	say "$out"
	check "guest$VMCS_GUEST exchanged messages with guest0" sh -c "echo '$out' | grep -q 'messages echoed'"
fi
sleep 1
check "rmmod vmcs" rmmod vmcs
