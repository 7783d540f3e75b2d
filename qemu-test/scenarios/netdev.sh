# The vmcsN net device (docs/netdev.md): every live peer of the domain is an L2 neighbour
# on vmcs0. Run with 3 doorbell guests (ci/test.sh): guest 2 is killed and restarted
# (run.sh --crash-guest 2 --crash-on CRASH-POINT --restart).
. /scenarios/lib.sh
D=/sys/kernel/debug/vmcs/vmcs0
ME=$((VMCS_GUEST + 1))
wait_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }
# ping_until ADDR SECONDS [ping6]: one answered ping within SECONDS.
ping_until() {
	_i=0
	while [ $_i -lt "$2" ]; do
		${3:-ping} -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
		_i=$((_i + 1))
	done
	return 1
}
net_up() {
	load_vmcs || return 1
	wait_for /sys/class/net/vmcs0 5 || return 1
	echo 0 >/proc/sys/net/ipv6/conf/vmcs0/accept_dad
	ip addr add 10.77.0.$ME/24 dev vmcs0 &&
		ip -6 addr add fd77::$ME/64 dev vmcs0 &&
		ip link set vmcs0 up
}
net_stat() { awk -v k="$1" '$1 == k { print $2 }' $D/net; }

if [ "$VMCS_GUEST" = 0 ]; then
	plan 4
	check "insmod, vmcs0 up with addresses" net_up
	check "IPv4 ping guest 1 over vmcs0" ping_until 10.77.0.2 60
	check "IPv6 ping guest 1 over vmcs0" ping_until fd77::2 30 ping6
	vmcs-nettest serve 7001 4000000 >/tmp/tcp.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/tcp.log >&3
	check "TCP from guest 1 checked, answered (status $rc)" test $rc = 0
	sed 's/^/# /' $D/net >&3
	ip -s link show vmcs0 | sed 's/^/# /' >&3
else
	plan 4
	check "insmod, vmcs0 up with addresses" net_up
	check "IPv4 ping guest 0 over vmcs0" ping_until 10.77.0.1 60
	check "IPv6 ping guest 0 over vmcs0" ping_until fd77::1 30 ping6
	vmcs-nettest client 10.77.0.1 7001 4000000 >/tmp/tcp.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/tcp.log >&3
	check "TCP to guest 0 both ways, checked (status $rc)" test $rc = 0
	sed 's/^/# /' $D/net >&3
fi
