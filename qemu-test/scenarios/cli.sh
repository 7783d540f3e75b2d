# The `vmcs` CLI and the echo examples between two guests (issue 6): every subcommand runs
# and its output is asserted. Guest 0 serves (listen, recv, ping --serve, the Rust echo
# server), guest 1 is the client; the examples run both ways. The two guests meet at
# barriers over the test-control link (`barrier` in lib.sh), never over vmcs itself.
. /scenarios/lib.sh
# Written for 2 guests (run.sh --guests 2); any further guest only idles.
[ "$VMCS_GUEST" -le 1 ] || { plan 0; exit 0; }
if [ "$VMCS_GUEST" = 0 ]; then plan 40; else plan 43; fi

BIG=67108864 # vmcs send: 64 MiB
# wait_grep FILE PATTERN SECS: until FILE has a line matching PATTERN.
wait_grep() {
	i=0
	until grep -q -- "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt $(($3 * 5)) ] || return 1
		sleep 0.2
	done
}
# File contents as TAP diagnostics.
show() { for f in "$@"; do sed "s|^|# $(basename "$f"): |" "$f" >&3; done; }
# No carriage return or escape sequence (a progress bar) in these files.
no_tty_output() {
	for f in "$@"; do tr -d '\r\033' <"$f" | cmp -s - "$f" || return 1; done
}
# The deterministic 64 MiB file: 64 blocks of 1 MiB, each a numbered 32-byte line and the
# first 1 MiB - 32 bytes of the guests' identical /bin/vmcs and /bin/busybox.
gen_big() {
	[ -f /tmp/base ] || cat /bin/vmcs /bin/busybox | head -c $((1048576 - 32)) >/tmp/base
	i=0
	while [ $i -lt 64 ]; do
		printf 'vmcs cli test block %04d ------\n' $i
		cat /tmp/base
		i=$((i + 1))
	done
}
# The netcat test inputs: guest 0 sends text, guest 1 binary bytes.
seq 1 40000 >/tmp/in0
head -c 300000 /bin/busybox >/tmp/in1

# ---- before the module is loaded ----
vmcs status >/tmp/st.out 2>/tmp/st.err
rc=$?
show /tmp/st.err
check "vmcs status without the module: exit 3 and 'module is not loaded' (status $rc)" \
	sh -c "test $rc = 3 && grep -q 'vmcs module is not loaded' /tmp/st.err && test ! -s /tmp/st.out"
vmcs status --json >/tmp/st.json 2>/dev/null
rc=$?
show /tmp/st.json
check "vmcs status --json without the module: exit 3, JSON error with exit_code 3" \
	sh -c "test $rc = 3 && grep -q '\"exit_code\":3' /tmp/st.json && grep -q '\"error\":\"[^\"]*the vmcs module is not loaded' /tmp/st.json"

check "insmod vmcs.ko" load_vmcs
wait_live 2
show /tmp/peers.out
check "vmcs peers shows both guests live" sh -c "test \$(awk 'NR > 1 && \$2 == \"live\"' /tmp/peers.out | wc -l) = 2"
SELF=$(awk 'NR > 1 && /this guest/ { print $1 }' /tmp/peers.out)
OTHER=$(awk 'NR > 1 && $2 == "live" && !/this guest/ { print $1 }' /tmp/peers.out)
diag "this guest is cid $SELF, the other $OTHER"

# ---- status, peers ----
vmcs status >/tmp/st.out 2>&1
show /tmp/st.out
check "vmcs status: backend, module version, local cid $SELF, transport ivshmem-$VMCS_VARIANT, region, 2 peers live" sh -c "
	grep -qE '^backend +AF_VMCS socket \(family [0-9]+\)$' /tmp/st.out &&
	grep -qE '^module version +0\.1\.0$' /tmp/st.out &&
	grep -qE '^local cid +$SELF$' /tmp/st.out && grep -qE '^transport +ivshmem-$VMCS_VARIANT$' /tmp/st.out &&
	grep -qE '^region +[0-9.]+ MiB$' /tmp/st.out && grep -qE '^abi version +1$' /tmp/st.out &&
	grep -qE '^peers +2 present, 2 live \(room for [0-9]+\)$' /tmp/st.out"
