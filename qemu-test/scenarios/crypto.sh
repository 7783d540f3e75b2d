# Per-connection encryption (docs/security.md "Encryption"; run.sh --variant plain --guests 2
# --control --host-hook "qemu-test/crypto-host.py ..." --hook-on CRYPTO-HOOK-START;
# ci/test.sh). Guest 1 sends, guest 0 receives, over AF_VMCS streams; the host hook
# (qemu-test/crypto-host.py) reads and writes the region meanwhile.
# - Confidentiality: a 2 MiB stream of a known pattern in plaintext (no key yet: the host
#   finds the pattern in the region), then, both guests holding the key, an encrypted one
#   of another pattern (the host never finds it). Both end with an authenticated end of file.
# - Integrity: three encrypted streams that the host tampers with in the ring while guest 0
#   is stopped (SIGSTOP): a flipped ciphertext byte, a replayed frame (the first frame's
#   bytes copied over the second's) and a truncated stream (the SHUTDOWN moved over the
#   last data frame). Each resets: guest 0's recv fails with ECONNRESET, nothing tampered
#   and no end of file is delivered, and the bad_frames and decrypt counters count each.
# - Authentication: guest 1 with another key cannot connect (EACCES; auth_failed on guest 0,
#   peer_refused on guest 1); with guest 0 under require, guest 1's plaintext connect is
#   refused (EACCES; policy_refused), and guest 1's own require without a key refuses too.
# - vmcs status and vmcs ss show the policy, the key's presence, the counters and which
#   connection is encrypted; no key bytes in dmesg, debugfs or module parameters (the hook
#   checks the serial logs, TAP files and the region).
# The heartbeat timeout is raised (hb_timeout_ms) so that guest 0 stopped by the host for a
# few seconds is not taken for dead by guest 1.
. /scenarios/lib.sh
# Test keys only (never a real secret): the host hook gets both to search the logs for.
K=8d4e0c7a9b12f3e65a0d7c41b2e89f06c3a5d7e91f2b4c6d8e0a1b3c5d7e9f10
K2=0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0
D=/sys/kernel/debug/vmcs/vmcs0
S=/sys/kernel/vmcs/vmcs0
N=2097152
PPORT=7701
EPORT=7702
WPORT=7708

stty -F /dev/ttyS2 raw -echo 2>/dev/null
cat /dev/ttyS2 >/tmp/ctl 2>/dev/null &

