# vmcs0 on ivshmem-plain, two guests and three idle filler peers (docs/netdev.md; ci/test.sh
# runs it with --host-hook "vmcs-evil --shm \$VMCS_SHM --fill 3" --hook-on FILL-GO and
# --crash-guest 1 --crash-on CRASH-POINT --restart):
#
# - a peer with a smaller ring: guest 0 comes up first, the three fillers take the next
#   slots and guest 0's first three (fair-share) rings, so guest 1, which joins only then,
#   gets a floor ring from guest 0 (16 KiB: frames of at most 8160 bytes, while guest 0's
#   MTU is 65518). A TCP transfer both ways at the default MTU must lose nothing: the first
#   frame too big for that ring is answered with ICMP "fragmentation needed" (tx_too_big),
#   TCP lowers its path MTU to guest 1, and its GSO packets (up to 64 KiB) are segmented by
#   the stack for that peer only (tx_gso_split);
# - the restarted guest keeps its MAC: guest 1 is killed (SIGKILL), reaped, booted again,
#   claims its old slot (the first absent one) and answers guest 0 with the same MAC.
. /scenarios/lib.sh
D=/sys/kernel/debug/vmcs/vmcs0
ME=$((VMCS_GUEST + 1))
net_up() {
	load_vmcs || return 1
	wait_for /sys/class/net/vmcs0 5 || return 1
	ip addr add 10.77.0.$ME/24 dev vmcs0 && ip link set vmcs0 up
}
# wait_until FUNCTION SECONDS
wait_until() { _i=0; while ! "$1" && [ $_i -lt $(($2 * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done; "$1"; }
nv() { awk -v k="$1" '$1 == k { print $2 }' $D/net; }
BYTES=4000000

if [ "$VMCS_GUEST" = 0 ]; then
	plan 10
	check "insmod, vmcs0 up (first guest: slot 0)" net_up
	# The host hook starts the fillers on this marker; they take the next three slots.
	diag "FILL-GO"
	fillers() { [ "$(awk '!/ self/ && / live / {n++} END {print n + 0}' $D/peers)" -ge 3 ]; }
	check "three filler peers live" wait_until fillers 60
	barrier 1
	check "guest 1 answers (IPv4 ping)" ping_until 10.77.0.2 90
	id1=$(peer_of 10.77.0.2)
	mac1=$(lladdr 10.77.0.2)
	ring() { sed -n "s/^peer $id1 live [0-9]* tx_ring \([0-9]*\) rx_ring [0-9]* max_payload \([0-9]*\) .*/\1 \2/p" $D/rings; }
	set -- $(ring)
	mtu=$(cat /sys/class/net/vmcs0/mtu)
	check "our ring to guest 1 (peer $id1) is smaller: ${1:-?} bytes, frames up to ${2:-?} < MTU $mtu" \
		sh -c "[ '${2:-0}' -gt 0 ] && [ '${2:-0}' -lt $mtu ]"
	vmcs-nettest client 10.77.0.2 7001 $BYTES >/tmp/tcp.log 2>&1 &
	cl=$!
	check_done "TCP to guest 1 at MTU $mtu, $BYTES bytes both ways, every byte checked" $cl 150
	sed 's/^/# /' /tmp/tcp.log >&3
	ip route get 10.77.0.2 2>&1 | sed "s/^/# route: /" >&3
	sed 's/^/# /' $D/net >&3
	check "a frame too big for guest 1's ring got ICMP (tx_too_big $(nv tx_too_big)), GSO packets to it were segmented (tx_gso_split $(nv tx_gso_split))" \
		sh -c "[ '$(nv tx_too_big)' -gt 0 ] && [ '$(nv tx_gso_split)' -gt 0 ]"
	# Guest 1 is killed now (its CRASH-POINT after the transfer) and comes back.
	came_back() { peer_gone "$id1" && [ "$(dmesg | grep -c "vmcs0: peer $id1 up")" -ge 2 ]; }
	check "guest 1 (peer $id1) was reset and came back as peer $id1" wait_until came_back 180
	ip neigh flush dev vmcs0 to 10.77.0.2 >/dev/null 2>&1
	check "the restarted guest 1 answers (IPv4 ping)" ping_until 10.77.0.2 60
	check "... with the same MAC ($mac1 then $(lladdr 10.77.0.2))" \
		sh -c "[ -n '$mac1' ] && [ '$mac1' = '$(lladdr 10.77.0.2)' ]"
	vmcs-nettest poke 10.77.0.2 7010
	check "rmmod" rmmod vmcs
elif [ "$VMCS_INCARNATION" = 1 ]; then
	plan 4
	# Join only after the fillers (guest 0 says when).
	barrier 1
	check "insmod, vmcs0 up" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id>" mac_ok
	timeout 150 vmcs-nettest serve 7001 $BYTES >/tmp/tcp.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/tcp.log >&3
	check "TCP from guest 0, $BYTES bytes both ways, every byte checked (status $rc)" test $rc = 0
	check "guest 0 answers (IPv4 ping)" ping_until 10.77.0.1 30
	diag "CRASH-POINT"
	sleep 600
else
	plan 3
	check "insmod, vmcs0 up (restarted incarnation $VMCS_INCARNATION)" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id> again" mac_ok
	check "guest 0 answers (IPv4 ping)" ping_until 10.77.0.1 90
	timeout 180 vmcs-nettest wait 7010 >/dev/null 2>&1 || diag "guest 0 never poked us"
	rmmod vmcs
fi