vmcs status --json >/tmp/st.json 2>&1
show /tmp/st.json
check "vmcs status --json: local_cid, transport, region_size, backend, module_version, peers" sh -c "
	grep -qE '^  \"local_cid\": $SELF,$' /tmp/st.json && grep -qE '\"transport\": \"ivshmem-$VMCS_VARIANT\"' /tmp/st.json &&
	grep -qE '\"region_size\": [1-9][0-9]*,' /tmp/st.json && grep -qE '\"backend\": \"AF_VMCS socket' /tmp/st.json &&
	grep -q '^  \"module_version\": \"0.1.0\",$' /tmp/st.json &&
	test \$(grep -c '\"state\": \"live\"' /tmp/st.json) = 2 && head -c1 /tmp/st.json | grep -q '{'"
check "vmcs peers: header, both cids, this guest marked, heartbeat ages" sh -c "
	head -n1 /tmp/peers.out | grep -qE '^CID +STATE +GENERATION +HEARTBEAT' &&
	grep -qE '^$SELF +live +[0-9]+ .*\(this guest\)$' /tmp/peers.out &&
	grep -qE '^$OTHER +live +[0-9]+ +[0-9]+ ms ago' /tmp/peers.out"
vmcs peers --json >/tmp/peers.json 2>&1
show /tmp/peers.json
check "vmcs peers --json: ids $SELF and $OTHER, live, generation, heartbeat age, one is_self" sh -c "
	grep -qE '\"id\": $SELF,' /tmp/peers.json && grep -qE '\"id\": $OTHER,' /tmp/peers.json &&
	test \$(grep -c '\"state\": \"live\"' /tmp/peers.json) = 2 &&
	test \$(grep -cE '\"generation\": [0-9]+,' /tmp/peers.json) = 2 &&
	test \$(grep -cE '\"heartbeat_age_ms\": ([0-9]+|null),' /tmp/peers.json) = 2 &&
	grep -qE '\"heartbeat_age_ms\": [0-9]+,' /tmp/peers.json &&
	test \$(grep -c '\"is_self\": true' /tmp/peers.json) = 1 && head -c1 /tmp/peers.json | grep -q '\['"

# ---- errors and exit codes ----
vmcs connect "$OTHER:4999" </dev/null >/dev/null 2>/tmp/e.err
rc=$?
show /tmp/e.err
check "vmcs connect to a port nobody listens on: exit 4, 'connection refused' (status $rc)" \
	sh -c "test $rc = 4 && grep -q '^vmcs: connecting to $OTHER:4999: connection refused' /tmp/e.err"
vmcs connect 9:5000 </dev/null >/dev/null 2>/tmp/e.err
rc=$?
show /tmp/e.err
check "vmcs connect to an absent peer: exit 4, 'peer absent' (status $rc)" \
	sh -c "test $rc = 4 && grep -q '^vmcs: connecting to 9:5000: peer absent' /tmp/e.err"
vmcs connect "$OTHER" </dev/null >/dev/null 2>/tmp/e.err
rc=$?
check "vmcs connect without a port: usage error, exit 2 (status $rc)" \
	sh -c "test $rc = 2 && grep -q 'PEER:PORT' /tmp/e.err"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>/etc/passwd
echo 'nogroup:x:65534:' >>/etc/group
su -s /bin/sh nobody -c 'vmcs listen 80' </dev/null >/dev/null 2>/tmp/e.err
rc=$?
show /tmp/e.err
check "vmcs listen 80 as an unprivileged user: exit 5, 'permission denied' (status $rc)" \
	sh -c "test $rc = 5 && grep -q '^vmcs: listening on port 80: permission denied' /tmp/e.err"

# ---- listen / connect: netcat both ways at once, byte for byte ----
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs listen 5000 </tmp/in0 >/tmp/nc.out 2>/tmp/nc.err &
	pid=$!
	wait_grep /tmp/nc.err 'listening on' 30
	barrier 1
	wait $pid
	rc=$?
	show /tmp/nc.err
	check "vmcs listen 5000: exit 0 after the exchange (status $rc)" sh -c "test $rc = 0 && grep -q 'connection from $OTHER:' /tmp/nc.err"
	check "vmcs listen: stdout is byte for byte guest 1's stdin ($(wc -c </tmp/in1) bytes)" cmp /tmp/nc.out /tmp/in1
