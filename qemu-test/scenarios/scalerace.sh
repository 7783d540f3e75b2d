# Reproducer (not in make test): the sockets scenario's scale test, ROUNDS times in a row.
# Guest 0 serves (vmcs-socktest scale-serve) and unloads vmcs right after each round, as
# sockets.sh does; guest 1 connects (scale-client). Round r uses port 6300 + r. Before each
# rmmod, guest 0 reports how many closed connections still linger with frames queued
# (debugfs `connections`, state `closing`).
. /scenarios/lib.sh
ROUNDS=10
CONNS=1000
BYTES=8192
D=/sys/kernel/debug/vmcs/vmcs0
if [ "$VMCS_GUEST" = 0 ]; then plan $((3 * ROUNDS)); else plan $((ROUNDS + 2)); fi
[ "$VMCS_GUEST" = 0 ] || check "insmod vmcs.ko" load_vmcs
[ "$VMCS_GUEST" = 0 ] || check "/dev/vmcs appears" wait_for /dev/vmcs 5
r=0
while [ $r -lt "$ROUNDS" ]; do
	if [ "$VMCS_GUEST" = 0 ]; then
		check "round $r: insmod vmcs.ko" load_vmcs
		wait_for /dev/vmcs 5
		vmcs-socktest scale-serve $((6300 + r)) $CONNS $BYTES >/tmp/scale.log 2>&1
		rc=$?
		lingering=$(grep -c ' closing ' $D/connections)
		# The fairness check is not what this reproducer is about: only "served" counts.
		check "round $r: served (status $rc), $lingering closed connections still lingering" \
			grep -q 'ok: all .* connections served' /tmp/scale.log
		check "round $r: rmmod" rmmod vmcs
	else
		check "round $r: client" vmcs-socktest scale-client $((6300 + r)) $CONNS $BYTES
	fi
	r=$((r + 1))
done
