# Transport crash scenario: every guest joins; guest 1 then powers off abruptly (its scenario
# ends at once, init runs `reboot -f`: no unbind, no leave, QEMU exits). The survivors must
# detect it by heartbeat timeout and reset the peer within a few seconds, and keep talking to
# each other.
. /scenarios/lib.sh
D=/sys/kernel/debug/vmcs/vmcs0
up() { [ "$(grep -c ' live ' $D/peers)" -ge "$1" ] && ! grep -q ' down' $D/peers; }
if [ "$VMCS_GUEST" = 1 ]; then
	plan 2
	check "insmod vmcs.ko" load_vmcs
	i=0
	while ! up "$VMCS_NGUESTS" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	check "all guests live" up "$VMCS_NGUESTS"
	# Give the others time to see us live, then vanish (on the sanitizer kernel, init would
	# otherwise unload vmcs and scan first: that leaves cleanly, and late).
	sleep 2
	echo "guest 1 of transport-crash vanishes without leaving" >/tmp/vmcs-stay-loaded
	exit 0
fi
plan 5
check "insmod vmcs.ko" load_vmcs
i=0
while ! up "$VMCS_NGUESTS" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
check "all guests live" up "$VMCS_NGUESTS"
start=$(date +%s)
i=0
while ! dmesg | grep -qE 'vmcs0: peer [0-9]+ (heartbeat timeout|left)' && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
end=$(date +%s)
# The first survivor to time the peer out reaps its slot; the others then see it absent.
check "a vanished peer is reset (heartbeat timeout, or left once reaped) within 30 s" \
	sh -c "dmesg | grep -E 'vmcs0: peer [0-9]+ (heartbeat timeout|left)'"
diag "detected after about $((end - start)) s of waiting"
dead=$(dmesg | sed -nE 's/.*vmcs0: peer ([0-9]+) (heartbeat timeout|left).*/\1/p' | head -n1)
check "the dead peer is no longer live" sh -c "grep '^$dead ' $D/peers | grep -q down || ! grep -q '^$dead ' $D/peers"
cat $D/peers | sed 's/^/# /' >&3
# The survivors still talk.
survivors=$(awk '!/ self/ && / live / && !/ down/ {print $1}' $D/peers)
okc=0
for p in $survivors; do echo "$p 50" >$D/selftest || okc=1; done
check "survivors still exchange frames" test "$okc" = 0
sleep 3
dmesg | grep vmcs | sed 's/^/# /' >&3
