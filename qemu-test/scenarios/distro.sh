# A stock distribution kernel (run.sh --kernel debian): Debian's own vmlinuz, with the
# vmcs.ko that `make KDIR=debian` built for it. Checks that the guest really runs Debian's
# kernel, that vmcs.ko loads and binds, that messages go both ways across the region over
# /dev/vmcs and over AF_VMCS (every echo compared byte by byte), that the module unloads,
# and that the only taint is O (out-of-tree module, 4096) and E (unsigned module, 8192).
. /scenarios/lib.sh
plan 12

diag "kernel: $(cat /proc/version)"
diag "tainted before insmod: $(cat /proc/sys/kernel/tainted)"
check "the guest runs a Debian kernel" sh -c 'grep -q "Debian" /proc/version && uname -r | grep -q -- "-amd64$"'
check "not tainted before insmod" test "$(cat /proc/sys/kernel/tainted)" = 0
check "vmcs.ko's vermagic is for the running kernel ($(uname -r))" sh -c \
	'tr "\\0" "\\n" </lib/modules/vmcs.ko | grep -qx "vermagic=$(uname -r) .*"'
check "insmod vmcs.ko" load_vmcs
check "/dev/vmcs appears" wait_for /dev/vmcs 5
check "ivshmem device bound to vmcs" sh -c 'ls /sys/bus/pci/drivers/vmcs | grep -q "^0000:"'
check "GET_INFO reports the domain" vmcs-test info

PORT=5000
SPORT=6000
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs-test serve $PORT $((VMCS_NGUESTS - 1)) >/tmp/serve.log 2>&1 &
	srv=$!
	vmcs-socktest serve $SPORT $((VMCS_NGUESTS - 1)) >/tmp/sserve.log 2>&1 &
	ssrv=$!
	check_done "/dev/vmcs: echoed every message of every other guest" "$srv" 120
	sed 's/^/# /' /tmp/serve.log >&3
	check_done "AF_VMCS: echoed every other guest's stream and seqpacket data" "$ssrv" 120
	sed 's/^/# /' /tmp/sserve.log >&3
else
	sleep 1
	check "/dev/vmcs: 2,016 messages (1 B..64 KiB) to guest 0 and back, byte-checked" vmcs-test client auto $PORT
	check "AF_VMCS: 4 MiB stream echo and seqpacket messages with guest 0, byte-checked" vmcs-socktest client $SPORT
fi

check "rmmod vmcs" rmmod vmcs
check "the load printed the out-of-tree and unsigned-module taints" sh -c \
	'dmesg | grep -q "loading out-of-tree module taints kernel" && dmesg | grep -q "module verification failed"'
t=$(cat /proc/sys/kernel/tainted)
diag "tainted after: $t"
check "the only taint is O and E (tainted = 12288, got $t)" test "$t" = 12288
