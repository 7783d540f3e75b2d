# Mixed protocol versions (docs/protocol.md §2 "Versions"; plain, 1 guest). Before vmcs is
# loaded, the guest writes into its region, through sysfs resource2, the header a peer of
# protocol version 1 leaves: READY, magic, version 1. vmcs (version 2) must refuse it at
# probe with a clear log line and EPROTONOSUPPORT, bind nothing and leave the region (its
# header and the peer table) untouched. On a fresh region the same module initialises it as
# version 2, the value a version-1 module refuses with the same check from its side.
. /scenarios/lib.sh
plan 9

check "a version-1 region: READY header with version 1 written through resource2" \
	vmcs-test region old-header
check "insmod vmcs.ko" load_vmcs
check "probe refused it: 'region speaks vmcs protocol version 1, this module speaks 2'" \
	sh -c "dmesg | grep -q 'region speaks vmcs protocol version 1, this module speaks 2'"
check "probe failed with EPROTONOSUPPORT (error -93)" \
	sh -c "dmesg | grep -qE 'vmcs.*(probe|failed).*-93|error -93'"
check "no domain: nothing bound, no debugfs vmcs0, /dev/vmcs opens with ENODEV" \
	sh -c "! ls /sys/bus/pci/drivers/vmcs | grep -q '^0000:' && ! test -e /sys/kernel/debug/vmcs/vmcs0 &&
		! vmcs-test info"
check "the version-1 region was left as it was (version 1, slot 0 untouched)" \
	sh -c "[ \$(vmcs-test region version) = 1 ] && [ \$(vmcs-test region slot0) = 0x0 ]"
rmmod vmcs
check "a fresh region: vmcs initialises it as protocol version 2" sh -c "
	vmcs-test region fresh && insmod /lib/modules/vmcs.ko &&
	dmesg | grep -q 'initialised the region (protocol version 2)' && vmcs-test info"
check "rmmod" rmmod vmcs
check "the header now says version 2 (which a version-1 peer refuses)" \
	sh -c "[ \$(vmcs-test region version) = 2 ]"