else
	barrier 1
	vmcs connect "$OTHER:5000" </tmp/in1 >/tmp/nc.out 2>/tmp/nc.err
	rc=$?
	show /tmp/nc.err
	check "vmcs connect $OTHER:5000: exit 0 after the exchange (status $rc)" test $rc = 0
	check "vmcs connect: stdout is byte for byte guest 0's stdin ($(wc -c </tmp/in0) bytes)" cmp /tmp/nc.out /tmp/in0
fi

# ---- ss: a live connection, from both ends ----
# ss_row FILE LOCAL REMOTE: an established row with these addresses (a pattern each) and
# non-zero byte counters one way or the other.
ss_row() {
	awk -v l="$2" -v r="$3" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$col["LOCAL"] ~ l && $col["REMOTE"] ~ r && $col["STATE"] == "established" &&
			$col["RX_BYTES"] + $col["TX_BYTES"] > 0 && $col["DOMAIN"] != "" { f = 1 }
		END { exit !f }' "$1"
}
mkfifo /tmp/ss.in
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs listen 5100 </tmp/ss.in >/tmp/ss.out 2>/tmp/ss.err &
	pid=$!
	exec 4>/tmp/ss.in
	wait_grep /tmp/ss.err 'listening on' 30
	barrier 2
	wait_grep /tmp/ss.out hello-from-guest1 60
	vmcs ss >/tmp/ss.txt 2>&1
	vmcs ss --json >/tmp/ss.json 2>&1
	show /tmp/ss.txt /tmp/ss.json
	check "vmcs ss: the accepted connection $SELF:5100 <- $OTHER, established, bytes counted" \
		ss_row /tmp/ss.txt "^$SELF:5100\$" "^$OTHER:[0-9]+\$"
	check "vmcs ss --json: the same connection, numbers as numbers" sh -c "
		grep -q '\"local\": \"$SELF:5100\"' /tmp/ss.json && grep -q '\"state\": \"established\"' /tmp/ss.json &&
		grep -qE '\"remote\": \"$OTHER:[0-9]+\"' /tmp/ss.json && grep -qE '\"rx_bytes\": [1-9][0-9]*,' /tmp/ss.json"
	echo ss-checked >&4
	exec 4>&-
	wait $pid
	rc=$?
	check "the ss session ends cleanly on both half-closes (status $rc)" sh -c "test $rc = 0 && grep -qx hello-from-guest1 /tmp/ss.out"
else
	barrier 2
	vmcs connect "$OTHER:5100" </tmp/ss.in >/tmp/ss.out 2>/tmp/ss.err &
	pid=$!
	exec 4>/tmp/ss.in
	echo hello-from-guest1 >&4
	i=0
	until vmcs ss 2>/dev/null >/tmp/ss.txt && ss_row /tmp/ss.txt "^$SELF:[0-9]+\$" "^$OTHER:5100\$"; do
		i=$((i + 1))
		[ $i -lt 150 ] || break
		sleep 0.2
	done
	vmcs ss --json >/tmp/ss.json 2>&1
	show /tmp/ss.txt /tmp/ss.json
	check "vmcs ss: the connection to $OTHER:5100, established, bytes counted" \
		ss_row /tmp/ss.txt "^$SELF:[0-9]+\$" "^$OTHER:5100\$"
	check "vmcs ss --json: the same connection" sh -c "
		grep -q '\"remote\": \"$OTHER:5100\"' /tmp/ss.json && grep -q '\"state\": \"established\"' /tmp/ss.json &&
		grep -qE '\"tx_bytes\": [1-9][0-9]*,' /tmp/ss.json && grep -qE '\"domain\": \"' /tmp/ss.json"
	wait_grep /tmp/ss.out ss-checked 60
	exec 4>&-
	wait $pid
	rc=$?
	show /tmp/ss.err
	check "the ss session ends cleanly on both half-closes (status $rc)" sh -c "test $rc = 0 && grep -qx ss-checked /tmp/ss.out"
fi

