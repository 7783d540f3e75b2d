# Foundation scenario: the module binds ivshmem, /dev/vmcs answers GET_INFO and carries a
# loopback message, unbinding the device makes open files fail with ENODEV, and the module
# unloads cleanly (refused while /dev/vmcs is open). Message semantics: messaging.sh.
. /scenarios/lib.sh
plan 14

check "insmod vmcs.ko" load_vmcs
check "/dev/vmcs appears" wait_for /dev/vmcs 5
check "ivshmem device bound to vmcs" sh -c 'ls /sys/bus/pci/drivers/vmcs | grep -q "^0000:"'
check "kernel log names peer id and region size" sh -c "dmesg | grep -E 'vmcs0: ivshmem-(plain|doorbell) bound, peer id .*region [0-9]+ KiB'"
if [ "$VMCS_VARIANT" = doorbell ]; then
	check "IVPosition read on ivshmem-doorbell" sh -c "dmesg | grep -E 'ivshmem-doorbell bound, peer id [0-9]+,'"
else
	check "no IVPosition on ivshmem-plain" sh -c "dmesg | grep 'ivshmem-plain bound, peer id negotiated in the region'"
fi
check "GET_INFO reports the domain" vmcs-test info
check "a message goes through loopback" vmcs-test truncate

# Unbinding the device revokes the region: an open file then fails with ENODEV, poll
# reports an error, and nothing oopses. Rebinding brings the domain back.
dev=$(basename "$(ls -d /sys/bus/pci/drivers/vmcs/0000:* | head -n1)")
exec 4</dev/vmcs
# A loopback connection with its bulk area mapped: unbind must remove every mapping.
rm -f /tmp/unbound
vmcs-test bulk-hold /tmp/unbound >/tmp/bulkhold.log 2>&1 &
bh=$!
i=0
while ! grep -q mapped /tmp/bulkhold.log 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "$dev" >/sys/bus/pci/drivers/vmcs/unbind
touch /tmp/unbound
wait "$bh"
rc=$?
sed 's/^/# /' /tmp/bulkhold.log >&3
check "unbind removes the bulk mappings of a loopback connection (they read zeros after; exit status $rc)" test "$rc" = 0
check "read on an open file after unbind fails with ENODEV" \
	sh -c 'dd bs=16 count=1 <&4 2>/tmp/err >/dev/null; ! test $? = 0 && grep -q "No such device" /tmp/err'
check "open with no device bound fails with ENODEV" \
	sh -c 'cat /dev/vmcs 2>/tmp/err2; grep -q "No such device" /tmp/err2'
exec 4<&-
echo "$dev" >/sys/bus/pci/drivers/vmcs/bind
check "rebind brings the domain back" vmcs-test info
exec 4</dev/vmcs
check "rmmod refused while /dev/vmcs is open" sh -c '! rmmod vmcs 2>/dev/null'
exec 4<&-
check "rmmod succeeds once /dev/vmcs is closed" rmmod vmcs
# Nothing holds a domain but its files and the driver (no reference cycle): both domains,
# the one unbound above and the rebound one, were freed ("domain released", module/domain).
check "both domains were released (unbind + last close, rmmod)" \
	sh -c '[ "$(dmesg | grep -c "vmcs0: domain released")" = 2 ]'
