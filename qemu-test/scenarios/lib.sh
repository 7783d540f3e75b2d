# Helpers for scenario scripts, sourced by them. TAP goes to fd 3 (ttyS1).
T_N=0
# Name in test points: guestG, or guestG.N for the N-th incarnation of a restarted guest.
T_WHO=guest$VMCS_GUEST
[ "${VMCS_INCARNATION:-1}" = 1 ] || T_WHO=guest$VMCS_GUEST.$VMCS_INCARNATION
T_FAIL=0
plan() { echo "1..$1" >&3; }
ok() { T_N=$((T_N + 1)); echo "ok $T_N - $T_WHO: $*" >&3; }
not_ok() { T_N=$((T_N + 1)); T_FAIL=$((T_FAIL + 1)); echo "not ok $T_N - $T_WHO: $*" >&3; }
diag() { echo "# $*" >&3; }
# Lines a human reads in `make demo`.
say() { echo "DEMO $T_WHO: $*" >&3; }
# check DESCRIPTION COMMAND...: one test point from a command's exit status; its output is
# kept as TAP diagnostics.
check() {
	desc=$1
	shift
	if out=$("$@" 2>&1); then ok "$desc"; else not_ok "$desc"; fi
	[ -z "$out" ] || echo "$out" | sed 's/^/# /' >&3
}
# barrier N [FILE]: guests 0 and 1 both get here, over the test-control link (busybox nc),
# never over vmcs itself: guest 0 listens on TCP 9100+N, guest 1 connects. Guest 1 may hand
# guest 0 a FILE, which guest 0 gets as /tmp/barrier.N.
barrier() {
	diag "barrier $1 at uptime $(cut -d' ' -f1 /proc/uptime) s"
	if [ "$VMCS_GUEST" = 0 ]; then
		timeout 300 nc -l -p $((9100 + $1)) </dev/null >/tmp/barrier.$1 2>&1
	else
		i=0
		until nc 169.254.1.1 $((9100 + $1)) <"${2:-/dev/null}" >/dev/null 2>&1; do
			i=$((i + 1))
			[ $i -lt 1500 ] || return 1
			sleep 0.2
		done
	fi
}
# A distro kernel's initramfs lists the modules vmcs.ko needs (its lib/crypto) in
# /lib/modules/deps.order, dependencies first (qemu-test/prepare-debian.sh).
load_vmcs() {
	if [ -f /lib/modules/deps.order ]; then
		for m in $(cat /lib/modules/deps.order); do
			grep -q "^$m " /proc/modules || insmod "/lib/modules/$m.ko" || return 1
		done
	fi
	insmod /lib/modules/vmcs.ko "$@"
}
# Wait for a file to appear, up to $2 seconds.
wait_for() {
	i=0
	while [ ! -e "$1" ] && [ "$i" -lt "$(($2 * 10))" ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$1" ]
}
# wait_live N: wait (up to 60 s) until `vmcs peers` lists N live peers, this guest included;
# leaves the last listing in /tmp/peers.out for the caller's checks.
wait_live() {
	i=0
	until [ "$(vmcs peers 2>/dev/null | awk 'NR > 1 && $2 == "live"' | wc -l)" -ge "$1" ]; do
		i=$((i + 1))
		[ $i -lt 300 ] || break
		sleep 0.2
	done
	vmcs peers >/tmp/peers.out 2>&1
}
# wait_pid PID SECONDS: wait for a background job of this shell (call it directly, not in a
# subshell: `wait` only knows this shell's children). Sets rc to its exit status, or to
# "timeout" after SECONDS (the job is then killed).
wait_pid() {
	_i=0
	while kill -0 "$1" 2>/dev/null && [ $_i -lt $(($2 * 5)) ]; do sleep 0.2; _i=$((_i + 1)); done
	if kill -0 "$1" 2>/dev/null; then
		kill "$1"
		rc=timeout
	else
		wait "$1"
		rc=$?
	fi
}
# check_done DESCRIPTION PID SECONDS: one test point, a background job that exits 0 in time.
check_done() {
	wait_pid "$2" "$3"
	if [ "$rc" = timeout ]; then
		not_ok "$1 (still running after $3 s)"
	else
		check "$1 (exit status $rc)" test "$rc" = 0
	fi
}

# The vmcs0 net device (netdev, netdev-plain).
# ping_until ADDR SECONDS [ping6]: one answered ping within SECONDS.
ping_until() {
	_i=0
	while [ $_i -lt "$2" ]; do
		${3:-ping} -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
		_i=$((_i + 1))
	done
	return 1
}
# The MAC names this guest's peer id (last byte) and is locally administered unicast.
mac_ok() {
	id=$(dmesg | sed -n 's/.*vmcs0: joined as peer \([0-9]*\) .*/\1/p' | tail -n1)
	mac=$(cat /sys/class/net/vmcs0/address)
	diag "peer $id, MAC $mac"
	case $mac in 02:*:$(printf %02x "$id")) return 0 ;; esac
	return 1
}
lladdr() { ip neigh show "$1" dev vmcs0 | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p'; }
# The peer id a neighbour's MAC names (its last byte).
peer_of() { printf %d "0x$(lladdr "$1" | sed 's/.*://')"; }
# peer_gone N: the kernel log says peer N was reset (heartbeat timeout or left).
peer_gone() { dmesg | grep -qE "vmcs0: peer $1 (heartbeat timeout|left)"; }
