#!/usr/bin/env bash
# The chaos campaign's figures (qemu-test/run.sh --chaos, the chaos scenario): reads the
# launcher's $RESULTS/chaos.log (the incarnations it killed) and every guest TAP file
# (the mesh's MESH-END / MESH-PROGRESS / MESH-TOTAL lines, the reload guest's
# RELOADS-DONE line), prints the table as TAP comments and its checks as TAP points.
#
#   chaos-table.sh RESULTS_DIR [RELOAD_GUEST]
#
# How a connection's end counts (the verdict is the guest's, docs/testing.md "make stress"):
# - peer is a killed incarnation, verdict expected: ECONNRESET is "reset as expected"
#   (its after_ms, time since the last verified data, is the reset latency); any other
#   errno is lost;
# - peer is a reload or unbind tag (G.K-rN, G.K-uN, G.K-bN) or any incarnation of the reload
#   guest, verdict expected: ended by a reload;
# - peer unknown ("?": ended before the hello), verdict expected: counted apart;
# - verdict expected with a peer that was never killed nor reloaded: a survivor vanished
#   (e.g. reset by a heartbeat timeout it did not deserve): lost;
# - verdict UNEXPECTED (the peer is still live with the same generation) or CORRUPT: lost;
# - verdict local (this guest's own device went away, the unbind step): not a loss (the
#   unbind step's own mesh sees its device vanish; its ends are mostly `expected` since
#   its peer table is gone with it).
# The reset latency bound, 3 x the campaign's heartbeat timeout (chaos.sh loads vmcs with
# hb_timeout_ms=5000: 15 s; the rest is slack for a loaded TCG host), is a sanity bound,
# not a timing benchmark: a reset that never comes is what it catches.
set -uo pipefail
res=$1
rg=${2:-}
bound_ms=${CHAOS_RESET_BOUND_MS:-15000}
killed=$(sed -n 's/^kill [0-9]* guest\([0-9]*\.[0-9]*\) .*/\1/p' "$res/chaos.log" 2>/dev/null | tr '\n' ' ')
nkills=$(wc -w <<<"$killed")
cat "$res"/guest*.tap 2>/dev/null | tr -d '\r' | awk -v killed="$killed" -v rg="$rg" -v bound="$bound_ms" -v nkills="$nkills" '
	BEGIN { n = split(killed, k, " "); for (i = 1; i <= n; i++) isk[k[i]] = 1 }
	/^# mesh .*: serving on/ { bytes += cur; cur = 0 }
	/^# MESH-(PROGRESS|TOTAL) / { for (i = 1; i <= NF; i++) if ($i ~ /^bytes=/) cur = substr($i, 7) + 0 }
	/^# RELOADS-DONE / { for (i = 3; i <= NF; i++) { split($i, kv, "="); rl[kv[1]] = kv[2] } }
	/^# MESH-END / {
		delete f
		for (i = 5; i <= NF; i++) { j = index($i, "="); if (j) f[substr($i, 1, j - 1)] = substr($i, j + 1) }
		p = f["peer"]; v = f["verdict"]; e = f["err"]; base = p; sub(/-.*/, "", base)
		if (v == "CORRUPT") { corrupt++; lostl = lostl " " $0; next }
		if (v == "UNEXPECTED") { unexp++; lostl = lostl " " $0; next }
		if (v == "local") { local_++; next }
		if (p in isk) {
			if (e == "ECONNRESET") {
				resets++; ms = f["after_ms"] + 0; sum += ms; if (ms > max) max = ms
				if (ms > bound) slow++
			} else { wrong++; lostl = lostl " " $0 }
			next
		}
		if (p ~ /-[rub][0-9]+$/ || (rg != "" && base ~ "^" rg "\\.")) { reload_ends++; next }
		if (p == "?") { early++; next }
		vanished++; lostl = lostl " " $0
	}
	END {
		bytes += cur
		lost = corrupt + unexp + wrong + vanished
		printf "# chaos table:\n"
		printf "# | %-46s | %12s |\n", "figure", "value"
		printf "# | %-46s | %12d |\n", "guest kills survived", nkills
		printf "# | %-46s | %12d |\n", "module reloads (rmmod/insmod) that came back", rl["ok"] + 0
		printf "# | %-46s | %12d |\n", "device unbind/rebind cycles that came back", rl["uok"] + 0
		printf "# | %-46s | %12.0f |\n", "bytes checked (stream, seqpacket, bulk)", bytes
		printf "# | %-46s | %12d |\n", "connections reset as expected (ECONNRESET)", resets
		printf "# | %-46s | %12s |\n", "reset latency after last data, mean / max ms", (resets ? sprintf("%d / %d", sum / resets, max) : "-")
		printf "# | %-46s | %12d |\n", "connections ended by a reload or unbind", reload_ends
		printf "# | %-46s | %12d |\n", "ended before their hello (peer died)", early
		printf "# | %-46s | %12d |\n", "lost: corrupt, unexpected, wrong errno, vanished", lost
		if (lost) printf "# lost:%s\n", lostl
		st = (wrong == 0) ? "ok" : "not ok"
		printf "%s - every connection to a killed guest ended with ECONNRESET (%d, %d with another error)\n", st, resets, wrong
		st = (nkills == 0 || resets > 0) ? "ok" : "not ok"
		printf "%s - the kills reset connections (%d kills, %d resets seen)\n", st, nkills, resets
		st = (slow == 0) ? "ok" : "not ok"
		printf "%s - every reset came within %d ms of the last data (max %d ms, %d slower)\n", st, bound, max, slow
		st = (corrupt + unexp + vanished == 0) ? "ok" : "not ok"
		printf "%s - connections between survivors: no error, loss, reordering or corruption (%d corrupt, %d unexpected, %d vanished)\n", st, corrupt, unexp, vanished
		st = (bytes > 0) ? "ok" : "not ok"
		printf "%s - bytes were checked (%.0f)\n", st, bytes
	}'
