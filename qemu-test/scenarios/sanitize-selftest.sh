# The sanitizer kernel's harness self-test (ci/sanitize.sh runs it on one guest and expects
# it to FAIL in named ways): the self-test module (qemu-test/sanitize-selftest/) plants
# kmemleak leaks (8 blocks), a KASAN slab-out-of-bounds read and a UBSAN shift-out-of-bounds,
# all real reports of this kernel; vmcs is not loaded. run.sh must then report the serial-log
# point as failed, naming the KASAN and UBSAN lines, and fail the kmemleak point.
. /scenarios/lib.sh
plan 4
check "insmod the self-test module (leak=1)" insmod /lib/modules/vmcs_sanitize_selftest.ko leak=1
check "rmmod the self-test module (its leaked blocks stay unreferenced)" rmmod vmcs_sanitize_selftest
check "insmod the self-test module (oob=1 shift=40)" \
	insmod /lib/modules/vmcs_sanitize_selftest.ko oob=1 shift=40
check "rmmod the self-test module again" rmmod vmcs_sanitize_selftest
