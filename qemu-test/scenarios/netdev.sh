# The vmcsN net device (docs/netdev.md): every live peer of the domain is an L2 neighbour
# on vmcs0. Three doorbell guests in make test (ci/test.sh; the restarted guest gets its old
# id back from the doorbell server's --sticky-ids, hence the same MAC; on plain it claims its
# old slot again); guest 2 is killed and restarted (run.sh --crash-guest 2 --crash-on
# CRASH-POINT --restart).
#
# - every guest: vmcs0 appears with the MAC 02:rr:rr:rr:rr:<peer id>, carrier comes up
#   with the first live peer; ARP and neighbour discovery reach every other guest (IPv4
#   and IPv6 ping);
# - guests 0 and 1: a TCP transfer both ways, every byte checked and FNV checksums
#   compared end to end;
# - a TCP flood from guest 1 to guest 0 keeps flowing while guest 2 is killed (SIGKILL),
#   and through an MTU change and a link down/up on guest 1;
# - fairness (progress only, no timing): an AF_VMCS stream from guest 1 to guest 0, on the
#   same ring as the flood, moves FAIR bytes while the vmcs0 flood runs; then a TCP
#   transfer of FAIR bytes over vmcs0 completes while an AF_VMCS stream floods that ring;
# - the restarted guest 2 gets the same MAC (guest 0's neighbour entry for it is the same);
# - guest 1 unloads the module while vmcs0 is up and carrying a flood;
# - counters: /sys/class/net/vmcs0/statistics (ndo_get_stats64) and debugfs net (the
#   ethtool counters); the serial logs are scanned by the launcher.
. /scenarios/lib.sh
D=/sys/kernel/debug/vmcs/vmcs0
S=/sys/class/net/vmcs0/statistics
ME=$((VMCS_GUEST + 1))
wait_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }
net_up() {
	load_vmcs || return 1
	wait_for /sys/class/net/vmcs0 5 || return 1
	echo 0 >/proc/sys/net/ipv6/conf/vmcs0/accept_dad
	ip addr add 10.77.0.$ME/24 dev vmcs0 &&
		ip -6 addr add fd77::$ME/64 dev vmcs0 &&
		ip link set vmcs0 up
}
carrier() { [ "$(cat /sys/class/net/vmcs0/carrier 2>/dev/null)" = 1 ]; }
wait_carrier() { i=0; while ! carrier && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; carrier; }
ping_both() { ping_until "$1" 90 && ping_until "$2" 90; }
BYTES=4000000
# Bytes each side of the fairness check must move while the other floods the same ring.
FAIR=2000000

