# Foundation scenario: the module binds ivshmem, /dev/vmcs works, a pattern written by
# guest 0 into the shared region is read back by every other guest, and the module
# unloads cleanly even while /dev/vmcs is open.
. /scenarios/lib.sh
plan 13

check "insmod vmcs.ko" load_vmcs
check "/dev/vmcs appears" wait_for /dev/vmcs 5
check "ivshmem device bound to vmcs" sh -c 'ls /sys/bus/pci/drivers/vmcs | grep -q "^0000:"'
check "kernel log names peer id and region size" sh -c "dmesg | grep -E 'vmcs0: ivshmem-(plain|doorbell) bound, peer id .*region [0-9]+ KiB'"
if [ "$VMCS_VARIANT" = doorbell ]; then
	check "IVPosition read on ivshmem-doorbell" sh -c "dmesg | grep -E 'ivshmem-doorbell bound, peer id [0-9]+,'"
else
	check "no IVPosition on ivshmem-plain" sh -c "dmesg | grep 'ivshmem-plain bound, peer id negotiated in the region'"
fi

# Guest 0 writes one pattern per other guest; each guest checks its own and answers with
# a pattern of its own, which guest 0 checks.
OFF=$((64 * 1024))
LEN=4096
if [ "$VMCS_GUEST" = 0 ]; then
	for g in $(seq 1 $((VMCS_NGUESTS - 1))); do
		vmcs-pattern write $((OFF + g * LEN)) $LEN $((0x1000 + g)) || true
	done
	check "pattern written by guest 0 is intact locally" vmcs-pattern check $((OFF + LEN)) $LEN 0x1001
	all=0
	for g in $(seq 1 $((VMCS_NGUESTS - 1))); do
		vmcs-pattern check $((OFF + (VMCS_NGUESTS + g) * LEN)) $LEN $((0x2000 + g)) 60 || all=1
	done
	check "guest 0 reads every other guest's answer" test "$all" = 0
else
	check "guest $VMCS_GUEST reads the pattern guest 0 wrote" \
		vmcs-pattern check $((OFF + VMCS_GUEST * LEN)) $LEN $((0x1000 + VMCS_GUEST)) 60
	check "guest $VMCS_GUEST writes its answer" \
		vmcs-pattern write $((OFF + (VMCS_NGUESTS + VMCS_GUEST) * LEN)) $LEN $((0x2000 + VMCS_GUEST))
fi

# Unbinding the device revokes the region: an open file then fails with ENODEV, poll
# reports an error, and nothing oopses. Rebinding brings the domain back.
dev=$(basename "$(ls -d /sys/bus/pci/drivers/vmcs/0000:* | head -n1)")
exec 4</dev/vmcs
echo "$dev" >/sys/bus/pci/drivers/vmcs/unbind
check "read on an open file after unbind fails with ENODEV" \
	sh -c 'dd bs=16 count=1 <&4 2>/tmp/err >/dev/null; ! test $? = 0 && grep -q "No such device" /tmp/err'
check "open with no device bound fails with ENODEV" \
	sh -c 'cat /dev/vmcs 2>/tmp/err2; grep -q "No such device" /tmp/err2'
exec 4<&-
echo "$dev" >/sys/bus/pci/drivers/vmcs/bind
check "rebind brings the region back" \
	vmcs-pattern check $((OFF + LEN)) $LEN 0x1001
check "closing a file of an unbound device is clean" sh -c 'dmesg | grep -q "vmcs0: unbound"'

# An open file pins the module: rmmod must refuse, and the file must keep working.
exec 4</dev/vmcs
check "rmmod refused while /dev/vmcs is open" sh -c '! rmmod vmcs 2>/dev/null'
exec 4<&-
check "rmmod succeeds once /dev/vmcs is closed" rmmod vmcs
