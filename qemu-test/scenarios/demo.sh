# `make demo`: two guests exchange greetings through the shared region.
. /scenarios/lib.sh
plan 3
check "insmod vmcs.ko" load_vmcs
say "$(dmesg | grep -o 'vmcs0: ivshmem.*' | head -n1)"
OFF=$((64 * 1024))
if [ "$VMCS_GUEST" = 0 ]; then
	msg="hello from guest0, $(date -u +%H:%M:%S)"
	printf '%s\0' "$msg" | dd of=/dev/vmcs bs=1 seek=$OFF conv=notrunc 2>/dev/null
	say "wrote \"$msg\" into the shared region"
	i=0
	while [ $i -lt 600 ]; do
		reply=$(dd if=/dev/vmcs bs=1 skip=$((OFF + 4096)) count=200 2>/dev/null | tr -d '\000')
		case "$reply" in hello*) break ;; esac
		sleep 0.1
		i=$((i + 1))
	done
	say "read  \"$reply\""
	check "guest0 got guest1's reply" sh -c "echo '$reply' | grep -q 'hello back from guest1'"
else
	i=0
	while [ $i -lt 600 ]; do
		msg=$(dd if=/dev/vmcs bs=1 skip=$OFF count=200 2>/dev/null | tr -d '\000')
		case "$msg" in hello*) break ;; esac
		sleep 0.1
		i=$((i + 1))
	done
	say "read  \"$msg\""
	reply="hello back from guest1, $(date -u +%H:%M:%S)"
	printf '%s\0' "$reply" | dd of=/dev/vmcs bs=1 seek=$((OFF + 4096)) conv=notrunc 2>/dev/null
	say "wrote \"$reply\""
	check "guest1 read guest0's greeting" sh -c "echo '$msg' | grep -q 'hello from guest0'"
fi
sleep 2
check "rmmod vmcs" rmmod vmcs
