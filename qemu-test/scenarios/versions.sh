# Mixed protocol versions (docs/protocol.md §2 "Versions"; plain, 2 guests on one region):
# the protocol-1 vmcs.ko (qemu-test/build-compat-module.sh, from commit cf1e445, in the
# initramfs as /lib/modules/vmcs-proto1.ko) and this module (protocol 2), each in its own
# booted guest, must refuse each other's region cleanly, whichever loads first: a clear log
# line, probe fails with EPROTONOSUPPORT, nothing is bound, and the region (its header and
# the peer table) stays as the other module left it. The guests meet at barriers over the
# test-control link (lib.sh), never over vmcs.
#   part 1: guest 0 (protocol 2) initialises a fresh region; guest 1's protocol-1 module
#           is refused; guest 0's domain never sees a peer come up;
#   part 2: guest 1 (protocol 1) initialises a fresh region; guest 0's module is refused.
. /scenarios/lib.sh
[ "$VMCS_GUEST" -le 1 ] || { plan 0; exit 0; }
OLD=/lib/modules/vmcs-proto1.ko
# bound: vmcs is bound to a device; unbound: it is not (the driver's folder may be gone).
bound() { ls /sys/bus/pci/drivers/vmcs 2>/dev/null | grep -q '^0000:'; }
unbound() { ! bound; }
# no_domain: nothing bound, no debugfs vmcs0, /dev/vmcs opens with ENODEV.
no_domain() { unbound && ! test -e /sys/kernel/debug/vmcs/vmcs0 && ! vmcs-test info; }
# old_binds: the protocol-1 module loads, initialises the region and binds.
old_binds() { insmod "$OLD" && dmesg | grep -q 'initialised the region: ' && bound; }
# old_unloads: the protocol-1 module is still bound, and unloads.
old_unloads() { bound && rmmod vmcs; }
# refused OLD NEW: the probe of a protocol-NEW module refused a protocol-OLD region.
refused() {
	check "probe refused it: 'region speaks vmcs protocol version $1, this module speaks $2'" \
		sh -c "dmesg | grep -q 'region speaks vmcs protocol version $1, this module speaks $2'"
	check "probe failed with EPROTONOSUPPORT (error -93)" \
		sh -c "dmesg | grep -qE 'vmcs.*(probe|failed).*-93|error -93'"
}
if [ "$VMCS_GUEST" = 0 ]; then
	plan 12
	check "part 1: a fresh region (zeroed through resource2)" vmcs-test region fresh
	check "insmod vmcs.ko (protocol 2)" load_vmcs
	check "it initialised the region as protocol version 2" sh -c "
		dmesg | grep -q 'initialised the region (protocol version 2)' && vmcs-test info"
	barrier 1 # guest 1 loads the protocol-1 module
	barrier 2 # it was refused
	check "the refused protocol-1 guest never came up as a peer; this domain still works" \
		sh -c "! dmesg | grep -q 'peer 1 up' && vmcs-test info"
	check "rmmod" rmmod vmcs
	check "the header still says version 2" sh -c "[ \$(vmcs-test region version) = 2 ]"
	barrier 3 # guest 1 zeroes the region, its protocol-1 module initialises it
	barrier 4
	check "part 2: the header says version 1 (the protocol-1 module's)" \
		sh -c "[ \$(vmcs-test region version) = 1 ]"
	slot0=$(vmcs-test region slot0)
	dmesg -c >/dev/null
	check "insmod vmcs.ko" load_vmcs
	refused 1 2
	check "no domain: nothing bound, no debugfs vmcs0, /dev/vmcs opens with ENODEV" no_domain
	check "the protocol-1 region was left as it was (version 1, slot 0 still $slot0)" \
		sh -c "[ \$(vmcs-test region version) = 1 ] && [ \$(vmcs-test region slot0) = $slot0 ]"
	rmmod vmcs
	barrier 5
else
	plan 8
	barrier 1
	check "part 1: insmod the protocol-1 vmcs.ko on guest 0's protocol-2 region" insmod "$OLD"
	refused 2 1
	check "nothing bound" unbound
	check "rmmod" rmmod vmcs
	barrier 2
	barrier 3
	check "part 2: a fresh region (zeroed through resource2)" vmcs-test region fresh
	check "the protocol-1 module initialises it and binds" old_binds
	barrier 4 # guest 0's module is refused
	barrier 5
	check "the protocol-1 module is still bound after guest 0's refusal, and unloads" old_unloads
fi
