# The sanitizer kernel's harness self-test (ci/sanitize.sh runs it on one guest and expects
# it to FAIL in three named ways): the self-test module (qemu-test/sanitize-selftest/) plants
# kmemleak leaks (8 blocks), a KASAN slab-out-of-bounds read and a UBSAN shift-out-of-bounds,
# all real reports of this kernel; vmcs is not loaded. run.sh must then report the kmemleak
# point and the serial-log point as failed, naming the KASAN and UBSAN lines.
. /scenarios/lib.sh
plan 2
check "insmod the self-test module (leak=1 oob=1 shift=40)" \
	insmod /lib/modules/vmcs_sanitize_selftest.ko leak=1 oob=1 shift=40
check "rmmod the self-test module (its leaked block stays unreferenced)" rmmod vmcs_sanitize_selftest
