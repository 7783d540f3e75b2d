# Messaging over /dev/vmcs (docs/uapi.md). Every guest runs the semantics tests over
# loopback; with two or more guests, guest 0 also serves an echo port and every other guest
# runs the message tests against it across the shared region. Cross-guest parts need the
# ivshmem transport; the loopback parts need only the core.
. /scenarios/lib.sh
TESTS=$(vmcs-test list)
NT=$(echo "$TESTS" | wc -l)
if [ "$VMCS_NGUESTS" -gt 1 ]; then CROSS=1; else CROSS=0; fi
# Zero-copy bulk transfer between guests 0 and 1 (vmcs-test bulk-recv/bulk-send).
BULK=0
if [ "$CROSS" = 1 ] && [ "$VMCS_GUEST" -le 1 ]; then BULK=1; fi
plan $((NT + 5 + 2 * CROSS + BULK))

check "insmod vmcs.ko" load_vmcs
check "/dev/vmcs appears" wait_for /dev/vmcs 5
for t in $TESTS; do
	check "loopback: $t" vmcs-test "$t"
done

ECHO_PORT=5000
# Cross-guest versions of the loopback poll, wake and order tests (vmcs-test xrecv/xsend).
X_PORT=5001
BULK_PORT=5002
if [ "$CROSS" = 1 ]; then
	if [ "$VMCS_GUEST" = 0 ]; then
		vmcs-test bulk-recv $BULK_PORT >/tmp/bulk.log 2>&1 &
		bk=$!
		vmcs-test xrecv $X_PORT $((VMCS_NGUESTS - 1)) >/tmp/xrecv.log 2>&1 &
		xr=$!
		vmcs-test serve $ECHO_PORT $((VMCS_NGUESTS - 1)) >/tmp/serve.log 2>&1 &
		srv=$!
		check_done "guest 0 echoed for every other guest" "$srv" 90
		cat /tmp/serve.log | sed 's/^/# /' >&3
		check_done "cross-guest poll, blocking-read wake, epoll, 10,000 ordered messages from every other guest" "$xr" 60
		sed 's/^/# /' /tmp/xrecv.log >&3
		check_done "zero-copy bulk transfer from guest 1: 16 MiB lent by descriptor, checked in place and released, then by write/read" "$bk" 120
		sed 's/^/# /' /tmp/bulk.log >&3
	else
		sleep 1
		check "messages to guest 0's echo server and back" vmcs-test client auto $ECHO_PORT
		check "to guest 0: poll, wake, epoll steps, 10,000 sequence-numbered messages" vmcs-test xsend auto $X_PORT
		if [ "$VMCS_GUEST" = 1 ]; then
			check "zero-copy bulk transfer to guest 0 (16 MiB by descriptor, then by write)" \
				sh -c "vmcs-test bulk-send auto $BULK_PORT >/tmp/bulk.log 2>&1; rc=\$?; cat /tmp/bulk.log; exit \$rc"
		fi
	fi
fi

# An open file, and an accepted connection's file, pin the module.
exec 4</dev/vmcs
check "rmmod refused while /dev/vmcs is open" sh -c '! rmmod vmcs 2>/dev/null'
exec 4<&-
vmcs-test hold pair 0 >/tmp/hold.log 2>&1 &
holder=$!
wait_for_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; }
wait_for_line /tmp/hold.log "holding"
check "rmmod refused while an accepted connection's fd is open" sh -c '! rmmod vmcs 2>/dev/null'
kill "$holder"
wait "$holder" 2>/dev/null
check "rmmod succeeds once every file is closed" rmmod vmcs
