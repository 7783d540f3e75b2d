# Transport scenario: every guest joins the peer table, sees every other guest come up,
# exchanges self-test frames with every other guest over the rings (checked byte by byte
# on arrival), and leaves cleanly; the others log the leave.
. /scenarios/lib.sh
if [ "$VMCS_VARIANT" = doorbell ]; then plan 11; else plan 10; fi
D=/sys/kernel/debug/vmcs/vmcs0
N=200

check "insmod vmcs.ko" load_vmcs
check "kernel log shows the join" sh -c "dmesg | grep -E 'vmcs0: joined as peer [0-9]+ \(generation [0-9]+\)'"
check "debugfs peers/rings/selftest exist" sh -c "test -r $D/peers && test -r $D/rings && test -e $D/selftest"

# Every guest sees the others live.
up() { [ "$(grep -c ' live ' $D/peers)" -ge "$VMCS_NGUESTS" ] && ! grep -q ' down' $D/peers; }
i=0
while ! up && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
check "all $VMCS_NGUESTS guests live in the peer table" up
cat $D/peers | sed 's/^/# /' >&3
me=$(awk '/ self/ {print $1}' $D/peers)
others=$(awk '!/ self/ && / live / {print $1}' $D/peers)
all_up=0
for p in $others; do dmesg | grep -q "vmcs0: peer $p up (generation" || all_up=1; done
check "kernel log shows every other peer up" test "$all_up" = 0

# The published geometry (docs/protocol.md §1): the ring this guest opened to each other
# guest and the one each opened to it (read and validated from its producer line) all have
# the same size, the fair share; up to four guests on a 64 MiB region get at least 1 MiB
# each way per pair, the fourth pair too.
region_kib=$(dmesg | sed -n 's/.*vmcs0: .* bound, .*region \([0-9]*\) KiB.*/\1/p' | head -n1)
ring_sizes() {
	for p in $others; do
		sed -n "s/^peer $p live [0-9]* tx_ring \([0-9]*\) rx_ring \([0-9]*\) .*/\1 \2/p" $D/rings
	done | tr ' ' '\n' | sort -u
}
fair() {
	[ "$(echo "$sizes" | grep -c .)" = 1 ] || return 1
	[ "$sizes" -ge 512 ] || return 1
	if [ "$region_kib" = 65536 ] && [ "$VMCS_NGUESTS" -le 4 ]; then
		[ "$sizes" -ge 1048576 ] || return 1
	fi
}
# A ring from a guest that came up last may still be on its way (its open, our resync):
# wait until none reads 0, then judge once.
attached() { ! ring_sizes | grep -qx 0; }
i=0
while ! attached && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sizes=$(ring_sizes)
check "every ring to and from the $((VMCS_NGUESTS - 1)) others is the fair share (sizes: $(echo $sizes), region $region_kib KiB)" fair

# Self-test frames to every other peer, of varying size (1..4064 bytes; ci/test.sh runs this
# on 4 MiB regions, whose 64 KiB rings they wrap many times and fill).
ok_send=0
for p in $others; do echo "$p $N" >$D/selftest || ok_send=1; done
check "sent $N self-test frames to every other peer" test "$ok_send" = 0
got() {
	for p in $others; do
		grep -q "^peer $p .* selftest_rx $N selftest_bad 0" $D/rings || return 1
	done
}
i=0
while ! got && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
check "received $N intact self-test frames from every other peer" got
cat $D/rings | sed 's/^/# /' >&3
if [ "$VMCS_VARIANT" = doorbell ]; then
	# Two MSI-X vectors: data doorbells on vector 0, "space for your waiting sender" on 1
	# (full rings during the self-test make senders wait; rings above 64 KiB, as on the
	# default 64 MiB region, the self-test never fills, so vector 1 may stay silent there).
	vec() { sed -n "s/.* $1 \([0-9]*\).*/\1/p" $D/rings | head -n1; }
	vec_ok() {
		[ "$(vec vectors)" = 2 ] && [ "$(vec doorbells_rx_vec0)" -gt 0 ] &&
			{ [ "$(vec doorbells_rx_vec1)" -gt 0 ] || [ "$sizes" -gt 65536 ]; }
	}
	check "doorbells on both MSI-X vectors (vectors $(vec vectors), vector 0: $(vec doorbells_rx_vec0), vector 1: $(vec doorbells_rx_vec1), passes without ring scan: $(vec space_only_passes); rings $(echo $sizes))" \
		vec_ok
fi
# Let the others finish receiving from us before anyone leaves.
sleep 3
check "rmmod leaves the peer table" sh -c "rmmod vmcs && dmesg | grep -q 'vmcs0: left the peer table'"
# Guests that leave later see the earlier ones leave (or time out if they already went).
check "no heartbeat timeouts while everyone was up" sh -c "! dmesg | grep -q 'heartbeat timeout'"
dmesg | grep vmcs | sed 's/^/# /' >&3
