# Reproducer (not in make test): vmcs-socktest burst-* in rounds. Guest 0 loads vmcs,
# writes BYTES on each of 64 connections from guest 1, closes them and unloads vmcs at
# once; guest 1 must read every byte and end of file. Round r uses port 6400 + r.
. /scenarios/lib.sh
SIZES="32768 32768 32768 65536 65536 65536"
N=6
if [ "$VMCS_GUEST" = 0 ]; then plan $((3 * N)); else plan $((N + 2)); fi
[ "$VMCS_GUEST" = 0 ] || check "insmod vmcs.ko" load_vmcs
[ "$VMCS_GUEST" = 0 ] || check "/dev/vmcs appears" wait_for /dev/vmcs 5
r=0
for b in $SIZES; do
	if [ "$VMCS_GUEST" = 0 ]; then
		check "round $r: insmod vmcs.ko" load_vmcs
		wait_for /dev/vmcs 5
		check "round $r: 64 x $b written and closed" vmcs-socktest burst-serve $((6400 + r)) 64 "$b"
		check "round $r: rmmod" rmmod vmcs
	else
		check "round $r: 64 x $b read in full" vmcs-socktest burst-client $((6400 + r)) 64 "$b"
	fi
	r=$((r + 1))
done