if [ "$VMCS_GUEST" = 0 ]; then
	plan 16
	check "insmod, vmcs0 up with addresses" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id>" mac_ok
	check "carrier up with a live peer" wait_carrier
	vmcs-nettest serve 7001 $BYTES >/tmp/tcp.log 2>&1 &
	srv=$!
	vmcs-nettest sink 7002 3 >/tmp/sink.log 2>&1 &
	sink=$!
	vmcs-socktest fair-sink 7100 2 >/tmp/fair.log 2>&1 &
	fair=$!
	check "ARP reaches guest 1 (IPv4 ping)" ping_until 10.77.0.2 90
	check "ARP reaches guest 2 (IPv4 ping)" ping_until 10.77.0.3 90
	check "neighbour discovery reaches guests 1 and 2 (IPv6 ping)" \
		sh -c 'ping6 -c 1 -W 5 fd77::2 >/dev/null && ping6 -c 1 -W 5 fd77::3 >/dev/null'
	mac2=$(lladdr 10.77.0.3)
	id1=$(peer_of 10.77.0.2)
	id2=$(peer_of 10.77.0.3)
	diag "guest 2 is peer $id2 at $mac2"
	check_done "TCP from guest 1: $BYTES bytes checked, answered" $srv 120
	sed 's/^/# /' /tmp/tcp.log >&3
	# Guest 2 is killed during guest 1's flood and comes back (incarnation 2), which pings
	# us: its neighbour entry must name the same MAC.
	i=0
	while ! { peer_gone "$id2" && [ "$(dmesg | grep -c "vmcs0: peer $id2 up")" -ge 2 ]; } && [ $i -lt 900 ]; do
		sleep 0.2
		i=$((i + 1))
	done
	ip neigh flush dev vmcs0 to 10.77.0.3 >/dev/null 2>&1
	check "the restarted guest 2 answers (IPv4 ping)" ping_until 10.77.0.3 60
	check "... with the same MAC ($mac2 then $(lladdr 10.77.0.3))" \
		sh -c "[ -n '$mac2' ] && [ '$mac2' = '$(lladdr 10.77.0.3)' ]"
	# The restarted guest 2 stays up until we have pinged it (it waits for this poke).
	vmcs-nettest poke 10.77.0.3 7010
	check_done "the floods from guest 1 were checked (through the kill, the MTU change, down/up; then its rmmod)" $sink 300
	sed 's/^/# /' /tmp/sink.log >&3
	check "the sink got the first flood in full, checked" grep -q "^SINK-OK [1-9]" /tmp/sink.log
	wait_pid $fair 10
	sed 's/^/# /' /tmp/fair.log >&3
	check "fairness: both AF_VMCS streams of guest 1 arrived during its floods" \
		sh -c "[ \$(grep -c '^FAIR-RX [1-9]' /tmp/fair.log) = 2 ]"
	check "statistics count traffic (rx $(cat $S/rx_packets) packets, tx $(cat $S/tx_packets))" \
		sh -c "[ $(cat $S/rx_packets) -gt 1000 ] && [ $(cat $S/tx_bytes) -gt $BYTES ]"
	sed 's/^/# /' $D/net >&3
	# During guest 1's MTU 1400 window its TCP sends GSO packets of up to 64 KiB, which
	# travel as one ring frame each and arrive unsegmented (TSO).
	nv() { awk -v k="$1" '$1 == k { print $2 }' $D/net; }
	check "TSO: GSO packets from guest 1 arrived unsegmented (rx_gso $(nv rx_gso), rx_bad_gso $(nv rx_bad_gso))" \
		sh -c "[ '$(nv rx_gso)' -gt 0 ] && [ '$(nv rx_bad_gso)' = 0 ]"
	vmcs-nettest ethtool vmcs0 >/tmp/ethtool.txt 2>&1
	grep -v ' 0$' /tmp/ethtool.txt | sed 's/^/# ethtool: /' >&3
	ev() { awk -v k="$1" '$1 == "stat" && $2 == k { print $3 }' /tmp/ethtool.txt; }
	check "ethtool: driver vmcs, bus vmcs0:peer<id>, per-peer counters (peer$id1 rx $(ev peer${id1}_rx_packets) tx $(ev peer${id1}_tx_packets), peer$id2 rx $(ev peer${id2}_rx_packets))" \
		sh -c "grep -qx 'driver vmcs' /tmp/ethtool.txt && grep -q '^bus vmcs0:peer' /tmp/ethtool.txt &&
			[ '$(ev peer${id1}_rx_packets)' -gt 1000 ] && [ '$(ev peer${id1}_tx_packets)' -gt 100 ] &&
			[ '$(ev peer${id2}_rx_packets)' -gt 0 ] && [ '$(ev rx_runt)' = 0 ]"
	check "rmmod with vmcs0 up" rmmod vmcs