# ---- send / recv: 64 MiB, checksums ----
# The transfer, then each guest hashes its copy with busybox sha256sum while guest 1 runs
# ping and bench against guest 0 (the two hashes run at the same time, one per guest).
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs recv 6000 -o /tmp/recv.bin >/tmp/recv.out 2>/tmp/recv.err &
	pid=$!
	wait_grep /tmp/recv.err 'listening on' 30
	barrier 3
	wait $pid
	rc=$?
	barrier 8 # guest 1 hands over the sha256 that vmcs send printed
	expect=$(cat /tmp/barrier.8)
	show /tmp/recv.out /tmp/recv.err
	check "vmcs recv: exit 0, one line 'received ... (64.0 MiB) from $OTHER:... sha256' (status $rc)" sh -c "
		test $rc = 0 && test \$(wc -l </tmp/recv.out) = 1 &&
		grep -qE '^received /tmp/recv.bin \(64.0 MiB\) from $OTHER:[0-9]+ in [0-9.]+ s \([0-9.]+ [KMG]?i?B/s\), sha256 [0-9a-f]{64}$' /tmp/recv.out"
	said=$(sed -n 's/.*sha256 \([0-9a-f]*\)$/\1/p' /tmp/recv.out)
	diag "vmcs send printed sha256 $expect, vmcs recv printed $said"
	check "vmcs recv's sha256 is the one vmcs send printed on guest 1" sh -c "test -n '$said' && test '$said' = '$expect'"
	check "vmcs recv on a non-terminal: no progress bar in its output" no_tty_output /tmp/recv.err /tmp/recv.out
	diag "throughput (vmcs recv): $(sed -n 's/.* in \([0-9.]* s ([^)]*)\).*/\1/p' /tmp/recv.out)"
else
	gen_big >/tmp/big.bin
	barrier 3
	vmcs send /tmp/big.bin "$OTHER:6000" >/tmp/send.out 2>/tmp/send.err
	rc=$?
	said=$(sed -n 's/.*sha256 \([0-9a-f]*\)$/\1/p' /tmp/send.out)
	echo "$said" >/tmp/said
	barrier 8 /tmp/said
	show /tmp/send.out /tmp/send.err
	check "vmcs send 64 MiB: exit 0, one line 'sent big.bin (64.0 MiB) to $OTHER:6000 ... sha256' (status $rc)" sh -c "
		test $rc = 0 && test \$(wc -l </tmp/send.out) = 1 &&
		grep -qE '^sent big.bin \(64.0 MiB\) to $OTHER:6000 in [0-9.]+ s \([0-9.]+ [KMG]?i?B/s\), sha256 [0-9a-f]{64}$' /tmp/send.out"
	check "vmcs send on a non-terminal: no progress bar in its output" no_tty_output /tmp/send.err /tmp/send.out
	diag "throughput (vmcs send): $(sed -n 's/.* in \([0-9.]* s ([^)]*)\).*/\1/p' /tmp/send.out)"
fi