show() { sed 's/^/# /' "$1" >&3; }
# counter FILE NAME: the value of "NAME VALUE" in debugfs FILE.
counter() { awk -v n="$2" '$1 == n { print $2 }' "$D/$1"; }
is_counter() { v=$(counter "$1" "$2"); [ "$v" = "$3" ] || { echo "$1 $2 is '$v', expected $3"; return 1; }; }
wait_line() { i=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $i -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }
# No byte of either key, in hex, in dmesg, the domain's debugfs files or the parameters.
no_key() {
	for f in crypto connections resets peers policy rings net; do cat "$D/$f" 2>/dev/null; done >/tmp/dump
	dmesg >>/tmp/dump
	cat /sys/module/vmcs/parameters/* >>/tmp/dump 2>/dev/null
	for k in $K $K2; do
		if grep -qi "$k" /tmp/dump; then echo "found a key in dmesg/debugfs"; return 1; fi
	done
	test -s /tmp/dump
}

common() {
	check "insmod vmcs.ko hb_timeout_ms=30000" load_vmcs hb_timeout_ms=30000
	wait_live 2
	check "both guests live" sh -c "test \$(awk 'NR > 1 && \$2 == \"live\"' /tmp/peers.out | wc -l) = 2"
	OTHER=$(awk 'NR > 1 && $2 == "live" && !/this guest/ { print $1 }' /tmp/peers.out)
	check "the domain starts with policy allow, no key, counters 0" sh -c "
		cat $D/crypto; grep -qx 'policy allow' $D/crypto && grep -qx 'key none' $D/crypto &&
		grep -qx 'handshakes 0' $D/crypto"
}
set_key() { printf '%s\n' "$1" | vmcs key set; }
tampered() { is_counter crypto bad_frames "$1" && is_counter resets decrypt "$1"; }
local_require() {
	vmcs-socktest crypto-refused "$OTHER" $WPORT 2 EACCES && is_counter crypto policy_refused 1
}

KINDS="flip replay trunc"
if [ "$VMCS_GUEST" = 0 ]; then
	plan 29
	common
	# ---- confidentiality ----
	vmcs-socktest crypto-serve $PPORT 0 $N PLAIN >/tmp/plain.log 2>&1 &
	p=$!
	barrier 1
	check_done "plaintext (no key): 2 MiB of the pattern received intact, then end of file" "$p" 240
	show /tmp/plain.log
	check "that connection was not encrypted" grep -qx 'encrypted 0' /tmp/plain.log
	check "vmcs key set installs the key (read from stdin)" set_key $K
	check "debugfs crypto: key installed, never the key itself" sh -c "grep -qx 'key installed' $D/crypto"
	vmcs-socktest crypto-serve $EPORT 0 $N CRYPT >/tmp/enc.log 2>&1 &
	p=$!
	barrier 3
	check_done "encrypted: 2 MiB of the pattern received intact, then an authenticated end of file" "$p" 240
	show /tmp/enc.log
	check "that connection was encrypted (VMCS_SO_ENCRYPTED)" grep -qx 'encrypted 1' /tmp/enc.log
	check "handshakes 1 (this stream)" is_counter crypto handshakes 1
	# ---- integrity ----
	n=0
	port=7705
	for kind in $KINDS; do
		n=$((n + 1))
		vmcs-socktest crypto-victim $port $kind >/tmp/$kind.log 2>&1 &
		p=$!
		barrier $((3 + n))
		check_done "$kind: the tampered stream reset (ECONNRESET), nothing tampered and no end of file delivered" "$p" 300
		show /tmp/$kind.log
		check "$kind: counted, bad_frames $n and resets decrypt $n" tampered $n
		port=$((port + 1))
	done
	show $D/crypto
	# ---- authentication ----
	vmcs-socktest crypto-serve $WPORT 0 1 WRONG >/tmp/wrong.log 2>&1 &
	w=$!
	barrier 7
	barrier 8
	check "a peer with another key was refused: auth_failed 1" is_counter crypto auth_failed 1
	check "vmcs encrypt require" vmcs encrypt require
	check "debugfs crypto: policy require" grep -qx 'policy require' $D/crypto
	# The same policy in sysfs (docs/security.md "Policy"): read, a bad value refused, and
	# written; guest 1's plaintext connect below is refused under the policy written here.
	check "sysfs $S/encrypt reads require" grep -qx require $S/encrypt
	check "sysfs encrypt: a bad value is refused (EINVAL), the policy stays" sh -c "
		! echo sometimes 2>/tmp/e >$S/encrypt && grep -q 'Invalid argument' /tmp/e &&
		grep -qx require $S/encrypt && grep -qx 'policy require' $D/crypto"
	check "sysfs encrypt: off written, debugfs says off" sh -c "
		echo off >$S/encrypt && grep -qx off $S/encrypt && grep -qx 'policy off' $D/crypto"
	check "sysfs encrypt: require written (by number), debugfs says require" sh -c "
		echo 2 >$S/encrypt && grep -qx require $S/encrypt && grep -qx 'policy require' $D/crypto"
	barrier 9
	barrier 10
	check "a plaintext connect under require was refused: policy_refused 1" is_counter crypto policy_refused 1
	kill $w 2>/dev/null
	wait $w 2>/dev/null
	check "the listener accepted nothing (the refused connects never reached it)" sh -c "! grep -q encrypted /tmp/wrong.log"
	vmcs status >/tmp/st.out 2>&1
	show /tmp/st.out
	check "vmcs status: policy require, key installed, the counters" sh -c "
		grep -qE '^encryption +policy require, key installed\$' /tmp/st.out &&
		grep -qE '^crypto counters handshakes [0-9]+, auth_failed 1, peer_refused 0, policy_refused 1, bad_frames 3\$' /tmp/st.out"
	check "no key bytes in dmesg, debugfs or the module parameters" no_key
	check "vmcs key clear" vmcs key clear
	check "debugfs crypto: key none after clear" grep -qx 'key none' $D/crypto
else
	plan 21
	common
	diag "CRYPTO-HOOK-START"
	check "the host hook is running (HOOK-READY on the control line)" wait_line /tmp/ctl HOOK-READY 120
	# ---- confidentiality ----
	barrier 1
	check "plaintext stream of 2 MiB sent (no key)" sh -c "vmcs-socktest crypto-send $OTHER $PPORT 0 $N PLAIN >/tmp/plain.log 2>&1"
	show /tmp/plain.log
	diag "CRYPTO-PLAIN-DONE"
	check "that connection was not encrypted" grep -qx 'encrypted 0' /tmp/plain.log
	check "vmcs key set installs the key (read from stdin)" set_key $K
	barrier 3
	check "encrypted stream of 2 MiB sent (both hold the key, policy allow)" sh -c "vmcs-socktest crypto-send $OTHER $EPORT 0 $N CRYPT >/tmp/enc.log 2>&1"
	show /tmp/enc.log
	diag "CRYPTO-ENC-DONE"
	check "that connection was encrypted (VMCS_SO_ENCRYPTED)" grep -qx 'encrypted 1' /tmp/enc.log
	# ---- integrity ----
	n=0
	port=7705
	for kind in $KINDS; do
		n=$((n + 1))
		barrier $((3 + n))
		rm -f /tmp/$kind.ready
		vmcs-socktest crypto-tamper $OTHER $port $kind /tmp/ctl >/tmp/$kind.log 2>&1 &
		p=$!
		wait_for /tmp/$kind.ready 120
		if [ "$kind" = flip ]; then
			# An encrypted connection is up: what vmcs ss and vmcs status show.
			vmcs ss >/tmp/ss.out 2>&1
			show /tmp/ss.out
			check "vmcs ss: the connection to $OTHER:$port is encrypted" sh -c "
				awk 'NR == 1 { for (i = 1; i <= NF; i++) if (\$i == \"ENCRYPTED\") c = i }
				     \$0 ~ /$OTHER:$port/ && \$c == \"yes\" { ok = 1 } END { exit !ok }' /tmp/ss.out"
			vmcs status >/tmp/st.out 2>&1
			show /tmp/st.out
			check "vmcs status: policy allow, key installed, handshakes 2" sh -c "
				grep -qE '^encryption +policy allow, key installed\$' /tmp/st.out &&
				grep -qE '^crypto counters handshakes 2, auth_failed 0, peer_refused 0, policy_refused 0, bad_frames 0\$' /tmp/st.out"
		fi
		diag "CRYPTO-$(echo $kind | tr a-z A-Z)-STOP"
		check_done "$kind: the receiver reset the tampered stream (ECONNRESET)" "$p" 300
		show /tmp/$kind.log
		port=$((port + 1))
	done
	# ---- authentication ----
	barrier 7
	check "vmcs key set: another key" set_key $K2
	check "connect with another key: EACCES" vmcs-socktest crypto-refused $OTHER $WPORT 1 EACCES
	check "counted: peer_refused 1" is_counter crypto peer_refused 1
	barrier 8
	barrier 9
	check "vmcs key clear" vmcs key clear
	check "plaintext connect to a domain under require: EACCES" vmcs-socktest crypto-refused $OTHER $WPORT 0 EACCES
	check "require on the socket without a key: EACCES before any frame (policy_refused 1)" local_require
	barrier 10
	check "no key bytes in dmesg, debugfs or the module parameters" no_key
	diag "CRYPTO-END"
fi
