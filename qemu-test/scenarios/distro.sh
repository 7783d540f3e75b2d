# A stock distribution kernel (run.sh --kernel debian): Debian's own vmlinuz, with the
# vmcs.ko that `make KDIR=debian` built for it. Checks that the guest really runs Debian's
# kernel, that vmcs.ko loads and binds, that messages go both ways across the region over
# /dev/vmcs and over AF_VMCS (every echo compared byte by byte), that the module unloads,
# and that the only taint is O (out-of-tree module, 4096) and E (unsigned module, 8192).
# vmcs.ko needs Debian's lib/crypto modules (ChaCha20-Poly1305, Curve25519; the initramfs
# carries them, qemu-test/prepare-debian.sh): they must be loaded, and an encrypted AF_VMCS
# stream (both guests hold a test key, require on both sockets) must go through.
. /scenarios/lib.sh
plan 14

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
check "Debian's lib/crypto modules that vmcs.ko needs are loaded ($(tr '\n' ' ' </lib/modules/deps.order 2>/dev/null))" sh -c '
	test -s /lib/modules/deps.order && for m in $(cat /lib/modules/deps.order); do grep -q "^$m " /proc/modules || exit 1; done'
printf '%s\n' 3c1d2e0f4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddee0f1 | vmcs key set >/dev/null 2>&1

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

EPORT=6100
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs-socktest crypto-serve $EPORT 2 65536 DEB >/tmp/enc.log 2>&1 &
	enc=$!
	check_done "encrypted AF_VMCS stream (ChaCha20-Poly1305 from Debian's modules): 64 KiB received intact" "$enc" 120
	sed 's/^/# /' /tmp/enc.log >&3
else
	# Until guest 0 listens with its key (EACCES or a refusal before that).
	enc_send() {
		i=0
		until vmcs-socktest crypto-send 0 $EPORT 2 65536 DEB >/tmp/enc.log 2>&1; do
			i=$((i + 1))
			[ $i -lt 60 ] || return 1
			sleep 0.5
		done
		grep -qx 'encrypted 1' /tmp/enc.log
	}
	check "encrypted AF_VMCS stream to guest 0: 64 KiB sent, VMCS_SO_ENCRYPTED 1" enc_send
	sed 's/^/# /' /tmp/enc.log >&3
fi

check "rmmod vmcs" rmmod vmcs
check "the load printed the out-of-tree and unsigned-module taints" sh -c \
	'dmesg | grep -q "loading out-of-tree module taints kernel" && dmesg | grep -q "module verification failed"'
t=$(cat /proc/sys/kernel/tainted)
diag "tainted after: $t"
check "the only taint is O and E (tainted = 12288, got $t)" test "$t" = 12288