# ---- ping, bench ----
# rtt_ordered FILE: the "rtt min/avg/p99/max/mdev = a/b/c/d/e ms" line, with a <= b <= d
# and a <= c <= d.
rtt_ordered() {
	sed -n 's|^rtt min/avg/p99/max/mdev = \([0-9./]*\) ms$|\1|p' "$1" |
		awk -F/ 'NF == 5 { f = ($1 <= $2 && $2 <= $4 && $1 <= $3 && $3 <= $4 && $1 >= 0) } END { exit !f }'
}
# ping_json_ok RC FILE: `vmcs ping -c 3 -s 1000 --json` succeeded and says so.
ping_json_ok() {
	[ "$1" = 0 ] && grep -q '"received": 3,' "$2" && grep -q '"sent": 3,' "$2" &&
		grep -q '"size": 1000,' "$2" && grep -q '"loss_percent": 0.0,' "$2" || return 1
	for k in min avg p99 max mdev; do grep -qE "\"${k}_ms\": [0-9.e-]+" "$2" || return 1; done
	# Values in the order min, avg, p99, max.
	for k in min avg p99 max; do sed -n "s/.*\"${k}_ms\": \([0-9.e-]*\).*/\1/p" "$2"; done |
		tr '\n' ' ' | awk '{ exit !(NF == 4 && $1 <= $2 && $2 <= $4 && $1 <= $3 && $3 <= $4) }'
}
# bench_json_ok RC FILE: `vmcs bench --sizes 64,4k,64k --json` succeeded with 3 sane rows.
bench_json_ok() {
	[ "$1" = 0 ] && grep -q "\"peer\": \"$OTHER:7007\"" "$2" &&
		[ "$(sed -n 's/^ *"size": \([0-9]*\),$/\1/p' "$2" | tr '\n' ' ')" = '64 4096 65536 ' ] &&
		[ "$(grep -cE '"msgs_per_s": [0-9.e+]*[1-9]' "$2")" = 3 ] &&
		[ "$(grep -cE '"bytes_per_s": [0-9.e+]*[1-9]' "$2")" = 3 ] &&
		[ "$(grep -cE '"avg_ms": [0-9.e-]+' "$2")" = 3 ]
}
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs ping --serve >/tmp/pserve.out 2>/tmp/pserve.err &
	ppid=$!
	wait_grep /tmp/pserve.err 'listening on' 30
	# The bulk sink of `vmcs bench --zero-copy`: the echo service on /dev/vmcs.
	VMCS_BACKEND=device vmcs ping --serve --port 7008 >/tmp/zserve.out 2>/tmp/zserve.err &
	zpid=$!
	wait_grep /tmp/zserve.err 'listening on' 30
	barrier 4
	got=$(sha256sum /tmp/recv.bin | cut -d' ' -f1)
	check "received file: $BIG bytes, its sha256sum is what vmcs send printed for the file it sent" \
		sh -c "test \$(stat -c %s /tmp/recv.bin) = $BIG && test '$got' = '$expect'"
	rm -f /tmp/recv.bin
	barrier 5
	show /tmp/pserve.err
	check "vmcs ping --serve: served the pings and the bench, still running" sh -c "
		kill -0 $ppid && test \$(grep -c 'echo: connection from $OTHER:' /tmp/pserve.err) -ge 3"
	kill $ppid
	wait $ppid 2>/dev/null
	show /tmp/zserve.err
	check "VMCS_BACKEND=device vmcs ping --serve: sank both zero-copy benches, no error, still running" sh -c "
		kill -0 $zpid && test \$(grep -c 'echo: $OTHER:[0-9]* done after [1-9][0-9]* messages' /tmp/zserve.err) -ge 4 &&
		! grep -q 'echo: $OTHER:[0-9]*: ' /tmp/zserve.err"
	kill $zpid
	wait $zpid 2>/dev/null
