#!/usr/bin/env bash
# `make bench`: the host protocol bench (rust/bench/run.sh), then the guest bench scenario
# (qemu-test/scenarios/bench.sh: vmcs against TCP over virtio-net between the same two
# guests, measured interleaved in one run) for ivshmem-doorbell and ivshmem-plain, and a
# table of the ratios per variant. About 6 minutes.
#
#   BENCH_VARIANTS="doorbell plain"   variants to boot (default both)
#   BENCH_SKIP_PROTO=1                skip the host protocol bench
#
# The figures that matter are the ratios: the guests run under TCG (no KVM) on a shared
# machine, so absolute numbers move from run to run. Exit status non-zero if a scenario
# failed (its table may then miss rows).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$VMCS_TOP"

variants=${BENCH_VARIANTS:-doorbell plain}
fail=0

if [ "${BENCH_SKIP_PROTO:-0}" != 1 ]; then
	log "host protocol bench (rust/bench/run.sh)"
	rust/bench/run.sh || fail=1
fi

eval "$(qemu-test/prepare.sh)"
stamp=$(date +%Y%m%d-%H%M%S)
out="$VMCS_TOP/build/bench/$stamp"
mkdir -p "$out"

for v in $variants; do
	log "guest bench, ivshmem-$v (TAP in $out/$v.tap)"
	if ! qemu-test/run.sh --scenario bench --variant "$v" --guests 2 --timeout 600 \
		--results "$out/$v" >"$out/$v.tap"; then
		fail=1
		log "bench scenario failed for $v:"
		grep -E '^not ok' "$out/$v.tap" >&2 || true
	fi
done

# table VARIANT: the BENCH lines of guest 1 as one row per message size.
table() {
	local v=$1
	echo
	echo "ivshmem-$v (guests under TCG; ratio > 1 means vmcs is better)"
	echo
	tr -d '\r' <"$out/$v/guest1.tap" | sed -n 's/^# BENCH //p' | awk '
		{
			delete f
			for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
			t = f["transport"]; s = f["size"]
			if (!(s in seen)) { seen[s] = 1; order[n++] = s }
			# Rounds are averaged; p99 is the worst round.
			k[t, s]++; rtt[t, s] += f["rtt_us"]; mb[t, s] += f["mb_per_s"]
			if (f["p99_us"] + 0 > p99[t, s] + 0) p99[t, s] = f["p99_us"]
		}
		function avg(sum, cnt) { return cnt ? sum / cnt : 0 }
		function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "-" }
		function num(x, fmt) { return (x > 0) ? sprintf(fmt, x) : "-" }
		END {
			printf "| size | vmcs rtt us (p99) | tcp rtt us (p99) | rtt ratio tcp/vmcs | vmcs MB/s | tcp MB/s | MB/s ratio vmcs/tcp |\n"
			printf "|---:|---:|---:|---:|---:|---:|---:|\n"
			for (i = 0; i < n; i++) {
				s = order[i]
				rv = avg(rtt["vmcs", s], k["vmcs", s]); rt = avg(rtt["tcp", s], k["tcp", s])
				mv = avg(mb["vmcs", s], k["vmcs", s]); mt = avg(mb["tcp", s], k["tcp", s])
				printf "| %s | %s (%s) | %s (%s) | %s | %s | %s | %s |\n", s,
					num(rv, "%.0f"), num(p99["vmcs", s], "%.0f"), num(rt, "%.0f"), num(p99["tcp", s], "%.0f"),
					ratio(rt, rv), num(mv, "%.2f"), num(mt, "%.2f"), ratio(mv, mt)
			}
		}'
}

echo
echo "== vmcs vs TCP over virtio-net, same two guests, interleaved per size ($(date -u +%Y-%m-%d))"
for v in $variants; do
	if [ -f "$out/$v/guest1.tap" ]; then table "$v"; else echo "ivshmem-$v: no results"; fi
done
echo
echo "Note: the guests run under TCG (no KVM) on a shared host; absolute figures are"
echo "emulation speed and vary between runs, only the side-by-side ratios are meaningful."
echo "Each figure is the mean of the scenario's rounds (vmcs first, then TCP first)."
echo "rtt = total ping-pong time / iterations; p99 (worst round) is a histogram bucket edge"
echo "and the guest clock is coarse (refined-jiffies). MB/s = 10^6 bytes/s, one way, until"
echo "the server acknowledged every byte."
echo "Logs: $out"
exit "$fail"