elif [ "$VMCS_GUEST" = 1 ]; then
	plan 14
	check "insmod, vmcs0 up with addresses" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id>" mac_ok
	check "ARP reaches guests 0 and 2 (IPv4 ping)" ping_both 10.77.0.1 10.77.0.3
	check "neighbour discovery reaches guests 0 and 2 (IPv6 ping)" \
		sh -c 'ping6 -c 1 -W 5 fd77::1 >/dev/null && ping6 -c 1 -W 5 fd77::3 >/dev/null'
	vmcs-nettest client 10.77.0.1 7001 $BYTES >/tmp/tcp.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/tcp.log >&3
	check "TCP to guest 0 both ways, every byte checked (status $rc)" test $rc = 0
	# The flood runs until /tmp/stop (at most 240 s) while guest 2 dies and we change the
	# MTU and bounce the link.
	rm -f /tmp/stop
	id2=$(peer_of 10.77.0.3)
	vmcs-nettest flood 10.77.0.1 7002 240 /tmp/stop >/tmp/flood.log 2>&1 &
	fl=$!
	check "flooding guest 0" wait_line /tmp/flood.log flooding 60
	# Fairness: an AF_VMCS stream to guest 0 shares the ring with the flood; it must move
	# FAIR bytes while the flood still runs (a starved stream times out).
	cid0=$(peer_of 10.77.0.1)
	timeout 120 vmcs-socktest fair-send "$cid0" 7100 $FAIR >/tmp/fair1.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/fair1.log >&3
	check "fairness: AF_VMCS moved $FAIR bytes to guest 0 (cid $cid0) during the vmcs0 flood (status $rc)" \
		sh -c "[ $rc = 0 ] && kill -0 $fl"
	# Guest 2 (peer $id2) prints the launcher's kill marker once poked.
	vmcs-nettest poke 10.77.0.3 7009
	i=0
	while ! peer_gone "$id2" && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
	check "guest 2 (peer $id2) was killed and reset" peer_gone "$id2"
	tx0=$(cat $S/tx_bytes)
	sleep 3
	tx1=$(cat $S/tx_bytes)
	check "the flood to guest 0 keeps flowing without guest 2 ($((tx1 - tx0)) bytes in 3 s)" \
		sh -c "kill -0 $fl && [ $tx1 -gt $tx0 ]"
	max=$(cat /sys/class/net/vmcs0/mtu)
	ip link set vmcs0 mtu 1400
	sleep 2
	ip link set vmcs0 mtu "$max"
	check "MTU changed to 1400 and back to $max during the flood" \
		sh -c "[ $(cat /sys/class/net/vmcs0/mtu) = $max ] && ! ip link set vmcs0 mtu $((max + 1)) 2>/dev/null"
	ip link set vmcs0 down
	sleep 1
	ip link set vmcs0 up
	wait_carrier
	sleep 3
	touch /tmp/stop
	wait_pid $fl 120
	sed 's/^/# /' /tmp/flood.log >&3
	check "the flood survived the kill, the MTU change and down/up, and ended cleanly (status $rc)" test "$rc" = 0
	# Fairness the other way: TCP over vmcs0 moves FAIR bytes while an AF_VMCS stream floods
	# the same ring.
	rm -f /tmp/fstop
	vmcs-socktest fair-send "$cid0" 7100 0 /tmp/fstop >/tmp/fair2.log 2>&1 &
	ff=$!
	wait_line /tmp/fair2.log sending 60
	sleep 1
	timeout 120 vmcs-nettest flood 10.77.0.1 7002 120 /tmp/never $FAIR >/tmp/fair3.log 2>&1
	rc=$?
	sed 's/^/# /' /tmp/fair3.log >&3
	check "fairness: vmcs0 moved $FAIR bytes to guest 0 during an AF_VMCS flood (status $rc)" \
		sh -c "[ $rc = 0 ] && kill -0 $ff"
	touch /tmp/fstop
	wait_pid $ff 60
	sed 's/^/# /' /tmp/fair2.log >&3
	# rmmod while vmcs0 is up and carrying traffic.
	vmcs-nettest flood 10.77.0.1 7002 120 /tmp/never >/tmp/flood2.log 2>&1 &
	fl2=$!
	wait_line /tmp/flood2.log flooding 60
	sleep 2
	check "rmmod while vmcs0 is up and carrying a flood" rmmod vmcs
	check "the domain was released, vmcs0 is gone" \
		sh -c '! test -e /sys/class/net/vmcs0 && dmesg | grep -q "vmcs0: domain released"'
	# (guest 0's sink ends the vanished connection by its read timeout.)
	kill $fl2 2>/dev/null
	wait $fl2 2>/dev/null
elif [ "$VMCS_INCARNATION" = 1 ]; then
	plan 4
	check "insmod, vmcs0 up with addresses" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id>" mac_ok
	check "ARP reaches guests 0 and 1 (IPv4 ping)" ping_both 10.77.0.1 10.77.0.2
	check "neighbour discovery reaches guests 0 and 1 (IPv6 ping)" \
		sh -c 'ping6 -c 1 -W 5 fd77::1 >/dev/null && ping6 -c 1 -W 5 fd77::2 >/dev/null'
	# Killed (the launcher's marker below) once guest 1 floods guest 0 and pokes us.
	vmcs-nettest wait 7009 >/dev/null 2>&1
	diag "CRASH-POINT"
	sleep 600
else
	plan 3
	check "insmod, vmcs0 up with addresses (restarted incarnation $VMCS_INCARNATION)" net_up
	check "MAC 02:rr:rr:rr:rr:<peer id> again" mac_ok
	check "guest 0 answers (IPv4 ping)" ping_until 10.77.0.1 90
	# Stay up until guest 0 has pinged us and checked our MAC (it pokes port 7010); without
	# this we could power off before its ping (a heartbeat timeout, then no answer).
	timeout 180 vmcs-nettest wait 7010 >/dev/null 2>&1 || diag "guest 0 never poked us"
fi