else
	barrier 4
	vmcs ping "$OTHER" -c 5 -i 100ms >/tmp/ping.out 2>&1
	rc=$?
	show /tmp/ping.out
	check "vmcs ping $OTHER -c 5: exit 0, 5 replies, summary (status $rc)" sh -c "
		test $rc = 0 && head -n1 /tmp/ping.out | grep -qx 'VMCS PING $OTHER:7007: 64 bytes' &&
		test \$(grep -cE '^64 bytes from $OTHER:7007: seq=[0-4] time=[0-9.]+ ms$' /tmp/ping.out) = 5 &&
		grep -qx -- '--- vmcs ping $OTHER:7007 ---' /tmp/ping.out &&
		grep -qE '^5 sent, 5 received, 0% loss, time [0-9]+ ms$' /tmp/ping.out"
	check "vmcs ping: rtt min <= avg <= max and min <= p99 <= max" rtt_ordered /tmp/ping.out
	vmcs ping "$OTHER" -c 3 -i 50ms -s 1000 --json >/tmp/ping.json 2>&1
	rc=$?
	show /tmp/ping.json
	check "vmcs ping --json: sent/received 3, size 1000, min/avg/p99/max/mdev, ordered (status $rc)" \
		ping_json_ok "$rc" /tmp/ping.json
	vmcs bench "$OTHER" --sizes 64,4k,64k --rounds 20 --time 300ms >/tmp/bench.out 2>/tmp/bench.err
	rc=$?
	show /tmp/bench.out
	check "vmcs bench (table): exit 0, header, rows 64 B / 4.0 KiB / 64.0 KiB, msg/s and throughput > 0 (status $rc)" sh -c "
		test $rc = 0 && head -n1 /tmp/bench.out | grep -qE '^SIZE +RTT AVG ms +RTT P99 ms +RTT MAX ms +MSG/S +THROUGHPUT' &&
		test \$(wc -l </tmp/bench.out) = 4 &&
		awk 'NR > 1 { s = \$1 \" \" \$2; if (\$6 + 0 > 0 && \$7 + 0 > 0 && \$3 <= \$5 && \$4 <= \$5) ok[s] = 1 }
			END { exit !(ok[\"64 B\"] && ok[\"4.0 KiB\"] && ok[\"64.0 KiB\"]) }' /tmp/bench.out"
	vmcs bench "$OTHER" --sizes 64,4k,64k --rounds 20 --time 300ms --json >/tmp/bench.json 2>/tmp/bench.err
	rc=$?
	show /tmp/bench.json
	check "vmcs bench --json: peer, sizes 64/4096/65536, msgs_per_s and bytes_per_s > 0 (status $rc)" \
		bench_json_ok "$rc" /tmp/bench.json
	vmcs bench "$OTHER:7008" --zero-copy --sizes 4k,64k --time 300ms >/tmp/zbench.out 2>/tmp/zbench.err
	rc=$?
	show /tmp/zbench.out
	show /tmp/zbench.err
	check "vmcs bench --zero-copy (table): exit 0 (the sink's byte count and sum matched), rows 4.0 KiB / 64.0 KiB, throughput > 0 (status $rc)" sh -c "
		test $rc = 0 && head -n1 /tmp/zbench.out | grep -qE '^SIZE +EXTENT +RANGES/S +THROUGHPUT' &&
		test \$(wc -l </tmp/zbench.out) = 3 &&
		awk 'NR > 1 { s = \$1 \" \" \$2; if (\$5 + 0 > 0 && \$6 + 0 > 0) ok[s] = 1 }
			END { exit !(ok[\"4.0 KiB\"] && ok[\"64.0 KiB\"]) }' /tmp/zbench.out"
	vmcs bench "$OTHER:7008" --zero-copy --sizes 4k,64k --time 300ms --json >/tmp/zbench.json 2>/tmp/zbench.err
	rc=$?
	show /tmp/zbench.json
	check "vmcs bench --zero-copy --json: zero_copy, sizes 4096/65536, extent and bytes_per_s > 0 (status $rc)" sh -c "
		test $rc = 0 && grep -q '\"zero_copy\": true' /tmp/zbench.json &&
		test \"\$(grep -oE '\"size\": [0-9]+' /tmp/zbench.json | cut -d' ' -f2 | tr '\\n' ' ')\" = '4096 65536 ' &&
		test \$(grep -cE '\"bytes_per_s\": [0-9.e+]*[1-9]' /tmp/zbench.json) = 2 &&
		test \$(grep -cE '\"extent\": [1-9]' /tmp/zbench.json) = 2"
	file=$(sha256sum /tmp/big.bin | cut -d' ' -f1)
	check "vmcs send's sha256 is the file's (sha256sum $file)" test "$said" = "$file"
	rm -f /tmp/big.bin
	barrier 5
fi

# ---- policy: access control (#14, docs/security.md "Access control") ----
# Guest 0 restricts its in list to guest 1 on port 5101 while it listens on 5100 and 5101;
# guest 1 is refused on 5100, connects on 5101, and keeps that connection while guest 0
# removes the rule; then guest 1 tries its own out and bind lists and fills its table.
vmcs policy >/tmp/pol.out 2>&1
show /tmp/pol.out
check "vmcs policy: the default allows everything (in any:any, out any:any, bind any), no denials" sh -c "
	grep -qx 'allow in any:any' /tmp/pol.out && grep -qx 'allow out any:any' /tmp/pol.out &&
	grep -qx 'allow bind any' /tmp/pol.out && grep -qx 'denied_in 0' /tmp/pol.out &&
	grep -qx 'denied_out 0' /tmp/pol.out && grep -qx 'denied_bind 0' /tmp/pol.out && test \$(wc -l </tmp/pol.out) = 6"
# nobody may open /dev/vmcs for this one, so that the ioctl's own check answers.
mode=$(stat -c %a /dev/vmcs)
chmod 666 /dev/vmcs
su -s /bin/sh nobody -c 'vmcs policy clear' </dev/null >/dev/null 2>/tmp/e.err
rc=$?
chmod "$mode" /dev/vmcs
show /tmp/e.err
check "vmcs policy clear as nobody (who may open /dev/vmcs): exit 5, CAP_NET_ADMIN (EPERM), nothing changed (status $rc)" \
	sh -c "test $rc = 5 && grep -q '^vmcs: clearing the policy: permission denied: changing the policy needs CAP_NET_ADMIN (EPERM)' /tmp/e.err &&
		vmcs policy | grep -qx 'allow in any:any'"
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs policy deny in any:any >/dev/null && vmcs policy allow in "$OTHER:5101" >/tmp/pol.out 2>&1
	show /tmp/pol.out
	check "vmcs policy deny in any:any, allow in $OTHER:5101: the in list is that one rule" \
		sh -c "test \$(grep -c '^allow in' /tmp/pol.out) = 1 && grep -qx 'allow in $OTHER:5101' /tmp/pol.out"
	vmcs listen 5100 </dev/null >/dev/null 2>/tmp/l0.err &
	l0=$!
	vmcs listen 5101 </dev/null >/tmp/l1.out 2>/tmp/l1.err &
	l1=$!
	wait_grep /tmp/l0.err 'listening on' 30
	wait_grep /tmp/l1.err 'listening on' 30
	barrier 20 # guest 1: refused on 5100, connects on 5101 and sends "first"
	barrier 21
	check "an allowed peer and port: the connection on 5101 carries guest 1's first line" wait_grep /tmp/l1.out '^first$' 30
	vmcs policy deny in "$OTHER:5101" >/tmp/pol.out 2>&1
	show /tmp/pol.out
	check "vmcs policy deny in $OTHER:5101: the in list is empty" sh -c "! grep -q '^allow in' /tmp/pol.out"
	barrier 22 # guest 1: "second" on the established connection, a new connect, close
	barrier 23
	wait $l1
	rc=$?
	show /tmp/l1.err
	check "the established connection outlived its rule: 'second' arrived too, listen exit 0 (status $rc)" \
		sh -c "test $rc = 0 && printf 'first\nsecond\n' | cmp - /tmp/l1.out"
	kill $l0
	wait $l0 2>/dev/null
	check "the listener on 5100 never saw a connection" sh -c "! grep -q 'connection from' /tmp/l0.err"
	vmcs status >/tmp/st.out 2>&1
	show /tmp/st.out
	check "vmcs status: the policy row counts the 2 refused connects" \
		grep -qE '^policy +[0-9]+ rules; denied: in 2, out 0, bind 0$' /tmp/st.out
	check "debugfs policy: no in rule, denied_in 2" sh -c "
		! grep -q '^allow in' /sys/kernel/debug/vmcs/vmcs0/policy && grep -qx 'denied_in 2' /sys/kernel/debug/vmcs/vmcs0/policy"
	check "kernel log: the refused connects, once each (under the rate limit)" sh -c "
		test \$(dmesg | grep -c 'policy: refused a connect from peer $OTHER to port 5101') = 1 &&
		test \$(dmesg | grep -c 'policy: refused a connect from peer $OTHER to port 5100') = 1"
	vmcs policy reset >/tmp/pol.out 2>&1
	check "vmcs policy reset: the three any rules again" sh -c "test \$(grep -c '^allow' /tmp/pol.out) = 3 && grep -qx 'allow in any:any' /tmp/pol.out"
	barrier 24
else
	barrier 20
	vmcs connect "$OTHER:5100" </dev/null >/dev/null 2>/tmp/e.err
	rc=$?
	show /tmp/e.err
	check "connect to a listening port the peer's policy denies: exit 4, refused as if nothing listened (status $rc)" \
		sh -c "test $rc = 4 && grep -q '^vmcs: connecting to $OTHER:5100: connection refused' /tmp/e.err"
	mkfifo /tmp/c1.in
	vmcs connect "$OTHER:5101" </tmp/c1.in >/dev/null 2>/tmp/c1.err &
	c1=$!
	exec 7>/tmp/c1.in
	echo first >&7
	barrier 21
	barrier 22
	echo second >&7
	# (timeout: if the rule's removal were ignored, this connect would sit in the backlog)
	timeout 20 vmcs connect "$OTHER:5101" </dev/null >/dev/null 2>/tmp/e.err
	rc=$?
	show /tmp/e.err
	check "after the rule's removal a new connect to 5101 is refused: exit 4 (status $rc)" \
		sh -c "test $rc = 4 && grep -q 'connection refused' /tmp/e.err"
	exec 7>&-
	wait $c1
	rc=$?
	show /tmp/c1.err
	check "the established connection to 5101 ended normally (status $rc)" test $rc = 0
	barrier 23
	vmcs policy clear out >/dev/null
	vmcs connect "$OTHER:5100" </dev/null >/dev/null 2>/tmp/e.err
	rc=$?
	show /tmp/e.err
	check "connect with the out list empty: EPERM, exit 5 'permission denied' (status $rc)" \
		sh -c "test $rc = 5 && grep -q '^vmcs: connecting to $OTHER:5100: permission denied' /tmp/e.err"
	vmcs policy reset out >/dev/null
	vmcs policy deny bind any >/dev/null && vmcs policy allow bind 6100 >/dev/null
	vmcs listen 6101 </dev/null >/dev/null 2>/tmp/e.err
	rc=$?
	show /tmp/e.err
	check "bind of a port the bind list lacks: EACCES, exit 5 'permission denied' (status $rc)" \
		sh -c "test $rc = 5 && grep -q '^vmcs: listening on port 6101: permission denied' /tmp/e.err"
	vmcs listen 6100 </dev/null >/dev/null 2>/tmp/b.err &
	b=$!
	check "bind of an allowed port (6100) works" wait_grep /tmp/b.err 'listening on' 30
	kill $b
	wait $b 2>/dev/null
	vmcs status >/tmp/st.out 2>&1
	check "vmcs status: denied out 1, bind 1; kernel log names both" sh -c "
		grep -qE '^policy +3 rules; denied: in 0, out 1, bind 1$' /tmp/st.out &&
		dmesg | grep -q 'policy: denied a connect to $OTHER:5100 (not in the out allow-list, EPERM)' &&
		dmesg | grep -q 'policy: denied a bind of port 6101 (not in the bind allow-list, EACCES)'"
	# The table holds 128 rules: the 3 there (in, out, bind 6100) and 125 more. One call adds
	# 130 in order and must stop at the 126th (one process, not 130 under TCG).
	vmcs policy allow bind $(seq 7200 7329) >/dev/null 2>/tmp/e.err
	rc=$?
	show /tmp/e.err
	check "the 129th rule fails with ENOSPC ('table is full'), after 125 added (status $rc)" \
		sh -c "test $rc = 1 &&
			grep -q '^vmcs: allowing bind 7325 (125 of 130 added before it): the policy table is full (128 rules per domain, ENOSPC)' /tmp/e.err &&
			test \$(vmcs policy | grep -c '^allow') = 128 && vmcs policy | grep -qx 'allow bind 7324' &&
			! vmcs policy | grep -qx 'allow bind 7325'"
	vmcs policy reset >/tmp/pol.out 2>&1
	check "vmcs policy reset: the three any rules again" sh -c "test \$(grep -c '^allow' /tmp/pol.out) = 3 && grep -qx 'allow bind any' /tmp/pol.out"
	barrier 24
fi

# ---- the echo examples: Rust server on guest 0, C server on guest 1, each client to each ----
if [ "$VMCS_GUEST" = 0 ]; then
	vmcs-echo-rs server 7100 >/tmp/srv.out 2>&1 &
	check "Rust echo example serves port 7100" wait_grep /tmp/srv.out 'listening on port 7100' 30
else
	vmcs-echo-c server 7100 >/tmp/srv.out 2>&1 &
	check "C echo example serves port 7100" wait_grep /tmp/srv.out 'listening on' 30
fi
srv=$!
barrier 6
for c in rs c; do
	text="guest$VMCS_GUEST's $c client says: hello, echo ($c)"
	vmcs-echo-$c client "$OTHER" 7100 "$text" >/tmp/echo.out 2>/tmp/echo.err
	rc=$?
	show /tmp/echo.err
	check "vmcs-echo-$c client -> $OTHER:7100 gets its text back byte for byte (status $rc)" \
		sh -c "test $rc = 0 && printf '%s\n' \"$text\" | cmp - /tmp/echo.out"
done
vmcs-echo-c client 9 7100 x >/dev/null 2>/tmp/echo.err
rc=$?
vmcs-echo-rs client "$OTHER" 7999 x >/dev/null 2>>/tmp/echo.err
rc2=$?
show /tmp/echo.err
check "echo examples: absent peer and closed port exit 4 (statuses $rc, $rc2)" sh -c "test $rc = 4 && test $rc2 = 4"
barrier 7
if [ "$VMCS_GUEST" = 0 ]; then
	check "the Rust echo server saw guest 1's two clients" sh -c "test \$(grep -c 'connection from $OTHER:' /tmp/srv.out) = 2"
fi
kill $srv
wait $srv 2>/dev/null
sleep 1
check "rmmod vmcs" rmmod vmcs
