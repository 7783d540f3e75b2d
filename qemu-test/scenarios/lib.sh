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
load_vmcs() {
	insmod /lib/modules/vmcs.ko "$@"
}
# Wait for a file to appear, up to $2 seconds.
wait_for() {
	i=0
	while [ ! -e "$1" ] && [ "$i" -lt "$(($2 * 10))" ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$1" ]
}
